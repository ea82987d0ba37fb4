//! The records the agent keeps. The store persists them; every kernel object
//! pier makes is derived from them.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub const DRIVER_BRIDGE: &str = "bridge";
pub const DRIVER_HOST: &str = "host";
pub const DRIVER_NULL: &str = "null";

/// Docker's network options pier understands.
pub mod opts {
    pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
    pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
    pub const ENABLE_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
    pub const MTU: &str = "com.docker.network.driver.mtu";
    /// pier's own: `CIDR,CIDR`: only these sources reach the ports its
    /// containers publish.
    pub const PUBLISH_ALLOW: &str = "pier.publish.allow";
    /// pier's own: the metric of the default routes in the containers
    /// (netavark's `metric` option; podman's networks default to 100).
    pub const ROUTE_METRIC: &str = "pier.route.metric";
}

/// Who made a network or a container, and so who may change or remove it:
/// pier's own API, or an engine through its front end (the Docker driver).
/// Reconcile keeps what an engine owns; pier's CLI shows it but refuses to
/// change it ("managed by docker").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    #[default]
    Pier,
    Docker,
    /// Podman through pier's `netavark` front end.
    Podman,
    /// A CNI runtime (containerd, CRI-O, podman's CNI backend).
    Cni,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Pier => "pier",
            Owner::Docker => "docker",
            Owner::Podman => "podman",
            Owner::Cni => "cni",
        }
    }
    pub fn is_engine(self) -> bool {
        self != Owner::Pier
    }
}

/// An endpoint an engine created on a network but has not joined to a
/// sandbox yet (Docker's CreateEndpoint before Join): its address is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEndpoint {
    /// The engine's endpoint id (64 hex digits), which the endpoint keeps.
    pub id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The engine's IPv6 address on a dual-stack network (Docker's
    /// `AddressIPv6`), with the subnet's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_len6: u8,
    pub mac: [u8; 6],
    /// Its host-side veth, kept from Leave until DeleteEndpoint (the engine
    /// moves the container end back out of its sandbox in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Small numeric id for the dataplane, unique in this agent.
    pub num: u32,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    /// RFC 3339.
    pub created: String,
    /// The default `bridge` network.
    pub default: bool,
    /// Bridge interface (bridge driver only).
    pub bridge: Option<String>,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_pier")]
    pub owner: Owner,
    /// `--ipv6`: dual stack, with this IPv6 subnet, gateway (on the bridge)
    /// and range. Older stores have none of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<Ipv6Net>,
    /// Endpoints an engine created here that no sandbox has joined yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, PendingEndpoint>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

fn is_pier(o: &Owner) -> bool {
    *o == Owner::Pier
}

impl Network {
    pub fn is_bridge(&self) -> bool {
        self.driver == DRIVER_BRIDGE
    }
    /// Dual stack (`EnableIPv6`).
    pub fn ipv6(&self) -> bool {
        self.subnet6.is_some()
    }
    /// First 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// How a container is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetMode {
    /// Own namespace with endpoints on bridge networks.
    Bridge,
    /// The agent's (host's) namespace.
    Host,
    /// Own namespace, `lo` only.
    None,
    /// The namespace of another container (its id).
    Container(String),
}

/// A container's interface on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits.
    pub id: String,
    pub network_id: String,
    /// Name inside the container: eth0, eth1, ...
    pub ifname: String,
    /// Host-side veth: `veth` + the first 7 hex digits of the endpoint id.
    pub host_ifname: String,
    /// `None` on a network without IPv4 (IPv6 only, or netavark's ipam
    /// `none`: no address at all).
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: u8,
    /// The IPv6 address on a dual-stack network (with the subnet's prefix
    /// length); older stores have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_len6: u8,
    pub mac: [u8; 6],
    /// `--alias` names on this network.
    pub aliases: Vec<String>,
    /// The container-side end is made in the host namespace under this name
    /// and the engine moves it into its sandbox itself (Docker's Join:
    /// `SrcName`); `None`: pier makes it inside the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_peer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortProto {
    Tcp,
    Udp,
}

impl PortProto {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// `-p [IP:]HOSTPORT[-END]:CONTPORT[-END][/tcp|udp]`. `host_ip`: `None`
/// binds every host address of both families (IPv6 when the container has
/// an IPv6 address), `0.0.0.0` every IPv4 one, `::` every IPv6 one, else
/// that address only (as Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
    pub container_port_end: u16,
    pub proto: PortProto,
}

impl PortBinding {
    /// `(host_port, container_port)` for each port of the range.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..=(self.host_port_end - self.host_port))
            .map(|i| (self.host_port + i, self.container_port + i))
    }
}

/// An `/etc/hosts` entry written for `--link NAME[:ALIAS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub container_id: String,
    pub name: String,
    pub alias: Option<String>,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    pub created: String,
    pub hostname: String,
    pub mode: NetMode,
    /// Network mode as the user named it (`bridge`, `mynet`, `host`, `none`, `container:NAME`).
    pub network_mode: String,
    /// Bind mount of the container's namespace (none in host mode).
    pub netns: Option<PathBuf>,
    pub endpoints: Vec<Endpoint>,
    pub links: Vec<Link>,
    pub ports: Vec<PortBinding>,
    /// Main command; empty for a namespace that waits for `exec`.
    pub cmd: Vec<String>,
    /// Desired state: started (true) or stopped.
    pub running: bool,
    /// Main process: pid and its start time (from /proc/<pid>/stat).
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub exit_code: Option<i32>,
    /// When it last started and last stopped (ms since the epoch), for the
    /// `Up 5 seconds` / `Exited (0) 2 minutes ago` of `ps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// `--rm`: removed once its command exits or it is stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
    /// `--dns`: the container's own upstream resolvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--add-host`: extra `/etc/hosts` lines (name, address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--dns-search`: resolv.conf's search domains (`.` alone: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`: resolv.conf's options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `-e`: `KEY=VALUE` for every process started in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `--expose`: ports the container says it serves (`80/tcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<(u16, PortProto)>,
    #[serde(default, skip_serializing_if = "is_pier")]
    pub owner: Owner,
    /// The engine's own id of the container (Podman's, CNI's
    /// `CNI_CONTAINERID`); Docker's sandboxes are known by their `netns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
    /// The endpoint the published ports lead to (Docker: the one it called
    /// ProgramExternalConnectivity for); `None`: the first endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports_on: Option<String>,
    /// `--publish-allow CIDR`: only these sources reach its published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish_allow: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Allow,
    Deny,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Allow => "allow",
            PolicyAction::Deny => "deny",
        }
    }
}

/// One `pier policy allow|deny` rule: which sources may reach published
/// ports. Without `port`, `proto` and `container` it is host-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: u32,
    pub action: PolicyAction,
    pub src: IpNet,
    /// A published host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<PortProto>,
    /// The container (id) whose published ports it is for; the rule goes
    /// with the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Only for packets arriving on this uplink (an interface name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    pub created: String,
}

impl PolicyRecord {
    pub fn host_wide(&self) -> bool {
        self.port.is_none() && self.proto.is_none() && self.container.is_none()
    }
    /// Whether it applies to host port `port`/`proto` of container `cid`.
    pub fn applies(&self, cid: &str, port: u16, proto: PortProto) -> bool {
        self.port.is_none_or(|p| p == port)
            && self.proto.is_none_or(|p| p == proto)
            && self.container.as_deref().is_none_or(|c| c == cid)
    }
}

/// The sources of a `pier.publish.allow` option value (`CIDR,CIDR`; a bare
/// address is a /32).
pub fn parse_cidr_list(v: &str) -> std::result::Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_cidr)
        .collect()
}

/// `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`: a /32, `fd00::1`:
/// a /128); host bits set is an error.
pub fn parse_cidr(s: &str) -> std::result::Result<IpNet, String> {
    let bad = || format!("invalid CIDR {s:?}: a prefix like 10.0.0.0/8 or fd00::/8");
    let net = if s.contains('/') {
        s.parse::<IpNet>().map_err(|_| bad())?
    } else {
        IpNet::from(s.parse::<IpAddr>().map_err(|_| bad())?)
    };
    if net.trunc() != net {
        return Err(format!(
            "invalid CIDR {s:?}: host bits are set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
    pub fn endpoint_on(&self, network_id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.network_id == network_id)
    }
    /// The endpoint whose address published ports lead to.
    pub fn ports_endpoint(&self) -> Option<&Endpoint> {
        match &self.ports_on {
            Some(id) => self.endpoints.iter().find(|e| &e.id == id),
            None => self.endpoints.first(),
        }
    }
    /// The host addresses binding `p` is served on, as Docker lists them
    /// (`docker port`, `ps`, `NetworkSettings.Ports`): its own address, or
    /// for none `0.0.0.0` and, when the ports' endpoint has IPv6, `::`.
    pub fn served_host_ips(&self, p: &PortBinding) -> Vec<std::net::IpAddr> {
        use std::net::{IpAddr, Ipv6Addr};
        if let Some(ip) = p.host_ip {
            return vec![ip];
        }
        let mut out = Vec::new();
        let ep = self.ports_endpoint();
        // An endpoint without IPv4 (IPv6 only) serves IPv6 only.
        if ep.is_none_or(|e| e.ip.is_some() || e.ip6.is_none()) {
            out.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        }
        if ep.is_some_and(|e| e.ip6.is_some()) {
            out.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        out
    }
}

/// A record shared between copies of the [`State`] until one of them
/// changes it (copy on write: `DerefMut` copies it first when it is
/// shared). A change copies the state; with its records shared, that copy,
/// its comparison with the old one (store commit, names) and the old one's
/// drop cost one pointer per record, not a deep copy of every container.
#[derive(Default)]
pub struct Shared<T>(std::sync::Arc<T>);

impl<T> Shared<T> {
    pub fn new(v: T) -> Self {
        Shared(std::sync::Arc::new(v))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> From<T> for Shared<T> {
    fn from(v: T) -> Self {
        Shared::new(v)
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Shared::new)
    }
}

/// Everything the agent records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, Shared<Container>>,
    pub next_net_num: u32,
    /// `pier policy` rules by id.
    #[serde(default)]
    pub policies: BTreeMap<u32, PolicyRecord>,
    #[serde(default)]
    pub next_policy_id: u32,
}

/// The MAC Docker derives from an address: 02:42 and the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// An endpoint's MAC when none is given: Docker's 02:42 + IPv4 address,
/// else (no IPv4) 02:42 + the low 32 bits of its IPv6 address, else 02:42
/// + the first 4 bytes of its id.
pub fn endpoint_mac(ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>, id: &str) -> [u8; 6] {
    if let Some(ip) = ip {
        return mac_for(ip);
    }
    let tail = match ip6 {
        Some(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
        None => {
            let mut t = [0u8; 4];
            for (i, b) in t.iter_mut().enumerate() {
                *b = id
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
            }
            t
        }
    };
    [0x02, 0x42, tail[0], tail[1], tail[2], tail[3]]
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl State {
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.name == name)
    }

    /// Find a network by name, full id or unique id prefix (Docker's rule).
    pub fn find_network(&self, key: &str) -> Option<&Network> {
        if let Some(n) = self.network_by_name(key) {
            return Some(n);
        }
        if let Some(n) = self.networks.get(key) {
            return Some(n);
        }
        let mut m = self
            .networks
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key));
        match (m.next(), m.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    /// Find a container by name, full id or unique id prefix.
    pub fn find_container(&self, key: &str) -> Option<&Container> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = self.containers.values().find(|c| c.name == key) {
            return Some(c);
        }
        if let Some(c) = self.containers.get(key) {
            return Some(c);
        }
        let mut m = self
            .containers
            .values()
            .filter(|c| !key.is_empty() && c.id.starts_with(key));
        match (m.next(), m.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    }

    /// Containers with an endpoint on `network_id` (or in its mode, for host/none).
    pub fn containers_on(&self, net: &Network) -> Vec<&Container> {
        self.containers
            .values()
            .filter(|c| match c.mode {
                NetMode::Bridge => c.endpoint_on(&net.id).is_some(),
                NetMode::Host => net.driver == DRIVER_HOST,
                NetMode::None => net.driver == DRIVER_NULL,
                NetMode::Container(_) => false,
            })
            .map(|c| &**c)
            .collect()
    }

    /// Addresses taken on a network (engine endpoints not joined yet too).
    pub fn used_ips(&self, network_id: &str) -> std::collections::BTreeSet<Ipv4Addr> {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.network_id == network_id)
            .filter_map(|e| e.ip)
            .chain(
                self.networks
                    .get(network_id)
                    .into_iter()
                    .flat_map(|n| n.pending.values().map(|p| p.ip)),
            )
            .collect()
    }

    /// IPv6 addresses taken on a network.
    pub fn used_ips6(&self, network_id: &str) -> std::collections::BTreeSet<Ipv6Addr> {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.network_id == network_id)
            .filter_map(|e| e.ip6)
            .chain(
                self.networks
                    .get(network_id)
                    .into_iter()
                    .flat_map(|n| n.pending.values().filter_map(|p| p.ip6)),
            )
            .collect()
    }

    /// The container (sandbox) holding the endpoint with this id.
    pub fn container_with_endpoint(&self, endpoint_id: &str) -> Option<&Container> {
        self.containers
            .values()
            .find(|c| c.endpoints.iter().any(|e| e.id == endpoint_id))
            .map(|c| &**c)
    }

    /// Containers that share `id`'s namespace (`--network container:<id>`).
    pub fn sharers_of(&self, id: &str) -> Vec<&Container> {
        self.containers
            .values()
            .filter(|c| c.mode == NetMode::Container(id.to_string()))
            .map(|c| &**c)
            .collect()
    }
}

/// Now as RFC 3339 (UTC, nanoseconds), like Docker's `Created`.
/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration in Docker's words (`ps`): "Less than a second", "1 second",
/// "5 seconds", "About a minute", "3 minutes", "About an hour", "5 hours",
/// "3 days", "2 weeks", "4 months", "2 years".
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    let minutes = secs / 60;
    // Hours round to the nearest one.
    let hours = (ms + 1_800_000) / 3_600_000;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Seconds since the epoch of an RFC 3339 time (`Created` in lists).
pub fn rfc3339_secs(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// 64 random hex digits.
pub fn new_id() -> String {
    let a: [u8; 32] = rand::random();
    a.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_in_dockers_words() {
        let s = 1000;
        let (m, h, d) = (60 * s, 3600 * s, 86_400 * s);
        for (ms, want) in [
            (0, "Less than a second"),
            (999, "Less than a second"),
            (s, "1 second"),
            (59 * s + 999, "59 seconds"),
            (m, "About a minute"),
            (2 * m, "2 minutes"),
            (59 * m, "59 minutes"),
            (h, "About an hour"),
            (h + 29 * m, "About an hour"),
            (h + 30 * m, "2 hours"),
            (47 * h, "47 hours"),
            (48 * h, "2 days"),
            (13 * d, "13 days"),
            (14 * d, "2 weeks"),
            (60 * d, "2 months"),
            (730 * d, "2 years"),
        ] {
            assert_eq!(human_duration(ms), want, "{ms} ms");
        }
    }

    use super::*;

    #[test]
    fn shared_records_are_copied_on_write_only() {
        let a: Shared<Vec<u32>> = vec![1, 2].into();
        let mut b = a.clone();
        // Shared: equal without a deep comparison, one allocation.
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        b.push(3);
        // Written: b has its own copy, a is as it was.
        assert!(!std::sync::Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(*a, vec![1, 2]);
        assert_eq!(*b, vec![1, 2, 3]);
        assert_ne!(a, b);
        // Equal contents in different allocations are still equal.
        let c: Shared<Vec<u32>> = vec![1, 2].into();
        assert_eq!(a, c);
        // Serialized as the record itself.
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, "[1,2,3]");
        let d: Shared<Vec<u32>> = serde_json::from_str(&j).unwrap();
        assert_eq!(d, b);
    }

    #[test]
    fn mac_is_docker_style() {
        assert_eq!(
            mac_string(&mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let s = now_rfc3339();
        let secs = rfc3339_secs(&s).unwrap();
        let now = (now_ms() / 1000) as i64;
        assert!((now - secs).abs() <= 1, "{s} {secs} {now}");
        assert_eq!(rfc3339_secs("2026-12-02T06:00:00.5Z"), Some(1_796_191_200));
        assert_eq!(rfc3339_secs("yesterday"), None);
    }

    #[test]
    fn rfc3339_shape() {
        let s = now_rfc3339();
        assert!(s.len() >= 20, "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && &s[10..11] == "T",
            "{s}"
        );
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("::1/128").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("fd00::7").unwrap().to_string(), "fd00::7/128");
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "", "fd00::/129", "fd00:::1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert!(parse_cidr("10.0.0.5/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_cidr("fd00::1/64").unwrap_err().contains("fd00::/64"));
        assert_eq!(
            parse_cidr_list("10.0.0.0/8, 192.168.0.0/16").unwrap().len(),
            2
        );
        assert!(parse_cidr_list("10.0.0.0/8,nope").is_err());
    }

    #[test]
    fn port_pairs_expand_ranges() {
        let p = PortBinding {
            host_ip: None,
            host_port: 8081,
            host_port_end: 8083,
            container_port: 80,
            container_port_end: 82,
            proto: PortProto::Tcp,
        };
        assert_eq!(
            p.pairs().collect::<Vec<_>>(),
            vec![(8081, 80), (8082, 81), (8083, 82)]
        );
    }
}
