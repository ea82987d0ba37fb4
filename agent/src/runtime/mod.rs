//! Processes inside containers: run a command in a container's network
//! namespace with its private `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`
//! (bind-mounted in a mount namespace of its own) and hostname (UTS namespace).
//!
//! [`spawn`] forks (std's `Command` with a `pre_exec` hook, which runs in the
//! single-threaded child) and in the child: `setsid` (detached only), `setns`
//! into the container's network namespace, `unshare(CLONE_NEWNS |
//! CLONE_NEWUTS)`, makes `/` a recursive slave (so unmounts made by the agent,
//! e.g. of a removed namespace, reach it), remounts `/sys` for the new network
//! namespace (like `ip netns exec`), bind-mounts the container's files over
//! `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, and sets the hostname.
//!
//! Reaping: every process started here gets a waiter thread in the agent that
//! `wait`s for it and records its exit code ([`Process::wait`]), so a
//! long-running agent never accumulates zombies. Detached processes are in a
//! session of their own: signals to the agent's process group do not reach
//! them, and when the agent exits they are re-parented (to init or the nearest
//! subreaper), which reaps them. A later agent finds them again by
//! [`ProcIdentity`] (pid + start time), which survives pid reuse.
use std::{
    ffi::CString,
    io::Read,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

/// The three files a container gets privately, by name in `etc_dir`.
pub const ETC_FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run and where.
#[derive(Debug)]
pub struct ProcessSpec {
    /// The container's network namespace (a bind mount); `None` stays in the
    /// agent's network namespace (host mode).
    pub netns: Option<PathBuf>,
    /// Directory holding the container's `hosts`, `resolv.conf`, `hostname`;
    /// each file present there is bind-mounted over its `/etc` namesake.
    pub etc_dir: Option<PathBuf>,
    /// Hostname in the container's UTS namespace (also `$HOSTNAME`).
    pub hostname: Option<String>,
    /// Program and arguments; the program is looked up in `$PATH`.
    pub argv: Vec<String>,
    /// The whole environment (plus a default `PATH` if it has none).
    pub env: Vec<(String, String)>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Own session (`setsid`): survives the agent and its process group.
    pub detached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{op}: {source}")]
    Os {
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// The command itself could not be executed (set-up went fine).
    #[error("exec {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Docker's exit code for a command that cannot be started: 127 when it
    /// is not found, 126 when it cannot be invoked (permission, format).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            RuntimeError::Exec { source, .. } => {
                Some(if source.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                })
            }
            _ => None,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

fn os(op: impl Into<String>, source: std::io::Error) -> RuntimeError {
    RuntimeError::Os {
        op: op.into(),
        source,
    }
}

/// `/dev/null`, for a process without input or output.
pub fn dev_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| os("open /dev/null", e))
}

/// A process, identified across agent restarts by its pid and start time
/// (`/proc/<pid>/stat` field 22, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProcIdentity {
    pub pid: u32,
    pub start_time: u64,
}

/// State letter and start time from `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<(char, u64)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcIdentity {
    /// The identity of a live process.
    pub fn of(pid: u32) -> Option<Self> {
        let (state, start_time) = read_stat(pid)?;
        (state != 'Z' && state != 'X').then_some(ProcIdentity { pid, start_time })
    }

    /// Whether this very process still runs (not exited, not a zombie, and
    /// its pid not reused by another process).
    pub fn is_running(&self) -> bool {
        ProcIdentity::of(self.pid) == Some(*self)
    }

    /// A pidfd of this very process, or `None` if it no longer runs. Once
    /// opened and checked, it cannot refer to a later process that reuses
    /// the pid.
    fn pidfd(&self) -> Result<Option<OwnedFd>> {
        // SAFETY: pidfd_open(2) with no flags; we own the returned fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(os(format!("pidfd_open {}", self.pid), e)),
            };
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(self.is_running().then_some(fd))
    }

    /// Wait up to `timeout` for this process to exit (works for processes
    /// that are not our children, e.g. left by a previous agent). `true` if
    /// it is gone.
    pub fn wait_exit(&self, timeout: Duration) -> Result<bool> {
        let Some(fd) = self.pidfd()? else {
            return Ok(true);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: poll(2) on one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return Ok(true);
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(os(format!("wait for {}", self.pid), e));
                }
            }
            if r == 0 && left.is_zero() {
                // A zombie child of ours counts as gone as well.
                return Ok(!self.is_running());
            }
        }
    }

    /// Docker's `stop`: SIGTERM, up to `grace` to exit, then SIGKILL. A
    /// detached process (leader of its own process group) is signalled with
    /// its whole group, so its children go too. `Ok(false)` if it was not
    /// running.
    pub fn stop(&self, grace: Duration) -> Result<bool> {
        let group = self.is_group_leader();
        let send = |sig| {
            if group {
                self.signal_group(sig)
            } else {
                self.signal(sig)
            }
        };
        if !send(nix::sys::signal::Signal::SIGTERM)? {
            return Ok(false);
        }
        if !self.wait_exit(grace)? {
            send(nix::sys::signal::Signal::SIGKILL)?;
            self.wait_exit(Duration::from_secs(5))?;
        } else if group {
            // The leader went; make sure what it left in its group goes too.
            let _ = send(nix::sys::signal::Signal::SIGKILL);
        }
        Ok(true)
    }

    /// Whether the process leads its own process group (detached ones do).
    fn is_group_leader(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(2)?.parse::<u32>().ok()
            })
            == Some(self.pid)
    }

    /// Send `sig` if this very process still runs; `Ok(false)` if it does not.
    /// Uses a pidfd, so a pid reused between the check and the signal cannot
    /// be hit.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<bool> {
        self.pidfd_signal(sig, 0)
    }

    /// Like [`ProcIdentity::signal`], to the process's whole process group
    /// (`PIDFD_SIGNAL_PROCESS_GROUP`). Only meant for detached processes,
    /// which lead their own group.
    pub fn signal_group(&self, sig: nix::sys::signal::Signal) -> Result<bool> {
        const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;
        self.pidfd_signal(sig, PIDFD_SIGNAL_PROCESS_GROUP)
    }

    fn pidfd_signal(&self, sig: nix::sys::signal::Signal, flags: libc::c_uint) -> Result<bool> {
        let Some(fd) = self.pidfd()? else {
            return Ok(false);
        };
        // SAFETY: pidfd_send_signal(2) on our pidfd, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(false),
                _ => Err(os(format!("signal {} {sig}", self.pid), e)),
            };
        }
        Ok(true)
    }
}

#[derive(Debug, Default)]
struct ExitCell {
    code: Mutex<Option<i32>>,
    cv: Condvar,
}

/// A process started by this agent. Clones share the same exit record.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub identity: ProcIdentity,
    exit: Arc<ExitCell>,
}

impl Process {
    /// Block until the process exits; its exit code, or 128 + signal number
    /// when a signal ended it.
    pub fn wait(&self) -> i32 {
        let mut g = self.exit.code.lock().unwrap();
        loop {
            if let Some(c) = *g {
                return c;
            }
            g = self.exit.cv.wait(g).unwrap();
        }
    }

    /// Like [`Process::wait`], giving up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut g = self.exit.code.lock().unwrap();
        loop {
            if let Some(c) = *g {
                return Some(c);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            g = self.exit.cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// The exit code if the process has exited.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.code.lock().unwrap()
    }
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Invalid(format!("path has a NUL byte: {p:?}")))
}

/// Steps of the child's set-up, reported back through a pipe when one fails
/// (std only passes the errno back).
const STEPS: [&str; 9] = [
    "setsid",
    "join the container's network namespace",
    "unshare mount and UTS namespaces",
    "make / a recursive slave mount",
    "remount /sys",
    "bind-mount the container's /etc files",
    "set the hostname",
    "join the container's namespaces",
    "chdir /",
];

/// What the child does before `exec`, prepared in the parent (no allocation
/// happens in the child).
struct ChildSetup {
    detached: bool,
    /// Namespaces to join, in order (fd, CLONE_NEW* flag).
    join: Vec<(OwnedFd, libc::c_int)>,
    /// Create mount + UTS namespaces of our own (not when joining).
    unshare: bool,
    remount_sys: bool,
    binds: Vec<(CString, CString)>,
    hostname: Option<Vec<u8>>,
    /// Write end of the step-report pipe (close-on-exec).
    report: OwnedFd,
}

impl ChildSetup {
    /// Runs in the forked child: only async-signal-safe calls.
    fn run(&self) -> std::io::Result<()> {
        let fail = |step: u8| -> std::io::Error {
            let e = std::io::Error::last_os_error();
            // SAFETY: write(2) of one byte from a live buffer to our pipe.
            unsafe { libc::write(self.report.as_raw_fd(), [step].as_ptr().cast(), 1) };
            e
        };
        // SAFETY (all calls below): plain syscalls on valid, NUL-terminated
        // strings and descriptors owned by `self`.
        unsafe {
            if self.detached && libc::setsid() < 0 {
                return Err(fail(0));
            }
            if !self.unshare {
                for (fd, kind) in &self.join {
                    if libc::setns(fd.as_raw_fd(), *kind) < 0 {
                        return Err(fail(7));
                    }
                }
                if libc::chdir(c"/".as_ptr()) < 0 {
                    return Err(fail(8));
                }
                return Ok(());
            }
            for (fd, kind) in &self.join {
                if libc::setns(fd.as_raw_fd(), *kind) < 0 {
                    return Err(fail(1));
                }
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) < 0 {
                return Err(fail(2));
            }
            let null = std::ptr::null::<libc::c_char>();
            if libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) < 0
            {
                return Err(fail(3));
            }
            if self.remount_sys {
                // Like `ip netns exec`: /sys/class/net shows this namespace.
                if libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) < 0
                    || libc::mount(
                        c"sysfs".as_ptr(),
                        c"/sys".as_ptr(),
                        c"sysfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) < 0
                {
                    return Err(fail(4));
                }
            }
            for (src, dst) in &self.binds {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(fail(5));
                }
            }
            if let Some(h) = &self.hostname
                && libc::sethostname(h.as_ptr().cast(), h.len()) < 0
            {
                return Err(fail(6));
            }
        }
        Ok(())
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os("pipe", e.into()))
}

fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid hostname {h:?}: 1 to 64 characters of letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Namespaces of a running process to join, in order: net, uts, mnt.
fn open_ns_of(id: &ProcIdentity) -> Result<Option<Vec<(OwnedFd, libc::c_int)>>> {
    let mut fds = Vec::new();
    for (name, kind) in [
        ("net", libc::CLONE_NEWNET),
        ("uts", libc::CLONE_NEWUTS),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        match std::fs::File::open(format!("/proc/{}/ns/{name}", id.pid)) {
            Ok(f) => fds.push((OwnedFd::from(f), kind)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(os(format!("open /proc/{}/ns/{name}", id.pid), e)),
        }
    }
    // Opened after the check could be a reused pid: check again.
    Ok(id.is_running().then_some(fds))
}

fn start(spec: ProcessSpec, join_main: Option<Vec<(OwnedFd, libc::c_int)>>) -> Result<Process> {
    let Some(program) = spec.argv.first() else {
        return Err(RuntimeError::Invalid("no command given".into()));
    };
    if program.is_empty() {
        return Err(RuntimeError::Invalid("empty command name".into()));
    }
    if let Some(h) = &spec.hostname {
        check_hostname(h)?;
    }
    let joining = join_main.is_some();
    let mut join = Vec::new();
    let mut binds = Vec::new();
    if let Some(fds) = join_main {
        join = fds;
    } else {
        if let Some(ns) = &spec.netns {
            let f = std::fs::File::open(ns)
                .map_err(|e| os(format!("open netns {}", ns.display()), e))?;
            if !crate::topology::netns::is_netns_mount(ns) {
                return Err(RuntimeError::Invalid(format!(
                    "{} is not a network namespace",
                    ns.display()
                )));
            }
            join.push((OwnedFd::from(f), libc::CLONE_NEWNET));
        }
        if let Some(dir) = &spec.etc_dir {
            if !dir.is_dir() {
                return Err(RuntimeError::Invalid(format!(
                    "container files directory {} does not exist",
                    dir.display()
                )));
            }
            for name in ETC_FILES {
                let src = dir.join(name);
                if !src.is_file() {
                    continue;
                }
                let dst = Path::new("/etc").join(name);
                // A bind mount needs an existing target (symlinks are followed).
                if !dst.exists() {
                    return Err(RuntimeError::Invalid(format!(
                        "cannot give the container its own {}: it does not exist on this host",
                        dst.display()
                    )));
                }
                binds.push((cstring(&src)?, cstring(&dst)?));
            }
        }
    }
    let (report_r, report_w) = pipe()?;
    let setup = ChildSetup {
        detached: spec.detached,
        join,
        unshare: !joining,
        remount_sys: !joining && spec.netns.is_some(),
        binds,
        hostname: spec.hostname.clone().map(String::into_bytes),
        report: report_w,
    };

    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(spec.stdin))
        .stdout(Stdio::from(spec.stdout))
        .stderr(Stdio::from(spec.stderr));
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(h) = &spec.hostname
        && !spec.env.iter().any(|(k, _)| k == "HOSTNAME")
    {
        cmd.env("HOSTNAME", h);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the hook runs in the forked child and only makes raw syscalls on
    // data prepared above; it neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || setup.run());
    }
    let spawned = cmd.spawn();
    // Our copy of the write end went with `cmd`'s hook; drop it to see EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let mut step = [0u8; 1];
            let mut r = std::fs::File::from(report_r);
            let what = match r.read(&mut step) {
                Ok(1) => STEPS.get(step[0] as usize).copied().unwrap_or("set up"),
                _ => {
                    return Err(RuntimeError::Exec {
                        program: program.to_string(),
                        source: e,
                    });
                }
            };
            return Err(os(format!("start {program}: {what}"), e));
        }
    };
    let pid = child.id();
    // Still our unreaped child, so its /proc entry exists even if it exited.
    let start_time = read_stat(pid).map(|(_, t)| t).unwrap_or(0);
    let exit = Arc::new(ExitCell::default());
    let cell = exit.clone();
    let waiter = std::thread::Builder::new()
        .name(format!("pier-wait-{pid}"))
        .spawn(move || {
            let code = match child.wait() {
                Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                Err(_) => 255,
            };
            *cell.code.lock().unwrap() = Some(code);
            cell.cv.notify_all();
        });
    if let Err(e) = waiter {
        return Err(os("spawn waiter thread", e));
    }
    Ok(Process {
        pid,
        identity: ProcIdentity { pid, start_time },
        exit,
    })
}

/// Start a process in a new container context (see the module docs).
pub fn spawn(spec: ProcessSpec) -> Result<Process> {
    start(spec, None)
}

/// Start a process in an existing container. If its main process `main`
/// still runs, join its network, UTS and mount namespaces (so it sees the same
/// hostname and `/etc` files); otherwise set up as [`spawn`] does.
pub fn exec_spawn(spec: ProcessSpec, main: Option<&ProcIdentity>) -> Result<Process> {
    let join = match main {
        Some(id) if id.is_running() => open_ns_of(id)?,
        _ => None,
    };
    start(spec, join)
}

/// [`exec_spawn`] and wait: the process's exit code (128 + signal if killed).
pub fn exec(spec: ProcessSpec, main: Option<&ProcIdentity>) -> Result<i32> {
    Ok(exec_spawn(spec, main)?.wait())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_start_time_and_state() {
        let line = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("1 (x) Z 0"), None);
        let me = ProcIdentity::of(std::process::id()).expect("self");
        assert!(me.is_running());
        let other = ProcIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_running());
    }

    #[test]
    fn exec_failures_get_dockers_exit_codes() {
        use std::io::{Error, ErrorKind};
        let exec = |k: ErrorKind| RuntimeError::Exec {
            program: "x".into(),
            source: Error::from(k),
        };
        assert_eq!(exec(ErrorKind::NotFound).exit_code(), Some(127));
        assert_eq!(exec(ErrorKind::PermissionDenied).exit_code(), Some(126));
        assert_eq!(
            exec(ErrorKind::NotFound).to_string(),
            "exec x: entity not found"
        );
        let setup = os(
            "start x: set the hostname",
            Error::from(ErrorKind::NotFound),
        );
        assert_eq!(setup.exit_code(), None);
    }

    #[test]
    fn hostnames() {
        for ok in ["web", "a-b.c_d", "x1"] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "-x", "a..b", &"x".repeat(65)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
