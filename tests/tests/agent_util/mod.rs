//! Shared fixture of the agent-level dataplane tests (`publish_agent`,
//! `restart_agent`, `netopts_agent`): a TestHost with a real agent driven by
//! the CLI, traffic helpers that run in a namespace given by path (container
//! namespaces are bind mounts under the agent's run dir), readers of the
//! agent's pinned maps, and the firewall check every test ends with.
#![allow(dead_code)]

pub mod api;
pub mod consistency;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use pier_common::{
    maps as names,
    nat::{PortKey, PortVal},
};
use pier_tests::{Agent, TestHost, net::firewall_snapshot};
use serde_json::Value;

pub const IO_TIMEOUT: Duration = Duration::from_secs(4);

/// A TestHost with a running agent, and the firewalls as they were before.
pub struct Sandbox {
    pub host: TestHost,
    pub agent: Option<Agent>,
    fw_host: String,
    fw_machine: String,
}

/// The IPv6 addresses [`Sandbox::add_ipv6_uplink`] gives the host's uplink
/// and the outside's `eth0` (one /64 between them).
pub const HOST_UPLINK_IP6: &str = "fd18::1";
pub const OUTSIDE_IP6: &str = "fd18::2";

impl Sandbox {
    /// IPv6 on the uplink's link: [`HOST_UPLINK_IP6`] on the host's
    /// `uplink0`, [`OUTSIDE_IP6`] on the outside's `eth0` (no DAD wait).
    pub fn add_ipv6_uplink(&self) {
        let a = |ip: &str| format!("{ip}/64");
        self.host.host(&[
            "ip",
            "addr",
            "add",
            &a(HOST_UPLINK_IP6),
            "dev",
            "uplink0",
            "nodad",
        ]);
        self.host
            .outside(&["ip", "addr", "add", &a(OUTSIDE_IP6), "dev", "eth0", "nodad"]);
    }

    /// A fresh TestHost and an agent started with `extra` flags.
    pub fn new(extra: &[&str]) -> Self {
        Self::with_agent(|h| h.start_agent(extra))
    }

    /// A fresh TestHost with the agent `start` starts on it.
    pub fn with_agent(start: impl FnOnce(&mut TestHost) -> Agent) -> Self {
        let fw_machine = firewall_snapshot(None);
        let mut host = TestHost::new();
        let fw_host = firewall_snapshot(Some(&host.host_ns));
        let agent = Some(start(&mut host));
        Sandbox {
            host,
            agent,
            fw_host,
            fw_machine,
        }
    }

    /// Neither the host namespace's nor the machine's firewall changed.
    pub fn assert_firewalls_untouched(&self) {
        assert_eq!(
            firewall_snapshot(Some(&self.host.host_ns)),
            self.fw_host,
            "the host namespace's firewall changed"
        );
        assert_eq!(
            firewall_snapshot(None),
            self.fw_machine,
            "the machine's firewall changed"
        );
    }

    /// Take the firewalls as they are now as the reference (after the test
    /// changed its own host namespace's firewall on purpose).
    pub fn rebase_firewalls(&mut self) {
        self.fw_host = firewall_snapshot(Some(&self.host.host_ns));
        self.fw_machine = firewall_snapshot(None);
    }

    /// Path of the host namespace.
    pub fn host_ns(&self) -> PathBuf {
        ns_path(&self.host.host_ns)
    }

    /// Path of the outside namespace.
    pub fn outside_ns(&self) -> PathBuf {
        ns_path(&self.host.outside_ns)
    }

    /// Path of container `name`'s namespace.
    pub fn ns_of(&self, name: &str) -> PathBuf {
        self.host.container_netns(&self.host.container_id(name))
    }

    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.host.pier_ok(&["inspect", name])).unwrap();
        v[0].clone()
    }

    /// Address of container `name` on network `net`.
    pub fn ip_of(&self, name: &str, net: &str) -> Ipv4Addr {
        self.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no address on {net}"))
            .parse()
            .unwrap()
    }

    /// `PIER_PORTS` as pinned under the agent's bpffs directory.
    pub fn port_entries(&self) -> Vec<PortEntry> {
        port_entries(&self.host.bpffs_dir)
    }

    /// The agent's log (for failure messages).
    pub fn log(&self) -> String {
        self.agent.as_ref().map(Agent::log).unwrap_or_default()
    }
}

/// `/run/netns/NAME`.
pub fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// One `PIER_PORTS` entry: (host address, host port, protocol number) →
/// (container address, container port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortEntry {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub proto: u8,
    pub backend: Ipv4Addr,
    pub backend_port: u16,
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// Read the pinned `PIER_PORTS` map of an agent, sorted.
pub fn port_entries(bpffs_dir: &Path) -> Vec<PortEntry> {
    let md = aya::maps::MapData::from_pin(bpffs_dir.join(names::PORTS)).expect("open PIER_PORTS");
    let m: aya::maps::HashMap<_, PortKey, PortVal> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(md)).expect("PIER_PORTS is a hash");
    let mut v: Vec<PortEntry> = m
        .iter()
        .map(|r| {
            let (k, val) = r.expect("read PIER_PORTS");
            PortEntry {
                host_ip: Ipv4Addr::from(k.addr_be.to_ne_bytes()),
                host_port: u16::from_be(k.port_be),
                proto: k.proto,
                backend: Ipv4Addr::from(val.backend_be.to_ne_bytes()),
                backend_port: u16::from_be(val.backend_port_be),
            }
        })
        .collect();
    v.sort();
    v
}

/// Run `f` on a new thread that joined the network namespace at `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Run `f` in the namespace at `ns` and wait for it.
pub fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f).join().expect("thread in netns panicked")
}

/// A TCP server in `ns` on `port` answering `conns` connections: it reads one
/// line and answers `<peer>|<line>`. Joins to the peers it saw.
pub fn tcp_server(ns: &Path, port: u16, conns: usize) -> JoinHandle<Vec<SocketAddr>> {
    tcp_server_on(ns, "0.0.0.0", port, conns)
}

/// [`tcp_server`] bound to `ip` (`"::"` for IPv6).
pub fn tcp_server_on(
    ns: &Path,
    ip: &'static str,
    port: u16,
    conns: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l =
            pier_tests::net::bind_retrying(|| TcpListener::bind((ip, port))).expect("bind server");
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..conns {
            let Ok((mut s, peer)) = l.accept() else { break };
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            let _ = write!(s, "{peer}|{}", String::from_utf8_lossy(&line));
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// What a TCP client saw: `getpeername` of its socket, and the answer.
#[derive(Debug)]
pub struct Answer {
    pub peer: SocketAddr,
    pub text: String,
}

impl Answer {
    /// The client address the server reported.
    pub fn seen_ip(&self) -> String {
        self.text.split(':').next().unwrap_or_default().to_string()
    }
}

/// Connect from `ns` to `dst`, send `msg`, read the answer to EOF.
pub fn tcp_ask(ns: &Path, dst: &str, msg: &str) -> std::io::Result<Answer> {
    let dst: SocketAddr = dst.parse().unwrap();
    let msg = msg.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        let peer = s.peer_addr()?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(Answer { peer, text })
    })
}

/// A UDP server in `ns` on `port` answering `n` datagrams with `<peer>|<data>`.
pub fn udp_server(ns: &Path, port: u16, n: usize) -> JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let s = pier_tests::net::bind_retrying(|| UdpSocket::bind(("0.0.0.0", port)))
            .expect("bind udp server");
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let Ok((len, peer)) = s.recv_from(&mut buf) else {
                break;
            };
            let answer = format!("{peer}|{}", String::from_utf8_lossy(&buf[..len]));
            let _ = s.send_to(answer.as_bytes(), peer);
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(IO_TIMEOUT).expect("udp server ready");
    h
}

/// Send `msg` from `ns` to `dst`; the answer and the address it came from.
pub fn udp_ask(ns: &Path, dst: &str, msg: &str) -> std::io::Result<Answer> {
    let dst: SocketAddr = dst.parse().unwrap();
    let msg = msg.to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(msg.as_bytes(), dst)?;
        let mut buf = [0u8; 2048];
        let (len, peer) = s.recv_from(&mut buf)?;
        Ok(Answer {
            peer,
            text: String::from_utf8_lossy(&buf[..len]).into_owned(),
        })
    })
}

/// `ping -c1` from the namespace at `ns`; true when answered.
pub fn ping(ns: &Path, dst: &str) -> bool {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "ping", "-c1", "-W1", dst])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// How many entries the pinned `PIER_CT` map of an agent holds.
pub fn ct_entries(bpffs_dir: &Path) -> usize {
    use pier_common::ct::{CtVal, FlowKey};
    let md = aya::maps::MapData::from_pin(bpffs_dir.join(names::CT)).expect("open PIER_CT");
    let m: aya::maps::HashMap<_, FlowKey, CtVal> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(md))
            .expect("PIER_CT is an LRU hash");
    m.keys().filter(Result::is_ok).count()
}

/// Chunk size of [`slow_client`]'s writes.
pub const CHUNK: usize = 64 << 10;

/// The byte at offset `i` of a checked transfer.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// A server in `ns` on `port` for one connection: it reads to EOF, checks
/// every byte against [`pattern`] and answers `<bytes> <mismatches>`.
pub fn checking_server(ns: &Path, port: u16) -> JoinHandle<(usize, usize)> {
    checking_server_on(ns, "0.0.0.0", port)
}

/// [`checking_server`] on address `addr` (`"::"`: IPv6 too).
pub fn checking_server_on(ns: &Path, addr: &'static str, port: u16) -> JoinHandle<(usize, usize)> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = TcpListener::bind((addr, port)).expect("bind");
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (mut n, mut bad) = (0usize, 0usize);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let k = s.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            bad += buf[..k]
                .iter()
                .enumerate()
                .filter(|(j, b)| **b != pattern(n + j))
                .count();
            n += k;
        }
        let _ = write!(s, "{n} {bad}");
        (n, bad)
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// A client in `ns` sending `total` [`pattern`] bytes to `dst` in
/// [`CHUNK`]s, `pause` after each, then reading the server's verdict.
pub fn slow_client(
    ns: &Path,
    dst: SocketAddr,
    total: usize,
    pause: Duration,
) -> JoinHandle<std::io::Result<String>> {
    spawn_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut sent = 0;
        while sent < total {
            let chunk: Vec<u8> = (sent..sent + CHUNK).map(pattern).collect();
            s.write_all(&chunk)?;
            sent += CHUNK;
            std::thread::sleep(pause);
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

/// xorshift64*: reproducible from the seed a test prints.
pub struct Rng(pub u64);

impl Rng {
    /// `$VAR` if set, else from the clock; the test prints it.
    pub fn from_env(var: &str) -> (Self, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (Rng(seed.max(1)), seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// `$VAR` as a number, else `default`.
pub fn env_num(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Median and maximum of `v` (zero when empty).
pub fn median_max(v: &[Duration]) -> (Duration, Duration) {
    let mut v = v.to_vec();
    v.sort();
    (
        v.get(v.len() / 2).copied().unwrap_or_default(),
        v.last().copied().unwrap_or_default(),
    )
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
