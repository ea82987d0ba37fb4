//! Which uplink a flow leaves by: the route the kernel would pick for it
//! (`bpf_fib_lookup` as a forwarded packet arriving on the container's veth,
//! so policy routing by source applies), with that route's source address.
//! Masquerade asks once per flow (its first packet) and keeps the answer in
//! the flow's entry; a route out of an interface that is not one of the
//! agent's uplinks (`PIER_UPLINKS`) falls back to the first uplink, whose
//! `pier_uplink_in` alone would see the replies. IPv6 the same way
//! ([`uplink6_for`], `PIER_UPLINKS6`, the first IPv6 uplink as fallback).
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, bpf_fib_lookup,
    },
    helpers::bpf_fib_lookup as fib_lookup,
    programs::TcContext,
};
use pier_common::{endpoint::UplinkVal, nat6::UplinkVal6};

use crate::{
    ipv6::Pkt6,
    maps::{UPLINK, UPLINK6, UPLINKS, UPLINKS6},
    nat6::eq6,
    parse::Pkt,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The uplink (and source address) for `pkt`'s destination; `None` when
/// there is no usable uplink at all.
#[inline(always)]
pub fn uplink_for(ctx: &TcContext, pkt: &Pkt) -> Option<UplinkVal> {
    let first = UPLINK.get(0).copied().filter(|u| u.ifindex != 0);
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = pkt.proto;
    p.sport = pkt.sport;
    p.dport = pkt.dport;
    p.__bindgen_anon_1.tot_len = 0;
    p.__bindgen_anon_3.ipv4_src = pkt.saddr;
    p.__bindgen_anon_4.ipv4_dst = pkt.daddr;
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
    let skb = ctx.skb.skb as *mut core::ffi::c_void;
    let flags = BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC;
    let mut rc = unsafe { fib_lookup(skb, &mut p, size, flags) };
    if rc < 0 {
        // A kernel before 6.7 (no BPF_FIB_LOOKUP_SRC): the device only, and
        // the uplink's own address.
        p.__bindgen_anon_3.ipv4_src = pkt.saddr;
        p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
        rc = unsafe { fib_lookup(skb, &mut p, size, 0) };
        p.__bindgen_anon_3.ipv4_src = 0;
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return first;
    }
    let Some(up) = (unsafe { UPLINKS.get(&p.ifindex) }).copied() else {
        return first;
    };
    let src = unsafe { p.__bindgen_anon_3.ipv4_src };
    Some(UplinkVal {
        ifindex: up.ifindex,
        addr_be: if src != 0 { src } else { up.addr_be },
    })
}

/// [`uplink_for`] for IPv6: the uplink and source address of the route for
/// `pkt`'s destination, asked as forwarded from the veth; `p` is a per-CPU
/// slot for the lookup's parameters (64 bytes the IPv6 path's stack has
/// not). A route out of a non-uplink, or no answer: the first IPv6 uplink
/// (`None` when there is none).
#[inline(always)]
pub fn uplink6_for(ctx: &TcContext, pkt: &Pkt6, p: &mut bpf_fib_lookup) -> Option<UplinkVal6> {
    let first = UPLINK6
        .get(0)
        .copied()
        .filter(|u| u.ifindex != 0 && !is_zero6(&u.addr));
    first?;
    *p = unsafe { core::mem::zeroed() };
    p.family = AF_INET6;
    p.l4_protocol = pkt.proto;
    p.sport = pkt.sport;
    p.dport = pkt.dport;
    p.__bindgen_anon_3.ipv6_src = pkt.saddr;
    p.__bindgen_anon_4.ipv6_dst = pkt.daddr;
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let size = core::mem::size_of::<bpf_fib_lookup>() as i32;
    let skb = ctx.skb.skb as *mut core::ffi::c_void;
    let flags = BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC;
    let mut rc = unsafe { fib_lookup(skb, p, size, flags) };
    if rc < 0 {
        // Before 6.7 (no BPF_FIB_LOOKUP_SRC): the device only, and the
        // uplink's own address.
        p.__bindgen_anon_3.ipv6_src = pkt.saddr;
        p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
        rc = unsafe { fib_lookup(skb, p, size, 0) };
        p.__bindgen_anon_3.ipv6_src = [0; 4];
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return first;
    }
    let Some(up) = (unsafe { UPLINKS6.get(&p.ifindex) }).copied() else {
        return first;
    };
    let src = unsafe { p.__bindgen_anon_3.ipv6_src };
    // The route's source, unless the kernel left the container's own (or
    // none): then the uplink's address.
    let keep = !is_zero6(&src) && !eq6(&src, &pkt.saddr);
    Some(UplinkVal6 {
        ifindex: up.ifindex,
        addr: if keep { src } else { up.addr },
    })
}

/// Word by word (an array `==` may become a `bcmp` call, which BPF has not).
#[inline(always)]
fn is_zero6(a: &[u32; 4]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0
}
