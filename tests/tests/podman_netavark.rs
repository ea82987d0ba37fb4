//! Podman 4.3.1 rootful with its netavark backend, pier as `netavark`
//! (`helper_binaries_dir` of a test-only containers.conf), inside a
//! TestHost's host namespace: through a running agent (`pier ps` shows
//! podman's containers) and without one (the core in the shim's process).
//! `-p` from the outside with the client's address kept and from
//! 127.0.0.1, names through aardvark-dns, two isolated networks, `network
//! connect`, `rm -f` leaving nothing, no netfilter rule.
mod agent_util;

use std::path::{Path, PathBuf};

use agent_util::*;
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    net::firewall_snapshot,
    podman::{self, Podman},
    require_root,
};
use serde_json::Value;

macro_rules! require {
    () => {
        require_root!();
        if let Some(why) = podman::missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn pier_rows(sb: &Sandbox) -> Vec<Value> {
    sb.host
        .pier_ok(&["ps", "-a", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn links(h: &TestHost, prefix: &str) -> Vec<String> {
    h.host_link_names()
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// What the machine's own podman config dirs hold. An empty directory
/// counts as none: the harness makes `/run/containers/networks` as a mount
/// point while any podman test (of any test binary) runs, and the last one
/// removes it.
fn machine_podman_config() -> Vec<(PathBuf, Option<String>)> {
    ["/etc/containers/networks", "/run/containers/networks"]
        .iter()
        .map(|d| {
            let p = PathBuf::from(d);
            let listing = std::fs::read_dir(&p).ok().and_then(|rd| {
                let mut v: Vec<String> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                (!v.is_empty()).then(|| v.join(","))
            });
            (p, listing)
        })
        .collect()
}

fn ns(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// What both variants check; `agent`: the sandbox whose agent serves `h`.
fn podman_end_to_end(h: &TestHost, p: &Podman, agent: Option<&Sandbox>) {
    let fw = (firewall_snapshot(Some(&h.host_ns)), firewall_snapshot(None));
    let log = || agent.map(Sandbox::log).unwrap_or_default();
    p.ok(&["network", "create", "--subnet", "10.91.1.0/24", "n1"]);
    p.ok(&["network", "create", "--subnet", "10.91.2.0/24", "n2"]);
    let ns1 = p.run("web1", &["--network", "n1", "-p", "8081:8080"]);
    let ns2 = p.run("web2", &["--network", "n1"]);
    p.run("other", &["--network", "n2"]);
    let (ip1, ip2, ip3) = (
        p.ip_of("web1", "n1"),
        p.ip_of("web2", "n1"),
        p.ip_of("other", "n2"),
    );
    assert!(ip1.starts_with("10.91.1.") && ip2.starts_with("10.91.1."));
    assert!(ip3.starts_with("10.91.2."), "{ip3}");
    if let Some(sb) = agent {
        let rows = pier_rows(sb);
        assert_eq!(rows.len(), 3, "{rows:?}");
        let names: Vec<&str> = rows.iter().filter_map(|r| r["Names"].as_str()).collect();
        for n in ["web1", "web2", "other"] {
            assert!(names.contains(&n), "{names:?}");
        }
        let port = sb.host.pier_ok(&["port", "web1"]);
        assert!(port.contains("8080/tcp -> 0.0.0.0:8081"), "{port}");
    }
    // -p from the outside, the client's address kept; from the host itself.
    let srv = tcp_server(&ns1, 8080, 2);
    let a = tcp_ask(&ns(&h.outside_ns), &format!("{HOST_UPLINK_IP}:8081"), "out")
        .unwrap_or_else(|e| panic!("outside → 8081: {e}\n{}", log()));
    assert!(a.text.ends_with("|out"), "{a:?}");
    assert_eq!(a.seen_ip(), OUTSIDE_IP, "the server saw the real client");
    let a = tcp_ask(&ns(&h.host_ns), "127.0.0.1:8081", "local")
        .unwrap_or_else(|e| panic!("127.0.0.1:8081: {e}"));
    assert!(a.text.ends_with("|local"), "{a:?}");
    srv.join().unwrap();
    // The source policy holds for a podman-published port as for any other
    // (with an agent: `pier policy` is the agent's): a denied client gets
    // nothing, counted; removed, it is served again.
    if let Some(sb) = agent {
        let srv = tcp_server(&ns1, 8080, 1);
        sb.host.pier_ok(&[
            "policy",
            "deny",
            &format!("{OUTSIDE_IP}/32"),
            "--port",
            "8081",
        ]);
        let dst = format!("{HOST_UPLINK_IP}:8081");
        tcp_ask(&ns(&h.outside_ns), &dst, "denied").expect_err("a denied client was served");
        let stats = sb.host.pier_ok(&["stats", "--ports", "--format", "json"]);
        let denied = stats
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["HostPort"] == 8081 && r["Type"] == "tcp")
            .and_then(|r| r["Denied"].as_u64());
        assert!(denied.is_some_and(|d| d >= 1), "{stats}");
        sb.host.pier_ok(&["policy", "rm", "--all"]);
        let a = tcp_ask(&ns(&h.outside_ns), &dst, "again").expect("served again");
        assert_eq!(a.seen_ip(), OUTSIDE_IP);
        srv.join().unwrap();
    }
    // Names: aardvark-dns on the gateway, configured as netavark does.
    let rc = p.ok(&["exec", "web1", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 10.91.1.1"), "{rc}");
    let conf = std::fs::read_to_string(p.netavark_config().join("aardvark-dns/n1")).unwrap();
    assert_eq!(conf.lines().next(), Some("10.91.1.1"), "{conf}");
    assert_eq!(conf.lines().count(), 3, "{conf}");
    let out = p.ok(&["exec", "web1", "nslookup", "web2"]);
    assert!(out.contains(&ip2), "{out}");
    let out = p.ok(&["exec", "web2", "nslookup", "web1.dns.podman"]);
    assert!(out.contains(&ip1), "{out}");
    // Isolation: same network reaches, the other does not.
    assert!(
        p.cmd(&["exec", "web1", "ping", "-c1", "-W1", &ip2])
            .status
            .success()
    );
    assert!(
        !p.cmd(&["exec", "other", "ping", "-c1", "-W1", &ip1])
            .status
            .success()
    );
    // network connect: other gets eth1 on n1 and reaches web1.
    p.ok(&["network", "connect", "n1", "other"]);
    let ip4 = p.ip_of("other", "n1");
    assert!(ip4.starts_with("10.91.1."), "{ip4}");
    assert!(
        p.cmd(&["exec", "other", "ping", "-c1", "-W1", &ip1])
            .status
            .success()
    );
    if let Some(sb) = agent {
        let i = sb.inspect("other");
        assert!(i["NetworkSettings"]["Networks"]["n1"].is_object(), "{i}");
    }
    p.ok(&["network", "disconnect", "n1", "other"]);
    assert!(
        !p.cmd(&["exec", "other", "ping", "-c1", "-W1", &ip1])
            .status
            .success()
    );
    // Refused: a host port another container publishes, and sctp (pier
    // publishes tcp and udp); nothing of theirs is left.
    let veths_before = links(h, "veth");
    let e = p.err(&[
        "run",
        "-d",
        "--name",
        "clash",
        "--network",
        "n1",
        "-p",
        "8081:8080",
        podman::IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(e.contains("8081"), "{e}");
    let e = p.err(&[
        "run",
        "-d",
        "--name",
        "sc",
        "--network",
        "n1",
        "-p",
        "9000:9000/sctp",
        podman::IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(e.contains("sctp"), "{e}");
    assert_eq!(
        links(h, "veth"),
        veths_before,
        "a refused container left a veth"
    );
    let _ = p.cmd(&["rm", "-f", "clash", "sc"]);
    if let Some(sb) = agent {
        assert_eq!(pier_rows(sb).len(), 3, "{:?}", pier_rows(sb));
    }
    // rm -f: veths, bridges, ports, records and DNS entries gone.
    p.ok(&["rm", "-f", "-t", "0", "web1", "web2", "other"]);
    assert!(links(h, "veth").is_empty(), "{:?}", links(h, "veth"));
    assert!(links(h, "podman").is_empty(), "{:?}", links(h, "podman"));
    assert!(!ns1.exists() && !ns2.exists());
    assert!(tcp_ask(&ns(&h.outside_ns), &format!("{HOST_UPLINK_IP}:8081"), "x").is_err());
    assert!(!p.netavark_config().join("aardvark-dns/n1").exists());
    if let Some(sb) = agent {
        assert!(pier_rows(sb).is_empty(), "{:?}", pier_rows(sb));
        assert!(sb.port_entries().is_empty(), "{:?}", sb.port_entries());
        // Every call (podman's cleanup process's too) went to the agent.
        assert!(!p.netavark_config().join("pier").exists());
    }
    assert_eq!(
        firewall_snapshot(Some(&h.host_ns)),
        fw.0,
        "host namespace firewall"
    );
    assert_eq!(firewall_snapshot(None), fw.1, "the machine's firewall");
}

#[test]
fn podman_netavark_through_the_agent() {
    require!();
    let before = machine_podman_config();
    let sb = Sandbox::new(&[]);
    let p = Podman::new(&sb.host, &sb.host.socket());
    podman_end_to_end(&sb.host, &p, Some(&sb));
    drop(p);
    assert_eq!(
        machine_podman_config(),
        before,
        "the machine's podman config changed"
    );
}

/// The pins the agentless core made for the test's host namespace.
struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // The root as well when this test's pins were all it held.
        if let Some(root) = self.0.parent() {
            let _ = std::fs::remove_dir(root);
        }
    }
}

#[test]
fn podman_netavark_without_an_agent() {
    require!();
    let before = machine_podman_config();
    let h = TestHost::new();
    // No agent here: the shim runs the core in its own process.
    let ino = pier_agent::netavark::netns_inode(&ns(&h.host_ns)).unwrap();
    let cookie = TestHost::in_netns(&h.host_ns, || {
        pier_agent::netavark::local::netns_cookie().unwrap()
    });
    let pins =
        Pins(Path::new(pier_agent::netavark::local::BPFFS_ROOT).join(format!("{ino}-{cookie}")));
    let p = Podman::new(&h, &h.dir.join("no-agent.sock"));
    podman_end_to_end(&h, &p, None);
    assert!(
        pins.0.exists(),
        "the dataplane is pinned under {}",
        pins.0.display()
    );
    drop(p);
    assert_eq!(
        machine_podman_config(),
        before,
        "the machine's podman config changed"
    );
}

#[test]
fn podman_dual_stack_and_ipv6_only_networks() {
    require!();
    let before = machine_podman_config();
    let mut host = TestHost::new();
    let agent = host.start_agent_logging(&[], "info,pier_agent::netavark=debug");
    let h = &host;
    let fw = (firewall_snapshot(Some(&h.host_ns)), firewall_snapshot(None));
    let p = Podman::new(h, &h.socket());
    h.wait_agent_ready();
    p.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.91.6.0/24",
        "--subnet",
        "fd91:6::/64",
        "d6",
    ]);
    // A v6 subnet alone (with `--ipv6` podman 4.3 adds an IPv4 one).
    p.ok(&["network", "create", "--subnet", "fd91:7::/64", "only6"]);
    let ns1 = p.run("a1", &["--network", "d6"]);
    p.run("a2", &["--network", "d6"]);
    let ns3 = p.run("b1", &["--network", "only6"]);
    let v6_of = |c: &str, net: &str| {
        p.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").GlobalIPv6Address}}}}"),
            c,
        ])
    };
    // podman's IPAM gave both families; pier put them on the interfaces.
    let (a1, a2, b1) = (v6_of("a1", "d6"), v6_of("a2", "d6"), v6_of("b1", "only6"));
    assert!(
        a1.starts_with("fd91:6::") && a2.starts_with("fd91:6::"),
        "{a1} {a2}"
    );
    assert!(b1.starts_with("fd91:7::"), "{b1}");
    assert!(p.ip_of("a1", "d6").starts_with("10.91.6."));
    assert_eq!(p.ip_of("b1", "only6"), "", "IPv6 only");
    let out = p.ok(&["exec", "a1", "ip", "-6", "route"]);
    assert!(out.contains("default via fd91:6::1"), "{out}");
    let out = p.ok(&["exec", "b1", "ip", "-4", "addr", "show", "eth0"]);
    assert!(!out.contains("inet "), "{out}");
    let i: Value =
        serde_json::from_str::<Value>(&h.pier_ok(&["inspect", "a1"])).unwrap()[0].clone();
    assert_eq!(
        i["NetworkSettings"]["Networks"]["d6"]["GlobalIPv6Address"],
        a1.as_str(),
        "{i}"
    );
    // IPv6 within d6 (ICMPv6, TCP with the client's address kept), names
    // through aardvark-dns (AAAA), none across to the IPv6-only network.
    assert!(
        p.cmd(&["exec", "a2", "ping", "-c1", "-W2", &a1])
            .status
            .success()
    );
    let srv = spawn_in(&ns1, || {
        use std::io::Write;
        let l = std::net::TcpListener::bind(("::", 8080)).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let _ = write!(s, "{}", peer.ip());
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = p.ok(&["exec", "a2", "nc", &a1, "8080"]);
    assert_eq!(out, a2, "the server saw the real client");
    srv.join().unwrap();
    let conf = std::fs::read_to_string(p.netavark_config().join("aardvark-dns/d6")).unwrap();
    assert_eq!(conf.lines().next(), Some("10.91.6.1,fd91:6::1"), "{conf}");
    let out = p.ok(&["exec", "a2", "nslookup", "-type=AAAA", "a1", "10.91.6.1"]);
    assert!(out.contains(&a1), "{out}");
    assert!(
        !p.cmd(&["exec", "b1", "ping", "-c1", "-W1", &a1])
            .status
            .success()
    );
    let _ = ns3;
    // Published ports on d6: no host IP both families, an IPv6 host IP
    // that address only; the host reaches them over IPv6 (`[::1]`, the
    // IPv6 gateway: the socket hooks), each client seen from the gateway.
    let nsw = p.run(
        "w6",
        &[
            "--network",
            "d6",
            "-p",
            "8090:80",
            "-p",
            "[fd91:6::1]:8091:81",
        ],
    );
    assert_eq!(
        h.pier_ok(&["port", "w6"]),
        "80/tcp -> 0.0.0.0:8090\n80/tcp -> [::]:8090\n81/tcp -> [fd91:6::1]:8091\n"
    );
    let serve6 = |port: u16| {
        let (tx, rx) = std::sync::mpsc::channel();
        let srv = spawn_in(&nsw, move || {
            use std::io::Write;
            let l = pier_tests::net::bind_retrying(|| std::net::TcpListener::bind(("::", port)))
                .unwrap();
            tx.send(()).unwrap();
            if let Ok((mut s, peer)) = l.accept() {
                let _ = write!(s, "{}", peer.ip());
            }
        });
        rx.recv_timeout(IO_TIMEOUT).expect("server ready");
        srv
    };
    let seen6 = |dst: &str| {
        let dst: std::net::SocketAddr = dst.parse().unwrap();
        in_ns(&ns(&h.host_ns), move || {
            use std::io::Read;
            let mut s =
                std::net::TcpStream::connect_timeout(&dst, std::time::Duration::from_secs(2))?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        })
    };
    for dst in ["[::1]:8090", "[fd91:6::1]:8090"] {
        let srv = serve6(80);
        let seen = seen6(dst).unwrap_or_else(|e| panic!("{dst}: {e}\n{}", agent.log()));
        assert_eq!(seen, "fd91:6::1", "{dst}");
        srv.join().unwrap();
    }
    let srv = serve6(81);
    seen6("[::1]:8091").expect_err("[fd91:6::1]:8091 served on [::1]");
    assert_eq!(
        seen6("[fd91:6::1]:8091").expect("[fd91:6::1]:8091"),
        "fd91:6::1"
    );
    srv.join().unwrap();
    // An IPv6 host IP on a network without IPv6: one error, nothing left.
    p.ok(&["network", "create", "--subnet", "10.91.8.0/24", "v4only"]);
    let rows_before = h.pier_ok(&["ps", "-a", "-q"]);
    let veths_before = links(h, "veth");
    let e = p.err(&[
        "run",
        "-d",
        "--name",
        "bad6",
        "--network",
        "v4only",
        "-p",
        "[::1]:9000:80",
        podman::IMAGE,
        "sleep",
        "3600",
    ]);
    assert!(e.contains("no IPv6 address"), "{e}");
    assert_eq!(h.pier_ok(&["ps", "-a", "-q"]), rows_before);
    assert_eq!(links(h, "veth"), veths_before);
    let _ = p.cmd(&["rm", "-f", "-t", "0", "bad6"]);
    p.ok(&["rm", "-f", "-t", "0", "a1", "a2", "b1", "w6"]);
    // podman's teardown of a killed container may come from its cleanup
    // process, just after `rm` returned.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let rows = || h.pier_ok(&["ps", "-a", "-q"]);
    while !rows().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        rows(),
        "",
        "{:?}\n{}",
        std::fs::read_dir(p.netavark_config())
            .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default(),
        agent.log()
    );
    assert!(links(h, "veth").is_empty(), "{:?}", links(h, "veth"));
    // Every call went through the agent: the shim never ran the core alone.
    assert!(!p.netavark_config().join("pier").exists());
    assert_eq!(firewall_snapshot(Some(&h.host_ns)), fw.0);
    assert_eq!(firewall_snapshot(None), fw.1);
    drop(p);
    assert_eq!(machine_podman_config(), before);
}
