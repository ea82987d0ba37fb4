//! The endpoint core: networks, endpoints on sandboxes, published ports.
//!
//! Every front end — pier's own API (`run`, `network connect`, ...) and the
//! engines' (the Docker driver in `crate::docker`) — calls these inside one
//! [`Daemon::change`], so validation, IPAM, interfaces, undo, the dataplane
//! sync and the names hook happen once, the same way for every caller.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    Action, Daemon, Txn, bridge_spec, endpoint_spec, parse_bool_opt, routed_overlap,
    routed_subnets, validate,
};
use crate::{
    api::types::NetworkCreate,
    error::{Result, conflict, invalid},
    ipam,
    state::{
        DRIVER_BRIDGE, Endpoint, Network, Owner, PortBinding, State, new_id, now_rfc3339, opts,
    },
};

/// What a caller asks of a new endpoint; `None` fields are pier's choice.
#[derive(Debug, Clone, Default)]
pub struct EndpointReq {
    /// The engine's endpoint id (Docker's EndpointID).
    pub id: Option<String>,
    /// The address (Docker's IPAM, `--ip`); else the lowest free one.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address on a dual-stack network (`--ip6`); else the lowest
    /// free one.
    pub ip6: Option<Ipv6Addr>,
    /// The MAC; else Docker's 02:42 + address.
    pub mac: Option<[u8; 6]>,
    pub aliases: Vec<String>,
    /// The engine moves the container end into its sandbox itself, under
    /// this temporary name (Docker's `SrcName`); else pier makes it inside.
    pub engine_peer: Option<String>,
    /// The name inside the container (CNI's `CNI_IFNAME`, netavark's
    /// `interface_name`); else the next free `ethN`.
    pub ifname: Option<String>,
}

/// Ports a Linux bridge takes: the kernel numbers them in 10 bits
/// (`BR_MAX_PORTS` 1 024) and never uses 0, so the 1 024th interface gets
/// EXFULL. Docker's bridge stops there too (moby/moby#44973).
pub const BRIDGE_MAX_PORTS: usize = 1023;

impl Daemon {
    /// A new bridge network: name, subnet (given, else the next free one),
    /// gateway, range and Docker's options checked; its bridge made.
    pub(crate) fn create_network(
        txn: &mut Txn,
        req: &NetworkCreate,
        owner: Owner,
        id: Option<String>,
    ) -> Result<String> {
        validate::check_name("network", &req.name).map_err(invalid)?;
        if txn.state.network_by_name(&req.name).is_some() {
            return Err(conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        let id = match id {
            Some(id) if txn.state.networks.contains_key(&id) => {
                return Err(conflict(format!("network with id {id} already exists")));
            }
            Some(id) => id,
            None => new_id(),
        };
        let bridge = match req.options.get(opts::BRIDGE_NAME) {
            Some(b) => {
                if !crate::config::valid_ifname(b) {
                    return Err(invalid(format!(
                        "invalid bridge name {b:?}: 1 to 15 printable ASCII bytes, no '/', ':', '%' or spaces"
                    )));
                }
                b.clone()
            }
            None => format!("br-{}", &id[..12]),
        };
        if txn
            .state
            .networks
            .values()
            .any(|n| n.bridge.as_deref() == Some(&bridge))
            || txn.d.topo.host_links()?.contains(&bridge)
        {
            return Err(conflict(format!("bridge name {bridge} is already in use")));
        }
        let icc = parse_bool_opt(opts::ENABLE_ICC, req.options.get(opts::ENABLE_ICC))?;
        let masquerade = parse_bool_opt(opts::ENABLE_MASQ, req.options.get(opts::ENABLE_MASQ))?;
        let mtu = match req.options.get(opts::MTU) {
            None => None,
            Some(s) => match s.parse::<u32>() {
                Ok(m) if (68..=65535).contains(&m) => Some(m),
                _ => {
                    return Err(invalid(format!(
                        "invalid value {s:?} for option {}: an MTU between 68 and 65535",
                        opts::MTU
                    )));
                }
            },
        };
        if let Some(v) = req.options.get(opts::ROUTE_METRIC)
            && v.parse::<u32>().is_err()
        {
            return Err(invalid(format!(
                "invalid value {v:?} for option {}: a route metric (0 to 4294967295)",
                opts::ROUTE_METRIC
            )));
        }
        if let Some(v) = req.options.get(opts::PUBLISH_ALLOW) {
            let list = crate::state::parse_cidr_list(v)
                .map_err(|e| invalid(format!("option {}: {e}", opts::PUBLISH_ALLOW)))?;
            if list.is_empty() {
                return Err(invalid(format!(
                    "option {}: at least one CIDR (CIDR,CIDR)",
                    opts::PUBLISH_ALLOW
                )));
            }
        }
        let ours: Vec<Ipv4Net> = txn
            .state
            .networks
            .values()
            .filter_map(|n| n.subnet)
            .collect();
        let subnet = match &req.subnet {
            _ if req.no_ipv4 => {
                if req.subnet.is_some() || req.gateway.is_some() || req.ip_range.is_some() {
                    return Err(invalid(
                        "an IPv4 --subnet, --gateway or --ip-range on a network without IPv4",
                    ));
                }
                None
            }
            Some(s) => {
                let sn = ipam::parse_subnet(s).map_err(|e| invalid(e.to_string()))?;
                if ours.iter().any(|o| ipam::overlaps(o, &sn)) {
                    return Err(conflict(ipam::IpamError::Overlap.to_string()));
                }
                // A subnet the host already routes (an uplink's, a VPN's)
                // would shadow it, and its gateway could be a host address.
                if let Some(r) = routed_overlap(txn.d.topo.as_ref(), &sn)? {
                    return Err(conflict(format!(
                        "subnet {sn} overlaps {r}, which is routed on the host"
                    )));
                }
                Some(sn)
            }
            None => {
                if req.gateway.is_some() || req.ip_range.is_some() {
                    return Err(invalid("--gateway and --ip-range need --subnet"));
                }
                let mut taken = ours.clone();
                taken.extend(routed_subnets(txn.d.topo.as_ref())?);
                Some(ipam::pick_subnet(&taken).map_err(|e| conflict(e.to_string()))?)
            }
        };
        let (gateway, ip_range) = match subnet {
            Some(sn) => {
                let (g, r) =
                    ipam::validate_pool(sn, req.gateway.as_deref(), req.ip_range.as_deref())
                        .map_err(|e| invalid(e.to_string()))?;
                (Some(g), r)
            }
            None => (None, None),
        };
        let (subnet6, gateway6, ip_range6) = Self::pool6(txn, req)?;
        txn.state.next_net_num += 1;
        let n = Network {
            id: id.clone(),
            num: txn.state.next_net_num,
            name: req.name.clone(),
            driver: DRIVER_BRIDGE.into(),
            created: now_rfc3339(),
            default: false,
            bridge: Some(bridge),
            subnet,
            gateway,
            ip_range,
            internal: req.internal,
            icc,
            masquerade,
            mtu,
            options: req.options.clone(),
            labels: req.labels.clone(),
            owner,
            subnet6,
            gateway6,
            ip_range6,
            pending: Default::default(),
        };
        let spec = bridge_spec(&n).expect("bridge network");
        txn.on_fail(Action::RemoveBridge(spec.name.clone()));
        txn.d.topo.ensure_bridge(&spec)?;
        txn.state.networks.insert(id.clone(), n);
        Ok(id)
    }

    /// The IPv6 pool of a new network: with `--ipv6`, the given subnet
    /// (not overlapping another network's or a route of the host) or the
    /// next free /64 of [`ipam::ULA_POOL`]; its gateway (`::1` by default)
    /// and range.
    #[allow(clippy::type_complexity)]
    fn pool6(
        txn: &Txn,
        req: &NetworkCreate,
    ) -> Result<(Option<Ipv6Net>, Option<Ipv6Addr>, Option<Ipv6Net>)> {
        if !req.enable_ipv6 {
            if req.subnet6.is_some() || req.gateway6.is_some() || req.ip_range6.is_some() {
                return Err(invalid("an IPv6 pool needs --ipv6"));
            }
            return Ok((None, None, None));
        }
        let ours: Vec<Ipv6Net> = txn
            .state
            .networks
            .values()
            .filter_map(|n| n.subnet6)
            .collect();
        let routed = txn.d.topo.routed_subnets6()?;
        let sn = match &req.subnet6 {
            Some(s) => {
                let sn = ipam::parse_subnet6(s).map_err(|e| invalid(e.to_string()))?;
                if ours.iter().any(|o| ipam::overlaps6(o, &sn)) {
                    return Err(conflict(ipam::IpamError::Overlap.to_string()));
                }
                if let Some(r) = routed.iter().find(|r| ipam::overlaps6(r, &sn)) {
                    return Err(conflict(format!(
                        "subnet {sn} overlaps {r}, which is routed on the host"
                    )));
                }
                sn
            }
            None => {
                if req.gateway6.is_some() || req.ip_range6.is_some() {
                    return Err(invalid(
                        "an IPv6 --gateway or --ip-range needs an IPv6 --subnet",
                    ));
                }
                let mut taken = ours;
                taken.extend(routed);
                ipam::pick_subnet6(&taken).map_err(|e| conflict(e.to_string()))?
            }
        };
        let (gw, range) =
            ipam::validate_pool6(sn, req.gateway6.as_deref(), req.ip_range6.as_deref())
                .map_err(|e| invalid(e.to_string()))?;
        Ok((Some(sn), Some(gw), range))
    }

    /// Forget a network and remove its bridge once committed. The caller
    /// checked that nothing is attached.
    pub(crate) fn remove_network(txn: &mut Txn, n: &Network) {
        txn.state.networks.remove(&n.id);
        if let Some(b) = &n.bridge {
            txn.after_commit(Action::RemoveBridge(b.clone()));
        }
    }

    /// Add an endpoint on `net` to container `cid`: address, MAC, veth
    /// pair (inside the namespace, or for the engine to move), recorded.
    pub(crate) fn attach(
        txn: &mut Txn,
        cid: &str,
        net: &Network,
        req: EndpointReq,
    ) -> Result<Endpoint> {
        let c = txn.state.containers.get(cid).expect("container").clone();
        let netns = c.netns.clone().expect("bridge mode has a namespace");
        if let Some(bridge) = &net.bridge {
            // Refused here, before any address or interface is taken, in
            // words instead of the kernel's EXFULL.
            let on_bridge = txn
                .state
                .containers
                .values()
                .flat_map(|c| c.endpoints.iter())
                .filter(|e| e.network_id == net.id)
                .count()
                + net
                    .pending
                    .iter()
                    .filter(|(id, p)| p.host_ifname.is_some() && req.id.as_ref() != Some(*id))
                    .count();
            if on_bridge >= BRIDGE_MAX_PORTS {
                return Err(conflict(format!(
                    "network {} is full: its bridge {bridge} has {on_bridge} container \
                     interfaces, the most a Linux bridge takes; connect the container to \
                     another network",
                    net.name
                )));
            }
        }
        let ip = match (net.subnet, net.gateway) {
            (Some(subnet), Some(gateway)) => {
                let mut used = txn.state.used_ips(&net.id);
                // An engine's endpoint created earlier holds its own address.
                if let Some(p) = req.id.as_ref().and_then(|id| net.pending.get(id)) {
                    used.remove(&p.ip);
                }
                Some(
                    ipam::allocate(&net.name, subnet, gateway, net.ip_range, &used, req.ip)
                        .map_err(|e| match e {
                            ipam::IpamError::InUse(_) => conflict(e.to_string()),
                            ipam::IpamError::Exhausted(_) => conflict(e.to_string()),
                            _ => invalid(e.to_string()),
                        })?,
                )
            }
            _ if req.ip.is_some() => {
                return Err(invalid(format!("network {} has no IPv4", net.name)));
            }
            _ => None,
        };
        let ip6 = match (net.subnet6, net.gateway6) {
            (Some(sn6), Some(gw6)) => {
                let mut used6 = txn.state.used_ips6(&net.id);
                if let Some(a) = req
                    .id
                    .as_ref()
                    .and_then(|id| net.pending.get(id))
                    .and_then(|p| p.ip6)
                {
                    used6.remove(&a);
                }
                Some(
                    ipam::allocate6(&net.name, sn6, gw6, net.ip_range6, &used6, req.ip6).map_err(
                        |e| match e {
                            ipam::IpamError::InUse6(_) | ipam::IpamError::Exhausted6(_) => {
                                conflict(e.to_string())
                            }
                            _ => invalid(e.to_string()),
                        },
                    )?,
                )
            }
            _ if req.ip6.is_some() => {
                return Err(invalid(format!(
                    "network {} has no IPv6 (create it with --ipv6)",
                    net.name
                )));
            }
            _ => None,
        };
        let ifname = match req.ifname {
            Some(i) => {
                if !crate::config::valid_ifname(&i) {
                    return Err(invalid(format!("invalid interface name {i:?}")));
                }
                if c.endpoints.iter().any(|e| e.ifname == i) {
                    return Err(conflict(format!(
                        "interface {i} already exists in the container"
                    )));
                }
                i
            }
            None => (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| !c.endpoints.iter().any(|e| &e.ifname == n))
                .unwrap(),
        };
        let taken = |h: &str| {
            txn.state
                .containers
                .values()
                .flat_map(|c| c.endpoints.iter())
                .any(|e| e.host_ifname == h)
        };
        // veth<7 hex> from the endpoint id; a new one on the rare clash.
        let id = req.id.clone().unwrap_or_else(new_id);
        let mut host_ifname = format!("veth{}", &id[..7]);
        while taken(&host_ifname) {
            host_ifname = format!("veth{}", &new_id()[..7]);
        }
        let mac = req
            .mac
            .unwrap_or_else(|| crate::state::endpoint_mac(ip, ip6, &id));
        let e = Endpoint {
            id,
            network_id: net.id.clone(),
            ifname,
            host_ifname,
            ip,
            prefix_len: net.subnet.map(|s| s.prefix_len()).unwrap_or(0),
            ip6,
            prefix_len6: net.subnet6.map(|s| s.prefix_len()).unwrap_or(0),
            mac,
            aliases: req.aliases,
            engine_peer: req.engine_peer,
        };
        let spec = endpoint_spec(&netns, &e, net, c.endpoints.is_empty());
        txn.on_fail(Action::RemoveEndpoint(spec.clone()));
        txn.d.topo.add_endpoint(&spec)?;
        if let Some(n) = txn.state.networks.get_mut(&net.id) {
            n.pending.remove(&e.id);
        }
        txn.state
            .containers
            .get_mut(cid)
            .unwrap()
            .endpoints
            .push(e.clone());
        Ok(e)
    }

    /// Take endpoint `eid` off container `cid`; its veth goes once committed.
    /// The first endpoint carries the default route (and the published
    /// ports): when it goes, the next one takes both, as in Docker (in
    /// namespaces pier configures; an engine moves its own routes).
    /// `keep_link`: leave the veth for the engine (Docker's Leave; its
    /// DeleteEndpoint removes it).
    pub(crate) fn detach(txn: &mut Txn, cid: &str, eid: &str, keep_link: bool) -> Result<Endpoint> {
        let c = txn.state.containers.get(cid).expect("container").clone();
        let Some(e) = c.endpoints.iter().find(|e| e.id == eid).cloned() else {
            return Err(invalid(format!(
                "container {} has no endpoint {eid}",
                c.name
            )));
        };
        let netns = c.netns.clone().expect("bridge mode");
        if let Some(n) = txn.state.networks.get(&e.network_id)
            && !keep_link
        {
            txn.after_commit(Action::RemoveEndpoint(endpoint_spec(&netns, &e, n, false)));
        }
        if e.engine_peer.is_none()
            && c.endpoints.first().is_some_and(|f| f.id == e.id)
            && let Some(next) = c.endpoints.get(1)
            && let Some(n) = txn.state.networks.get(&next.network_id)
        {
            txn.after_commit(Action::DefaultRoute(endpoint_spec(&netns, next, n, true)));
        }
        let cm = txn.state.containers.get_mut(cid).unwrap();
        cm.endpoints.retain(|x| x.id != e.id);
        if cm.ports_on.as_deref() == Some(eid) {
            cm.ports_on = None;
            cm.ports.clear();
        }
        Ok(e)
    }

    /// One host port for each binding whose host range offers a choice
    /// (Docker's `-p 8000-8010:80`; host port 0: the kernel's ephemeral
    /// range, as Docker picks): the first that no running container other
    /// than `except` publishes and no host process holds. Bindings that map
    /// a range onto a range of the same length are kept as they are.
    pub(crate) fn choose_host_ports(
        st: &State,
        ports: &[PortBinding],
        except: &str,
    ) -> Result<Vec<PortBinding>> {
        let mut out: Vec<PortBinding> = Vec::new();
        for b in ports {
            if !validate::is_choice(b) {
                Self::check_ports_free(st, std::slice::from_ref(b), except)?;
                out.push(b.clone());
                continue;
            }
            let (lo, hi) = if b.host_port == 0 {
                ephemeral_range()
            } else {
                (b.host_port, b.host_port_end)
            };
            let pick = (lo..=hi).find_map(|hp| {
                let c = PortBinding {
                    host_port: hp,
                    host_port_end: hp,
                    container_port_end: b.container_port,
                    ..b.clone()
                };
                let free = Self::check_ports_free(st, std::slice::from_ref(&c), except).is_ok()
                    && !out.iter().any(|o| validate::ports_clash(o, &c).is_some())
                    && host_port_free(&c);
                free.then_some(c)
            });
            match pick {
                Some(c) => out.push(c),
                None => {
                    let ip = b.host_ip.map(|i| i.to_string()).unwrap_or("0.0.0.0".into());
                    return Err(conflict(format!(
                        "Bind for {ip}:{lo}-{hi} failed: no free port in the range for {}/{}",
                        b.container_port,
                        b.proto.as_str()
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Refuse host ports that a running container other than `except`
    /// publishes (Docker's words). Ports held by host processes are found
    /// by the dataplane sync, which reserves them.
    pub(crate) fn check_ports_free(st: &State, ports: &[PortBinding], except: &str) -> Result<()> {
        for b in ports {
            for o in st
                .containers
                .values()
                .filter(|o| o.running && o.id != except)
            {
                if let Some(p) = o.ports.iter().find_map(|q| validate::ports_clash(q, b)) {
                    return Err(conflict(format!(
                        "Bind for {} failed: port is already allocated",
                        validate::bind_addr(b, p)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`),
/// where Docker picks host ports for `-p CONTPORT`.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(a, b)| a <= b && *a > 0)
        .unwrap_or((32768, 60999))
}

/// Whether a host process could bind the binding's host port now (pier's
/// own published ports are held by the dataplane's reservations too).
fn host_port_free(b: &PortBinding) -> bool {
    let free = |ip: std::net::IpAddr| {
        let addr = std::net::SocketAddr::from((ip, b.host_port));
        let r = match b.proto {
            crate::state::PortProto::Tcp => std::net::TcpListener::bind(addr).map(|_| ()),
            crate::state::PortProto::Udp => std::net::UdpSocket::bind(addr).map(|_| ()),
        };
        // A host without IPv6 cannot hold an IPv6 port either.
        r.is_ok() || (ip.is_ipv6() && r.is_err_and(|e| e.kind() != std::io::ErrorKind::AddrInUse))
    };
    match b.host_ip {
        Some(ip) => free(ip),
        None => free(Ipv4Addr::UNSPECIFIED.into()) && free(std::net::Ipv6Addr::UNSPECIFIED.into()),
    }
}

#[cfg(test)]
pub(crate) fn tests_ephemeral_range() -> (u16, u16) {
    ephemeral_range()
}
