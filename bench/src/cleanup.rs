//! Everything a run makes carries the prefix `pb<pid>`: namespaces under
//! /run/netns, the scratch dir, the pier agent's bpffs dir. This module removes
//! them: at the end, on Ctrl-C, and (for runs that crashed) at the next start.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicI32, Ordering},
};

use nix::sys::signal::{self, SigHandler, Signal};

/// The prefix of this process's objects.
pub fn prefix() -> String {
    format!("pb{}", std::process::id())
}

pub fn scratch_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pier-bench-{prefix}"))
}

pub fn bpffs_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{prefix}"))
}

/// The pid in a `pb<pid>` prefix at the start of `name` (`pb123-x` → 123).
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pb")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let after = &rest[digits.len()..];
    if !(after.is_empty() || after.starts_with('-')) {
        return None;
    }
    digits.parse().ok()
}

fn alive(pid: u32) -> bool {
    // A live pier-bench: not a recycled pid running something else, and not
    // a killed one that its parent has not reaped yet.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    stat.contains("(pier-bench)") && !matches!(state, Some('Z' | 'X'))
}

/// Kill every process whose network namespace is the one at `ns_path`.
pub fn kill_netns_processes(ns_path: &Path) {
    let Ok(meta) = std::fs::metadata(ns_path) else {
        return;
    };
    let want = format!("net:[{}]", meta.ino());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if let Ok(link) = std::fs::read_link(p.path().join("ns/net"))
            && link.to_string_lossy() == want
        {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Lazily unmount every mount point at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let dir = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Kill the processes of, and delete, the namespace `/run/netns/<name>`.
pub fn delete_netns(name: &str) {
    kill_netns_processes(&Path::new("/run/netns").join(name));
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Kill the processes in namespaces bind-mounted below `dir` (pier's
/// containers live under its run dir), then unmount and remove `dir`.
pub fn remove_scratch(dir: &Path) {
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let d = dir.to_string_lossy().into_owned();
        for p in mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&d))
        {
            kill_netns_processes(Path::new(p));
        }
    }
    unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// The `pb<pid>-docker` cgroup parents of the processes that have one
/// (a bench dockerd's containers), with their pids.
fn docker_cgroup_members() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(p.path().join("cgroup")) else {
            continue;
        };
        if let Some(name) = cg
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .flat_map(|path| path.split('/'))
            .find(|c| c.starts_with("pb") && c.ends_with("-docker") && owner_pid(c).is_some())
        {
            out.push((pid, name.to_string()));
        }
    }
    out
}

/// Kill every process under the cgroup parent `name` (what a bench dockerd
/// started: containers survive their shim).
pub fn kill_cgroup(name: &str) {
    for (pid, n) in docker_cgroup_members() {
        if n == name && pid as u32 != std::process::id() {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Remove everything carrying `prefix`.
pub fn remove_all(prefix: &str) {
    // pier's agents first (they hold the bpffs pins and container namespaces).
    kill_marked_agents(prefix);
    kill_cgroup(&format!("{prefix}-docker"));
    remove_scratch(&scratch_dir(prefix));
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{prefix}-")) {
                delete_netns(&name);
            }
        }
    }
    let _ = std::fs::remove_dir_all(bpffs_dir(prefix));
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Agents started by a run have the run's scratch dir on their command line.
fn kill_marked_agents(prefix: &str) {
    kill_agents_of(&scratch_dir(prefix));
}

fn kill_agents_of(scratch: &Path) {
    let mark = format!("{}/", scratch.to_string_lossy());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(p.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&mark)
        {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Remove what runs that are no longer alive left behind. Returns the
/// prefixes (`pb<pid>`) cleaned.
pub fn remove_stale() -> Vec<String> {
    let stale_pid =
        |name: &str| owner_pid(name).filter(|&pid| pid != std::process::id() && !alive(pid));
    let mut cleaned: Vec<u32> = Vec::new();
    // Scratch dirs first: the agents and containers that live there.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("pier-bench-").and_then(stale_pid) {
                kill_agents_of(&e.path());
                remove_scratch(&e.path());
                cleaned.push(pid);
            }
        }
    }
    for (pid, name) in docker_cgroup_members() {
        if let Some(owner) = stale_pid(&name) {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            cleaned.push(owner);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = stale_pid(&name) {
                delete_netns(&name);
                cleaned.push(pid);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            if let Some(pid) = stale_pid(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(e.path());
                cleaned.push(pid);
            }
        }
    }
    cleaned.sort_unstable();
    cleaned.dedup();
    cleaned.into_iter().map(|p| format!("pb{p}")).collect()
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is on the stack.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// On SIGINT/SIGTERM/SIGHUP: remove everything of `prefix`, then exit 130.
/// `before_exit` runs first (e.g. to clear the progress bar).
pub fn on_interrupt(prefix: String, before_exit: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let (r, w) = nix::unistd::pipe()?;
    use std::os::fd::IntoRawFd;
    SIGNAL_PIPE.store(w.into_raw_fd(), Ordering::Relaxed);
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls write(2).
        unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) }?;
    }
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = nix::unistd::read(&r, &mut b);
        before_exit();
        eprintln!("\npier-bench: interrupted; removing the namespaces of this run ({prefix}-*)");
        remove_all(&prefix);
        std::process::exit(130);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_our_names() {
        assert_eq!(owner_pid("pb123-iptables-host"), Some(123));
        assert_eq!(owner_pid("pb7"), Some(7));
        assert_eq!(owner_pid("pbx-host"), None);
        assert_eq!(owner_pid("pb12ab-host"), None);
        assert_eq!(owner_pid("pt123-host"), None);
        assert_eq!(owner_pid("pb-host"), None);
    }
}
