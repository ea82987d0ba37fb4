//! Map lookups shared by the TC programs and the socket hooks.
use aya_ebpf::maps::lpm_trie::Key;
use pier_common::{
    endpoint::{EndpointVal, EndpointVal4, NetworkVal},
    maps::{IF_PKTS_LEN, PORTS_F_WILD_ONLY},
    metrics::Counter,
    nat::{PORT_BITS_WORDS, PortKey, PortVal},
    policy::{
        self, POLICY_F_HOST, POLICY_F_HOST_UPLINK, POLICY_F_PORT, POLICY_F_PORT_UPLINK, PolicyKey,
        SCOPE_BITS,
    },
};

use crate::maps::{
    ENDPOINTS, HOST_ADDRS, NETWORKS, POLICY, PORT_CFG, PORT_DROPS, PORT_STATS, PORT_UNPUB, PORTS,
    SUBNETS, UPLINK, VETH_EP4,
};

/// Is `addr` one of the host's own addresses (or loopback)?
#[inline(always)]
pub fn is_host_addr(addr: u32) -> bool {
    // First octet 127, as the bytes sit in memory.
    addr.to_ne_bytes()[0] == 127 || unsafe { HOST_ADDRS.get(addr) }.is_some()
}

/// The published port `(addr, port, proto)` leads to, if any: a binding to
/// that exact address first (unless the table has none, `PORTS_F_WILD_ONLY`),
/// then one to every host address. A port no IPv4 port uses
/// (`PIER_PORT_UNPUB`) is looked up nowhere.
#[inline(always)]
pub fn published(addr: u32, port: u16, proto: u8) -> Option<(PortKey, &'static PortVal)> {
    published_at(addr, port, proto, false)
}

/// [`published`] of a packet that arrived on an uplink (`uplink`): the
/// first uplink's own address needs no `PIER_HOST_ADDRS` lookup.
#[inline(always)]
pub fn published_at(
    addr: u32,
    port: u16,
    proto: u8,
    uplink: bool,
) -> Option<(PortKey, &'static PortVal)> {
    if !maybe_published(port) {
        return None;
    }
    let mut key = PortKey {
        addr_be: addr,
        port_be: port,
        proto,
        _pad: 0,
    };
    let wild_only = PORT_CFG.get(0).is_some_and(|f| *f & PORTS_F_WILD_ONLY != 0);
    if !wild_only && let Some(v) = unsafe { PORTS.get(key) } {
        return Some((key, v));
    }
    key.addr_be = 0;
    let v = unsafe { PORTS.get(key) }?;
    let own = uplink && UPLINK.get(0).is_some_and(|u| u.addr_be == addr);
    (own || is_host_addr(addr)).then_some((key, v))
}

/// May destination port `port_be` be published? False when the agent
/// marked it as used by no IPv4 published port.
#[inline(always)]
pub fn maybe_published(port_be: u16) -> bool {
    let p = u16::from_be(port_be) as usize;
    let Some(b) = PORT_UNPUB.get(0) else {
        return true;
    };
    let i = p >> 6;
    if i >= PORT_BITS_WORDS {
        return true;
    }
    b.words[i] & (1u64 << (p & 63)) == 0
}

/// Count a packet of the published port whose counter is `slot`
/// (`PortVal::slot`: an array index, no hash lookup).
#[inline(always)]
pub fn count_port(slot: u32, len: u32) {
    if let Some(c) = PORT_STATS.get_ptr_mut(slot) {
        let c: *mut Counter = c;
        // Per-CPU value: no other writer races with us.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

/// Whether source `src`, arriving on uplink `ifindex` (0: from a container,
/// hairpin), may reach published port `key` (its `val.policy` flags say
/// which scopes to ask; 0: no policy, no lookup).
#[inline(always)]
pub fn policy_allows(key: &PortKey, val: &PortVal, src: u32, ifindex: u32) -> bool {
    let flags = val.policy;
    if flags == 0 {
        return true;
    }
    let port = PolicyKey::port(key.addr_be, key.port_be, key.proto, src);
    let host = PolicyKey::host(src);
    let mut best = policy::NO_MATCH;
    if flags & POLICY_F_PORT != 0 {
        best = policy::stronger(best, policy_match(&port));
    }
    if flags & POLICY_F_HOST != 0 {
        best = policy::stronger(best, policy_match(&host));
    }
    // Not from an uplink (hairpin): no uplink's rules apply.
    if ifindex != 0 {
        if flags & POLICY_F_PORT_UPLINK != 0 {
            best = policy::stronger(best, policy_match(&port.on_uplink(ifindex)));
        }
        if flags & POLICY_F_HOST_UPLINK != 0 {
            best = policy::stronger(best, policy_match(&host.on_uplink(ifindex)));
        }
    }
    policy::decide(flags, best)
}

#[inline(always)]
fn policy_match(k: &PolicyKey) -> pier_common::policy::PolicyVal {
    match POLICY.get(Key::new(SCOPE_BITS + 32, *k)) {
        Some(v) => *v,
        None => policy::NO_MATCH,
    }
}

/// Count a packet the source policy of published port `key` denied.
#[inline(always)]
pub fn count_port_drop(key: &PortKey, len: u32) {
    if let Some(c) = PORT_DROPS.get_ptr_mut(key) {
        let c: *mut Counter = c;
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

#[inline(always)]
pub fn endpoint(addr: u32) -> Option<EndpointVal> {
    unsafe { ENDPOINTS.get(addr) }.map(|v| v.ep)
}

/// The whole `PIER_ENDPOINTS` entry of `addr`, in the map's own memory (no
/// copy on the programs' tight stack).
#[inline(always)]
pub fn endpoint_ref(addr: u32) -> Option<&'static EndpointVal4> {
    unsafe { ENDPOINTS.get(addr) }
}

/// The endpoint of container address `addr` behind veth `ifindex`: its
/// `PIER_VETH_EP4` slot when that holds `addr` (an array load), else the
/// `PIER_ENDPOINTS` entry of `addr` (which the caller checks against
/// `ifindex` as ever).
#[inline(always)]
pub fn endpoint_at(ifindex: u32, addr: u32) -> Option<&'static EndpointVal4> {
    if ifindex < IF_PKTS_LEN
        && let Some(v) = VETH_EP4.get(ifindex)
        && v.addr_be == addr
        && v.ep.ep.ifindex == ifindex
    {
        return Some(&v.ep);
    }
    endpoint_ref(addr)
}

#[inline(always)]
pub fn network(id: u32) -> Option<NetworkVal> {
    unsafe { NETWORKS.get(id) }.copied()
}

/// The pier network whose subnet holds `addr`.
#[inline(always)]
pub fn subnet_of(addr: u32) -> Option<u32> {
    SUBNETS.get(Key::new(32, addr)).copied()
}
