//! Several uplinks: masquerade leaves by the uplink the host's route for the
//! destination picks, from that route's source address, per flow, and the
//! replies come back through it. The host here has `uplink0` (the outside,
//! 198.18.0.0/24) and `uplink1` (a `wan` namespace, 198.51.100.0/24) with the
//! default route via `uplink1`; servers sit behind each. The IPv6 twin:
//! fd18::/64 on `uplink0`, fd19::/64 on `uplink1` with the default IPv6
//! route, a dual-stack network's containers (TCP, UDP, ping6).
mod agent_util;

use agent_util::*;
use pier_tests::{TestHost, require_root};

const WAN_HOST: &str = "198.51.100.1";
const WAN_PEER: &str = "198.51.100.2";
/// A server beyond the wan side, reached by the host's default route only.
const FAR: &str = "192.0.2.1";

fn sh(ns: &str, args: &[&str]) {
    let out = TestHost::cmd_in(ns, args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn masquerade_leaves_by_the_uplink_its_route_picks() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    let wan = s.host.add_netns("wan");
    let hns = s.host.host_ns.clone();
    pier_tests::host::veth_between((&hns, "uplink1", WAN_HOST), (&wan, "eth0", WAN_PEER));
    sh(
        &wan,
        &["ip", "addr", "add", &format!("{FAR}/32"), "dev", "lo"],
    );
    sh(&wan, &["ip", "link", "set", "lo", "up"]);
    // The default route now leaves by uplink1 (the test's own namespace).
    sh(
        &hns,
        &[
            "ip", "route", "replace", "default", "via", WAN_PEER, "dev", "uplink1",
        ],
    );
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    s.agent = Some(s.host.start_agent(&["--uplink", "uplink1"]));
    s.host.wait_agent_ready();
    s.host.pier_ok(&["network", "create", "n1"]);
    for c in ["a", "b"] {
        s.host
            .pier_ok(&["run", "-d", "--name", c, "--network", "n1"]);
    }
    s.host.pier_ok(&["run", "-d", "--name", "d"]);
    let wan_ns = ns_path(&wan);
    for c in ["a", "b", "d"] {
        let ns = s.ns_of(c);
        // Behind uplink1 by the default route: from uplink1's address.
        let srv = tcp_server(&wan_ns, 9000, 1);
        let a = tcp_ask(&ns, &format!("{FAR}:9000"), c)
            .unwrap_or_else(|e| panic!("{c} to {FAR}: {e}\n{}", s.log()));
        assert_eq!(a.seen_ip(), WAN_HOST, "{c}: {a:?}");
        srv.join().unwrap();
        // On uplink0's link: from uplink0's address.
        let srv = tcp_server(&s.outside_ns(), 9000, 1);
        let a = tcp_ask(&ns, "198.18.0.2:9000", c).expect("outside");
        assert_eq!(a.seen_ip(), "198.18.0.1", "{c}: {a:?}");
        srv.join().unwrap();
        // UDP and ICMP the same way (UDP to the wan peer itself: a server
        // bound to 0.0.0.0 answers from its own address, not FAR's).
        let srv = udp_server(&wan_ns, 9001, 1);
        let a = udp_ask(&ns, &format!("{WAN_PEER}:9001"), c).expect("udp wan");
        assert!(a.text.starts_with(&format!("{WAN_HOST}:")), "{c}: {a:?}");
        srv.join().unwrap();
        let srv = udp_server(&s.outside_ns(), 9001, 1);
        let a = udp_ask(&ns, "198.18.0.2:9001", c).expect("udp outside");
        assert!(a.text.starts_with("198.18.0.1:"), "{c}: {a:?}");
        srv.join().unwrap();
        assert!(ping(&ns, FAR), "{c}: ping {FAR}");
        assert!(ping(&ns, WAN_PEER), "{c}: ping {WAN_PEER}");
        assert!(ping(&ns, "198.18.0.2"), "{c}: ping the outside");
    }
    // A route change applies to new flows: FAR by uplink0 now, where the
    // outside has it too.
    sh(
        &s.host.outside_ns,
        &["ip", "addr", "add", &format!("{FAR}/32"), "dev", "lo"],
    );
    sh(
        &hns,
        &[
            "ip",
            "route",
            "add",
            &format!("{FAR}/32"),
            "via",
            "198.18.0.2",
            "dev",
            "uplink0",
        ],
    );
    let srv = tcp_server(&s.outside_ns(), 9000, 1);
    let a = tcp_ask(&s.ns_of("a"), &format!("{FAR}:9000"), "moved").expect("far by uplink0");
    assert_eq!(a.seen_ip(), "198.18.0.1", "{a:?}");
    srv.join().unwrap();
    s.assert_firewalls_untouched();
}

const UP0_6: &str = "fd18::1";
const OUTSIDE6: &str = "fd18::2";
const WAN6_HOST: &str = "fd19::1";
const WAN6_PEER: &str = "fd19::2";
/// An IPv6 server beyond the wan side, reached by the default route only.
const FAR6: &str = "2001:db8:ff::1";

/// A server on `[::]:port` (TCP, or UDP with `udp`) in `ns` answering one
/// client with the address it saw.
fn server6(ns: &std::path::Path, port: u16, udp: bool) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        if udp {
            let s =
                pier_tests::net::bind_retrying(|| std::net::UdpSocket::bind(("::", port))).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        } else {
            let l = pier_tests::net::bind_retrying(|| std::net::TcpListener::bind(("::", port)))
                .unwrap();
            tx.send(()).unwrap();
            if let Ok((mut c, peer)) = l.accept() {
                let _ = write!(c, "{}", peer.ip());
            }
        }
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// The address the server at `dst` saw `ns` come from.
fn seen6(ns: &std::path::Path, dst: &str, udp: bool) -> std::io::Result<String> {
    use std::io::Read;
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    in_ns(ns, move || {
        if udp {
            let s = std::net::UdpSocket::bind("[::]:0")?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            s.send_to(b"?", dst)?;
            let mut buf = [0u8; 64];
            let (n, _) = s.recv_from(&mut buf)?;
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let mut s = std::net::TcpStream::connect_timeout(&dst, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// The IPv6 twin: `uplink0` (fd18::/64, the outside) and `uplink1`
/// (fd19::/64, the wan namespace, the default IPv6 route), containers on a
/// dual-stack network; each flow leaves from its route's uplink address.
#[test]
fn ipv6_masquerade_leaves_by_the_uplink_its_route_picks() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    let wan = s.host.add_netns("wan");
    let hns = s.host.host_ns.clone();
    let out = s.host.outside_ns.clone();
    pier_tests::host::veth_between((&hns, "uplink1", WAN_HOST), (&wan, "eth0", WAN_PEER));
    for (ns, addr, dev) in [
        (&hns, UP0_6, "uplink0"),
        (&out, OUTSIDE6, "eth0"),
        (&hns, WAN6_HOST, "uplink1"),
        (&wan, WAN6_PEER, "eth0"),
    ] {
        sh(
            ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ],
        );
    }
    sh(
        &wan,
        &["ip", "addr", "add", &format!("{FAR6}/128"), "dev", "lo"],
    );
    sh(&wan, &["ip", "link", "set", "lo", "up"]);
    sh(
        &hns,
        &[
            "ip", "-6", "route", "replace", "default", "via", WAN6_PEER, "dev", "uplink1",
        ],
    );
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    s.agent = Some(s.host.start_agent(&["--uplink", "uplink1"]));
    s.host.wait_agent_ready();
    s.host.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:81::/64",
        "n6",
    ]);
    for c in ["a", "b"] {
        s.host
            .pier_ok(&["run", "-d", "--name", c, "--network", "n6"]);
    }
    let wan_ns = ns_path(&wan);
    for c in ["a", "b"] {
        let ns = s.ns_of(c);
        for udp in [false, true] {
            // Behind uplink1 by the default route (UDP to the wan peer
            // itself: a server on `::` answers from its own address).
            let far = if udp { WAN6_PEER } else { FAR6 };
            let srv = server6(&wan_ns, 9000, udp);
            let a = seen6(&ns, &format!("[{far}]:9000"), udp)
                .unwrap_or_else(|e| panic!("{c} to {far} (udp {udp}): {e}\n{}", s.log()));
            srv.join().unwrap();
            assert_eq!(a, WAN6_HOST, "{c}, udp {udp}: from uplink1's address");
            // On uplink0's link: from uplink0's address.
            let srv = server6(&s.outside_ns(), 9000, udp);
            let a = seen6(&ns, &format!("[{OUTSIDE6}]:9000"), udp)
                .unwrap_or_else(|e| panic!("{c} to the outside (udp {udp}): {e}"));
            srv.join().unwrap();
            assert_eq!(a, UP0_6, "{c}, udp {udp}: from uplink0's address");
        }
        assert!(ping(&ns, FAR6), "{c}: ping {FAR6}");
        assert!(ping(&ns, OUTSIDE6), "{c}: ping the outside");
    }
    s.assert_firewalls_untouched();
}
