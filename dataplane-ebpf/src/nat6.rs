//! IPv6 translation: published ports (DNAT from an uplink, un-DNAT of the
//! replies, hairpin), masquerade of IPv6 leaving the host (and the routed
//! flows of networks without it), and ICMPv6 errors about those flows. The
//! IPv4 design (`nat.rs`, `icmp.rs`, `programs/*`) with 16-byte addresses in
//! maps of their own (`PIER_*6`, `pier_common::nat6`).
//!
//! Fragments: the first carries the ports and is translated like a whole
//! packet; what it got (addresses, redirect target) is recorded under its
//! datagram's (addresses, identification, next header) in the LRU
//! `PIER_FRAGS6`, and later fragments get the same rewrite and redirect
//! (`frag.rs`, the IPv4 twin). A later fragment whose first is unknown is
//! never passed on half-translated.
//!
//! Checksums: IPv6 has no header checksum; TCP, UDP and ICMPv6 all cover a
//! pseudo header with both addresses, so an address rewrite is one
//! `bpf_csum_diff` of the 16 bytes and one `l4_csum_replace` with
//! `BPF_F_PSEUDO_HDR` (right with checksum offload too). Every redirect is
//! a routed hop: the hop limit is decremented; one that would reach 0 is
//! not forwarded (from a container: the host stack gets it untranslated
//! and Linux answers; towards a container: dropped, `TtlExceeded`).
use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_OK,
        bpf_fib_lookup, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{
        bpf_csum_diff, bpf_get_prandom_u32, bpf_redirect_neigh, bpf_redirect_peer,
        bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp,
    },
    macros::map,
    maps::{PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use pier_common::{
    config::{FRAG_TIMEOUT_NS, NAT_PORT_MAX, NAT_PORT_MIN, NAT_PORT_TRIES6},
    drop::DropReason,
    endpoint::{Addr6, EndpointVal},
    event::{CT_NEW, CT_RETRACKED, EV_MASQ, EV_PUBLISH, EV_RETRACK, NAT_ALLOCATED},
    frag::{FRAG_F_PEER, FragVal6},
    metrics::Counter,
    nat6::{CtVal6, FlowKey6, NatVal6, PortKey6, PortVal6, UplinkVal6},
    policy::{
        self, POLICY_F_HOST, POLICY_F_HOST_UPLINK, POLICY_F_PORT, POLICY_F_PORT_UPLINK, PolicyKey,
        PolicyVal, SCOPE_BITS,
    },
};

use crate::{
    ct, events,
    ipv6::{ICMP6_ECHO_REQUEST, IPPROTO_ICMPV6, Pkt6, endpoint6, is_host_addr6, subnet6_of},
    maps::{
        BACKENDS6, CT6, FRAGS6, NETWORKS6, POLICY, PORT_DROPS6, PORT_STATS6, PORTS6, SNAT_FWD6,
        SNAT_REV6, UPLINK6,
    },
    parse::{ETH_HLEN, Frag, IPPROTO_TCP, IPPROTO_UDP, L4, ptr_at},
    route,
};

const IP6_HOP_OFF: usize = ETH_HLEN + 7;
const IP6_SADDR_OFF: usize = ETH_HLEN + 8;
const IP6_DADDR_OFF: usize = ETH_HLEN + 24;
const ZERO6: Addr6 = [0; 4];

/// Address equality word by word (an array `==` may become a `bcmp` call,
/// which BPF has not).
#[inline(always)]
pub fn eq6(a: &Addr6, b: &Addr6) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

#[inline(always)]
fn is_zero(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0
}

// ---- lookups ----------------------------------------------------------

/// The IPv6 published port `(addr, port, proto)` leads to: a binding to
/// that address first, then one to every host IPv6 address.
#[inline(always)]
pub fn published6(addr: &Addr6, port: u16, proto: u8) -> Option<(PortKey6, PortVal6)> {
    let mut key = PortKey6 {
        addr: *addr,
        port_be: port,
        proto,
        _pad: 0,
    };
    if let Some(v) = unsafe { PORTS6.get(&key) } {
        return Some((key, *v));
    }
    if !is_host_addr6(addr) {
        return None;
    }
    key.addr = ZERO6;
    unsafe { PORTS6.get(&key) }.map(|v| (key, *v))
}

/// The source policy for an IPv6 client: every rule is IPv4, so none
/// matches; a port some allow applies to denies it.
#[inline(never)]
fn policy_allows6(key: &PortKey6, port: &PortVal6, src: &Addr6, ifindex: u32) -> bool {
    let flags = port.flags();
    if flags == 0 {
        return true;
    }
    // One key in a per-CPU slot, rewritten for each scope: the IPv6 paths'
    // stack has no room for four 32-byte keys.
    let Some(k) = POLKEY6.get_ptr_mut(0) else {
        return false;
    };
    let s: [u8; 16] = unsafe { core::mem::transmute(*src) };
    let mut best = policy::NO_MATCH;
    unsafe {
        (*k).prefix_len = SCOPE_BITS + 128;
        (*k).data = PolicyKey::port6(port.scope(), key.port_be, key.proto, s);
        if flags & POLICY_F_PORT != 0 {
            best = policy::stronger(best, match6(&*k));
        }
        if ifindex != 0 && flags & POLICY_F_PORT_UPLINK != 0 {
            (*k).data.ifindex = ifindex;
            best = policy::stronger(best, match6(&*k));
        }
        (*k).data = PolicyKey::host6(s);
        if flags & POLICY_F_HOST != 0 {
            best = policy::stronger(best, match6(&*k));
        }
        if ifindex != 0 && flags & POLICY_F_HOST_UPLINK != 0 {
            (*k).data.ifindex = ifindex;
            best = policy::stronger(best, match6(&*k));
        }
    }
    policy::decide(flags, best)
}

#[inline(always)]
fn match6(k: &Key<PolicyKey>) -> PolicyVal {
    match POLICY.get(k) {
        Some(v) => *v,
        None => policy::NO_MATCH,
    }
}

#[map(name = "PIER_POLKEY6")]
static POLKEY6: PerCpuArray<Key<PolicyKey>> = PerCpuArray::with_max_entries(1, 0);

/// Count a packet the source policy of IPv6 published port `key` denied.
#[inline(always)]
fn count_port_drop6(key: &PortKey6, len: u32) {
    if let Some(c) = PORT_DROPS6.get_ptr_mut(key) {
        let c: *mut Counter = c;
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

#[inline(always)]
fn count_port6(slot: u32, len: u32) {
    if let Some(c) = PORT_STATS6.get_ptr_mut(slot) {
        let c: *mut Counter = c;
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

#[inline(always)]
fn uplink6() -> Option<UplinkVal6> {
    match UPLINK6.get(0) {
        Some(u) if u.ifindex != 0 && !is_zero(&u.addr) => Some(*u),
        _ => None,
    }
}

// ---- rewrites -----------------------------------------------------------

/// The one's-complement difference of two addresses, for the pseudo header.
#[inline(always)]
fn diff16(old: &Addr6, new: &Addr6) -> Result<u64, DropReason> {
    let mut o = *old;
    let mut n = *new;
    let d = unsafe { bpf_csum_diff(o.as_mut_ptr(), 16, n.as_mut_ptr(), 16, 0) };
    if d < 0 {
        return Err(DropReason::Helper);
    }
    Ok(d as u64 & 0xffff_ffff)
}

/// Offset of the transport checksum (TCP, UDP, ICMPv6), when the packet
/// carries a transport header pier parsed.
#[inline(always)]
fn l4_csum_off(pkt: &Pkt6) -> Option<usize> {
    if pkt.l4 == L4::None || pkt.frag == Frag::Later {
        return None;
    }
    let off = pkt.l4_off & 0x1ff;
    match pkt.proto {
        IPPROTO_TCP => Some(off + 16),
        IPPROTO_UDP => Some(off + 6),
        IPPROTO_ICMPV6 => Some(off + 2),
        _ => None,
    }
}

#[inline(always)]
fn mangled0(pkt: &Pkt6) -> u64 {
    if pkt.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    }
}

#[inline(always)]
fn addr6(
    ctx: &TcContext,
    pkt: &Pkt6,
    off: usize,
    old: &Addr6,
    new: &Addr6,
) -> Result<(), DropReason> {
    if eq6(old, new) {
        return Ok(());
    }
    if let Some(csum) = l4_csum_off(pkt) {
        let d = diff16(old, new)?;
        ctx.l4_csum_replace(csum, 0, d, BPF_F_PSEUDO_HDR as u64 | mangled0(pkt))
            .map_err(|_| DropReason::Helper)?;
    }
    ctx.store(off, new, 0).map_err(|_| DropReason::Helper)
}

#[inline(always)]
fn port6(ctx: &TcContext, pkt: &Pkt6, off: usize, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let Some(csum) = l4_csum_off(pkt) else {
        return Ok(());
    };
    ctx.l4_csum_replace(csum, old as u64, new as u64, 2 | mangled0(pkt))
        .map_err(|_| DropReason::Helper)?;
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)
}

/// Rewrite the destination address and port (ICMPv6 echo reply: its id).
#[inline(always)]
pub fn dnat6(ctx: &TcContext, pkt: &mut Pkt6, daddr: &Addr6, dport: u16) -> Result<(), DropReason> {
    let old = pkt.daddr;
    addr6(ctx, pkt, IP6_DADDR_OFF, &old, daddr)?;
    pkt.daddr = *daddr;
    let l4 = pkt.l4_off & 0x1ff;
    let off = match pkt.l4 {
        L4::Ports => l4 + 2,
        L4::EchoReply => l4 + 4,
        _ => return Ok(()),
    };
    port6(ctx, pkt, off, pkt.dport, dport)?;
    pkt.dport = dport;
    Ok(())
}

/// Rewrite the source address and port (ICMPv6 echo request: its id).
#[inline(always)]
pub fn snat6(ctx: &TcContext, pkt: &mut Pkt6, saddr: &Addr6, sport: u16) -> Result<(), DropReason> {
    let old = pkt.saddr;
    addr6(ctx, pkt, IP6_SADDR_OFF, &old, saddr)?;
    pkt.saddr = *saddr;
    let l4 = pkt.l4_off & 0x1ff;
    let off = match pkt.l4 {
        L4::Ports => l4,
        L4::EchoRequest => l4 + 4,
        _ => return Ok(()),
    };
    port6(ctx, pkt, off, pkt.sport, sport)?;
    pkt.sport = sport;
    Ok(())
}

// ---- exits --------------------------------------------------------------

/// A routed hop: the hop limit goes down by one (no header checksum).
#[inline(always)]
fn hop(ctx: &TcContext, pkt: &mut Pkt6) -> Result<(), DropReason> {
    if pkt.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let h = pkt.hop_limit - 1;
    ctx.store(IP6_HOP_OFF, &h, 0)
        .map_err(|_| DropReason::Helper)?;
    pkt.hop_limit = h;
    Ok(())
}

#[inline(always)]
fn to_container6(ctx: &TcContext, pkt: &mut Pkt6, ep: &EndpointVal) -> Result<i32, DropReason> {
    hop(ctx, pkt)?;
    ctx.store(0, &ep.mac, 0).map_err(|_| DropReason::Helper)?;
    ctx.store(6, &ep.bridge_mac, 0)
        .map_err(|_| DropReason::Helper)?;
    if pkt.frag == Frag::First {
        frag_remember(pkt, ep.ifindex, FRAG_F_PEER, &ep.mac, &ep.bridge_mac);
    }
    Ok(unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32)
}

#[inline(always)]
fn to_uplink6(ctx: &TcContext, pkt: &mut Pkt6, ifindex: u32) -> Result<i32, DropReason> {
    hop(ctx, pkt)?;
    if pkt.frag == Frag::First {
        frag_remember(pkt, ifindex, 0, &[0; 6], &[0; 6]);
    }
    Ok(unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

// ---- fragments ------------------------------------------------------------

/// A first fragment arrived: forget what an older datagram with the same
/// key got (it is translated afresh, or not at all).
#[inline(always)]
pub fn frag_first_seen(pkt: &Pkt6) {
    if pkt.frag == Frag::First {
        let _ = FRAGS6.remove(&pkt.frag_key);
    }
}

/// Record where a translated first fragment went (`flags` `FRAG_F_PEER`:
/// into the container on `ifindex`, with those MACs; else out of uplink
/// `ifindex`). The value is built in a per-CPU slot, not on the stack
/// (inlined: a frame of its own would stack on the deepest callers').
#[inline(always)]
fn frag_remember(pkt: &Pkt6, ifindex: u32, flags: u32, mac: &[u8; 6], bridge_mac: &[u8; 6]) {
    let Some(v) = FRAGVAL6.get_ptr_mut(0) else {
        return;
    };
    let v = unsafe { &mut *v };
    v.saddr = pkt.saddr;
    v.daddr = pkt.daddr;
    v.ifindex = ifindex;
    v.flags = flags;
    v.mac = *mac;
    v.bridge_mac = *bridge_mac;
    v._pad = 0;
    v.expires_ns = ct::now() + FRAG_TIMEOUT_NS;
    let _ = FRAGS6.insert(&pkt.frag_key, v, 0);
}

#[map(name = "PIER_FRAGVAL6")]
static FRAGVAL6: PerCpuArray<FragVal6> = PerCpuArray::with_max_entries(1, 0);

/// A later fragment: if its first was translated, the same addresses and
/// redirect. `Ok(None)`: its first is unknown (not seen, not translated, or
/// forgotten); the caller decides.
#[inline(never)]
pub fn frag_follow(ctx: &TcContext, pkt: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let Some(v) = (unsafe { FRAGS6.get(&pkt.frag_key) }) else {
        return Ok(None);
    };
    if v.expires_ns < ct::now() {
        return Ok(None);
    }
    let (saddr, daddr, ifindex, flags) = (v.saddr, v.daddr, v.ifindex, v.flags);
    // No transport header here: the addresses alone (no checksum covers
    // them in a later fragment).
    snat6(ctx, pkt, &saddr, 0)?;
    dnat6(ctx, pkt, &daddr, 0)?;
    if flags & FRAG_F_PEER != 0 {
        let ep = EndpointVal {
            ifindex,
            network_id: 0,
            mac: v.mac,
            bridge_mac: v.bridge_mac,
        };
        return to_container6(ctx, pkt, &ep).map(Some);
    }
    to_uplink6(ctx, pkt, ifindex).map(Some)
}

// ---- conntrack ----------------------------------------------------------

/// Create or refresh the entry of a published IPv6 connection, keyed by its
/// reply (backend → client). A new one is counted and told to a monitor.
#[inline(always)]
fn track6(
    ctx: &TcContext,
    pkt: &Pkt6,
    backend: &Addr6,
    backend_port: u16,
    client_ifindex: u32,
    uplink: u32,
    client: &Addr6,
) {
    let key = FlowKey6 {
        saddr: *backend,
        daddr: pkt.saddr,
        sport_be: backend_port,
        dport_be: pkt.sport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let now = ct::now();
    if let Some(v) = CT6.get_ptr_mut(&key) {
        unsafe {
            if eq6(&(*v).orig_daddr, &pkt.daddr) && (*v).orig_dport_be == pkt.dport {
                (*v).flags = ct::next_flags_of((*v).flags, pkt.proto, pkt.tcp_flags, false);
                (*v).expires_ns = ct::expiry_of(now, pkt.proto, (*v).flags);
                return;
            }
        }
    }
    let flags = ct::next_flags_of(0, pkt.proto, pkt.tcp_flags, false);
    let val = CtVal6 {
        orig_daddr: pkt.daddr,
        orig_dport_be: pkt.dport,
        _pad: 0,
        client_ifindex,
        uplink_ifindex: uplink,
        flags,
        expires_ns: ct::expiry_of(now, pkt.proto, flags),
        client: *client,
    };
    let _ = CT6.insert(&key, &val, 0);
    events::kcount(CT_NEW);
    events::trace6(ctx, EV_PUBLISH, backend, backend_port);
}

// ---- pier_uplink_in -----------------------------------------------------

/// From an uplink, with ports: a reply to a masqueraded (or routed) flow,
/// or a packet to an IPv6 published port. `Ok(None)`: neither.
#[inline(never)]
pub fn uplink_ports(ctx: &TcContext, pkt: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(v) = SNAT_REV6.get_ptr_mut(&pkt.flow()) {
        let now = ct::now();
        let (addr, port) = unsafe {
            (*v).flags = ct::next_flags_of((*v).flags, pkt.proto, pkt.tcp_flags, true);
            (*v).expires_ns = ct::expiry_of(now, pkt.proto, (*v).flags);
            ((*v).addr, (*v).port_be)
        };
        let ep = endpoint6(&addr).ok_or(DropReason::NoBackend)?;
        dnat6(ctx, pkt, &addr, port)?;
        return to_container6(ctx, pkt, &ep).map(Some);
    }
    let Some((key, port)) = published6(&pkt.daddr, pkt.dport, pkt.proto) else {
        return Ok(None);
    };
    if !policy_allows6(&key, &port, &pkt.saddr, ifindex) {
        count_port_drop6(&key, ctx.len());
        return Err(DropReason::PolicyDenied);
    }
    let ep = endpoint6(&port.backend).ok_or(DropReason::NoBackend)?;
    track6(
        ctx,
        pkt,
        &port.backend,
        port.backend_port_be,
        0,
        ifindex,
        &ZERO6,
    );
    count_port6(port.slot, ctx.len());
    dnat6(ctx, pkt, &port.backend, port.backend_port_be)?;
    to_container6(ctx, pkt, &ep).map(Some)
}

// ---- pier_veth_in -------------------------------------------------------

/// From a container (source checked): a reply of a published IPv6
/// connection goes back as the published address (to the uplink, or into
/// the hairpin client). `Ok(None)`: not one.
#[inline(never)]
pub fn reply(ctx: &TcContext, pkt: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let Some(v) = CT6.get_ptr_mut(&pkt.flow()) else {
        return Ok(None);
    };
    if pkt.hop_limit <= 1 {
        // Routed untranslated, Linux answers (time exceeded).
        return Ok(Some(TC_ACT_OK));
    }
    let now = ct::now();
    let e = unsafe {
        (*v).flags = ct::next_flags_of((*v).flags, pkt.proto, pkt.tcp_flags, true);
        (*v).expires_ns = ct::expiry_of(now, pkt.proto, (*v).flags);
        *v
    };
    snat6(ctx, pkt, &e.orig_daddr, e.orig_dport_be)?;
    if !is_zero(&e.client) {
        let dport = pkt.dport;
        dnat6(ctx, pkt, &e.client, dport)?;
    }
    if e.client_ifindex != 0 {
        let client = endpoint6(&pkt.daddr).ok_or(DropReason::NoBackend)?;
        return to_container6(ctx, pkt, &client).map(Some);
    }
    to_uplink6(ctx, pkt, e.uplink_ifindex).map(Some)
}

/// A container dialling an IPv6 published port on a host address (its own
/// network's gateway too): DNAT into the backend; on its own port the
/// source becomes the backend network's gateway. `Ok(None)`: not published.
#[inline(never)]
pub fn hairpin(ctx: &TcContext, pkt: &mut Pkt6, ifindex: u32) -> Result<Option<i32>, DropReason> {
    let Some((key, port)) = published6(&pkt.daddr, pkt.dport, pkt.proto) else {
        return Ok(None);
    };
    if !policy_allows6(&key, &port, &pkt.saddr, 0) {
        count_port_drop6(&key, ctx.len());
        return Err(DropReason::PolicyDenied);
    }
    let backend = endpoint6(&port.backend).ok_or(DropReason::NoBackend)?;
    count_port6(port.slot, ctx.len());
    if eq6(&port.backend, &pkt.saddr) {
        let gw = unsafe { NETWORKS6.get(&backend.network_id) }
            .copied()
            .ok_or(DropReason::NoBackend)?;
        let client = pkt.saddr;
        let sport = pkt.sport;
        snat6(ctx, pkt, &gw, sport)?;
        track6(
            ctx,
            pkt,
            &port.backend,
            port.backend_port_be,
            ifindex,
            0,
            &client,
        );
    } else {
        track6(
            ctx,
            pkt,
            &port.backend,
            port.backend_port_be,
            ifindex,
            0,
            &ZERO6,
        );
    }
    dnat6(ctx, pkt, &port.backend, port.backend_port_be)?;
    to_container6(ctx, pkt, &backend).map(Some)
}

/// Leaving the host from a container: a published backend's reply whose
/// entry is gone is re-tracked; with `masq` the source becomes the IPv6
/// uplink address and an allocated port (none: `NatUnsupported`, the
/// container's own address never leaves); without, the flow is recorded
/// unchanged and routed.
#[inline(always)]
pub fn leaving(ctx: &TcContext, pkt: &mut Pkt6, masq: bool) -> Result<i32, DropReason> {
    if !pkt.has_ports() {
        if masq && pkt.l4 == L4::Error {
            return Err(DropReason::IcmpForged);
        }
        if masq && pkt.frag == Frag::Later {
            return Err(DropReason::FragNoFirst);
        }
        if masq {
            return Err(DropReason::NatUnsupported);
        }
        return Ok(TC_ACT_OK);
    }
    if let Some(action) = backend_reply(ctx, pkt)? {
        return Ok(action);
    }
    if !masq {
        track_routed6(pkt)?;
        return Ok(TC_ACT_OK);
    }
    if pkt.l4 == L4::EchoReply {
        return Err(DropReason::NatUnsupported);
    }
    // The caller runs [`masquerade6`] from the program's top frame.
    Ok(MASQUERADE)
}

/// Not a TC action: "masquerade the packet parsed in the per-CPU slot"
/// (`ipv6::masquerade_entry`), so the allocator's frame is not stacked on
/// the checks' (the combined stack limit is 512 bytes).
pub const MASQUERADE: i32 = 0x4d41_5351;

/// A published backend's reply whose conntrack entry is gone (LRU, idle
/// expiry, flush): it still leaves as the published port, re-tracked.
#[inline(never)]
fn backend_reply(ctx: &TcContext, pkt: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let Some(up) = uplink6() else {
        return Ok(None);
    };
    let key = PortKey6 {
        addr: pkt.saddr,
        port_be: pkt.sport,
        proto: pkt.proto,
        _pad: 0,
    };
    let Some(host) = unsafe { BACKENDS6.get(&key) }.copied() else {
        return Ok(None);
    };
    if pkt.hop_limit <= 1 {
        return Ok(Some(TC_ACT_OK));
    }
    let addr = if is_zero(&host.addr) {
        up.addr
    } else {
        host.addr
    };
    retrack6(pkt, &addr, host.port_be, up.ifindex);
    events::kcount(CT_RETRACKED);
    events::trace6(ctx, EV_RETRACK, &addr, host.port_be);
    snat6(ctx, pkt, &addr, host.port_be)?;
    to_uplink6(ctx, pkt, up.ifindex).map(Some)
}

/// Masquerade: the source becomes the IPv6 uplink address and an allocated
/// port. Without an IPv6 uplink address: `NatUnsupported` (the container's
/// own address never leaves a masquerading network).
#[inline(always)]
pub fn masquerade6(ctx: &TcContext, pkt: &mut Pkt6) -> Result<i32, DropReason> {
    if uplink6().is_none() {
        return Err(DropReason::NatUnsupported);
    }
    if pkt.hop_limit <= 1 {
        return Ok(TC_ACT_OK);
    }
    let sc = SCRATCH6.get_ptr_mut(0).ok_or(DropReason::Helper)?;
    let sc = unsafe { &mut *sc };
    sc.fkey = pkt.flow();
    let (addr, port, ifindex) = match SNAT_FWD6.get_ptr_mut(&sc.fkey) {
        Some(v) => unsafe {
            ct::refresh(
                &raw mut (*v).flags,
                &raw mut (*v).expires_ns,
                pkt.proto,
                pkt.tcp_flags,
                false,
            );
            ((*v).addr, (*v).port_be, (*v).ifindex)
        },
        None => {
            // The route's uplink and source, once per flow.
            let up = route::uplink6_for(ctx, pkt, &mut sc.fib).ok_or(DropReason::NatUnsupported)?;
            let nat = allocate6(ctx, sc, &up, pkt)?;
            events::kcount(NAT_ALLOCATED);
            events::trace6(ctx, EV_MASQ, &nat.addr, nat.port_be);
            (nat.addr, nat.port_be, up.ifindex)
        }
    };
    // An entry from before the per-flow uplink: the first one.
    let ifindex = if ifindex != 0 {
        ifindex
    } else {
        uplink6().map_or(0, |u| u.ifindex)
    };
    snat6(ctx, pkt, &addr, port)?;
    to_uplink6(ctx, pkt, ifindex)
}

#[inline(always)]
fn retrack6(pkt: &Pkt6, host_addr: &Addr6, host_port: u16, uplink: u32) {
    let flags = ct::next_flags_of(0, pkt.proto, pkt.tcp_flags, true);
    let val = CtVal6 {
        orig_daddr: *host_addr,
        orig_dport_be: host_port,
        _pad: 0,
        client_ifindex: 0,
        uplink_ifindex: uplink,
        flags,
        expires_ns: ct::expiry_of(ct::now(), pkt.proto, flags),
        client: ZERO6,
    };
    let _ = CT6.insert(&pkt.flow(), &val, 0);
}

/// The IPv6 twin of `veth_in::track_routed`: a known flow's entry is brought
/// up to date in place, a new one that finds the tables full is dropped
/// (`NatExhausted`).
#[inline(always)]
fn track_routed6(pkt: &Pkt6) -> Result<(), DropReason> {
    let fkey = pkt.flow();
    if let Some(v) = SNAT_FWD6.get_ptr_mut(&fkey) {
        unsafe {
            ct::refresh(
                &raw mut (*v).flags,
                &raw mut (*v).expires_ns,
                pkt.proto,
                pkt.tcp_flags,
                false,
            )
        };
        return Ok(());
    }
    let flags = ct::next_flags_of(0, pkt.proto, pkt.tcp_flags, false);
    let val = NatVal6 {
        addr: pkt.saddr,
        port_be: pkt.sport,
        _pad: 0,
        flags,
        expires_ns: ct::expiry_of(ct::now(), pkt.proto, flags),
        ifindex: 0,
        _pad2: 0,
    };
    let rkey = FlowKey6 {
        saddr: pkt.daddr,
        daddr: pkt.saddr,
        sport_be: pkt.dport,
        dport_be: pkt.sport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    SNAT_REV6
        .insert(&rkey, &val, 0)
        .map_err(|_| DropReason::NatExhausted)?;
    if SNAT_FWD6.insert(&fkey, &val, 0).is_err() {
        let _ = SNAT_REV6.remove(&rkey);
        return Err(DropReason::NatExhausted);
    }
    Ok(())
}

/// The allocator's temporaries: keys, values and the socket tuple live in
/// a per-CPU slot, not on the stack (the IPv6 path's frames are deep).
#[repr(C)]
pub struct Scratch6 {
    fkey: FlowKey6,
    rkey: FlowKey6,
    rval: NatVal6,
    fval: NatVal6,
    tuple: bpf_sock_tuple,
    fib: bpf_fib_lookup,
}

#[map(name = "PIER_SCRATCH6")]
static SCRATCH6: PerCpuArray<Scratch6> = PerCpuArray::with_max_entries(1, 0);

/// `bpf_map_update_elem` with `BPF_NOEXIST` on a key present.
const EEXIST: i32 = 17;

/// The IPv6 twin of `veth_in::allocate`: the flow's own source port when
/// free, else random ones; free = the reverse entry claimed with
/// `BPF_NOEXIST`, not published on the uplink address, no host socket
/// owning the reply's tuple.
#[inline(always)]
fn allocate6(
    ctx: &TcContext,
    sc: &mut Scratch6,
    up: &UplinkVal6,
    pkt: &Pkt6,
) -> Result<NatVal6, DropReason> {
    const RANGE: u32 = (NAT_PORT_MAX - NAT_PORT_MIN) as u32 + 1;
    let now = ct::now();
    let flags = ct::next_flags_of(0, pkt.proto, pkt.tcp_flags, false);
    let expires_ns = ct::expiry_of(now, pkt.proto, flags);
    let own = u16::from_be(sc.fkey.sport_be);
    sc.rval = NatVal6 {
        addr: sc.fkey.saddr,
        port_be: sc.fkey.sport_be,
        _pad: 0,
        flags,
        expires_ns,
        ifindex: 0,
        _pad2: 0,
    };
    for i in 0..=NAT_PORT_TRIES6 {
        let port = if i == 0 {
            if own < NAT_PORT_MIN || pkt.l4 != L4::Ports {
                continue;
            }
            own
        } else {
            // A fresh random port each try: consecutive ones from one
            // random start fail together inside a run of taken ports (a
            // container's own ephemeral range is one: at 50 000 flows from
            // three containers, 2 500 SYNs found 64 taken in a row).
            (NAT_PORT_MIN as u32 + (unsafe { bpf_get_prandom_u32() } % RANGE)) as u16
        };
        let port_be = port.to_be();
        if pkt.l4 == L4::Ports
            && (published6(&up.addr, port_be, pkt.proto).is_some()
                || host_socket6(ctx, sc, &up.addr, port_be))
        {
            continue;
        }
        sc.rkey = FlowKey6 {
            saddr: sc.fkey.daddr,
            daddr: up.addr,
            sport_be: sc.fkey.dport_be,
            dport_be: port_be,
            proto: pkt.proto,
            _pad: [0; 3],
        };
        match SNAT_REV6.insert(&sc.rkey, &sc.rval, BPF_NOEXIST as u64) {
            Ok(()) => {}
            // Another flow's port towards this peer: the next one.
            Err(e) if e == -EEXIST => continue,
            // Full (or out of memory): fails the flow, evicts nothing.
            Err(_) => return Err(DropReason::NatExhausted),
        }
        sc.fval = NatVal6 {
            addr: up.addr,
            port_be,
            _pad: 0,
            flags,
            expires_ns,
            ifindex: up.ifindex,
            _pad2: 0,
        };
        if SNAT_FWD6.insert(&sc.fkey, &sc.fval, 0).is_err() {
            let _ = SNAT_REV6.remove(&sc.rkey);
            return Err(DropReason::NatExhausted);
        }
        return Ok(sc.fval);
    }
    Err(DropReason::NatExhausted)
}

/// Does a host socket own the tuple a reply to the masqueraded flow would
/// carry (peer → uplink address:`port_be`)? Listening sockets count.
#[inline(always)]
fn host_socket6(ctx: &TcContext, sc: &mut Scratch6, addr: &Addr6, port_be: u16) -> bool {
    sc.tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: sc.fkey.daddr,
                daddr: *addr,
                sport: sc.fkey.dport_be,
                dport: port_be,
            },
        },
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>() as u32;
    let skb = ctx.skb.skb as *mut core::ffi::c_void;
    let netns = BPF_F_CURRENT_NETNS as u64;
    let sk = unsafe {
        if sc.fkey.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(skb, &mut sc.tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(skb, &mut sc.tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk as *mut core::ffi::c_void) };
    true
}

// ---- ICMPv6 errors --------------------------------------------------------

#[repr(C)]
struct Ipv6Quote {
    vtc_flow: [u8; 4],
    payload_len_be: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: Addr6,
    daddr: Addr6,
}

/// The packet an ICMPv6 error quotes (its IPv6 header without extension
/// headers, and the first 8 bytes of TCP, UDP or an echo request).
#[derive(Clone, Copy)]
struct Inner6 {
    ip_off: usize,
    l4_off: usize,
    saddr: Addr6,
    daddr: Addr6,
    sport: u16,
    dport: u16,
    proto: u8,
    l4: L4,
    /// The quoted transport checksum is there (TCP: whole field; UDP and
    /// echo: always), so it is kept right across rewrites.
    l4_csum: bool,
}

impl Inner6 {
    #[inline(always)]
    fn reply_flow(&self) -> FlowKey6 {
        FlowKey6 {
            saddr: self.daddr,
            daddr: self.saddr,
            sport_be: self.dport,
            dport_be: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    fn l4_csum_off(&self) -> usize {
        match self.proto {
            IPPROTO_TCP => self.l4_off + 16,
            IPPROTO_UDP => self.l4_off + 6,
            _ => self.l4_off + 2,
        }
    }
}

#[inline(always)]
fn inner6(ctx: &TcContext, pkt: &Pkt6) -> Option<Inner6> {
    if pkt.frag != Frag::None {
        return None;
    }
    let ip_off = (pkt.l4_off & 0x1ff) + 8;
    let ip = unsafe { &*ptr_at::<Ipv6Quote>(ctx, ip_off)? };
    if ip.vtc_flow[0] >> 4 != 6 {
        return None;
    }
    let _ = (ip.payload_len_be, ip.hop_limit);
    let l4_off = ip_off + 40;
    let h = unsafe { &*ptr_at::<[u8; 8]>(ctx, l4_off)? };
    let mut inner = Inner6 {
        ip_off,
        l4_off,
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: u16::from_ne_bytes([h[0], h[1]]),
        dport: u16::from_ne_bytes([h[2], h[3]]),
        proto: ip.nexthdr,
        l4: L4::Ports,
        l4_csum: true,
    };
    match ip.nexthdr {
        IPPROTO_TCP => inner.l4_csum = ptr_at::<[u8; 18]>(ctx, l4_off).is_some(),
        IPPROTO_UDP => {}
        IPPROTO_ICMPV6 if h[0] == ICMP6_ECHO_REQUEST => {
            inner.sport = u16::from_ne_bytes([h[4], h[5]]);
            inner.dport = 0;
            inner.l4 = L4::EchoRequest;
        }
        _ => return None,
    }
    Some(inner)
}

/// An ICMPv6 error arriving on an uplink, about a masqueraded/routed flow
/// or a published server's reply. `Ok(None)`: not pier's.
#[inline(never)]
pub fn icmp_from_uplink(ctx: &TcContext, pkt: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let Some(mut inner) = inner6(ctx, pkt) else {
        return Ok(None);
    };
    if !eq6(&inner.saddr, &pkt.daddr) {
        return forged_if_for_container(pkt);
    }
    if let Some(v) = unsafe { SNAT_REV6.get(&inner.reply_flow()) }.copied() {
        let ep = endpoint6(&v.addr).ok_or(DropReason::NoBackend)?;
        to_sender(ctx, pkt, &mut inner, &v.addr, v.port_be)?;
        return to_container6(ctx, pkt, &ep).map(Some);
    }
    if let Some((_, port)) = published6(&inner.saddr, inner.sport, inner.proto) {
        return to_backend(ctx, pkt, &mut inner, &port, 0).map(Some);
    }
    forged_if_for_container(pkt)
}

/// An ICMPv6 error from a container (source checked) about a published
/// connection's packet it received, a masqueraded flow's reply, or (a
/// hairpin client) a published server's reply. `Ok(None)`: none of those.
#[inline(never)]
pub fn icmp_from_container(
    ctx: &TcContext,
    pkt: &mut Pkt6,
    src_ifindex: u32,
) -> Result<Option<i32>, DropReason> {
    let Some(mut inner) = inner6(ctx, pkt) else {
        return Ok(None);
    };
    if eq6(&inner.daddr, &pkt.saddr) {
        if let Some(e) = unsafe { CT6.get(&inner.reply_flow()) }.copied() {
            let sport = inner.sport;
            from_receiver(ctx, pkt, &mut inner, &e.orig_daddr, e.orig_dport_be)?;
            if !is_zero(&e.client) {
                to_sender(ctx, pkt, &mut inner, &e.client, sport)?;
            }
            if e.client_ifindex != 0 {
                let client = endpoint6(&pkt.daddr).ok_or(DropReason::NoBackend)?;
                return to_container6(ctx, pkt, &client).map(Some);
            }
            return to_uplink6(ctx, pkt, e.uplink_ifindex).map(Some);
        }
        if let Some(v) = unsafe { SNAT_FWD6.get(&inner.reply_flow()) }.copied()
            && !eq6(&v.addr, &pkt.saddr)
            && let Some(up) = uplink6()
        {
            from_receiver(ctx, pkt, &mut inner, &v.addr, v.port_be)?;
            // Out of the uplink the flow leaves by.
            let ifindex = if v.ifindex != 0 {
                v.ifindex
            } else {
                up.ifindex
            };
            return to_uplink6(ctx, pkt, ifindex).map(Some);
        }
    }
    if eq6(&inner.saddr, &pkt.daddr)
        && is_host_addr6(&pkt.daddr)
        && let Some((_, port)) = published6(&inner.saddr, inner.sport, inner.proto)
    {
        return to_backend(ctx, pkt, &mut inner, &port, src_ifindex).map(Some);
    }
    Ok(None)
}

#[inline(always)]
fn to_backend(
    ctx: &TcContext,
    pkt: &mut Pkt6,
    inner: &mut Inner6,
    port: &PortVal6,
    client_ifindex: u32,
) -> Result<i32, DropReason> {
    let key = FlowKey6 {
        saddr: port.backend,
        daddr: inner.daddr,
        sport_be: port.backend_port_be,
        dport_be: inner.dport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    let Some(e) = unsafe { CT6.get(&key) }.copied() else {
        return Err(DropReason::IcmpForged);
    };
    if !eq6(&e.orig_daddr, &inner.saddr)
        || e.orig_dport_be != inner.sport
        || e.client_ifindex != client_ifindex
        || !is_zero(&e.client)
    {
        return Err(DropReason::IcmpForged);
    }
    let ep = endpoint6(&port.backend).ok_or(DropReason::NoBackend)?;
    to_sender(ctx, pkt, inner, &port.backend, port.backend_port_be)?;
    to_container6(ctx, pkt, &ep)
}

#[inline(always)]
fn forged_if_for_container(pkt: &Pkt6) -> Result<Option<i32>, DropReason> {
    if subnet6_of(&pkt.daddr).is_some() {
        return Err(DropReason::IcmpForged);
    }
    Ok(None)
}

/// Back to the sender of the quoted packet, which sent it as `addr:port`.
#[inline(always)]
fn to_sender(
    ctx: &TcContext,
    pkt: &mut Pkt6,
    inner: &mut Inner6,
    addr: &Addr6,
    port: u16,
) -> Result<(), DropReason> {
    let old = pkt.daddr;
    addr6(ctx, pkt, IP6_DADDR_OFF, &old, addr)?;
    pkt.daddr = *addr;
    let old = inner.saddr;
    inner_addr(ctx, pkt, inner, inner.ip_off + 8, &old, addr)?;
    inner.saddr = *addr;
    let off = match inner.l4 {
        L4::EchoRequest => inner.l4_off + 4,
        _ => inner.l4_off,
    };
    inner_port(ctx, pkt, inner, off, inner.sport, port)?;
    inner.sport = port;
    Ok(())
}

/// From the receiver of the quoted packet, which got it from `addr:port`.
#[inline(always)]
fn from_receiver(
    ctx: &TcContext,
    pkt: &mut Pkt6,
    inner: &mut Inner6,
    addr: &Addr6,
    port: u16,
) -> Result<(), DropReason> {
    let old = pkt.saddr;
    addr6(ctx, pkt, IP6_SADDR_OFF, &old, addr)?;
    pkt.saddr = *addr;
    let old = inner.daddr;
    inner_addr(ctx, pkt, inner, inner.ip_off + 24, &old, addr)?;
    inner.daddr = *addr;
    if inner.l4 == L4::Ports {
        inner_port(ctx, pkt, inner, inner.l4_off + 2, inner.dport, port)?;
        inner.dport = port;
    }
    Ok(())
}

/// A quoted address: the quoted transport checksum (its pseudo header)
/// follows it, and the ICMPv6 checksum follows both.
#[inline(always)]
fn inner_addr(
    ctx: &TcContext,
    pkt: &Pkt6,
    inner: &Inner6,
    off: usize,
    old: &Addr6,
    new: &Addr6,
) -> Result<(), DropReason> {
    if eq6(old, new) {
        return Ok(());
    }
    let d = diff16(old, new)?;
    ctx.store(off, new, 0).map_err(|_| DropReason::Helper)?;
    icmp_csum(ctx, pkt, 0, d, 0)?;
    if inner.l4_csum {
        quoted_csum(
            ctx,
            pkt,
            inner.l4_csum_off(),
            0,
            d,
            0,
            inner.proto == IPPROTO_UDP,
        )?;
    }
    Ok(())
}

#[inline(always)]
fn inner_port(
    ctx: &TcContext,
    pkt: &Pkt6,
    inner: &Inner6,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)?;
    icmp_csum(ctx, pkt, old as u64, new as u64, 2)?;
    if inner.l4_csum {
        quoted_csum(
            ctx,
            pkt,
            inner.l4_csum_off(),
            old as u64,
            new as u64,
            2,
            inner.proto == IPPROTO_UDP,
        )?;
    }
    Ok(())
}

/// Update the quoted checksum at `field` (plain arithmetic: `size` 0 means
/// `new` is a difference), and the ICMPv6 checksum for the field's change.
#[inline(always)]
fn quoted_csum(
    ctx: &TcContext,
    pkt: &Pkt6,
    field: usize,
    old: u64,
    new: u64,
    size: u64,
    udp: bool,
) -> Result<(), DropReason> {
    let before: u16 = ctx.load(field).map_err(|_| DropReason::Helper)?;
    ctx.l3_csum_replace(field, old, new, size)
        .map_err(|_| DropReason::Helper)?;
    let mut after: u16 = ctx.load(field).map_err(|_| DropReason::Helper)?;
    if udp && after == 0 {
        after = 0xffff;
        ctx.store(field, &after, 0)
            .map_err(|_| DropReason::Helper)?;
    }
    icmp_csum(ctx, pkt, before as u64, after as u64, 2)
}

/// The ICMPv6 checksum, for a change inside the message (no pseudo header
/// part; `size` 0: `new` is a difference).
#[inline(always)]
fn icmp_csum(ctx: &TcContext, pkt: &Pkt6, old: u64, new: u64, size: u64) -> Result<(), DropReason> {
    ctx.l4_csum_replace((pkt.l4_off & 0x1ff) + 2, old, new, size)
        .map_err(|_| DropReason::Helper)
}
