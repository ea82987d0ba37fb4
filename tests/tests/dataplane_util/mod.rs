//! Shared fixture of the dataplane integration tests: a TestHost with bridges
//! and container namespaces built by `ip`, an `EbpfDataplane` driven directly,
//! and small traffic helpers (servers that report the peer they saw).
#![allow(dead_code)]

pub mod pkt;
pub mod progrun;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use ipnet::Ipv4Net;
use pier_agent::dataplane::{
    DataplaneConfig, DesiredState, EndpointSpec, NetworkSpec, PortSpec, Proto,
};
use pier_tests::{
    TestHost,
    host::{UPLINK, sh},
    net::firewall_snapshot,
};

pub const IO_TIMEOUT: Duration = Duration::from_secs(4);

/// A container: a namespace with `eth0` on a bridge of the host namespace.
#[derive(Clone, Debug)]
pub struct Container {
    pub ns: String,
    pub ip: Ipv4Addr,
    /// Given by [`World::ip6`].
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: [u8; 6],
    pub host_ifname: String,
    pub network_id: u32,
}

impl Container {
    pub fn endpoint(&self) -> EndpointSpec {
        EndpointSpec {
            network_id: self.network_id,
            ip: Some(self.ip),
            ip6: self.ip6,
            mac: self.mac,
            host_ifname: self.host_ifname.clone(),
        }
    }
}

/// A TestHost plus what the dataplane tests build in it. Checks on drop that
/// neither the host namespace's nor the machine's firewall changed.
pub struct World {
    pub host: TestHost,
    pub cgroup: Option<PathBuf>,
    fw_host: String,
    fw_machine: String,
    pub networks: Vec<NetworkSpec>,
    pub containers: Vec<Container>,
}

impl World {
    pub fn new(with_cgroup: bool) -> Self {
        let fw_machine = firewall_snapshot(None);
        let host = TestHost::new();
        let fw_host = firewall_snapshot(Some(&host.host_ns));
        let cgroup = with_cgroup.then(|| {
            let p = PathBuf::from(format!("/sys/fs/cgroup/unified/pier-{}", host.prefix));
            std::fs::create_dir_all(&p).expect("create test cgroup");
            p
        });
        World {
            host,
            cgroup,
            fw_host,
            fw_machine,
            networks: Vec::new(),
            containers: Vec::new(),
        }
    }

    pub fn config(&self) -> DataplaneConfig {
        DataplaneConfig {
            bpffs_dir: self.host.bpffs_dir.clone(),
            uplinks: vec![UPLINK.to_string()],
            cgroup: self.cgroup.clone(),
        }
    }

    /// A bridge `br<id>` with gateway `.1` of `subnet` in the host namespace.
    pub fn network(&mut self, id: u32, subnet: &str) -> NetworkSpec {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        let gateway = subnet.hosts().next().unwrap();
        let bridge = format!("br{id}");
        let ns = self.host.host_ns.clone();
        sh(&["ip", "-n", &ns, "link", "add", &bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{gateway}/{}", subnet.prefix_len()),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &bridge, "up"]);
        let n = NetworkSpec {
            id,
            bridge,
            subnet: Some(subnet),
            gateway: Some(gateway),
            subnet6: None,
            gateway6: None,
            internal: false,
            icc: true,
            masquerade: true,
        };
        self.networks.push(n.clone());
        n
    }

    /// A container `name` on network `net` with address `ip`.
    pub fn container(&mut self, name: &str, net: &NetworkSpec, ip: &str) -> Container {
        let ns = self.host.add_netns(name);
        let hns = self.host.host_ns.clone();
        let host_ifname = format!("v{name}");
        sh(&[
            "ip",
            "-n",
            &hns,
            "link",
            "add",
            &host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &hns,
            "link",
            "set",
            &host_ifname,
            "master",
            &net.bridge,
            "up",
        ]);
        let cidr = format!("{ip}/{}", net.subnet.unwrap().prefix_len());
        sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &net.gateway.unwrap().to_string(),
        ]);
        let c = Container {
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: mac_of(&ns, "eth0"),
            ns,
            host_ifname,
            network_id: net.id,
        };
        self.containers.push(c.clone());
        c
    }

    /// Make network `id` dual stack: `subnet6` with gateway `::1` on its
    /// bridge, and IPv6 forwarding in the host namespace (the test's own).
    pub fn ipv6(&mut self, id: u32, subnet6: &str) -> ipnet::Ipv6Net {
        let subnet6: ipnet::Ipv6Net = subnet6.parse().unwrap();
        let gw = gateway6(&subnet6);
        let ns = self.host.host_ns.clone();
        let n = self.networks.iter_mut().find(|n| n.id == id).unwrap();
        n.subnet6 = Some(subnet6);
        let cidr = format!("{gw}/{}", subnet6.prefix_len());
        sh(&[
            "ip", "-n", &ns, "addr", "add", &cidr, "dev", &n.bridge, "nodad",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        subnet6
    }

    /// Give the container interface of host veth `host_ifname` the IPv6
    /// address `ip6` (no DAD) on `subnet6`; with `route`, the default IPv6
    /// route via the gateway.
    pub fn ip6(&mut self, host_ifname: &str, ip6: &str, subnet6: ipnet::Ipv6Net, route: bool) {
        let c = self
            .containers
            .iter_mut()
            .find(|c| c.host_ifname == host_ifname)
            .unwrap();
        c.ip6 = Some(ip6.parse().unwrap());
        let ns = c.ns.clone();
        let dev = ifname_in(&ns, &c.mac);
        let cidr = format!("{ip6}/{}", subnet6.prefix_len());
        sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &dev, "nodad"]);
        if route {
            let gw = gateway6(&subnet6).to_string();
            sh(&["ip", "-n", &ns, "-6", "route", "add", "default", "via", &gw]);
        }
    }

    /// Every network and container built so far, with `ports`.
    pub fn desired(&self, ports: Vec<PortSpec>) -> DesiredState {
        DesiredState {
            networks: self.networks.clone(),
            endpoints: self.containers.iter().map(Container::endpoint).collect(),
            ports,
            ..Default::default()
        }
    }

    /// Compare the firewalls with their state before the test.
    pub fn assert_firewalls_untouched(&self) {
        assert_eq!(
            firewall_snapshot(Some(&self.host.host_ns)),
            self.fw_host,
            "the host namespace's firewall changed"
        );
        self.assert_machine_firewall_untouched();
    }

    /// Compare the machine's firewall with its state before the test.
    pub fn assert_machine_firewall_untouched(&self) {
        assert_eq!(
            firewall_snapshot(None),
            self.fw_machine,
            "the machine's firewall changed"
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroup {
            // Processes of the test have exited; the cgroup is empty.
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// `::1` of a subnet.
pub fn gateway6(s: &ipnet::Ipv6Net) -> std::net::Ipv6Addr {
    (u128::from(s.network()) + 1).into()
}

/// The interface of `ns` whose MAC is `mac`.
pub fn ifname_in(ns: &str, mac: &[u8; 6]) -> String {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    v.as_array()
        .unwrap()
        .iter()
        .find(|l| l["address"].as_str() == Some(&want))
        .and_then(|l| l["ifname"].as_str())
        .unwrap()
        .to_string()
}

/// Wait until no address of `ns` is tentative (link-local DAD done).
pub fn wait_dad(ns: &str) {
    for _ in 0..60 {
        if sh(&["ip", "-n", ns, "-6", "addr", "show", "tentative"])
            .trim()
            .is_empty()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("addresses of {ns} stay tentative");
}

/// The link-local address of `dev` in `ns`.
pub fn link_local(ns: &str, dev: &str) -> String {
    let out = sh(&[
        "ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev, "scope", "link",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find_map(|i| i["local"].as_str()))
        .unwrap_or_else(|| panic!("no link-local address on {dev} in {ns}: {out}"))
        .to_string()
}

pub fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = v[0]["address"].as_str().unwrap();
    let mut mac = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

pub fn tcp(host_port: u16, ip: Ipv4Addr, port: u16) -> PortSpec {
    PortSpec {
        host_ip: None,
        proto: Proto::Tcp,
        host_port,
        container_ip: ip.into(),
        container_port: port,
        reserve: true,
    }
}

pub fn udp(host_port: u16, ip: Ipv4Addr, port: u16) -> PortSpec {
    PortSpec {
        proto: Proto::Udp,
        ..tcp(host_port, ip, port)
    }
}

/// Run `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A TCP server in `ns` on `port` answering `conns` connections: it reads one
/// line and answers `<peer address>|<line>`. Joins to the peers it saw.
pub fn tcp_server(ns: &str, port: u16, conns: usize) -> JoinHandle<Vec<SocketAddr>> {
    tcp_server_on(ns, "0.0.0.0", port, conns)
}

/// [`tcp_server`] on address `addr` (`"::"`: both families).
pub fn tcp_server_on(
    ns: &str,
    addr: &'static str,
    port: u16,
    conns: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = pier_tests::net::bind_retrying(|| TcpListener::bind((addr, port)))
            .expect("bind server");
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..conns {
            let (mut s, peer) = match l.accept() {
                Ok(x) => x,
                Err(_) => break,
            };
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

/// Connect from `ns` to `dst`, send `msg`, return the server's answer.
pub fn tcp_ask(ns: &str, dst: &str, msg: &str) -> std::io::Result<String> {
    let dst: SocketAddr = dst.parse().unwrap();
    let msg = msg.to_string();
    TestHost::in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// A UDP server in `ns` on `port` answering `n` datagrams with
/// `<peer address>|<datagram>`.
pub fn udp_server(ns: &str, port: u16, n: usize) -> JoinHandle<Vec<SocketAddr>> {
    udp_server_on(ns, "0.0.0.0", port, n)
}

/// [`udp_server`] on address `addr` (`"::"`: both families).
pub fn udp_server_on(
    ns: &str,
    addr: &'static str,
    port: u16,
    n: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let s = pier_tests::net::bind_retrying(|| UdpSocket::bind((addr, port)))
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

/// Send `msg` from `ns` (from `bind`, default any) to `dst` and return the answer.
pub fn udp_ask(ns: &str, bind: Option<&str>, dst: &str, msg: &str) -> std::io::Result<String> {
    let dst: SocketAddr = dst.parse().unwrap();
    let any = if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let bind = bind.unwrap_or(any).to_string();
    let msg = msg.to_string();
    TestHost::in_netns(ns, move || {
        let s = UdpSocket::bind(&bind)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(msg.as_bytes(), dst)?;
        let mut buf = [0u8; 2048];
        let (len, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    })
}

/// The peer address part of a server answer (`[v6]:port` too).
pub fn peer_ip(answer: &str) -> String {
    if let Some(rest) = answer.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    answer.split(':').next().unwrap_or_default().to_string()
}

/// Like [`tcp_ask`], from local port `src_port` (bound before connecting).
pub fn tcp_ask_from(ns: &str, src_port: u16, dst: &str, msg: &str) -> std::io::Result<String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let dst: std::net::SocketAddrV4 = dst.parse().unwrap();
    let msg = msg.to_string();
    TestHost::in_netns(ns, move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let src = SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, src_port));
        bind(fd.as_raw_fd(), &src)?;
        connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
        let mut s = TcpStream::from(fd);
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// `ping -c1` from `ns`; true when answered.
pub fn ping(ns: &str, dst: &str) -> bool {
    TestHost::cmd_in(ns, "ping")
        .args(["-c1", "-W2", dst])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl World {
    /// Connect an existing container namespace to another network with a
    /// second interface `ifname` (host side `v<name>`).
    pub fn connect(
        &mut self,
        ns: &str,
        name: &str,
        ifname: &str,
        net: &NetworkSpec,
        ip: &str,
    ) -> Container {
        let hns = self.host.host_ns.clone();
        let host_ifname = format!("v{name}");
        sh(&[
            "ip",
            "-n",
            &hns,
            "link",
            "add",
            &host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &hns,
            "link",
            "set",
            &host_ifname,
            "master",
            &net.bridge,
            "up",
        ]);
        let cidr = format!("{ip}/{}", net.subnet.unwrap().prefix_len());
        sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", ifname]);
        sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        let c = Container {
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: mac_of(ns, ifname),
            ns: ns.to_string(),
            host_ifname,
            network_id: net.id,
        };
        self.containers.push(c.clone());
        c
    }
}

/// The summed drop counter of `reason`.
pub fn drops(
    dp: &pier_agent::dataplane::EbpfDataplane,
    reason: pier_common::drop::DropReason,
) -> u64 {
    dp.drop_counts()
        .unwrap()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, c)| c.packets)
        .unwrap_or(0)
}

/// Run `pier_veth_in` on host-side veth `ifindex` with `frame` as the
/// container whose MAC is `mac` sends it: the Ethernet source the frame was
/// built with is replaced by the container's (any other is dropped,
/// `MacSpoofed`), and put back in the output where the program left it, so
/// an unchanged pass compares equal to `frame`.
pub fn veth_run(
    dp: &mut pier_agent::dataplane::EbpfDataplane,
    ifindex: u32,
    mac: [u8; 6],
    frame: &[u8],
) -> (u32, Vec<u8>) {
    let mut f = frame.to_vec();
    if f.len() >= 12 {
        f[6..12].copy_from_slice(&mac);
    }
    let (v, mut out) = dp
        .test_run(pier_agent::dataplane::programs::VETH_IN, &f, ifindex)
        .unwrap_or_else(|e| panic!("veth test_run of {} bytes: {e}", f.len()));
    if frame.len() >= 12 && out.len() >= 12 && out[6..12] == mac {
        out[6..12].copy_from_slice(&frame[6..12]);
    }
    (v, out)
}
