//! Fragment tracking (IPv4 and IPv6): later fragments carry no ports, so
//! they follow the decision made for the first fragment of their datagram.
use crate::endpoint::Addr6;

/// A datagram, as its fragments arrive: addresses, protocol and IP ID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub id_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 12);

/// `FragVal::flags`: the first fragment went into a container
/// (`bpf_redirect_peer`, MACs rewritten); without it, out of an uplink
/// (`bpf_redirect_neigh`).
pub const FRAG_F_PEER: u32 = 1;

/// What the first fragment of a datagram got: the addresses written into it
/// and where it was redirected.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragVal {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub ifindex: u32,
    pub flags: u32,
    pub mac: [u8; 6],
    pub bridge_mac: [u8; 6],
    pub _pad: u32,
    /// The programs' clock (`ct::now`, ns) after which later fragments no longer match.
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragVal>() == 40);

/// An IPv6 datagram, as its fragments arrive: addresses, the fragment
/// header's identification and the next header it names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub id_be: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FragKey6>() == 40);

/// What the first fragment of an IPv6 datagram got ([`FragVal`] with
/// IPv6 addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragVal6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub ifindex: u32,
    pub flags: u32,
    pub mac: [u8; 6],
    pub bridge_mac: [u8; 6],
    pub _pad: u32,
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragVal6>() == 64);

crate::pod!(FragKey, FragVal, FragKey6, FragVal6);
