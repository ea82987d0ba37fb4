//! Network options through the CLI and the agent: `enable_icc=false`,
//! `enable_ip_masquerade=false`, `--internal`, isolation between networks and
//! a container connected to two (`pier network connect`).
mod agent_util;

use agent_util::*;
use pier_tests::{
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};

/// Nothing answered: the attempt failed (timed out or was refused).
fn unreachable_tcp(from: &std::path::Path, dst: &str) -> bool {
    tcp_ask(from, dst, "x").is_err()
}

fn unreachable_udp(from: &std::path::Path, dst: &str) -> bool {
    udp_ask(from, dst, "x").is_err()
}

#[test]
fn icc_off_keeps_containers_apart_while_publishing_works() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.61.0.0/24",
        "noicc",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "noicc",
        "-p",
        "8081:8080",
    ]);
    h.pier_ok(&["run", "-d", "--name", "b", "--network", "noicc"]);
    let (a, b) = (s.ns_of("a"), s.ns_of("b"));
    let (ip_a, ip_b) = (s.ip_of("a", "noicc"), s.ip_of("b", "noicc"));
    // TCP, UDP and ICMP, either direction, with servers that would answer.
    blocked(&b, &a, ip_a, "b→a");
    blocked(&a, &b, ip_b, "a→b");
    let srv = tcp_server(&a, 8080, 2);
    // Published ports still work, from outside...
    let r = tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), "out").expect("outside");
    assert_eq!(r.seen_ip(), OUTSIDE_IP);
    // ...and the gateway (the host) still reaches its containers.
    let r = tcp_ask(&s.host_ns(), &format!("{ip_a}:8080"), "host").expect("host to container");
    assert_eq!(r.seen_ip(), "10.61.0.1");
    srv.join().unwrap();
    // The containers still get out (masquerade).
    let o = tcp_server(&s.outside_ns(), 7000, 1);
    let r = tcp_ask(&b, &format!("{OUTSIDE_IP}:7000"), "b out").expect("b to outside");
    assert_eq!(r.seen_ip(), HOST_UPLINK_IP);
    o.join().unwrap();
    s.assert_firewalls_untouched();
}

#[test]
fn masquerade_off_shows_the_container_address_outside() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "--subnet",
        "10.62.0.0/24",
        "plain",
    ]);
    h.pier_ok(&["network", "create", "--subnet", "10.63.0.0/24", "masq"]);
    h.pier_ok(&["run", "-d", "--name", "p", "--network", "plain"]);
    h.pier_ok(&["run", "-d", "--name", "m", "--network", "masq"]);
    let ip_p = s.ip_of("p", "plain").to_string();
    // The outside routes the unmasqueraded subnet back via the host.
    h.outside(&["ip", "route", "add", "10.62.0.0/24", "via", HOST_UPLINK_IP]);
    let out = s.outside_ns();
    let srv = tcp_server(&out, 7000, 2);
    let r = tcp_ask(&s.ns_of("p"), &format!("{OUTSIDE_IP}:7000"), "p").expect("p out");
    assert_eq!(r.seen_ip(), ip_p, "no address rewritten: {r:?}");
    let r = tcp_ask(&s.ns_of("m"), &format!("{OUTSIDE_IP}:7000"), "m").expect("m out");
    assert_eq!(r.seen_ip(), HOST_UPLINK_IP, "masqueraded: {r:?}");
    let peers = srv.join().unwrap();
    assert_eq!(peers[0].ip().to_string(), ip_p);
    let u = udp_server(&out, 7001, 1);
    let r = udp_ask(&s.ns_of("p"), &format!("{OUTSIDE_IP}:7001"), "u").expect("udp out");
    assert_eq!(r.seen_ip(), ip_p);
    u.join().unwrap();
    assert!(
        ping(&s.ns_of("p"), OUTSIDE_IP),
        "ICMP echo without masquerade"
    );
    s.assert_firewalls_untouched();
}

#[test]
fn internal_networks_have_no_way_out_and_no_published_ports() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.64.0.0/24",
        "inner",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "i1",
        "--network",
        "inner",
        "-p",
        "8087:8080",
    ]);
    h.pier_ok(&["run", "-d", "--name", "i2", "--network", "inner"]);
    let (i1, i2) = (s.ns_of("i1"), s.ns_of("i2"));
    let ip1 = s.ip_of("i1", "inner");
    // No map entry for a port of an internal network.
    assert_eq!(s.port_entries(), vec![]);
    let out = s.outside_ns();
    let o = tcp_server(&out, 7000, 1);
    let srv = tcp_server(&i1, 8080, 1);
    assert!(
        unreachable_tcp(&i1, &format!("{OUTSIDE_IP}:7000")),
        "tcp out"
    );
    assert!(
        unreachable_udp(&i1, &format!("{OUTSIDE_IP}:7001")),
        "udp out"
    );
    assert!(!ping(&i1, OUTSIDE_IP), "ping out");
    assert!(
        unreachable_tcp(&out, &format!("{HOST_UPLINK_IP}:8087")),
        "published port of an internal network reached"
    );
    // Inside the network they reach each other.
    let r = tcp_ask(&i2, &format!("{ip1}:8080"), "inside").expect("i2 to i1");
    assert_eq!(r.seen_ip(), s.ip_of("i2", "inner").to_string());
    srv.join().unwrap();
    // Unblock the outside server (nothing reached it) and check that.
    let _ = tcp_ask(&out, "127.0.0.1:7000", "done");
    assert_eq!(o.join().unwrap()[0].ip().to_string(), "127.0.0.1");
    s.assert_firewalls_untouched();
}

/// A TCP and a UDP server in `srv` (at `to`) get nothing from `from`: the
/// attempts fail, and the first peer each server sees is its own loopback.
fn blocked(from: &std::path::Path, srv: &std::path::Path, to: std::net::Ipv4Addr, what: &str) {
    let t = tcp_server(srv, 8080, 1);
    let u = udp_server(srv, 9090, 1);
    assert!(unreachable_tcp(from, &format!("{to}:8080")), "tcp {what}");
    assert!(unreachable_udp(from, &format!("{to}:9090")), "udp {what}");
    assert!(!ping(from, &to.to_string()), "icmp {what}");
    tcp_ask(srv, "127.0.0.1:8080", "done").expect("release tcp server");
    udp_ask(srv, "127.0.0.1:9090", "done").expect("release udp server");
    assert_eq!(
        t.join().unwrap()[0].ip().to_string(),
        "127.0.0.1",
        "tcp {what}"
    );
    assert_eq!(
        u.join().unwrap()[0].ip().to_string(),
        "127.0.0.1",
        "udp {what}"
    );
}

#[test]
fn networks_are_isolated_and_a_container_on_both_reaches_both() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.65.0.0/24", "n1"]);
    h.pier_ok(&["network", "create", "--subnet", "10.66.0.0/24", "n2"]);
    h.pier_ok(&["run", "-d", "--name", "a", "--network", "n1"]);
    h.pier_ok(&["run", "-d", "--name", "c", "--network", "n1"]);
    h.pier_ok(&["run", "-d", "--name", "b", "--network", "n2"]);
    let (a, b, c) = (s.ns_of("a"), s.ns_of("b"), s.ns_of("c"));
    let (ip_a, ip_b) = (s.ip_of("a", "n1"), s.ip_of("b", "n2"));
    blocked(&a, &b, ip_b, "a→b");
    blocked(&b, &a, ip_a, "b→a");
    // a joins n2 too: it reaches b, b reaches a's n2 address; c still not.
    h.pier_ok(&["network", "connect", "n2", "a"]);
    let ip_a2 = s.ip_of("a", "n2");
    let sb = tcp_server(&b, 8080, 1);
    let r = tcp_ask(&a, &format!("{ip_b}:8080"), "a on n2").expect("a to b");
    assert_eq!(r.seen_ip(), ip_a2.to_string());
    sb.join().unwrap();
    let ua = udp_server(&a, 9090, 1);
    let r = udp_ask(&b, &format!("{ip_a2}:9090"), "b to a").expect("b to a on n2");
    assert_eq!(r.seen_ip(), ip_b.to_string());
    ua.join().unwrap();
    assert!(ping(&b, &ip_a2.to_string()), "b pings a on n2");
    assert!(ping(&a, &ip_b.to_string()), "a pings b");
    blocked(&c, &b, ip_b, "c→b while a is on both");
    // Disconnecting restores the separation.
    h.pier_ok(&["network", "disconnect", "n2", "a"]);
    blocked(&a, &b, ip_b, "a→b after disconnect");
    s.assert_firewalls_untouched();
}
