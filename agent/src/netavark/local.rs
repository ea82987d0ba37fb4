//! netavark without an agent: the endpoint core run in the shim's process
//! for one call, on the host namespace the shim was executed in.
//!
//! Per host namespace, keyed `<inode>-<cookie>` (the inode of
//! `/proc/self/ns/net`, which a new namespace may reuse, and its netns
//! cookie, which is never reused while the machine runs):
//! - records: `<config>/pier/<key>/` (pier's store), one call at a time
//!   (`<config>/pier/<key>.lock`, a blocking flock);
//! - the dataplane pinned under `/sys/fs/bpf/pier-netavark/<key>/`, so the
//!   next call (and conntrack) finds it again. A directory whose namespace
//!   no process and no mount holds any more (or whose inode is now another
//!   namespace's, ours) is removed at the next call (unpinning its links
//!   detaches its programs), records too.
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

/// The netns cookie of the calling thread's namespace (`SO_NETNS_COOKIE`).
pub fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the length given, on a socket we own.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// `<inode>-<cookie>` → (inode, cookie).
fn parse_key(s: &str) -> Option<(u64, u64)> {
    let (i, c) = s.split_once('-')?;
    Some((i.parse().ok()?, c.parse().ok()?))
}

/// Whether the namespace keyed `name` is gone: nothing holds its inode, or
/// the inode is ours now with another cookie (a reused inode).
fn dead(name: &str, ours: (u64, u64), live: &BTreeSet<u64>) -> bool {
    match parse_key(name) {
        Some(k) if k == ours => false,
        Some((i, _)) if i == ours.0 => true,
        Some((i, _)) => !live.contains(&i),
        None => false,
    }
}

/// Remove the pins (and the records under `base`) of namespaces that are gone.
fn clean_dead(ours: (u64, u64), base: &Path) {
    let names = |d: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
            .collect()
    };
    let pins = names(Path::new(BPFFS_ROOT));
    let records = names(base);
    // Ours only (the common case): no scan of /proc.
    if pins
        .iter()
        .chain(&records)
        .all(|(n, _)| parse_key(n.trim_end_matches(".lock")).is_none_or(|k| k == ours))
    {
        return;
    }
    let live = live_netns();
    for (n, p) in pins {
        if dead(&n, ours, &live) {
            tracing::info!("netavark: namespace {n} is gone: removing {}", p.display());
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!("removing {}: {e}", p.display());
            }
        }
    }
    for (n, p) in records {
        if n.ends_with(".lock") {
            continue;
        }
        if dead(&n, ours, &live) {
            // Its lock is taken without waiting: a call still in it keeps it.
            let lockp = base.join(format!("{n}.lock"));
            if let Ok(f) = std::fs::File::options().write(true).open(&lockp)
                && let Ok(l) =
                    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                let _ = std::fs::remove_dir_all(&p);
                let _ = std::fs::remove_file(&lockp);
                drop(l);
            } else if !lockp.exists() {
                let _ = std::fs::remove_dir_all(&p);
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
    let cookie =
        netns_cookie().map_err(|e| Failure::new(format!("reading the netns cookie: {e}")))?;
    let key = format!("{ino}-{cookie}");
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
    let _lock = lock(&base.join(format!("{key}.lock")))?;
    clean_dead((ino, cookie), &base);
    let state_dir = base.join(&key);
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
        Path::new(BPFFS_ROOT).join(&key),
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
    fn keys_of_gone_namespaces() {
        let live: BTreeSet<u64> = [5, 7].into();
        assert!(!dead("5-10", (5, 10), &live), "ours");
        assert!(dead("5-9", (5, 10), &live), "our inode, another cookie");
        assert!(!dead("7-3", (5, 10), &live), "alive");
        assert!(dead("8-3", (5, 10), &live), "nothing holds 8");
        assert!(!dead("other", (5, 10), &live), "not ours to judge");
        assert_ne!(netns_cookie().unwrap(), 0);
    }

    #[test]
    fn own_namespace_is_live() {
        let me = netns_inode(Path::new("/proc/self/ns/net")).unwrap();
        assert!(live_netns().contains(&me));
    }
}
