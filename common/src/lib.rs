//! Byte layouts shared by the kernel programs (`dataplane-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding, no `bool`, and
//! network-byte-order fields carry a `_be` suffix. The `user` feature adds
//! `aya::Pod` so the agent can read and write them in maps.
#![no_std]

pub mod maps;
pub mod metrics;
