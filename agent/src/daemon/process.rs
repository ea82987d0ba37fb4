//! How the daemon starts processes in containers: a small trait over the
//! `runtime` module, so the daemon's logic is tested with a fake.
use std::{os::fd::OwnedFd, path::PathBuf};

/// One process to start "in a container".
pub struct ProcSpec {
    /// Network namespace to join; `None` stays in the agent's (host mode).
    pub netns: Option<PathBuf>,
    /// Directory with `hosts`, `resolv.conf`, `hostname` to bind over `/etc`.
    pub etc_dir: Option<PathBuf>,
    pub hostname: Option<String>,
    pub argv: Vec<String>,
    /// `KEY=VALUE` from `-e`, over the default PATH and HOME.
    pub env: Vec<String>,
    /// A live process of the container whose mount/UTS namespaces to join (exec).
    pub join_pid: Option<i32>,
    /// stdin, stdout, stderr.
    pub stdio: [OwnedFd; 3],
}

/// A started process: pid and start time (to recognise it after a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start_time: u64,
}

/// Why a process did not start; `exit_code` (126/127, as Docker) when the
/// command itself could not be executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    pub message: String,
    pub exit_code: Option<i32>,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&str> for SpawnError {
    fn from(m: &str) -> Self {
        SpawnError {
            message: m.to_string(),
            exit_code: None,
        }
    }
}

impl From<crate::runtime::RuntimeError> for SpawnError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        SpawnError {
            message: e.to_string(),
            exit_code: e.exit_code(),
        }
    }
}

pub trait Runner: Send + Sync {
    /// Start a process that outlives the agent (own session, reaped for us).
    fn spawn_detached(&self, spec: ProcSpec) -> Result<Proc, SpawnError>;
    /// Start a process and return a handle to wait for it.
    fn spawn_attached(&self, spec: ProcSpec) -> Result<Box<dyn Waitable>, SpawnError>;
    /// Is `p` still the same live process?
    fn alive(&self, p: Proc) -> bool;
    /// The exit code of a process this runner started, once it has exited.
    fn exit_code(&self, _p: Proc) -> Option<i32> {
        None
    }
    /// SIGTERM, up to `grace` to exit, then SIGKILL (at once if `grace` is
    /// zero); returns when the process is gone (or after a few seconds).
    fn stop(&self, p: Proc, grace: std::time::Duration) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(p.pid);
        let wait_gone = |limit: std::time::Duration| {
            let deadline = std::time::Instant::now() + limit;
            while self.alive(p) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            !self.alive(p)
        };
        if !grace.is_zero()
            && self.alive(p)
            && kill(pid, Signal::SIGTERM).is_ok()
            && wait_gone(grace)
        {
            return;
        }
        if self.alive(p) {
            let _ = kill(pid, Signal::SIGKILL);
            wait_gone(std::time::Duration::from_secs(5));
        }
    }
}

pub trait Waitable: Send {
    fn proc(&self) -> Proc;
    /// Block until the process exits; its exit code (128+signal when killed).
    fn wait(self: Box<Self>) -> Result<i32, String>;
}

/// Start time of `pid` from `/proc/<pid>/stat` (field 22), if it exists.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process alive and not a zombie?
pub fn pid_alive(p: Proc) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) else {
        return false;
    };
    let Some(i) = s.rfind(')') else { return false };
    let state = s[i + 2..].chars().next();
    state != Some('Z') && proc_start_time(p.pid) == Some(p.start_time)
}

/// The real runner, over `crate::runtime`. It keeps the handles of the
/// detached processes it started (their waiter threads record exit codes).
#[derive(Default)]
pub struct RuntimeRunner {
    started: std::sync::Mutex<std::collections::HashMap<i32, crate::runtime::Process>>,
}

/// Docker's defaults (PATH, HOME) unless `-e` set them, then the `-e` ones.
fn with_defaults(env: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for e in env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        out.retain(|(x, _)| x != k);
        out.push((k.to_string(), v.to_string()));
    }
    out
}

fn to_runtime(spec: ProcSpec, detached: bool) -> crate::runtime::ProcessSpec {
    let [stdin, stdout, stderr] = spec.stdio;
    crate::runtime::ProcessSpec {
        netns: spec.netns,
        etc_dir: spec.etc_dir,
        hostname: spec.hostname,
        argv: spec.argv,
        env: with_defaults(&spec.env),
        stdin,
        stdout,
        stderr,
        detached,
    }
}

fn identity(p: Proc) -> crate::runtime::ProcIdentity {
    crate::runtime::ProcIdentity {
        pid: p.pid as u32,
        start_time: p.start_time,
    }
}

impl Runner for RuntimeRunner {
    fn spawn_detached(&self, spec: ProcSpec) -> Result<Proc, SpawnError> {
        let p = crate::runtime::spawn(to_runtime(spec, true))?;
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the handles of processes long gone whose codes nobody asked for.
        if started.len() > 4096 {
            started.retain(|_, p| p.exit_code().is_none());
        }
        started.insert(p.identity.pid as i32, p.clone());
        Ok(Proc {
            pid: p.identity.pid as i32,
            start_time: p.identity.start_time,
        })
    }
    fn spawn_attached(&self, spec: ProcSpec) -> Result<Box<dyn Waitable>, SpawnError> {
        let main = spec
            .join_pid
            .and_then(|pid| crate::runtime::ProcIdentity::of(pid as u32));
        let p = crate::runtime::exec_spawn(to_runtime(spec, false), main.as_ref())?;
        Ok(Box::new(p))
    }
    fn alive(&self, p: Proc) -> bool {
        identity(p).is_running()
    }
    fn stop(&self, p: Proc, grace: std::time::Duration) {
        // At least a moment of grace: the runtime's stop always starts with SIGTERM.
        let grace = grace.max(std::time::Duration::from_millis(1));
        if let Err(e) = identity(p).stop(grace) {
            tracing::warn!("stopping process {}: {e}", p.pid);
        }
    }
    fn exit_code(&self, p: Proc) -> Option<i32> {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let h = started.get(&p.pid)?;
        (h.identity.start_time == p.start_time)
            .then(|| h.exit_code())
            .flatten()
    }
}

impl Waitable for crate::runtime::Process {
    fn proc(&self) -> Proc {
        Proc {
            pid: self.identity.pid as i32,
            start_time: self.identity.start_time,
        }
    }
    fn wait(self: Box<Self>) -> Result<i32, String> {
        Ok(crate::runtime::Process::wait(&self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).expect("own stat");
        assert!(pid_alive(Proc {
            pid: me,
            start_time: t
        }));
        assert!(!pid_alive(Proc {
            pid: me,
            start_time: t + 1
        }));
    }
}
