//! The agent's mount namespace, wherever it is started.
//!
//! `ip netns exec NS pier agent` runs the agent in a mount namespace of its
//! own whose `/sys` is a fresh sysfs for NS: no bpffs at `/sys/fs/bpf`, no
//! cgroup v2 mount, and every mount the agent makes there (the namespaces'
//! bind mounts under `--run-dir`, a bpffs for the pins) dies with it, so the
//! next agent would find its containers' namespaces and pins gone. The agent
//! is a host-wide service, so when it finds itself in such a namespace (no
//! bpffs and no cgroup v2 visible) it joins the mount namespace it was started
//! from (the nearest ancestor process in another one); the network namespace
//! stays NS. A mount namespace that still shows cgroup v2 (a systemd unit's
//! `PrivateMounts=`) is left alone. Where no cgroup v2 mount is visible at
//! all, [`private_cgroup2`] mounts one under the run dir for the socket hooks.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The mount namespace of process `pid` (`/proc/PID/ns/mnt`'s inode).
fn mnt_ns(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
fn parent_of(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ppid = rest.split_whitespace().nth(1)?;
    (ppid != "0").then(|| ppid.to_string())
}

/// What `/proc/self/mounts` shows of bpffs and cgroup v2.
fn visible(fs: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(fs))
}

/// Join the mount namespace the agent was started from when its own one
/// shows neither bpffs nor cgroup v2 (`ip netns exec`). Must run before the
/// process has a second thread (`setns(CLONE_NEWNS)` refuses otherwise).
/// Returns the ancestor whose namespace was joined.
pub fn join_origin() -> anyhow::Result<Option<u32>> {
    if visible("bpf") || visible("cgroup2") {
        return Ok(None);
    }
    let Some(own) = mnt_ns("self") else {
        return Ok(None);
    };
    let mut pid = parent_of("self");
    while let Some(p) = pid {
        if let Some(ns) = mnt_ns(&p)
            && ns != own
        {
            let cwd = std::env::current_dir().ok();
            let f = std::fs::File::open(format!("/proc/{p}/ns/mnt"))?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
                anyhow::anyhow!(
                    "joining the mount namespace of process {p} (the agent's origin): {e}"
                )
            })?;
            // setns moved the working directory to the namespace's root.
            if let Some(d) = cwd {
                let _ = std::env::set_current_dir(d);
            }
            return Ok(p.parse().ok());
        }
        pid = parent_of(&p);
    }
    Ok(None)
}

/// A cgroup v2 hierarchy of the agent's own, mounted at `<run_dir>/cgroup2`
/// (kept and reused by the next start), for a host where none is mounted.
pub fn private_cgroup2(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = run_dir.join("cgroup2");
    if dir.join("cgroup.procs").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    nix::mount::mount(
        Some("cgroup2"),
        &dir,
        Some("cgroup2"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| anyhow::anyhow!("mounting cgroup2 at {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parent_of_self_is_this_process_parent() {
        let want = std::os::unix::process::parent_id().to_string();
        assert_eq!(super::parent_of("self").as_deref(), Some(want.as_str()));
        assert_eq!(super::parent_of("1"), None);
    }
}
