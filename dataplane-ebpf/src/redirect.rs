//! The two fast exits: into a container (`bpf_redirect_peer` to its host-side
//! veth, with the frame addressed to the container) and out of an uplink
//! (`bpf_redirect_neigh`, which resolves the next hop, or a plain
//! `bpf_redirect` with the next hop's MAC a published connection recorded). Both are routed hops:
//! the TTL is decremented, and a first fragment records where its datagram
//! went (later fragments follow it).
use aya_ebpf::{
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use pier_common::{drop::DropReason, endpoint::EndpointVal};

use crate::{events, frag, nat, parse::Pkt, ttl};

#[inline(always)]
pub fn to_container(ctx: &TcContext, pkt: &mut Pkt, ep: &EndpointVal) -> Result<i32, DropReason> {
    ttl::decrement(ctx, pkt)?;
    let eth = nat::ptr_mut::<[[u8; 6]; 2]>(ctx, 0)?;
    unsafe { *eth = [ep.mac, ep.bridge_mac] };
    frag::remember(pkt, ep.ifindex, Some(ep));
    events::pier_count_tx(ep.ifindex, ctx.len());
    Ok(unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32)
}

/// Out of uplink `ifindex` to the next hop whose MAC is known: `macs` is
/// the frame's new Ethernet addresses (next hop, uplink), written as they
/// are and sent with a plain `bpf_redirect` (no route or neighbour lookup).
/// All zero: as [`to_uplink`].
#[inline(always)]
pub fn to_uplink_via(
    ctx: &TcContext,
    pkt: &mut Pkt,
    ifindex: u32,
    macs: &[[u8; 6]; 2],
) -> Result<i32, DropReason> {
    if macs[0] == [0; 6] {
        return to_uplink(ctx, pkt, ifindex);
    }
    ttl::decrement(ctx, pkt)?;
    let eth = nat::ptr_mut::<[[u8; 6]; 2]>(ctx, 0)?;
    unsafe { *eth = *macs };
    frag::remember(pkt, ifindex, None);
    events::pier_count_tx(ifindex, ctx.len());
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// The Ethernet addresses of the replies to the frame in `ctx` (its source
/// first, then its destination), when both are unicast; else all zero.
#[inline(always)]
pub fn reply_macs(ctx: &TcContext) -> [[u8; 6]; 2] {
    let Some(eth) = crate::parse::ptr_at::<[[u8; 6]; 2]>(ctx, 0) else {
        return [[0; 6]; 2];
    };
    let [dst, src] = unsafe { *eth };
    // The group bit: a multicast or broadcast address answers nothing.
    if dst[0] & 1 != 0 || src[0] & 1 != 0 || src == [0; 6] {
        return [[0; 6]; 2];
    }
    [src, dst]
}

#[inline(always)]
pub fn to_uplink(ctx: &TcContext, pkt: &mut Pkt, ifindex: u32) -> Result<i32, DropReason> {
    ttl::decrement(ctx, pkt)?;
    frag::remember(pkt, ifindex, None);
    events::pier_count_tx(ifindex, ctx.len());
    Ok(unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}
