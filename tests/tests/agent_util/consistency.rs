//! Do the agent's store and the kernel agree? Reads the store through the
//! API, the host namespace's veths by a netlink dump, the run dir's
//! namespace mounts and files, the pinned `PIER_ENDPOINTS`, `PIER_VETHS`,
//! `PIER_PORTS` and `PIER_BACKENDS` maps and the veth filter records, and
//! lists every disagreement: an orphan veth, a map entry without its
//! container, a record without its kernel state.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
};

use pier_agent::{
    daemon::reconcile::{is_netns_mount, is_pier_veth_name},
    topology::{NetlinkTopology, Topology},
};
use pier_common::{
    endpoint::{EndpointVal, EndpointVal4, VethVal},
    maps as names,
    nat::PortKey,
};
use pier_tests::TestHost;
use serde_json::Value;

use super::{PortEntry, api, port_entries};

/// A container as the store shows it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: String,
    pub name: String,
    pub status: String,
    /// Network name → (address, MAC).
    pub endpoints: BTreeMap<String, (Ipv4Addr, String)>,
    /// The `PIER_PORTS` entries its port bindings call for.
    pub ports: Vec<PortEntry>,
}

/// What the check saw (for the test's figures).
#[derive(Debug, Default)]
pub struct Seen {
    pub containers: Vec<Recorded>,
    pub veths: usize,
    pub ports: usize,
}

/// Every container of the store, through `GET /containers/json?all=1` and
/// `GET /containers/{id}/json`.
pub fn recorded(host: &TestHost) -> Vec<Recorded> {
    let sock = host.socket();
    let list = api::get_json(&sock, "/containers/json?all=1");
    let mut out = Vec::new();
    for c in list.as_array().expect("a list") {
        let id = c["Id"].as_str().expect("Id").to_string();
        let v = api::get_json(&sock, &format!("/containers/{id}/json"));
        out.push(from_inspect(&v));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn from_inspect(v: &Value) -> Recorded {
    let mut endpoints = BTreeMap::new();
    if let Some(nets) = v["NetworkSettings"]["Networks"].as_object() {
        for (net, e) in nets {
            if let Some(ip) = e["IPAddress"].as_str().and_then(|s| s.parse().ok()) {
                let mac = e["MacAddress"].as_str().unwrap_or_default().to_string();
                endpoints.insert(net.clone(), (ip, mac));
            }
        }
    }
    // Ports go to the first network's address (pier's `ports_on`); the
    // containers these tests make have one network.
    let backend: Option<Ipv4Addr> = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok());
    let mut ports = Vec::new();
    if let (Some(b), Some(bind)) = (backend, v["HostConfig"]["PortBindings"].as_object()) {
        for (k, hs) in bind {
            let (cport, proto) = k.split_once('/').expect("PORT/PROTO");
            let proto = if proto == "udp" {
                super::UDP
            } else {
                super::TCP
            };
            for h in hs.as_array().into_iter().flatten() {
                let host_ip = match h["HostIp"].as_str().unwrap_or("") {
                    "" => Ipv4Addr::UNSPECIFIED,
                    s => s.parse().expect("HostIp"),
                };
                ports.push(PortEntry {
                    host_ip,
                    host_port: h["HostPort"].as_str().unwrap().parse().unwrap(),
                    proto,
                    backend: b,
                    backend_port: cport.parse().unwrap(),
                });
            }
        }
    }
    Recorded {
        id: v["Id"].as_str().unwrap().to_string(),
        name: v["Name"]
            .as_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string(),
        status: v["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        endpoints,
        ports,
    }
}

/// pier's veths in the host namespace (a netlink dump): name → ifindex.
pub fn host_veths(host: &TestHost) -> BTreeMap<String, u32> {
    TestHost::in_netns(&host.host_ns, || {
        let t = NetlinkTopology::new().expect("netlink");
        t.host_links()
            .expect("dump links")
            .into_iter()
            .filter(|n| is_pier_veth_name(n))
            .filter_map(|n| t.link_index(&n).expect("link index").map(|i| (n, i)))
            .collect()
    })
}

pub fn hash_entries<K: aya::Pod + Ord, V: aya::Pod>(bpffs: &Path, map: &str) -> BTreeMap<K, V> {
    let md = aya::maps::MapData::from_pin(bpffs.join(map)).unwrap_or_else(|e| panic!("{map}: {e}"));
    let m: aya::maps::HashMap<_, K, V> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(md)).expect("a hash map");
    m.iter().map(|r| r.expect("read map")).collect()
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The address and MAC of `eth0` in the namespace at `ns` (`ip -j addr`).
fn inside(ns: &Path) -> Option<(Ipv4Addr, String)> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "ip", "-j", "addr", "show", "dev", "eth0"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let l = v.get(0)?;
    let mac = l["address"].as_str()?.to_string();
    let ip = l["addr_info"]
        .as_array()?
        .iter()
        .find(|a| a["family"] == "inet")?["local"]
        .as_str()?
        .parse()
        .ok()?;
    Some((ip, mac))
}

/// Check that store and kernel agree; the disagreements (empty: they do).
/// `look_inside`: also compare each container namespace's `eth0`.
pub fn disagreements(host: &TestHost, look_inside: bool) -> (Seen, Vec<String>) {
    let mut bad = Vec::new();
    let recs = recorded(host);
    let veths = host_veths(host);
    let bpffs = &host.bpffs_dir;
    let endpoints: BTreeMap<u32, EndpointVal> =
        hash_entries::<u32, EndpointVal4>(bpffs, names::ENDPOINTS)
            .into_iter()
            .map(|(k, v)| (k, v.ep))
            .collect();
    let veth_map: BTreeMap<u32, VethVal> = hash_entries(bpffs, names::VETHS);
    let backends: BTreeMap<PortKey, PortKey> = hash_entries(bpffs, names::BACKENDS);
    let ports = port_entries(bpffs);

    // Namespaces and files: one per record, nothing else.
    let ids: BTreeSet<String> = recs.iter().map(|r| r.id.clone()).collect();
    for sub in ["netns", "containers"] {
        let have = dir_names(&host.run_dir().join(sub));
        for x in have.difference(&ids) {
            bad.push(format!("{sub}/{x}: no container records it"));
        }
        for x in ids.difference(&have) {
            bad.push(format!("container {x}: no {sub}/ entry"));
        }
    }
    for r in &recs {
        let ns = host.container_netns(&r.id);
        if !is_netns_mount(&ns) {
            bad.push(format!(
                "{}: {} is not a namespace mount",
                r.name,
                ns.display()
            ));
        }
        if r.status != "running" {
            bad.push(format!("{}: status {:?}, not running", r.name, r.status));
        }
    }

    // Endpoints: the store's addresses are exactly PIER_ENDPOINTS's keys,
    // each leading to one of the host's veths with the recorded MAC.
    let by_ip: BTreeMap<Ipv4Addr, (&Recorded, &String)> = recs
        .iter()
        .flat_map(|r| r.endpoints.values().map(move |(ip, mac)| (*ip, (r, mac))))
        .collect();
    let ifindexes: BTreeSet<u32> = veths.values().copied().collect();
    let mut ep_ifindexes = BTreeSet::new();
    for (k, v) in &endpoints {
        let ip = Ipv4Addr::from(k.to_ne_bytes());
        ep_ifindexes.insert(v.ifindex);
        match by_ip.get(&ip) {
            None => bad.push(format!("PIER_ENDPOINTS {ip}: no container has it")),
            Some((r, mac)) => {
                let m = pier_agent::topology::netlink::fmt_mac(&v.mac);
                if !m.eq_ignore_ascii_case(mac) {
                    bad.push(format!(
                        "PIER_ENDPOINTS {ip} ({}): MAC {m}, store {mac}",
                        r.name
                    ));
                }
                if !ifindexes.contains(&v.ifindex) {
                    bad.push(format!(
                        "PIER_ENDPOINTS {ip} ({}): ifindex {} is no veth of the host",
                        r.name, v.ifindex
                    ));
                }
            }
        }
    }
    for (ip, (r, _)) in &by_ip {
        let key = u32::from_ne_bytes(ip.octets());
        if !endpoints.contains_key(&key) {
            bad.push(format!("{} {ip}: not in PIER_ENDPOINTS", r.name));
        }
        if look_inside {
            let want = r.endpoints.values().find(|(a, _)| a == ip).cloned();
            let got = inside(&host.container_netns(&r.id));
            if got.as_ref().map(|(a, m)| (a, m.to_ascii_lowercase()))
                != want.as_ref().map(|(a, m)| (a, m.to_ascii_lowercase()))
            {
                bad.push(format!(
                    "{}: eth0 inside is {got:?}, store {want:?}",
                    r.name
                ));
            }
        }
    }

    // Veths: the host's are exactly those PIER_ENDPOINTS and PIER_VETHS
    // lead to, each with its filter recorded.
    let veth_keys: BTreeSet<u32> = veth_map.keys().copied().collect();
    for (name, i) in &veths {
        if !ep_ifindexes.contains(i) {
            bad.push(format!(
                "veth {name} ({i}): orphan (no PIER_ENDPOINTS entry leads to it)"
            ));
        }
        if !veth_keys.contains(i) {
            bad.push(format!("veth {name} ({i}): not in PIER_VETHS"));
        }
    }
    for i in veth_keys.difference(&ifindexes) {
        bad.push(format!("PIER_VETHS {i}: no such veth"));
    }
    if recs.len() != veths.len() {
        bad.push(format!(
            "{} containers but {} veths",
            recs.len(),
            veths.len()
        ));
    }
    let filters: BTreeSet<String> = dir_names(&bpffs.join("links"))
        .into_iter()
        .filter_map(|n| n.strip_prefix("nl_pier_veth_in_").map(str::to_string))
        .collect();
    let veth_names: BTreeSet<String> = veths.keys().cloned().collect();
    for n in filters.symmetric_difference(&veth_names) {
        bad.push(format!("veth {n}: filter record and veth disagree"));
    }

    // Published ports: PIER_PORTS is exactly what the bindings call for,
    // PIER_BACKENDS its reverse.
    let want: BTreeSet<PortEntry> = recs.iter().flat_map(|r| r.ports.clone()).collect();
    let have: BTreeSet<PortEntry> = ports.iter().copied().collect();
    for p in have.difference(&want) {
        bad.push(format!("PIER_PORTS {p:?}: no container publishes it"));
    }
    for p in want.difference(&have) {
        bad.push(format!("port {p:?}: missing from PIER_PORTS"));
    }
    let want_back: BTreeSet<(Ipv4Addr, u16, u8)> = want
        .iter()
        .map(|p| (p.backend, p.backend_port, p.proto))
        .collect();
    let have_back: BTreeSet<(Ipv4Addr, u16, u8)> = backends
        .keys()
        .map(|k| {
            (
                Ipv4Addr::from(k.addr_be.to_ne_bytes()),
                u16::from_be(k.port_be),
                k.proto,
            )
        })
        .collect();
    for b in have_back.symmetric_difference(&want_back) {
        bad.push(format!("PIER_BACKENDS {b:?}: disagrees with the bindings"));
    }
    let seen = Seen {
        veths: veths.len(),
        ports: ports.len(),
        containers: recs,
    };
    (seen, bad)
}
