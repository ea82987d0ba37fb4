//! Podman 4.3 with its netavark backend pointed at pier: a test-only
//! `containers.conf` (`CONTAINERS_CONF`, which podman then reads alone)
//! whose `helper_binaries_dir` puts a dir holding pier as `netavark` before
//! Debian's `/usr/lib/podman` (for aardvark-dns), with its own network
//! config dir, root, runroot and tmpdir, run in a TestHost's host
//! namespace. Never the machine's podman config or storage. Rootful podman
//! 4.3 always gives netavark `/run/containers/networks` (ipam db,
//! aardvark-dns files): every podman command runs in a mount namespace of
//! the test's (a holder process) where a test dir is bound there; `/run/netns`
//! stays shared with the machine, so podman's namespaces are seen outside.
//! Containers are removed on drop, leftovers (conmon, aardvark-dns) killed by PID.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::cni::{busybox_rootfs, kill_marked};

pub const IMAGE: &str = "pierbb";

/// pier's binary (multi-call: named `netavark` it speaks netavark 1.4).
pub fn pier_bin() -> PathBuf {
    crate::host::pier_bin()
}

/// Why podman with netavark cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    for b in [
        "/usr/bin/podman",
        "/usr/sbin/runc",
        "/usr/bin/conmon",
        "/bin/busybox",
        "/usr/lib/podman/aardvark-dns",
    ] {
        if !Path::new(b).exists() {
            return Some(format!(
                "{b} is not installed (cargo xtask setup installs podman, runc, aardvark-dns and busybox-static)"
            ));
        }
    }
    None
}

/// Where rootful podman points netavark's `--config`.
pub const MACHINE_RUN_DIR: &str = "/run/containers/networks";

/// How many `Podman`s of all test processes use [`MACHINE_RUN_DIR`] as a
/// mount point, and how much of it the first of them had to create: `N
/// MADE` (0: nothing, 1: the directory, 2: its parent `/run/containers`
/// too).
/// Read and written under an flock of `/run` itself (no lock file to leave
/// behind); the last user removes the directory it made, and this file.
const RUN_DIR_USERS: &str = "/run/pier-test-podman.users";

fn run_dir_users<T>(f: impl FnOnce(&mut u32, &mut u8) -> T) -> T {
    use std::os::fd::AsRawFd;
    let run = std::fs::File::open("/run").expect("open /run");
    // SAFETY: flock(2) on a descriptor we own; released when it closes.
    assert_eq!(
        unsafe { libc::flock(run.as_raw_fd(), libc::LOCK_EX) },
        0,
        "flock /run"
    );
    let text = std::fs::read_to_string(RUN_DIR_USERS).unwrap_or_default();
    let mut it = text.split_whitespace();
    let mut n: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut made: u8 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let r = f(&mut n, &mut made);
    if n == 0 {
        let _ = std::fs::remove_file(RUN_DIR_USERS);
    } else {
        std::fs::write(RUN_DIR_USERS, format!("{n} {made}")).expect("users file");
    }
    drop(run);
    r
}

pub struct Podman {
    pub dir: PathBuf,
    host_ns: String,
    /// The process holding the test's mount namespace.
    holder: std::process::Child,
    /// `PIER_SOCKET` for the shim: an agent's socket, or a path where none
    /// listens (the shim then works without an agent).
    socket: PathBuf,
    sandboxes: std::cell::RefCell<Vec<PathBuf>>,
}

impl Podman {
    /// Podman in `h`'s host namespace; the shim asks the agent on `socket`
    /// when one listens there.
    pub fn new(h: &crate::TestHost, socket: &Path) -> Self {
        let dir = h.dir.join("podman");
        let helpers = dir.join("helpers");
        std::fs::create_dir_all(&helpers).unwrap();
        std::fs::create_dir_all(dir.join("networks")).unwrap();
        let _ = std::fs::remove_file(helpers.join("netavark"));
        // A wrapper, not a link: podman's cleanup process (conmon's exit
        // command, which may tear a killed container down before `podman rm`
        // does) does not carry the test's environment, so the shim gets its
        // socket here, whoever runs it.
        let wrapper = helpers.join("netavark");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nPIER_SOCKET='{}' PIER_LOG=\"${{PIER_LOG:-info}}\" exec '{}' netavark \"$@\"\n",
                socket.display(),
                pier_bin().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 helper_binaries_dir = [\"{}\", \"/usr/lib/podman\"]\n",
                dir.join("networks").display(),
                helpers.display(),
            ),
        )
        .unwrap();
        let run = dir.join("netavark-run");
        std::fs::create_dir_all(&run).unwrap();
        run_dir_users(|n, made| {
            if *n == 0 {
                let dir = Path::new(MACHINE_RUN_DIR);
                *made = if !dir.parent().unwrap().exists() {
                    2
                } else {
                    u8::from(!dir.exists())
                };
            }
            std::fs::create_dir_all(MACHINE_RUN_DIR).unwrap();
            *n += 1;
        });
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "unchanged", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' {MACHINE_RUN_DIR} && echo ok && exec sleep infinity",
                run.display()
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the mount namespace holder");
        let mut holder = holder;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ok", "binding the test's netavark run dir");
        let p = Podman {
            dir,
            host_ns: h.host_ns.clone(),
            holder,
            socket: socket.to_path_buf(),
            sandboxes: Default::default(),
        };
        let (_, tar) = busybox_rootfs(&p.dir);
        p.ok(&["import", &tar.to_string_lossy(), IMAGE]);
        p
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        let d = self.dir.display().to_string();
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg(format!("--net=/run/netns/{}", self.host_ns))
            .args(["--", "podman"])
            .args([
                "--root",
                &format!("{d}/root"),
                "--runroot",
                &format!("{d}/runroot"),
                "--tmpdir",
                &format!("{d}/tmp"),
                "--storage-driver",
                "vfs",
                "--runtime",
                "/usr/sbin/runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("PIER_SOCKET", &self.socket)
            .env("PIER_LOG", "info")
            .output()
            .expect("spawn podman")
    }

    /// [`Podman::cmd`], panicking unless it succeeds; stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The error text of a podman command that must fail.
    pub fn err(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(!o.status.success(), "podman {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `podman run -d` of a container that sleeps; its network namespace.
    pub fn run(&self, name: &str, args: &[&str]) -> PathBuf {
        let mut a = vec![
            "run",
            "-d",
            "--name",
            name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        a.extend_from_slice(args);
        a.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        self.ok(&a);
        let key =
            PathBuf::from(self.ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]));
        self.sandboxes.borrow_mut().push(key.clone());
        key
    }

    /// The container's address on `net`.
    pub fn ip_of(&self, name: &str, net: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            name,
        ])
    }

    /// netavark's `--config` as the test sees it (bound on
    /// [`MACHINE_RUN_DIR`] for podman).
    pub fn netavark_config(&self) -> PathBuf {
        self.dir.join("netavark-run")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-t", "0", "--all"]);
        // aardvark-dns (named by the run dir podman sees), by its pid file.
        if let Some(pid) =
            std::fs::read_to_string(self.netavark_config().join("aardvark-dns/aardvark.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("aardvark-dns"))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        kill_marked(&self.dir.to_string_lossy());
        run_dir_users(|n, made| {
            *n = n.saturating_sub(1);
            if *n == 0 && *made > 0 {
                let dir = Path::new(MACHINE_RUN_DIR);
                let _ = std::fs::remove_dir(dir);
                if *made == 2 {
                    let _ = std::fs::remove_dir(dir.parent().unwrap());
                }
            }
        });
        for s in self.sandboxes.borrow().iter() {
            if s.exists() {
                let _ = nix::mount::umount2(s, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(s);
            }
        }
    }
}
