//! ICMP errors of translated flows (destination unreachable with
//! fragmentation needed and port unreachable, time exceeded, parameter
//! problem). The quoted packet names the flow; the error is rewritten as
//! conntrack's RELATED translation does: the outer address, the quoted
//! address and port, and every checksum (outer IP, ICMP, quoted IP, quoted
//! transport when it is quoted whole), then redirected like the flow's own
//! packets. An error that matches no flow is left alone; one that quotes a
//! packet pier never sent is dropped (`IcmpForged`).
use aya_ebpf::programs::TcContext;
use pier_common::drop::DropReason;

use crate::{
    lookup::{endpoint, is_host_addr, published, subnet_of},
    maps::{CT, SNAT_FWD, SNAT_REV, UPLINK},
    parse::{self, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IPPROTO_UDP, Inner, L4, Pkt},
    redirect,
};

/// An ICMP error arriving on an uplink. `Ok(None)`: not pier's, the caller
/// goes on as for any packet (host stack, or the container-subnet drop).
#[inline(always)]
pub fn from_uplink(ctx: &TcContext, pkt: &mut Pkt) -> Result<Option<i32>, DropReason> {
    let Some(mut inner) = parse::inner(ctx, pkt) else {
        return Ok(None);
    };
    // A real error goes back to the sender of the quoted packet.
    if inner.saddr != pkt.daddr {
        return forged_if_for_container(pkt);
    }
    // A masqueraded (or routed) flow of a container.
    if let Some(v) = unsafe { SNAT_REV.get(inner.reply_flow()) }.copied() {
        let ep = endpoint(v.addr_be).ok_or(DropReason::NoBackend)?;
        to_sender(ctx, pkt, &mut inner, v.addr_be, v.port_be)?;
        return redirect::to_container(ctx, pkt, &ep).map(Some);
    }
    // A published server's reply.
    if let Some((_, port)) = published(inner.saddr, inner.sport, inner.proto) {
        return to_backend(
            ctx,
            pkt,
            &mut inner,
            port.backend_be,
            port.backend_port_be,
            0,
        )
        .map(Some);
    }
    forged_if_for_container(pkt)
}

/// An ICMP error from a container (`src_ifindex`: its host-side veth, the
/// source address already checked). `Ok(None)`: no translated flow is
/// quoted; the caller goes on as for any packet.
#[inline(always)]
pub fn from_container(
    ctx: &TcContext,
    pkt: &mut Pkt,
    src_ifindex: u32,
) -> Result<Option<i32>, DropReason> {
    let Some(mut inner) = parse::inner(ctx, pkt) else {
        return Ok(None);
    };
    if inner.daddr == pkt.saddr {
        // About a packet this container received: a published
        // connection's (from outside, or hairpin from a container)…
        if let Some(e) = unsafe { CT.get(inner.reply_flow()) }.copied() {
            let sport = inner.sport;
            from_receiver(ctx, pkt, &mut inner, e.orig_daddr_be, e.orig_dport_be)?;
            if e.client_be != 0 {
                // A hairpin client on its own port saw the gateway.
                to_sender(ctx, pkt, &mut inner, e.client_be, sport)?;
            }
            if e.client_ifindex != 0 {
                let client = endpoint(pkt.daddr).ok_or(DropReason::NoBackend)?;
                return redirect::to_container(ctx, pkt, &client).map(Some);
            }
            return redirect::to_uplink(ctx, pkt, e.uplink_ifindex).map(Some);
        }
        // …or a reply of its masqueraded flow.
        if let Some(v) = unsafe { SNAT_FWD.get(inner.reply_flow()) }.copied()
            && v.addr_be != pkt.saddr
            && let Some(ifindex) = match v.ifindex {
                // The flow's own uplink (an older agent's entry: the first).
                0 => UPLINK.get(0).map(|u| u.ifindex).filter(|i| *i != 0),
                i => Some(i),
            }
        {
            from_receiver(ctx, pkt, &mut inner, v.addr_be, v.port_be)?;
            return redirect::to_uplink(ctx, pkt, ifindex).map(Some);
        }
    }
    // A hairpin client's error about a published server's reply it got.
    if inner.saddr == pkt.daddr
        && is_host_addr(pkt.daddr)
        && let Some((_, port)) = published(inner.saddr, inner.sport, inner.proto)
    {
        return to_backend(
            ctx,
            pkt,
            &mut inner,
            port.backend_be,
            port.backend_port_be,
            src_ifindex,
        )
        .map(Some);
    }
    Ok(None)
}

/// The error quotes a reply of published `backend:backend_port`: translate
/// it for the backend when pier has that connection (its client came in on
/// `client_ifindex`, 0 = an uplink), else it is forged.
#[inline(always)]
fn to_backend(
    ctx: &TcContext,
    pkt: &mut Pkt,
    inner: &mut Inner,
    backend: u32,
    backend_port: u16,
    client_ifindex: u32,
) -> Result<i32, DropReason> {
    let key = pier_common::ct::FlowKey {
        saddr_be: backend,
        daddr_be: inner.daddr,
        sport_be: backend_port,
        dport_be: inner.dport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    let Some(e) = unsafe { CT.get(key) }.copied() else {
        return Err(DropReason::IcmpForged);
    };
    if e.orig_daddr_be != inner.saddr
        || e.orig_dport_be != inner.sport
        || e.client_ifindex != client_ifindex
        || e.client_be != 0
    {
        return Err(DropReason::IcmpForged);
    }
    let ep = endpoint(backend).ok_or(DropReason::NoBackend)?;
    to_sender(ctx, pkt, inner, backend, backend_port)?;
    redirect::to_container(ctx, pkt, &ep)
}

/// Unmatched: to a container address (nothing of pier's), drop as forged;
/// to anything else, leave it to the caller.
#[inline(always)]
fn forged_if_for_container(pkt: &Pkt) -> Result<Option<i32>, DropReason> {
    if subnet_of(pkt.daddr).is_some() {
        return Err(DropReason::IcmpForged);
    }
    Ok(None)
}

/// Back to the sender of the quoted packet, which sent it as `addr:port`:
/// outer destination, quoted source address and port.
#[inline(always)]
pub fn to_sender(
    ctx: &TcContext,
    pkt: &mut Pkt,
    inner: &mut Inner,
    addr: u32,
    port: u16,
) -> Result<(), DropReason> {
    outer_addr(ctx, IP_DADDR_OFF, pkt.daddr, addr)?;
    pkt.daddr = addr;
    inner_addr(ctx, pkt, inner, inner.ip_off + 12, inner.saddr, addr)?;
    inner.saddr = addr;
    let off = match inner.l4 {
        L4::EchoRequest => inner.l4_off + 4,
        _ => inner.l4_off,
    };
    inner_port(ctx, pkt, inner, off, inner.sport, port)?;
    inner.sport = port;
    Ok(())
}

/// From the receiver of the quoted packet, which pier delivered to it from
/// `addr:port`: outer source, quoted destination address and port.
#[inline(always)]
pub fn from_receiver(
    ctx: &TcContext,
    pkt: &mut Pkt,
    inner: &mut Inner,
    addr: u32,
    port: u16,
) -> Result<(), DropReason> {
    outer_addr(ctx, IP_SADDR_OFF, pkt.saddr, addr)?;
    pkt.saddr = addr;
    inner_addr(ctx, pkt, inner, inner.ip_off + 16, inner.daddr, addr)?;
    inner.daddr = addr;
    if inner.l4 == L4::Ports {
        inner_port(ctx, pkt, inner, inner.l4_off + 2, inner.dport, port)?;
        inner.dport = port;
    }
    Ok(())
}

/// The outer header: the address and the IPv4 checksum (ICMP has no
/// pseudo header).
#[inline(always)]
fn outer_addr(ctx: &TcContext, off: usize, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)
        .map_err(|_| DropReason::Helper)?;
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)
}

/// A quoted address: the quoted IPv4 checksum and the quoted transport
/// checksum (pseudo header) follow it, and the ICMP checksum follows all
/// three.
#[inline(always)]
fn inner_addr(
    ctx: &TcContext,
    pkt: &Pkt,
    inner: &Inner,
    off: usize,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)?;
    icmp_csum(ctx, pkt, old, new, 4)?;
    quoted_csum(ctx, pkt, inner.ip_off + 10, old, new, 4, false)?;
    if inner.l4 == L4::Ports && inner.l4_csum {
        quoted_csum(
            ctx,
            pkt,
            inner.l4_csum_off(),
            old,
            new,
            4,
            inner.proto == IPPROTO_UDP,
        )?;
    }
    Ok(())
}

/// A quoted port (or echo identifier), with the quoted transport checksum.
#[inline(always)]
fn inner_port(
    ctx: &TcContext,
    pkt: &Pkt,
    inner: &Inner,
    off: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    ctx.store(off, &new, 0).map_err(|_| DropReason::Helper)?;
    icmp_csum(ctx, pkt, old as u32, new as u32, 2)?;
    if inner.l4_csum {
        quoted_csum(
            ctx,
            pkt,
            inner.l4_csum_off(),
            old as u32,
            new as u32,
            2,
            inner.proto == IPPROTO_UDP,
        )?;
    }
    Ok(())
}

/// Update a quoted checksum field at `field` for a change of `size` bytes
/// from `old` to `new`, and the ICMP checksum for the field's own change.
/// (`l3_csum_replace` is plain field arithmetic, right for any checksum
/// without a pseudo header part.) `udp`: a result of 0 is sent as 0xffff.
#[inline(always)]
fn quoted_csum(
    ctx: &TcContext,
    pkt: &Pkt,
    field: usize,
    old: u32,
    new: u32,
    size: u64,
    udp: bool,
) -> Result<(), DropReason> {
    let before: u16 = ctx.load(field).map_err(|_| DropReason::Helper)?;
    ctx.l3_csum_replace(field, old as u64, new as u64, size)
        .map_err(|_| DropReason::Helper)?;
    let mut after: u16 = ctx.load(field).map_err(|_| DropReason::Helper)?;
    if udp && after == 0 {
        after = 0xffff;
        ctx.store(field, &after, 0)
            .map_err(|_| DropReason::Helper)?;
    }
    icmp_csum(ctx, pkt, before as u32, after as u32, 2)
}

/// The ICMP checksum, for a change of `size` bytes inside the message.
#[inline(always)]
fn icmp_csum(ctx: &TcContext, pkt: &Pkt, old: u32, new: u32, size: u64) -> Result<(), DropReason> {
    ctx.l4_csum_replace(pkt.l4_off + 2, old as u64, new as u64, size)
        .map_err(|_| DropReason::Helper)
}
