//! IPv6 publishing, conntrack and masquerade layouts. They are the IPv4
//! ones of `nat.rs` / `ct.rs` with 16-byte addresses ([`Addr6`], packet
//! order), in maps of their own (`PIER_*6`): the IPv4 maps, their keys and
//! their programs' paths stay as they are.
use crate::endpoint::Addr6;

/// A published host port on IPv6. `addr` all zero: every host IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey6 {
    pub addr: Addr6,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<PortKey6>() == 20);

/// Where an IPv6 published port leads (the container's IPv6 address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortVal6 {
    pub backend: Addr6,
    pub backend_port_be: u16,
    /// Low byte: `crate::policy::POLICY_F_*`, which scopes hold rules for
    /// this port. High byte: the port's policy scope number
    /// (`PolicyKey::port6`): 0 for `::`, else one per IPv6 host address the
    /// agent publishes on (at most [`crate::policy::SCOPES6`]). Packed: the
    /// IPv6 uplink path's stack has no 4 bytes to spare.
    pub policy: u16,
    /// The port's counter in `PIER_PORT_STAT6` (per-CPU array), as
    /// `crate::nat::PortVal::slot`.
    pub slot: u32,
}

const _: () = assert!(core::mem::size_of::<PortVal6>() == 24);

impl PortVal6 {
    pub const fn flags(&self) -> u16 {
        self.policy & 0xff
    }
    pub const fn scope(&self) -> u32 {
        (self.policy >> 8) as u32
    }
}

/// An IPv6 flow in one direction (ICMPv6 echo: the identifier is the port,
/// `sport_be` for requests, `dport_be` for replies).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);

/// A published IPv6 connection, found by its reply direction (backend →
/// client): `crate::ct::CtVal` with IPv6 addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtVal6 {
    /// What the client dialled (what replies must come from).
    pub orig_daddr: Addr6,
    pub orig_dport_be: u16,
    pub _pad: u16,
    /// Host-side veth of a client container (hairpin), 0: behind an uplink.
    pub client_ifindex: u32,
    pub uplink_ifindex: u32,
    pub flags: u32,
    pub expires_ns: u64,
    /// A hairpin client on its own published port saw the gateway as its
    /// peer; replies go back to this address. All zero: none.
    pub client: Addr6,
}

const _: () = assert!(core::mem::size_of::<CtVal6>() == 56);

/// An IPv6 masquerade translation: the address and port to write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatVal6 {
    pub addr: Addr6,
    pub port_be: u16,
    pub _pad: u16,
    pub flags: u32,
    pub expires_ns: u64,
    /// The uplink a masqueraded flow leaves by (its route's, at its first
    /// packet); 0 in the reverse entry and for routed flows.
    pub ifindex: u32,
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<NatVal6>() == 40);

/// An IPv6 uplink masquerade leaves by (`PIER_UPLINK6`: the first;
/// `PIER_UPLINKS6`: each by ifindex).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkVal6 {
    pub ifindex: u32,
    pub addr: Addr6,
}

const _: () = assert!(core::mem::size_of::<UplinkVal6>() == 20);

/// A socket-hook translation on IPv6: socket cookie and the backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockKey6 {
    pub cookie: u64,
    pub addr: Addr6,
    pub port_be: u16,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<SockKey6>() == 32);

/// What an IPv6 socket dialled (shown by getpeername6 / recvmsg6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockVal6 {
    pub addr: Addr6,
    pub port_be: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<SockVal6>() == 20);

crate::pod!(
    PortKey6, PortVal6, FlowKey6, CtVal6, NatVal6, UplinkVal6, SockKey6, SockVal6
);
