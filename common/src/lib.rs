//! Byte layouts shared by the kernel programs (`dataplane-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding, no `bool`, and
//! network-byte-order fields carry a `_be` suffix. A `_be` field holds the
//! bytes exactly as they sit in the packet: user space converts with
//! `u32::from_ne_bytes(ip.octets())` and `port.to_be()`. The `user` feature
//! adds `aya::Pod` so the agent can read and write them in maps.
#![no_std]

pub mod config;
pub mod ct;
pub mod drop;
pub mod endpoint;
pub mod event;
pub mod frag;
pub mod maps;
pub mod metrics;
pub mod nat;
pub mod nat6;
pub mod policy;

/// Implements `aya::Pod` for plain map types when the `user` feature is on.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use pod;
