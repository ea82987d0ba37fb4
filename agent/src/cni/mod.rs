//! The CNI front end: pier as a CNI plugin (`type: "pier"`) for containerd,
//! CRI-O, Kubernetes, Nomad and Podman's CNI backend.
//!
//! Two halves over one contract ([`Call`] → [`Attached`] or [`Failure`]):
//! - [`plugin`], the `pier-cni` binary the runtime executes: it reads
//!   `CNI_*` and the config on stdin, checks them (a bad config is refused
//!   also when the agent is down), sends one request to the agent's API
//!   socket and renders the CNI result or error. No kernel work.
//! - [`agent`], the agent's `/cni/*` routes: the network the config names
//!   (made on the first ADD), the attachment through the endpoint core
//!   (`daemon/engine.rs`), recorded before ADD returns.
//!
//! A DEL that finds no agent is queued as a file next to the socket
//! ([`delete_queue_dir`]) and carried out when the agent is back.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::state::{PortBinding, PortProto, opts};

pub mod agent;
pub mod plugin;

/// The network option `"portsHeldByRuntime": true` sets: the runtime keeps
/// its published host ports open itself (rootful podman's conmon listens on
/// them after ADD), so the agent must not hold them with its own socket.
pub const PORTS_HELD: &str = "pier.cni.ports-held-by-runtime";

/// Versions the plugin speaks; results are rendered in the requested one.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's error codes, and pier's own (≥ 100).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: no ADD can succeed now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// pier: what is asked for clashes with what pier holds (a published
    /// port, an address, an overlapping subnet, another owner's network).
    pub const CONFLICT: u32 = 100;
    /// pier: the agent or the kernel failed.
    pub const INTERNAL: u32 = 101;
}

/// A CNI error: the spec's `code`, `msg` and `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Failure {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Failure {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

impl From<crate::error::AgentError> for Failure {
    fn from(e: crate::error::AgentError) -> Self {
        use crate::error::AgentError as E;
        let c = match &e {
            E::Invalid(_) => code::INVALID_CONFIG,
            E::NotFound(_) => code::UNKNOWN_CONTAINER,
            E::Conflict(_) => code::CONFLICT,
            E::Dataplane(crate::dataplane::DataplaneError::PortInUse(_)) => code::CONFLICT,
            E::Topology(crate::topology::TopologyError::Invalid(_)) => code::INVALID_CONFIG,
            _ => code::INTERNAL,
        };
        Failure::new(c, e.to_string())
    }
}

/// The network a config describes (its top-level keys besides CNI's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetSpec {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// Dual stack (`"ipv6": true` or a `subnet6`): the IPv6 pool given, else
    /// the next free ULA /64.
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    /// pier's network options (`opts::*`).
    pub options: BTreeMap<String, String>,
}

/// One request from the plugin to the agent (`POST /cni/<verb>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub container_id: String,
    /// Empty on a DEL whose namespace is gone, and on GC/STATUS.
    pub netns: String,
    pub ifname: String,
    pub network: NetSpec,
    pub ports: Vec<PortBinding>,
    pub aliases: Vec<String>,
    /// CHECK: the addresses the runtime holds from ADD (`prevResult`).
    pub prev_ips: Vec<IpNet>,
    /// GC: `cni.dev/valid-attachments` as `(containerID, ifname)`.
    pub valid: Vec<(String, String)>,
    /// A queued DEL: when the runtime asked (ms since the epoch).
    pub queued_ms: Option<u64>,
}

/// What the agent made on ADD (and confirms on CHECK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    pub host_ifname: String,
    pub ifname: String,
    pub mac: String,
    pub address: Ipv4Net,
    /// `None` on an `internal` network: no default route.
    pub gateway: Option<Ipv4Addr>,
    /// On a dual-stack network: the IPv6 address and gateway.
    #[serde(default)]
    pub address6: Option<Ipv6Net>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub netns: String,
    pub mtu: Option<u32>,
    /// The resolver pier serves in the namespace (names of the network).
    pub nameservers: Vec<IpAddr>,
    /// Published host ports as bound (`hostPort` 0: the one chosen).
    pub ports: Vec<PortBinding>,
}

/// The config keys CNI and runtimes put into every plugin's config.
const CNI_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "args",
    "dns",
    "cni.dev/valid-attachments",
    "disableCheck",
    "disableGC",
];

/// pier's own keys.
const PIER_KEYS: &[&str] = &[
    "socket",
    "subnet",
    "gateway",
    "internal",
    "isolate",
    "masquerade",
    "ipMasq",
    "mtu",
    "bridge",
    "ipv6",
    "subnet6",
    "gateway6",
    "portsHeldByRuntime",
];

/// A parsed plugin config.
#[derive(Debug, Clone)]
pub struct Conf {
    pub cni_version: String,
    pub socket: PathBuf,
    pub network: NetSpec,
    pub ports: Vec<PortBinding>,
    pub aliases: Vec<String>,
    /// `dns` from the config, returned as is in the result.
    pub dns: Option<Value>,
    pub prev_result: Option<Value>,
    pub valid: Vec<(String, String)>,
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure::new(code::INVALID_CONFIG, msg)
}

/// One `runtimeConfig.portMappings` entry, in both spellings runtimes use
/// (podman and CRI-O: `hostPort`; containerd's go-cni: `HostPort`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortMapping {
    #[serde(rename = "hostPort", alias = "HostPort")]
    host_port: i64,
    #[serde(rename = "containerPort", alias = "ContainerPort")]
    container_port: i64,
    #[serde(default, rename = "protocol", alias = "Protocol")]
    protocol: String,
    #[serde(default, rename = "hostIP", alias = "HostIP", alias = "hostIp")]
    host_ip: String,
}

fn port_binding(v: &Value) -> Result<PortBinding, Failure> {
    let m: PortMapping = serde_json::from_value(v.clone())
        .map_err(|e| bad(format!("runtimeConfig.portMappings: {e} in {v}")))?;
    let port = |what: &str, p: i64, zero_ok: bool| -> Result<u16, Failure> {
        match u16::try_from(p) {
            Ok(0) if zero_ok => Ok(0),
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(format!(
                "runtimeConfig.portMappings: {what} {p} is not a port (1 to 65535)"
            ))),
        }
    };
    let host_port = port("hostPort", m.host_port, true)?;
    let container_port = port("containerPort", m.container_port, false)?;
    let proto = match m.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => PortProto::Tcp,
        "udp" => PortProto::Udp,
        p => {
            return Err(bad(format!(
                "runtimeConfig.portMappings: protocol {p:?} is not supported (tcp or udp)"
            )));
        }
    };
    let host_ip = crate::daemon::validate::engine_host_ip(&m.host_ip)
        .map_err(|e| bad(format!("runtimeConfig.portMappings: {e}")))?;
    Ok(PortBinding {
        host_ip,
        host_port,
        host_port_end: host_port,
        container_port,
        container_port_end: container_port,
        proto,
    })
}

fn bool_key(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, Failure> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(format!("{k}: {v} is not true or false"))),
    }
}

fn str_key<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, Failure> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(format!("{k}: {v} is not a string"))),
    }
}

/// Is `v` one of [`SUPPORTED_VERSIONS`]?
pub fn supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// `a` < `b` for dotted versions (`0.4.0` < `1.0.0`).
pub fn version_lt(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u32> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(a) < p(b)
}

/// Parse and check a plugin config; `command` decides what must be there.
pub fn parse_conf(stdin: &[u8], command: &str) -> Result<Conf, Failure> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        Failure::new(
            code::DECODE,
            format!("the network config on stdin is not JSON: {e}"),
        )
    })?;
    let Value::Object(o) = v else {
        return Err(Failure::new(
            code::DECODE,
            "the network config on stdin is not a JSON object",
        ));
    };
    let cni_version = str_key(&o, "cniVersion")?
        .ok_or_else(|| bad("cniVersion is missing"))?
        .to_string();
    if !supported(&cni_version) {
        return Err(Failure::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CNI version {cni_version} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    if let Some(k) = o
        .keys()
        .find(|k| !CNI_KEYS.contains(&k.as_str()) && !PIER_KEYS.contains(&k.as_str()))
    {
        let msg = if k == "ipam" {
            "ipam: pier does its own address management; give subnet and gateway at the top level"
                .to_string()
        } else {
            format!(
                "unknown key {k:?} in the pier plugin's config (known: {})",
                PIER_KEYS.join(", ")
            )
        };
        return Err(bad(msg));
    }
    match str_key(&o, "type")? {
        Some("pier") | None => {}
        Some(t) => return Err(bad(format!("type {t:?}: this is the pier plugin"))),
    }
    let name = str_key(&o, "name")?
        .ok_or_else(|| bad("name is missing: the network's name"))?
        .to_string();
    crate::daemon::validate::check_name("network", &name).map_err(|e| bad(format!("name: {e}")))?;
    let socket = match str_key(&o, "socket")? {
        Some(s) if Path::new(s).is_absolute() => PathBuf::from(s),
        Some(s) => return Err(bad(format!("socket: {s:?} is not an absolute path"))),
        None => PathBuf::from(crate::config::DEFAULT_SOCKET),
    };
    let subnet = str_key(&o, "subnet")?
        .map(|s| crate::ipam::parse_subnet(s).map_err(|e| bad(format!("subnet: {e}"))))
        .transpose()?;
    let gateway = str_key(&o, "gateway")?
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| bad(format!("gateway: {s:?} is not an IPv4 address")))
        })
        .transpose()?;
    if gateway.is_some() && subnet.is_none() {
        return Err(bad("gateway needs subnet"));
    }
    let subnet6 = str_key(&o, "subnet6")?
        .map(|s| crate::ipam::parse_subnet6(s).map_err(|e| bad(format!("subnet6: {e}"))))
        .transpose()?;
    let gateway6 = str_key(&o, "gateway6")?
        .map(|s| {
            s.parse::<Ipv6Addr>()
                .map_err(|_| bad(format!("gateway6: {s:?} is not an IPv6 address")))
        })
        .transpose()?;
    if gateway6.is_some() && subnet6.is_none() {
        return Err(bad("gateway6 needs subnet6"));
    }
    let ipv6 = match bool_key(&o, "ipv6")? {
        Some(false) if subnet6.is_some() => {
            return Err(bad("ipv6: false contradicts subnet6"));
        }
        v => v.unwrap_or(false) || subnet6.is_some(),
    };
    if bool_key(&o, "isolate")? == Some(false) {
        return Err(bad(
            "isolate: false: pier always isolates its networks from each other",
        ));
    }
    let mut options = BTreeMap::new();
    let masq = match (bool_key(&o, "masquerade")?, bool_key(&o, "ipMasq")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad("masquerade and ipMasq disagree"));
        }
        (a, b) => a.or(b),
    };
    if let Some(m) = masq {
        options.insert(opts::ENABLE_MASQ.to_string(), m.to_string());
    }
    match o.get("mtu") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|m| (68..=65535).contains(&m)) => {
            options.insert(opts::MTU.to_string(), n.to_string());
        }
        Some(v) => return Err(bad(format!("mtu: {v} is not an MTU (68 to 65535)"))),
    }
    if let Some(b) = str_key(&o, "bridge")? {
        if !crate::config::valid_ifname(b) {
            return Err(bad(format!("bridge: {b:?} is not an interface name")));
        }
        options.insert(opts::BRIDGE_NAME.to_string(), b.to_string());
    }
    if bool_key(&o, "portsHeldByRuntime")? == Some(true) {
        options.insert(PORTS_HELD.to_string(), "true".to_string());
    }
    let internal = bool_key(&o, "internal")?.unwrap_or(false);

    let rc = match o.get("runtimeConfig") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(v) => return Err(bad(format!("runtimeConfig: {v} is not an object"))),
    };
    let mut ports = Vec::new();
    match rc.get("portMappings") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for p in a {
                ports.push(port_binding(p)?);
            }
        }
        Some(v) => {
            return Err(bad(format!(
                "runtimeConfig.portMappings: {v} is not a list"
            )));
        }
    }
    // Podman sends `{"<network>": [names]}`; a plain list is accepted too.
    let mut aliases = Vec::new();
    let mut push_names = |v: &Value| -> Result<(), Failure> {
        let Value::Array(a) = v else {
            return Err(bad(format!("runtimeConfig.aliases: {v} is not a list")));
        };
        for n in a {
            let Some(s) = n.as_str() else {
                return Err(bad(format!("runtimeConfig.aliases: {n} is not a name")));
            };
            crate::daemon::validate::check_name("alias", s)
                .map_err(|e| bad(format!("runtimeConfig.aliases: {e}")))?;
            if !aliases.iter().any(|x| x == s) {
                aliases.push(s.to_string());
            }
        }
        Ok(())
    };
    match rc.get("aliases") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if let Some(v) = m.get(&name) {
                push_names(v)?;
            }
        }
        Some(v @ Value::Array(_)) => push_names(v)?,
        Some(v) => return Err(bad(format!("runtimeConfig.aliases: {v} is not a map"))),
    }
    let mut valid = Vec::new();
    if command == "GC" {
        match o.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for x in a {
                    let id = x.get("containerID").and_then(Value::as_str);
                    let ifname = x.get("ifname").and_then(Value::as_str);
                    match (id, ifname) {
                        (Some(i), Some(f)) => valid.push((i.to_string(), f.to_string())),
                        _ => {
                            return Err(bad(format!(
                                "cni.dev/valid-attachments: {x} lacks containerID or ifname"
                            )));
                        }
                    }
                }
            }
            Some(v) => {
                return Err(bad(format!("cni.dev/valid-attachments: {v} is not a list")));
            }
        }
    }
    Ok(Conf {
        cni_version,
        socket,
        network: NetSpec {
            name,
            subnet,
            gateway,
            ipv6,
            subnet6,
            gateway6,
            internal,
            options,
        },
        ports,
        aliases,
        dns: o.get("dns").filter(|v| !v.is_null()).cloned(),
        prev_result: o.get("prevResult").filter(|v| !v.is_null()).cloned(),
        valid,
    })
}

/// The addresses of a `prevResult`'s `ips` (both families).
pub fn prev_ips(prev: Option<&Value>) -> Vec<IpNet> {
    prev.and_then(|p| p.get("ips"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The ADD result in `version`: pier's interfaces, address and routes
/// after whatever `prev` (an earlier plugin's result) holds.
pub fn render_result(
    version: &str,
    a: &Attached,
    prev: Option<&Value>,
    dns: Option<&Value>,
) -> Value {
    let mut interfaces: Vec<Value> = prev
        .and_then(|p| p.get("interfaces"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut ips: Vec<Value> = prev
        .and_then(|p| p.get("ips"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut routes: Vec<Value> = prev
        .and_then(|p| p.get("routes"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    interfaces.push(json!({ "name": a.host_ifname }));
    let mut inner = json!({ "name": a.ifname, "mac": a.mac, "sandbox": a.netns });
    if let Some(m) = a.mtu
        && !version_lt(version, "1.1.0")
    {
        inner["mtu"] = json!(m);
    }
    interfaces.push(inner);
    let mut ip = json!({
        "address": a.address.to_string(),
        "interface": interfaces.len() - 1,
    });
    if let Some(g) = a.gateway {
        ip["gateway"] = json!(g.to_string());
        routes.push(json!({ "dst": "0.0.0.0/0", "gw": g.to_string() }));
    }
    if version_lt(version, "1.0.0") {
        ip["version"] = json!("4");
    }
    ips.push(ip);
    if let Some(a6) = a.address6 {
        let mut ip6 = json!({
            "address": a6.to_string(),
            "interface": interfaces.len() - 1,
        });
        if let Some(g6) = a.gateway6 {
            ip6["gateway"] = json!(g6.to_string());
            routes.push(json!({ "dst": "::/0", "gw": g6.to_string() }));
        }
        if version_lt(version, "1.0.0") {
            ip6["version"] = json!("6");
        }
        ips.push(ip6);
    }
    let dns = match dns {
        Some(d) => d.clone(),
        None if !a.nameservers.is_empty() => json!({
            "nameservers": a.nameservers.iter().map(|n| n.to_string()).collect::<Vec<_>>()
        }),
        None => prev
            .and_then(|p| p.get("dns"))
            .cloned()
            .unwrap_or_else(|| json!({})),
    };
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}

/// Where DELs that found no agent wait for it: next to its API socket
/// (`/run/pier/pier.cni-delete/` for `/run/pier/pier.sock`).
pub fn delete_queue_dir(socket: &Path) -> PathBuf {
    socket.with_extension("cni-delete")
}

/// CNI's rule for container ids: alphanumerics first, then also `_.-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut b = id.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<Conf, Failure> {
        let s = format!(r#"{{"cniVersion":"1.0.0","name":"piernet","type":"pier"{extra}}}"#);
        parse_conf(s.as_bytes(), "ADD")
    }

    #[test]
    fn both_port_spellings() {
        let c = conf(
            r#","runtimeConfig":{"portMappings":[
                {"hostPort":8081,"containerPort":8080,"protocol":"tcp","hostIP":""},
                {"HostPort":5353,"ContainerPort":53,"Protocol":"UDP","HostIP":"127.0.0.1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(
            (c.ports[0].host_port, c.ports[0].container_port),
            (8081, 8080)
        );
        assert_eq!(c.ports[0].host_ip, None);
        assert_eq!(c.ports[1].proto, PortProto::Udp);
        assert_eq!(c.ports[1].host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        // An IPv6 host address, as the CLI's `-p [::1]:8082:80`.
        let c = conf(
            r#","runtimeConfig":{"portMappings":[
                {"hostPort":8082,"containerPort":80,"protocol":"tcp","hostIP":"::1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.ports[0].host_ip,
            Some(std::net::Ipv6Addr::LOCALHOST.into())
        );
        let e = conf(
            r#","runtimeConfig":{"portMappings":[
                {"hostPort":8082,"containerPort":80,"hostIP":"fd00::1::2"}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("not an IP address"), "{}", e.msg);
    }

    #[test]
    fn podman_aliases_map() {
        let c =
            conf(r#","runtimeConfig":{"aliases":{"piernet":["web","w1"],"other":["x"]}}"#).unwrap();
        assert_eq!(c.aliases, ["web", "w1"]);
    }

    #[test]
    fn bad_configs_say_what() {
        let e = conf(r#","subent":"10.1.0.0/24""#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("\"subent\""), "{e}");
        let e = conf(r#","ipam":{"type":"host-local"}"#).unwrap_err();
        assert!(e.msg.contains("own address management"), "{e}");
        let e = conf(r#","subnet":"10.1.0.0/33""#).unwrap_err();
        assert!(e.msg.starts_with("subnet:"), "{e}");
        let e = conf(r#","gateway":"10.1.0.1""#).unwrap_err();
        assert_eq!(e.msg, "gateway needs subnet");
        let e =
            conf(r#","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}"#)
                .unwrap_err();
        assert!(e.msg.contains("70000"), "{e}");
        let e = parse_conf(br#"{"cniVersion":"2.0.0","name":"n"}"#, "ADD").unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = parse_conf(b"{", "ADD").unwrap_err();
        assert_eq!(e.code, code::DECODE);
    }

    #[test]
    fn result_after_loopback_in_each_version() {
        let a = Attached {
            host_ifname: "veth0123456".into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:01:00:02".into(),
            address: "10.1.0.2/24".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            address6: None,
            gateway6: None,
            netns: "/run/netns/x".into(),
            mtu: None,
            nameservers: vec!["127.0.0.11".parse().unwrap()],
            ports: vec![],
        };
        let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"/run/netns/x"}],
            "ips":[{"address":"127.0.0.1/8","interface":0}]});
        let r = render_result("1.0.0", &a, Some(&prev), None);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["ips"][1]["address"], "10.1.0.2/24");
        assert_eq!(r["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11");
        assert!(r["ips"][1].get("version").is_none());
        let r = render_result("0.4.0", &a, None, None);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][0]["interface"], 1);
    }

    #[test]
    fn dual_stack_configs_and_results() {
        let c =
            conf(r#","subnet":"10.1.0.0/24","subnet6":"fd01::/64","gateway6":"fd01::fe""#).unwrap();
        assert!(c.network.ipv6);
        assert_eq!(c.network.subnet6, Some("fd01::/64".parse().unwrap()));
        assert_eq!(c.network.gateway6, Some("fd01::fe".parse().unwrap()));
        let c = conf(r#","ipv6":true"#).unwrap();
        assert!(c.network.ipv6 && c.network.subnet6.is_none());
        assert!(!conf("").unwrap().network.ipv6);
        for (extra, want) in [
            (r#","subnet6":"fd01::1/64""#, "subnet6:"),
            (r#","subnet6":"10.1.0.0/24""#, "subnet6:"),
            (r#","gateway6":"fd01::1""#, "gateway6 needs subnet6"),
            (r#","subnet6":"fd01::/64","gateway6":"x""#, "gateway6:"),
            (r#","ipv6":false,"subnet6":"fd01::/64""#, "contradicts"),
            (r#","ipv6":"yes""#, "ipv6:"),
        ] {
            let e = conf(extra).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert!(e.msg.contains(want), "{extra}: {e}");
        }
        let a = Attached {
            host_ifname: "veth0123456".into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:01:00:02".into(),
            address: "10.1.0.2/24".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            address6: Some("fd01::2/64".parse().unwrap()),
            gateway6: Some("fd01::1".parse().unwrap()),
            netns: "/run/netns/x".into(),
            mtu: None,
            nameservers: vec![],
            ports: vec![],
        };
        let r = render_result("1.0.0", &a, None, None);
        assert_eq!(r["ips"][1]["address"], "fd01::2/64");
        assert_eq!(r["ips"][1]["gateway"], "fd01::1");
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd01::1"}));
        let r = render_result("0.3.1", &a, None, None);
        assert_eq!(r["ips"][1]["version"], "6");
        let prev = prev_ips(Some(&r));
        assert_eq!(prev.len(), 2);
        assert_eq!(prev[1], "fd01::2/64".parse::<IpNet>().unwrap());
    }

    #[test]
    fn container_ids() {
        assert!(valid_container_id("default-t1"));
        assert!(valid_container_id("0123abc_x.y"));
        assert!(!valid_container_id(""));
        assert!(!valid_container_id("-x"));
        assert!(!valid_container_id("a/b"));
    }
}
