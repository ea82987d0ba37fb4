//! A world of namespaces, as on a real host: an outside (client) namespace,
//! a host namespace joined to it by the uplink veth, and containers.
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{cleanup, load::LoadResult};

/// Uplink addresses (198.18.0.0/15 is for benchmarks, RFC 2544).
pub const HOST_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const UPLINK: &str = "uplink0";

/// The container network, as Docker's default bridge.
pub const BRIDGE: &str = "docker0";
pub const SUBNET: &str = "172.17.0.0/16";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// The measured container.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
/// The container that holds the "other" published ports.
pub const FILLER_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

/// Ports inside the measured container and their published host ports.
pub const ECHO_TCP: u16 = 8080;
pub const ECHO_TCP_HOST: u16 = 8081;
pub const ECHO_UDP: u16 = 9000;
pub const ECHO_UDP_HOST: u16 = 9001;
pub const IPERF: u16 = 5201;
pub const IPERF_HOST: u16 = 5202;
/// First host port of the "other" published ports (then every second port).
pub const OTHER_PORTS_FIRST: u16 = 20000;
/// The 1000-port range published for `publish_1000_ms`.
pub const RANGE_FIRST: u16 = 10000;
pub const RANGE_LAST: u16 = 10999;

/// Programs the bench drives.
#[derive(Clone, Debug)]
pub struct Bins {
    pub echo: PathBuf,
    pub load: PathBuf,
    pub pier: PathBuf,
    pub netavark: Option<PathBuf>,
}

/// What every peer shares: names, programs, the pinned CPU, run lengths.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub prefix: String,
    pub scratch: PathBuf,
    pub bins: Bins,
    pub cpu: usize,
}

impl Ctx {
    /// A run's context: what crashed runs of any bench tool left is removed
    /// first (said as `tool: …`), a fresh prefix and scratch dir are made,
    /// and SIGINT/SIGTERM clean up after `before_exit`.
    pub fn prepare(
        tool: &str,
        bins: Bins,
        cpu: usize,
        before_exit: impl Fn() + Send + 'static,
    ) -> anyhow::Result<Ctx> {
        let stale = cleanup::remove_stale();
        if !stale.is_empty() {
            eprintln!(
                "{tool}: removed what crashed runs left: {}",
                stale.join(", ")
            );
        }
        let prefix = cleanup::prefix();
        let ctx = Ctx {
            scratch: cleanup::scratch_dir(&prefix),
            prefix: prefix.clone(),
            bins,
            cpu,
        };
        std::fs::create_dir_all(&ctx.scratch)?;
        cleanup::on_interrupt(prefix, before_exit)?;
        Ok(ctx)
    }
}

/// Where the clients send to.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub iperf: SocketAddr,
}

impl Targets {
    /// The published ports on the host's uplink address.
    pub fn published() -> Self {
        let a = |p| SocketAddr::V4(SocketAddrV4::new(HOST_UPLINK_IP, p));
        Targets {
            tcp: a(ECHO_TCP_HOST),
            udp: a(ECHO_UDP_HOST),
            iperf: a(IPERF_HOST),
        }
    }

    /// The servers' own ports on the host's uplink address (the ceiling
    /// world runs them in its "host" namespace: one veth pair away).
    pub fn ceiling() -> Self {
        let a = |p| SocketAddr::V4(SocketAddrV4::new(HOST_UPLINK_IP, p));
        Targets {
            tcp: a(ECHO_TCP),
            udp: a(ECHO_UDP),
            iperf: a(IPERF),
        }
    }

    /// The published ports on 127.0.0.1, dialled from the host namespace.
    pub fn local() -> Self {
        let a = |p| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p));
        Targets {
            tcp: a(ECHO_TCP_HOST),
            udp: a(ECHO_UDP_HOST),
            iperf: a(IPERF_HOST),
        }
    }

    /// The container's own address (plain routing, no NAT).
    pub fn direct() -> Self {
        let a = |p| SocketAddr::V4(SocketAddrV4::new(SERVER_IP, p));
        Targets {
            tcp: a(ECHO_TCP),
            udp: a(ECHO_UDP),
            iperf: a(IPERF),
        }
    }
}

/// A command that runs in namespace `ns` (network namespace only).
pub fn cmd_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

/// Run to completion; stdout on success, an error with the command's last
/// stderr line otherwise.
pub fn run(c: &mut Command) -> anyhow::Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {:?}", c.get_program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("{} failed ({}): {}", show(c), out.status, last.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A short rendering of a command for error messages.
pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args().take(8) {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if c.get_args().count() > 8 {
        s.push_str(" ...");
    }
    s
}

pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new(args[0]).args(&args[1..]))
}

pub struct World {
    pub tag: String,
    pub host: String,
    pub out: String,
    /// Every namespace made, removed on drop.
    namespaces: Vec<String>,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl World {
    /// Host and outside namespaces joined by the uplink; `tag` names the peer.
    pub fn new(ctx: &Ctx, tag: &str) -> anyhow::Result<World> {
        let name = format!("{}-{tag}", ctx.prefix);
        let mut w = World {
            host: format!("{name}-host"),
            out: format!("{name}-out"),
            namespaces: Vec::new(),
            dir: ctx.scratch.join(tag),
            children: Vec::new(),
            tag: tag.to_string(),
        };
        std::fs::create_dir_all(&w.dir)?;
        for ns in [w.host.clone(), w.out.clone()] {
            sh(&["ip", "netns", "add", &ns])?;
            w.namespaces.push(ns);
        }
        // Created inside the host namespace: its names never meet real interfaces.
        sh(&[
            "ip", "-n", &w.host, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0",
            "netns", &w.out,
        ])?;
        for (ns, dev, ip) in [
            (&w.host, UPLINK, HOST_UPLINK_IP),
            (&w.out, "eth0", OUTSIDE_IP),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/15"),
                "dev",
                dev,
            ])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip",
            "-n",
            &w.host,
            "route",
            "add",
            "default",
            "via",
            &OUTSIDE_IP.to_string(),
        ])?;
        // The client: no TIME_WAIT pile-up, and all ephemeral ports.
        w.sysctl(&w.out, "net.ipv4.tcp_max_tw_buckets", "0")?;
        w.sysctl(&w.out, "net.ipv4.ip_local_port_range", "1024 65000")?;
        Ok(w)
    }

    pub fn add_ns(&mut self, suffix: &str) -> anyhow::Result<String> {
        let ns = format!("{}-{suffix}", self.host.trim_end_matches("-host"));
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// Delete a namespace made by [`World::add_ns`] (and kill what runs in it).
    pub fn del_ns(&mut self, ns: &str) {
        cleanup::delete_netns(ns);
        self.namespaces.retain(|n| n != ns);
    }

    /// Set a sysctl inside `ns` (through /proc/sys of a process in it).
    pub fn sysctl(&self, ns: &str, key: &str, val: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(cmd_in(ns, "sh").args(["-c", &format!("echo '{val}' > {path}")]))
            .with_context(|| format!("setting {key}={val} in {ns}"))?;
        Ok(())
    }

    /// A container namespace on bridge `docker0` (made here if missing), as
    /// Docker's bridge driver makes it: veth pair, `eth0` inside, default route.
    pub fn bridge_container(&mut self, suffix: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
        let h = self.host.clone();
        let have_bridge = run(Command::new("ip").args(["-n", &h, "link", "show", BRIDGE])).is_ok();
        if !have_bridge {
            sh(&["ip", "-n", &h, "link", "add", BRIDGE, "type", "bridge"])?;
            sh(&[
                "ip",
                "-n",
                &h,
                "addr",
                "add",
                &format!("{GATEWAY}/16"),
                "dev",
                BRIDGE,
            ])?;
            sh(&["ip", "-n", &h, "link", "set", BRIDGE, "up"])?;
            self.sysctl(&h, "net.ipv4.ip_forward", "1")?;
        }
        let ns = self.add_ns(suffix)?;
        let veth = format!("veth{suffix}");
        sh(&[
            "ip", "-n", &h, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        sh(&["ip", "-n", &h, "link", "set", &veth, "master", BRIDGE, "up"])?;
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/16"),
            "dev",
            "eth0",
        ])?;
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
        ])?;
        Ok(ns)
    }

    /// The servers of the measured container, as one shell command line
    /// (pier runs it as the container's command; the others under nsenter).
    pub fn server_command(ctx: &Ctx) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "iperf3 -s -p {IPERF} -A {cpu} >/dev/null 2>&1 & exec {echo} --tcp {ECHO_TCP} --udp {ECHO_UDP} --cpu {cpu} --tw-zero",
                cpu = ctx.cpu,
                echo = ctx.bins.echo.display()
            ),
        ]
    }

    /// Start the servers in `ns` (killed on drop).
    pub fn start_servers(&mut self, ctx: &Ctx, ns: &str) -> anyhow::Result<()> {
        let log = File::create(self.dir.join(format!("servers-{ns}.log")))?;
        let argv = Self::server_command(ctx);
        let mut c = cmd_in(ns, &argv[0]);
        c.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = c.spawn().context("starting the servers")?;
        self.children.push(child);
        Ok(())
    }

    /// Keep `child` and kill its process group on drop.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Wait until a TCP connection from the outside namespace to `target` works.
    pub fn wait_tcp(&self, target: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let ns = self.out.clone();
        in_netns(&ns, move || {
            let deadline = Instant::now() + timeout;
            loop {
                match TcpStream::connect_timeout(&target, Duration::from_millis(300)) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        bail!("{target} is not reachable from the outside namespace: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?
    }

    /// One run of the load client in the outside namespace.
    pub fn load(
        &self,
        ctx: &Ctx,
        mode: crate::load::Mode,
        target: SocketAddr,
        secs: f64,
    ) -> anyhow::Result<LoadResult> {
        self.load_in(&self.out, ctx, mode, target, secs)
    }

    /// One run of the load client in namespace `ns`.
    pub fn load_in(
        &self,
        ns: &str,
        ctx: &Ctx,
        mode: crate::load::Mode,
        target: SocketAddr,
        secs: f64,
    ) -> anyhow::Result<LoadResult> {
        let mode_s = match mode {
            crate::load::Mode::Rr => "rr",
            crate::load::Mode::Crr => "crr",
            crate::load::Mode::Udp => "udp",
        };
        let out = run(cmd_in(ns, &ctx.bins.load).args([
            "--mode",
            mode_s,
            "--target",
            &target.to_string(),
            "--secs",
            &secs.to_string(),
            "--cpu",
            &ctx.cpu.to_string(),
        ]))?;
        serde_json::from_str(out.trim()).context("reading pier-load's output")
    }

    /// One iperf3 run with `streams` parallel streams; Gbit/s received.
    pub fn iperf(
        &self,
        ctx: &Ctx,
        target: SocketAddr,
        streams: u32,
        secs: u32,
    ) -> anyhow::Result<f64> {
        self.iperf_in(&self.out, ctx, target, streams, secs)
    }

    /// One iperf3 run from namespace `ns`.
    pub fn iperf_in(
        &self,
        ns: &str,
        ctx: &Ctx,
        target: SocketAddr,
        streams: u32,
        secs: u32,
    ) -> anyhow::Result<f64> {
        let mut last_err = None;
        // The server may still be starting, or busy with the previous test.
        for _ in 0..5 {
            // Bounded: a dataplane that drops SYNs must not hang the run.
            let mut c = cmd_in(ns, "timeout");
            c.args(["-k", "2", &(secs + 20).to_string(), "iperf3"]);
            let r = run(c.args([
                "--connect-timeout",
                "3000",
                "-c",
                &target.ip().to_string(),
                "-p",
                &target.port().to_string(),
                "-t",
                &secs.to_string(),
                "-P",
                &streams.to_string(),
                "-A",
                &ctx.cpu.to_string(),
                "-J",
            ]));
            match r {
                Ok(out) => return iperf_gbits(&out),
                Err(e) => {
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        Err(last_err.unwrap())
    }
}

/// Received bits per second of an `iperf3 -J` report, in Gbit/s.
pub fn iperf_gbits(json: &str) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 -J output")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
        cleanup::remove_scratch(&self.dir);
        for ns in self.namespaces.iter().rev() {
            cleanup::delete_netns(ns);
        }
    }
}

/// Run `f` on a fresh thread that has joined namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<T> {
            let fd = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_report_parsing() {
        let ok = r#"{"end": {"sum_received": {"bits_per_second": 12500000000.0}}}"#;
        assert_eq!(iperf_gbits(ok).unwrap(), 12.5);
        let err = r#"{"error": "unable to connect to server"}"#;
        assert_eq!(
            iperf_gbits(err).unwrap_err().to_string(),
            "iperf3: unable to connect to server"
        );
        assert!(iperf_gbits("{}").is_err());
    }

    #[test]
    fn published_and_direct_targets() {
        let p = Targets::published();
        assert_eq!(p.tcp.to_string(), "198.18.0.1:8081");
        assert_eq!(p.udp.to_string(), "198.18.0.1:9001");
        assert_eq!(p.iperf.to_string(), "198.18.0.1:5202");
        assert_eq!(Targets::ceiling().tcp.to_string(), "198.18.0.1:8080");
        assert_eq!(Targets::local().tcp.to_string(), "127.0.0.1:8081");
        assert_eq!(Targets::local().iperf.to_string(), "127.0.0.1:5202");
        let d = Targets::direct();
        assert_eq!(d.tcp.to_string(), "172.17.0.2:8080");
        assert_eq!(d.iperf.to_string(), "172.17.0.2:5201");
    }
}
