//! `pier_uplink_in`: TC ingress of an uplink. Replies to masqueraded flows and
//! packets to published ports are rewritten and redirected straight into the
//! container (TTL decremented; one that expires here is answered with ICMP
//! time exceeded); ICMP errors quoting such flows are translated and follow
//! them; later IP fragments follow their first; anything else addressed to a container subnet is dropped (only published
//! ports are exposed); the rest goes to the host stack.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use pier_common::{
    ct::{CtVal, FlowKey},
    drop::DropReason,
    event::{CT_NEW, EV_PUBLISH},
};

use crate::{
    ct, events, frag, icmp, ipv6,
    lookup::{
        count_port, count_port_drop, endpoint_at, is_host_addr, policy_allows, published_at,
        subnet_of,
    },
    maps::{CT, SNAT_REV, UPLINK},
    nat,
    parse::{self, Frag, L4},
    redirect, ttl,
    verdict::verdict_at,
};

#[classifier]
pub fn pier_uplink_in(ctx: TcContext) -> i32 {
    if ipv6::is_ipv6(&ctx) {
        return ipv6::uplink_in_entry(&ctx);
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    uplink_in4(&ctx, ifindex)
}

/// The IPv4 path, a frame of its own: the program's stack is the deepest
/// of the two paths, not their sum.
#[inline(never)]
fn uplink_in4(ctx: &TcContext, ifindex: u32) -> i32 {
    verdict_at(ctx, ifindex, try_uplink_in(ctx))
}

#[inline(always)]
fn try_uplink_in(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(mut pkt) = parse::ipv4(ctx)? else {
        return Ok(TC_ACT_OK);
    };
    // A container's address as the source, from outside: a martian (those
    // addresses are behind this host), e.g. a datagram to a published port
    // made to look as if a neighbour container sent it. Whole datagrams
    // with ports are asked below, once they match no flow pier knows (the
    // flows' own packets, the most, need no subnet lookup: a flow is only
    // ever made for a source that passed it).
    let whole = pkt.has_ports() && pkt.frag == Frag::None;
    if !whole && subnet_of(pkt.saddr).is_some() {
        return Err(DropReason::Spoofed);
    }
    frag::first_seen(&pkt);
    if pkt.frag == Frag::Later {
        // It follows its first fragment; without one, it is not pier's to
        // pass on when addressed to a container.
        if let Some(action) = frag::follow(ctx, &mut pkt)? {
            return Ok(action);
        }
        if subnet_of(pkt.daddr).is_some() {
            return Err(DropReason::FragNoFirst);
        }
        return Ok(TC_ACT_OK);
    }
    // An ICMP error about a flow pier translated.
    if pkt.l4 == L4::Error
        && let Some(action) = icmp::from_uplink(ctx, &mut pkt)?
    {
        return Ok(action);
    }
    if pkt.has_ports() {
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        // A published port (a loopback destination from outside is a
        // martian, never one: the host drops it). The uplink's own address
        // needs no host-address lookup.
        let loopback = pkt.daddr.to_ne_bytes()[0] == 127;
        let port = if loopback {
            None
        } else {
            published_at(pkt.daddr, pkt.dport, pkt.proto, true)
        };
        // Its established connections first: a masqueraded flow never has
        // their tuple (two connections on one wire tuple), so theirs is
        // the only lookup. An established connection's client came from an
        // uplink (a hairpin client's entry, from a container, does not vouch).
        let mut ckey = FlowKey::default();
        let mut est = None;
        if let Some((_, port)) = port {
            ckey = ct_key(&pkt, port.backend_be, port.backend_port_be);
            est = ct_entry(&pkt, &ckey).filter(|v| unsafe { (**v).client_ifindex } == 0);
        }
        // A reply to a masqueraded flow (its source is the peer a container
        // dialled: never a container subnet's).
        if est.is_none()
            && let Some(v) = SNAT_REV.get_ptr_mut(pkt.flow())
        {
            if ttl::expired(&pkt) {
                // From the host, as Linux's forwarding answers (a routed
                // flow's packets are addressed to the container itself).
                let src = match UPLINK.get(0) {
                    Some(u) if !is_host_addr(pkt.daddr) && u.addr_be != 0 => u.addr_be,
                    _ => pkt.daddr,
                };
                return ttl::answer(ctx, &pkt, src, ifindex);
            }
            let (addr, port, veth) = unsafe {
                ct::refresh(
                    &raw mut (*v).flags,
                    &raw mut (*v).expires_ns,
                    pkt.proto,
                    pkt.tcp_flags,
                    true,
                );
                ((*v).addr_be, (*v).port_be, (*v).ifindex)
            };
            // (The entry names the container's veth: an array load.)
            let ep = endpoint_at(veth, addr).ok_or(DropReason::NoBackend)?;
            nat::dnat(ctx, &mut pkt, addr, port)?;
            return redirect::to_container(ctx, &mut pkt, &ep.ep);
        }
        if let Some((key, port)) = port {
            if est.is_none() && whole && subnet_of(pkt.saddr).is_some() {
                return Err(DropReason::Spoofed);
            }
            // Who may reach it: every packet is asked (an established
            // connection whose source lost its allow is cut).
            if !policy_allows(&key, port, pkt.saddr, ifindex) {
                count_port_drop(&key, ctx.len());
                return Err(DropReason::PolicyDenied);
            }
            if ttl::expired(&pkt) {
                return ttl::answer(ctx, &pkt, pkt.daddr, ifindex);
            }
            match est {
                Some(v) => ct_refresh(&pkt, v),
                None => {
                    ct_new(&pkt, &ckey, 0, ifindex, 0, &redirect::reply_macs(ctx));
                    traced_new(ctx, port.backend_be, port.backend_port_be);
                }
            }
            count_port(port.slot, ctx.len());
            nat::dnat(ctx, &mut pkt, port.backend_be, port.backend_port_be)?;
            return redirect::to_container(ctx, &mut pkt, &port.ep);
        }
    }
    if whole && subnet_of(pkt.saddr).is_some() {
        return Err(DropReason::Spoofed);
    }
    if subnet_of(pkt.daddr).is_some() {
        return Err(DropReason::NotPublished);
    }
    Ok(TC_ACT_OK)
}

/// A new published connection: counted, and told to a monitor.
#[inline(always)]
pub fn traced_new(ctx: &TcContext, backend: u32, backend_port: u16) {
    events::kcount(CT_NEW);
    events::trace(ctx, EV_PUBLISH, backend, backend_port);
}

/// The conntrack key of `pkt`'s published connection to `backend`: its
/// reply direction (backend → client).
#[inline(always)]
fn ct_key(pkt: &parse::Pkt, backend: u32, backend_port: u16) -> FlowKey {
    FlowKey {
        saddr_be: backend,
        daddr_be: pkt.saddr,
        sport_be: backend_port,
        dport_be: pkt.sport,
        proto: pkt.proto,
        _pad: [0; 3],
    }
}

/// The conntrack entry of `pkt`'s published connection to `backend`, if
/// one lives for the address and port it dialled.
#[inline(always)]
fn ct_entry(pkt: &parse::Pkt, key: &FlowKey) -> Option<*mut CtVal> {
    let v = CT.get_ptr_mut(key)?;
    unsafe { ((*v).orig_daddr_be == pkt.daddr && (*v).orig_dport_be == pkt.dport).then_some(v) }
}

/// Refresh entry `v` with the client's packet `pkt` (see [`ct::refresh`]).
#[inline(always)]
fn ct_refresh(pkt: &parse::Pkt, v: *mut CtVal) {
    unsafe {
        ct::refresh(
            &raw mut (*v).flags,
            &raw mut (*v).expires_ns,
            pkt.proto,
            pkt.tcp_flags,
            false,
        )
    };
}

/// Make the conntrack entry of a new published connection.
#[inline(always)]
fn ct_new(
    pkt: &parse::Pkt,
    key: &FlowKey,
    client_ifindex: u32,
    uplink: u32,
    client_be: u32,
    macs: &[[u8; 6]; 2],
) {
    let flags = ct::next_flags(0, pkt, false);
    let val = CtVal {
        orig_daddr_be: pkt.daddr,
        orig_dport_be: pkt.dport,
        _pad: 0,
        client_ifindex,
        uplink_ifindex: uplink,
        expires_ns: ct::expiry(ct::now(), pkt, flags),
        flags,
        client_be,
        macs: *macs,
        _pad2: 0,
    };
    let _ = CT.insert(key, val, 0);
}

/// Create or refresh the conntrack entry of a published connection from a
/// container (hairpin; `client_ifindex` its veth). True when the entry is new.
#[inline(always)]
pub fn track(
    pkt: &parse::Pkt,
    backend: u32,
    backend_port: u16,
    client_ifindex: u32,
    client_be: u32,
) -> bool {
    let key = ct_key(pkt, backend, backend_port);
    if let Some(v) = ct_entry(pkt, &key) {
        ct_refresh(pkt, v);
        return false;
    }
    ct_new(pkt, &key, client_ifindex, 0, client_be, &[[0; 6]; 2]);
    true
}
