//! Endpoint, network and uplink layouts.

/// A container interface, found by its address (`PIER_ENDPOINTS6` holds
/// these; `PIER_ENDPOINTS` an [`EndpointVal4`] around one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointVal {
    /// Host-side veth (redirect target).
    pub ifindex: u32,
    pub network_id: u32,
    /// The container's MAC (destination of redirected frames).
    pub mac: [u8; 6],
    /// The bridge's MAC (source of redirected frames).
    pub bridge_mac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<EndpointVal>() == 20);

/// A container interface, found by its IPv4 address: the endpoint, with
/// its network's [`NetworkVal`] (the lookup that checks a container's
/// source address is the only one its packets need for that) and `EP_F_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointVal4 {
    pub ep: EndpointVal,
    /// Its network's `NET_F_*` flags and gateway (as `PIER_NETWORKS` has them).
    pub net_flags: u32,
    pub gateway_be: u32,
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<EndpointVal4>() == 32);

/// A container's IPv4 endpoint by its host-side veth's ifindex (below
/// `crate::maps::IF_PKTS_LEN`): `PIER_VETH_EP4`, a copy of the
/// `PIER_ENDPOINTS` entry of `addr_be`, read with an array load where the
/// hash lookup would cost tens of ns. All zero: none (the hash is asked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethEp4 {
    pub addr_be: u32,
    pub ep: EndpointVal4,
}

const _: () = assert!(core::mem::size_of::<VethEp4>() == 36);

/// `EndpointVal4::flags`: a published port leads to this address, so its
/// packets may be replies of published connections (`PIER_CT`,
/// `PIER_BACKENDS`); without it, neither is looked up.
pub const EP_F_BACKEND: u32 = 1;

/// `NetworkVal::flags` bits.
pub const NET_F_INTERNAL: u32 = 1;
pub const NET_F_NO_ICC: u32 = 2;
pub const NET_F_MASQUERADE: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkVal {
    pub flags: u32,
    pub gateway_be: u32,
}

const _: () = assert!(core::mem::size_of::<NetworkVal>() == 8);

/// The uplink masquerade uses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkVal {
    pub ifindex: u32,
    pub addr_be: u32,
}

const _: () = assert!(core::mem::size_of::<UplinkVal>() == 8);

/// An IPv6 address as its 16 bytes sit in the packet (`_be` words).
pub type Addr6 = [u32; 4];

/// A container's host-side veth, found by its ifindex: which network the
/// frames it carries belong to, whatever their addresses (IPv6 link-local
/// and neighbour discovery carry none of pier's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethVal {
    pub network_id: u32,
    /// The bridge's MAC: a link-local unicast frame to any other MAC is for
    /// another container.
    pub bridge_mac: [u8; 6],
    /// The container's MAC: the only Ethernet source its frames may carry.
    pub mac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<VethVal>() == 16);

crate::pod!(
    EndpointVal,
    EndpointVal4,
    NetworkVal,
    UplinkVal,
    VethVal,
    VethEp4
);
