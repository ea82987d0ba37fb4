//! Address and port rewrites with incremental checksum updates. The header
//! fields and the IPv4 checksum are written in place (direct packet access:
//! a handful of instructions where a helper call costs tens of ns); the
//! transport checksum goes through `l4_csum_replace`, with `BPF_F_PSEUDO_HDR`
//! for the addresses (correct with checksum offload, which only the kernel
//! can tell).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use pier_common::drop::DropReason;

use crate::parse::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IPPROTO_UDP, L4, Pkt, ptr_at};

#[inline(always)]
fn l4_flags(pkt: &Pkt) -> u64 {
    if pkt.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    }
}

/// A writable pointer to the `T` at `off` (below 1024: the headers) of the
/// frame.
#[inline(always)]
pub fn ptr_mut<T>(ctx: &TcContext, off: usize) -> Result<*mut T, DropReason> {
    // Bounded for the verifier (a header offset kept on the stack comes
    // back without its range).
    if off >= 1024 {
        return Err(DropReason::Malformed);
    }
    ptr_at::<T>(ctx, off)
        .map(|p| p as *mut T)
        .ok_or(DropReason::Malformed)
}

/// The one's-complement checksum `csum` (as it sits in the header) after
/// the 16-bit words it covers summed to `old` and now sum to `new` (RFC
/// 1624: HC' = ~(~HC + ~m + m')). Words are taken as they sit in memory:
/// the arithmetic is byte-order blind.
#[inline(always)]
pub fn csum_update(csum: u16, old: u32, new: u32) -> u16 {
    let mut s = (!csum) as u32;
    s += (!(old as u16)) as u32 + (!((old >> 16) as u16)) as u32;
    s += (new as u16) as u32 + (new >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// [`csum_update`] for one 16-bit word.
#[inline(always)]
pub fn csum_update16(csum: u16, old: u16, new: u16) -> u16 {
    let mut s = (!csum) as u32 + (!old) as u32 + new as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[inline(always)]
fn addr(ctx: &TcContext, pkt: &Pkt, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let a = ptr_mut::<u32>(ctx, off)?;
    let c = ptr_mut::<u16>(ctx, IP_CSUM_OFF)?;
    unsafe {
        *a = new;
        *c = csum_update(*c, old, new);
    }
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
    Ok(())
}

#[inline(always)]
fn port(ctx: &TcContext, pkt: &Pkt, off: usize, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let p = ptr_mut::<u16>(ctx, off)?;
    unsafe { *p = new };
    ctx.l4_csum_replace(pkt.l4_csum_off(), old as u64, new as u64, 2 | l4_flags(pkt))
        .map_err(|_| DropReason::Helper)
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
