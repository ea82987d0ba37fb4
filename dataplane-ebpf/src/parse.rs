//! Bounds-checked packet access: the one idiom every program uses, and the
//! IPv4 parser that turns a frame into a [`Pkt`].
use aya_ebpf::programs::TcContext;
use pier_common::{ct::FlowKey, drop::DropReason};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Offsets inside the IPv4 header (after the Ethernet header).
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

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
}

impl Pkt {
    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        self.l4 != L4::None
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
    let mut pkt = Pkt {
        saddr: ip.saddr_be,
        daddr: ip.daddr_be,
        sport: 0,
        dport: 0,
        proto: ip.proto,
        tcp_flags: 0,
        l4: L4::None,
        l4_off: ETH_HLEN + ihl * 4,
    };
    // Any fragment (more-fragments bit or an offset) carries no usable ports.
    if u16::from_be(ip.frag_off_be) & 0x3fff != 0 {
        return Ok(Some(pkt));
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
                _ => {}
            }
        }
        _ => {}
    }
    Ok(Some(pkt))
}
