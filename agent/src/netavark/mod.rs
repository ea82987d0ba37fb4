//! The netavark front end: pier as a drop-in `netavark` 1.4 for Podman 4.3.
//!
//! Podman executes a binary named `netavark` (found in its
//! `helper_binaries_dir`) with `setup|teardown NETNS` and the container's
//! networks as JSON on stdin. pier's multi-call binary answers to that name
//! ([`cli`]). Podman keeps its IPAM and database; pier makes the bridge and
//! veth and does the packet work in eBPF, through the endpoint core
//! (`daemon/engine.rs`, owner `podman`):
//! - with a `pier agent` in the namespace, the shim posts the call to its
//!   `/netavark/{setup,teardown}` routes ([`agent`]), so `pier ps` shows
//!   podman's containers;
//! - without one, the shim runs the core in-process ([`local`]): state
//!   under `--config`, the dataplane pinned per host namespace.
//!
//! Names are aardvark-dns's, configured exactly as netavark does
//! ([`aardvark`]). `--rootless=true` and the `macvlan` driver go to the real
//! netavark when it is installed.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{
    daemon::{
        Daemon,
        engine::{EngineAttach, NamedNetwork},
    },
    state::{Owner, PortBinding, PortProto, mac_string, opts},
};

pub mod aardvark;
pub mod agent;
pub mod cli;
pub mod local;

/// The network option that names the network's podman id (shown by
/// `pier network inspect`).
pub const PODMAN_ID: &str = "pier.podman.id";
/// netavark's search domain for DNS-enabled networks.
pub const SEARCH_DOMAIN: &str = "dns.podman";

/// netavark 1.4's `NetworkOptions`: one container's networks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkOptions {
    pub container_id: String,
    pub container_name: String,
    pub networks: HashMap<String, PerNetworkOptions>,
    pub network_info: HashMap<String, Network>,
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub dns_servers: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PerNetworkOptions {
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    pub interface_name: String,
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Network {
    pub dns_enabled: bool,
    pub driver: String,
    pub id: String,
    pub internal: bool,
    pub ipv6_enabled: bool,
    pub name: String,
    #[serde(default)]
    pub network_interface: Option<String>,
    #[serde(default)]
    pub options: Option<HashMap<String, String>>,
    #[serde(default)]
    pub ipam_options: Option<HashMap<String, String>>,
    #[serde(default)]
    pub subnets: Option<Vec<Subnet>>,
    #[serde(default)]
    pub network_dns_servers: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    pub subnet: IpNet,
    #[serde(default)]
    pub lease_range: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
    pub protocol: String,
    pub range: u16,
}

/// netavark's answer for one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusBlock {
    pub dns_search_domains: Option<Vec<String>>,
    pub dns_server_ips: Option<Vec<IpAddr>>,
    pub interfaces: Option<BTreeMap<String, NetInterface>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Option<Vec<NetAddress>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetAddress {
    pub gateway: Option<IpAddr>,
    pub ipnet: IpNet,
}

/// One call as the shim hands it to the core (the agent's request body).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Call {
    pub netns: String,
    /// The inode of the shim's network namespace: an agent in another
    /// namespace refuses the call (the shim then works without it).
    #[serde(default)]
    pub host_netns: u64,
    pub opts: NetworkOptions,
}

/// An error as netavark words it; printed as `{"error": msg}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

impl Failure {
    pub fn new(m: impl Into<String>) -> Self {
        Failure { error: m.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl From<crate::error::AgentError> for Failure {
    fn from(e: crate::error::AgentError) -> Self {
        Failure::new(e.to_string())
    }
}

/// netavark's rendering of an I/O error.
pub fn io_error(e: &std::io::Error) -> String {
    format!("IO error: {e}")
}

/// The inode of a network namespace file (`/proc/self/ns/net`, a bind mount).
pub fn netns_inode(p: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.ino())
}

/// One of a container's addresses on a network: podman's static IP with
/// its subnet's prefix length and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanAddr {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
}

impl PlanAddr {
    pub fn ipnet(&self) -> IpNet {
        IpNet::new(self.ip, self.prefix).expect("the subnet's prefix length")
    }
}

/// One network of a call, checked and turned into pier's terms.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub net: NamedNetwork,
    pub dns_enabled: bool,
    pub ifname: String,
    /// In the order of the network's subnets (netavark answers so).
    pub addrs: Vec<PlanAddr>,
    pub mac: Option<[u8; 6]>,
    pub aliases: Vec<String>,
    pub network_dns_servers: Vec<IpAddr>,
}

impl Plan {
    pub fn ip4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a.ip {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
    }
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|a| match a.ip {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        })
    }
    /// The subnets' gateways, in order (aardvark-dns listens on each).
    pub fn gateways(&self) -> Vec<IpAddr> {
        self.addrs.iter().filter_map(|a| a.gateway).collect()
    }
}

fn parse_opt<T: std::str::FromStr>(
    o: &Option<HashMap<String, String>>,
    key: &str,
) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    match o.as_ref().and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|e| Failure::new(format!("{e}"))),
    }
}

/// netavark's `decode_address_from_hex`.
fn decode_mac(s: &str) -> Result<[u8; 6], Failure> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Failure::new(format!("invalid mac address: {s}"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// The networks of a setup or teardown, in name order, checked as netavark
/// checks them before touching anything (its messages).
pub fn plan(o: &NetworkOptions) -> Result<Vec<Plan>, Failure> {
    let mut names: Vec<&String> = o.network_info.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let n = &o.network_info[name];
        let per = o
            .networks
            .get(name)
            .ok_or_else(|| Failure::new(format!("network options for network {name} not found")))?;
        match n.driver.as_str() {
            "bridge" => {}
            "macvlan" => {
                return Err(Failure::new(
                    "the macvlan driver is not pier's: install Debian's netavark (/usr/lib/podman/netavark), which pier hands it to",
                ));
            }
            d => return Err(Failure::new(format!("unknown network driver {d}"))),
        }
        let bridge = n
            .network_interface
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Failure::new("no bridge interface name given"))?;
        if per.interface_name.is_empty() {
            return Err(Failure::new("no container interface name given"));
        }
        let ipam = n
            .ipam_options
            .as_ref()
            .and_then(|m| m.get("driver"))
            .map(String::as_str);
        match ipam {
            None | Some("host-local") => {}
            Some("dhcp") => {
                return Err(Failure::new(
                    "IO error: dhcp ipam driver is not yet supported",
                ));
            }
            // No addresses: the interfaces only (netavark's ipam `none`).
            Some("none") => {}
            Some(d) => {
                return Err(Failure::new(format!(
                    "IO error: unsupported ipam driver {d}"
                )));
            }
        }
        let ipam_none = ipam == Some("none");
        let no_ips = Vec::new();
        let static_ips = match per.static_ips.as_ref() {
            _ if ipam_none => &no_ips,
            Some(v) => v,
            None => return Err(Failure::new("IO error: no static ips provided")),
        };
        let mtu: Option<u32> = parse_opt(&n.options, "mtu")?;
        let _isolate: Option<bool> = parse_opt(&n.options, "isolate")?;
        // netavark's default routes have metric 100 unless `metric` says.
        let metric: u32 = parse_opt(&n.options, "metric")?.unwrap_or(100);
        let mac = per.static_mac.as_deref().map(decode_mac).transpose()?;
        let subnets = if ipam_none {
            Vec::new()
        } else {
            n.subnets.clone().unwrap_or_default()
        };
        // Each static IP goes with the subnet that holds it (netavark's
        // rule); pier takes one subnet per family.
        let mut v4: Option<(Ipv4Net, Option<Ipv4Addr>)> = None;
        let mut v6: Option<(Ipv6Net, Option<Ipv6Addr>)> = None;
        for s in &subnets {
            match (s.subnet, s.gateway) {
                (IpNet::V4(sn), gw) => {
                    if v4.is_some() {
                        return Err(Failure::new(format!(
                            "network {name}: pier takes one IPv4 subnet per network"
                        )));
                    }
                    let gw = match gw {
                        None => None,
                        Some(IpAddr::V4(g)) if sn.contains(&g) => Some(g),
                        Some(g) => {
                            return Err(Failure::new(format!(
                                "network {name}: gateway {g} is not in {sn}"
                            )));
                        }
                    };
                    v4 = Some((sn.trunc(), gw));
                }
                (IpNet::V6(sn), gw) => {
                    if v6.is_some() {
                        return Err(Failure::new(format!(
                            "network {name}: pier takes one IPv6 subnet per network"
                        )));
                    }
                    let gw = match gw {
                        None => None,
                        Some(IpAddr::V6(g)) if sn.contains(&g) => Some(g),
                        Some(g) => {
                            return Err(Failure::new(format!(
                                "network {name}: gateway {g} is not in {sn}"
                            )));
                        }
                    };
                    v6 = Some((sn.trunc(), gw));
                }
            }
        }
        let mut addrs: Vec<(usize, PlanAddr)> = Vec::new();
        for ip in static_ips {
            let Some(i) = subnets.iter().position(|s| s.subnet.contains(ip)) else {
                return Err(Failure::new(format!(
                    "IO error: failed to find ip {ip} in subnets of network {name}"
                )));
            };
            if addrs.iter().any(|(j, _)| *j == i) {
                return Err(Failure::new(format!(
                    "network {name}: two static ips in subnet {}",
                    subnets[i].subnet
                )));
            }
            addrs.push((
                i,
                PlanAddr {
                    ip: *ip,
                    prefix: subnets[i].subnet.prefix_len(),
                    gateway: subnets[i].gateway,
                },
            ));
        }
        addrs.sort_by_key(|(i, _)| *i);
        let addrs: Vec<PlanAddr> = addrs.into_iter().map(|(_, a)| a).collect();
        if let Some((sn4, _)) = v4
            && !addrs.iter().any(|a| a.ip.is_ipv4())
        {
            return Err(Failure::new(format!(
                "network {name}: no IPv4 static ip for subnet {sn4}"
            )));
        }
        if let Some((sn6, _)) = v6
            && !addrs.iter().any(|a| a.ip.is_ipv6())
        {
            return Err(Failure::new(format!(
                "network {name}: no IPv6 static ip for subnet {sn6}"
            )));
        }
        let mut options = BTreeMap::new();
        options.insert(opts::BRIDGE_NAME.to_string(), bridge);
        if let Some(m) = mtu.filter(|m| *m != 0) {
            options.insert(opts::MTU.to_string(), m.to_string());
        }
        options.insert(PODMAN_ID.to_string(), n.id.clone());
        options.insert(opts::ROUTE_METRIC.to_string(), metric.to_string());
        out.push(Plan {
            name: name.clone(),
            net: NamedNetwork {
                owner: Owner::Podman,
                name: name.clone(),
                subnet: v4.map(|(s, _)| s),
                gateway: v4.and_then(|(_, g)| g),
                no_ipv4: v4.is_none(),
                ipv6: v6.is_some(),
                subnet6: v6.map(|(s, _)| s),
                gateway6: v6.and_then(|(_, g)| g),
                internal: n.internal,
                options,
            },
            dns_enabled: n.dns_enabled,
            ifname: per.interface_name.clone(),
            addrs,
            mac,
            aliases: per.aliases.clone().unwrap_or_default(),
            network_dns_servers: n.network_dns_servers.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// podman's port mappings as pier's bindings (`protocol` may list several).
pub fn port_bindings(o: &NetworkOptions) -> Result<Vec<PortBinding>, Failure> {
    let mut out = Vec::new();
    for p in o.port_mappings.iter().flatten() {
        let host_ip = crate::daemon::validate::engine_host_ip(&p.host_ip).map_err(Failure::new)?;
        let range = p.range.max(1);
        let end = |start: u16, what: &str| {
            start.checked_add(range - 1).ok_or_else(|| {
                Failure::new(format!(
                    "{what} port {start} with range {range} exceeds 65535"
                ))
            })
        };
        let host_end = end(p.host_port, "host")?;
        let cont_end = end(p.container_port, "container")?;
        let protos: Vec<&str> = if p.protocol.is_empty() {
            vec!["tcp"]
        } else {
            p.protocol.split(',').collect()
        };
        for proto in protos {
            let proto = match proto {
                "tcp" => PortProto::Tcp,
                "udp" => PortProto::Udp,
                "sctp" => {
                    return Err(Failure::new(format!(
                        "port {}/sctp: pier publishes tcp and udp ports, not sctp",
                        p.host_port
                    )));
                }
                other => return Err(Failure::new(format!("unknown port protocol {other}"))),
            };
            out.push(PortBinding {
                host_ip,
                host_port: p.host_port,
                host_port_end: host_end,
                container_port: p.container_port,
                container_port_end: cont_end,
                proto,
            });
        }
    }
    Ok(out)
}

/// The status block of one planned network (netavark's shape).
pub fn status_of(p: &Plan, mac: &[u8; 6], dns_servers: &Option<Vec<IpAddr>>) -> StatusBlock {
    let mut ifs = BTreeMap::new();
    ifs.insert(
        p.ifname.clone(),
        NetInterface {
            mac_address: mac_string(mac),
            subnets: Some(
                p.addrs
                    .iter()
                    .map(|a| NetAddress {
                        gateway: a.gateway,
                        ipnet: a.ipnet(),
                    })
                    .collect(),
            ),
        },
    );
    let (servers, search) = if p.dns_enabled {
        (p.gateways(), vec![SEARCH_DOMAIN.to_string()])
    } else {
        (dns_servers.clone().unwrap_or_default(), Vec::new())
    };
    StatusBlock {
        dns_search_domains: Some(search),
        dns_server_ips: Some(servers),
        interfaces: Some(ifs),
    }
}

/// Forget podman's containers whose namespace is gone (killed without a
/// teardown): their addresses are podman's to hand out again.
fn prune_dead(txn: &mut crate::daemon::Txn) -> crate::error::Result<()> {
    let dead: Vec<_> = txn
        .state
        .containers
        .values()
        .filter(|c| {
            c.owner == Owner::Podman
                && !c
                    .netns
                    .as_deref()
                    .is_some_and(crate::daemon::reconcile::is_netns_mount)
        })
        .cloned()
        .collect();
    for c in dead {
        tracing::info!(
            "netavark: the namespace of podman container {} is gone: detaching",
            c.engine_id.as_deref().unwrap_or("")
        );
        for e in &c.endpoints {
            Daemon::detach(txn, &c.id, &e.id, false)?;
        }
        txn.state.containers.remove(&c.id);
    }
    prune_networks(txn);
    Ok(())
}

/// podman's networks nothing is attached to go, bridge and all (netavark
/// removes a bridge with its last veth; podman keeps the config).
fn prune_networks(txn: &mut crate::daemon::Txn) {
    let unused: Vec<_> = txn
        .state
        .networks
        .values()
        .filter(|n| n.owner == Owner::Podman && txn.state.containers_on(n).is_empty())
        .cloned()
        .collect();
    for n in unused {
        Daemon::remove_network(txn, &n);
    }
}

/// Bring `lo` up inside the container's namespace (netavark's first step,
/// pier's last one of a setup that succeeds; podman leaves it down). A thread joins the namespace for one ioctl.
pub fn loopback_up(netns: &Path) -> Result<(), Failure> {
    let f = std::fs::File::open(netns)
        .map_err(|e| Failure::new(format!("invalid namespace path: {}", io_error(&e))))?;
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            // SAFETY: a plain socket(2) call; the fd is owned right after.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a new socket nobody else owns.
            let owned =
                unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let sock = owned.as_raw_fd();
            // SAFETY: ifreq is plain data; the ioctls read and write it.
            unsafe {
                let mut ifr: libc::ifreq = std::mem::zeroed();
                for (i, b) in b"lo".iter().enumerate() {
                    ifr.ifr_name[i] = *b as libc::c_char;
                }
                if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short == 0 {
                    ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                    if libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the loopback thread panicked")))
    })
    .map_err(|e| Failure::new(format!("set lo up: {}", io_error(&e))))
}

/// `setup`: every network of the call attached in one change (nothing is
/// left if one fails); netavark's answer, one status block per network.
pub fn setup(d: &Daemon, call: &Call) -> Result<BTreeMap<String, StatusBlock>, Failure> {
    let o = &call.opts;
    let plans = plan(o)?;
    let ports = port_bindings(o)?;
    if o.container_id.is_empty() {
        return Err(Failure::new("container_id is empty"));
    }
    let netns = Path::new(&call.netns).to_path_buf();
    std::fs::File::open(&netns)
        .map_err(|e| Failure::new(format!("invalid namespace path: {}", io_error(&e))))?;
    let macs = d.change(|txn| {
        prune_dead(txn)?;
        let mine =
            txn.state.containers.values().find(|c| {
                c.owner == Owner::Podman && c.engine_id.as_deref() == Some(&o.container_id)
            });
        if let Some(p) = plans
            .iter()
            .find(|p| mine.is_some_and(|c| c.endpoints.iter().any(|e| e.ifname == p.ifname)))
        {
            return Err(veth_exists(&p.ifname));
        }
        let mut macs = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            let req = EngineAttach {
                owner: Owner::Podman,
                engine_id: o.container_id.clone(),
                name: Some(o.container_name.clone())
                    .filter(|n| crate::daemon::validate::check_name("container", n).is_ok()),
                netns: netns.clone(),
                network_id: String::new(),
                ifname: p.ifname.clone(),
                ip: p.ip4(),
                ip6: p.ip6(),
                mac: p.mac,
                aliases: p.aliases.clone(),
                // Published on the first network (in name order).
                ports: if i == 0 { ports.clone() } else { Vec::new() },
            };
            let (e, _) = Daemon::engine_attach_named_in(txn, &p.net, req)
                .map_err(|e| netavark_words(e, &p.ifname))?;
            macs.push(e.mac);
        }
        // `lo` up last, in the change: a refused setup leaves the namespace
        // as it was (the API fuzz found `lo` up after an invalid interface name).
        loopback_up(&netns).map_err(|f| crate::error::AgentError::Internal(f.error))?;
        Ok(macs)
    })?;
    Ok(plans
        .iter()
        .zip(macs)
        .map(|(p, m)| (p.name.clone(), status_of(p, &m, &o.dns_servers)))
        .collect())
}

/// pier's words where netavark's are known to podman users and the suite.
fn netavark_words(e: crate::error::AgentError, ifname: &str) -> crate::error::AgentError {
    let s = e.to_string();
    if s.contains("File exists") || s.contains(&format!("interface {ifname} already exists")) {
        return veth_exists(ifname);
    }
    // The kernel's EACCES for an IPv6 address where IPv6 is disabled.
    if s.starts_with("netlink: add ")
        && s.contains(" to bridge ")
        && s.contains(':')
        && s.ends_with("Permission denied (os error 13)")
        && s.split(' ').nth(2).is_some_and(|a| a.contains(':'))
    {
        return crate::error::AgentError::Internal(
            "add ip addr to bridge: failed to add ipv6 address, is ipv6 enabled in the kernel?: Netlink error: Permission denied (os error 13)".into(),
        );
    }
    e
}

fn veth_exists(ifname: &str) -> crate::error::AgentError {
    crate::error::AgentError::Conflict(format!(
        "create veth pair: interface {ifname} already exists on container namespace: Netlink error: File exists (os error 17)"
    ))
}

/// `teardown`: the container's interfaces on the call's networks go, and
/// networks nothing uses any more with them. What is not attached is
/// already torn down.
pub fn teardown(d: &Daemon, call: &Call) -> Result<(), Failure> {
    let o = &call.opts;
    let mut names: Vec<&String> = o.network_info.keys().collect();
    names.sort();
    for name in &names {
        if !o.networks.contains_key(*name) {
            return Err(Failure::new(format!(
                "network options for network {name} not found"
            )));
        }
    }
    d.change(|txn| {
        let Some(c) = txn
            .state
            .containers
            .values()
            .find(|c| c.owner == Owner::Podman && c.engine_id.as_deref() == Some(&o.container_id))
            .cloned()
        else {
            prune_dead(txn)?;
            return Ok(());
        };
        for name in &names {
            let ifname = &o.networks[*name].interface_name;
            let Some(net) = txn.state.network_by_name(name).cloned() else {
                continue;
            };
            if let Some(e) = c
                .endpoints
                .iter()
                .find(|e| e.network_id == net.id && &e.ifname == ifname)
            {
                Daemon::detach(txn, &c.id, &e.id, false)?;
            }
        }
        if txn.state.containers[&c.id].endpoints.is_empty() {
            txn.state.containers.remove(&c.id);
        }
        prune_dead(txn)?;
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: serde_json::Value) -> NetworkOptions {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "container_id": "abc", "container_name": "web",
            "networks": {"podman": {"interface_name": "eth0", "static_ips": ["10.88.0.2"]}},
            "network_info": {"podman": {"name": "podman", "id": "2f25", "driver": "bridge",
                "network_interface": "podman0", "subnets": [{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": true}},
            "port_mappings": [{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp,udp", "range": 3}]
        })
    }

    #[test]
    fn plans_a_bridge_network() {
        let o = opts(base());
        let p = plan(&o).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].ip4(), Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(p[0].net.options[opts::BRIDGE_NAME], "podman0");
        let s = status_of(&p[0], &[2, 0, 0, 0, 0, 1], &None);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["dns_server_ips"], serde_json::json!(["10.88.0.1"]));
        assert_eq!(j["dns_search_domains"], serde_json::json!(["dns.podman"]));
        assert_eq!(
            j["interfaces"]["eth0"]["subnets"][0]["ipnet"],
            "10.88.0.2/16"
        );
        assert_eq!(j["interfaces"]["eth0"]["mac_address"], "02:00:00:00:00:01");
    }

    #[test]
    fn plans_a_dual_stack_network_with_a_metric() {
        let mut v = base();
        v["networks"]["podman"]["static_ips"] = serde_json::json!(["fd10:88::5", "10.88.0.2"]);
        v["network_info"]["podman"]["subnets"] = serde_json::json!([
            {"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"},
            {"subnet": "fd10:88::/64", "gateway": "fd10:88::1"}]);
        v["network_info"]["podman"]["options"] = serde_json::json!({"metric": "200"});
        let p = plan(&opts(v.clone())).unwrap();
        assert_eq!(p[0].ip4(), Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(p[0].ip6(), Some("fd10:88::5".parse().unwrap()));
        assert_eq!(p[0].net.subnet6, Some("fd10:88::/64".parse().unwrap()));
        assert_eq!(p[0].net.gateway6, Some("fd10:88::1".parse().unwrap()));
        assert_eq!(p[0].net.options[opts::ROUTE_METRIC], "200");
        let j = serde_json::to_value(status_of(&p[0], &[2, 0, 0, 0, 0, 1], &None)).unwrap();
        // In the subnets' order, as netavark answers.
        assert_eq!(
            j["interfaces"]["eth0"]["subnets"],
            serde_json::json!([
                {"gateway": "10.88.0.1", "ipnet": "10.88.0.2/16"},
                {"gateway": "fd10:88::1", "ipnet": "fd10:88::5/64"}])
        );
        assert_eq!(
            j["dns_server_ips"],
            serde_json::json!(["10.88.0.1", "fd10:88::1"])
        );
        // No metric: netavark's 100.
        let p = plan(&opts(base())).unwrap();
        assert_eq!(p[0].net.options[opts::ROUTE_METRIC], "100");
        // A static ip in no subnet; a dual-stack network without a v6 ip.
        let mut w = v.clone();
        w["networks"]["podman"]["static_ips"] = serde_json::json!(["10.88.0.2", "fd99::5"]);
        assert!(plan(&opts(w)).unwrap_err().error.contains("fd99::5"));
        let mut w = v.clone();
        w["networks"]["podman"]["static_ips"] = serde_json::json!(["10.88.0.2"]);
        assert!(
            plan(&opts(w))
                .unwrap_err()
                .error
                .contains("no IPv6 static ip")
        );
        let mut w = v;
        w["network_info"]["podman"]["options"] = serde_json::json!({"metric": "x"});
        assert!(plan(&opts(w)).is_err());
    }

    #[test]
    fn ports_expand_protocols_and_ranges() {
        let b = port_bindings(&opts(base())).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].host_port, b[0].host_port_end), (8080, 8082));
        assert_eq!((b[1].container_port, b[1].container_port_end), (80, 82));
        assert_eq!(b[1].proto, PortProto::Udp);
        let mut v = base();
        v["port_mappings"][0]["protocol"] = "sctp".into();
        assert!(port_bindings(&opts(v)).unwrap_err().error.contains("sctp"));
        let mut v = base();
        v["port_mappings"][0]["host_port"] = 65535.into();
        assert!(port_bindings(&opts(v)).is_err());
        // IPv6 host addresses, as the CLI's `-p [addr]:H:C`.
        let mut v = base();
        v["port_mappings"][0]["host_ip"] = "fd00::1".into();
        let b = port_bindings(&opts(v)).unwrap();
        assert_eq!(b[0].host_ip, Some("fd00::1".parse().unwrap()));
        let mut v = base();
        v["port_mappings"][0]["host_ip"] = "nonsense".into();
        let e = port_bindings(&opts(v)).unwrap_err().error;
        assert!(e.contains("not an IP address"), "{e}");
    }

    #[test]
    fn netavark_messages() {
        let mut v = base();
        v["network_info"]["podman"]["ipam_options"] = serde_json::json!({"driver": "someDriver"});
        assert_eq!(
            plan(&opts(v)).unwrap_err().error,
            "IO error: unsupported ipam driver someDriver"
        );
        let mut v = base();
        v["network_info"]["podman"]["network_interface"] = "".into();
        assert_eq!(
            plan(&opts(v)).unwrap_err().error,
            "no bridge interface name given"
        );
        let mut v = base();
        v["networks"]["podman"]["interface_name"] = "".into();
        assert_eq!(
            plan(&opts(v)).unwrap_err().error,
            "no container interface name given"
        );
        let mut v = base();
        v["networks"] = serde_json::json!({});
        assert_eq!(
            plan(&opts(v)).unwrap_err().error,
            "network options for network podman not found"
        );
        let mut v = base();
        v["networks"]["podman"]["static_mac"] = "zz:00".into();
        assert!(plan(&opts(v)).is_err());
    }
}
