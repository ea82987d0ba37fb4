use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Uplink address of the host namespace.
pub const HOST_UPLINK_IP: &str = "198.18.0.1";
/// Address of the outside namespace on the uplink.
pub const OUTSIDE_IP: &str = "198.18.0.2";
/// Name of the uplink inside the host namespace.
pub const UPLINK: &str = "uplink0";
/// The router side of the link made by [`TestHost::add_behind_router`].
pub const ROUTER_FAR_IP: &str = "198.19.0.1";
/// The namespace behind the router.
pub const BEHIND_ROUTER_IP: &str = "198.19.0.2";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique, short prefix (interface names are limited to 15 bytes).
fn unique_prefix() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("pt{:x}{n:x}", std::process::id() & 0xfffff)
}

pub struct TestHost {
    pub prefix: String,
    /// Name of the host namespace under /run/netns.
    pub host_ns: String,
    /// Name of the outside namespace under /run/netns.
    pub outside_ns: String,
    /// Extra namespaces made by [`TestHost::add_netns`].
    extra_ns: Vec<String>,
    /// Scratch directory: agent state, run dir, socket, logs.
    pub dir: PathBuf,
    /// bpffs directory the agent of this host pins into.
    pub bpffs_dir: PathBuf,
    agents: Vec<Child>,
    /// Agents started so far (names their logs: a restarted agent must not
    /// overwrite the log of the one that was killed).
    started: usize,
}

impl TestHost {
    /// Build a host namespace and an outside namespace joined by the uplink.
    pub fn new() -> Self {
        let prefix = unique_prefix();
        let h = TestHost {
            host_ns: format!("{prefix}-host"),
            outside_ns: format!("{prefix}-out"),
            extra_ns: Vec::new(),
            dir: std::env::temp_dir().join(format!("pier-test-{prefix}")),
            bpffs_dir: PathBuf::from(format!("/sys/fs/bpf/pier-test-{prefix}")),
            agents: Vec::new(),
            started: 0,
            prefix,
        };
        // From here on, Drop cleans up whatever was made.
        std::fs::create_dir_all(&h.dir).expect("scratch dir");
        sh(&["ip", "netns", "add", &h.host_ns]);
        sh(&["ip", "netns", "add", &h.outside_ns]);
        // The veth is created inside the host namespace, so its names never
        // meet the machine's real interfaces.
        veth_between(
            (&h.host_ns, UPLINK, HOST_UPLINK_IP),
            (&h.outside_ns, "eth0", OUTSIDE_IP),
        );
        for ns in [&h.host_ns, &h.outside_ns] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The host's default route points at the outside, like a real uplink.
        sh(&[
            "ip", "-n", &h.host_ns, "route", "add", "default", "via", OUTSIDE_IP,
        ]);
        h
    }

    /// Make another namespace owned by this host (removed on drop).
    pub fn add_netns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        sh(&["ip", "netns", "add", &name]);
        self.extra_ns.push(name.clone());
        name
    }

    /// Make the outside namespace a router with a namespace behind it
    /// (removed on drop): `eth1` (198.19.0.1/24) outside ↔ `eth0`
    /// (198.19.0.2/24) in the new namespace, which routes via the outside.
    /// `onward_mtu`: the MTU of the router's route onwards (locked, as a
    /// tunnel or PPPoE hop in the path would make it), while both veth ends
    /// keep 1500, so the far side still advertises a 1460-byte MSS and
    /// packets towards it must learn the path MTU. Returns its name.
    pub fn add_behind_router(&mut self, suffix: &str, onward_mtu: u32) -> String {
        let far = self.add_netns(suffix);
        let out = self.outside_ns.clone();
        veth_between(
            (&out, "eth1", ROUTER_FAR_IP),
            (&far, "eth0", BEHIND_ROUTER_IP),
        );
        sh(&["ip", "-n", &far, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &out,
            "route",
            "replace",
            "198.19.0.0/24",
            "dev",
            "eth1",
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            ROUTER_FAR_IP,
            "mtu",
            "lock",
            &onward_mtu.to_string(),
        ]);
        sh(&[
            "ip",
            "-n",
            &far,
            "route",
            "add",
            "default",
            "via",
            ROUTER_FAR_IP,
        ]);
        // A router forwards (a sysctl of the outside namespace only).
        run_ok(Self::cmd_in(&out, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
        far
    }

    /// A command that runs inside namespace `ns` (network namespace only).
    pub fn cmd_in(ns: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program);
        c
    }

    /// Run `args` in the host namespace; panic on failure; return stdout.
    pub fn host(&self, args: &[&str]) -> String {
        run_ok(Self::cmd_in(&self.host_ns, args[0]).args(&args[1..]))
    }

    /// Run `args` in the outside namespace; panic on failure; return stdout.
    pub fn outside(&self, args: &[&str]) -> String {
        run_ok(Self::cmd_in(&self.outside_ns, args[0]).args(&args[1..]))
    }

    /// Run `args` in the outside namespace and return the whole output.
    pub fn outside_output(&self, args: &[&str]) -> Output {
        Self::cmd_in(&self.outside_ns, args[0])
            .args(&args[1..])
            .output()
            .expect("spawn")
    }

    /// Run `f` on a fresh thread that has joined namespace `ns`. Socket and
    /// netlink handles opened there belong to `ns`.
    pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// Path of the agent's API socket in this host.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/pier.sock")
    }

    /// `pier agent` in the host namespace with this host's dirs, plus `extra`.
    pub fn agent_command(&self, extra: &[&str]) -> Command {
        self.agent_args(
            Self::cmd_in(&self.host_ns, &pier_bin().to_string_lossy()),
            extra,
        )
    }

    /// [`TestHost::agent_command`] started as `ip netns exec HOST pier agent
    /// …`: a mount namespace of its own with a fresh `/sys` (no bpffs, no
    /// cgroup v2), as a user who runs the agent that way gets.
    pub fn agent_command_netns_exec(&self, extra: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host_ns]).arg(pier_bin());
        self.agent_args(c, extra)
    }

    fn agent_args(&self, mut c: Command, extra: &[&str]) -> Command {
        c.arg("agent")
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir)
            .arg("--uplink")
            .arg(UPLINK)
            .args(default_dns_upstream(extra))
            .args(extra);
        c
    }

    /// Start `pier agent` in the host namespace with this host's dirs.
    pub fn start_agent(&mut self, extra: &[&str]) -> Agent {
        self.start_agent_logging(extra, "info")
    }

    /// [`TestHost::start_agent`] with `RUST_LOG=rust_log`.
    pub fn start_agent_logging(&mut self, extra: &[&str], rust_log: &str) -> Agent {
        let c = self.agent_command(extra);
        self.start_agent_with(c, rust_log)
    }

    /// Start the agent `c` makes (`agent_command*`) and wait for its socket.
    pub fn start_agent_with(&mut self, mut c: Command, rust_log: &str) -> Agent {
        let log = self.dir.join(format!("agent-{}.log", self.started));
        self.started += 1;
        let logf = std::fs::File::create(&log).expect("agent log");
        c.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .env("RUST_LOG", rust_log);
        // Own process group, so a stop reaches the agent and not nsenter only.
        c.process_group(0);
        let child = c.spawn().expect("spawn agent");
        let pid = child.id();
        self.agents.push(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket().exists() {
            if let Ok(Some(st)) = self.agents.last_mut().unwrap().try_wait() {
                panic!(
                    "agent exited ({st}) before opening its socket; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "agent did not open its socket in 20 s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { pid, log }
    }

    /// Run the `pier` CLI against this host's agent.
    pub fn pier(&self, args: &[&str]) -> Output {
        Command::new(pier_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("spawn pier")
    }

    /// Like [`TestHost::pier`], with extra environment variables for the CLI.
    pub fn pier_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(pier_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("spawn pier")
    }

    /// Like [`TestHost::pier`], panicking unless it succeeds; returns stdout.
    pub fn pier_ok(&self, args: &[&str]) -> String {
        let out = self.pier(args);
        assert!(
            out.status.success(),
            "pier {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stop an agent with `signal` and wait for it to exit.
    pub fn stop_agent(&mut self, agent: &Agent, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(agent.pid as i32), signal);
        if let Some(i) = self.agents.iter().position(|c| c.id() == agent.pid) {
            let mut c = self.agents.remove(i);
            let _ = c.wait();
        }
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for c in &mut self.agents {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
        // Containers an agent made live under its run dir as bind mounts.
        unmount_below(&self.dir);
        for ns in self
            .extra_ns
            .iter()
            .chain([&self.outside_ns, &self.host_ns])
        {
            kill_netns_processes(ns);
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if self.bpffs_dir.exists() {
            let _ = std::fs::remove_dir_all(&self.bpffs_dir);
        }
        if std::env::var_os("PIER_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kill every process whose network namespace is `ns`.
fn kill_netns_processes(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Lazily unmount every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
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

/// Unless a test names its own, the agent's DNS upstream is the outside
/// namespace (where tests run fake resolvers), never the machine's resolver.
fn default_dns_upstream(extra: &[&str]) -> Vec<&'static str> {
    if extra.contains(&"--dns-upstream") {
        Vec::new()
    } else {
        vec!["--dns-upstream", OUTSIDE_IP]
    }
}

/// A running agent started by [`TestHost::start_agent`].
pub struct Agent {
    pub pid: u32,
    pub log: PathBuf,
}

impl Agent {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The `pier` binary under test: `$PIER_BIN`, else target/debug/pier.
pub fn pier_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIER_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pier");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo xtask build` (cargo xtask test does)",
        p.display()
    );
    p
}

/// Run a command; panic with its output unless it succeeds.
/// A veth pair from `(namespace, device, address)` `a` to `b`, made in
/// `a`'s namespace, each end with its address as a /24 and up.
pub fn veth_between(a: (&str, &str, &str), b: (&str, &str, &str)) {
    sh(&[
        "ip", "-n", a.0, "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", b.0,
    ]);
    for (ns, dev, ip) in [a, b] {
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
}

pub fn sh(args: &[&str]) -> String {
    run_ok(Command::new(args[0]).args(&args[1..]))
}

pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Helpers for agent tests: containers made by `pier`, and snapshots of what
/// the agent made, to prove a failed command changed nothing.
impl TestHost {
    /// The run dir of agents started by [`TestHost::start_agent`].
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Bind mount of a container's network namespace.
    pub fn container_netns(&self, id: &str) -> PathBuf {
        self.run_dir().join("netns").join(id)
    }

    /// Full id of a container, from `pier inspect`.
    pub fn container_id(&self, name: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.pier_ok(&["inspect", name])).expect("inspect JSON");
        v[0]["Id"].as_str().expect("Id").to_string()
    }

    /// Run `args` inside container `name`'s network namespace (nsenter);
    /// panic on failure; return stdout.
    pub fn in_container(&self, name: &str, args: &[&str]) -> String {
        let ns = self.container_netns(&self.container_id(name));
        run_ok(
            Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .arg("--")
                .args(args),
        )
    }

    /// Run the `pier` CLI expecting failure; returns stderr.
    pub fn pier_err(&self, args: &[&str]) -> String {
        let out = self.pier(args);
        assert!(
            !out.status.success(),
            "pier {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Interface names in the host namespace, sorted.
    pub fn host_link_names(&self) -> Vec<String> {
        let out = self.host(&["ip", "-o", "link", "show"]);
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// What the kernel and the agent hold: host links and addresses, the
    /// agent's namespaces and files, `network ls`, `ps -a`.
    pub fn world(&self) -> String {
        let mut s = String::new();
        s += &self.host(&["ip", "-br", "link", "show"]);
        s += &self.host(&["ip", "-br", "-4", "addr", "show"]);
        for sub in ["netns", "containers"] {
            let mut names: Vec<String> = std::fs::read_dir(self.run_dir().join(sub))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            s += &format!("{sub}: {names:?}\n");
        }
        s += &self.pier_ok(&["network", "ls"]);
        s += &stable_ps(&self.pier_ok(&["ps", "-a"]));
        s
    }
}

/// `ps -a` without what changes by itself: the age in its STATUS column
/// (`Up 3 seconds` is `Up`, `Exited (0) 2 minutes ago` is `Exited (0)`).
/// Cells are cut at the header's column starts, trimmed and joined by `|`.
pub fn stable_ps(ps: &str) -> String {
    let mut lines = ps.lines();
    let Some(header) = lines.next() else {
        return String::new();
    };
    let starts: Vec<usize> = [
        "CONTAINER ID",
        "COMMAND",
        "STATUS",
        "PORTS",
        "NETWORKS",
        "NAMES",
    ]
    .iter()
    .map(|h| {
        header
            .find(h)
            .unwrap_or_else(|| panic!("no {h} in {header:?}"))
    })
    .collect();
    let mut out = header.split_whitespace().collect::<Vec<_>>().join(" ") + "\n";
    for l in lines {
        let cells: Vec<String> = (0..starts.len())
            .map(|i| {
                let end = starts.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                let cell = l.get(starts[i].min(l.len())..end).unwrap_or("").trim();
                if i != 2 {
                    return cell.to_string();
                }
                match cell.find(')') {
                    Some(p) if cell.starts_with("Exited (") => cell[..=p].to_string(),
                    _ if cell.starts_with("Up ") => "Up".to_string(),
                    _ => cell.to_string(),
                }
            })
            .collect();
        out += &(cells.join(" | ") + "\n");
    }
    out
}

impl TestHost {
    /// Run `pier agent` with this host's dirs in the foreground and wait for
    /// it to exit (for agents expected to fail at start).
    pub fn run_agent_to_exit(&self, extra: &[&str]) -> Output {
        self.agent_command(extra)
            .stdin(Stdio::null())
            .output()
            .expect("spawn agent")
    }

    /// Run the `pier` CLI with `stdin` as its input; the whole output.
    pub fn pier_with_input(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(pier_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pier");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait pier")
    }
}

impl TestHost {
    /// Wait until the agent answers on the socket (after a killed agent left
    /// a stale socket file behind, `start_agent` returns early).
    pub fn wait_agent_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pier(&["network", "ls", "-q"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the agent did not answer in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod stable_ps_tests {
    #[test]
    fn ages_go_other_cells_stay() {
        let ps = "CONTAINER ID   COMMAND        STATUS                           PORTS                    NETWORKS   NAMES\n\
                  7c10b3849072   \"\"             Up 1 second                      0.0.0.0:8081->8080/tcp   bridge     web\n\
                  a2e62bdae677   \"sh -c x\"      Exited (3) 2 minutes ago                                  tiny       x1\n";
        assert_eq!(
            super::stable_ps(ps),
            "CONTAINER ID COMMAND STATUS PORTS NETWORKS NAMES\n\
             7c10b3849072 | \"\" | Up | 0.0.0.0:8081->8080/tcp | bridge | web\n\
             a2e62bdae677 | \"sh -c x\" | Exited (3) |  | tiny | x1\n"
        );
    }
}
