//! CPU pinning: client and server share one CPU (see docs/benchmarks.md).
use nix::{sched::CpuSet, unistd::Pid};

/// Pin the calling thread (and the threads it spawns later) to `cpu`.
pub fn pin_to(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| anyhow::anyhow!("cpu {cpu} is out of range: {e}"))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| anyhow::anyhow!("pinning to cpu {cpu}: {e}"))
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => vec![0],
    }
}
