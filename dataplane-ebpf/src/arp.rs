//! ARP from a container (`pier_veth_in`): it may speak only for itself.
//! A container keeps CAP_NET_RAW, so without this check it could answer for
//! (or announce, gratuitously) a neighbour's address and move every other
//! container's neighbour entry for that address to its own MAC.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use pier_common::drop::DropReason;

use crate::{
    lookup::endpoint,
    parse::{ETH_HLEN, ptr_at},
};

pub const ETH_P_ARP: u16 = 0x0806;

/// An Ethernet/IPv4 ARP header (RFC 826) with its addresses.
#[repr(C)]
#[allow(dead_code)] // oper, tha, tpa: whatever they say, the sender must be the container
struct ArpHdr {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    oper: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// A frame that is not IPv4, from the container on veth `ifindex`: ARP must
/// be Ethernet/IPv4, with the frame's source MAC as its sender MAC and a
/// sender address that is the container's own on this veth with that MAC
/// (or 0.0.0.0: an RFC 5227 probe, from which no neighbour learns);
/// otherwise it is dropped (`ArpSpoofed`; truncated: `Malformed`).
/// Anything else passes.
#[inline(always)]
pub fn from_container(ctx: &TcContext, ifindex: u32) -> Result<i32, DropReason> {
    let Some(proto) = ptr_at::<[u8; 2]>(ctx, 12) else {
        return Ok(TC_ACT_OK);
    };
    if u16::from_be_bytes(unsafe { *proto }) != ETH_P_ARP {
        return Ok(TC_ACT_OK);
    }
    let arp = unsafe { &*ptr_at::<ArpHdr>(ctx, ETH_HLEN).ok_or(DropReason::Malformed)? };
    let eth_src = unsafe { &*ptr_at::<[u8; 6]>(ctx, 6).ok_or(DropReason::Malformed)? };
    if arp.htype != [0, 1] || arp.ptype != [0x08, 0x00] || arp.hlen != 6 || arp.plen != 4 {
        return Err(DropReason::ArpSpoofed);
    }
    if arp.sha != *eth_src {
        return Err(DropReason::ArpSpoofed);
    }
    let spa = u32::from_ne_bytes(arp.spa);
    if spa == 0 {
        return Ok(TC_ACT_OK);
    }
    match endpoint(spa) {
        Some(ep) if ep.ifindex == ifindex && ep.mac == arp.sha => Ok(TC_ACT_OK),
        _ => Err(DropReason::ArpSpoofed),
    }
}
