//! Publishing and masquerade layouts.
use crate::endpoint::EndpointVal;

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
    /// The backend's interface, as its `PIER_ENDPOINTS` entry has it: a
    /// packet to the port is redirected with no endpoint lookup.
    pub ep: EndpointVal,
    /// The port's counter in `PIER_PORT_STATS` (a per-CPU array: an index,
    /// no hash lookup), assigned by the agent: a port keeps its slot while
    /// it is published (across syncs and restarts); a slot is zeroed before
    /// it is given to a new port.
    pub slot: u32,
}

const _: () = assert!(core::mem::size_of::<PortVal>() == 32);

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
    /// packet; 0 for routed flows); in the reverse entry, the container's
    /// host-side veth (0: an older agent's entry).
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

/// Words of [`PortBits`].
pub const PORT_BITS_WORDS: usize = 1024;

/// One bit per destination port (host order; word `p / 64`, bit `p % 64`):
/// `PIER_PORT_UNPUB[0]` sets the bit of each port no IPv4 published port
/// uses (any protocol, any address), so a packet to it needs no
/// `PIER_PORTS` lookup. All zero (the map's state until the agent writes
/// it): every port may be published.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBits {
    pub words: [u64; PORT_BITS_WORDS],
}

impl Default for PortBits {
    fn default() -> Self {
        PortBits {
            words: [0; PORT_BITS_WORDS],
        }
    }
}

impl PortBits {
    /// Set the bit of port `port` (host order).
    pub fn set(&mut self, port: u16) {
        self.words[port as usize / 64] |= 1 << (port % 64);
    }

    /// Clear the bit of port `port` (host order).
    pub fn clear(&mut self, port: u16) {
        self.words[port as usize / 64] &= !(1 << (port % 64));
    }

    /// Every bit set but those of `ports` (host order): the unpublished ports.
    pub fn all_but(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut b = PortBits {
            words: [u64::MAX; PORT_BITS_WORDS],
        };
        for p in ports {
            b.clear(p);
        }
        b
    }

    /// The bits set in both.
    pub fn and(&self, o: &PortBits) -> Self {
        let mut b = *self;
        for (w, x) in b.words.iter_mut().zip(o.words.iter()) {
            *w &= *x;
        }
        b
    }
}

const _: () = assert!(core::mem::size_of::<PortBits>() == 8192);

crate::pod!(PortKey, PortVal, NatVal, SockKey, SockVal, PortBits);
