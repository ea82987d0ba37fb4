//! IPv6: the parser (extension headers walked with a fixed bound) and what
//! the TC programs do with IPv6 frames (the translation itself is
//! `nat6.rs`). The rules are the same isolation IPv4 gets — a container's source must be
//! its own (global address on this veth, or link-local/unspecified on the
//! link only), neighbour discovery and MLD pass untouched within the bridge
//! but router advertisements and redirects from containers are dropped,
//! other networks' subnets are unreachable, `icc=false` peers too (their
//! link-local addresses included, told apart by the bridge's MAC),
//! `--internal` networks stop at their subnet, and from outside nothing
//! reaches a container subnet. A chain of extension headers pier does not
//! walk never leaves a container.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    macros::map,
    maps::{PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use pier_common::{
    drop::DropReason,
    endpoint::{Addr6, EndpointVal, NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_NO_ICC},
    frag::FragKey6,
    nat6::FlowKey6,
};

use crate::{
    lookup::network,
    maps::{ENDPOINTS6, HOST_ADDRS6, SUBNETS6, VETHS},
    nat6,
    parse::{ETH_HLEN, Frag, IPPROTO_TCP, IPPROTO_UDP, L4, ptr_at},
    verdict::verdict,
};

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMPV6: u8 = 58;
/// At most this many extension headers are walked ...
pub const IPV6_EXT_MAX: usize = 6;
/// ... and the transport header must start within this many bytes of the
/// IPv6 header; a longer chain is not understood.
pub const IPV6_L4_MAX: usize = 256;
const IPV6_HLEN: usize = 40;

const NH_HOPOPTS: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AUTH: u8 = 51;
const NH_DSTOPTS: u8 = 60;
const NH_MOBILITY: u8 = 135;
const NH_HIP: u8 = 139;
const NH_SHIM6: u8 = 140;

pub const ICMP6_DEST_UNREACH: u8 = 1;
pub const ICMP6_PARAM_PROB: u8 = 4;
pub const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;

#[repr(C)]
struct Ipv6Hdr {
    vtc_flow: [u8; 4],
    payload_len_be: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: Addr6,
    daddr: Addr6,
}

/// An IPv6 packet's addresses and what its transport header says. The
/// payload length is not used (a jumbogram's is 0): nothing is resized.
#[derive(Clone, Copy)]
pub struct Pkt6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    /// The last next-header value reached.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub l4_off: usize,
    /// ICMPv6 type, when `proto` is ICMPv6 and the header is there.
    pub icmp_type: u8,
    pub tcp_flags: u8,
    pub hop_limit: u8,
    pub frag: Frag,
    /// The extension headers were not all walked (too many, too long, or a
    /// kind pier does not know): the transport header is unknown.
    pub unwalked: bool,
    /// A fragment's datagram as it arrived (before any rewrite): its
    /// addresses, the fragment header's identification and next header.
    pub frag_key: FragKey6,
}

impl Pkt6 {
    /// Ports (or an echo identifier) pier can translate.
    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        matches!(self.l4, L4::Ports | L4::EchoRequest | L4::EchoReply)
    }

    #[inline(always)]
    pub fn flow(&self) -> FlowKey6 {
        FlowKey6 {
            saddr: self.saddr,
            daddr: self.daddr,
            sport_be: self.sport,
            dport_be: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Per-CPU slots for the parsed packet (0: `pier_veth_in`, 1:
/// `pier_uplink_in`), off the stack.
#[map(name = "PIER_PKT6")]
static PKT6: PerCpuArray<Pkt6> = PerCpuArray::with_max_entries(2, 0);

/// The ethertype is IPv6.
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    matches!(ptr_at::<[u8; 2]>(ctx, 12), Some(p) if u16::from_be_bytes(unsafe { *p }) == ETH_P_IPV6)
}

/// Parse an Ethernet + IPv6 frame (the caller checked [`is_ipv6`]) into
/// `pkt` (a per-CPU slot: the packet is never a copy on the stack).
#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Pkt6) -> Result<(), DropReason> {
    let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN).ok_or(DropReason::Malformed)? };
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let _ = ip.payload_len_be;
    pkt.saddr = ip.saddr;
    pkt.daddr = ip.daddr;
    pkt.proto = ip.nexthdr;
    pkt.sport = 0;
    pkt.dport = 0;
    pkt.l4 = L4::None;
    pkt.l4_off = 0;
    pkt.icmp_type = 0;
    pkt.tcp_flags = 0;
    pkt.hop_limit = ip.hop_limit;
    pkt.frag = Frag::None;
    pkt.unwalked = false;
    pkt.frag_key = FragKey6 {
        saddr: ip.saddr,
        daddr: ip.daddr,
        id_be: 0,
        proto: 0,
        _pad: [0; 3],
    };
    let mut nh = ip.nexthdr;
    let mut off = ETH_HLEN + IPV6_HLEN;
    for _ in 0..IPV6_EXT_MAX {
        let len = match nh {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AUTH => {
                let h = unsafe { *ptr_at::<[u8; 2]>(ctx, off).ok_or(DropReason::Malformed)? };
                let len = if nh == NH_AUTH {
                    (h[1] as usize + 2) * 4
                } else {
                    (h[1] as usize + 1) * 8
                };
                nh = h[0];
                len
            }
            NH_FRAGMENT => {
                let h = unsafe { *ptr_at::<[u8; 8]>(ctx, off).ok_or(DropReason::Malformed)? };
                nh = h[0];
                pkt.frag_key.id_be = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
                pkt.frag_key.proto = nh;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                if fo & 0xfff8 != 0 {
                    // A later fragment: no transport header.
                    pkt.frag = Frag::Later;
                    pkt.proto = nh;
                    return Ok(());
                }
                if fo & 1 != 0 {
                    pkt.frag = Frag::First;
                }
                8
            }
            _ => break,
        };
        off += len;
        if off > ETH_HLEN + IPV6_L4_MAX {
            pkt.unwalked = true;
            return Ok(());
        }
    }
    pkt.proto = nh;
    match nh {
        NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AUTH | NH_FRAGMENT | NH_MOBILITY | NH_HIP
        | NH_SHIM6 => {
            pkt.unwalked = true;
            return Ok(());
        }
        _ => {}
    }
    // Bounded for the verifier (it already is, by the check in the loop).
    let off = off & 0x1ff;
    pkt.l4_off = off;
    match nh {
        IPPROTO_TCP => {
            let h = unsafe { &*ptr_at::<[u8; 20]>(ctx, off).ok_or(DropReason::Malformed)? };
            pkt.sport = u16::from_ne_bytes([h[0], h[1]]);
            pkt.dport = u16::from_ne_bytes([h[2], h[3]]);
            pkt.tcp_flags = h[13];
            pkt.l4 = L4::Ports;
        }
        IPPROTO_UDP => {
            let h = unsafe { &*ptr_at::<[u8; 8]>(ctx, off).ok_or(DropReason::Malformed)? };
            pkt.sport = u16::from_ne_bytes([h[0], h[1]]);
            pkt.dport = u16::from_ne_bytes([h[2], h[3]]);
            pkt.l4 = L4::Ports;
        }
        IPPROTO_ICMPV6 => {
            let h = unsafe { &*ptr_at::<[u8; 8]>(ctx, off).ok_or(DropReason::Malformed)? };
            pkt.icmp_type = h[0];
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match h[0] {
                ICMP6_ECHO_REQUEST => {
                    pkt.sport = id;
                    pkt.l4 = L4::EchoRequest;
                }
                ICMP6_ECHO_REPLY => {
                    pkt.dport = id;
                    pkt.l4 = L4::EchoReply;
                }
                ICMP6_DEST_UNREACH..=ICMP6_PARAM_PROB => pkt.l4 = L4::Error,
                _ => {}
            }
        }
        // ESP, no next header, other protocols: no ports.
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn first_byte(a: &Addr6) -> u8 {
    a[0].to_ne_bytes()[0]
}

/// `ff00::/8`.
#[inline(always)]
pub fn is_multicast(a: &Addr6) -> bool {
    first_byte(a) == 0xff
}

/// `fe80::/10`.
#[inline(always)]
pub fn is_link_local(a: &Addr6) -> bool {
    let b = a[0].to_ne_bytes();
    b[0] == 0xfe && b[1] & 0xc0 == 0x80
}

/// `a` is `fe80::/64` with the modified EUI-64 interface identifier of
/// `mac` (RFC 4291 appendix A), the link-local address the kernel gives an
/// interface with that MAC.
#[inline(always)]
fn is_own_link_local(a: &Addr6, mac: &[u8; 6]) -> bool {
    let (w0, w1) = (a[0].to_ne_bytes(), a[1].to_ne_bytes());
    let (w2, w3) = (a[2].to_ne_bytes(), a[3].to_ne_bytes());
    w0 == [0xfe, 0x80, 0, 0]
        && w1 == [0, 0, 0, 0]
        && w2 == [mac[0] ^ 0x02, mac[1], mac[2], 0xff]
        && w3 == [0xfe, mac[3], mac[4], mac[5]]
}

#[inline(always)]
fn is_unspecified(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0
}

#[inline(always)]
fn is_loopback(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 1u32.to_be()
}

/// `::ffff:0:0/96` (IPv4-mapped) or `::a.b.c.d` (IPv4-compatible, `::` and
/// `::1` aside): IPv4 in IPv6 clothes, which pier never translates.
#[inline(always)]
pub fn is_v4_mapped(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && (a[2] == 0xffffu32.to_be() || (a[2] == 0 && u32::from_be(a[3]) > 1))
}

#[inline(always)]
pub fn endpoint6(a: &Addr6) -> Option<EndpointVal> {
    unsafe { ENDPOINTS6.get(a) }.copied()
}

/// The pier network whose IPv6 subnet holds `a`.
#[inline(always)]
pub fn subnet6_of(a: &Addr6) -> Option<u32> {
    SUBNETS6.get(Key::new(128, *a)).copied()
}

#[inline(always)]
pub fn is_host_addr6(a: &Addr6) -> bool {
    is_loopback(a) || unsafe { HOST_ADDRS6.get(a) }.is_some()
}

/// `pier_veth_in` for an IPv6 frame (`is_ipv6`), first half: what the
/// container on this veth may send at all. `Ok(Some(action))`: decided
/// (link-local, multicast); `Ok(None)`: a global unicast packet from its own
/// address, parsed into `out`, for [`veth_in`] to route (a BPF-to-BPF call
/// of its own: its stack is not the translation stages').
#[inline(never)]
fn veth_checks(ctx: &TcContext, out: &mut Pkt6) -> Result<Option<i32>, DropReason> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let veth = unsafe { VETHS.get(ifindex) }
        .copied()
        .ok_or(DropReason::Spoofed)?;
    let eth_src = unsafe { *ptr_at::<[u8; 6]>(ctx, 6).ok_or(DropReason::Malformed)? };
    if eth_src != veth.mac {
        return Err(DropReason::MacSpoofed);
    }
    parse(ctx, out)?;
    let pkt = &*out;
    if is_v4_mapped(&pkt.saddr) || is_v4_mapped(&pkt.daddr) {
        return Err(DropReason::V4Mapped);
    }
    if pkt.unwalked {
        return Err(DropReason::Ipv6ExtHdrs);
    }
    if pkt.proto == IPPROTO_ICMPV6 && pkt.l4_off != 0 {
        match pkt.icmp_type {
            ND_ROUTER_ADVERT | ND_REDIRECT => return Err(DropReason::RouterAdvert),
            ND_NEIGHBOR_ADVERT => {
                // The target a neighbour advertisement claims: link-local,
                // or a global address of this very veth.
                let t = unsafe {
                    *ptr_at::<Addr6>(ctx, (pkt.l4_off & 0x1ff) + 8).ok_or(DropReason::Malformed)?
                };
                if is_link_local(&t) {
                    if !is_own_link_local(&t, &veth.mac) {
                        return Err(DropReason::Spoofed);
                    }
                } else if endpoint6(&t).is_none_or(|e| e.ifindex != ifindex) {
                    return Err(DropReason::Spoofed);
                }
            }
            _ => {}
        }
    }
    let dst_mc = is_multicast(&pkt.daddr);
    let dst_ll = is_link_local(&pkt.daddr);
    let net = network(veth.network_id);
    let no_icc = net.is_some_and(|n| n.flags & NET_F_NO_ICC != 0);
    // The unspecified source (duplicate address detection, MLD) only to
    // multicast, link-local sources only on the link.
    let unspec = is_unspecified(&pkt.saddr);
    let src_ll = is_link_local(&pkt.saddr);
    if (unspec && !dst_mc) || (src_ll && !dst_mc && !dst_ll) {
        return Err(DropReason::Spoofed);
    }
    // A link-local source is the container's own (from its MAC): a
    // neighbour's would let a solicitation poison that neighbour's entry.
    if src_ll && !is_own_link_local(&pkt.saddr, &veth.mac) {
        return Err(DropReason::Spoofed);
    }
    if !unspec && !src_ll {
        let src = endpoint6(&pkt.saddr).ok_or(DropReason::Spoofed)?;
        if src.ifindex != ifindex {
            return Err(DropReason::Spoofed);
        }
    }
    if dst_mc {
        // Neighbour discovery, MLD, link multicast: the host never forwards it.
        return Ok(Some(TC_ACT_OK));
    }
    if dst_ll {
        // Without icc, only the bridge (the host) is a link-local peer.
        let dmac = unsafe { *ptr_at::<[u8; 6]>(ctx, 0).ok_or(DropReason::Malformed)? };
        if no_icc && dmac != veth.bridge_mac {
            return Err(DropReason::NoIcc);
        }
        return Ok(Some(TC_ACT_OK));
    }
    Ok(None)
}

/// `pier_veth_in` for an IPv6 frame: [`veth_checks`], then replies of
/// published connections, ICMPv6 errors of translated flows, hairpin,
/// isolation, `--internal`, the host's own addresses, and what leaves.
#[inline(always)]
fn veth_in(ctx: &TcContext) -> Result<i32, DropReason> {
    // The parsed packet lives in a per-CPU slot: the frames below are deep.
    let pkt = PKT6.get_ptr_mut(0).ok_or(DropReason::Helper)?;
    let pkt = unsafe { &mut *pkt };
    if let Some(action) = veth_checks(ctx, pkt)? {
        return Ok(action);
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let veth = unsafe { VETHS.get(ifindex) }
        .copied()
        .ok_or(DropReason::Spoofed)?;
    // Flags only (an `Option<NetworkVal>` kept across the calls below
    // leaves an undefined register the verifier refuses to read).
    let (have_net, flags) = match network(veth.network_id) {
        Some(n) => (true, n.flags),
        None => (false, 0),
    };
    let no_icc = flags & NET_F_NO_ICC != 0;
    nat6::frag_first_seen(pkt);
    // A later fragment follows its first (or goes on untranslated below,
    // where it needs no translation).
    if pkt.frag == Frag::Later
        && let Some(action) = nat6::frag_follow(ctx, pkt)?
    {
        return Ok(action);
    }

    // A reply of a published connection (from outside, or hairpin).
    if pkt.has_ports()
        && let Some(action) = nat6::reply(ctx, pkt)?
    {
        return Ok(action);
    }
    // An ICMPv6 error about a flow pier translated for or to this container.
    if pkt.l4 == L4::Error
        && let Some(action) = nat6::icmp_from_container(ctx, pkt, ifindex)?
    {
        return Ok(action);
    }
    if !have_net {
        return Ok(TC_ACT_OK);
    }
    // Hairpin to a published port on a host address (not from --internal).
    if flags & NET_F_INTERNAL == 0
        && pkt.has_ports()
        && is_host_addr6(&pkt.daddr)
        && let Some(action) = nat6::hairpin(ctx, pkt, ifindex)?
    {
        return Ok(action);
    }
    if let Some(dst_net) = subnet6_of(&pkt.daddr) {
        if dst_net != veth.network_id {
            return Err(DropReason::Isolation);
        }
        if no_icc && pkt.daddr != pkt.saddr && endpoint6(&pkt.daddr).is_some() {
            return Err(DropReason::NoIcc);
        }
        return Ok(TC_ACT_OK);
    }
    if flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    if is_host_addr6(&pkt.daddr) {
        return Ok(TC_ACT_OK);
    }
    // Leaving the host: masqueraded (or routed, recorded for the replies).
    nat6::leaving(ctx, pkt, flags & NET_F_MASQUERADE != 0)
}

/// `pier_veth_in`'s IPv6 half, a BPF-to-BPF call of its own (its stack and
/// states apart from the IPv4 path's); drops counted here.
#[inline(never)]
pub fn veth_in_entry(ctx: &TcContext) -> i32 {
    verdict(ctx, veth_in(ctx))
}

/// The masquerade of the packet [`veth_in_entry`] left in its per-CPU slot
/// (it returned `nat6::MASQUERADE`), in a frame of its own.
#[inline(never)]
pub fn masquerade_entry(ctx: &TcContext) -> i32 {
    let r = match PKT6.get_ptr_mut(0) {
        Some(pkt) => nat6::masquerade6(ctx, unsafe { &mut *pkt }),
        None => Err(DropReason::Helper),
    };
    verdict(ctx, r)
}

/// `pier_uplink_in`'s IPv6 half (see [`veth_in_entry`]).
#[inline(never)]
pub fn uplink_in_entry(ctx: &TcContext) -> i32 {
    verdict(ctx, uplink_in(ctx))
}

/// `pier_uplink_in` for an IPv6 frame: a source in a container subnet is
/// spoofed; replies to masqueraded flows, IPv6 published ports and ICMPv6
/// errors about them are translated into the container; anything else to a
/// container subnet is dropped; the rest is the host's.
#[inline(always)]
pub fn uplink_in(ctx: &TcContext) -> Result<i32, DropReason> {
    let pkt = PKT6.get_ptr_mut(1).ok_or(DropReason::Helper)?;
    let pkt = unsafe { &mut *pkt };
    parse(ctx, pkt)?;
    if subnet6_of(&pkt.saddr).is_some() {
        return Err(DropReason::Spoofed);
    }
    nat6::frag_first_seen(pkt);
    if pkt.frag == Frag::Later
        && let Some(action) = nat6::frag_follow(ctx, pkt)?
    {
        return Ok(action);
    }
    if !pkt.unwalked && pkt.frag != Frag::Later {
        if pkt.l4 == L4::Error
            && let Some(action) = nat6::icmp_from_uplink(ctx, pkt)?
        {
            return Ok(action);
        }
        if pkt.has_ports()
            && let Some(action) = nat6::uplink_ports(ctx, pkt)?
        {
            return Ok(action);
        }
    }
    if subnet6_of(&pkt.daddr).is_some() {
        return Err(DropReason::NotPublished);
    }
    Ok(TC_ACT_OK)
}
