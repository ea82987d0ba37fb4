//! Address and port rewrites with incremental checksum updates. Every write
//! goes through `skb_store_bytes`; checksums through the l3/l4 helpers with
//! `BPF_F_PSEUDO_HDR` for the addresses (correct with checksum offload).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use pier_common::drop::DropReason;

use crate::parse::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IPPROTO_UDP, L4, Pkt};

#[inline(always)]
fn l4_flags(pkt: &Pkt) -> u64 {
    if pkt.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    }
}

#[inline(always)]
fn addr(ctx: &TcContext, pkt: &Pkt, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)
        .map_err(|_| DropReason::Helper)?;
    // ICMP has no pseudo header; TCP and UDP do.
    if pkt.l4 == L4::Ports {
        ctx.l4_csum_replace(
            pkt.l4_csum_off(),
            old as u64,
            new as u64,
            BPF_F_PSEUDO_HDR as u64 | 4 | l4_flags(pkt),
        )
        .map_err(|_| DropReason::Helper)?;
    }
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)
}

#[inline(always)]
fn port(ctx: &TcContext, pkt: &Pkt, off: usize, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.l4_csum_replace(pkt.l4_csum_off(), old as u64, new as u64, 2 | l4_flags(pkt))
        .map_err(|_| DropReason::Helper)?;
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)
}

/// Rewrite the destination address and port (port = ICMP id for echo replies).
#[inline(always)]
pub fn dnat(ctx: &TcContext, pkt: &mut Pkt, daddr: u32, dport: u16) -> Result<(), DropReason> {
    addr(ctx, pkt, IP_DADDR_OFF, pkt.daddr, daddr)?;
    pkt.daddr = daddr;
    let off = match pkt.l4 {
        L4::Ports => pkt.l4_off + 2,
        L4::EchoReply => pkt.l4_off + 4,
        _ => return Ok(()),
    };
    port(ctx, pkt, off, pkt.dport, dport)?;
    pkt.dport = dport;
    Ok(())
}

/// Rewrite the source address and port (port = ICMP id for echo requests).
#[inline(always)]
pub fn snat(ctx: &TcContext, pkt: &mut Pkt, saddr: u32, sport: u16) -> Result<(), DropReason> {
    addr(ctx, pkt, IP_SADDR_OFF, pkt.saddr, saddr)?;
    pkt.saddr = saddr;
    let off = match pkt.l4 {
        L4::Ports => pkt.l4_off,
        L4::EchoRequest => pkt.l4_off + 4,
        _ => return Ok(()),
    };
    port(ctx, pkt, off, pkt.sport, sport)?;
    pkt.sport = sport;
    Ok(())
}
