//! Connection-tracking layouts.

/// A flow as seen in one direction. For ICMP echo, the identifier is the
/// port: `sport_be` for requests, `dport_be` for replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// `CtVal::flags` / `NatVal::flags` bits.
pub const CT_F_FIN_ORIG: u32 = 1;
pub const CT_F_FIN_REPLY: u32 = 2;
pub const CT_F_RST: u32 = 4;

/// A published connection, found by its reply direction (backend → client).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtVal {
    /// The address and port the client dialled (what replies must come from).
    pub orig_daddr_be: u32,
    pub orig_dport_be: u16,
    pub _pad: u16,
    /// Host-side veth of a client container (hairpin), or 0 for a client
    /// behind an uplink.
    pub client_ifindex: u32,
    /// The uplink the client's packets arrived on.
    pub uplink_ifindex: u32,
    /// The programs' clock (`ct::now`, ns) after which the entry may be retired.
    pub expires_ns: u64,
    pub flags: u32,
    /// A hairpin client dialling its own published port is seen by itself
    /// as coming from the gateway; replies go back to this address. 0: none.
    pub client_be: u32,
    /// The replies' Ethernet header out of the uplink, as the client's first
    /// packet came in swapped: its next hop's MAC, then the uplink's. All
    /// zero: not known (hairpin, re-tracked), the next hop is resolved.
    pub macs: [[u8; 6]; 2],
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<CtVal>() == 48);

crate::pod!(FlowKey, CtVal);
