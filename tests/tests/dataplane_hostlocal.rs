//! Host-local clients through the cgroup socket hooks (`127.0.0.1:8081` and
//! the host's own address reach the container, getpeername/recvfrom show what
//! was dialled; sockets of other namespaces are left alone), the same over
//! IPv6 (`[::1]`, the host's IPv6 uplink address, the bridge's IPv6 gateway,
//! an address-bound port; v4-mapped addresses on an IPv6 socket as IPv4),
//! and hairpin: a container dialling the host's address on a published
//! port, its own or another container's.
mod dataplane_util;

use std::{os::unix::process::CommandExt, path::Path, process::Output};

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, PortSpec, Proto};
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, sh},
    require_root,
};

const CLIENT: &str = r#"
import socket, sys
kind, host, port, msg = sys.argv[1:5]
if kind == "tcp":
    s = socket.create_connection((host, int(port)), timeout=3)
    peer = s.getpeername()
    s.sendall((msg + "\n").encode())
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
else:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(msg.encode(), (host, int(port)))
    data, peer = s.recvfrom(4096)
if ":" in peer[0]:
    print(f"[{peer[0]}]:{peer[1]}")
else:
    print(f"{peer[0]}:{peer[1]}")
print(data.decode())
"#;

/// N short TCP connections, one after the other, each closed by the client.
const MANY: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    s = socket.create_connection((host, port), timeout=3)
    s.sendall(b"x\n")
    s.recv(100)
    s.close()
"#;

/// Run the Python client in namespace `ns`, as a member of `cgroup`.
fn client(ns: &str, cgroup: &Path, args: &[&str]) -> Output {
    python(ns, cgroup, CLIENT, args)
}

/// Run Python `code` in namespace `ns`, as a member of `cgroup`.
fn python(ns: &str, cgroup: &Path, code: &str, args: &[&str]) -> Output {
    let procs = cgroup.join("cgroup.procs");
    let mut c = TestHost::cmd_in(ns, "/usr/bin/python3");
    c.arg("-c").arg(code).args(args);
    // Join the cgroup between fork and exec: the hooks apply from then on.
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, "0"));
    }
    c.output().expect("spawn python3")
}

fn ok(o: &Output) -> (String, String) {
    assert!(
        o.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = out.lines();
    (
        lines.next().unwrap_or_default().to_string(),
        lines.next().unwrap_or_default().to_string(),
    )
}

#[test]
fn host_local_clients_reach_published_ports_through_socket_hooks() {
    require_root!();
    let mut w = World::new(true);
    let net = w.network(1, "10.100.0.0/24");
    let c1 = w.container("c1", &net, "10.100.0.2");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    let cfg2 = w.config();
    let cg = w.cgroup.clone().unwrap();
    let hns = w.host.host_ns.clone();
    let out = w.host.outside_ns.clone();
    let gw = net.gateway.unwrap().to_string();
    TestHost::in_netns(&hns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        for dialled in ["127.0.0.1", HOST_UPLINK_IP] {
            let s = tcp_server(&c1.ns, 8080, 1);
            let (peer, answer) = ok(&client(&hns, &cg, &["tcp", dialled, "8081", "hi"]));
            assert_eq!(
                peer,
                format!("{dialled}:8081"),
                "getpeername shows the dialled address"
            );
            // The container saw the host, from its gateway address.
            assert_eq!(peer_ip(&answer), gw, "{answer}");
            assert!(answer.ends_with("|hi"), "{answer}");
            assert_eq!(s.join().unwrap()[0].ip().to_string(), gw);
        }
        let u = udp_server(&c1.ns, 9090, 1);
        let (peer, answer) = ok(&client(&hns, &cg, &["udp", "127.0.0.1", "8083", "dgram"]));
        assert_eq!(peer, "127.0.0.1:8083", "recvfrom shows the dialled address");
        assert!(answer.ends_with("|dgram"), "{answer}");
        u.join().unwrap();
        // The clients have exited: the TCP sockets' translations went with
        // them (sock_release); the unconnected UDP socket's stays for the LRU.
        assert_eq!(dp.ct_counts().unwrap().sock_nat, 1);
        // Many short connections leave nothing behind either.
        let s = tcp_server(&c1.ns, 8080, 100);
        let many = python(&hns, &cg, MANY, &["127.0.0.1", "8081", "100"]);
        assert!(
            many.status.success(),
            "{}",
            String::from_utf8_lossy(&many.stderr)
        );
        assert_eq!(s.join().unwrap().len(), 100);
        assert_eq!(dp.ct_counts().unwrap().sock_nat, 1);

        // The same cgroup, another namespace: the hooks leave it alone (the
        // connect goes to that namespace's own loopback, where nothing listens).
        let o = client(&out, &cg, &["tcp", "127.0.0.1", "8081", "x"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ConnectionRefusedError"), "{err}");

        // A restarted dataplane takes the hooks over.
        drop(dp);
        let mut dp = EbpfDataplane::new(cfg2);
        dp.start().expect("restart");
        dp.sync(&desired).expect("sync");
        let s = tcp_server(&c1.ns, 8080, 1);
        let (peer, _) = ok(&client(&hns, &cg, &["tcp", "127.0.0.1", "8081", "again"]));
        assert_eq!(peer, "127.0.0.1:8081");
        s.join().unwrap();

        // Teardown detaches the hooks: nothing answers on 127.0.0.1:8081.
        dp.remove_all().unwrap();
        let o = client(&hns, &cg, &["tcp", "127.0.0.1", "8081", "x"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ConnectionRefusedError"), "{err}");
    });
    w.assert_firewalls_untouched();
}

/// The host's IPv6 address on the uplink (the test's own namespace).
const HOST6: &str = "fd18::1";

fn port6(proto: Proto, host_ip: Option<&str>, host_port: u16, to: &str, port: u16) -> PortSpec {
    PortSpec {
        host_ip: host_ip.map(|h| h.parse().unwrap()),
        proto,
        host_port,
        container_ip: to.parse().unwrap(),
        container_port: port,
        reserve: true,
    }
}

#[test]
fn host_local_ipv6_clients_reach_published_ports_through_socket_hooks() {
    require_root!();
    let mut w = World::new(true);
    let net = w.network(1, "10.104.0.0/24");
    let s6 = w.ipv6(1, "fd00:104::/64");
    let c1 = w.container("c1", &net, "10.104.0.2");
    w.ip6("vc1", "fd00:104::2", s6, true);
    let hns = w.host.host_ns.clone();
    sh(&[
        "ip",
        "-n",
        &hns,
        "addr",
        "add",
        &format!("{HOST6}/64"),
        "dev",
        "uplink0",
        "nodad",
    ]);
    let c6 = "fd00:104::2";
    let desired = w.desired(vec![
        // `-p 8081:8080 -p 8083:9090/udp` on a dual-stack container.
        tcp(8081, c1.ip, 8080),
        port6(Proto::Tcp, None, 8081, c6, 8080),
        udp(8083, c1.ip, 9090),
        port6(Proto::Udp, None, 8083, c6, 9090),
        // `-p [fd18::1]:8084:8080`: that address only.
        port6(Proto::Tcp, Some(HOST6), 8084, c6, 8080),
    ]);
    let cfg = w.config();
    let cg = w.cgroup.clone().unwrap();
    let out = w.host.outside_ns.clone();
    let gw6 = "fd00:104::1";
    let gw4 = net.gateway.unwrap().to_string();
    TestHost::in_netns(&hns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // Loopback, the uplink's address, the bridge's gateway; the bound
        // port on its address. getpeername shows what was dialled.
        for (dialled, port) in [("::1", 8081), (HOST6, 8081), (gw6, 8081), (HOST6, 8084)] {
            let s = tcp_server_on(&c1.ns, "::", 8080, 1);
            let o = client(&hns, &cg, &["tcp", dialled, &port.to_string(), "hi6"]);
            let (peer, answer) = ok(&o);
            assert_eq!(peer, format!("[{dialled}]:{port}"), "getpeername");
            // The container saw the host, from its IPv6 gateway address.
            assert_eq!(peer_ip(&answer), gw6, "{answer}");
            assert!(answer.ends_with("|hi6"), "{answer}");
            assert_eq!(s.join().unwrap()[0].ip().to_string(), gw6);
        }
        // The bound port is not on loopback: not translated, refused.
        let o = client(&hns, &cg, &["tcp", "::1", "8084", "x"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ConnectionRefusedError"), "{err}");
        // UDP: recvfrom shows the address the datagram was sent to.
        let u = udp_server_on(&c1.ns, "::", 9090, 1);
        let (peer, answer) = ok(&client(&hns, &cg, &["udp", "::1", "8083", "dgram6"]));
        assert_eq!(peer, "[::1]:8083", "recvfrom");
        assert_eq!(peer_ip(&answer), gw6, "{answer}");
        assert!(answer.ends_with("|dgram6"), "{answer}");
        u.join().unwrap();
        // v4-mapped on an IPv6 socket: the IPv4 port, shown back mapped.
        let s = tcp_server_on(&c1.ns, "::", 8080, 1);
        let (peer, answer) = ok(&client(
            &hns,
            &cg,
            &["tcp", "::ffff:127.0.0.1", "8081", "m"],
        ));
        assert_eq!(peer, "[::ffff:127.0.0.1]:8081", "getpeername, mapped");
        assert_eq!(peer_ip(&answer), format!("::ffff:{gw4}"), "{answer}");
        s.join().unwrap();
        let u = udp_server_on(&c1.ns, "::", 9090, 1);
        let (peer, answer) = ok(&client(
            &hns,
            &cg,
            &["udp", "::ffff:127.0.0.1", "8083", "mu"],
        ));
        assert_eq!(peer, "[::ffff:127.0.0.1]:8083", "recvfrom, mapped");
        assert!(answer.ends_with("|mu"), "{answer}");
        u.join().unwrap();
        // The TCP sockets' translations went with them (sock_release, both
        // maps); each unconnected UDP socket's stays for the LRU.
        let n = dp.ct_counts().unwrap();
        assert_eq!((n.sock_nat6, n.sock_nat), (1, 1), "{n:?}");
        // Many short connections leave nothing behind either.
        let s = tcp_server_on(&c1.ns, "::", 8080, 50);
        let many = python(&hns, &cg, MANY, &["::1", "8081", "50"]);
        assert!(
            many.status.success(),
            "{}",
            String::from_utf8_lossy(&many.stderr)
        );
        assert_eq!(s.join().unwrap().len(), 50);
        assert_eq!(dp.ct_counts().unwrap().sock_nat6, 1);

        // The same cgroup, another namespace: left alone (its own loopback).
        let o = client(&out, &cg, &["tcp", "::1", "8081", "x"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ConnectionRefusedError"), "{err}");

        // Teardown detaches the IPv6 hooks too.
        dp.remove_all().unwrap();
        let o = client(&hns, &cg, &["tcp", "::1", "8081", "x"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ConnectionRefusedError"), "{err}");
    });
    w.assert_firewalls_untouched();
}

#[test]
fn containers_reach_published_ports_on_the_host_address_hairpin() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.101.0.0/24");
    let n2 = w.network(2, "10.102.0.0/24");
    let c1 = w.container("c1", &net, "10.101.0.2");
    let c2 = w.container("c2", &net, "10.101.0.3");
    let c3 = w.container("c3", &n2, "10.102.0.2");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let dst = format!("{HOST_UPLINK_IP}:8081");
        // Another container of the same network, and one of another network:
        // the server sees the client container's address.
        for c in [&c2, &c3] {
            let s = tcp_server(&c1.ns, 8080, 1);
            let a = tcp_ask(&c.ns, &dst, "hairpin").expect("hairpin");
            assert_eq!(peer_ip(&a), c.ip.to_string(), "{a}");
            assert!(a.ends_with("|hairpin"));
            s.join().unwrap();
        }
        // Its own published port: served, seen from the gateway.
        let s = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&c1.ns, &dst, "self").expect("own port");
        assert_eq!(peer_ip(&a), net.gateway.unwrap().to_string(), "{a}");
        s.join().unwrap();
        // UDP hairpin.
        let u = udp_server(&c1.ns, 9090, 1);
        let a = udp_ask(&c2.ns, None, &format!("{HOST_UPLINK_IP}:8083"), "u").expect("udp");
        assert_eq!(peer_ip(&a), c2.ip.to_string(), "{a}");
        u.join().unwrap();
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn two_agents_hooked_on_one_cgroup_each_translate_only_their_own_namespace() {
    require_root!();
    let mut a = World::new(true);
    let mut b = World::new(false);
    let cg = a.cgroup.clone().unwrap();
    let na = a.network(1, "10.110.0.0/24");
    let ca = a.container("c1", &na, "10.110.0.2");
    let nb = b.network(1, "10.111.0.0/24");
    let cb = b.container("c1", &nb, "10.111.0.2");
    let da = a.desired(vec![tcp(8081, ca.ip, 8080)]);
    let db = b.desired(vec![tcp(8081, cb.ip, 8080)]);
    let cfg_a = a.config();
    let mut cfg_b = b.config();
    cfg_b.cgroup = Some(cg.clone());
    let (ha, hb) = (a.host.host_ns.clone(), b.host.host_ns.clone());
    let mut dpa = TestHost::in_netns(&ha, || {
        let mut dp = EbpfDataplane::new(cfg_a);
        dp.start().expect("start a");
        dp.sync(&da).expect("sync a");
        dp
    });
    let mut dpb = TestHost::in_netns(&hb, || {
        let mut dp = EbpfDataplane::new(cfg_b);
        dp.start().expect("start b");
        dp.sync(&db).expect("sync b");
        dp
    });
    for (ns, c, gw) in [
        (&ha, &ca, na.gateway.unwrap()),
        (&hb, &cb, nb.gateway.unwrap()),
    ] {
        let s = tcp_server(&c.ns, 8080, 1);
        let (peer, answer) = ok(&client(ns, &cg, &["tcp", "127.0.0.1", "8081", "who"]));
        assert_eq!(peer, "127.0.0.1:8081");
        // Served by this host's container: it saw this host's gateway.
        assert_eq!(peer_ip(&answer), gw.to_string(), "{answer}");
        s.join().unwrap();
    }
    TestHost::in_netns(&ha, || dpa.remove_all().unwrap());
    TestHost::in_netns(&hb, || dpb.remove_all().unwrap());
    a.assert_firewalls_untouched();
    b.assert_firewalls_untouched();
}
