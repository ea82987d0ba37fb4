//! Run time per packet of pier's kernel programs, from the kernel's own
//! accounting (`bpf_stats`): enabled with `BPF_ENABLE_STATS` only while a
//! load runs (the kernel turns it off again when the fd closes, also when
//! the bench dies), read with `bpftool prog show`.
use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    process::Command,
};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::world::run;

/// `BPF_ENABLE_STATS` and `BPF_STATS_RUN_TIME` of `linux/bpf.h`.
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Run-time accounting for every BPF program while the fd lives.
pub fn enable() -> anyhow::Result<OwnedFd> {
    // union bpf_attr, enable_stats: { __u32 type; }; padded as the kernel
    // reads the whole size it is given.
    let mut attr = [0u8; 64];
    attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
    // SAFETY: a plain syscall with a buffer that outlives it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[derive(Clone, Debug, Deserialize)]
struct ProgJson {
    id: u32,
    #[serde(default)]
    name: String,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
    #[serde(default)]
    map_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct MapJson {
    id: u32,
}

/// One program's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Maps of pier's whose users are all of pier's programs: the TC programs
/// and connect4/sendmsg4 look up published ports, recvmsg4/getpeername4
/// the socket translations.
pub const PIER_MAPS: [&str; 2] = ["PIER_PORTS", "PIER_SOCK_NAT"];

/// Counters of every program, by name, that uses one of [`PIER_MAPS`] as
/// pinned in the agent's bpffs dir `dir` (the programs of one agent share
/// its maps; other agents' programs have maps of their own). Programs of one
/// name are summed.
pub fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<String, Counters>> {
    let mut ids = Vec::new();
    for m in PIER_MAPS {
        let pin = dir.join(m);
        let map: MapJson = serde_json::from_str(&run(Command::new("bpftool")
            .args(["--json", "map", "show", "pinned"])
            .arg(&pin))?)
        .with_context(|| format!("bpftool map show pinned {}", pin.display()))?;
        ids.push(map.id);
    }
    let progs = parse_progs(&run(
        Command::new("bpftool").args(["--json", "prog", "show"])
    )?)?;
    Ok(of_maps(&progs, &ids))
}

fn parse_progs(json: &str) -> anyhow::Result<Vec<ProgJson>> {
    serde_json::from_str(json).context("reading `bpftool --json prog show`")
}

fn of_maps(progs: &[ProgJson], map_ids: &[u32]) -> BTreeMap<String, Counters> {
    let mut out: BTreeMap<String, Counters> = BTreeMap::new();
    let mut seen = Vec::new();
    for p in progs
        .iter()
        .filter(|p| p.map_ids.iter().any(|m| map_ids.contains(m)))
    {
        if seen.contains(&p.id) {
            continue;
        }
        seen.push(p.id);
        let c = out.entry(p.name.clone()).or_default();
        c.run_time_ns += p.run_time_ns;
        c.run_cnt += p.run_cnt;
    }
    out
}

/// Per program: (runs, ns per run) between two snapshots; programs that did
/// not run are left out.
pub fn delta(
    before: &BTreeMap<String, Counters>,
    after: &BTreeMap<String, Counters>,
) -> Vec<(String, u64, f64)> {
    after
        .iter()
        .filter_map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let runs = a.run_cnt.checked_sub(b.run_cnt)?;
            let ns = a.run_time_ns.checked_sub(b.run_time_ns)?;
            (runs > 0).then(|| (name.clone(), runs, ns as f64 / runs as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_of_one_agent_summed_by_name() {
        let json = r#"[
            {"id": 10, "name": "pier_uplink_in", "run_time_ns": 1000, "run_cnt": 4, "map_ids": [3, 7]},
            {"id": 11, "name": "pier_veth_in", "run_time_ns": 600, "run_cnt": 2, "map_ids": [7]},
            {"id": 12, "name": "pier_veth_in", "run_time_ns": 400, "run_cnt": 3, "map_ids": [7]},
            {"id": 20, "name": "pier_veth_in", "run_time_ns": 9999, "run_cnt": 9, "map_ids": [8]},
            {"id": 21, "name": "pier_recvmsg4", "run_time_ns": 50, "run_cnt": 1, "map_ids": [9]},
            {"id": 30, "name": "other"}
        ]"#;
        let progs = parse_progs(json).unwrap();
        let m = of_maps(&progs, &[7, 9]);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m["pier_veth_in"],
            Counters {
                run_time_ns: 1000,
                run_cnt: 5
            }
        );
        let mut later = m.clone();
        later.get_mut("pier_uplink_in").unwrap().run_cnt += 10;
        later.get_mut("pier_uplink_in").unwrap().run_time_ns += 2000;
        assert_eq!(
            delta(&m, &later),
            [("pier_uplink_in".to_string(), 10, 200.0)]
        );
    }
}
