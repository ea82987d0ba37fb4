//! Bounds-checked packet access: the one idiom every program uses, and the
//! IPv4 parser that turns a frame into a [`Pkt`].
use aya_ebpf::programs::TcContext;
use pier_common::{ct::FlowKey, drop::DropReason, frag::FragKey};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Offsets inside the IPv4 header (after the Ethernet header).
pub const IP_TTL_OFF: usize = ETH_HLEN + 8;
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// The ICMP errors that quote a packet pier may have translated.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// A pointer to a `T` at `off` bytes into the packet, or `None` when the packet
/// is too short. Re-derive after any helper that may move packet data.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// The ethertype (host order) and IPv4 protocol of a packet, when it has them.
#[inline(always)]
pub fn l3_l4(ctx: &TcContext) -> (Option<u16>, Option<u8>) {
    let Some(proto) = ptr_at::<[u8; 2]>(ctx, 12) else {
        return (None, None);
    };
    let ethertype = u16::from_be_bytes(unsafe { *proto });
    if ethertype != ETH_P_IP {
        return (Some(ethertype), None);
    }
    // Offset of the protocol byte in the IPv4 header.
    let l4 = ptr_at::<u8>(ctx, ETH_HLEN + 9).map(|p| unsafe { *p });
    (Some(ethertype), l4)
}

#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len_be: u16,
    id_be: u16,
    frag_off_be: u16,
    ttl: u8,
    proto: u8,
    csum_be: u16,
    saddr_be: u32,
    daddr_be: u32,
}

/// What the transport header lets us translate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// No usable ports: fragment, unknown protocol, ICMP other than echo.
    None,
    /// TCP or UDP ports.
    Ports,
    /// ICMP echo request: the identifier is the source "port".
    EchoRequest,
    /// ICMP echo reply: the identifier is the destination "port".
    EchoReply,
    /// ICMP error (destination unreachable, time exceeded, parameter
    /// problem): the quoted packet says which flow it is about ([`inner`]).
    Error,
}

/// Where a packet stands in fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// A whole datagram.
    None,
    /// Offset 0 with more fragments: carries the transport header.
    First,
    /// Offset > 0: no transport header.
    Later,
}

/// An IPv4 packet's addresses and ports, all as they sit in the packet.
#[derive(Clone, Copy)]
pub struct Pkt {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub l4: L4,
    pub l4_off: usize,
    pub ttl: u8,
    pub frag: Frag,
    /// The datagram as it arrived (before any rewrite), for fragments.
    pub frag_key: FragKey,
}

impl Pkt {
    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        matches!(self.l4, L4::Ports | L4::EchoRequest | L4::EchoReply)
    }

    #[inline(always)]
    pub fn flow(&self) -> FlowKey {
        FlowKey {
            saddr_be: self.saddr,
            daddr_be: self.daddr,
            sport_be: self.sport,
            dport_be: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// Offset of the transport checksum, for packets with ports.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        match self.proto {
            IPPROTO_TCP => self.l4_off + 16,
            IPPROTO_UDP => self.l4_off + 6,
            _ => self.l4_off + 2,
        }
    }
}

/// Parse an Ethernet + IPv4 frame. `Ok(None)`: not IPv4 (ARP, IPv6, ...).
#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Result<Option<Pkt>, DropReason> {
    let Some(eth_proto) = ptr_at::<u16>(ctx, 12) else {
        return Ok(None);
    };
    if u16::from_be(unsafe { *eth_proto }) != ETH_P_IP {
        return Ok(None);
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).ok_or(DropReason::Malformed)?;
    let ip = unsafe { &*ip };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 {
        return Err(DropReason::Malformed);
    }
    // The whole header, options too, must be there (a later fragment or an
    // unknown protocol reads nothing past it, so this is the only check).
    if ctx.data() + ETH_HLEN + ihl * 4 > ctx.data_end() {
        return Err(DropReason::Malformed);
    }
    let mut pkt = Pkt {
        saddr: ip.saddr_be,
        daddr: ip.daddr_be,
        sport: 0,
        dport: 0,
        proto: ip.proto,
        tcp_flags: 0,
        l4: L4::None,
        l4_off: ETH_HLEN + ihl * 4,
        ttl: ip.ttl,
        frag: Frag::None,
        frag_key: FragKey {
            saddr_be: ip.saddr_be,
            daddr_be: ip.daddr_be,
            id_be: ip.id_be,
            proto: ip.proto,
            _pad: 0,
        },
    };
    let frag = u16::from_be(ip.frag_off_be);
    if frag & 0x1fff != 0 {
        // A later fragment carries no transport header.
        pkt.frag = Frag::Later;
        return Ok(Some(pkt));
    }
    if frag & 0x2000 != 0 {
        pkt.frag = Frag::First;
    }
    let off = pkt.l4_off;
    match pkt.proto {
        IPPROTO_TCP => {
            let p = ptr_at::<[u8; 20]>(ctx, off).ok_or(DropReason::Malformed)?;
            let h = unsafe { &*p };
            pkt.sport = u16::from_ne_bytes([h[0], h[1]]);
            pkt.dport = u16::from_ne_bytes([h[2], h[3]]);
            pkt.tcp_flags = h[13];
            pkt.l4 = L4::Ports;
        }
        IPPROTO_UDP => {
            let p = ptr_at::<[u8; 8]>(ctx, off).ok_or(DropReason::Malformed)?;
            let h = unsafe { &*p };
            pkt.sport = u16::from_ne_bytes([h[0], h[1]]);
            pkt.dport = u16::from_ne_bytes([h[2], h[3]]);
            pkt.l4 = L4::Ports;
        }
        IPPROTO_ICMP => {
            let p = ptr_at::<[u8; 8]>(ctx, off).ok_or(DropReason::Malformed)?;
            let h = unsafe { &*p };
            let id = u16::from_ne_bytes([h[4], h[5]]);
            match h[0] {
                ICMP_ECHO_REQUEST => {
                    pkt.sport = id;
                    pkt.l4 = L4::EchoRequest;
                }
                ICMP_ECHO_REPLY => {
                    pkt.dport = id;
                    pkt.l4 = L4::EchoReply;
                }
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB => {
                    pkt.l4 = L4::Error;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(Some(pkt))
}

/// The packet an ICMP error quotes: its IPv4 header and the first 8 bytes of
/// its transport header, as the error's addressee sent them.
#[derive(Clone, Copy)]
pub struct Inner {
    /// Offset of the quoted IPv4 header.
    pub ip_off: usize,
    /// Offset of the quoted transport header.
    pub l4_off: usize,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`L4::Ports`] or [`L4::EchoRequest`] (only quotes pier can translate).
    pub l4: L4,
    /// The quoted transport checksum is there and in use (TCP: the whole
    /// field quoted; UDP: non-zero), so it is kept right across rewrites.
    pub l4_csum: bool,
}

impl Inner {
    /// The flow a reply to the quoted packet would be: the key the
    /// conntrack and NAT maps hold for the way back.
    #[inline(always)]
    pub fn reply_flow(&self) -> FlowKey {
        FlowKey {
            saddr_be: self.daddr,
            daddr_be: self.saddr,
            sport_be: self.dport,
            dport_be: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// Offset of the quoted transport checksum.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        match self.proto {
            IPPROTO_TCP => self.l4_off + 16,
            IPPROTO_UDP => self.l4_off + 6,
            _ => self.l4_off + 2,
        }
    }
}

/// Parse the quote of an ICMP error (`pkt.l4 == L4::Error`). `None`: the
/// quote is truncated, malformed, a later fragment, or of a protocol pier
/// does not translate; such an error is never rewritten.
#[inline(always)]
pub fn inner(ctx: &TcContext, pkt: &Pkt) -> Option<Inner> {
    // `l4_off` is at most 14 + 60: the mask changes nothing but keeps the
    // verifier's bounds on it (it may come back from a stack spill without).
    let ip_off = (pkt.l4_off & 0x7f) + 8;
    let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, ip_off)? };
    let ihl = (ip.ver_ihl & 0x0f) as usize;
    if ip.ver_ihl >> 4 != 4 || ihl < 5 || u16::from_be(ip.frag_off_be) & 0x1fff != 0 {
        return None;
    }
    let l4_off = ip_off + ihl * 4;
    let h = unsafe { &*ptr_at::<[u8; 8]>(ctx, l4_off)? };
    let mut inner = Inner {
        ip_off,
        l4_off,
        saddr: ip.saddr_be,
        daddr: ip.daddr_be,
        sport: u16::from_ne_bytes([h[0], h[1]]),
        dport: u16::from_ne_bytes([h[2], h[3]]),
        proto: ip.proto,
        l4: L4::Ports,
        l4_csum: false,
    };
    match ip.proto {
        IPPROTO_TCP => inner.l4_csum = ptr_at::<[u8; 18]>(ctx, l4_off).is_some(),
        IPPROTO_UDP => inner.l4_csum = h[6] != 0 || h[7] != 0,
        IPPROTO_ICMP if h[0] == ICMP_ECHO_REQUEST => {
            // The identifier is the source "port", as in [`ipv4`].
            inner.sport = u16::from_ne_bytes([h[4], h[5]]);
            inner.dport = 0;
            inner.l4 = L4::EchoRequest;
            inner.l4_csum = true;
        }
        _ => return None,
    }
    Some(inner)
}
