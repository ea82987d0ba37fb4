//! The dataplane's maps from user space: the tables a [`DesiredState`]
//! becomes, a diff-sync that makes each map hold exactly its table, and the
//! readers (conntrack gc, counters, inspection).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf, Pod,
    maps::{
        Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
};
use pier_common::{
    ct::{CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_RST, CtVal, FlowKey},
    drop::DropReason,
    endpoint::{
        Addr6, EP_F_BACKEND, EndpointVal, EndpointVal4, NET_F_INTERNAL, NET_F_MASQUERADE,
        NET_F_NO_ICC, NetworkVal, UplinkVal, VethEp4, VethVal,
    },
    maps as names,
    metrics::Counter,
    nat::{NatVal, PortBits, PortKey, PortVal, SockKey, SockVal},
    nat6::{CtVal6, FlowKey6, NatVal6, PortKey6, PortVal6, SockKey6, SockVal6, UplinkVal6},
    policy::{
        FAMILY_V4, FAMILY_V6, POLICY_ALLOW, POLICY_DENY, POLICY_F_DEFAULT_DENY, POLICY_F_HOST,
        POLICY_F_HOST_UPLINK, POLICY_F_PORT, POLICY_F_PORT_UPLINK, PolicyKey, PolicyVal,
        SCOPE_BITS, SCOPES6,
    },
};

use super::{DataplaneError, DesiredState, PolicyRule, PortRef, PortSpec, Proto, sys::Iface};

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

/// `_be` form of an address: its bytes in packet order.
pub fn addr_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn addr_from_be(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

/// `_be` form of an IPv6 address: its 16 bytes in packet order.
pub fn addr6_be(ip: Ipv6Addr) -> Addr6 {
    let o = ip.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

pub fn addr6_from_be(v: Addr6) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in v.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

pub fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// The `PIER_PORTS` key of a published IPv4 port.
pub fn port_key(p: &PortSpec) -> PortKey {
    PortKey {
        addr_be: p.host_ip.and_then(v4).map(addr_be).unwrap_or(0),
        port_be: p.host_port.to_be(),
        proto: proto_num(p.proto),
        _pad: 0,
    }
}

/// The `PIER_PORTS6` key of a published IPv6 port.
pub fn port_key6(p: &PortSpec) -> PortKey6 {
    PortKey6 {
        addr: p.host_ip.and_then(v6).map(addr6_be).unwrap_or_default(),
        port_be: p.host_port.to_be(),
        proto: proto_num(p.proto),
        _pad: 0,
    }
}

/// Conntrack sizes, for `gc_conntrack` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounts {
    pub ct: usize,
    pub snat_fwd: usize,
    pub snat_rev: usize,
    pub sock_nat: usize,
    pub ct6: usize,
    pub snat_fwd6: usize,
    pub snat_rev6: usize,
    pub sock_nat6: usize,
}

/// Every map entry a [`DesiredState`] stands for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tables {
    pub networks: BTreeMap<u32, NetworkVal>,
    /// (prefix length, network `_be`) → network id.
    pub subnets: BTreeMap<(u32, u32), u32>,
    pub endpoints: BTreeMap<u32, EndpointVal4>,
    /// (prefix length, IPv6 network `_be`) → network id.
    pub subnets6: BTreeMap<(u32, Addr6), u32>,
    pub endpoints6: BTreeMap<Addr6, EndpointVal>,
    /// Host-side veth ifindex → its network.
    pub veth_vals: BTreeMap<u32, VethVal>,
    pub ports: BTreeMap<PortKey, PortVal>,
    pub backends: BTreeMap<PortKey, PortKey>,
    pub ports6: BTreeMap<PortKey6, PortVal6>,
    pub backends6: BTreeMap<PortKey6, PortKey6>,
    /// Network id → its IPv6 gateway (dual-stack networks).
    pub gateways6: BTreeMap<u32, Addr6>,
    /// `PIER_POLICY`: (prefix length, key data) → rule.
    pub policy: BTreeMap<(u32, PolicyKey), PolicyVal>,
    /// Host-side veths that get `pier_veth_in`.
    pub veths: BTreeSet<String>,
}

/// Add `rules` under scope `scope` (a `PolicyKey` with a zero source): a
/// deny and an allow of the same prefix in one scope make a deny.
fn add_rules<'a>(
    policy: &mut BTreeMap<(u32, PolicyKey), PolicyVal>,
    scope: PolicyKey,
    rules: impl IntoIterator<Item = &'a PolicyRule>,
) {
    for r in rules {
        // Each family's rules go to its own scopes.
        let net = r.src.trunc();
        let mut k = scope;
        match net.network() {
            IpAddr::V4(a) if scope.family == FAMILY_V4 => k.src[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) if scope.family == FAMILY_V6 => k.src = a.octets(),
            _ => continue,
        }
        let len = SCOPE_BITS + u32::from(net.prefix_len());
        let v = PolicyVal {
            action: if r.deny { POLICY_DENY } else { POLICY_ALLOW },
            prefix_len: net.prefix_len(),
            _pad: 0,
        };
        let e = policy.entry((len, k)).or_insert(v);
        if r.deny {
            *e = v;
        }
    }
}

/// Add `rules` under `scope` (those for every uplink) and under its
/// per-uplink kinds (those naming an existing uplink); returns `f_any`
/// and/or `f_uplink` for the kinds that got rules. An uplink with an allow
/// gets a `/0` deny in its scope, so only what is allowed there passes
/// there (unless a longer rule of another scope says otherwise), while
/// other uplinks are untouched.
fn add_scope(
    policy: &mut BTreeMap<(u32, PolicyKey), PolicyVal>,
    scope: PolicyKey,
    rules: &[PolicyRule],
    ifaces: &BTreeMap<String, Iface>,
    (f_any, f_uplink): (u16, u16),
) -> u16 {
    let mut flags = 0;
    let ours = |r: &&PolicyRule| r.src.addr().is_ipv4() == (scope.family == FAMILY_V4);
    if rules.iter().filter(ours).any(|r| r.uplink.is_none()) {
        flags |= f_any;
        add_rules(policy, scope, rules.iter().filter(|r| r.uplink.is_none()));
    }
    let mut per: BTreeMap<u32, Vec<&PolicyRule>> = BTreeMap::new();
    // An uplink with an allow of either family is allow-only for both.
    for r in rules {
        if let Some(i) = r.uplink.as_ref().and_then(|u| ifaces.get(u)) {
            per.entry(i.ifindex).or_default().push(r);
        }
    }
    for (ifindex, rs) in per {
        flags |= f_uplink;
        let s = scope.on_uplink(ifindex);
        add_rules(policy, s, rs.iter().copied());
        if rs.iter().any(|r| !r.deny) {
            policy.entry((SCOPE_BITS, s)).or_insert(PolicyVal {
                action: POLICY_DENY,
                prefix_len: 0,
                _pad: 0,
            });
        }
    }
    flags
}

impl Tables {
    /// The tables of `desired`, with interface facts from `ifaces`. Ports of
    /// `--internal` networks get no entry (they are unreachable).
    pub fn new(
        desired: &DesiredState,
        ifaces: &BTreeMap<String, Iface>,
    ) -> Result<Self, DataplaneError> {
        let mut t = Tables::default();
        let mut internal = BTreeSet::new();
        let mut bridge_mac = BTreeMap::new();
        for n in &desired.networks {
            let mut flags = 0;
            if n.internal {
                flags |= NET_F_INTERNAL;
                internal.insert(n.id);
            }
            if !n.icc {
                flags |= NET_F_NO_ICC;
            }
            if n.masquerade {
                flags |= NET_F_MASQUERADE;
            }
            t.networks.insert(
                n.id,
                NetworkVal {
                    flags,
                    gateway_be: n.gateway.map(addr_be).unwrap_or(0),
                },
            );
            if let Some(sn) = n.subnet {
                t.subnets
                    .insert((sn.prefix_len() as u32, addr_be(sn.network())), n.id);
            }
            if let Some(s6) = n.subnet6 {
                t.subnets6
                    .insert((s6.prefix_len() as u32, addr6_be(s6.network())), n.id);
                let gw = n
                    .gateway6
                    .unwrap_or_else(|| (u128::from(s6.network()) + 1).into());
                t.gateways6.insert(n.id, addr6_be(gw));
            }
            let mac = ifaces.get(&n.bridge).and_then(|b| b.mac).ok_or_else(|| {
                DataplaneError::Other(format!(
                    "network {}: bridge {} does not exist",
                    n.id, n.bridge
                ))
            })?;
            bridge_mac.insert(n.id, mac);
        }
        let host_allows = desired
            .host_policy
            .iter()
            .any(|r| !r.deny && r.uplink.is_none());
        let mut host_policy = BTreeMap::new();
        let host_flags = add_scope(
            &mut host_policy,
            PolicyKey::host(0),
            &desired.host_policy,
            ifaces,
            (POLICY_F_HOST, POLICY_F_HOST_UPLINK),
        );
        let host_flags6 = add_scope(
            &mut host_policy,
            PolicyKey::host6([0; 16]),
            &desired.host_policy,
            ifaces,
            (POLICY_F_HOST, POLICY_F_HOST_UPLINK),
        );
        // The explicit IPv6 host addresses ports are published on, sorted:
        // their rank is their ports' policy scope.
        let v6_hosts: Vec<Ipv6Addr> = desired
            .ports
            .iter()
            .filter_map(|p| match p.host_ip {
                Some(IpAddr::V6(a)) if !a.is_unspecified() => Some(a),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut net_of = BTreeMap::new();
        // Addresses a published IPv4 port leads to (their packets may be
        // replies of published connections).
        let backends: BTreeSet<IpAddr> = desired.ports.iter().map(|p| p.container_ip).collect();
        for e in &desired.endpoints {
            // A container whose interface is gone (stopped, being torn down)
            // has no entries until it is back; the rest is still applied.
            let Some(veth) = ifaces.get(&e.host_ifname) else {
                tracing::warn!(
                    "endpoint on network {}: interface {} does not exist; skipped",
                    e.network_id,
                    e.host_ifname
                );
                continue;
            };
            let bridge_mac = *bridge_mac.get(&e.network_id).ok_or_else(|| {
                DataplaneError::Other(format!(
                    "endpoint {} names unknown network {}",
                    e.host_ifname, e.network_id
                ))
            })?;
            let val = EndpointVal {
                ifindex: veth.ifindex,
                network_id: e.network_id,
                mac: e.mac,
                bridge_mac,
            };
            if let Some(ip) = e.ip {
                let net = t.networks.get(&e.network_id).copied().unwrap_or_default();
                let flags = if backends.contains(&IpAddr::V4(ip)) {
                    EP_F_BACKEND
                } else {
                    0
                };
                let v4 = EndpointVal4 {
                    ep: val,
                    net_flags: net.flags,
                    gateway_be: net.gateway_be,
                    flags,
                };
                t.endpoints.insert(addr_be(ip), v4);
                net_of.insert(IpAddr::V4(ip), e.network_id);
            }
            if let Some(ip6) = e.ip6 {
                t.endpoints6.insert(addr6_be(ip6), val);
                net_of.insert(IpAddr::V6(ip6), e.network_id);
            }
            t.veth_vals.insert(
                veth.ifindex,
                VethVal {
                    network_id: e.network_id,
                    bridge_mac,
                    mac: e.mac,
                },
            );
            t.veths.insert(e.host_ifname.clone());
        }
        for p in &desired.ports {
            if net_of
                .get(&p.container_ip)
                .is_none_or(|n| internal.contains(n))
            {
                continue;
            }
            if let IpAddr::V6(backend) = p.container_ip {
                let key = port_key6(p);
                // The port's scope: `::` is 0, each explicit host address
                // its rank among them (the key has no room for 16 bytes).
                let scope_id = match p.host_ip {
                    Some(IpAddr::V6(a)) if !a.is_unspecified() => {
                        (1 + v6_hosts.iter().position(|h| *h == a).unwrap_or(0) as u32).min(SCOPES6)
                    }
                    _ => 0,
                };
                let own = desired
                    .port_policy
                    .get(&PortRef::of(p))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let mut policy = host_flags6
                    | add_scope(
                        &mut t.policy,
                        PolicyKey::port6(scope_id, key.port_be, key.proto, [0; 16]),
                        own,
                        ifaces,
                        (POLICY_F_PORT, POLICY_F_PORT_UPLINK),
                    );
                // An allow of either family makes the port allow-only.
                if host_allows || own.iter().any(|r| !r.deny && r.uplink.is_none()) {
                    policy |= POLICY_F_DEFAULT_DENY;
                }
                let val = PortVal6 {
                    backend: addr6_be(backend),
                    backend_port_be: p.container_port.to_be(),
                    policy: policy | (scope_id as u16) << 8,
                    slot: 0,
                };
                t.ports6.insert(key, val);
                let b = PortKey6 {
                    addr: val.backend,
                    port_be: val.backend_port_be,
                    proto: key.proto,
                    _pad: 0,
                };
                t.backends6.entry(b).or_insert(key);
                continue;
            }
            let IpAddr::V4(container_ip) = p.container_ip else {
                continue;
            };
            let key = port_key(p);
            let own = desired
                .port_policy
                .get(&PortRef::of(p))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut policy = host_flags
                | add_scope(
                    &mut t.policy,
                    PolicyKey::port(key.addr_be, key.port_be, key.proto, 0),
                    own,
                    ifaces,
                    (POLICY_F_PORT, POLICY_F_PORT_UPLINK),
                );
            if host_allows || own.iter().any(|r| !r.deny && r.uplink.is_none()) {
                policy |= POLICY_F_DEFAULT_DENY;
            }
            // (`net_of` holds the addresses of `t.endpoints`.)
            let Some(ep) = t.endpoints.get(&addr_be(container_ip)).map(|v| v.ep) else {
                continue;
            };
            let val = PortVal {
                backend_be: addr_be(container_ip),
                backend_port_be: p.container_port.to_be(),
                policy,
                ep,
                slot: 0,
            };
            t.ports.insert(key, val);
            // Backend → the (first) host port publishing it.
            let backend = PortKey {
                addr_be: val.backend_be,
                port_be: val.backend_port_be,
                proto: key.proto,
                _pad: 0,
            };
            t.backends.entry(backend).or_insert(key);
        }
        t.policy.extend(host_policy);
        Ok(t)
    }
}

/// A typed view of hash map `name`.
fn hash<'a, K: Pod, V: Pod>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<HashMap<&'a mut MapData, K, V>, DataplaneError> {
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    HashMap::try_from(map).map_err(|e| err(name, e))
}

fn hash_ro<'a, K: Pod, V: Pod>(
    bpf: &'a Ebpf,
    name: &str,
) -> Result<HashMap<&'a MapData, K, V>, DataplaneError> {
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    HashMap::try_from(map).map_err(|e| err(name, e))
}

fn lpm<'a, K: Pod>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<LpmTrie<&'a mut MapData, K, u32>, DataplaneError> {
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    LpmTrie::try_from(map).map_err(|e| err(name, e))
}

/// Make LPM trie `name` hold exactly `want` ((prefix length, data) → id):
/// `add` inserts what `prev` (the last written, if known) lacks or has
/// otherwise, else removes what `want` lacks (from `prev`, or from the
/// whole map when `prev` is not known).
fn sync_lpm<K: Pod + Ord>(
    bpf: &mut Ebpf,
    name: &str,
    want: &BTreeMap<(u32, K), u32>,
    prev: Option<&BTreeMap<(u32, K), u32>>,
    add: bool,
) -> Result<(), DataplaneError> {
    let mut m = lpm::<K>(bpf, name)?;
    if add {
        for ((len, net), id) in want {
            if prev.is_some_and(|p| p.get(&(*len, *net)) == Some(id)) {
                continue;
            }
            m.insert(&Key::new(*len, *net), id, 0)
                .map_err(|e| err(name, e))?;
        }
        return Ok(());
    }
    let stale: Vec<Key<K>> = match prev {
        Some(p) => p
            .keys()
            .filter(|k| !want.contains_key(k))
            .map(|(len, k)| Key::new(*len, *k))
            .collect(),
        None => m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(&(k.prefix_len(), k.data())))
            .collect(),
    };
    for k in stale {
        m.remove(&k).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// Insert or update every entry of `want` that `prev` (the last written,
/// if known) does not hold as it is.
fn upsert<K: Pod + Ord, V: Pod + PartialEq>(
    bpf: &mut Ebpf,
    name: &str,
    want: &BTreeMap<K, V>,
    prev: Option<&BTreeMap<K, V>>,
) -> Result<(), DataplaneError> {
    let mut m = hash::<K, V>(bpf, name)?;
    for (k, v) in want {
        if prev.is_some_and(|p| p.get(k) == Some(v)) {
            continue;
        }
        m.insert(k, v, 0).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// Remove every entry whose key is not in `want` (of `prev`, the last
/// written, when known; else of the whole map); the keys removed.
fn prune<K: Pod + Ord, V: Pod>(
    bpf: &mut Ebpf,
    name: &str,
    want: &BTreeMap<K, V>,
    prev: Option<&BTreeMap<K, V>>,
) -> Result<Vec<K>, DataplaneError> {
    let mut m = hash::<K, V>(bpf, name)?;
    let stale: Vec<K> = match prev {
        Some(p) => p
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect(),
        None => m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains_key(k))
            .collect(),
    };
    for k in &stale {
        m.remove(k).map_err(|e| err(name, e))?;
    }
    Ok(stale)
}

/// What `PIER_VETH_EP4` holds for `t`: for each veth its container's
/// `PIER_ENDPOINTS` entry (zero: none).
fn veth_slots(t: &Tables) -> BTreeMap<u32, VethEp4> {
    let mut slots: BTreeMap<u32, VethEp4> = t
        .veth_vals
        .keys()
        .map(|i| (*i, VethEp4::default()))
        .collect();
    for (addr, ep) in &t.endpoints {
        let v = VethEp4 {
            addr_be: *addr,
            ep: *ep,
        };
        slots.insert(ep.ep.ifindex, v);
    }
    slots
}

/// Set these `PIER_VETH_EP4` slots (those of an ifindex below `IF_PKTS_LEN`).
fn veth_ep4<'a>(
    bpf: &mut Ebpf,
    slots: impl IntoIterator<Item = (&'a u32, &'a VethEp4)>,
) -> Result<(), DataplaneError> {
    let name = names::VETH_EP4;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    let mut a: Array<_, VethEp4> = Array::try_from(map).map_err(|e| err(name, e))?;
    for (i, v) in slots {
        if *i < names::IF_PKTS_LEN {
            a.set(*i, v, 0).map_err(|e| err(name, e))?;
        }
    }
    Ok(())
}

fn policy_map(
    bpf: &mut Ebpf,
) -> Result<LpmTrie<&mut MapData, PolicyKey, PolicyVal>, DataplaneError> {
    let map = bpf
        .map_mut(names::POLICY)
        .ok_or_else(|| DataplaneError::Other("map PIER_POLICY missing".into()))?;
    LpmTrie::try_from(map).map_err(|e| err(names::POLICY, e))
}

/// A published port's value, which names its counter's slot in a per-CPU
/// array (`PIER_PORT_STATS`, `PIER_PORT_STAT6`).
pub trait Slotted {
    fn slot(&self) -> u32;
    fn set_slot(&mut self, slot: u32);
}

impl Slotted for PortVal {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn set_slot(&mut self, slot: u32) {
        self.slot = slot;
    }
}

impl Slotted for PortVal6 {
    fn slot(&self) -> u32 {
        self.slot
    }
    fn set_slot(&mut self, slot: u32) {
        self.slot = slot;
    }
}

/// Give each port of `ports` its counter slot (below `len`): the one it
/// has in `had` (what the last write left, or the pinned map after a
/// start), else the lowest slot that no port holds now or held in `had`:
/// a slot freed by this sync is reused only by a later one (a packet that
/// found the old entry may still count into it). Only when every slot is
/// taken so is a just-freed one reused. Returns the slots given anew, to
/// be zeroed before their ports' entries are written.
pub fn assign_slots<K: Ord, V: Slotted>(
    ports: &mut BTreeMap<K, V>,
    had: &BTreeMap<K, V>,
    len: u32,
) -> Vec<u32> {
    let words = (len as usize).div_ceil(64);
    let mut kept = vec![0u64; words];
    let taken = |bits: &[u64], s: u32| bits[s as usize / 64] & (1 << (s % 64)) != 0;
    let mut pending = Vec::new();
    // Both maps in key order, walked side by side (a sync of 10 000 ports
    // that changes none costs a merge, not 10 000 lookups).
    let mut old = had.iter().peekable();
    for (k, v) in ports.iter_mut() {
        while old.next_if(|(o, _)| *o < k).is_some() {}
        let prev = old.next_if(|(o, _)| *o == k).map(|(_, p)| p.slot());
        match prev {
            Some(s) if s < len && !taken(&kept, s) => {
                kept[s as usize / 64] |= 1 << (s % 64);
                v.set_slot(s);
            }
            _ => pending.push(v),
        }
    }
    if pending.is_empty() {
        return Vec::new();
    }
    let mut busy = kept.clone();
    for s in had.values().map(Slotted::slot).filter(|s| *s < len) {
        busy[s as usize / 64] |= 1 << (s % 64);
    }
    let mut fresh = Vec::with_capacity(pending.len());
    let (mut next, mut fallback) = (0u32, 0u32);
    for v in pending {
        while next < len && taken(&busy, next) {
            next += 1;
        }
        let s = if next < len {
            next
        } else {
            // Every slot held now or at the last write: one freed just now.
            while fallback < len && taken(&kept, fallback) {
                fallback += 1;
            }
            fallback
        };
        if s >= len {
            // More ports than slots (the map would refuse them anyway).
            break;
        }
        busy[s as usize / 64] |= 1 << (s % 64);
        kept[s as usize / 64] |= 1 << (s % 64);
        v.set_slot(s);
        fresh.push(s);
    }
    fresh
}

/// [`assign_slots`] for the ports of hash `ports_map` (`PIER_PORTS` or
/// `PIER_PORTS6`), from `prev` when known, else from the map as pinned (a
/// restart keeps every port's counter), and the slots given anew zeroed in
/// per-CPU array `stats`.
fn port_slots<K: Pod + Ord, V: Pod + Slotted>(
    bpf: &mut Ebpf,
    ports_map: &str,
    stats: &str,
    ports: &mut BTreeMap<K, V>,
    prev: Option<&BTreeMap<K, V>>,
) -> Result<(), DataplaneError> {
    let fresh = match prev {
        Some(p) => assign_slots(ports, p, names::PORTS_LEN),
        None => {
            let pinned: BTreeMap<K, V> = hash_ro::<K, V>(bpf, ports_map)?
                .iter()
                .filter_map(Result::ok)
                .collect();
            assign_slots(ports, &pinned, names::PORTS_LEN)
        }
    };
    if fresh.is_empty() {
        return Ok(());
    }
    let ncpu = aya::util::nr_cpus().map_err(|(w, e)| err(w, e))?;
    let map = bpf
        .map_mut(stats)
        .ok_or_else(|| DataplaneError::Other(format!("map {stats} missing")))?;
    let mut a: PerCpuArray<_, Counter> = PerCpuArray::try_from(map).map_err(|e| err(stats, e))?;
    for s in fresh {
        let zero =
            PerCpuValues::try_from(vec![Counter::default(); ncpu]).map_err(|e| err(stats, e))?;
        a.set(s, zero, 0).map_err(|e| err(stats, e))?;
    }
    Ok(())
}

/// Per-CPU counter map `name` (keyed by published port): a zeroed entry
/// for each new port of `ports`, none for a port that is gone. New and gone
/// against `prev` (the ports last written) when known, else against the map.
fn port_counters<K: Pod + Ord, V>(
    bpf: &mut Ebpf,
    name: &str,
    ports: &BTreeMap<K, V>,
    prev: Option<&BTreeMap<K, V>>,
) -> Result<(), DataplaneError> {
    if prev.is_some_and(|p| p.len() == ports.len() && p.keys().eq(ports.keys())) {
        return Ok(());
    }
    let ncpu = aya::util::nr_cpus().map_err(|(w, e)| err(w, e))?;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let mut stats: PerCpuHashMap<_, K, Counter> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    let have: BTreeSet<K> = match prev {
        Some(p) => p.keys().copied().collect(),
        None => stats.keys().filter_map(Result::ok).collect(),
    };
    for k in ports.keys().filter(|k| !have.contains(k)) {
        let zero =
            PerCpuValues::try_from(vec![Counter::default(); ncpu]).map_err(|e| err(name, e))?;
        stats.insert(k, zero, 0).map_err(|e| err(name, e))?;
    }
    for k in have.iter().filter(|k| !ports.contains_key(k)) {
        stats.remove(k).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// `PIER_IF_STATS` (and `PIER_IF_PKTS` below `IF_PKTS_LEN`): zeroed
/// entries for the interfaces `new`, none for those `gone` (the difference
/// from the last sync; `observe::sync_if_stats` compares the whole map).
pub fn if_stats_diff(bpf: &mut Ebpf, new: &[u32], gone: &[u32]) -> Result<(), DataplaneError> {
    use pier_common::event::{IfPkts, IfStats};
    if new.is_empty() && gone.is_empty() {
        return Ok(());
    }
    let ncpu = aya::util::nr_cpus().map_err(|(w, e)| err(w, e))?;
    let name = names::IF_STATS;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let mut m: PerCpuHashMap<_, u32, IfStats> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    for k in new {
        let zero =
            PerCpuValues::try_from(vec![IfStats::default(); ncpu]).map_err(|e| err(name, e))?;
        m.insert(k, zero, 0).map_err(|e| err(name, e))?;
    }
    for k in gone {
        let _ = m.remove(k);
    }
    let name = names::IF_PKTS;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let mut a: PerCpuArray<_, IfPkts> = PerCpuArray::try_from(map).map_err(|e| err(name, e))?;
    for k in new.iter().filter(|k| **k < names::IF_PKTS_LEN) {
        let zero =
            PerCpuValues::try_from(vec![IfPkts::default(); ncpu]).map_err(|e| err(name, e))?;
        a.set(*k, zero, 0).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// Set `PIER_PORT_CFG[0]`.
fn port_cfg(bpf: &mut Ebpf, flags: u32) -> Result<(), DataplaneError> {
    let name = names::PORT_CFG;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    let mut a: Array<_, u32> = Array::try_from(map).map_err(|e| err(name, e))?;
    a.set(0, flags, 0).map_err(|e| err(name, e))
}

/// `PIER_PORT_UNPUB[0]`: set to `bits`, or (`None`) read.
fn port_unpub(bpf: &mut Ebpf, bits: Option<&PortBits>) -> Result<PortBits, DataplaneError> {
    let name = names::PORT_UNPUB;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))?;
    let mut a: Array<_, PortBits> = Array::try_from(map).map_err(|e| err(name, e))?;
    match bits {
        Some(b) => {
            a.set(0, b, 0).map_err(|e| err(name, e))?;
            Ok(*b)
        }
        None => a.get(&0, 0).map_err(|e| err(name, e)),
    }
}

/// Make the maps hold exactly `t`: add and update first (networks →
/// endpoints → ports), remove after (ports → endpoints → networks), so no
/// packet meets an entry pointing at a missing one. `prev` is what the last
/// successful write left (`None`: not known, e.g. after a start or a
/// failed write: every entry is written and each map compared whole);
/// with it only the difference is written, so a change costs what it
/// changes, not what the host holds.
pub fn write(bpf: &mut Ebpf, t: &mut Tables, prev: Option<&Tables>) -> Result<(), DataplaneError> {
    // Each port's counter slot first (the values written below name it).
    port_slots(
        bpf,
        names::PORTS,
        names::PORT_STATS,
        &mut t.ports,
        prev.map(|p| &p.ports),
    )?;
    port_slots(
        bpf,
        names::PORTS6,
        names::PORT_STATS6,
        &mut t.ports6,
        prev.map(|p| &p.ports6),
    )?;
    let t = &*t;
    upsert(bpf, names::NETWORKS, &t.networks, prev.map(|p| &p.networks))?;
    sync_lpm(
        bpf,
        names::SUBNETS,
        &t.subnets,
        prev.map(|p| &p.subnets),
        true,
    )?;
    sync_lpm(
        bpf,
        names::SUBNETS6,
        &t.subnets6,
        prev.map(|p| &p.subnets6),
        true,
    )?;
    upsert(bpf, names::VETHS, &t.veth_vals, prev.map(|p| &p.veth_vals))?;
    upsert(
        bpf,
        names::ENDPOINTS,
        &t.endpoints,
        prev.map(|p| &p.endpoints),
    )?;
    let slots = veth_slots(t);
    let prev_slots = prev.map(veth_slots);
    veth_ep4(
        bpf,
        slots
            .iter()
            .filter(|(i, v)| prev_slots.as_ref().is_none_or(|p| p.get(i) != Some(v))),
    )?;
    upsert(
        bpf,
        names::ENDPOINTS6,
        &t.endpoints6,
        prev.map(|p| &p.endpoints6),
    )?;
    // Counters start at zero for a new port and keep counting otherwise
    // (`PIER_PORT_STATS`' slots were zeroed by `port_slots`).
    port_counters(bpf, names::PORT_DROPS, &t.ports, prev.map(|p| &p.ports))?;
    // Rules before the ports that ask for them, stale ones after.
    {
        let mut m = policy_map(bpf)?;
        for ((len, k), v) in &t.policy {
            if prev.is_some_and(|p| p.policy.get(&(*len, *k)) == Some(v)) {
                continue;
            }
            m.insert(&Key::new(*len, *k), v, 0)
                .map_err(|e| err(names::POLICY, e))?;
        }
    }
    upsert(
        bpf,
        names::NETWORKS6,
        &t.gateways6,
        prev.map(|p| &p.gateways6),
    )?;
    port_counters(bpf, names::PORT_DROPS6, &t.ports6, prev.map(|p| &p.ports6))?;
    upsert(bpf, names::BACKENDS, &t.backends, prev.map(|p| &p.backends))?;
    // No port bound to one address: lookups ask the all-addresses key only.
    // Cleared before such a binding is added, set after the last is gone.
    let wild_only = t.ports.keys().all(|k| k.addr_be == 0);
    let was_wild_only = prev.map(|p| p.ports.keys().all(|k| k.addr_be == 0));
    if !wild_only && was_wild_only != Some(false) {
        port_cfg(bpf, 0)?;
    }
    // The unpublished ports: a new port's bit cleared before it is added,
    // a removed one's set after it is gone.
    let same_ports = prev.is_some_and(|p| p.ports.keys().eq(t.ports.keys()));
    let unpub = PortBits::all_but(t.ports.keys().map(|k| u16::from_be(k.port_be)));
    let now = if same_ports {
        unpub
    } else {
        port_unpub(bpf, None)?
    };
    if now.and(&unpub) != now {
        port_unpub(bpf, Some(&now.and(&unpub)))?;
    }
    upsert(bpf, names::PORTS, &t.ports, prev.map(|p| &p.ports))?;
    prune(bpf, names::PORTS, &t.ports, prev.map(|p| &p.ports))?;
    if now != unpub {
        port_unpub(bpf, Some(&unpub))?;
    }
    if wild_only && was_wild_only != Some(true) {
        port_cfg(bpf, names::PORTS_F_WILD_ONLY)?;
    }
    upsert(
        bpf,
        names::BACKENDS6,
        &t.backends6,
        prev.map(|p| &p.backends6),
    )?;
    upsert(bpf, names::PORTS6, &t.ports6, prev.map(|p| &p.ports6))?;
    prune(bpf, names::PORTS6, &t.ports6, prev.map(|p| &p.ports6))?;
    prune(
        bpf,
        names::BACKENDS6,
        &t.backends6,
        prev.map(|p| &p.backends6),
    )?;
    {
        let mut m = policy_map(bpf)?;
        let stale: Vec<Key<PolicyKey>> = match prev {
            Some(p) => p
                .policy
                .keys()
                .filter(|k| !t.policy.contains_key(k))
                .map(|(len, k)| Key::new(*len, *k))
                .collect(),
            None => m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !t.policy.contains_key(&(k.prefix_len(), k.data())))
                .collect(),
        };
        for k in stale {
            m.remove(&k).map_err(|e| err(names::POLICY, e))?;
        }
    }
    prune(bpf, names::BACKENDS, &t.backends, prev.map(|p| &p.backends))?;
    prune(
        bpf,
        names::ENDPOINTS6,
        &t.endpoints6,
        prev.map(|p| &p.endpoints6),
    )?;
    prune(
        bpf,
        names::ENDPOINTS,
        &t.endpoints,
        prev.map(|p| &p.endpoints),
    )?;
    let gone = prune(bpf, names::VETHS, &t.veth_vals, prev.map(|p| &p.veth_vals))?;
    let zero = VethEp4::default();
    veth_ep4(
        bpf,
        gone.iter()
            .filter(|i| !slots.contains_key(i))
            .map(|i| (i, &zero)),
    )?;
    prune(
        bpf,
        names::NETWORKS6,
        &t.gateways6,
        prev.map(|p| &p.gateways6),
    )?;
    sync_lpm(
        bpf,
        names::SUBNETS6,
        &t.subnets6,
        prev.map(|p| &p.subnets6),
        false,
    )?;
    sync_lpm(
        bpf,
        names::SUBNETS,
        &t.subnets,
        prev.map(|p| &p.subnets),
        false,
    )?;
    prune(bpf, names::NETWORKS, &t.networks, prev.map(|p| &p.networks))?;
    Ok(())
}

/// `PIER_HOST_ADDRS` := the host's addresses (but loopback); `PIER_UPLINK` :=
/// the first of `uplinks` that has an address; `PIER_UPLINKS` := all of them
/// (`PIER_UPLINK6` / `PIER_UPLINKS6` likewise for global IPv6 addresses).
pub fn write_host(
    bpf: &mut Ebpf,
    ifaces: &BTreeMap<String, Iface>,
    uplinks: &[String],
) -> Result<(), DataplaneError> {
    let addrs: BTreeMap<u32, u32> = ifaces
        .values()
        .flat_map(|i| i.addrs.iter())
        .filter(|a| !a.is_loopback())
        .map(|a| (addr_be(*a), 1))
        .collect();
    // Link-local addresses of the uplinks only: every host veth has one
    // (a thousand containers would fill the map), and a container's
    // link-local traffic passes without this lookup.
    let addrs6: BTreeMap<Addr6, u32> = ifaces
        .iter()
        .flat_map(|(n, i)| {
            let up = uplinks.contains(n);
            i.addrs6.iter().filter(move |a| up || !is_link_local6(a))
        })
        .filter(|a| !a.is_loopback())
        .map(|a| (addr6_be(*a), 1))
        .collect();
    let mut uplink = UplinkVal::default();
    let mut uplink6 = UplinkVal6::default();
    // Every uplink with an address: masquerade leaves by the one its route picks.
    let mut all: BTreeMap<u32, UplinkVal> = BTreeMap::new();
    let mut all6: BTreeMap<u32, UplinkVal6> = BTreeMap::new();
    for name in uplinks {
        // (A missing uplink, deleted under the agent, is skipped: `start`
        // refuses one that is missing from the beginning.)
        let Some(i) = ifaces.get(name) else {
            continue;
        };
        if let Some(a) = i.addrs.first() {
            let v = UplinkVal {
                ifindex: i.ifindex,
                addr_be: addr_be(*a),
            };
            all.insert(i.ifindex, v);
            if uplink.ifindex == 0 {
                uplink = v;
            }
        }
        // IPv6 masquerade leaves from the first address that routes beyond
        // the link (not link-local).
        if let Some(a) = i
            .addrs6
            .iter()
            .find(|a| !is_link_local6(a) && !a.is_loopback())
        {
            let v = UplinkVal6 {
                ifindex: i.ifindex,
                addr: addr6_be(*a),
            };
            all6.insert(i.ifindex, v);
            if uplink6.ifindex == 0 {
                uplink6 = v;
            }
        }
    }
    upsert(bpf, names::HOST_ADDRS, &addrs, None)?;
    prune(bpf, names::HOST_ADDRS, &addrs, None)?;
    upsert(bpf, names::HOST_ADDRS6, &addrs6, None)?;
    prune(bpf, names::HOST_ADDRS6, &addrs6, None)?;
    upsert(bpf, names::UPLINKS, &all, None)?;
    prune(bpf, names::UPLINKS, &all, None)?;
    upsert(bpf, names::UPLINKS6, &all6, None)?;
    prune(bpf, names::UPLINKS6, &all6, None)?;
    let map = bpf
        .map_mut(names::UPLINK)
        .ok_or_else(|| DataplaneError::Other("map PIER_UPLINK missing".into()))?;
    let mut u: Array<_, UplinkVal> = Array::try_from(map).map_err(|e| err(names::UPLINK, e))?;
    u.set(0, uplink, 0).map_err(|e| err(names::UPLINK, e))?;
    let map = bpf
        .map_mut(names::UPLINK6)
        .ok_or_else(|| DataplaneError::Other("map PIER_UPLINK6 missing".into()))?;
    let mut u: Array<_, UplinkVal6> = Array::try_from(map).map_err(|e| err(names::UPLINK6, e))?;
    u.set(0, uplink6, 0).map_err(|e| err(names::UPLINK6, e))
}

/// `fe80::/10`.
pub fn is_link_local6(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// One family's conntrack and masquerade maps, as [`gc`] walks them.
trait Flows {
    type Key: Pod;
    type Ct: Pod;
    type Nat: Pod;
    /// The key as a set element (the v4 key has no `Ord`).
    type Tuple: Ord;
    const CT: &'static str;
    const FWD: &'static str;
    const REV: &'static str;
    fn ct_expires(v: &Self::Ct) -> u64;
    fn nat_expires(v: &Self::Nat) -> u64;
    /// `CT_F_*` of a masquerade entry.
    fn nat_flags(v: &Self::Nat) -> u32;
    /// The reverse entry's key of forward entry `(k, v)`.
    fn reply_key(k: &Self::Key, v: &Self::Nat) -> Self::Key;
    fn tuple(k: &Self::Key) -> Self::Tuple;
}

struct V4;
struct V6;

impl Flows for V4 {
    type Key = FlowKey;
    type Ct = CtVal;
    type Nat = NatVal;
    type Tuple = (u32, u32, u16, u16, u8);
    const CT: &'static str = names::CT;
    const FWD: &'static str = names::SNAT_FWD;
    const REV: &'static str = names::SNAT_REV;
    fn ct_expires(v: &CtVal) -> u64 {
        v.expires_ns
    }
    fn nat_expires(v: &NatVal) -> u64 {
        v.expires_ns
    }
    fn nat_flags(v: &NatVal) -> u32 {
        v.flags
    }
    fn reply_key(k: &FlowKey, v: &NatVal) -> FlowKey {
        FlowKey {
            saddr_be: k.daddr_be,
            daddr_be: v.addr_be,
            sport_be: k.dport_be,
            dport_be: v.port_be,
            proto: k.proto,
            _pad: [0; 3],
        }
    }
    fn tuple(k: &FlowKey) -> Self::Tuple {
        (k.saddr_be, k.daddr_be, k.sport_be, k.dport_be, k.proto)
    }
}

impl Flows for V6 {
    type Key = FlowKey6;
    type Ct = CtVal6;
    type Nat = NatVal6;
    type Tuple = FlowKey6;
    const CT: &'static str = names::CT6;
    const FWD: &'static str = names::SNAT_FWD6;
    const REV: &'static str = names::SNAT_REV6;
    fn ct_expires(v: &CtVal6) -> u64 {
        v.expires_ns
    }
    fn nat_expires(v: &NatVal6) -> u64 {
        v.expires_ns
    }
    fn nat_flags(v: &NatVal6) -> u32 {
        v.flags
    }
    fn reply_key(k: &FlowKey6, v: &NatVal6) -> FlowKey6 {
        FlowKey6 {
            saddr: k.daddr,
            daddr: v.addr,
            sport_be: k.dport_be,
            dport_be: v.port_be,
            proto: k.proto,
            _pad: [0; 3],
        }
    }
    fn tuple(k: &FlowKey6) -> FlowKey6 {
        *k
    }
}

/// When a masquerade pair (forward half, reverse half if any: `(CT_F_*
/// flags, expiry)` each) may go. An open flow's pair lives while either
/// half does (a one-way flow refreshes one only). A closed TCP connection —
/// a reset, or a FIN each way, seen by either half — goes when the halves
/// that saw the close expired (their closing lifetime): the other half
/// keeps the established lifetime of its last packet, and with plain hash
/// maps nothing else would ever retire it.
pub fn pair_expires(fwd: (u32, u64), rev: Option<(u32, u64)>) -> u64 {
    let halves = [Some(fwd), rev];
    let halves = halves.iter().flatten();
    let flags = halves.clone().fold(0, |f, h| f | h.0);
    let closed = flags & CT_F_RST != 0
        || flags & (CT_F_FIN_ORIG | CT_F_FIN_REPLY) == CT_F_FIN_ORIG | CT_F_FIN_REPLY;
    halves
        .filter(|h| !closed || h.0 != 0)
        .map(|h| h.1)
        .max()
        .unwrap_or(0)
}

/// Remove conntrack and NAT entries whose lifetime ended before `now`
/// (CLOCK_MONOTONIC ns), both families. A masquerade pair goes as
/// [`pair_expires`] says.
pub fn gc(bpf: &mut Ebpf, now: u64) -> Result<(), DataplaneError> {
    gc_family::<V4>(bpf, now)?;
    gc_family::<V6>(bpf, now)
}

fn gc_family<F: Flows>(bpf: &mut Ebpf, now: u64) -> Result<(), DataplaneError> {
    {
        let mut ct = hash::<F::Key, F::Ct>(bpf, F::CT)?;
        let dead: Vec<F::Key> = ct
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| F::ct_expires(v) < now)
            .map(|(k, _)| k)
            .collect();
        for k in dead {
            let _ = ct.remove(&k);
        }
    }
    let [fwd, rev] = bpf.maps_disjoint_mut([F::FWD, F::REV]);
    let (Some(fwd), Some(rev)) = (fwd, rev) else {
        return Err(DataplaneError::Other(format!(
            "{} or {} missing",
            F::FWD,
            F::REV
        )));
    };
    let mut fwd: HashMap<_, F::Key, F::Nat> = HashMap::try_from(fwd).map_err(|e| err(F::FWD, e))?;
    let mut rev: HashMap<_, F::Key, F::Nat> = HashMap::try_from(rev).map_err(|e| err(F::REV, e))?;
    let fwd_entries: Vec<(F::Key, F::Nat)> = fwd.iter().filter_map(Result::ok).collect();
    let mut paired = BTreeSet::new();
    for (k, v) in fwd_entries {
        let rkey = F::reply_key(&k, &v);
        let r = rev.get(&rkey, 0).ok();
        let half = |v: &F::Nat| (F::nat_flags(v), F::nat_expires(v));
        if pair_expires(half(&v), r.as_ref().map(half)) < now {
            let _ = fwd.remove(&k);
            let _ = rev.remove(&rkey);
        } else {
            paired.insert(F::tuple(&rkey));
        }
    }
    let rev_entries: Vec<(F::Key, F::Nat)> = rev.iter().filter_map(Result::ok).collect();
    for (k, v) in rev_entries {
        if F::nat_expires(&v) < now && !paired.contains(&F::tuple(&k)) {
            let _ = rev.remove(&k);
        }
    }
    Ok(())
}

/// Empty `PIER_CT`; returns how many entries it held.
pub fn flush_ct(bpf: &mut Ebpf) -> Result<usize, DataplaneError> {
    let mut ct = hash::<FlowKey, CtVal>(bpf, names::CT)?;
    let keys: Vec<FlowKey> = ct.keys().filter_map(Result::ok).collect();
    for k in &keys {
        let _ = ct.remove(k);
    }
    Ok(keys.len())
}

pub fn counts(bpf: &Ebpf) -> Result<CtCounts, DataplaneError> {
    fn count<K: Pod, V: Pod>(bpf: &Ebpf, name: &str) -> Result<usize, DataplaneError> {
        Ok(hash_ro::<K, V>(bpf, name)?.keys().count())
    }
    Ok(CtCounts {
        ct: count::<FlowKey, CtVal>(bpf, names::CT)?,
        snat_fwd: count::<FlowKey, NatVal>(bpf, names::SNAT_FWD)?,
        snat_rev: count::<FlowKey, NatVal>(bpf, names::SNAT_REV)?,
        sock_nat: count::<SockKey, SockVal>(bpf, names::SOCK_NAT)?,
        ct6: count::<FlowKey6, CtVal6>(bpf, names::CT6)?,
        snat_fwd6: count::<FlowKey6, NatVal6>(bpf, names::SNAT_FWD6)?,
        snat_rev6: count::<FlowKey6, NatVal6>(bpf, names::SNAT_REV6)?,
        sock_nat6: count::<SockKey6, SockVal6>(bpf, names::SOCK_NAT6)?,
    })
}

/// A family's masquerade entries: `(forward, reverse)`.
pub type SnatEntries<K, V> = (Vec<(K, V)>, Vec<(K, V)>);

/// Every entry of the masquerade maps `fwd` and `rev` (tests, inspection).
pub fn snat_entries<K: Pod, V: Pod>(
    bpf: &Ebpf,
    fwd: &str,
    rev: &str,
) -> Result<SnatEntries<K, V>, DataplaneError> {
    let all = |name| -> Result<Vec<(K, V)>, DataplaneError> {
        Ok(hash_ro::<K, V>(bpf, name)?
            .iter()
            .filter_map(Result::ok)
            .collect())
    };
    Ok((all(fwd)?, all(rev)?))
}

pub fn ports(bpf: &Ebpf) -> Result<Vec<(PortKey, PortVal)>, DataplaneError> {
    Ok(hash_ro::<PortKey, PortVal>(bpf, names::PORTS)?
        .iter()
        .filter_map(Result::ok)
        .collect())
}

pub fn endpoints(bpf: &Ebpf) -> Result<Vec<(Ipv4Addr, EndpointVal)>, DataplaneError> {
    Ok(hash_ro::<u32, EndpointVal4>(bpf, names::ENDPOINTS)?
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (addr_from_be(k), v.ep))
        .collect())
}

pub fn endpoints6(bpf: &Ebpf) -> Result<Vec<(Ipv6Addr, EndpointVal)>, DataplaneError> {
    Ok(hash_ro::<Addr6, EndpointVal>(bpf, names::ENDPOINTS6)?
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (addr6_from_be(k), v))
        .collect())
}

fn sum<'a>(it: impl Iterator<Item = &'a Counter>) -> Counter {
    it.fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

pub fn drops(bpf: &Ebpf) -> Result<Vec<(DropReason, Counter)>, DataplaneError> {
    let map = bpf
        .map(names::DROPS)
        .ok_or_else(|| DataplaneError::Other("map PIER_DROPS missing".into()))?;
    let m: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(map).map_err(|e| err(names::DROPS, e))?;
    DropReason::ALL
        .into_iter()
        .map(|r| {
            let v = m.get(&(r as u32), 0).map_err(|e| err(names::DROPS, e))?;
            Ok((r, sum(v.iter())))
        })
        .collect()
}

fn per_port(bpf: &Ebpf, name: &str, key: &PortKey) -> Result<Counter, DataplaneError> {
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let m: PerCpuHashMap<_, PortKey, Counter> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    Ok(m.get(key, 0).map(|v| sum(v.iter())).unwrap_or_default())
}

/// Counter slot `slot` of per-CPU array `name`, summed over the CPUs.
fn per_slot(bpf: &Ebpf, name: &str, slot: u32) -> Result<Counter, DataplaneError> {
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let m: PerCpuArray<_, Counter> = PerCpuArray::try_from(map).map_err(|e| err(name, e))?;
    Ok(m.get(&slot, 0).map(|v| sum(v.iter())).unwrap_or_default())
}

/// Packets and bytes of the published port whose counter is `slot`
/// (`PortVal::slot`), summed over the CPUs.
pub fn port_counter(bpf: &Ebpf, slot: u32) -> Result<Counter, DataplaneError> {
    per_slot(bpf, names::PORT_STATS, slot)
}

/// [`port_counter`] of an IPv6 published port (`PortVal6::slot`).
pub fn port_counter6(bpf: &Ebpf, slot: u32) -> Result<Counter, DataplaneError> {
    per_slot(bpf, names::PORT_STATS6, slot)
}

/// The counter slot of published port `key` as `PIER_PORTS` holds it.
pub fn port_slot(bpf: &Ebpf, key: &PortKey) -> Result<Option<u32>, DataplaneError> {
    Ok(hash_ro::<PortKey, PortVal>(bpf, names::PORTS)?
        .get(key, 0)
        .ok()
        .map(|v| v.slot))
}

/// The counter slot of IPv6 published port `key` as `PIER_PORTS6` holds it.
pub fn port_slot6(bpf: &Ebpf, key: &PortKey6) -> Result<Option<u32>, DataplaneError> {
    Ok(hash_ro::<PortKey6, PortVal6>(bpf, names::PORTS6)?
        .get(key, 0)
        .ok()
        .map(|v| v.slot))
}

/// [`port_denied`] of an IPv6 published port.
pub fn port_denied6(bpf: &Ebpf, key: &PortKey6) -> Result<Counter, DataplaneError> {
    per_port6(bpf, names::PORT_DROPS6, key)
}

fn per_port6(bpf: &Ebpf, name: &str, key: &PortKey6) -> Result<Counter, DataplaneError> {
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let m: PerCpuHashMap<_, PortKey6, Counter> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    Ok(m.get(key, 0).map(|v| sum(v.iter())).unwrap_or_default())
}

/// `PIER_PORTS6` as the kernel holds it.
pub fn ports6(bpf: &Ebpf) -> Result<Vec<(PortKey6, PortVal6)>, DataplaneError> {
    Ok(hash_ro::<PortKey6, PortVal6>(bpf, names::PORTS6)?
        .iter()
        .filter_map(Result::ok)
        .collect())
}

/// Packets and bytes the source policy of published port `key` dropped.
pub fn port_denied(bpf: &Ebpf, key: &PortKey) -> Result<Counter, DataplaneError> {
    per_port(bpf, names::PORT_DROPS, key)
}

/// `PIER_POLICY` as the kernel holds it: (prefix length, key data, value).
pub fn policy(bpf: &Ebpf) -> Result<Vec<(u32, PolicyKey, PolicyVal)>, DataplaneError> {
    let map = bpf
        .map(names::POLICY)
        .ok_or_else(|| DataplaneError::Other("map PIER_POLICY missing".into()))?;
    let m: LpmTrie<_, PolicyKey, PolicyVal> =
        LpmTrie::try_from(map).map_err(|e| err(names::POLICY, e))?;
    Ok(m.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k.prefix_len(), k.data(), v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(slot: u32) -> PortVal {
        PortVal {
            slot,
            ..PortVal::default()
        }
    }

    fn slots(m: &BTreeMap<u16, PortVal>) -> Vec<(u16, u32)> {
        m.iter().map(|(k, v)| (*k, v.slot)).collect()
    }

    #[test]
    fn a_port_keeps_its_slot_and_a_new_one_takes_the_lowest_free() {
        let had: BTreeMap<u16, PortVal> = [(10, val(0)), (20, val(2)), (30, val(1))].into();
        // 20 goes, 40 and 5 come; every value arrives with slot 0 (as
        // `Tables::new` makes them).
        let mut now: BTreeMap<u16, PortVal> =
            [(5, val(0)), (10, val(0)), (30, val(0)), (40, val(0))].into();
        let fresh = assign_slots(&mut now, &had, 8);
        // 10 and 30 keep theirs; slot 2 (20's, freed by this sync) is not
        // reused yet: 5 and 40 get 3 and 4.
        assert_eq!(slots(&now), vec![(5, 3), (10, 0), (30, 1), (40, 4)]);
        assert_eq!(fresh, vec![3, 4]);
        // The next sync may reuse 2, the lowest free.
        let had = now.clone();
        let mut next = now.clone();
        next.insert(50, val(0));
        assert_eq!(assign_slots(&mut next, &had, 8), vec![2]);
        assert_eq!(next[&50].slot, 2);
        // Nothing new: nothing to zero, every slot as it was.
        let had = next.clone();
        let mut same = next.clone();
        same.values_mut().for_each(|v| v.slot = 0);
        assert!(assign_slots(&mut same, &had, 8).is_empty());
        assert_eq!(same, next);
    }

    #[test]
    fn a_slot_claimed_twice_or_out_of_range_is_given_anew() {
        // (A map written by a failed sync, or by hand.)
        let had: BTreeMap<u16, PortVal> = [(1, val(3)), (2, val(3)), (3, val(99))].into();
        let mut now: BTreeMap<u16, PortVal> = [(1, val(0)), (2, val(0)), (3, val(0))].into();
        let fresh = assign_slots(&mut now, &had, 8);
        assert_eq!(slots(&now), vec![(1, 3), (2, 0), (3, 1)]);
        assert_eq!(fresh, vec![0, 1]);
    }

    #[test]
    fn when_every_slot_is_taken_a_just_freed_one_is_reused() {
        let had: BTreeMap<u16, PortVal> = (0..4).map(|i| (i, val(i as u32))).collect();
        // 0 and 1 go, 10 and 11 come: all four slots were held.
        let mut now: BTreeMap<u16, PortVal> =
            [(2, val(0)), (3, val(0)), (10, val(0)), (11, val(0))].into();
        let fresh = assign_slots(&mut now, &had, 4);
        assert_eq!(slots(&now), vec![(2, 2), (3, 3), (10, 0), (11, 1)]);
        assert_eq!(fresh, vec![0, 1]);
        // More ports than slots: the rest get none given (slot 0 left as is).
        let mut over: BTreeMap<u16, PortVal> = (0..5).map(|i| (i, val(0))).collect();
        let fresh = assign_slots(&mut over, &BTreeMap::new(), 4);
        assert_eq!(fresh, vec![0, 1, 2, 3]);
    }
}
