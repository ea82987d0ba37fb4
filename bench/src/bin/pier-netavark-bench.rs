//! `pier-netavark-bench`: pier as podman's `netavark` against Debian's
//! netavark 1.4, driven as podman drives it (`setup`/`teardown` with its
//! JSON), in namespaces of its own: the time of one container's setup and
//! teardown with 1, 10 and 100 separate published ports, and connect-
//! request-response (crr) through a published port from an outside
//! namespace. pier runs both with an agent in the host namespace (the shim
//! posts to it) and without one (the core in the shim's process). Ratios are
//! pier / netavark from the same run. Run by `cargo xtask bench-netavark`.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use pier_bench::{
    iptables::Proto,
    netavark::{self, PortMapping},
};

#[derive(Parser)]
#[command(about = "pier as netavark against Debian's netavark: setup/teardown time and crr")]
struct Args {
    /// Fewer runs (CI smoke).
    #[arg(long)]
    quick: bool,
    /// pier's netavark (default: `netavark` next to this program).
    #[arg(long)]
    pier: Option<PathBuf>,
    /// The pier binary for the agent (default: `pier` next to this program).
    #[arg(long)]
    pier_agent: Option<PathBuf>,
    /// Debian's netavark.
    #[arg(long, default_value = "/usr/lib/podman/netavark")]
    netavark: PathBuf,
}

const HOST_IP: &str = "198.18.0.1";
const OUTSIDE_IP: &str = "198.18.0.2";
const NET: netavark::Network<'static> = netavark::Network {
    name: "pb",
    bridge: "podman0",
    subnet: "10.89.0.0/24",
    gateway: Ipv4Addr::new(10, 89, 0, 1),
};

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new(args[0]).args(&args[1..]).output()?;
    if !o.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// A host namespace and an outside one joined by `uplink0`; removed on drop.
struct World {
    host: String,
    outside: String,
    dir: PathBuf,
    extra: Vec<String>,
    agent: Option<Child>,
}

impl World {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let p = format!("pnb{:x}{tag}", std::process::id() & 0xffff);
        let w = World {
            host: format!("{p}h"),
            outside: format!("{p}o"),
            dir: std::env::temp_dir().join(format!("pier-netavark-bench-{p}")),
            extra: Vec::new(),
            agent: None,
        };
        std::fs::create_dir_all(&w.dir)?;
        sh(&["ip", "netns", "add", &w.host])?;
        sh(&["ip", "netns", "add", &w.outside])?;
        sh(&[
            "ip", "-n", &w.host, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0",
            "netns", &w.outside,
        ])?;
        for (ns, dev, ip) in [
            (&w.host, "uplink0", HOST_IP),
            (&w.outside, "eth0", OUTSIDE_IP),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip", "-n", &w.host, "route", "add", "default", "via", OUTSIDE_IP,
        ])?;
        Ok(w)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<String> {
        let n = format!("{}-{name}", self.host);
        sh(&["ip", "netns", "add", &n])?;
        self.extra.push(n.clone());
        Ok(n)
    }

    fn del_ns(&mut self, n: &str) {
        let _ = sh(&["ip", "netns", "del", n]);
        self.extra.retain(|x| x != n);
    }

    /// `pier agent` in the host namespace; its socket.
    fn start_agent(&mut self, pier: &Path) -> anyhow::Result<PathBuf> {
        let sock = self.dir.join("run/pier.sock");
        let log = std::fs::File::create(self.dir.join("agent.log"))?;
        let c = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("--")
            .arg(pier)
            .arg("agent")
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--socket")
            .arg(&sock)
            .arg("--bpffs-dir")
            .arg(format!("/sys/fs/bpf/{}", self.host))
            .arg("--uplink")
            .arg("uplink0")
            .arg("--dns-upstream")
            .arg(OUTSIDE_IP)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting pier agent")?;
        self.agent = Some(c);
        let t = Instant::now();
        while !sock.exists() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("pier agent did not come up (see {})", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(sock)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(a.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = a.wait();
            let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.host));
        }
        for n in self.extra.clone() {
            self.del_ns(&n);
        }
        let _ = sh(&["ip", "netns", "del", &self.outside]);
        let _ = sh(&["ip", "netns", "del", &self.host]);
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_dead_pins();
    }
}

/// Network namespaces something holds (processes, bind mounts).
fn live_netns() -> std::collections::BTreeSet<u64> {
    let ino = |s: &str| -> Option<u64> { s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok() };
    let mut live = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(l) = std::fs::read_link(e.path().join("ns/net"))
            && let Some(i) = ino(&l.to_string_lossy())
        {
            live.insert(i);
        }
        for l in std::fs::read_to_string(e.path().join("mountinfo"))
            .unwrap_or_default()
            .lines()
        {
            if let Some(i) = l.split_whitespace().nth(3).and_then(ino) {
                live.insert(i);
            }
        }
    }
    live
}

/// The agentless pins of namespaces that are gone (ours, once deleted).
fn remove_dead_pins() {
    let live = live_netns();
    for e in std::fs::read_dir("/sys/fs/bpf/pier-netavark")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name
            .split('-')
            .next()
            .and_then(|i| i.parse::<u64>().ok())
            .is_some_and(|i| !live.contains(&i))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    // The root too, once nothing is left in it (a live namespace's pins keep it).
    let _ = std::fs::remove_dir("/sys/fs/bpf/pier-netavark");
}

/// One implementation under test.
struct Impl {
    label: &'static str,
    bin: PathBuf,
    /// `PIER_SOCKET` for pier's shim.
    socket: Option<PathBuf>,
}

fn call(
    w: &World,
    im: &Impl,
    verb: &str,
    ns: &str,
    opts: &serde_json::Value,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", w.host))
        .arg("--")
        .arg(&im.bin)
        .arg("--config")
        .arg(w.dir.join("config"))
        .arg(verb)
        .arg(format!("/run/netns/{ns}"))
        .env("NETAVARK_FW", "iptables")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "")
        .env(
            "PIER_SOCKET",
            im.socket
                .clone()
                .unwrap_or_else(|| w.dir.join("no-agent.sock")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("starting netavark")?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(opts.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} {verb} failed: {} {}",
            im.label,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn ports(n: usize, first: u16) -> Vec<PortMapping> {
    (0..n)
        .map(|i| PortMapping {
            host_port: first + 2 * i as u16,
            container_port: 8080,
            range: 1,
            proto: Proto::Tcp,
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Run `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path)?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(f())
    })
}

/// Connections per second from the outside to HOST_IP:port, each one
/// request and one response, for `secs`.
fn crr(w: &World, server_ns: &str, port: u16, secs: f64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    let srv = in_ns(server_ns, move || -> std::io::Result<()> {
        let l = TcpListener::bind("0.0.0.0:8080")?;
        l.set_nonblocking(true)?;
        let _ = tx.send(());
        let mut b = [0u8; 1];
        while !s2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false)?;
                    if c.read_exact(&mut b).is_ok() {
                        let _ = c.write_all(&b);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("the crr server did not start")?;
    let dst: SocketAddr = format!("{HOST_IP}:{port}").parse()?;
    let cli = in_ns(&w.outside, move || -> std::io::Result<(usize, Duration)> {
        let t = Instant::now();
        let mut n = 0;
        let mut b = [1u8; 1];
        while t.elapsed().as_secs_f64() < secs {
            let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(&b)?;
            c.read_exact(&mut b)?;
            n += 1;
        }
        Ok((n, t.elapsed()))
    });
    let r = cli
        .join()
        .map_err(|_| anyhow::anyhow!("crr client panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let _ = srv.join();
    let (n, took) = r??;
    Ok(n as f64 / took.as_secs_f64())
}

struct Figures {
    setup: Vec<(usize, Duration)>,
    teardown: Vec<(usize, Duration)>,
    crr: f64,
}

fn measure(
    im: &Impl,
    runs: usize,
    crr_secs: f64,
    agent_bin: Option<&Path>,
) -> anyhow::Result<Figures> {
    let mut w = World::new(&im.label[..1])?;
    let im = &Impl {
        label: im.label,
        bin: im.bin.clone(),
        socket: match agent_bin {
            Some(p) => Some(w.start_agent(p)?),
            None => None,
        },
    };
    let mut f = Figures {
        setup: Vec::new(),
        teardown: Vec::new(),
        crr: 0.0,
    };
    // A first container, so that both sides have made their bridge (and
    // pier loaded its dataplane) before the measured ones.
    let warm = w.add_ns("warm")?;
    let wopts = netavark::options(&NET, "warm", Ipv4Addr::new(10, 89, 0, 200), &[]);
    call(&w, im, "setup", &warm, &wopts)?;
    for n in [1usize, 10, 100] {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let ns = w.add_ns(&format!("c{n}-{r}"))?;
            let opts = netavark::options(
                &NET,
                &format!("c{n}r{r}"),
                Ipv4Addr::new(10, 89, 0, 10),
                &ports(n, 20000),
            );
            up.push(call(&w, im, "setup", &ns, &opts)?);
            down.push(call(&w, im, "teardown", &ns, &opts)?);
            w.del_ns(&ns);
        }
        f.setup.push((n, median(up)));
        f.teardown.push((n, median(down)));
    }
    let srv = w.add_ns("srv")?;
    let sopts = netavark::options(
        &NET,
        "srv",
        Ipv4Addr::new(10, 89, 0, 2),
        &[PortMapping {
            host_port: 8081,
            container_port: 8080,
            range: 1,
            proto: Proto::Tcp,
        }],
    );
    call(&w, im, "setup", &srv, &sopts)?;
    f.crr = crr(&w, &srv, 8081, crr_secs)?;
    call(&w, im, "teardown", &srv, &sopts)?;
    call(&w, im, "teardown", &warm, &wopts)?;
    Ok(f)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("pier-netavark-bench builds namespaces and must run as root");
    }
    let here = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let pier = a.pier.unwrap_or_else(|| here.join("netavark"));
    let pier_agent = a.pier_agent.unwrap_or_else(|| here.join("pier"));
    for b in [&pier, &pier_agent, &a.netavark] {
        if !b.exists() {
            bail!(
                "{} is missing (cargo xtask build; apt-get install netavark)",
                b.display()
            );
        }
    }
    let (runs, secs) = if a.quick { (3, 1.0) } else { (9, 3.0) };
    let nv = Impl {
        label: "netavark",
        bin: a.netavark.clone(),
        socket: None,
    };
    let pl = Impl {
        label: "pier",
        bin: pier.clone(),
        socket: None,
    };
    println!("netavark 1.4 ({}) …", a.netavark.display());
    let f_nv = measure(&nv, runs, secs, None)?;
    println!("pier as netavark, no agent ({}) …", pier.display());
    let f_local = measure(&pl, runs, secs, None)?;
    println!("pier as netavark, through an agent …");
    let f_agent = measure(&pl, runs, secs, Some(&pier_agent))?;
    println!(
        "\n{:<22} {:>12} {:>14} {:>14} {:>10} {:>10}",
        "median of runs", "netavark", "pier (agent)", "pier (alone)", "agent/nv", "alone/nv"
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (what, nv, ag, lo) in [
        ("setup", &f_nv.setup, &f_agent.setup, &f_local.setup),
        (
            "teardown",
            &f_nv.teardown,
            &f_agent.teardown,
            &f_local.teardown,
        ),
    ] {
        for i in 0..nv.len() {
            let n = nv[i].0;
            println!(
                "{:<22} {:>12} {:>14} {:>14} {:>10.2} {:>10.2}",
                format!("{what}, {n} port{}", if n == 1 { "" } else { "s" }),
                ms(nv[i].1),
                ms(ag[i].1),
                ms(lo[i].1),
                ratio(ag[i].1, nv[i].1),
                ratio(lo[i].1, nv[i].1),
            );
        }
    }
    println!(
        "{:<22} {:>12.0} {:>14.0} {:>14.0} {:>10.2} {:>10.2}",
        "crr/s (published port)",
        f_nv.crr,
        f_agent.crr,
        f_local.crr,
        f_agent.crr / f_nv.crr,
        f_local.crr / f_nv.crr
    );
    println!("(times: lower is better; crr: higher is better; {runs} runs, crr {secs} s each)");
    Ok(())
}
