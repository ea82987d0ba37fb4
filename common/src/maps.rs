//! Map names (at most 15 bytes, the kernel's limit) and sizes.

/// Per-CPU packet/byte counters of the smoke-test program, indexed by [`crate::metrics::CounterIdx`].
pub const SMOKE_COUNTERS: &str = "SMOKE_COUNTERS";
/// Number of slots in [`SMOKE_COUNTERS`].
pub const SMOKE_COUNTERS_LEN: u32 = 4;

const _: () = assert!(SMOKE_COUNTERS.len() <= 15);
