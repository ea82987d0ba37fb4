//! Through a router: host — router (link MTU 1500, the route onwards 1280,
//! as a tunnel in the path makes it) — a far namespace. Nothing pier
//! translates black-holes: path MTU discovery works for masqueraded and
//! published TCP (2 MB each way), ICMP port unreachable reaches UDP senders
//! in both directions (ECONNREFUSED), datagrams larger than the MTU (IP
//! fragments) arrive whole in every translated direction, and a traceroute
//! shows pier's host and the router as hops. Netfilter stays untouched.
//!
//! Every case runs and reports; the test fails at the end if any failed.
//! `PIER_TEST_DATAPLANE_OBJECT=path.o` runs the same cases with another
//! build of the kernel programs (how the before/after notes were taken).
//! The same cases through iptables DNAT/MASQUERADE (conntrack: RELATED
//! errors, defragmentation) show that they are what a Docker host does.
mod dataplane_util;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane};
use pier_tests::{
    TestHost,
    host::{BEHIND_ROUTER_IP, HOST_UPLINK_IP, OUTSIDE_IP, ROUTER_FAR_IP, UPLINK, run_ok},
    net::{
        Hop, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMP_TIME_EXCEEDED, bind_retrying, tracepath,
    },
    require_root,
};

const TWO_MB: usize = 2 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

type Outcome = Result<String, String>;

/// A TCP server in `ns` on `port` for one connection: `send` bytes, or (0)
/// read to the end and answer with the count.
fn tcp_peer(ns: &str, port: u16, send: usize) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = bind_retrying(|| TcpListener::bind(("0.0.0.0", port))).expect("bind");
        tx.send(()).unwrap();
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        if send > 0 {
            let _ = s.write_all(&vec![0x5a; send]);
        } else {
            let mut n = 0;
            let mut buf = vec![0u8; 65536];
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            let _ = write!(s, "{n}");
        }
    });
    rx.recv_timeout(Duration::from_secs(4))
        .expect("server ready");
    h
}

/// From `ns`, send `up` bytes to `dst` and read the answer (a count), or
/// read everything `dst` sends.
fn tcp_transfer(ns: &str, dst: SocketAddr, up: usize) -> Outcome {
    TestHost::in_netns(ns, move || {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        if up > 0 {
            s.write_all(&vec![0xa5; up])
                .map_err(|e| format!("after {:?}: write: {e}", t.elapsed()))?;
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        s.read_to_end(&mut got)
            .map_err(|e| format!("after {:?}: read: {e} ({} bytes)", t.elapsed(), got.len()))?;
        let n = if up > 0 {
            String::from_utf8_lossy(&got).parse::<usize>().unwrap_or(0)
        } else {
            got.len()
        };
        if n != TWO_MB {
            return Err(format!("{n} of {TWO_MB} bytes after {:?}", t.elapsed()));
        }
        Ok(format!("{n} bytes in {} ms", t.elapsed().as_millis()))
    })
}

/// A UDP server in `ns` on `port` echoing `n` datagrams.
fn udp_echo(ns: &str, port: u16, n: usize) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let s = bind_retrying(|| UdpSocket::bind(("0.0.0.0", port))).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        for _ in 0..n {
            let Ok((len, peer)) = s.recv_from(&mut buf) else {
                return;
            };
            let _ = s.send_to(&buf[..len], peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(4))
        .expect("udp server ready");
    h
}

/// From `ns`, a `len`-byte datagram to `dst` and its echo back, compared.
fn udp_roundtrip(ns: &str, dst: SocketAddr, len: usize) -> Outcome {
    TestHost::in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.send(&data).map_err(|e| format!("send: {e}"))?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf).map_err(|e| format!("no echo: {e}"))?;
        if buf[..n] != data[..] {
            return Err(format!("echo of {n} bytes differs"));
        }
        Ok(format!("{len} bytes there and back"))
    })
}

/// From `ns`, a datagram to a closed port: the sender must see ECONNREFUSED.
fn udp_refused(ns: &str, dst: SocketAddr) -> Outcome {
    TestHost::in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let t = Instant::now();
        s.send(b"anyone?").map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Ok(format!("ECONNREFUSED after {} ms", t.elapsed().as_millis()))
            }
            Err(e) => Err(format!("{e} after {} ms", t.elapsed().as_millis())),
            Ok(n) => Err(format!("an answer of {n} bytes")),
        }
    })
}

fn show(hops: &[Hop]) -> String {
    hops.iter()
        .map(|h| match h.answer {
            Some((a, t, c)) => format!("{}: {a} (icmp {t}/{c})", h.ttl),
            None => format!("{}: *", h.ttl),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hops must be exactly `want` (address, ICMP type).
fn trace(ns: &str, dst: Ipv4Addr, port: u16, want: &[(Ipv4Addr, u8)]) -> Outcome {
    let hops = tracepath(ns, dst, port, 6);
    let got: Vec<Option<(Ipv4Addr, u8)>> = hops
        .iter()
        .map(|h| h.answer.map(|(a, t, _)| (a, t)))
        .collect();
    let ok = got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| *g == Some(*w))
        && hops.last().and_then(|h| h.answer).map(|a| a.2) == Some(ICMP_PORT_UNREACH);
    if ok {
        Ok(show(&hops))
    } else {
        Err(show(&hops))
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn sa(a: &str, port: u16) -> SocketAddr {
    SocketAddr::new(a.parse().unwrap(), port)
}

/// Every case, from the container `c1ns` (gateway `gateway`, publishing
/// 8081/tcp → 8080, 8083/udp → 9090 and 8084/udp → 9091, closed) and from
/// the far namespace `far`.
fn cases(far: &str, c1ns: &str, gateway: Ipv4Addr) -> Vec<(&'static str, Outcome)> {
    let mut r: Vec<(&str, Outcome)> = Vec::new();
    // Path MTU: the container's full-size segments need "fragmentation
    // needed" from the router, sent to the host's address.
    let s = tcp_peer(far, 7100, 0);
    r.push((
        "masqueraded 2 MB upload",
        tcp_transfer(c1ns, sa(BEHIND_ROUTER_IP, 7100), TWO_MB),
    ));
    let _ = s.join();
    let route = TestHost::cmd_in(c1ns, "ip")
        .args(["route", "get", BEHIND_ROUTER_IP])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " "))
        .unwrap_or_default();
    r.push((
        "the container's route cache learned mtu 1280",
        if route.contains("mtu 1280") {
            Ok(route)
        } else {
            Err(route)
        },
    ));
    let s = tcp_peer(far, 7101, TWO_MB);
    r.push((
        "masqueraded 2 MB download",
        tcp_transfer(c1ns, sa(BEHIND_ROUTER_IP, 7101), 0),
    ));
    let _ = s.join();
    // The container forgets what it learned, so the published port has to
    // learn the path MTU itself.
    let _ = TestHost::cmd_in(c1ns, "ip")
        .args(["route", "flush", "cache"])
        .status();
    let s = tcp_peer(c1ns, 8080, TWO_MB);
    r.push((
        "published port serving 2 MB to a client behind the 1280 hop",
        tcp_transfer(far, sa(HOST_UPLINK_IP, 8081), 0),
    ));
    let _ = s.join();

    // Port unreachable, both ways.
    r.push((
        "UDP from the container to a closed port outside",
        udp_refused(c1ns, sa(BEHIND_ROUTER_IP, 7200)),
    ));
    r.push((
        "UDP from outside to a closed published port",
        udp_refused(far, sa(HOST_UPLINK_IP, 8084)),
    ));

    // Datagrams larger than the MTU travel as IP fragments.
    let e = udp_echo(c1ns, 9090, 2);
    for (name, len) in [
        ("3000-byte datagram to a published port and its reply", 3000),
        ("8000-byte datagram to a published port and its reply", 8000),
    ] {
        r.push((name, udp_roundtrip(far, sa(HOST_UPLINK_IP, 8083), len)));
    }
    let _ = e.join();
    let e = udp_echo(far, 7300, 2);
    for (name, len) in [
        ("3000-byte datagram out through masquerade and back", 3000),
        ("8000-byte datagram out through masquerade and back", 8000),
    ] {
        r.push((name, udp_roundtrip(c1ns, sa(BEHIND_ROUTER_IP, 7300), len)));
    }
    let _ = e.join();
    let big_ping = TestHost::cmd_in(c1ns, "ping")
        .args(["-c1", "-W3", "-s", "3000", "-M", "dont", BEHIND_ROUTER_IP])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    r.push((
        "3000-byte ping out through masquerade and its reply",
        match big_ping.lines().find(|l| l.contains("bytes from")) {
            Some(l) => Ok(l.to_string()),
            None => Err(big_ping.replace('\n', " ")),
        },
    ));

    // The host is a hop: time exceeded from it (from the gateway towards the
    // container, from the uplink address towards the outside).
    r.push((
        "tracepath from the container",
        trace(
            c1ns,
            ip(BEHIND_ROUTER_IP),
            33434,
            &[
                (gateway, ICMP_TIME_EXCEEDED),
                (ip(OUTSIDE_IP), ICMP_TIME_EXCEEDED),
                (ip(BEHIND_ROUTER_IP), ICMP_DEST_UNREACH),
            ],
        ),
    ));
    r.push((
        "tracepath from outside to a published port",
        trace(
            far,
            ip(HOST_UPLINK_IP),
            8084,
            &[
                (ip(ROUTER_FAR_IP), ICMP_TIME_EXCEEDED),
                (ip(HOST_UPLINK_IP), ICMP_TIME_EXCEEDED),
                (ip(HOST_UPLINK_IP), ICMP_DEST_UNREACH),
            ],
        ),
    ));
    r
}

/// Print every outcome; the names of the failed cases.
fn report(who: &str, results: &[(&'static str, Outcome)]) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for (name, outcome) in results {
        match outcome {
            Ok(o) => eprintln!("{who}: ok    {name}: {o}"),
            Err(e) => {
                eprintln!("{who}: FAIL  {name}: {e}");
                failed.push(*name);
            }
        }
    }
    failed
}

/// A router world: host with c1 on 10.108.0.0/24, the far namespace.
fn router_world() -> (World, String, Container, pier_agent::dataplane::NetworkSpec) {
    let mut w = World::new(false);
    let far = w.host.add_behind_router("far", 1280);
    let net = w.network(1, "10.108.0.0/24");
    let c1 = w.container("c1", &net, "10.108.0.2");
    (w, far, c1, net)
}

#[test]
fn through_a_router_with_a_1280_hop_nothing_black_holes() {
    require_root!();
    let (w, far, c1, net) = router_world();
    let desired = w.desired(vec![
        tcp(8081, c1.ip, 8080),
        udp(8083, c1.ip, 9090),
        udp(8084, c1.ip, 9091),
    ]);
    let cfg = w.config();
    let object = std::env::var_os("PIER_TEST_DATAPLANE_OBJECT")
        .map(|p| std::fs::read(p).expect("read PIER_TEST_DATAPLANE_OBJECT"));
    let (results, drops) = TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        if let Some(o) = object {
            dp = dp.with_object(o);
        }
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let r = cases(&far, &c1.ns, net.gateway.unwrap());
        let drops = dp.drop_counts().unwrap();
        dp.remove_all().unwrap();
        (r, drops)
    });
    let failed = report("pier", &results);
    eprintln!(
        "pier: drops {:?}",
        drops
            .iter()
            .filter(|(_, c)| c.packets > 0)
            .map(|(r, c)| (r, c.packets))
            .collect::<Vec<_>>()
    );
    w.assert_firewalls_untouched();
    assert!(failed.is_empty(), "failed: {failed:?}");
}

#[test]
fn the_same_cases_through_iptables_nat_for_comparison() {
    require_root!();
    let (w, far, c1, net) = router_world();
    let hns = w.host.host_ns.clone();
    let ipt = |args: &[&str]| {
        run_ok(TestHost::cmd_in(&hns, "iptables").args(args));
    };
    let c1ip = c1.ip.to_string();
    for (proto, port, to) in [
        ("tcp", "8081", "8080"),
        ("udp", "8083", "9090"),
        ("udp", "8084", "9091"),
    ] {
        ipt(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            HOST_UPLINK_IP,
            "-p",
            proto,
            "--dport",
            port,
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{c1ip}:{to}"),
        ]);
    }
    ipt(&[
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.108.0.0/24",
        "-o",
        UPLINK,
        "-j",
        "MASQUERADE",
    ]);
    run_ok(TestHost::cmd_in(&hns, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
    let results = cases(&far, &c1.ns, net.gateway.unwrap());
    let failed = report("iptables", &results);
    // (The rules live and die with the test's host namespace.)
    w.assert_machine_firewall_untouched();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
