//! The TTL on the hops pier routes itself (redirects), as Linux forwarding
//! treats it: every redirected packet leaves with its TTL decremented, and a
//! packet that arrives with TTL ≤ 1 is not forwarded. Where the host stack
//! would route the untranslated packet the same way (a container's packets
//! leaving the host), the programs hand it to the host stack and Linux sends
//! the time-exceeded error (quoting exactly what the container sent). Where
//! it would not (packets translated towards a container), [`answer`] turns
//! the packet into that error in place and sends it back where it came from.
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use pier_common::{config::ICMP_ERROR_TTL, drop::DropReason};

use crate::{
    nat,
    parse::{ETH_HLEN, Frag, ICMP_TIME_EXCEEDED, IP_TTL_OFF, IPPROTO_ICMP, L4, Pkt, ptr_at},
};

/// Would Linux refuse to forward `pkt`?
#[inline(always)]
pub fn expired(pkt: &Pkt) -> bool {
    pkt.ttl <= 1
}

/// Decrement the TTL of a packet about to be redirected (with the IPv4
/// checksum, both written in place). One that cannot be forwarded is
/// dropped (`TtlExceeded`): an ICMP error or a later fragment, which Linux
/// answers with nothing either.
#[inline(always)]
pub fn decrement(ctx: &TcContext, pkt: &mut Pkt) -> Result<(), DropReason> {
    if expired(pkt) {
        return Err(DropReason::TtlExceeded);
    }
    // The 16-bit word the checksum sees is (TTL, protocol); the checksum
    // follows it.
    let w = nat::ptr_mut::<[u8; 4]>(ctx, IP_TTL_OFF)?;
    let ttl = pkt.ttl - 1;
    let old = u16::from_ne_bytes([pkt.ttl, pkt.proto]);
    let new = u16::from_ne_bytes([ttl, pkt.proto]);
    unsafe {
        (*w)[0] = ttl;
        let c = u16::from_ne_bytes([(*w)[2], (*w)[3]]);
        let c = nat::csum_update16(c, old, new).to_ne_bytes();
        (*w)[2] = c[0];
        (*w)[3] = c[1];
    }
    pkt.ttl = ttl;
    Ok(())
}

const QUOTE: usize = 20 + 8;
const ERR_HDRS: usize = 20 + 8;

/// Turn `pkt` (untranslated, TTL ≤ 1) into ICMP time exceeded from `src`
/// to its sender, quoting its IPv4 header and first 8 transport bytes, and
/// send it out of `ifindex` (the interface it came in on) with the MACs
/// swapped. Like Linux: never about an ICMP error or a later fragment.
/// Packets with IP options or GSO packets are dropped (`TtlExceeded`).
#[inline(always)]
pub fn answer(ctx: &TcContext, pkt: &Pkt, src: u32, ifindex: u32) -> Result<i32, DropReason> {
    if pkt.frag == Frag::Later
        || pkt.l4 == L4::Error
        || pkt.l4_off != ETH_HLEN + 20
        || unsafe { (*ctx.skb.skb).gso_size } != 0
    {
        return Err(DropReason::TtlExceeded);
    }
    let eth = unsafe { *ptr_at::<[u8; 12]>(ctx, 0).ok_or(DropReason::Malformed)? };
    let quote = unsafe { *ptr_at::<[u8; QUOTE]>(ctx, ETH_HLEN).ok_or(DropReason::Malformed)? };

    let mut hdr = [0u8; ETH_HLEN + ERR_HDRS];
    // Ethernet: back to the sender, from the interface it addressed.
    hdr[0..6].copy_from_slice(&eth[6..12]);
    hdr[6..12].copy_from_slice(&eth[0..6]);
    hdr[12] = 0x08;
    hdr[13] = 0x00;
    // IPv4, as Linux's icmp_send: precedence "internetwork control".
    let ip = ETH_HLEN;
    hdr[ip] = 0x45;
    hdr[ip + 1] = 0xc0;
    hdr[ip + 2..ip + 4].copy_from_slice(&((ERR_HDRS + QUOTE) as u16).to_be_bytes());
    hdr[ip + 8] = ICMP_ERROR_TTL;
    hdr[ip + 9] = IPPROTO_ICMP;
    hdr[ip + 12..ip + 16].copy_from_slice(&src.to_ne_bytes());
    hdr[ip + 16..ip + 20].copy_from_slice(&quote[12..16]);
    let c = fold(sum(&hdr[ip..ip + 20], 0));
    hdr[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    // ICMP time exceeded in transit, checksum over itself and the quote.
    let icmp = ip + 20;
    hdr[icmp] = ICMP_TIME_EXCEEDED;
    let c = fold(sum(&hdr[icmp..icmp + 8], sum(&quote, 0)));
    hdr[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());

    // Keep the quote only, then open room for the new headers before it.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + QUOTE) as u32, 0) } != 0 {
        return Err(DropReason::Helper);
    }
    ctx.adjust_room(ERR_HDRS as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| DropReason::Helper)?;
    ctx.store(0, &hdr, 0).map_err(|_| DropReason::Helper)?;
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// One's-complement sum of big-endian 16-bit words (even length).
#[inline(always)]
fn sum(b: &[u8], init: u32) -> u32 {
    let mut s = init;
    let mut i = 0;
    while i + 1 < b.len() {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    s
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
