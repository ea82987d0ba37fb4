//! IPv4 fragments of translated datagrams. The first fragment carries the
//! ports and is translated like a whole packet (its transport checksum,
//! which covers the whole datagram, updated incrementally); what it got
//! (addresses written, redirect target) is recorded under the datagram's
//! (addresses, protocol, IP ID) in the LRU `PIER_FRAGS`, and later fragments
//! get the same addresses and redirect. A later fragment whose first was not
//! seen is never passed on half-translated.
use aya_ebpf::programs::TcContext;
use pier_common::{
    config::FRAG_TIMEOUT_NS,
    drop::DropReason,
    endpoint::EndpointVal,
    frag::{FRAG_F_PEER, FragVal},
};

use crate::{
    ct,
    maps::FRAGS,
    nat,
    parse::{Frag, Pkt},
    redirect,
};

/// A first fragment arrived: forget what an older datagram with the same
/// key got (it is translated afresh, or not at all).
#[inline(always)]
pub fn first_seen(pkt: &Pkt) {
    if pkt.frag == Frag::First {
        let _ = FRAGS.remove(&pkt.frag_key);
    }
}

/// Record where a translated first fragment went (`peer`: the container
/// `ep`; else uplink `ifindex`).
#[inline(always)]
pub fn remember(pkt: &Pkt, ifindex: u32, ep: Option<&EndpointVal>) {
    if pkt.frag != Frag::First {
        return;
    }
    let (flags, mac, bridge_mac) = match ep {
        Some(ep) => (FRAG_F_PEER, ep.mac, ep.bridge_mac),
        None => (0, [0; 6], [0; 6]),
    };
    let val = FragVal {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        ifindex,
        flags,
        mac,
        bridge_mac,
        _pad: 0,
        expires_ns: ct::now() + FRAG_TIMEOUT_NS,
    };
    let _ = FRAGS.insert(&pkt.frag_key, &val, 0);
}

/// A later fragment: if its first was translated, the same rewrite and
/// redirect. `Ok(None)`: its first is unknown (not seen, not translated, or
/// forgotten); the caller decides.
#[inline(always)]
pub fn follow(ctx: &TcContext, pkt: &mut Pkt) -> Result<Option<i32>, DropReason> {
    let Some(v) = unsafe { FRAGS.get(&pkt.frag_key) }.copied() else {
        return Ok(None);
    };
    if v.expires_ns < ct::now() {
        return Ok(None);
    }
    // No transport header here (`L4::None`): the addresses and the IPv4
    // checksum only.
    nat::snat(ctx, pkt, v.saddr_be, 0)?;
    nat::dnat(ctx, pkt, v.daddr_be, 0)?;
    if v.flags & FRAG_F_PEER != 0 {
        let ep = EndpointVal {
            ifindex: v.ifindex,
            network_id: 0,
            mac: v.mac,
            bridge_mac: v.bridge_mac,
        };
        return redirect::to_container(ctx, pkt, &ep).map(Some);
    }
    redirect::to_uplink(ctx, pkt, v.ifindex).map(Some)
}
