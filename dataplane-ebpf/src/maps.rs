//! Every map of the dataplane. Names and sizes come from `pier_common::maps`.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use pier_common::{maps::SMOKE_COUNTERS_LEN, metrics::Counter};

#[map(name = "SMOKE_COUNTERS")]
pub static SMOKE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(SMOKE_COUNTERS_LEN, 0);
