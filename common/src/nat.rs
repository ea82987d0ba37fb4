//! Publishing and masquerade layouts.

/// A published host port. `addr_be == 0` means every host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<PortKey>() == 8);

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortVal {
    pub backend_be: u32,
    pub backend_port_be: u16,
    /// `crate::policy::POLICY_F_*`: 0 = no source policy (no lookup).
    pub policy: u16,
}

const _: () = assert!(core::mem::size_of::<PortVal>() == 8);

/// A masquerade translation: the address and port to write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatVal {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
    pub expires_ns: u64,
    pub flags: u32,
    /// The uplink a masqueraded flow leaves by (its route's, at its first
    /// packet); 0 in the reverse entry and for routed flows.
    pub ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<NatVal>() == 24);

/// A socket-hook translation: socket cookie plus the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockKey {
    pub cookie: u64,
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<SockKey>() == 16);

/// What the socket dialled (shown by getpeername / recvmsg).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockVal {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<SockVal>() == 8);

crate::pod!(PortKey, PortVal, NatVal, SockKey, SockVal);
