//! The source policy for IPv6 clients, through a real agent: an IPv6
//! allow-list on a dual-stack container's published ports serves its one
//! client address and drops the other's SYNs and datagrams, counted per port;
//! the longest prefix and deny-at-the-same-length hold across the port's and
//! the host-wide scopes; IPv4 clients of an IPv6-only allow-list are denied
//! (an allow-list lets in what it lists); the kernel holds each rule once, in
//! the IPv6 scope; bad IPv6 input changes nothing.
mod agent_util;
mod policy_util;

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, UdpSocket},
    path::Path,
    time::Duration,
};

use agent_util::*;
use pier_common::policy::{FAMILY_V6, POLICY_ALLOW, SCOPE_BITS};
use pier_tests::{TestHost, require_root};
use policy_util::*;
use serde_json::Value;

const HOST6: &str = "fd18::1";
const A6: &str = "fd18::2";
const B6: &str = "fd18::3";

/// TCP and UDP servers on `[::]:port` in `ns` answering `<peer ip>|<line>`,
/// left running until the test ends.
fn serve6(ns: &Path, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    spawn_in(ns, move || {
        let l = pier_tests::net::bind_retrying(|| TcpListener::bind(("::", port))).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(s) = s else { break };
            std::thread::spawn(move || {
                let peer = s.peer_addr().unwrap().ip();
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { break };
                    if writeln!(w, "{peer}|{line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    spawn_in(ns, move || {
        let u = pier_tests::net::bind_retrying(|| UdpSocket::bind(("::", port))).unwrap();
        tx2.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = u.recv_from(&mut buf) {
            let a = format!("{}|{}", peer.ip(), String::from_utf8_lossy(&buf[..n]));
            let _ = u.send_to(a.as_bytes(), peer);
        }
    });
    for _ in 0..2 {
        rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    }
}

/// A TCP connection from `src` to `[HOST6]:port` (one SYN retransmit), one
/// line asked: the address the server saw.
fn reach6(ns: &Path, src: &str, port: u16) -> std::io::Result<String> {
    let mut s = connect_inner(ns, src, &format!("[{HOST6}]:{port}"))?;
    let a = ask(&mut s, "hello")?;
    Ok(a.split('|').next().unwrap_or_default().to_string())
}

/// `n` datagrams from `src` to `[HOST6]:port`: how many were answered.
fn reach6_udp(ns: &Path, src: &str, port: u16, n: usize) -> usize {
    let src: SocketAddr = format!("[{src}]:0").parse().unwrap();
    let dst: SocketAddr = format!("[{HOST6}]:{port}").parse().unwrap();
    in_ns(ns, move || {
        let u = UdpSocket::bind(src).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2048];
        (0..n)
            .filter(|i| {
                u.send_to(format!("d{i}").as_bytes(), dst).unwrap();
                u.recv_from(&mut buf).is_ok()
            })
            .count()
    })
}

/// The `Denied` counter of the IPv6 row of host port `port`.
fn denied6(h: &TestHost, port: u16, proto: &str) -> u64 {
    h.pier_ok(&["stats", "--ports", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| {
            r["HostPort"] == port
                && r["Type"] == proto
                && r["HostIP"].as_str().is_some_and(|a| a.contains(':'))
        })
        .unwrap_or_else(|| panic!("no IPv6 stats row for {port}/{proto}"))["Denied"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_ipv6_allow_list_serves_its_client_and_drops_the_other_counted() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.host(&[
        "ip",
        "addr",
        "add",
        &format!("{HOST6}/64"),
        "dev",
        "uplink0",
        "nodad",
    ]);
    for a in [A6, B6] {
        h.outside(&[
            "ip",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
    }
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.82.0.0/24",
        "--subnet",
        "fd00:82::/64",
        "p6",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "p6",
        "-p",
        "8081:8080",
        "-p",
        "8083:8080/udp",
        "--publish-allow",
        &format!("{A6}/128"),
    ]);
    serve6(&s.ns_of("web"), 8080);
    let out = s.outside_ns();
    assert_eq!(reach6(&out, A6, 8081).expect("A6 over tcp"), A6);
    let e = reach6(&out, B6, 8081).expect_err("B6 over tcp: served");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    let tcp_denied = denied6(h, 8081, "tcp");
    assert!(tcp_denied >= 2, "{tcp_denied} SYNs of B6 counted");
    assert_eq!(reach6_udp(&out, A6, 8083, 3), 3);
    assert_eq!(reach6_udp(&out, B6, 8083, 5), 0);
    assert_eq!(denied6(h, 8083, "udp"), 5);
    // IPv4 clients are not in the list.
    assert!(
        reach_tcp(&out, A, &dst(8081)).is_err(),
        "IPv4 A reached an IPv6-only allow-list"
    );
    // The rule is in the kernel once per port, in the IPv6 scope (and not
    // in the IPv4 scope of the same ports).
    let e = policy_entries(&h.bpffs_dir);
    let v6: Vec<_> = e.iter().filter(|(_, k, _)| k.family == FAMILY_V6).collect();
    assert_eq!(v6.len(), 2, "{e:?}");
    let a6: std::net::Ipv6Addr = A6.parse().unwrap();
    assert!(v6.iter().all(|(len, k, v)| *len == SCOPE_BITS + 128
        && k.src == a6.octets()
        && v.action == POLICY_ALLOW));
    assert_eq!(e.len(), 2, "an IPv4 entry for an IPv6 rule: {e:?}");

    // Host-wide: a deny of A6 at the same length wins over the port's allow;
    // a longer-prefix allow for B6 there beats nothing (the port is still
    // allow-only for A6 and B6 matches the host's /128 allow: let in).
    h.pier_ok(&["policy", "deny", &format!("{A6}/128")]);
    reach6(&out, A6, 8081).expect_err("A6 after a host-wide deny");
    h.pier_ok(&["policy", "allow", &format!("{B6}/128")]);
    assert_eq!(
        reach6(&out, B6, 8081).expect("B6 with a host-wide allow"),
        B6
    );
    let rows = policy_rows(h);
    assert!(
        rows.iter()
            .any(|r| r["Source"] == format!("{A6}/128") && r["Action"] == "deny"),
        "{rows:?}"
    );
    h.pier_ok(&["policy", "rm", "--all"]);
    assert_eq!(reach6(&out, A6, 8081).expect("A6 again"), A6);

    // Bad IPv6 input: one error, nothing changed.
    let before = policy_entries(&h.bpffs_dir);
    for (args, want) in [
        (vec!["policy", "allow", "fd18::1/64"], "host bits are set"),
        (vec!["policy", "allow", "fd18::/129"], "invalid CIDR"),
        (vec!["policy", "deny", "fd18:::1"], "invalid CIDR"),
    ] {
        let o = h.pier(&args);
        assert!(!o.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(policy_entries(&h.bpffs_dir), before);
    h.pier_ok(&["rm", "-f", "web"]);
    assert!(policy_entries(&h.bpffs_dir).is_empty());
    s.assert_firewalls_untouched();
}
