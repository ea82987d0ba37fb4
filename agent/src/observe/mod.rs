//! What the agent shows about the dataplane: `pier monitor` (kernel events
//! with names), `pier stats` per container, network and uplink, the
//! Prometheus metrics (`metrics.rs`) and the picture of the host (`graph.rs`).
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use pier_common::{
    drop::DropReason,
    event::{EV_DROP, EV_MASQ, EV_PUBLISH, EV_RETRACK, Event, FAMILY_ARP, FAMILY_V4, FAMILY_V6},
};
use serde::{Deserialize, Serialize};

use crate::{dataplane::IfCounters, state::State};

pub mod graph;
pub mod metrics;

/// A drop reason's name as pier shows it (`Isolation`, `PolicyDenied`, …).
pub fn reason_name(r: u8) -> String {
    DropReason::ALL
        .into_iter()
        .find(|d| *d as u32 == r as u32)
        .map(|d| format!("{d:?}"))
        .unwrap_or_else(|| format!("reason {r}"))
}

/// What an interface is to pier.
#[derive(Debug, Clone, Default)]
struct IfName {
    ifname: String,
    container: Option<String>,
    network: Option<String>,
}

/// Names for what the kernel reports by number: interfaces, addresses,
/// published ports. Built from the agent's state and the host's interfaces.
#[derive(Debug, Clone, Default)]
pub struct Names {
    ifaces: HashMap<u32, IfName>,
    addrs: HashMap<IpAddr, (String, String)>,
    /// (host port, protocol) → container name, host address.
    ports: HashMap<(u16, u8), (String, Option<std::net::IpAddr>)>,
}

impl Names {
    /// `ifindex`: every interface of the host namespace (name → ifindex).
    pub fn build(st: &State, ifindex: &BTreeMap<String, u32>) -> Names {
        let mut n = Names::default();
        for (name, &i) in ifindex {
            n.ifaces.insert(
                i,
                IfName {
                    ifname: name.clone(),
                    ..Default::default()
                },
            );
        }
        for c in st.containers.values() {
            for e in &c.endpoints {
                let net = st
                    .networks
                    .get(&e.network_id)
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                if let Some(ip) = e.ip {
                    n.addrs
                        .insert(IpAddr::V4(ip), (c.name.clone(), net.clone()));
                }
                if let Some(ip6) = e.ip6 {
                    n.addrs
                        .insert(IpAddr::V6(ip6), (c.name.clone(), net.clone()));
                }
                if let Some(&i) = ifindex.get(&e.host_ifname) {
                    let f = n.ifaces.entry(i).or_default();
                    f.container = Some(c.name.clone());
                    f.network = Some(net);
                }
            }
            if c.running {
                for p in &c.ports {
                    let proto = match p.proto {
                        crate::state::PortProto::Tcp => 6,
                        crate::state::PortProto::Udp => 17,
                    };
                    for (h, _) in p.pairs() {
                        n.ports.insert((h, proto), (c.name.clone(), p.host_ip));
                    }
                }
            }
        }
        n
    }

    /// Turn a kernel event into what `pier monitor` prints.
    pub fn event(&self, e: &Event, wall_minus_mono_ns: i128) -> MonitorEvent {
        let (src, dst) = match e.family {
            FAMILY_V4 | FAMILY_ARP => (
                Some(IpAddr::V4(Ipv4Addr::from(e.saddr[0].to_ne_bytes()))),
                Some(IpAddr::V4(Ipv4Addr::from(e.daddr[0].to_ne_bytes()))),
            ),
            FAMILY_V6 => (Some(IpAddr::V6(v6(e.saddr))), Some(IpAddr::V6(v6(e.daddr)))),
            _ => (None, None),
        };
        let family = match e.family {
            FAMILY_V4 => "ipv4",
            FAMILY_V6 => "ipv6",
            FAMILY_ARP => "arp",
            _ => "other",
        };
        let icmp = matches!((e.family, e.proto), (FAMILY_V4, 1) | (FAMILY_V6, 58));
        let ports = matches!(e.proto, 6 | 17) && e.family != FAMILY_ARP;
        let proto = match (e.family, e.proto) {
            (FAMILY_ARP, _) => "arp".to_string(),
            (_, 6) => "tcp".into(),
            (_, 17) => "udp".into(),
            (FAMILY_V4, 1) => "icmp".into(),
            (FAMILY_V6, 58) => "icmpv6".into(),
            (_, p) => p.to_string(),
        };
        let iface = self.ifaces.get(&e.ifindex).cloned().unwrap_or_default();
        let who = |a: Option<IpAddr>| a.and_then(|a| self.addrs.get(&a).cloned());
        let (src_c, dst_c) = (who(src), who(dst));
        let (kind, event) = match e.kind {
            EV_DROP => ("drop", "drop"),
            EV_PUBLISH => ("trace", "publish"),
            EV_MASQ => ("trace", "masquerade"),
            EV_RETRACK => ("trace", "retrack"),
            _ => ("trace", "unknown"),
        };
        let dport = u16::from_be(e.dport_be);
        let published = (ports && e.kind != EV_MASQ)
            .then(|| self.ports.get(&(dport, e.proto)))
            .flatten();
        let x = (e.xaddr != [0; 4]).then(|| {
            let port = u16::from_be(e.xport_be);
            match e.family {
                FAMILY_V6 => format!("[{}]:{port}", v6(e.xaddr)),
                _ => format!("{}:{port}", Ipv4Addr::from(e.xaddr[0].to_ne_bytes())),
            }
        });
        let ns = e.ts_ns as i128 + wall_minus_mono_ns;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(ns)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        MonitorEvent {
            time,
            kind: kind.into(),
            event: event.into(),
            reason: (e.kind == EV_DROP).then(|| reason_name(e.reason)),
            interface: iface.ifname,
            ifindex: e.ifindex,
            container: iface
                .container
                .clone()
                .or_else(|| src_c.as_ref().map(|c| c.0.clone())),
            network: iface
                .network
                .clone()
                .or_else(|| src_c.as_ref().map(|c| c.1.clone())),
            family: family.into(),
            proto,
            src: src.map(|a| a.to_string()),
            sport: ports.then(|| u16::from_be(e.sport_be)),
            dst: dst.map(|a| a.to_string()),
            dport: ports.then_some(dport),
            icmp_type: icmp.then_some(e.sport_be as u8),
            icmp_code: icmp.then_some(e.dport_be as u8),
            src_container: src_c.as_ref().map(|c| c.0.clone()),
            dst_container: dst_c.as_ref().map(|c| c.0.clone()),
            dst_network: dst_c.as_ref().map(|c| c.1.clone()),
            published_port: published.map(|(c, ip)| PublishedRef {
                host_ip: ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                host_port: dport,
                container: c.clone(),
            }),
            nat: x,
            len: e.len,
        }
    }
}

fn v6(a: [u32; 4]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    for (i, w) in a.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(b)
}

/// The published port a packet was addressed to (its scope, for
/// `PolicyDenied`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRef {
    pub host_ip: String,
    pub host_port: u16,
    pub container: String,
}

/// One line of `pier monitor --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    pub time: String,
    /// `drop` or `trace`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `drop`, `publish` (a new connection to a published port),
    /// `masquerade` (a new flow leaving with the uplink's address), `retrack`
    /// (a published connection's conntrack entry made again).
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The interface the packet arrived on.
    pub interface: String,
    pub ifindex: u32,
    /// The container (and network) of that interface, else of the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub family: String,
    pub proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_network: Option<String>,
    /// The published port the destination port is (for drops from outside
    /// and `PolicyDenied`: the port's scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_port: Option<PublishedRef>,
    /// Trace events: the backend (`publish`), the source it leaves with
    /// (`masquerade`), the published address (`retrack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
    pub len: u32,
}

/// `pier monitor`'s filters (the API's query).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFilter {
    /// `drop` or `trace`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

impl MonitorFilter {
    pub fn validate(&self) -> Result<(), String> {
        match self.kind.as_deref() {
            None | Some("drop") | Some("trace") => Ok(()),
            Some(k) => Err(format!("invalid --type {k:?}: drop or trace")),
        }
    }

    pub fn matches(&self, e: &MonitorEvent) -> bool {
        let any = |want: &Option<String>, have: &[&Option<String>]| {
            want.as_ref()
                .is_none_or(|w| have.iter().any(|h| h.as_deref() == Some(w.as_str())))
        };
        self.kind.as_ref().is_none_or(|k| *k == e.kind)
            && any(
                &self.container,
                &[
                    &e.container,
                    &e.src_container,
                    &e.dst_container,
                    &e.published_port.as_ref().map(|p| p.container.clone()),
                ],
            )
            && any(&self.network, &[&e.network, &e.dst_network])
            && self.port.is_none_or(|p| {
                e.sport == Some(p)
                    || e.dport == Some(p)
                    || e.nat
                        .as_ref()
                        .is_some_and(|n| n.ends_with(&format!(":{p}")))
            })
    }
}

/// One line of `pier stats`: a container, a network or an uplink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrafficRow {
    /// `container`, `network` or `uplink`.
    pub kind: String,
    pub name: String,
    /// A container's networks; a network's or uplink's own name.
    pub networks: Vec<String>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Drops on arrival, by reason (from a container: what it sent).
    pub drops: BTreeMap<String, u64>,
}

impl TrafficRow {
    fn add(&mut self, c: &IfCounters, inward_is_tx: bool) {
        let (i, o) = if inward_is_tx {
            (&c.tx, &c.rx)
        } else {
            (&c.rx, &c.tx)
        };
        self.packets_in += i.packets;
        self.bytes_in += i.bytes;
        self.packets_out += o.packets;
        self.bytes_out += o.bytes;
        for (r, n) in &c.drops {
            *self.drops.entry(format!("{r:?}")).or_default() += n;
        }
    }
}

/// Per container, per network, per uplink, from the interfaces' counters.
pub fn traffic(st: &State, counters: &[IfCounters], uplinks: &[String]) -> Vec<TrafficRow> {
    let by_name: HashMap<&str, &IfCounters> =
        counters.iter().map(|c| (c.ifname.as_str(), c)).collect();
    let mut rows = Vec::new();
    let mut nets: BTreeMap<String, TrafficRow> = st
        .networks
        .values()
        .filter(|n| n.is_bridge())
        .map(|n| {
            (
                n.id.clone(),
                TrafficRow {
                    kind: "network".into(),
                    name: n.name.clone(),
                    networks: vec![n.name.clone()],
                    ..Default::default()
                },
            )
        })
        .collect();
    for c in st.containers.values() {
        let mut row = TrafficRow {
            kind: "container".into(),
            name: c.name.clone(),
            ..Default::default()
        };
        for e in &c.endpoints {
            if let Some(n) = st.networks.get(&e.network_id) {
                row.networks.push(n.name.clone());
            }
            if let Some(k) = by_name.get(e.host_ifname.as_str()) {
                row.add(k, true);
                if let Some(n) = nets.get_mut(&e.network_id) {
                    n.add(k, true);
                }
            }
        }
        rows.push(row);
    }
    rows.extend(nets.into_values());
    for u in uplinks {
        let mut row = TrafficRow {
            kind: "uplink".into(),
            name: u.clone(),
            networks: vec![u.clone()],
            ..Default::default()
        };
        if let Some(k) = by_name.get(u.as_str()) {
            row.add(k, false);
        }
        rows.push(row);
    }
    rows
}

/// Wall clock minus the kernel's monotonic clock (`bpf_ktime_get_ns`), in ns.
pub fn wall_minus_mono_ns() -> i128 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - crate::dataplane::sys::monotonic_ns() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> MonitorEvent {
        MonitorEvent {
            time: String::new(),
            kind: "drop".into(),
            event: "drop".into(),
            reason: Some("Isolation".into()),
            interface: "veth1".into(),
            ifindex: 3,
            container: Some("a".into()),
            network: Some("n1".into()),
            family: "ipv4".into(),
            proto: "tcp".into(),
            src: Some("10.0.0.2".into()),
            sport: Some(4000),
            dst: Some("10.1.0.2".into()),
            dport: Some(80),
            icmp_type: None,
            icmp_code: None,
            src_container: Some("a".into()),
            dst_container: Some("b".into()),
            dst_network: Some("n2".into()),
            published_port: None,
            nat: None,
            len: 60,
        }
    }

    #[test]
    fn filters_match_either_side() {
        let e = ev();
        let f = |k: Option<&str>, c: Option<&str>, n: Option<&str>, p: Option<u16>| MonitorFilter {
            kind: k.map(Into::into),
            container: c.map(Into::into),
            network: n.map(Into::into),
            port: p,
        };
        assert!(f(None, None, None, None).matches(&e));
        assert!(f(Some("drop"), Some("b"), Some("n2"), Some(80)).matches(&e));
        assert!(f(None, Some("a"), Some("n1"), Some(4000)).matches(&e));
        assert!(!f(Some("trace"), None, None, None).matches(&e));
        assert!(!f(None, Some("c"), None, None).matches(&e));
        assert!(!f(None, None, Some("n3"), None).matches(&e));
        assert!(!f(None, None, None, Some(81)).matches(&e));
        assert!(f(Some("x"), None, None, None).validate().is_err());
    }

    #[test]
    fn reasons_have_their_names() {
        assert_eq!(reason_name(2), "Isolation");
        assert_eq!(reason_name(18), "PolicyDenied");
        assert_eq!(reason_name(200), "reason 200");
    }
}
