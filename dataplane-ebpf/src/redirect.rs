//! The two fast exits: into a container (`bpf_redirect_peer` to its host-side
//! veth, with the frame addressed to the container) and out of an uplink
//! (`bpf_redirect_neigh`, which resolves the next hop). Both are routed hops:
//! the TTL is decremented, and a first fragment records where its datagram
//! went (later fragments follow it).
use aya_ebpf::{
    helpers::{bpf_redirect_neigh, bpf_redirect_peer},
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

#[inline(always)]
pub fn to_uplink(ctx: &TcContext, pkt: &mut Pkt, ifindex: u32) -> Result<i32, DropReason> {
    ttl::decrement(ctx, pkt)?;
    frag::remember(pkt, ifindex, None);
    events::pier_count_tx(ifindex, ctx.len());
    Ok(unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}
