//! pier as Docker's network driver, through the real docker CLI and
//! Debian's dockerd 20.10 (`--iptables=false --bridge=none`) running in a
//! TestHost's host namespace: `docker network create -d pier`, published
//! ports with the client's address kept, names through Docker's embedded
//! DNS, isolation, connect/disconnect, `container:` sharing, rm/stop/start,
//! port conflicts, restarts of dockerd and of the agent with a transfer
//! running, and no netfilter rule in the host namespace.
mod agent_util;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use agent_util::*;
use nix::sys::signal::Signal;
use pier_tests::{
    Agent, TestHost,
    docker::{Dockerd, IMAGE},
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    net::firewall_snapshot,
    require_dockerd,
};
use serde_json::Value;

/// The agent logs every driver call.
const LOG: &str = "info,pier_agent::docker=debug";

/// A TestHost with a pier agent serving the driver, and a dockerd using it.
struct World {
    docker: Dockerd,
    agent: Option<Agent>,
    host: TestHost,
    fw_host: String,
    fw_machine: String,
}

impl World {
    fn new(docker_flags: &[&str]) -> Self {
        let fw_machine = firewall_snapshot(None);
        let mut host = TestHost::new();
        let fw_host = firewall_snapshot(Some(&host.host_ns));
        let agent = Some(host.start_agent_logging(&["--docker-plugin", &plugin_sock(&host)], LOG));
        let docker = Dockerd::start(&host, &plugin_dir(&host), docker_flags);
        World {
            docker,
            agent,
            host,
            fw_host,
            fw_machine,
        }
    }

    fn restart_agent(&mut self, signal: Signal) {
        let a = self.agent.take().unwrap();
        self.host.stop_agent(&a, signal);
        self.agent = Some(
            self.host
                .start_agent_logging(&["--docker-plugin", &plugin_sock(&self.host)], LOG),
        );
        self.host.wait_agent_ready();
    }

    fn ps(&self) -> Vec<Value> {
        let out = self.host.pier_ok(&["ps", "-a", "--format", "json"]);
        // Without the status: its age changes by itself.
        out.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("Status");
                v
            })
            .collect()
    }

    /// pier's record of a docker container, found by its sandbox.
    fn pier_name(&self, name: &str) -> String {
        let key = self
            .docker
            .ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name]);
        let base = Path::new(&key)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        format!("docker-{base}")
    }

    fn veths(&self) -> Vec<String> {
        self.host
            .host_link_names()
            .into_iter()
            .filter(|l| l.starts_with("veth") || l.starts_with("pier"))
            .filter(|l| l != "pier0")
            .collect()
    }

    fn assert_firewalls_untouched(&self) {
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

    fn outside_ns(&self) -> PathBuf {
        ns_path(&self.host.outside_ns)
    }

    fn host_ns(&self) -> PathBuf {
        ns_path(&self.host.host_ns)
    }

    /// `docker run -d` of a container that sleeps; its name.
    fn run(&self, name: &str, args: &[&str]) -> String {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(args);
        a.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        self.docker.ok(&a);
        name.to_string()
    }
}

fn plugin_dir(h: &TestHost) -> PathBuf {
    h.dir.join("plugins")
}

fn plugin_sock(h: &TestHost) -> String {
    plugin_dir(h)
        .join("pier.sock")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn published_ports_side_by_side_keep_the_client_address() {
    require_dockerd!();
    let w = World::new(&[]);
    let d = &w.docker;
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.91.0.0/24",
        "mynet",
    ]);
    assert!(
        w.host.pier_ok(&["network", "ls"]).contains("docker-"),
        "pier network ls shows docker's network"
    );
    w.run("web1", &["--network", "mynet", "-p", "8081:8080"]);
    w.run(
        "web2",
        &["--network", "mynet", "-p", "8082:8080", "-p", "9053:53/udp"],
    );
    let (ns1, ns2) = (d.netns_of("web1"), d.netns_of("web2"));
    // Docker gave the addresses; pier's veth carries them.
    assert_eq!(d.ip_of("web1", "mynet"), "10.91.0.2");
    assert_eq!(d.ip_of("web2", "mynet"), "10.91.0.3");
    let out = d.ok(&["exec", "web1", "ip", "route"]);
    assert!(out.contains("default via 10.91.0.1 dev eth0"), "{out}");
    for (ns, port, who) in [(&ns1, 8081, "one"), (&ns2, 8082, "two")] {
        let srv = tcp_server(ns, 8080, 3);
        let dst = format!("{HOST_UPLINK_IP}:{port}");
        let a = tcp_ask(&w.outside_ns(), &dst, who).expect("outside → published port");
        assert!(a.text.ends_with(&format!("|{who}")), "{a:?}");
        assert_eq!(a.seen_ip(), OUTSIDE_IP, "the server saw the real client");
        // On the host: loopback and the host's own address.
        let a = tcp_ask(&w.host_ns(), &format!("127.0.0.1:{port}"), "lo").expect("127.0.0.1");
        assert!(a.text.ends_with("|lo"), "{a:?}");
        assert_eq!(a.peer.to_string(), format!("127.0.0.1:{port}"));
        let a = tcp_ask(&w.host_ns(), &dst, "self").expect("host address");
        assert!(a.text.ends_with("|self"), "{a:?}");
        assert_eq!(srv.join().unwrap().len(), 3);
    }
    let srv = udp_server(&ns2, 53, 1);
    let a = udp_ask(&w.outside_ns(), &format!("{HOST_UPLINK_IP}:9053"), "q").expect("udp");
    assert_eq!(a.text.split(':').next().unwrap(), OUTSIDE_IP, "{a:?}");
    srv.join().unwrap();
    // docker port stays empty (libnetwork); pier port and ps show them.
    assert_eq!(d.ok(&["port", "web1"]), "");
    let n1 = w.pier_name("web1");
    assert_eq!(
        w.host.pier_ok(&["port", &n1]).trim(),
        "8080/tcp -> 0.0.0.0:8081"
    );
    let ps = w.ps();
    assert_eq!(ps.len(), 2, "{ps:?}");
    let row = ps
        .iter()
        .find(|r| r["Names"] == n1.as_str())
        .expect("web1 in pier ps");
    assert_eq!(row["Ports"], "0.0.0.0:8081->8080/tcp", "{row}");
    let mut entries = port_entries(&w.host.bpffs_dir);
    entries.sort();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.host_port, e.proto, e.backend.to_string(), e.backend_port))
            .collect::<Vec<_>>(),
        vec![
            (8081, TCP, "10.91.0.2".into(), 8080),
            (8082, TCP, "10.91.0.3".into(), 8080),
            (9053, UDP, "10.91.0.3".into(), 53),
        ]
    );
    // network inspect lists Docker's endpoints with Docker's ids; stats
    // count the packets that reached each port.
    let net_id = d.ok(&["network", "inspect", "-f", "{{.Id}}", "mynet"]);
    let ep1 = d.ok(&[
        "inspect",
        "-f",
        "{{(index .NetworkSettings.Networks \"mynet\").EndpointID}}",
        "web1",
    ]);
    let v: Value =
        serde_json::from_str(&w.host.pier_ok(&["network", "inspect", &net_id[..12]])).unwrap();
    assert_eq!(v[0]["Id"], net_id.as_str());
    assert_eq!(v[0]["Labels"]["pier.owner"], "docker");
    let members: Vec<&Value> = v[0]["Containers"].as_object().unwrap().values().collect();
    assert_eq!(members.len(), 2, "{v}");
    assert!(
        members
            .iter()
            .any(|m| m["EndpointID"] == ep1.as_str() && m["Name"] == n1.as_str())
    );
    let stats = w
        .host
        .pier_ok(&["stats", "--ports", "--format", "json", &n1]);
    let row: Value = serde_json::from_str(stats.lines().next().unwrap()).unwrap();
    assert!(row["Packets"].as_u64().unwrap() >= 3, "{row}");
    // pier does not change what Docker manages.
    let e = w.host.pier_err(&["rm", "-f", &n1]);
    assert!(e.contains("managed by docker"), "{e}");
    let net = format!(
        "docker-{}",
        &d.ok(&["network", "inspect", "-f", "{{.Id}}", "mynet"])[..12]
    );
    let e = w.host.pier_err(&["network", "rm", &net]);
    assert!(e.contains("managed by docker"), "{e}");
    let e = w
        .host
        .pier_err(&["run", "-d", "--network", &net, "--", "true"]);
    assert!(e.contains("managed by docker"), "{e}");
    w.assert_firewalls_untouched();
}

#[test]
fn names_isolation_connect_and_shared_namespaces() {
    require_dockerd!();
    let w = World::new(&[]);
    let d = &w.docker;
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.92.0.0/24",
        "mynet",
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.93.0.0/24",
        "other",
    ]);
    w.run("c1", &["--network", "mynet"]);
    w.run("c2", &["--network", "mynet", "--network-alias", "www"]);
    w.run("c3", &["--network", "other"]);
    // Docker's embedded DNS answers names and aliases on pier's network.
    let out = d.ok(&["exec", "c1", "nslookup", "www"]);
    assert!(out.contains("10.92.0.3"), "{out}");
    let out = d.ok(&["exec", "c2", "ping", "-c1", "-W2", "c1"]);
    assert!(out.contains("1 packets received"), "{out}");
    // Two pier networks are isolated: ICMP, TCP, UDP.
    let (ns1, ns3) = (d.netns_of("c1"), d.netns_of("c3"));
    assert!(!ping(&ns3, "10.92.0.2"), "other → mynet answered ping");
    let srv = tcp_server(&ns1, 7000, 1);
    assert!(
        tcp_ask(&ns3, "10.92.0.2:7000", "x").is_err(),
        "TCP crossed networks"
    );
    let usrv = udp_server(&ns1, 7001, 1);
    assert!(
        udp_ask(&ns3, "10.92.0.2:7001", "x").is_err(),
        "UDP crossed networks"
    );
    // connect gives c3 an eth1 on mynet; then it reaches c1, by name too.
    d.ok(&["network", "connect", "mynet", "c3"]);
    let out = d.ok(&["exec", "c3", "ip", "-4", "addr", "show", "eth1"]);
    assert!(out.contains("10.92.0."), "{out}");
    let a = tcp_ask(&ns3, "10.92.0.2:7000", "hi").expect("TCP after connect");
    assert!(a.text.ends_with("|hi"), "{a:?}");
    srv.join().unwrap();
    let a = udp_ask(&ns3, "10.92.0.2:7001", "u").expect("UDP after connect");
    assert!(a.text.ends_with("|u"), "{a:?}");
    usrv.join().unwrap();
    let out = d.ok(&["exec", "c3", "ping", "-c1", "-W2", "c1"]);
    assert!(out.contains("1 packets received"), "{out}");
    let row = w
        .ps()
        .into_iter()
        .find(|r| r["Names"] == w.pier_name("c3").as_str())
        .unwrap();
    assert_eq!(
        row["Networks"].as_str().unwrap().split(',').count(),
        2,
        "{row}"
    );
    d.ok(&["network", "disconnect", "mynet", "c3"]);
    assert!(
        !d.cmd(&["exec", "c3", "ip", "link", "show", "eth1"])
            .status
            .success()
    );
    assert!(
        !ping(&ns3, "10.92.0.2"),
        "disconnected, still reaches mynet"
    );
    // container:c1 shares c1's stack.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c4",
        "--network",
        "container:c1",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let out = d.ok(&["exec", "c4", "ip", "-4", "addr", "show", "eth0"]);
    assert!(out.contains("10.92.0.2/24"), "{out}");
    w.assert_firewalls_untouched();
}

#[test]
fn rm_stop_start_and_port_conflicts_leave_nothing_behind() {
    require_dockerd!();
    let w = World::new(&[]);
    let d = &w.docker;
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.94.0.0/24",
        "mynet",
    ]);
    let before = w.veths();
    // A pier container holds 8081: docker cannot take it.
    w.host.pier_ok(&[
        "run", "-d", "--name", "p1", "-p", "8081:80", "--", "sleep", "3600",
    ]);
    let with_p1 = w.veths();
    let ps_p1 = w.ps();
    let e = d.fails(&[
        "run",
        "-d",
        "--name",
        "x1",
        "--network",
        "mynet",
        "-p",
        "8081:8080",
        IMAGE,
        "sleep",
        "9",
    ]);
    assert!(e.contains("port is already allocated"), "{e}");
    assert_eq!(w.veths(), with_p1, "a veth was left behind");
    assert_eq!(w.ps(), ps_p1, "a record was left behind");
    assert_eq!(port_entries(&w.host.bpffs_dir).len(), 1);
    // A docker container holds 8082: neither pier nor docker can take it.
    w.run("web", &["--network", "mynet", "-p", "8082:8080"]);
    let e = w
        .host
        .pier_err(&["run", "-d", "-p", "8082:80", "--", "true"]);
    assert!(e.contains("port is already allocated"), "{e}");
    let with_web = w.veths();
    let e = d.fails(&[
        "run",
        "-d",
        "--name",
        "x2",
        "--network",
        "mynet",
        "-p",
        "8082:8080",
        IMAGE,
        "sleep",
        "9",
    ]);
    assert!(e.contains("port is already allocated"), "{e}");
    assert_eq!(w.veths(), with_web);
    // A host process holds 8083.
    let holder = in_ns(&w.host_ns(), || TcpListener::bind("0.0.0.0:8083").unwrap());
    let e = d.fails(&[
        "run",
        "-d",
        "--name",
        "x3",
        "--network",
        "mynet",
        "-p",
        "8083:8080",
        IMAGE,
        "sleep",
        "9",
    ]);
    assert!(e.contains("already"), "{e}");
    drop(holder);
    assert_eq!(w.veths(), with_web);
    assert_eq!(port_entries(&w.host.bpffs_dir).len(), 2);
    // An ephemeral host port (-p 8080: Docker's HostPort 0), and a range.
    w.run(
        "eph",
        &["--network", "mynet", "-p", "8080", "-p", "9100-9105:80"],
    );
    let n = w.pier_name("eph");
    let ports = w.host.pier_ok(&["port", &n]);
    let picked: Vec<u16> = ports
        .lines()
        .map(|l| l.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(picked.len(), 2, "{ports}");
    assert!(picked.contains(&9100), "{ports}");
    let (lo, _) = ephemeral_range();
    assert!(picked.iter().any(|p| *p >= lo), "{ports}");
    d.ok(&["rm", "-f", "eph"]);
    // stop unpublishes, start publishes again.
    d.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(
        port_entries(&w.host.bpffs_dir).len(),
        1,
        "stopped web still published"
    );
    d.ok(&["start", "web"]);
    let ns = d.netns_of("web");
    let srv = tcp_server(&ns, 8080, 1);
    let a =
        tcp_ask(&w.outside_ns(), &format!("{HOST_UPLINK_IP}:8082"), "again").expect("after start");
    assert!(a.text.ends_with("|again"), "{a:?}");
    srv.join().unwrap();
    // rm -f removes the veth, the map entries and the record.
    d.ok(&["rm", "-f", "web"]);
    assert_eq!(w.veths(), with_p1);
    assert_eq!(port_entries(&w.host.bpffs_dir).len(), 1);
    assert_eq!(w.ps().len(), 1);
    w.host.pier_ok(&["rm", "-f", "p1"]);
    assert_eq!(w.veths(), before);
    // Pools that overlap a pier network or a routed subnet are refused.
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "172.17.5.0/24",
        "bad1",
    ]);
    assert!(e.contains("overlap"), "{e}");
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "198.18.0.0/25",
        "bad2",
    ]);
    assert!(e.contains("routed on the host"), "{e}");
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.95.0.0/24",
        "-o",
        "bogus=1",
        "bad3",
    ]);
    assert!(e.contains("bogus"), "{e}");
    assert_eq!(
        d.ok(&["network", "ls", "-q", "--filter", "driver=pier"])
            .lines()
            .count(),
        1
    );
    d.ok(&["network", "rm", "mynet"]);
    assert!(!w.host.pier_ok(&["network", "ls"]).contains("docker-"));
    w.assert_firewalls_untouched();
}

fn ephemeral_range() -> (u16, u16) {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

const TOTAL: usize = 16 << 20;
#[test]
fn transfer_survives_dockerd_and_agent_restarts() {
    require_dockerd!();
    // --live-restore: containers outlive dockerd, as on a production host.
    let mut w = World::new(&["--live-restore"]);
    w.docker.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.96.0.0/24",
        "mynet",
    ]);
    w.run("sink", &["--network", "mynet", "-p", "8081:8080"]);
    let ns = w.docker.netns_of("sink");
    let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();
    let srv = checking_server(&ns, 8080);
    // 256 chunks × 12 ms ≈ 3 s of transfer.
    let client = slow_client(&w.outside_ns(), dst, TOTAL, Duration::from_millis(12));
    std::thread::sleep(Duration::from_millis(300));
    w.docker.stop(Signal::SIGTERM, Duration::from_secs(15));
    assert!(
        !client.is_finished(),
        "the transfer ended before dockerd stopped"
    );
    w.docker.restart(&plugin_dir(&w.host));
    w.restart_agent(Signal::SIGTERM);
    w.restart_agent(Signal::SIGKILL);
    let answer = client.join().unwrap().expect("transfer");
    assert_eq!(answer, format!("{TOTAL} 0"), "bytes received, mismatches");
    assert_eq!(srv.join().unwrap(), (TOTAL, 0));
    // Networks and endpoints intact on both sides; new connections and a
    // new container work.
    assert!(w.docker.ok(&["network", "ls"]).contains("mynet"));
    assert_eq!(
        w.docker
            .ok(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", "sink"]),
        format!("true {}", ns.to_string_lossy().split('/').nth(2).unwrap()),
        "sink did not live through the restart; dockerd log:\n{}",
        w.docker.log_text()
    );
    assert_eq!(w.ps().len(), 1);
    let srv = tcp_server(&ns, 8080, 1);
    let a = tcp_ask(&w.outside_ns(), &dst.to_string(), "after").expect("new connection");
    assert!(a.text.ends_with("|after"), "{a:?}");
    srv.join().unwrap();
    w.run("late", &["--network", "mynet", "-p", "8082:8080"]);
    assert_eq!(w.docker.ip_of("late", "mynet"), "10.96.0.3");
    assert_eq!(port_entries(&w.host.bpffs_dir).len(), 2);
    w.assert_firewalls_untouched();
}

/// IPv6 traffic helpers (the shared ones speak IPv4).
mod v6 {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
        path::Path,
        sync::mpsc,
        thread::JoinHandle,
        time::{Duration, Instant},
    };

    use super::agent_util::{IO_TIMEOUT, in_ns, spawn_in};

    /// A TCP server on `[::]:port` in `ns` that answers each of `conns`
    /// connections with the peer address it saw.
    pub fn tcp_server(ns: &Path, port: u16, conns: usize) -> JoinHandle<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::channel();
        let h = spawn_in(ns, move || {
            let l = pier_tests::net::bind_retrying(|| TcpListener::bind(("::", port))).unwrap();
            tx.send(()).unwrap();
            let mut peers = Vec::new();
            for _ in 0..conns {
                let Ok((mut s, peer)) = l.accept() else { break };
                let _ = write!(s, "{}", peer.ip());
                peers.push(peer);
            }
            peers
        });
        rx.recv_timeout(IO_TIMEOUT).expect("server ready");
        h
    }

    /// The address the server at `dst` saw `ns` connect from (from `src`
    /// when given); a failed connection is retried for `patience` (an
    /// address Docker set may still be tentative).
    pub fn seen_from(
        ns: &Path,
        src: Option<&str>,
        dst: &str,
        patience: Duration,
    ) -> std::io::Result<String> {
        let dst: SocketAddr = dst.parse().unwrap();
        let src: Option<SocketAddr> = src.map(|s| format!("[{s}]:0").parse().unwrap());
        in_ns(ns, move || {
            let deadline = Instant::now() + patience;
            loop {
                let r = (|| {
                    use nix::sys::socket::{
                        AddressFamily, SockFlag, SockType, SockaddrIn6, bind, connect, setsockopt,
                        socket, sockopt,
                    };
                    let fd = socket(
                        AddressFamily::Inet6,
                        SockType::Stream,
                        SockFlag::SOCK_CLOEXEC,
                        None,
                    )?;
                    // A blocking connect gives up after SO_SNDTIMEO.
                    let t = nix::sys::time::TimeVal::new(2, 0);
                    setsockopt(&fd, sockopt::SendTimeout, &t)?;
                    if let Some(SocketAddr::V6(s)) = src {
                        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(s))?;
                    }
                    let SocketAddr::V6(d6) = dst else {
                        unreachable!("an IPv6 destination")
                    };
                    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(d6))?;
                    let mut s = TcpStream::from(fd);
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    Ok::<_, std::io::Error>(out)
                })();
                match r {
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    r => return r,
                }
            }
        })
    }

    /// A UDP echo of the peer address on `[::]:port` for one datagram.
    pub fn udp_server(ns: &Path, port: u16) -> JoinHandle<()> {
        let (tx, rx) = mpsc::channel();
        let h = spawn_in(ns, move || {
            let s = pier_tests::net::bind_retrying(|| UdpSocket::bind(("::", port))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        });
        rx.recv_timeout(IO_TIMEOUT).expect("udp server ready");
        h
    }

    /// One datagram from `ns` to `dst`; the answer.
    pub fn udp_ask(ns: &Path, dst: &str) -> std::io::Result<String> {
        let dst: SocketAddr = dst.parse().unwrap();
        in_ns(ns, move || {
            let s = UdpSocket::bind("[::]:0")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"q", dst)?;
            let mut buf = [0u8; 512];
            let (n, _) = s.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    }
}

#[test]
fn dual_stack_networks_give_containers_both_families() {
    require_dockerd!();
    let w = World::new(&[]);
    let d = &w.docker;
    let patience = Duration::from_secs(4);
    // pier holds fd99::/64 itself: Docker's IPAM cannot know.
    w.host.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd99::/64",
        "own6",
    ]);
    for (v4, v6, name) in [
        ("10.97.0.0/24", "fd97::/64", "v6net"),
        ("10.98.0.0/24", "fd98::/64", "v6other"),
    ] {
        d.ok(&[
            "network", "create", "-d", "pier", "--ipv6", "--subnet", v4, "--subnet", v6, name,
        ]);
    }
    // pier records Docker's IPv6 pool and puts its gateway on the bridge.
    let net_id = d.ok(&["network", "inspect", "-f", "{{.Id}}", "v6net"]);
    let v: Value =
        serde_json::from_str(&w.host.pier_ok(&["network", "inspect", &net_id[..12]])).unwrap();
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    assert_eq!(v[0]["IPAM"]["Config"][1]["Subnet"], "fd97::/64", "{v}");
    assert_eq!(v[0]["IPAM"]["Config"][1]["Gateway"], "fd97::1", "{v}");
    let addrs = w.host.host(&["ip", "-6", "-o", "addr", "show"]);
    assert!(addrs.contains("inet6 fd97::1/64"), "{addrs}");
    w.run("c1", &["--network", "v6net"]);
    w.run("c2", &["--network", "v6net"]);
    w.run("c3", &["--network", "v6other"]);
    let ip6_of = |c: &str, net: &str| {
        d.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").GlobalIPv6Address}}}}"),
            c,
        ])
    };
    // Docker's IPAM gave both families; pier's veth carries them.
    assert_eq!(d.ip_of("c1", "v6net"), "10.97.0.2");
    assert_eq!(ip6_of("c1", "v6net"), "fd97::2");
    assert_eq!(ip6_of("c2", "v6net"), "fd97::3");
    let out = d.ok(&["exec", "c1", "ip", "-6", "addr", "show", "eth0"]);
    assert!(out.contains("fd97::2/64"), "{out}");
    let out = d.ok(&["exec", "c1", "ip", "-6", "route"]);
    assert!(out.contains("default via fd97::1 dev eth0"), "{out}");
    let out = d.ok(&["exec", "c1", "ip", "route"]);
    assert!(out.contains("default via 10.97.0.1 dev eth0"), "{out}");
    // pier's record has the address too.
    let n1 = w.pier_name("c1");
    let i: Value = serde_json::from_str(&w.host.pier_ok(&["inspect", &n1])).unwrap();
    let nets = i[0]["NetworkSettings"]["Networks"].as_object().unwrap();
    let e = nets.values().next().unwrap();
    assert_eq!(e["GlobalIPv6Address"], "fd97::2", "{e}");
    assert_eq!(e["GlobalIPv6PrefixLen"], 64, "{e}");
    assert_eq!(e["IPv6Gateway"], "fd97::1", "{e}");

    let (ns1, ns2, ns3) = (d.netns_of("c1"), d.netns_of("c2"), d.netns_of("c3"));
    // Within the network over IPv6, the client's address kept; from the
    // host (the gateway); IPv4 as before.
    let srv = v6::tcp_server(&ns2, 8080, 2);
    assert_eq!(
        v6::seen_from(&ns1, None, "[fd97::3]:8080", patience).expect("c1 → c2 over IPv6"),
        "fd97::2"
    );
    assert_eq!(
        v6::seen_from(&w.host_ns(), None, "[fd97::3]:8080", patience).expect("host → c2"),
        "fd97::1"
    );
    srv.join().unwrap();
    let usrv = v6::udp_server(&ns2, 8081);
    assert_eq!(
        v6::udp_ask(&ns1, "[fd97::3]:8081").expect("UDP over IPv6"),
        "fd97::2"
    );
    usrv.join().unwrap();
    assert!(ping(&ns1, "fd97::3"), "ICMPv6 within the network");
    let srv4 = tcp_server(&ns2, 8082, 1);
    let a = tcp_ask(&ns1, "10.97.0.3:8082", "v4").expect("IPv4 within the network");
    assert_eq!(a.seen_ip(), "10.97.0.2");
    srv4.join().unwrap();
    // An address Docker did not give is dropped (anti-spoofing).
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns1.display()))
        .args([
            "--",
            "ip",
            "-6",
            "addr",
            "add",
            "fd97::99/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let _srv = v6::tcp_server(&ns2, 8083, 1);
    assert!(
        v6::seen_from(&ns1, Some("fd97::99"), "[fd97::3]:8083", Duration::ZERO).is_err(),
        "a spoofed IPv6 source got through"
    );
    // Two pier networks are isolated over IPv6: TCP, UDP, ICMPv6.
    let _srv = v6::tcp_server(&ns1, 8084, 1);
    assert!(
        v6::seen_from(&ns3, None, "[fd97::2]:8084", Duration::ZERO).is_err(),
        "TCP over IPv6 crossed networks"
    );
    let _usrv = v6::udp_server(&ns1, 8085);
    assert!(
        v6::udp_ask(&ns3, "[fd97::2]:8085").is_err(),
        "UDP over IPv6 crossed networks"
    );
    assert!(!ping(&ns3, "fd97::2"), "ICMPv6 crossed networks");
    // connect gives c3 an eth1 with both families on v6net.
    d.ok(&["network", "connect", "v6net", "c3"]);
    let c3v6 = ip6_of("c3", "v6net");
    assert!(c3v6.starts_with("fd97::"), "{c3v6}");
    let out = d.ok(&["exec", "c3", "ip", "-6", "addr", "show", "eth1"]);
    assert!(out.contains(&format!("{c3v6}/64")), "{out}");
    let srv = v6::tcp_server(&ns1, 8086, 1);
    assert_eq!(
        v6::seen_from(&ns3, None, "[fd97::2]:8086", patience).expect("after connect"),
        c3v6
    );
    srv.join().unwrap();
    d.ok(&["network", "disconnect", "v6net", "c3"]);
    assert!(!ping(&ns3, "fd97::2"), "disconnected, still reaches v6net");
    // rm -f gives Docker's addresses back: a new container gets c1's.
    d.ok(&["rm", "-f", "c1"]);
    w.run("c4", &["--network", "v6net"]);
    assert_eq!(ip6_of("c4", "v6net"), "fd97::2");
    // Bad input: a pool pier holds, --ipv6 without an IPv6 pool (Docker's
    // IPAM has no default one, or pier refuses it), one error, nothing left.
    let before = w.host.pier_ok(&["network", "ls"]);
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "pier",
        "--ipv6",
        "--subnet",
        "10.99.0.0/24",
        "--subnet",
        "fd99::/64",
        "bad1",
    ]);
    assert!(e.contains("overlap"), "{e}");
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "pier",
        "--ipv6",
        "--subnet",
        "10.99.0.0/24",
        "bad2",
    ]);
    assert!(e.to_lowercase().contains("ipv6"), "{e}");
    assert_eq!(w.host.pier_ok(&["network", "ls"]), before);
    d.ok(&["rm", "-f", "c2", "c3", "c4"]);
    for n in ["v6net", "v6other"] {
        d.ok(&["network", "rm", n]);
    }
    let left = w.host.host(&["ip", "-6", "-o", "addr", "show"]);
    assert!(
        !left.contains("fd97::") && !left.contains("fd98::"),
        "{left}"
    );
    w.assert_firewalls_untouched();
}

/// `-p` on a dual-stack container through Docker: `pier port` shows a row
/// per family; the host reaches the port over IPv6 on `[::1]` and the
/// network's IPv6 gateway (the socket hooks), an IPv6 host IP binds that
/// address only (TCP and UDP), IPv4 from outside as before; an IPv6 host
/// IP on a network without IPv6 fails `docker run` with one error and
/// leaves nothing.
#[test]
fn ipv6_host_ips_and_dual_stack_ports_through_the_driver() {
    require_dockerd!();
    let w = World::new(&[]);
    let d = &w.docker;
    let patience = Duration::from_secs(4);
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--ipv6",
        "--subnet",
        "10.95.0.0/24",
        "--subnet",
        "fd95::/64",
        "p6",
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.94.0.0/24",
        "p4",
    ]);
    w.run(
        "web",
        &[
            "--network",
            "p6",
            "-p",
            "8080:80",
            "-p",
            "[::1]:8081:81",
            "-p",
            "[fd95::1]:8082:82/udp",
        ],
    );
    let web = d.netns_of("web");
    let name = w.pier_name("web");
    let ports = w.host.pier_ok(&["port", &name]);
    assert_eq!(
        ports,
        "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n81/tcp -> [::1]:8081\n82/udp -> [fd95::1]:8082\n"
    );
    let host = w.host_ns();
    // 8080: both families; from the host over IPv6, seen from the gateway.
    let srv = v6::tcp_server(&web, 80, 2);
    for dst in ["[::1]:8080", "[fd95::1]:8080"] {
        assert_eq!(
            v6::seen_from(&host, None, dst, patience).unwrap_or_else(|e| panic!("{dst}: {e}")),
            "fd95::1"
        );
    }
    srv.join().unwrap();
    let srv = tcp_server(&web, 80, 1);
    let a = tcp_ask(&w.outside_ns(), &format!("{HOST_UPLINK_IP}:8080"), "v4").expect("IPv4");
    assert_eq!(a.seen_ip(), OUTSIDE_IP, "{a:?}");
    srv.join().unwrap();
    // 8081 on [::1] only: the gateway address is not it.
    let srv = v6::tcp_server(&web, 81, 1);
    assert!(
        v6::seen_from(&host, None, "[fd95::1]:8081", Duration::ZERO).is_err(),
        "[::1]:8081 served on another address"
    );
    assert_eq!(
        v6::seen_from(&host, None, "[::1]:8081", patience).expect("[::1]:8081"),
        "fd95::1"
    );
    srv.join().unwrap();
    // UDP on the IPv6 gateway address.
    let usrv = v6::udp_server(&web, 82);
    assert_eq!(
        v6::udp_ask(&host, "[fd95::1]:8082").expect("udp [fd95::1]:8082"),
        "fd95::1"
    );
    usrv.join().unwrap();
    // Bad input: an IPv6 host IP on a network without IPv6.
    let before = (w.ps(), w.veths(), port_entries(&w.host.bpffs_dir));
    let e = d.fails(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "p4",
        "-p",
        "[::1]:9000:80",
        IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(e.contains("no IPv6 address"), "{e}");
    let _ = d.cmd(&["rm", "-f", "bad"]);
    assert_eq!((w.ps(), w.veths(), port_entries(&w.host.bpffs_dir)), before);
    d.ok(&["rm", "-f", "web"]);
    assert!(port_entries(&w.host.bpffs_dir).is_empty());
    for n in ["p6", "p4"] {
        d.ok(&["network", "rm", n]);
    }
    w.assert_firewalls_untouched();
}
