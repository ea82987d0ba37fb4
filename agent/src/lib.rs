//! The pier agent and CLI as a library, so tests and benchmarks can reuse
//! its pieces (the embedded eBPF object, the feature probe, the API types).
pub mod dataplane;
pub mod features;
