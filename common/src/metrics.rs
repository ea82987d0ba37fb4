//! Counter layouts.

/// A packet and byte counter. Stored per CPU; user space sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

/// Slots of the smoke-test counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterIdx {
    /// Every packet the program saw.
    All = 0,
    /// IPv4 packets.
    Ipv4 = 1,
    /// IPv4 UDP packets.
    Udp = 2,
    /// IPv4 ICMP packets.
    Icmp = 3,
}
