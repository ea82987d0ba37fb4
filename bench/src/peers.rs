//! The four dataplanes, each building the same world its own way.
use std::{
    fs::File,
    io::Write,
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    iptables::{self, Proto, Publish},
    netavark::{self, PortMapping},
    results::Dataplane,
    world::{self, Ctx, SERVER_IP, Targets, World, cmd_in, run},
};

/// A dataplane under test. Every method that changes something returns how
/// long the change took, measured around the tool that makes it.
pub trait Peer {
    fn dataplane(&self) -> Dataplane;
    /// Build the world with the servers running and reachable.
    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets>;
    fn world(&self) -> &World;
    /// Make exactly `n` other published ports exist (on another container).
    fn set_other_ports(&mut self, ctx: &Ctx, n: usize) -> anyhow::Result<Duration>;
    /// Publish a 1000-port range on a new container and remove it again;
    /// the time of the publish. `None`: the peer has no such thing.
    fn publish_1000(&mut self, ctx: &Ctx, round: usize) -> anyhow::Result<Option<Duration>>;
    /// Create and remove one container; the time of both.
    fn create_remove(&mut self, ctx: &Ctx, i: usize) -> anyhow::Result<Option<Duration>>;
    /// Resident memory of the peer's daemon, MiB.
    fn rss_mib(&self) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }
    /// What the resident memory is made of (anonymous, file, shared), for
    /// the notes. `None`: not known.
    fn rss_parts(&self) -> Option<String> {
        None
    }
    /// iptables rules (`-A` lines of iptables-save) in the host namespace.
    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        let out = run(&mut cmd_in(&self.world().host, "iptables-save"))?;
        Ok(Some(iptables::rule_count(&out)))
    }
    /// Built, but its published ports do not carry traffic: why. The control
    /// plane figures are still measured then.
    fn data_path_error(&self) -> Option<String> {
        None
    }
    /// When publishing `n` other ports is out of reach for this peer: why.
    fn other_ports_limit(&self, _n: usize) -> Option<String> {
        None
    }
    /// Make `n` containers run on the measured container's network (the
    /// measured one included; only grows); the time it took. `None`: this
    /// peer has no container axis.
    fn set_containers(&mut self, _ctx: &Ctx, _n: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }
    /// Most containers this peer is asked to run on the container axis.
    fn containers_limit(&self, _n: usize) -> Option<String> {
        None
    }
    /// Create one more container on that network and remove it again: the
    /// time of each.
    fn run_rm(&mut self, _ctx: &Ctx, _i: usize) -> anyhow::Result<Option<(Duration, Duration)>> {
        Ok(None)
    }
    /// The bpffs dir of this peer's pier agent: its programs are the ones
    /// that use the maps pinned there (for the per-program run times).
    fn pier_bpffs(&self) -> Option<PathBuf> {
        None
    }
    /// The log file of this peer's pier agent.
    fn agent_log(&self) -> Option<PathBuf> {
        None
    }
    /// Make exactly `n` source-policy rules exist (0: none); `None`: this
    /// peer has no such thing.
    fn set_policy_rules(&mut self, _ctx: &Ctx, _n: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }
}

/// `n` policy rules the bench client passes: one allow of the outside
/// network (so an allow-list applies to every port), the rest denies of
/// other /24s (100.64.0.0/10), looked up by every packet and never matching.
pub fn policy_rules(n: usize) -> (String, Vec<String>) {
    let o = world::OUTSIDE_IP.octets();
    let allow = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
    let denies = (0..n.saturating_sub(1))
        .map(|i| format!("100.{}.{}.0/24", 64 + i / 256, i % 256))
        .collect();
    (allow, denies)
}

fn other_publishes(n: usize) -> Vec<Publish> {
    iptables::spread_ports(world::OTHER_PORTS_FIRST, n)
        .into_iter()
        .map(|p| Publish {
            host_port: p,
            container_ip: world::FILLER_IP,
            container_port: p,
            proto: Proto::Tcp,
        })
        .collect()
}

fn own_publishes() -> Vec<Publish> {
    [
        (world::ECHO_TCP_HOST, world::ECHO_TCP, Proto::Tcp),
        (world::ECHO_UDP_HOST, world::ECHO_UDP, Proto::Udp),
        (world::IPERF_HOST, world::IPERF, Proto::Tcp),
    ]
    .into_iter()
    .map(|(h, c, proto)| Publish {
        host_port: h,
        container_ip: SERVER_IP,
        container_port: c,
        proto,
    })
    .collect()
}

const READY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- ceiling

/// The physical ceiling of this machine kind: the client's namespace and the
/// servers' namespace joined by one veth pair, nothing else (no bridge, no
/// routing, no rule). The servers run in the world's "host" namespace.
pub struct Ceiling {
    w: Option<World>,
}

impl Ceiling {
    pub fn new() -> Self {
        Ceiling { w: None }
    }
}

impl Default for Ceiling {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for Ceiling {
    fn dataplane(&self) -> Dataplane {
        Dataplane::Ceiling
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = World::new(ctx, "ceiling")?;
        let host = w.host.clone();
        w.start_servers(ctx, &host)?;
        let t = Targets::ceiling();
        w.wait_tcp(t.tcp, READY)?;
        self.w = Some(w);
        Ok(t)
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn set_other_ports(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- docker-proxy

pub const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

/// Start Docker's userland proxy in `ns` as dockerd 20.10 does: one process
/// per published port and address family, readiness reported on fd 3
/// ("0\n", or "1\n" and the error).
pub fn start_docker_proxy(
    w: &mut World,
    ns: &str,
    p: &Publish,
    host_ip: &str,
) -> anyhow::Result<()> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let (r, wr) = nix::unistd::pipe()?;
    let wfd = wr.as_raw_fd();
    let mut c = cmd_in(ns, DOCKER_PROXY);
    c.args([
        "-proto",
        p.proto.as_str(),
        "-host-ip",
        host_ip,
        "-host-port",
        &p.host_port.to_string(),
        "-container-ip",
        &p.container_ip.to_string(),
        "-container-port",
        &p.container_port.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if wfd == 3 {
                let fl = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().context("starting docker-proxy")?;
    drop(wr);
    w.adopt(child);
    let what = format!(
        "docker-proxy {}/{} on {host_ip}",
        p.host_port,
        p.proto.as_str()
    );
    let rfd = r.into_raw_fd();
    // SAFETY: we own rfd.
    let mut f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
    let mut pfd = libc::pollfd {
        fd: rfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, READY.as_millis() as i32) };
    anyhow::ensure!(n == 1, "{what}: not ready in {} s", READY.as_secs());
    // One read: docker-proxy keeps fd 3 open while it runs.
    let mut b = [0u8; 512];
    use std::io::Read;
    let got = f.read(&mut b).unwrap_or(0);
    let buf = String::from_utf8_lossy(&b[..got]);
    if !buf.starts_with('0') {
        bail!("{what}: {}", buf.trim_start_matches('1').trim());
    }
    Ok(())
}

/// Docker's userland proxy alone, for the host-local path: the servers in a
/// container on a plain bridge, and one docker-proxy per published port and
/// family in the host namespace (as Docker runs them with its default
/// `userland-proxy`); clients on the host dial 127.0.0.1:PORT.
pub struct DockerProxy {
    w: Option<World>,
}

impl DockerProxy {
    pub fn new() -> anyhow::Result<Self> {
        anyhow::ensure!(
            std::path::Path::new(DOCKER_PROXY).exists(),
            "{DOCKER_PROXY} is missing (Debian's docker.io; `cargo xtask setup` installs it)"
        );
        Ok(DockerProxy { w: None })
    }
}

impl Peer for DockerProxy {
    fn dataplane(&self) -> Dataplane {
        Dataplane::DockerProxy
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = World::new(ctx, "docker-proxy")?;
        let c0 = w.bridge_container("c0", SERVER_IP)?;
        w.start_servers(ctx, &c0)?;
        // The outside has no route to the bridge; ask from the host.
        let a = Targets::direct().tcp;
        let deadline = Instant::now() + READY;
        world::in_netns(&w.host, || {
            loop {
                match std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        bail!("the servers of the docker-proxy world ({a}): {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })??;
        let host = w.host.clone();
        for p in own_publishes() {
            start_docker_proxy(&mut w, &host, &p, "0.0.0.0")?;
            start_docker_proxy(&mut w, &host, &p, "::")?;
        }
        self.w = Some(w);
        Ok(Targets::published())
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn set_other_ports(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- plain

/// Routing only: the client talks to the container's address.
pub struct Plain {
    w: Option<World>,
}

impl Plain {
    pub fn new() -> Self {
        Plain { w: None }
    }
}

impl Default for Plain {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for Plain {
    fn dataplane(&self) -> Dataplane {
        Dataplane::Plain
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = World::new(ctx, "plain")?;
        let c0 = w.bridge_container("c0", SERVER_IP)?;
        world::sh(&[
            "ip",
            "-n",
            &w.out,
            "route",
            "add",
            world::SUBNET,
            "via",
            &world::HOST_UPLINK_IP.to_string(),
        ])?;
        w.start_servers(ctx, &c0)?;
        let t = Targets::direct();
        w.wait_tcp(t.tcp, READY)?;
        self.w = Some(w);
        Ok(t)
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn set_other_ports(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Duration> {
        // Nothing is published: the ceiling stays the same world.
        Ok(Duration::ZERO)
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- iptables

/// Docker's bridge-driver rules, loaded with iptables-restore.
pub struct Iptables {
    w: Option<World>,
    others: usize,
}

impl Iptables {
    pub fn new() -> Self {
        Iptables { w: None, others: 0 }
    }

    fn restore(&self, publishes: &[Publish]) -> anyhow::Result<Duration> {
        let text = iptables::docker_rules(world::BRIDGE, world::SUBNET, publishes);
        self.restore_text(&text, false)
    }

    fn restore_text(&self, text: &str, noflush: bool) -> anyhow::Result<Duration> {
        let w = self.world();
        let t = Instant::now();
        let mut c = cmd_in(&w.host, "iptables-restore");
        if noflush {
            c.arg("--noflush");
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting iptables-restore")?;
        child.stdin.take().unwrap().write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "iptables-restore failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    fn ruleset(&self, extra: &[Publish]) -> Vec<Publish> {
        let mut v = other_publishes(self.others);
        v.extend_from_slice(extra);
        // The measured container was published last: its rules come last.
        v.extend(own_publishes());
        v
    }
}

impl Default for Iptables {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for Iptables {
    fn dataplane(&self) -> Dataplane {
        Dataplane::Iptables
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = World::new(ctx, "iptables")?;
        let c0 = w.bridge_container("c0", SERVER_IP)?;
        w.start_servers(ctx, &c0)?;
        self.w = Some(w);
        self.restore(&self.ruleset(&[]))?;
        published_behind_netfilter(self.world())
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn set_other_ports(&mut self, _: &Ctx, n: usize) -> anyhow::Result<Duration> {
        self.others = n;
        self.restore(&self.ruleset(&[]))
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        let range: Vec<Publish> = (world::RANGE_FIRST..=world::RANGE_LAST)
            .map(|p| Publish {
                host_port: p,
                container_ip: Ipv4Addr::new(172, 17, 0, 4),
                container_port: p,
                proto: Proto::Tcp,
            })
            .collect();
        // Appended to the live ruleset, as Docker appends a new container's rules.
        let took =
            self.restore_text(&iptables::docker_publish_delta(world::BRIDGE, &range), true)?;
        let count = self.rule_count()?.unwrap_or(0);
        let want = iptables::rule_count(&iptables::docker_rules(
            world::BRIDGE,
            world::SUBNET,
            &self.ruleset(&range),
        ));
        anyhow::ensure!(
            count == want,
            "{count} rules after publishing, expected {want}"
        );
        self.restore(&self.ruleset(&[]))?;
        Ok(Some(took))
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------- netavark

/// Podman's network backend, driven as Podman drives it.
pub struct Netavark {
    w: Option<World>,
    bin: PathBuf,
    config: PathBuf,
    server_ns: String,
    fillers: Vec<String>,
    others: usize,
    max_others: usize,
}

const NV_NET: netavark::Network<'static> = netavark::Network {
    name: "pb",
    bridge: "podman0",
    subnet: world::SUBNET,
    gateway: world::GATEWAY,
};

impl Netavark {
    pub fn new(ctx: &Ctx, max_others: usize) -> anyhow::Result<Self> {
        let bin = ctx.bins.netavark.clone().context(
            "netavark is not installed (Debian package `netavark`; `cargo xtask setup` installs it)",
        )?;
        Ok(Netavark {
            w: None,
            bin,
            config: PathBuf::new(),
            server_ns: String::new(),
            fillers: Vec::new(),
            others: 0,
            max_others,
        })
    }

    fn call(&self, verb: &str, ns: &str, opts: &serde_json::Value) -> anyhow::Result<Duration> {
        let w = self.world();
        let t = Instant::now();
        let mut child = cmd_in(&w.host, &self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg(verb)
            .arg(format!("/run/netns/{ns}"))
            // netavark 1.4 picks firewalld when it answers on D-Bus; never here.
            .env("NETAVARK_FW", "iptables")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting netavark")?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(opts.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "netavark {verb} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }

    fn server_opts(&self) -> serde_json::Value {
        let ports: Vec<PortMapping> = own_publishes()
            .into_iter()
            .map(|p| PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                range: 1,
                proto: p.proto,
            })
            .collect();
        netavark::options(&NV_NET, "srv", SERVER_IP, &ports)
    }

    fn w_mut(&mut self) -> &mut World {
        self.w.as_mut().expect("built")
    }
}

impl Peer for Netavark {
    fn dataplane(&self) -> Dataplane {
        Dataplane::Netavark
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = World::new(ctx, "netavark")?;
        self.config = w.dir.join("netavark");
        std::fs::create_dir_all(&self.config)?;
        self.server_ns = w.add_ns("c0")?;
        self.w = Some(w);
        self.call("setup", &self.server_ns, &self.server_opts())?;
        let ns = self.server_ns.clone();
        self.w_mut().start_servers(ctx, &ns)?;
        published_behind_netfilter(self.world())
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn other_ports_limit(&self, n: usize) -> Option<String> {
        (n > self.max_others).then(|| {
            format!(
                "skipped: netavark 1.4 adds every rule with its own iptables call, so {n} separate \
                 ports take many minutes (limit for this run: {})",
                self.max_others
            )
        })
    }

    /// Fillers only grow (netavark's teardown of many ports is slower still);
    /// the measured container is set up again after them, so that its rules
    /// come last, as the newest container's would.
    fn set_other_ports(&mut self, _: &Ctx, n: usize) -> anyhow::Result<Duration> {
        if n < self.others {
            bail!("netavark fillers only grow ({} → {n})", self.others);
        }
        if n == self.others {
            return Ok(Duration::ZERO);
        }
        let ports: Vec<PortMapping> = iptables::spread_ports(
            world::OTHER_PORTS_FIRST + 2 * self.others as u16,
            n - self.others,
        )
        .into_iter()
        .map(|p| PortMapping {
            host_port: p,
            container_port: p,
            range: 1,
            proto: Proto::Tcp,
        })
        .collect();
        let k = self.fillers.len();
        let ip = Ipv4Addr::new(172, 17, 1, k as u8 + 1);
        let ns = self.w_mut().add_ns(&format!("fill{k}"))?;
        let server_ns = self.server_ns.clone();
        self.call("teardown", &server_ns, &self.server_opts())?;
        let opts = netavark::options(&NV_NET, &format!("fill{k}"), ip, &ports);
        let took = self.call("setup", &ns, &opts)?;
        self.call("setup", &server_ns, &self.server_opts())?;
        let host = self.world().host.clone();
        run(Command::new("ip").args(["-n", &host, "neigh", "flush", "all"]))?;
        self.fillers.push(ns);
        self.others = n;
        self.world().wait_tcp(Targets::published().tcp, READY)?;
        Ok(took)
    }

    fn publish_1000(&mut self, _: &Ctx, round: usize) -> anyhow::Result<Option<Duration>> {
        let name = format!("pub{round}");
        let ns = self.w_mut().add_ns(&name)?;
        let opts = netavark::options(
            &NV_NET,
            &name,
            Ipv4Addr::new(172, 17, 2, 1),
            &[PortMapping {
                host_port: world::RANGE_FIRST,
                container_port: world::RANGE_FIRST,
                range: world::RANGE_LAST - world::RANGE_FIRST + 1,
                proto: Proto::Tcp,
            }],
        );
        let took = self.call("setup", &ns, &opts);
        let down = self.call("teardown", &ns, &opts);
        self.w_mut().del_ns(&ns);
        let took = took?;
        down?;
        Ok(Some(took))
    }

    fn create_remove(&mut self, _: &Ctx, i: usize) -> anyhow::Result<Option<Duration>> {
        let name = format!("cr{i}");
        let t = Instant::now();
        let ns = self.w_mut().add_ns(&name)?;
        let opts = netavark::options(
            &NV_NET,
            &name,
            Ipv4Addr::new(172, 17, 3, (i % 250) as u8 + 1),
            &[],
        );
        let up = self.call("setup", &ns, &opts);
        let down = self.call("teardown", &ns, &opts);
        self.w_mut().del_ns(&ns);
        let took = t.elapsed();
        up?;
        down?;
        Ok(Some(took))
    }
}

// ---------------------------------------------------------------- pier

/// The pier agent, driven through its CLI only.
pub struct Pier {
    w: Option<World>,
    agent_pid: Option<u32>,
    socket: PathBuf,
    log: PathBuf,
    filler: bool,
    data_err: Option<String>,
    /// Idle containers of the container axis.
    idle: usize,
    bpffs: PathBuf,
    /// With a `pier monitor` attached for the whole run (`pier+monitor`).
    monitor: bool,
}

impl Pier {
    /// pier with `pier monitor --format json` attached (output discarded).
    pub fn with_monitor() -> Self {
        Pier {
            monitor: true,
            ..Self::new()
        }
    }

    pub fn new() -> Self {
        Pier {
            monitor: false,
            w: None,
            agent_pid: None,
            socket: PathBuf::new(),
            log: PathBuf::new(),
            filler: false,
            data_err: None,
            idle: 0,
            bpffs: PathBuf::new(),
        }
    }

    fn pier(&self, ctx: &Ctx, args: &[String]) -> anyhow::Result<String> {
        run(Command::new(&ctx.bins.pier)
            .arg("--socket")
            .arg(&self.socket)
            .args(args))
    }

    /// Run the pier CLI against this peer's agent; its stdout.
    pub fn cli(&self, ctx: &Ctx, args: &[String]) -> anyhow::Result<String> {
        self.pier(ctx, args)
    }

    /// The world, to start more in it (servers in the outside namespace).
    pub fn world_mut(&mut self) -> &mut World {
        self.w.as_mut().expect("built")
    }

    /// The container's address on the default bridge, from `pier inspect`.
    fn container_ip(&self, ctx: &Ctx, name: &str) -> anyhow::Result<Ipv4Addr> {
        let out = self.pier(ctx, &["inspect".into(), name.into()])?;
        inspect_ip(&out).with_context(|| format!("no bridge address in `pier inspect {name}`"))
    }
}

/// A pier agent started in a world's host namespace.
pub struct Agent {
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub bpffs: PathBuf,
    /// Its Docker plugin socket (`--docker-plugin`).
    pub plugin: Option<PathBuf>,
}

/// Start `pier agent` in `w`'s host namespace (state, run dir and bpffs dir
/// of the world's own) and wait until it serves; with `docker_plugin`, it
/// also serves Docker's remote driver API on a socket in the world's dir.
pub fn start_pier_agent(
    ctx: &Ctx,
    w: &mut World,
    extra: &[String],
    docker_plugin: bool,
) -> anyhow::Result<Agent> {
    let run_dir = w.dir.join("run");
    let socket = run_dir.join("pier.sock");
    let log_path = w.dir.join("agent.log");
    let bpffs = if w.tag == "pier" {
        crate::cleanup::bpffs_dir(&ctx.prefix)
    } else {
        PathBuf::from(format!(
            "{}-{}",
            crate::cleanup::bpffs_dir(&ctx.prefix).display(),
            w.tag
        ))
    };
    let plugin = docker_plugin.then(|| w.dir.join("plugin").join("pier.sock"));
    let log = File::create(&log_path)?;
    let mut c = cmd_in(&w.host, &ctx.bins.pier);
    c.arg("agent")
        .arg("--state-dir")
        .arg(w.dir.join("state"))
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--socket")
        .arg(&socket)
        .arg("--bpffs-dir")
        .arg(&bpffs)
        .arg("--uplink")
        .arg(world::UPLINK)
        .args(extra.iter().filter(|a| *a != "--docker-plugin"));
    if let Some(p) = &plugin {
        std::fs::create_dir_all(p.parent().unwrap())?;
        c.arg("--docker-plugin").arg(p);
    }
    c.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // `PIER_BENCH_AGENT_LOG=pier_agent=debug`: the agent's step timings
        // (the container axis reads them from this log).
        .env(
            "RUST_LOG",
            std::env::var("PIER_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .process_group(0);
    let tail = || log_reason(&std::fs::read_to_string(&log_path).unwrap_or_default());
    let mut child = c.spawn().context("starting pier agent")?;
    // nsenter execs the agent: the child's pid is the agent's.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() || plugin.as_ref().is_some_and(|p| !p.exists()) {
        if let Some(st) = child.try_wait()? {
            bail!("pier agent exited ({st}) before serving: {}", tail());
        }
        if Instant::now() > deadline {
            w.adopt(child);
            bail!("pier agent did not open its sockets in 20 s: {}", tail());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    w.adopt(child);
    Ok(Agent {
        pid,
        socket,
        log: log_path,
        bpffs,
        plugin,
    })
}

/// The line of an agent's log that says why it stopped: the first error line,
/// else the last line.
pub fn log_reason(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "(empty log)".into())
}

impl Default for Pier {
    fn default() -> Self {
        Self::new()
    }
}

fn publish_args(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| ["-p".to_string(), format!("{p}:{p}")])
        .collect()
}

impl Peer for Pier {
    fn dataplane(&self) -> Dataplane {
        if self.monitor {
            Dataplane::PierMonitor
        } else {
            Dataplane::Pier
        }
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        if !ctx.bins.pier.exists() {
            bail!(
                "{} is missing (cargo xtask bench builds it)",
                ctx.bins.pier.display()
            );
        }
        let mut w = World::new(ctx, if self.monitor { "piermon" } else { "pier" })?;
        let a = match start_pier_agent(ctx, &mut w, &[], false) {
            Ok(a) => a,
            Err(e) => {
                self.w = Some(w);
                return Err(e);
            }
        };
        self.bpffs = a.bpffs;
        self.socket = a.socket;
        self.log = a.log;
        self.agent_pid = Some(a.pid);
        if self.monitor {
            let mon = Command::new(&ctx.bins.pier)
                .arg("--socket")
                .arg(&self.socket)
                .args(["monitor", "--format", "json"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting pier monitor")?;
            w.adopt(mon);
        }
        self.w = Some(w);
        let mut args: Vec<String> = ["run", "-d", "--name", "srv"].map(String::from).to_vec();
        for p in own_publishes() {
            args.push("-p".into());
            args.push(match p.proto {
                Proto::Tcp => format!("{}:{}", p.host_port, p.container_port),
                Proto::Udp => format!("{}:{}/udp", p.host_port, p.container_port),
            });
        }
        args.push("--".into());
        args.extend(World::server_command(ctx));
        self.pier(ctx, &args)?;
        let t = Targets::published();
        if let Err(e) = self.world().wait_tcp(t.tcp, READY) {
            // Tell "the port is not published" from "the server is not running".
            let direct = self.container_ip(ctx, "srv").and_then(|ip| {
                let a = std::net::SocketAddr::from((ip, world::ECHO_TCP));
                world::in_netns(&self.world().host, || {
                    std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))
                })?
                .map_err(|e| anyhow::anyhow!("{a} from the host namespace: {e}"))
            });
            self.data_err = Some(match direct {
                Ok(_) => format!(
                    "{e}, though the server answers on the container's own address \
                     (is the eBPF dataplane merged and serving published ports?)"
                ),
                Err(d) => format!("{e}; the server does not answer either: {d:#}"),
            });
        }
        Ok(t)
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn data_path_error(&self) -> Option<String> {
        self.data_err.clone()
    }

    fn set_policy_rules(&mut self, ctx: &Ctx, n: usize) -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        self.pier(ctx, &["policy", "rm", "--all"].map(String::from))?;
        if n > 0 {
            let (allow, denies) = policy_rules(n);
            self.pier(ctx, &["policy".into(), "allow".into(), allow])?;
            if !denies.is_empty() {
                let mut args: Vec<String> = vec!["policy".into(), "deny".into()];
                args.extend(denies);
                self.pier(ctx, &args)?;
            }
        }
        Ok(Some(t.elapsed()))
    }

    fn set_other_ports(&mut self, ctx: &Ctx, n: usize) -> anyhow::Result<Duration> {
        if self.filler {
            self.pier(ctx, &["rm".into(), "-f".into(), "fill".into()])?;
            self.filler = false;
        }
        let mut args: Vec<String> = ["run", "-d", "--name", "fill"].map(String::from).to_vec();
        args.extend(publish_args(&iptables::spread_ports(
            world::OTHER_PORTS_FIRST,
            n,
        )));
        let t = Instant::now();
        self.pier(ctx, &args)?;
        let took = t.elapsed();
        self.filler = true;
        Ok(took)
    }

    fn publish_1000(&mut self, ctx: &Ctx, round: usize) -> anyhow::Result<Option<Duration>> {
        let name = format!("pub{round}");
        let range = format!(
            "{}-{}:{}-{}",
            world::RANGE_FIRST,
            world::RANGE_LAST,
            world::RANGE_FIRST,
            world::RANGE_LAST
        );
        let t = Instant::now();
        self.pier(
            ctx,
            &["run", "-d", "--name", &name, "-p", &range].map(String::from),
        )?;
        let took = t.elapsed();
        self.pier(ctx, &["rm", "-f", &name].map(String::from))?;
        Ok(Some(took))
    }

    fn create_remove(&mut self, ctx: &Ctx, i: usize) -> anyhow::Result<Option<Duration>> {
        let name = format!("cr{i}");
        let t = Instant::now();
        self.pier(ctx, &["run", "-d", "--name", &name].map(String::from))?;
        self.pier(ctx, &["rm", "-f", &name].map(String::from))?;
        Ok(Some(t.elapsed()))
    }

    fn set_containers(&mut self, ctx: &Ctx, n: usize) -> anyhow::Result<Option<Duration>> {
        let t = Instant::now();
        while self.idle + 1 < n {
            let name = format!("idle{}", self.idle);
            self.pier(ctx, &["run", "-d", "--name", &name].map(String::from))?;
            self.idle += 1;
        }
        Ok(Some(t.elapsed()))
    }

    fn run_rm(&mut self, ctx: &Ctx, i: usize) -> anyhow::Result<Option<(Duration, Duration)>> {
        let name = format!("ax{i}");
        let t = Instant::now();
        self.pier(ctx, &["run", "-d", "--name", &name].map(String::from))?;
        let created = t.elapsed();
        let t = Instant::now();
        self.pier(ctx, &["rm", "-f", &name].map(String::from))?;
        Ok(Some((created, t.elapsed())))
    }

    fn pier_bpffs(&self) -> Option<PathBuf> {
        Some(self.bpffs.clone())
    }

    fn agent_log(&self) -> Option<PathBuf> {
        Some(self.log.clone())
    }

    fn rss_mib(&self) -> anyhow::Result<Option<f64>> {
        let pid = self.agent_pid.context("no agent")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        Ok(Some(
            vm_rss_mib(&status).context("no VmRSS in /proc/PID/status")?,
        ))
    }

    fn rss_parts(&self) -> Option<String> {
        let pid = self.agent_pid?;
        rss_parts(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

/// The first network's IPAddress of `pier inspect` output (an object, or an
/// array of one, in Docker's shape).
pub fn inspect_ip(json: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let c = if v.is_array() { v.get(0)? } else { &v };
    c["NetworkSettings"]["Networks"]
        .as_object()?
        .values()
        .find_map(|n| n["IPAddress"].as_str()?.parse().ok())
}

/// VmRSS of a /proc/PID/status text, in MiB.
pub fn vm_rss_mib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The published targets of a world whose NAT is netfilter's, once they answer.
/// Conntrack keeps closed connections 120 s by default; at 10k new
/// connections/s the table (262144) would fill within a run, so TIME_WAIT
/// entries are kept 1 s in the bench's host namespace.
fn published_behind_netfilter(w: &World) -> anyhow::Result<Targets> {
    w.sysctl(
        &w.host,
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
        "1",
    )?;
    let t = Targets::published();
    w.wait_tcp(t.tcp, READY)?;
    Ok(t)
}

/// `anon A, file F, shmem S MiB` of a /proc/PID/status text.
pub fn rss_parts(status: &str) -> Option<String> {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(format!(
        "anon {:.1}, file {:.1}, shmem {:.1} MiB",
        field("RssAnon:")?,
        field("RssFile:")?,
        field("RssShmem:")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_parts_from_status() {
        let s = "VmRSS:\t 6144 kB\nRssAnon:\t 4096 kB\nRssFile:\t 1536 kB\nRssShmem:\t 512 kB\n";
        assert_eq!(
            rss_parts(s).as_deref(),
            Some("anon 4.0, file 1.5, shmem 0.5 MiB")
        );
        assert_eq!(rss_parts("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn rss_from_status() {
        let s = "Name:\tpier\nVmPeak:\t  100 kB\nVmRSS:\t   15360 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_mib(s), Some(15.0));
        assert_eq!(vm_rss_mib("Name:\tx\n"), None);
    }

    #[test]
    fn address_from_inspect() {
        let one = r#"{"NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}}"#;
        assert_eq!(inspect_ip(one), Some(Ipv4Addr::new(172, 17, 0, 2)));
        let arr = format!("[{one}]");
        assert_eq!(inspect_ip(&arr), Some(Ipv4Addr::new(172, 17, 0, 2)));
        let none = r#"{"NetworkSettings": {"Networks": {"none": {"IPAddress": ""}}}}"#;
        assert_eq!(inspect_ip(none), None);
    }

    #[test]
    fn agent_log_reason() {
        let clap = "error: unrecognized subcommand 'agent'\n\nUsage: pier <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(log_reason(clap), "error: unrecognized subcommand 'agent'");
        assert_eq!(log_reason("starting\nbye\n"), "bye");
        assert_eq!(log_reason(""), "(empty log)");
    }

    #[test]
    fn pier_publish_args() {
        assert_eq!(
            publish_args(&[20000, 20002]),
            ["-p", "20000:20000", "-p", "20002:20002"]
        );
    }

    #[test]
    fn measured_rules_come_after_the_others() {
        let mut p = Iptables::new();
        p.others = 2;
        let set = p.ruleset(&[]);
        assert_eq!(set.len(), 5);
        assert_eq!(set[0].host_port, 20000);
        assert_eq!(set[1].host_port, 20002);
        assert_eq!(set[2].host_port, world::ECHO_TCP_HOST);
        assert_eq!(set[3].proto, Proto::Udp);
        assert_eq!(set[4].container_port, world::IPERF);
    }
}
