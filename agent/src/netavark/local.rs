//! netavark without an agent: the endpoint core run in the shim's process
//! for one call, on the host namespace the shim was executed in.
//!
//! Per host namespace (keyed by the inode of `/proc/self/ns/net`):
//! - records: `<config>/pier/<inode>/` (pier's store), one call at a time
//!   (`<config>/pier/<inode>.lock`, a blocking flock);
//! - the dataplane pinned under `/sys/fs/bpf/pier-netavark/<inode>/`, so
//!   the next call (and conntrack) finds it again. A directory whose
//!   namespace no process and no mount holds any more is removed at the
//!   next call (unpinning its links detaches its programs).
//!
//! Two namespaces never share a record, a pin or a lock.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{Failure, netns_inode};
use crate::{config::AgentConfig, daemon::Daemon, dataplane::Dataplane, topology::Topology};

/// Where the per-namespace pin directories live.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/pier-netavark";

/// Uplinks for published ports and masquerade (comma separated), instead of
/// the interface of the default route.
pub const UPLINKS_ENV: &str = "PIER_NETAVARK_UPLINKS";

/// `net:[4026531840]` → 4026531840.
fn ns_ino(s: &str) -> Option<u64> {
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Network namespaces something still holds: a process's (`/proc/*/ns/net`)
/// or a bind mount in any process's mount namespace (nsfs in mountinfo).
pub fn live_netns() -> BTreeSet<u64> {
    let mut live = BTreeSet::new();
    let mut mnt_seen = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return live;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = e.path();
        if let Ok(l) = std::fs::read_link(p.join("ns/net"))
            && let Some(i) = ns_ino(&l.to_string_lossy())
        {
            live.insert(i);
        }
        let Ok(m) = std::fs::read_link(p.join("ns/mnt")) else {
            continue;
        };
        if !mnt_seen.insert(m) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(p.join("mountinfo")) else {
            continue;
        };
        for l in info.lines() {
            // Field 4 is the root within the filesystem: `net:[N]` for nsfs.
            if let Some(i) = l.split_whitespace().nth(3).and_then(ns_ino) {
                live.insert(i);
            }
        }
    }
    live
}

/// Remove the pins of namespaces that are gone.
fn clean_dead(ours: u64) {
    let Ok(rd) = std::fs::read_dir(BPFFS_ROOT) else {
        return;
    };
    let dirs: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .filter(|(i, _)| *i != ours)
        .collect();
    if dirs.is_empty() {
        return;
    }
    let live = live_netns();
    for (i, p) in dirs {
        if !live.contains(&i) {
            tracing::info!("netavark: namespace {i} is gone: removing {}", p.display());
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!("removing {}: {e}", p.display());
            }
        }
    }
}

/// A blocking exclusive lock held while it lives.
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn lock(p: &Path) -> Result<Lock, Failure> {
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(|e| Failure::new(format!("opening {}: {e}", p.display())))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| Failure::new(format!("locking {}: {e}", p.display())))
}

/// Run `f` on the core of this host namespace, started in-process.
pub fn with_core<R>(config: &Path, f: impl FnOnce(&Daemon) -> R) -> Result<R, Failure> {
    let ino = netns_inode(Path::new("/proc/self/ns/net"))
        .map_err(|e| Failure::new(format!("reading /proc/self/ns/net: {e}")))?;
    let config = if config.is_absolute() {
        config.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Failure::new(super::io_error(&e)))?
            .join(config)
    };
    let base = config.join("pier");
    std::fs::create_dir_all(&base)
        .map_err(|e| Failure::new(format!("creating {}: {e}", base.display())))?;
    let _lock = lock(&base.join(format!("{ino}.lock")))?;
    clean_dead(ino);
    let state_dir = base.join(ino.to_string());
    let topo = crate::topology::netlink::NetlinkTopology::new()
        .map_err(|e| Failure::new(format!("opening netlink: {e}")))?;
    let uplinks: Vec<String> = match std::env::var(UPLINKS_ENV) {
        Ok(v) if !v.is_empty() => v.split(',').map(str::to_string).collect(),
        _ => topo
            .default_route_iface()
            .map_err(|e| Failure::new(e.to_string()))?
            .into_iter()
            .collect(),
    };
    let mut cfg = AgentConfig::new(
        state_dir.clone(),
        state_dir.join("run"),
        state_dir.join("unused.sock"),
        Path::new(BPFFS_ROOT).join(ino.to_string()),
        uplinks,
        None,
    )
    .map_err(|e| Failure::new(e.to_string()))?;
    cfg.engine_only = true;
    cfg.cgroup = crate::features::Features::probe()
        .cgroup2
        .map(PathBuf::from);
    // netavark's first step, and its words when /proc is read-only.
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if !std::fs::read_to_string(fwd).is_ok_and(|v| v.trim() == "1")
        && let Err(e) = std::fs::write(fwd, "1")
    {
        return Err(Failure::new(format!("Sysctl error: IO Error: {e}")));
    }
    let dp_cfg = crate::dataplane::DataplaneConfig {
        bpffs_dir: cfg.bpffs_dir.clone(),
        uplinks: cfg.uplinks.clone(),
        cgroup: cfg.cgroup.clone(),
    };
    let dataplane: Box<dyn Dataplane> = Box::new(crate::dataplane::EbpfDataplane::new(dp_cfg));
    let d = Daemon::start(
        cfg,
        Box::new(topo),
        Box::new(crate::daemon::process::RuntimeRunner::default()),
        dataplane,
    )
    .map_err(Failure::from)?;
    Ok(f(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_inode_text() {
        assert_eq!(ns_ino("net:[4026531840]"), Some(4026531840));
        assert_eq!(ns_ino("mnt:[4026531840]"), None);
        assert_eq!(ns_ino("/"), None);
    }

    #[test]
    fn own_namespace_is_live() {
        let me = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert!(live_netns().contains(&me));
    }
}
