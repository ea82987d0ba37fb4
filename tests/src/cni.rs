//! pier's CNI plugin under test: the `pier-cni` binary invoked as a runtime
//! does (CNI_* variables, the config on stdin), a CNI bin dir holding it as
//! `pier` next to Debian's reference plugins, and the runtimes' helpers.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

/// Debian's reference plugins (containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The plugin under test: `$PIER_CNI_BIN`, else target/debug/pier-cni.
pub fn plugin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIER_CNI_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pier-cni");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo xtask build` (cargo xtask test does)",
        p.display()
    );
    p
}

/// What one invocation printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    /// stdout as JSON (`Null` when empty).
    pub out: Value,
    pub stderr: String,
}

impl Outcome {
    /// The error code of a failed invocation (panics on success).
    pub fn code(&self) -> u64 {
        assert_ne!(self.status, 0, "the plugin succeeded: {:?}", self.out);
        self.out["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self))
    }

    /// Panics unless it succeeded; the result.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 0, "the plugin failed: {self:?}");
        &self.out
    }
}

/// Run the plugin with `CNI_COMMAND=command`, the other `CNI_*` in `env`,
/// and `conf` on stdin.
pub fn invoke(command: &str, env: &[(&str, &str)], conf: &Value) -> Outcome {
    let mut c = Command::new(plugin_bin());
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", REFERENCE_PLUGINS);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pier-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().expect("wait pier-cni");
    let text = String::from_utf8_lossy(&o.stdout);
    Outcome {
        status: o.status.code().unwrap_or(-1),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout {text:?}: {e}"))
        },
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A CNI bin dir under `dir`: `pier` (the plugin under test) and Debian's
/// `loopback`.
pub fn bin_dir(dir: &Path) -> PathBuf {
    let b = dir.join("cni-bin");
    std::fs::create_dir_all(&b).unwrap();
    let _ = std::fs::remove_file(b.join("pier"));
    std::os::unix::fs::symlink(plugin_bin(), b.join("pier")).unwrap();
    let lo = Path::new(REFERENCE_PLUGINS).join("loopback");
    if lo.exists() {
        let _ = std::os::unix::fs::symlink(&lo, b.join("loopback"));
    }
    b
}

/// Why the CNI runtime tests cannot run here, if they cannot.
pub fn reference_plugins_missing() -> Option<String> {
    let lo = Path::new(REFERENCE_PLUGINS).join("loopback");
    (!lo.exists()).then(|| {
        format!(
            "{} is not installed (cargo xtask setup installs containernetworking-plugins)",
            lo.display()
        )
    })
}

/// Where the plugin queues DELs for the agent of `socket`.
pub fn queue_dir(socket: &Path) -> PathBuf {
    pier_agent::cni::delete_queue_dir(socket)
}

/// Applets linked in the busybox image of the runtime tests.
const APPLETS: &[&str] = &[
    "sh", "ip", "nc", "cat", "ls", "sleep", "echo", "nslookup", "ping", "hostname", "true",
];

/// A busybox-static rootfs under `dir/rootfs` and its tar (no registry).
pub fn busybox_rootfs(dir: &Path) -> (PathBuf, PathBuf) {
    let r = dir.join("rootfs");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    for a in APPLETS {
        let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(a));
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&r)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the rootfs");
    (r, tar)
}

/// Kill every process whose command line mentions `mark` (a test's dir), by
/// PID: what a runtime started and left behind (conmon, shims).
pub fn kill_marked(mark: &str) {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id() as i32;
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(mark) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Why podman cannot run here, if it cannot.
pub fn podman_missing() -> Option<String> {
    for b in [
        "/usr/bin/podman",
        "/usr/sbin/runc",
        "/usr/bin/conmon",
        "/bin/busybox",
    ] {
        if !Path::new(b).exists() {
            return Some(format!(
                "{b} is not installed (cargo xtask setup installs podman, runc and busybox-static)"
            ));
        }
    }
    reference_plugins_missing()
}

/// Podman 4.3 with its CNI backend, run in a TestHost's host namespace with
/// its own root, runroot, tmpdir and a test-only `containers.conf` naming a
/// test-only CNI config dir (`conf_dir`) and bin dir; never the machine's
/// `/etc/cni/net.d`. Containers are removed on drop, leftovers killed by PID.
pub struct Podman {
    pub dir: PathBuf,
    pub conf_dir: PathBuf,
    host_ns: String,
    /// Namespaces podman made for our containers, removed on drop if left.
    sandboxes: std::cell::RefCell<Vec<PathBuf>>,
}

pub const PODMAN_IMAGE: &str = "pierbb";

impl Podman {
    pub fn new(h: &crate::TestHost) -> Self {
        let dir = h.dir.join("podman");
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let bin = bin_dir(&dir);
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                bin.display(),
                conf_dir.display()
            ),
        )
        .unwrap();
        let p = Podman {
            dir,
            conf_dir,
            host_ns: h.host_ns.clone(),
            sandboxes: Default::default(),
        };
        let (_, tar) = busybox_rootfs(&p.dir);
        p.ok(&["import", &tar.to_string_lossy(), PODMAN_IMAGE]);
        p
    }

    /// Write conflist `name` into the test's CNI config dir.
    pub fn add_conflist(&self, file: &str, v: &Value) {
        std::fs::write(self.conf_dir.join(file), v.to_string()).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        let d = self.dir.display().to_string();
        Command::new("nsenter")
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

    /// `podman run -d` of a container that sleeps, with the ulimits this
    /// machine needs; its network namespace.
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
        a.extend_from_slice(&[PODMAN_IMAGE, "sleep", "3600"]);
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
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-t", "0", "--all"]);
        kill_marked(&self.dir.to_string_lossy());
        for s in self.sandboxes.borrow().iter() {
            if s.exists() {
                let _ = nix::mount::umount2(s, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(s);
            }
        }
    }
}

/// Why containerd cannot run here, if it cannot.
pub fn containerd_missing() -> Option<String> {
    for b in [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/usr/sbin/runc",
        "/bin/busybox",
    ] {
        if !Path::new(b).exists() {
            return Some(format!(
                "{b} is not installed (cargo xtask setup installs containerd and runc)"
            ));
        }
    }
    reference_plugins_missing()
}

/// containerd 1.6 for `ctr run --cni`, in a TestHost's host namespace and a
/// private mount namespace (held by a process of its own) where `/run` is a
/// test dir, `/etc/cni/net.d` the test's CNI config dir and `/opt` a tmpfs
/// holding `/opt/cni/bin` (ctr reads those fixed paths): the machine's
/// `/etc/cni/net.d` is never read or changed. Stopped by PID.
pub struct Containerd {
    pub dir: PathBuf,
    pub conf_dir: PathBuf,
    host_ns: String,
    holder: Option<std::process::Child>,
    daemon: Option<std::process::Child>,
}

impl Containerd {
    pub fn start(h: &crate::TestHost, conflist: &Value) -> Self {
        let dir = h.dir.join("containerd");
        let conf_dir = dir.join("net.d");
        for d in ["run", "root", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-pier.conflist"), conflist.to_string()).unwrap();
        let d = dir.display().to_string();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/sock\"\n"
            ),
        )
        .unwrap();
        let script = format!(
            "mount --bind {d}/run /run && mount --bind {netd} /etc/cni/net.d && \
             mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && \
             ln -s {pier} /opt/cni/bin/pier && ln -s {REFERENCE_PLUGINS}/loopback /opt/cni/bin/loopback && \
             touch {d}/mounted && exec sleep 86400",
            netd = conf_dir.display(),
            pier = plugin_bin().display(),
        );
        let holder = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.host_ns))
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
        let mut c = Containerd {
            dir,
            conf_dir,
            host_ns: h.host_ns.clone(),
            holder: Some(holder),
            daemon: None,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.dir.join("mounted").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the mount namespace holder did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = std::fs::File::create(c.dir.join("containerd.log")).unwrap();
        let daemon = c
            .enter()
            .arg("containerd")
            .arg("-c")
            .arg(c.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        c.daemon = Some(daemon);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not answer: {}",
                std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    }

    /// A command in containerd's namespaces (host netns, private mounts).
    fn enter(&self) -> Command {
        let pid = self.holder.as_ref().unwrap().id();
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host_ns))
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--");
        c
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        self.enter()
            .arg("ctr")
            .arg("-a")
            .arg(self.dir.join("sock"))
            .args(args)
            .output()
            .expect("spawn ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        kill_marked(&self.dir.to_string_lossy());
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// Why the libcni runner cannot be built here, if it cannot.
pub fn libcni_missing() -> Option<String> {
    for p in [
        "/usr/bin/go",
        "/usr/share/gocode/src/github.com/containernetworking/cni/libcni",
    ] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} is not installed (cargo xtask setup installs golang-go and golang-github-appc-cni-dev)"
            ));
        }
    }
    reference_plugins_missing()
}

/// Build `tests/cni/libcni-runner.go` against Debian's libcni into `dir`.
pub fn build_libcni_runner(dir: &Path) -> PathBuf {
    let src = dir.join("go/src/libcni-runner");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("cni/libcni-runner.go"),
        src.join("main.go"),
    )
    .unwrap();
    let out = dir.join("libcni-runner");
    let o = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:/usr/share/gocode", dir.join("go").display()),
        )
        .env("GOCACHE", dir.join("go/cache"))
        .output()
        .expect("spawn go");
    assert!(
        o.status.success(),
        "go build of the libcni runner: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
