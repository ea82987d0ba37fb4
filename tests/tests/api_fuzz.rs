//! API fuzz: random and mutated requests against a running agent's socket,
//! on every route of `api/server.rs` (bare and under Docker's `/vX.Y`
//! prefixes), the CNI and netavark agent routes, unknown routes and raw
//! garbage. Never a 5xx, never a hung connection; and a request that did not
//! succeed changed nothing: after each one that may change state, networks,
//! containers, policies, host links, the run dir and the pinned maps are
//! exactly as before (a 2xx create is undone, then checked the same way).
//!
//! `API_FUZZ_CASES` (default 3000), `API_FUZZ_SECS` (default 150: the run
//! stops there), `API_FUZZ_SEED` replays a run. Cases that once failed are
//! kept in [`REGRESSIONS`] and run first.
mod agent_util;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_util::{
    api::{Reply, call},
    consistency::host_veths,
    *,
};
use pier_agent::{
    cni::{Call as CniCall, NetSpec},
    netavark::{
        Call as NvCall, Network as NvNetwork, NetworkOptions, PerNetworkOptions, PortMapping,
        Subnet,
    },
    state::{PortBinding, PortProto},
};
use pier_common::{
    endpoint::{EndpointVal4, NetworkVal, VethVal},
    maps as names,
    nat::{PortKey, PortVal},
};
use pier_tests::require_root;
use serde_json::{Value, json};

/// No request may take longer than this.
const DEADLINE: Duration = Duration::from_secs(15);

/// Requests that once gave a 5xx or left something behind (method, path,
/// body; `@CNI_NS@`, `@NV_NS@`: the CNI and netavark namespaces' paths,
/// `@HOST_INO@` the host namespace's inode), replayed before the
/// random ones.
const REGRESSIONS: &[(&str, &str, &str)] = &[
    // hostPortEnd < hostPort: the agent panicked ("attempt to subtract with
    // overflow", 500) after making the veth, which stayed.
    (
        "POST",
        "/cni/add",
        r#"{"aliases":["fzalias"],"containerId":"fzcni1","ifname":"eth0","netns":"@CNI_NS@","network":{"gateway":"10.88.0.1","gateway6":null,"internal":false,"ipv6":false,"name":"fzcninet","options":{"com.docker.network.bridge.enable_icc":"true"},"subnet":"10.88.0.0/24","subnet6":null},"ports":[{"container_port":80,"container_port_end":81,"host_ip":null,"host_port":18200,"host_port_end":2,"proto":"Tcp"}],"prevIps":[],"queuedMs":null,"valid":[]}"#,
    ),
    // A `%` in the interface name: the kernel reads it as a template
    // (`eth%d`) and refused it with EINVAL, a 500 (seed 1796612153694676804).
    (
        "POST",
        "/cni/add",
        r#"{"aliases":["fzalias"],"containerId":"fzcni1","ifname":"%00%ff","netns":"@CNI_NS@","network":{"gateway":"10.88.0.1","gateway6":null,"internal":false,"ipv6":false,"name":"fzcninet","options":{"com.docker.network.bridge.enable_icc":"true"},"subnet":"10.88.0.0/24","subnet6":null},"ports":[{"container_port":80,"container_port_end":81,"host_ip":null,"host_port":18200,"host_port_end":18201,"proto":"Tcp"}],"prevIps":[],"queuedMs":null,"valid":[]}"#,
    ),
    // An invalid interface name: refused (400), but `lo` was up already.
    (
        "POST",
        "/netavark/setup",
        r#"{"host_netns":@HOST_INO@,"netns":"@NV_NS@","opts":{"container_id":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","container_name":"fznv","networks":{"podfz":{"aliases":["fznv"],"interface_name":"ᴫো","static_ips":["10.89.7.2"],"static_mac":null}},"network_info":{"podfz":{"dns_enabled":false,"driver":"bridge","id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","internal":false,"ipv6_enabled":false,"name":"podfz","network_interface":"podfz0","subnets":[{"gateway":"10.89.7.1","subnet":"10.89.7.0/24"}]}},"port_mappings":null,"dns_servers":null}}"#,
    ),
    // The same with the container ports reversed.
    (
        "POST",
        "/cni/add",
        r#"{"containerId":"fzcni1","ifname":"eth0","netns":"@CNI_NS@","network":{"name":"fzcninet","subnet":"10.88.0.0/24","gateway":"10.88.0.1","internal":false,"options":{}},"ports":[{"container_port":81,"container_port_end":80,"host_ip":null,"host_port":18200,"host_port_end":18201,"proto":"Tcp"}]}"#,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Reads: only the status and the answer's arrival are checked.
    Read,
    NetworkCreate,
    ContainerCreate,
    Connect,
    Disconnect,
    Policy,
    CniAdd,
    /// `del`, `check`, `gc`, other verbs.
    Cni,
    NvSetup,
    /// `teardown`, other verbs.
    Nv,
    /// Actions on names nothing has: must be refused.
    Refused,
}

struct Fixture {
    s: Sandbox,
    cni_ns: String,
    nv_ns: String,
    /// Existing paths a body may name (the test's own namespaces).
    allowed_paths: Vec<String>,
    cni_base: Value,
    nv_base: Value,
    /// The inode of the host namespace (netavark calls name it).
    host_ino: u64,
}

impl Fixture {
    fn sock(&self) -> PathBuf {
        self.s.host.socket()
    }

    fn call(&self, m: &str, p: &str, body: &[u8]) -> Reply {
        call(&self.sock(), m, p, body, DEADLINE)
    }

    /// Everything a request might change, as text.
    fn world(&self) -> String {
        let sock = self.sock();
        let mut w = String::new();
        let mut nets = api::get_json(&sock, "/networks");
        if let Some(a) = nets.as_array_mut() {
            a.sort_by_key(|n| n["Name"].as_str().unwrap_or_default().to_string());
        }
        w += &format!("networks: {nets}\n");
        let mut cs = api::get_json(&sock, "/containers/json?all=1");
        for c in cs.as_array_mut().into_iter().flatten() {
            // The age in the status changes by itself.
            c.as_object_mut().unwrap().remove("Status");
        }
        w += &format!("containers: {cs}\n");
        for c in cs.as_array().into_iter().flatten() {
            let id = c["Id"].as_str().unwrap();
            let mut v = api::get_json(&sock, &format!("/containers/{id}/json"));
            v["State"].as_object_mut().map(|s| s.remove("Pid"));
            w += &format!("inspect: {v}\n");
        }
        w += &format!("policies: {}\n", api::get_json(&sock, "/policies"));
        w += &format!("veths: {:?}\n", host_veths(&self.s.host));
        w += &format!("links: {:?}\n", self.s.host.host_link_names());
        for ns in [&self.cni_ns, &self.nv_ns] {
            w += &format!(
                "in {ns}: {}\n",
                self.s.host.host(&["ip", "-n", ns, "-br", "addr"])
            );
        }
        for sub in ["netns", "containers"] {
            let mut v: Vec<String> = std::fs::read_dir(self.s.host.run_dir().join(sub))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            w += &format!("{sub}: {v:?}\n");
        }
        let b = &self.s.host.bpffs_dir;
        let mut ports: BTreeMap<PortKey, PortVal> = consistency::hash_entries(b, names::PORTS);
        // (A port made again may get another counter slot: not state.)
        ports.values_mut().for_each(|v| v.slot = 0);
        w += &format!("PIER_PORTS: {ports:?}\n");
        let eps: BTreeMap<u32, EndpointVal4> = consistency::hash_entries(b, names::ENDPOINTS);
        w += &format!("PIER_ENDPOINTS: {eps:?}\n");
        let v: BTreeMap<u32, VethVal> = consistency::hash_entries(b, names::VETHS);
        w += &format!("PIER_VETHS: {v:?}\n");
        let n: BTreeMap<u32, NetworkVal> = consistency::hash_entries(b, names::NETWORKS);
        w += &format!("PIER_NETWORKS: {n:?}\n");
        let bk: BTreeMap<PortKey, PortKey> = consistency::hash_entries(b, names::BACKENDS);
        w += &format!("PIER_BACKENDS: {bk:?}\n");
        w
    }

    /// Undo a successful request; false when it cannot be undone exactly
    /// (then the new state becomes the reference).
    fn undo(&self, kind: Kind, body: &[u8], reply: &Reply) -> bool {
        let v = reply.json();
        let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let ok = |r: Reply| {
            assert!(
                r.status().is_some_and(|s| s < 300),
                "undo of a {kind:?}: {r:?}"
            );
        };
        match kind {
            Kind::NetworkCreate => {
                ok(self.call(
                    "DELETE",
                    &format!("/networks/{}", v["Id"].as_str().unwrap()),
                    b"",
                ));
                true
            }
            Kind::ContainerCreate => {
                let id = v["Id"].as_str().unwrap();
                ok(self.call("DELETE", &format!("/containers/{id}?force=1"), b""));
                true
            }
            Kind::Connect => {
                let c = sent["Container"].as_str().unwrap_or_default();
                let d = json!({"Container": c, "Force": true}).to_string();
                ok(self.call("POST", "/networks/fzn/disconnect", d.as_bytes()));
                true
            }
            Kind::Policy => {
                for id in v["Ids"].as_array().into_iter().flatten() {
                    ok(self.call("DELETE", &format!("/policies/{id}"), b""));
                }
                true
            }
            Kind::CniAdd => {
                ok(self.call("POST", "/cni/del", body));
                // The network CNI made stays (as with the bridge plugin).
                false
            }
            Kind::NvSetup => {
                ok(self.call("POST", "/netavark/teardown", body));
                false
            }
            _ => false,
        }
    }
}

fn fixture() -> Fixture {
    let mut s = Sandbox::new(&[]);
    s.host
        .pier_ok(&["network", "create", "--subnet", "10.77.0.0/24", "fzn"]);
    s.host
        .pier_ok(&["run", "-d", "--name", "fzc", "-p", "18001:80"]);
    s.host
        .pier_ok(&["run", "-d", "--name", "fzd", "--network", "fzn"]);
    let cni_ns = s.host.add_netns("fzcni");
    let nv_ns = s.host.add_netns("fznv");
    let host_ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(ns_path(&s.host.host_ns)).unwrap().ino()
    };
    let cni = CniCall {
        container_id: "fzcni1".into(),
        netns: ns_path(&cni_ns).display().to_string(),
        ifname: "eth0".into(),
        network: NetSpec {
            name: "fzcninet".into(),
            subnet: Some("10.88.0.0/24".parse().unwrap()),
            gateway: Some("10.88.0.1".parse().unwrap()),
            options: [("com.docker.network.bridge.enable_icc".into(), "true".into())].into(),
            ..Default::default()
        },
        ports: vec![PortBinding {
            host_ip: None,
            host_port: 18200,
            host_port_end: 18201,
            container_port: 80,
            container_port_end: 81,
            proto: PortProto::Tcp,
        }],
        aliases: vec!["fzalias".into()],
        ..Default::default()
    };
    let nv_id = "a".repeat(64);
    let nv = NvCall {
        netns: ns_path(&nv_ns).display().to_string(),
        host_netns: host_ino,
        opts: NetworkOptions {
            container_id: "b".repeat(64),
            container_name: "fznv".into(),
            networks: [(
                "podfz".into(),
                PerNetworkOptions {
                    aliases: Some(vec!["fznv".into()]),
                    interface_name: "eth0".into(),
                    static_ips: Some(vec!["10.89.7.2".parse().unwrap()]),
                    static_mac: None,
                },
            )]
            .into(),
            network_info: [(
                "podfz".into(),
                NvNetwork {
                    dns_enabled: false,
                    driver: "bridge".into(),
                    id: nv_id,
                    internal: false,
                    ipv6_enabled: false,
                    name: "podfz".into(),
                    network_interface: Some("podfz0".into()),
                    subnets: Some(vec![Subnet {
                        gateway: Some("10.89.7.1".parse().unwrap()),
                        subnet: "10.89.7.0/24".parse().unwrap(),
                        lease_range: None,
                    }]),
                    ..Default::default()
                },
            )]
            .into(),
            port_mappings: Some(vec![PortMapping {
                container_port: 80,
                host_ip: String::new(),
                host_port: 18300,
                protocol: "tcp".into(),
                range: 2,
            }]),
            dns_servers: None,
        },
    };
    let allowed_paths = vec![
        ns_path(&cni_ns).display().to_string(),
        ns_path(&nv_ns).display().to_string(),
    ];
    Fixture {
        cni_base: serde_json::to_value(cni).unwrap(),
        nv_base: serde_json::to_value(nv).unwrap(),
        s,
        cni_ns,
        nv_ns,
        allowed_paths,
        host_ino,
    }
}

// ----- generating requests -------------------------------------------------

const WORDS: &[&str] = &[
    "",
    " ",
    "fzn",
    "fzc",
    "fzd",
    "bridge",
    "host",
    "none",
    "container:fzc",
    "container:nx",
    "default",
    "local",
    "overlay",
    "macvlan",
    "tcp",
    "udp",
    "sctp",
    "allow",
    "deny",
    "eth0",
    "lo",
    "uplink0",
    "pier0",
    "br-0123456789ab",
    "veth0123abc",
    "0.0.0.0",
    "::",
    "127.0.0.1",
    "10.77.0.0/24",
    "10.77.0.1",
    "10.77.0.255",
    "10.77.0.0/33",
    "10.0.0.0/0",
    "0.0.0.0/0",
    "172.17.0.0/16",
    "198.18.0.1",
    "999.1.1.1",
    "fd00::/64",
    "fd00::/129",
    "fe80::1",
    "1.2.3.4/32",
    "-1",
    "0",
    "65535",
    "65536",
    "80",
    "80/tcp",
    "80/udp",
    "1-65535:1-65535",
    "18001:80",
    "80-79:80-79",
    "0:0",
    "1:2:3:4",
    "127.0.0.1:18500:80",
    "[::1]:18501:80",
    "18502-18503:80",
    "02:42:0a:4d:00:32",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "zz:zz",
    "a=b",
    "=",
    "a",
    "ndots:99999999999",
    "x:1.2.3.4",
    "x:host-gateway",
    ":",
    "../../x",
    "/nonexistent/ns",
    "\u{0}",
    "\u{7f}\u{1b}[2J",
    "é\u{202e}🦀",
    "%00%ff",
    "{{.Id}}",
    "com.docker.network.bridge.name",
    "com.docker.network.bridge.enable_icc",
    "com.docker.network.driver.mtu",
    "com.docker.network.bridge.enable_ip_masquerade",
    "pier.publish_allow",
    "mtu",
    "true",
    "false",
    "null",
];

fn rand_string(r: &mut Rng) -> String {
    match r.below(6) {
        0 => "x".repeat(1 + r.below(6000) as usize),
        1 => (0..r.below(20))
            .map(|_| char::from_u32(r.below(0x3000) as u32).unwrap_or('?'))
            .collect(),
        2 => format!("nx{}", r.next() % 100_000),
        _ => r.pick(WORDS).to_string(),
    }
}

fn rand_number(r: &mut Rng) -> Value {
    match r.below(10) {
        8 => json!(r.below(3)),
        9 => json!(r.below(65536)),
        0 => json!(-1),
        1 => json!(0),
        2 => json!(65535),
        3 => json!(65536),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1.5e300),
        _ => json!(r.below(70000)),
    }
}

fn rand_value(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(r.below(2) == 0),
        2 => rand_number(r),
        3 | 4 => json!(rand_string(r)),
        5 => Value::Array((0..r.below(4)).map(|_| rand_value(r, depth + 1)).collect()),
        _ => Value::Object(
            (0..r.below(4))
                .map(|_| (rand_string(r), rand_value(r, depth + 1)))
                .collect(),
        ),
    }
}

/// Paths to every node of `v`.
fn nodes(v: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = at.clone();
                p.push(json!(k));
                nodes(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(json!(i));
                nodes(c, p, out);
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        Value::Number(n) => &mut v[n.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

/// One structural mutation of `v`.
fn mutate_json(r: &mut Rng, v: &mut Value) {
    let mut all = Vec::new();
    nodes(v, Vec::new(), &mut all);
    let path = r.pick(&all).clone();
    let n = node_mut(v, &path);
    // Half the time a value of the same type: deeper into the validation.
    if r.below(2) == 0 {
        match n {
            Value::Number(_) => return *n = rand_number(r),
            Value::String(s) => {
                return *s = match r.below(3) {
                    0 => rand_string(r),
                    1 => format!("{s}{}", r.pick(WORDS)),
                    _ => r.pick(WORDS).to_string(),
                };
            }
            Value::Bool(b) => return *b = !*b,
            _ => {}
        }
    }
    match r.below(9) {
        // Another value, often of another type.
        0..=2 => *n = rand_value(r, 1),
        3 => *n = json!(rand_string(r)),
        4 => *n = rand_number(r),
        5 => match n {
            // Drop a key, add one (unknown, or a known one in another case).
            Value::Object(m) if !m.is_empty() && r.below(2) == 0 => {
                let keys: Vec<String> = m.keys().cloned().collect();
                m.remove(r.pick(&keys));
            }
            Value::Object(m) => {
                let k = match m.keys().next() {
                    Some(k) if r.below(2) == 0 => k.to_lowercase(),
                    _ => rand_string(r),
                };
                m.insert(k, rand_value(r, 1));
            }
            Value::Array(a) if !a.is_empty() => {
                let i = r.below(a.len() as u64) as usize;
                let x = a[i].clone();
                for _ in 0..r.below(3) + 1 {
                    a.push(x.clone());
                }
            }
            other => *other = json!([other.clone()]),
        },
        6 => *n = json!([n.clone()]),
        7 => *n = json!({"": n.clone()}),
        _ => {
            if let Value::String(s) = n {
                s.push_str(&rand_string(r));
            } else {
                *n = Value::Null;
            }
        }
    }
}

/// Byte-level damage to a serialized body.
fn mutate_bytes(r: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + r.below(4) {
        if b.is_empty() {
            b.push(b'{');
        }
        let i = r.below(b.len() as u64) as usize;
        match r.below(5) {
            0 => b[i] = r.next() as u8,
            1 => b.truncate(i),
            2 => {
                b.insert(i, *r.pick(b"{}[]\",:\\0-e."));
            }
            3 => {
                b.remove(i);
            }
            _ => {
                let j = r.below(b.len() as u64) as usize;
                let (a, c) = (i.min(j), i.max(j));
                let dup = b[a..c].to_vec();
                b.splice(c..c, dup);
            }
        }
    }
}

/// Replace strings naming an existing path (other than the test's own
/// namespaces) with a missing one: fuzzed bodies must not point the agent
/// at the machine's namespaces or files.
fn defuse(v: &mut Value, allowed: &[String]) {
    match v {
        Value::String(s)
            if (s.contains('/') || s.starts_with('.'))
                && !allowed.contains(s)
                && std::path::Path::new(s.as_str()).exists() =>
        {
            *s = "/nonexistent/defused".into();
        }
        Value::Array(a) => a.iter_mut().for_each(|x| defuse(x, allowed)),
        Value::Object(m) => m.values_mut().for_each(|x| defuse(x, allowed)),
        _ => {}
    }
}

/// A body from `base`: mutated structurally, byte-damaged, random, or as is.
fn body_from(r: &mut Rng, base: &Value, allowed: &[String]) -> Vec<u8> {
    let mut v = base.clone();
    let how = r.below(10);
    if how == 0 {
        v = rand_value(r, 0);
    } else if how < 9 {
        let k = if r.below(2) == 0 { 1 } else { 1 + r.below(3) };
        for _ in 0..k {
            mutate_json(r, &mut v);
        }
    }
    defuse(&mut v, allowed);
    let mut b = serde_json::to_vec(&v).unwrap();
    if how >= 7 {
        mutate_bytes(r, &mut b);
        // Still JSON after the damage: defuse that too.
        if let Ok(mut v) = serde_json::from_slice::<Value>(&b) {
            let before = v.clone();
            defuse(&mut v, allowed);
            if v != before {
                b = serde_json::to_vec(&v).unwrap();
            }
        }
    }
    b
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// A name nothing has (never a hex id prefix: it has a `z`).
fn missing_name(r: &mut Rng) -> String {
    match r.below(5) {
        0 => enc(&format!("z{}", rand_string(r))),
        1 => "z".repeat(1 + r.below(300) as usize),
        _ => format!("nxz{}", r.below(1_000_000)),
    }
}

const VERSIONS: &[&str] = &[
    "",
    "",
    "",
    "/v1.44",
    "/v1.41",
    "/v1.24",
    "/v1.23",
    "/v1.45",
    "/v2.0",
    "/v1",
    "/vx.y",
    "/v1.44.1",
    "/v01.044",
    "/v1.4294967296",
];

/// One case: method, path, body, what kind of change it may make.
fn case(r: &mut Rng, fx: &Fixture) -> (String, String, Vec<u8>, Kind) {
    let v = r.pick(VERSIONS).to_string();
    let allowed = &fx.allowed_paths;
    let net_base = if r.below(3) == 0 {
        json!({"Name": "fzx6", "EnableIPv6": true, "CheckDuplicate": true,
               "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.79.0.0/24"}, {"Subnet": "fd00:79::/64", "Gateway": "fd00:79::1"}]}})
    } else {
        json!({"Name": "fzx", "Driver": "bridge", "Scope": "local", "Internal": false,
               "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.78.0.0/24", "Gateway": "10.78.0.1", "IPRange": "10.78.0.128/25"}], "Options": {}},
               "Options": {"com.docker.network.bridge.enable_icc": "true", "com.docker.network.driver.mtu": "1400"},
               "Labels": {"a": "b"}})
    };
    let ctr_base = json!({"Name": "fzy", "Network": "fzn", "Ip": "10.77.0.50",
        "Ports": ["18100-18101:80-81", "18102:90/udp"], "Aliases": ["al"], "Links": ["fzd:db"],
        "Hostname": "h", "Dns": ["1.1.1.1"], "Detach": true, "AutoRemove": false,
        "Expose": ["100/tcp"], "PublishAll": false, "ExtraHosts": ["x:1.2.3.4"],
        "MacAddress": "02:42:0a:4d:00:32", "PublishAllow": ["10.0.0.0/8"],
        "DnsSearch": ["example.com"], "DnsOptions": ["ndots:2"], "Env": ["A=B"]});
    let connect_base = json!({"Container": "fzc", "EndpointConfig": {
        "IPAMConfig": {"IPv4Address": "10.77.0.60"}, "Aliases": ["c2"]}});
    let policy_base = json!({"Action": "allow", "Sources": ["10.0.0.0/8", "192.168.1.1"],
        "Port": 18001, "Proto": "tcp", "Container": "fzc", "Uplink": "uplink0"});
    let filters = [
        json!({"name": ["fz"]}),
        json!({"label": ["a=b"], "driver": ["bridge"]}),
        json!({"publish": ["18001/tcp"], "status": ["running"], "network": ["fzn"]}),
    ];
    let m = |s: &str| s.to_string();
    match r.below(20) {
        0..=2 => (
            m("POST"),
            format!("{v}/networks/create"),
            body_from(r, &net_base, allowed),
            Kind::NetworkCreate,
        ),
        3..=5 => {
            let q = match r.below(4) {
                0 => format!("?name={}", enc(&rand_string(r))),
                1 => m("?name=fzy"),
                _ => String::new(),
            };
            (
                m("POST"),
                format!("{v}/containers/create{q}"),
                body_from(r, &ctr_base, allowed),
                Kind::ContainerCreate,
            )
        }
        6 => (
            m("POST"),
            format!("{v}/networks/fzn/connect"),
            body_from(r, &connect_base, allowed),
            Kind::Connect,
        ),
        7 => (
            m("POST"),
            format!("{v}/networks/fzn/disconnect"),
            body_from(r, &json!({"Container": "fzc", "Force": false}), allowed),
            Kind::Disconnect,
        ),
        8 => (
            m("POST"),
            format!("{v}/policies/create"),
            body_from(r, &policy_base, allowed),
            Kind::Policy,
        ),
        9 | 10 => {
            let verb = *r.pick(&["add", "add", "del", "check", "gc", "status", "nx", "ADD"]);
            let kind = if verb == "add" {
                Kind::CniAdd
            } else {
                Kind::Cni
            };
            let method = if verb == "status" { "GET" } else { "POST" };
            (
                m(method),
                format!("/cni/{verb}"),
                body_from(r, &fx.cni_base, allowed),
                kind,
            )
        }
        11 | 12 => {
            let verb = *r.pick(&["setup", "setup", "teardown", "nx", ""]);
            let kind = if verb == "setup" {
                Kind::NvSetup
            } else {
                Kind::Nv
            };
            (
                m("POST"),
                format!("/netavark/{verb}"),
                body_from(r, &fx.nv_base, allowed),
                kind,
            )
        }
        13 | 14 => {
            let fi = r.below(filters.len() as u64) as usize;
            let fb = body_from(r, &filters[fi], allowed);
            let f = enc(&String::from_utf8_lossy(&fb));
            let p = match r.below(13) {
                0 => format!("/networks?filters={f}"),
                1 => format!("/containers/json?all={}&filters={f}", r.below(3)),
                2 => format!("/graph?{}", enc(&rand_string(r))),
                3 => format!("/graph?format={}", enc(&rand_string(r))),
                4 => format!("/containers/{}/json", missing_name(r)),
                5 => format!("/networks/{}", missing_name(r)),
                6 => format!("/containers/{}/port", missing_name(r)),
                7 => format!("/containers/{}/logs", missing_name(r)),
                8 => r
                    .pick(&["/stats", "/stats/ports", "/policies", "/info", "/version"])
                    .to_string(),
                9 => r
                    .pick(&[
                        "/_ping",
                        "/containers/fzc/json",
                        "/containers/fzc/port",
                        "/networks/fzn",
                    ])
                    .to_string(),
                10 => format!("/containers/json?{}", enc(&rand_string(r))),
                11 => {
                    let mut q = Vec::new();
                    for k in ["type", "container", "network", "port"] {
                        if r.below(2) == 0 {
                            let v = match k {
                                "port" => rand_number(r).to_string(),
                                _ => rand_string(r),
                            };
                            q.push(format!("{k}={}", enc(&v)));
                        }
                    }
                    let q = q.join("&");
                    format!("/monitor?{q}")
                }
                _ => format!("/{}", missing_name(r)),
            };
            let method = *r.pick(&["GET", "GET", "GET", "HEAD"]);
            (m(method), format!("{v}{p}"), Vec::new(), Kind::Read)
        }
        15 | 16 => {
            let n = missing_name(r);
            let (method, p) = match r.below(9) {
                0 => ("POST", format!("/containers/{n}/stop")),
                1 => ("POST", format!("/containers/{n}/start")),
                2 => ("POST", format!("/containers/{n}/restart")),
                3 => ("DELETE", format!("/containers/{n}?force={}", r.below(2))),
                4 => ("DELETE", format!("/networks/{n}")),
                5 => ("DELETE", format!("/policies/{n}")),
                6 => ("POST", format!("/networks/{n}/connect")),
                7 => ("POST", format!("/networks/{n}/disconnect")),
                _ => ("DELETE", format!("/policies/{}", r.below(100_000) + 1000)),
            };
            let b = body_from(r, &connect_base, allowed);
            (m(method), format!("{v}{p}"), b, Kind::Refused)
        }
        17 => {
            // Methods the routes do not take, and routes that do not exist.
            let p = *r.pick(&[
                "/networks/create",
                "/containers/create",
                "/networks",
                "/policies/create",
                "/system/reset",
                "/cni/add",
                "/netavark/setup",
                "/containers/fzc",
                "/networks/fzn",
            ]);
            let method = *r.pick(&["PUT", "PATCH", "OPTIONS", "TRACE", "FOO"]);
            let method = if p == "/system/reset" { "GET" } else { method };
            (
                m(method),
                format!("{v}{p}"),
                body_from(r, &json!({}), allowed),
                Kind::Refused,
            )
        }
        _ => {
            // Big and empty bodies on the create routes.
            let p = *r.pick(&[
                "/networks/create",
                "/containers/create",
                "/policies/create",
                "/cni/add",
                "/netavark/setup",
            ]);
            let b = match r.below(4) {
                0 => Vec::new(),
                1 => b"   \n".to_vec(),
                2 => vec![b'['; 3 << 20],
                _ => {
                    let mut s = b"{\"Name\":\"".to_vec();
                    s.extend(std::iter::repeat_n(b'a', 1 << 20));
                    s.extend(b"\"}");
                    s
                }
            };
            let kind = match p {
                "/networks/create" => Kind::NetworkCreate,
                "/containers/create" => Kind::ContainerCreate,
                "/policies/create" => Kind::Policy,
                "/cni/add" => Kind::CniAdd,
                _ => Kind::NvSetup,
            };
            (m("POST"), format!("{v}{p}"), b, kind)
        }
    }
}

/// Raw bytes on the socket: garbage, broken request lines and headers.
/// Any answer below 500, or a close, is fine; a hang or a 5xx is not.
fn raw_case(r: &mut Rng) -> Vec<u8> {
    match r.below(6) {
        0 => (0..r.below(200)).map(|_| r.next() as u8).collect(),
        1 => b"GET / HTTP/1.1\r\nHost: pier\r\nContent-Length: -1\r\n\r\n".to_vec(),
        2 => b"POST /networks/create HTTP/1.1\r\nHost: pier\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n".to_vec(),
        3 => format!("GET /{} HTTP/1.1\r\nHost: pier\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        4 => b"GET /networks HTTP/1.0\r\n\r\n".to_vec(),
        _ => b"\r\n\r\nGET /networks HTTP/9.9\r\nX: \x00\x01\r\n\r\n".to_vec(),
    }
}

fn raw(sock: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(format!("hung ({} bytes)", got.len()));
        }
        _ => {}
    }
    let text = String::from_utf8_lossy(&got);
    if let Some(code) = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        && code >= 500
    {
        return Err(format!("answered {code}"));
    }
    Ok(())
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(600)]).into_owned();
    if b.len() > 600 {
        format!("{s}… ({} bytes)", b.len())
    } else {
        s
    }
}

#[test]
fn random_and_mutated_requests_never_5xx_hang_or_leave_a_trace() {
    require_root!();
    let (mut r, seed) = Rng::from_env("API_FUZZ_SEED");
    let cases = env_num("API_FUZZ_CASES", 3000);
    let secs = env_num("API_FUZZ_SECS", 150) as u64;
    println!("api fuzz: API_FUZZ_SEED={seed} API_FUZZ_CASES={cases} API_FUZZ_SECS={secs}");
    let fx = fixture();
    let mut reference = fx.world();
    let mut failures: Vec<String> = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let (mut undone, mut rebased, mut raws) = (0, 0, 0);
    let t0 = Instant::now();
    let regressions = REGRESSIONS.iter().map(|(m, p, b)| {
        let b = b
            .replace("@CNI_NS@", &ns_path(&fx.cni_ns).display().to_string())
            .replace("@NV_NS@", &ns_path(&fx.nv_ns).display().to_string())
            .replace("@HOST_INO@", &fx.host_ino.to_string());
        (m.to_string(), p.to_string(), b.into_bytes(), kind_of(p))
    });
    let mut done = 0;
    let mut queue: Vec<(String, String, Vec<u8>, Kind)> = regressions.collect();
    queue.reverse();
    while done < cases + REGRESSIONS.len() && t0.elapsed() < Duration::from_secs(secs) {
        done += 1;
        if queue.is_empty() && r.below(40) == 0 {
            raws += 1;
            let b = raw_case(&mut r);
            if let Err(e) = raw(&fx.sock(), &b) {
                failures.push(format!("raw {:?}: {e}", show(&b)));
            }
            continue;
        }
        let (method, path, body, kind) = queue.pop().unwrap_or_else(|| case(&mut r, &fx));
        // `/monitor` streams: its answer is open-ended, its status is not.
        let stream = path.contains("/monitor");
        let reply = if stream {
            call(&fx.sock(), &method, &path, &body, Duration::from_secs(2))
        } else {
            fx.call(&method, &path, &body)
        };
        let status = match &reply {
            Reply::Answer { status, .. } => *status,
            Reply::Hung { got } if stream && got.starts_with(b"HTTP/1.1 200") => 200,
            other => {
                failures.push(format!("{method} {path} {}: {other:?}", show(&body)));
                if failures.len() > 20 {
                    break;
                }
                continue;
            }
        };
        *statuses.entry(status).or_default() += 1;
        if status >= 500 {
            failures.push(format!(
                "{method} {path} {} → {status} {}",
                show(&body),
                reply.body_text()
            ));
        }
        if kind == Kind::Read {
            continue;
        }
        let ok = (200..300).contains(&status);
        if ok && fx.undo(kind, &body, &reply) {
            undone += 1;
        }
        let now = fx.world();
        if now != reference {
            if ok && !matches!(kind, Kind::Refused) && fx.undo_is_partial(kind) {
                // A 2xx whose change cannot be undone exactly: the new reference.
                rebased += 1;
                reference = now;
                continue;
            }
            failures.push(format!(
                "{method} {path} {} → {status} {} changed the state:\n{}",
                show(&body),
                reply.body_text(),
                diff(&reference, &now)
            ));
            reference = now;
        }
        if failures.len() > 20 {
            break;
        }
    }
    let elapsed = t0.elapsed();
    fx.s.assert_firewalls_untouched();
    println!(
        "api fuzz: {done} cases ({raws} raw) in {elapsed:.1?}; statuses {statuses:?}; \
         {undone} successes undone, {rebased} successes kept as the new reference; {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seed {seed}:\n{}\nagent log (tail):\n{}",
        failures.join("\n\n"),
        fx.s.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

impl Fixture {
    /// Kinds whose success may leave a change behind after the undo.
    fn undo_is_partial(&self, kind: Kind) -> bool {
        matches!(
            kind,
            Kind::CniAdd | Kind::Cni | Kind::NvSetup | Kind::Nv | Kind::Disconnect
        )
    }
}

fn kind_of(path: &str) -> Kind {
    let p = path;
    if p.contains("/networks/create") {
        Kind::NetworkCreate
    } else if p.contains("/containers/create") {
        Kind::ContainerCreate
    } else if p.contains("/connect") {
        Kind::Connect
    } else if p.contains("/disconnect") {
        Kind::Disconnect
    } else if p.contains("/policies/create") {
        Kind::Policy
    } else if p.ends_with("/cni/add") {
        Kind::CniAdd
    } else if p.contains("/cni/") {
        Kind::Cni
    } else if p.ends_with("/netavark/setup") {
        Kind::NvSetup
    } else if p.contains("/netavark/") {
        Kind::Nv
    } else {
        Kind::Refused
    }
}

/// The lines of `b` not in `a` and of `a` not in `b`.
fn diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::new();
    for l in &la {
        if !lb.contains(l) {
            out += &format!("- {}\n", &l[..l.len().min(800)]);
        }
    }
    for l in &lb {
        if !la.contains(l) {
            out += &format!("+ {}\n", &l[..l.len().min(800)]);
        }
    }
    out
}
