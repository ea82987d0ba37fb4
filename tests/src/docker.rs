//! A real dockerd (Debian's 20.10) for the Docker driver's tests, run inside
//! a [`TestHost`]'s host namespace and never as the machine's service: its
//! own `--data-root`, `--exec-root`, `-H unix://…` and `--pidfile` under the
//! test's dir, `--iptables=false --ip-forward=false --bridge=none`, and a
//! private mount namespace whose `/run` is a directory of the test's (kept
//! across restarts: containerd's shims listen there), with the
//! test's plugin directory bind-mounted at `/run/docker/plugins` (where
//! dockerd looks for `pier.sock`); a holder process keeps that namespace
//! across dockerd restarts. Stopped by its PID; the containers it ran, the
//! processes left under its exec root and the holder are killed by PID too.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::TestHost;

/// The image every test imports: a busybox-static rootfs, no registry.
pub const IMAGE: &str = "pierbb:1";

/// Applets linked in the image.
const APPLETS: &[&str] = &[
    "sh", "ip", "nc", "cat", "ls", "sleep", "httpd", "echo", "wget", "nslookup", "ping", "netstat",
    "ifconfig", "route", "hostname", "true",
];

pub struct Dockerd {
    pub dir: PathBuf,
    child: Option<Child>,
    holder: Option<Child>,
    pub log: PathBuf,
    extra: Vec<String>,
    host_ns: String,
}

/// Why the Docker tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    for b in [
        "/usr/sbin/dockerd",
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/bin/busybox",
    ] {
        if !Path::new(b).exists() {
            return Some(format!(
                "{b} is not installed (cargo xtask setup installs docker.io and busybox-static)"
            ));
        }
    }
    if docker_cli().is_none() {
        return Some("no docker CLI installed".into());
    }
    None
}

/// Skip (return from) the test with a message when dockerd is not installed.
#[macro_export]
macro_rules! require_dockerd {
    () => {
        $crate::require_root!();
        if let Some(why) = $crate::docker::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Debian's 20.10 client matches the daemon; a newer one works too.
fn docker_cli() -> Option<&'static str> {
    ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

impl Dockerd {
    /// Start dockerd in `h`'s host namespace; it finds plugins in
    /// `plugin_dir`. `extra` flags are added (e.g. `--live-restore`).
    pub fn start(h: &TestHost, plugin_dir: &Path, extra: &[&str]) -> Self {
        let dir = h.dir.join("docker");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(plugin_dir).unwrap();
        let mut d = Dockerd {
            log: dir.join("dockerd.log"),
            dir,
            child: None,
            holder: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            host_ns: h.host_ns.clone(),
        };
        d.spawn(plugin_dir);
        d.import_image();
        d
    }

    /// A process that holds the daemon's private mount namespace, so
    /// that it outlives a dockerd restart (its sandboxes' namespace bind
    /// mounts live there): `/run` is a directory of the test's, with the
    /// plugin directory at `/run/docker/plugins`.
    fn hold_mount_ns(&mut self, plugin_dir: &Path) -> i32 {
        if let Some(h) = &self.holder {
            return h.id() as i32;
        }
        let script = format!(
            "mkdir -p {d}/run && mount --bind {d}/run /run && mkdir -p /run/docker/plugins && \
             mount --bind {plugins} /run/docker/plugins && touch {d}/mounted && exec sleep 86400",
            plugins = plugin_dir.display(),
            d = self.dir.display(),
        );
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns))
            .args([
                "--",
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the mount namespace holder");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.dir.join("mounted").exists() {
            assert!(
                Instant::now() < deadline,
                "the mount namespace holder did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = child.id() as i32;
        self.holder = Some(child);
        pid
    }

    fn spawn(&mut self, plugin_dir: &Path) {
        let holder = self.hold_mount_ns(plugin_dir);
        let d = self.dir.display().to_string();
        let mut args: Vec<String> = [
            "--data-root",
            &format!("{d}/root"),
            "--exec-root",
            &format!("{d}/exec"),
            "--pidfile",
            &format!("{d}/pid"),
            "-H",
            &format!("unix://{d}/sock"),
            "--iptables=false",
            "--ip-forward=false",
            "--bridge=none",
            "--userland-proxy=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host_ns))
            .arg(format!("--mount=/proc/{holder}/ns/mnt"))
            .args(["--", "dockerd"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .cmd(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                break;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited ({st}); log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!("dockerd did not answer in 60 s; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn import_image(&self) {
        let r = self.dir.join("rootfs");
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in APPLETS {
            let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(a));
        }
        for d in ["etc", "tmp", "proc", "sys", "dev", "www"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("www/index.html"), "pier\n").unwrap();
        let tar = self.dir.join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&r)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar of the rootfs");
        self.ok(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// The docker CLI against this daemon.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(docker_cli().expect("docker CLI"))
            .env("DOCKER_HOST", format!("unix://{}/sock", self.dir.display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .args(args)
            .output()
            .expect("spawn docker")
    }

    /// [`Dockerd::cmd`], panicking unless it succeeds; stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// [`Dockerd::cmd`], panicking if it succeeds; stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            !o.status.success(),
            "docker {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `/proc/<pid>/ns/net` of a running container: its namespace.
    pub fn netns_of(&self, name: &str) -> PathBuf {
        let pid = self.ok(&["inspect", "-f", "{{.State.Pid}}", name]);
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    /// The container's address on network `net`.
    pub fn ip_of(&self, name: &str, net: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            name,
        ])
    }

    /// Stop dockerd (SIGTERM, then SIGKILL after `grace`) and wait.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = c.wait();
    }

    /// Start it again (same dirs and flags) after [`Dockerd::stop`].
    pub fn restart(&mut self, plugin_dir: &Path) {
        self.spawn(plugin_dir);
    }

    /// Kill every process started from this daemon's dirs (containerd,
    /// shims) and the containers' processes, by PID.
    fn kill_leftovers(&self) {
        let mark = self.dir.to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&mark) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            // The containers first (also those --live-restore would keep).
            let ids = self.cmd(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids);
                let _ = self.cmd(&a);
            }
            self.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15));
        }
        self.kill_leftovers();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        // Its mounts lived in its own mount namespace, gone with it.
        if std::env::var_os("PIER_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
