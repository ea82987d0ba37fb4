//! Loading the kernel programs and keeping their maps in sync.

/// The ELF object of `dataplane-ebpf`, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PIER_EBPF_OBJECT"));

/// Names of the programs in [`EBPF_OBJECT`].
pub mod programs {
    /// TC smoke test: counts packets into `SMOKE_COUNTERS`.
    pub const SMOKE: &str = "pier_smoke";
}
