//! IPv4 fragment tracking: later fragments carry no ports, so they follow
//! the decision made for the first fragment of their datagram.

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
    /// `bpf_ktime_get_ns` after which later fragments no longer match.
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragVal>() == 40);

crate::pod!(FragKey, FragVal);
