//! `pier_veth_in`: TC ingress of a container's host-side veth (what the
//! container sends). A source address other than the container's own is
//! dropped before anything else is looked up, and so is ARP whose sender is
//! not the container ([`crate::arp`]). ICMP errors about translated flows are translated and follow
//! them. In order: replies of published connections are
//! reverse-translated and sent back out of the uplink (or into the client
//! container, for hairpin); hairpin to a published port on any host address
//! (bridge gateways too) is translated, except from `--internal` networks;
//! traffic to another pier network is dropped; `--internal` networks stop
//! here; the host's addresses and multicast go to the host stack; a
//! reply whose conntrack entry is gone is re-tracked; traffic leaving the
//! host is masqueraded.
use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_NOEXIST, TC_ACT_OK, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{bpf_get_prandom_u32, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    macros::classifier,
    programs::TcContext,
};
use pier_common::{
    config::{NAT_PORT_MAX, NAT_PORT_MIN, NAT_PORT_TRIES},
    ct::FlowKey,
    drop::DropReason,
    endpoint::{
        EP_F_BACKEND, NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_NO_ICC, NetworkVal, UplinkVal,
    },
    event::{CT_RETRACKED, EV_MASQ, EV_RETRACK, NAT_ALLOCATED},
    nat::{NatVal, PortKey},
};

use crate::{
    arp, ct, events, frag, icmp, ipv6,
    lookup::{
        count_port, count_port_drop, endpoint_at, endpoint_ref, is_host_addr, policy_allows,
        published, subnet_of,
    },
    maps::{BACKENDS, CT, SNAT_FWD, SNAT_REV, UPLINK},
    nat,
    parse::{self, Frag, IPPROTO_TCP, L4, Pkt, ptr_at},
    programs::uplink_in::{traced_new, track},
    redirect, route, ttl,
    verdict::verdict,
};

#[classifier]
pub fn pier_veth_in(ctx: TcContext) -> i32 {
    if ipv6::is_ipv6(&ctx) {
        let action = ipv6::veth_in_entry(&ctx);
        if action == crate::nat6::MASQUERADE {
            return ipv6::masquerade_entry(&ctx);
        }
        return action;
    }
    veth_in4(&ctx)
}

/// The IPv4 path, a frame of its own: the program's stack is the deepest
/// of the two paths, not their sum.
#[inline(never)]
fn veth_in4(ctx: &TcContext) -> i32 {
    verdict(ctx, try_veth_in(ctx))
}

#[inline(always)]
fn try_veth_in(ctx: &TcContext) -> Result<i32, DropReason> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(mut pkt) = parse::ipv4(ctx)? else {
        return arp::from_container(ctx, ifindex);
    };
    // The source must be this veth's own container address. First of all:
    // every lookup below (conntrack too) is keyed by the source, and a
    // container must not reach another's entries by naming its address.
    let src = endpoint_at(ifindex, pkt.saddr).ok_or(DropReason::Spoofed)?;
    if src.ep.ifindex != ifindex {
        return Err(DropReason::Spoofed);
    }
    // And its frames carry its own MAC: another's would move the bridge's
    // forwarding entry for that MAC to this port.
    let eth_src = unsafe { *ptr_at::<[u8; 6]>(ctx, 6).ok_or(DropReason::Malformed)? };
    if eth_src != src.ep.mac {
        return Err(DropReason::MacSpoofed);
    }
    frag::first_seen(&pkt);
    // A reply of a published connection (only a published port's backend
    // has them).
    let is_backend = src.flags & EP_F_BACKEND != 0;
    if is_backend
        && pkt.has_ports()
        && let Some(v) = CT.get_ptr_mut(pkt.flow())
    {
        if ttl::expired(&pkt) {
            // Routed untranslated, Linux answers (time exceeded).
            return Ok(TC_ACT_OK);
        }
        let entry = unsafe {
            ct::refresh(
                &raw mut (*v).flags,
                &raw mut (*v).expires_ns,
                pkt.proto,
                pkt.tcp_flags,
                true,
            );
            *v
        };
        nat::snat(ctx, &mut pkt, entry.orig_daddr_be, entry.orig_dport_be)?;
        if entry.client_be != 0 {
            let dport = pkt.dport;
            nat::dnat(ctx, &mut pkt, entry.client_be, dport)?;
        }
        if entry.client_ifindex != 0 {
            let client = endpoint_ref(pkt.daddr).ok_or(DropReason::NoBackend)?;
            return redirect::to_container(ctx, &mut pkt, &client.ep);
        }
        return redirect::to_uplink_via(ctx, &mut pkt, entry.uplink_ifindex, &entry.macs);
    }
    // A later fragment follows its first (or goes on untranslated below,
    // where it needs no translation).
    if pkt.frag == Frag::Later
        && let Some(action) = frag::follow(ctx, &mut pkt)?
    {
        return Ok(action);
    }
    // An ICMP error about a flow pier translated for or to this container.
    if pkt.l4 == L4::Error
        && let Some(action) = icmp::from_container(ctx, &mut pkt, ifindex)?
    {
        return Ok(action);
    }
    // Its network, as its endpoint entry carries it.
    let net = NetworkVal {
        flags: src.net_flags,
        gateway_be: src.gateway_be,
    };
    let to_host = is_host_addr(pkt.daddr);
    // Hairpin: a container dialling a published port on a host address,
    // the gateways of pier's bridges included (its own network's, as
    // `host.docker.internal` resolves to), but not from `--internal` networks.
    if net.flags & NET_F_INTERNAL == 0
        && pkt.has_ports()
        && to_host
        && let Some((key, port)) = published(pkt.daddr, pkt.dport, pkt.proto)
    {
        // The same source policy as from outside (the client is this
        // container's address).
        if !policy_allows(&key, port, pkt.saddr, 0) {
            count_port_drop(&key, ctx.len());
            return Err(DropReason::PolicyDenied);
        }
        if ttl::expired(&pkt) {
            // Linux would route it to the backend: it answers from the gateway.
            return ttl::answer(ctx, &pkt, net.gateway_be, ifindex);
        }
        count_port(port.slot, ctx.len());
        if port.backend_be == pkt.saddr {
            // Its own published port: a packet from its own address would be
            // a martian, so it comes from the gateway of the backend's network
            // (the backend is this container).
            let gw = src.gateway_be;
            let client = pkt.saddr;
            let sport = pkt.sport;
            nat::snat(ctx, &mut pkt, gw, sport)?;
            if track(&pkt, port.backend_be, port.backend_port_be, ifindex, client) {
                traced_new(ctx, port.backend_be, port.backend_port_be);
            }
        } else if track(&pkt, port.backend_be, port.backend_port_be, ifindex, 0) {
            traced_new(ctx, port.backend_be, port.backend_port_be);
        }
        nat::dnat(ctx, &mut pkt, port.backend_be, port.backend_port_be)?;
        return redirect::to_container(ctx, &mut pkt, &port.ep);
    }
    if let Some(dst_net) = subnet_of(pkt.daddr) {
        if dst_net != src.ep.network_id {
            return Err(DropReason::Isolation);
        }
        let dst = endpoint_ref(pkt.daddr);
        if net.flags & NET_F_NO_ICC != 0
            && pkt.daddr != net.gateway_be
            && pkt.daddr != pkt.saddr
            && dst.is_some()
        {
            return Err(DropReason::NoIcc);
        }
        if let Some(d) = dst {
            // Through the bridge into its neighbour: counted as sent to it.
            events::pier_count_tx(d.ep.ifindex, ctx.len());
        }
        return Ok(TC_ACT_OK);
    }
    if net.flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    // The host's own addresses, and multicast/broadcast (224.0.0.0 and up),
    // which the host never forwards, are for the host stack.
    if to_host || pkt.daddr.to_ne_bytes()[0] >= 224 {
        return Ok(TC_ACT_OK);
    }
    // A reply of a published connection whose entry is gone (evicted by the
    // LRU, or expired while idle): it still leaves as the published port.
    if is_backend
        && pkt.has_ports()
        && let Some(host) = unsafe {
            BACKENDS.get(PortKey {
                addr_be: pkt.saddr,
                port_be: pkt.sport,
                proto: pkt.proto,
                _pad: 0,
            })
        }
        .copied()
        && let Some(up) = route::uplink_for(ctx, &pkt)
    {
        if ttl::expired(&pkt) {
            return Ok(TC_ACT_OK);
        }
        let addr = if host.addr_be != 0 {
            host.addr_be
        } else {
            up.addr_be
        };
        retrack(&pkt, addr, host.port_be, up.ifindex);
        events::kcount(CT_RETRACKED);
        events::trace(ctx, EV_RETRACK, addr, host.port_be);
        nat::snat(ctx, &mut pkt, addr, host.port_be)?;
        return redirect::to_uplink(ctx, &mut pkt, up.ifindex);
    }
    masquerade(ctx, &mut pkt, net.flags & NET_F_MASQUERADE != 0, ifindex)
}

/// Leaving the host: with `masq`, rewrite the source to the uplink's address
/// and an allocated port; without, record the flow unchanged (identity entry)
/// so its replies pass the uplink's exposure check, and let it be routed.
#[inline(always)]
fn masquerade(ctx: &TcContext, pkt: &mut Pkt, masq: bool, veth: u32) -> Result<i32, DropReason> {
    if !pkt.has_ports() {
        if masq && pkt.l4 == L4::Error {
            // Quoting no flow of this container's: nothing to translate
            // it into, and its own address must not leave.
            return Err(DropReason::IcmpForged);
        }
        if masq && pkt.frag == Frag::Later {
            return Err(DropReason::FragNoFirst);
        }
        if masq {
            return Err(DropReason::NatUnsupported);
        }
        return Ok(TC_ACT_OK);
    }
    if !masq {
        track_routed(pkt, veth)?;
        return Ok(TC_ACT_OK);
    }
    if pkt.l4 == L4::EchoReply {
        // No ping from outside reaches a masquerading network, so this
        // answers none; and its identifier is the peer's, not a port of
        // ours to allocate.
        return Err(DropReason::NatUnsupported);
    }
    if ttl::expired(pkt) {
        // (TTL ≤ 1: routed untranslated, Linux answers.)
        return Ok(TC_ACT_OK);
    }
    let fkey = pkt.flow();
    let nat = match SNAT_FWD.get_ptr_mut(fkey) {
        Some(v) => unsafe {
            ct::refresh(
                &raw mut (*v).flags,
                &raw mut (*v).expires_ns,
                pkt.proto,
                pkt.tcp_flags,
                false,
            );
            *v
        },
        None => {
            // A new flow leaves by the uplink its route picks, from that
            // route's source address; its entry remembers both.
            let Some(up) = route::uplink_for(ctx, pkt) else {
                return Ok(TC_ACT_OK);
            };
            let v = allocate(ctx, &fkey, &up, pkt, ct::now(), veth)?;
            events::kcount(NAT_ALLOCATED);
            events::trace(ctx, EV_MASQ, v.addr_be, v.port_be);
            v
        }
    };
    // (An entry of an agent before per-flow uplinks has none: the first.)
    let ifindex = match nat.ifindex {
        0 => UPLINK.get(0).map_or(0, |u| u.ifindex),
        i => i,
    };
    nat::snat(ctx, pkt, nat.addr_be, nat.port_be)?;
    redirect::to_uplink(ctx, pkt, ifindex)
}

/// Re-create the conntrack entry of a published connection from its reply.
#[inline(always)]
fn retrack(pkt: &Pkt, host_addr: u32, host_port: u16, uplink: u32) {
    let flags = ct::next_flags(0, pkt, true);
    let val = pier_common::ct::CtVal {
        orig_daddr_be: host_addr,
        orig_dport_be: host_port,
        _pad: 0,
        client_ifindex: 0,
        uplink_ifindex: uplink,
        expires_ns: ct::expiry(ct::now(), pkt, flags),
        flags,
        client_be: 0,
        macs: [[0; 6]; 2],
        _pad2: 0,
    };
    let _ = CT.insert(pkt.flow(), val, 0);
}

/// Record a routed (not masqueraded) flow of the container behind `veth`
/// so its replies are let in. A known flow's entry is brought up to date in
/// place (no map write per packet); a new one that finds the tables full is
/// dropped (`NatExhausted`, counted): its replies could not come in.
#[inline(always)]
fn track_routed(pkt: &Pkt, veth: u32) -> Result<(), DropReason> {
    let fkey = pkt.flow();
    if let Some(v) = SNAT_FWD.get_ptr_mut(fkey) {
        unsafe {
            ct::refresh(
                &raw mut (*v).flags,
                &raw mut (*v).expires_ns,
                pkt.proto,
                pkt.tcp_flags,
                false,
            )
        };
        return Ok(());
    }
    let flags = ct::next_flags(0, pkt, false);
    let val = NatVal {
        addr_be: pkt.saddr,
        port_be: pkt.sport,
        _pad: 0,
        expires_ns: ct::expiry(ct::now(), pkt, flags),
        flags,
        ifindex: 0,
    };
    let rval = NatVal {
        ifindex: veth,
        ..val
    };
    let rkey = FlowKey {
        saddr_be: pkt.daddr,
        daddr_be: pkt.saddr,
        sport_be: pkt.dport,
        dport_be: pkt.sport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    SNAT_REV
        .insert(rkey, rval, 0)
        .map_err(|_| DropReason::NatExhausted)?;
    if SNAT_FWD.insert(fkey, val, 0).is_err() {
        let _ = SNAT_REV.remove(rkey);
        return Err(DropReason::NatExhausted);
    }
    Ok(())
}

/// `bpf_map_update_elem` with `BPF_NOEXIST` on a key present.
const EEXIST: i32 = 17;

/// Pick a source port on the uplink address for `fkey` and record both
/// directions: the flow's own port when it is free (as Linux's MASQUERADE
/// keeps it: one container gets its whole ephemeral range towards one peer),
/// else random ones from `NAT_PORT_MIN..=NAT_PORT_MAX`. A port is free when
/// the reverse entry can be claimed (`BPF_NOEXIST`: two flows never share a
/// port towards the same peer), it is not published on the uplink address,
/// and no socket of the host's (listening or connected) owns that tuple.
/// A full table fails the flow at once (`NatExhausted`): the maps are plain
/// hashes, so no live flow's entry is ever evicted to make room.
#[inline(always)]
fn allocate(
    ctx: &TcContext,
    fkey: &FlowKey,
    up: &UplinkVal,
    pkt: &Pkt,
    now: u64,
    veth: u32,
) -> Result<NatVal, DropReason> {
    const RANGE: u32 = (NAT_PORT_MAX - NAT_PORT_MIN) as u32 + 1;
    let flags = ct::next_flags(0, pkt, false);
    let expires_ns = ct::expiry(now, pkt, flags);
    let own = u16::from_be(fkey.sport_be);
    for i in 0..=NAT_PORT_TRIES {
        let port = if i == 0 {
            if own < NAT_PORT_MIN || pkt.l4 != L4::Ports {
                continue;
            }
            own
        } else {
            // A fresh random port each try: consecutive ones from one
            // random start fail together inside a run of taken ports (a
            // container's own ephemeral range is one: at 50 000 flows from
            // three containers, 2 500 SYNs found 64 taken in a row).
            (NAT_PORT_MIN as u32 + (unsafe { bpf_get_prandom_u32() } % RANGE)) as u16
        };
        let port_be = port.to_be();
        if pkt.l4 == L4::Ports
            && (published(up.addr_be, port_be, fkey.proto).is_some()
                || host_socket(ctx, fkey, up.addr_be, port_be))
        {
            continue;
        }
        let rkey = FlowKey {
            saddr_be: fkey.daddr_be,
            daddr_be: up.addr_be,
            sport_be: fkey.dport_be,
            dport_be: port_be,
            proto: fkey.proto,
            _pad: [0; 3],
        };
        let rval = NatVal {
            addr_be: fkey.saddr_be,
            port_be: fkey.sport_be,
            _pad: 0,
            expires_ns,
            flags,
            ifindex: veth,
        };
        match SNAT_REV.insert(rkey, rval, BPF_NOEXIST as u64) {
            Ok(()) => {}
            // The port is another flow's towards this peer: the next one.
            Err(e) if e == -EEXIST => continue,
            // The table is full (or out of memory): no port would do, and
            // no live flow's entry is given up for this one.
            Err(_) => return Err(DropReason::NatExhausted),
        }
        let fval = NatVal {
            addr_be: up.addr_be,
            port_be,
            _pad: 0,
            expires_ns,
            flags,
            ifindex: up.ifindex,
        };
        if SNAT_FWD.insert(fkey, fval, 0).is_err() {
            let _ = SNAT_REV.remove(rkey);
            return Err(DropReason::NatExhausted);
        }
        return Ok(fval);
    }
    Err(DropReason::NatExhausted)
}

/// Does a socket of the host's own own the tuple a reply to the masqueraded
/// flow would carry (peer → uplink address:`port_be`)? A listening socket
/// on that port counts too.
#[inline(always)]
fn host_socket(ctx: &TcContext, fkey: &FlowKey, addr_be: u32, port_be: u16) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: fkey.daddr_be,
                daddr: addr_be,
                sport: fkey.dport_be,
                dport: port_be,
            },
        },
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let skb = ctx.skb.skb as *mut core::ffi::c_void;
    let netns = BPF_F_CURRENT_NETNS as u64;
    let sk = unsafe {
        if fkey.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(skb, &mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(skb, &mut tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk as *mut core::ffi::c_void) };
    true
}
