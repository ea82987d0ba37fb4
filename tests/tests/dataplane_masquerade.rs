//! Masquerade: containers reach the outside with the uplink's address and a
//! source port allocated in eBPF; replies come back. And exposure: only
//! published ports are reachable from outside, with or without netfilter.
mod dataplane_util;

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane};
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP, sh},
    net::firewall_snapshot,
    require_root,
};

#[test]
fn containers_reach_the_outside_with_the_uplink_address_tcp_udp_icmp() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.93.0.0/24");
    let c1 = w.container("c1", &net, "10.93.0.2");
    let c2 = w.container("c2", &net, "10.93.0.3");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let server = format!("{OUTSIDE_IP}:7000");

        // TCP: two containers, the same source port, the same server.
        let s = tcp_server(&out, 7000, 2);
        let a1 = tcp_ask_from(&c1.ns, 40000, &server, "c1").expect("c1 tcp");
        let a2 = tcp_ask_from(&c2.ns, 40000, &server, "c2").expect("c2 tcp");
        assert!(a1.ends_with("|c1") && a2.ends_with("|c2"), "{a1} {a2}");
        let peers = s.join().unwrap();
        assert_eq!(peers.len(), 2);
        for p in &peers {
            assert_eq!(p.ip().to_string(), HOST_UPLINK_IP, "server saw {p}");
            assert!(p.port() >= 61000, "allocated port {p}");
        }
        assert_ne!(peers[0].port(), peers[1].port(), "two flows, two ports");

        // UDP: likewise.
        let u = udp_server(&out, 7001, 2);
        let server = format!("{OUTSIDE_IP}:7001");
        let b1 = udp_ask(&c1.ns, Some("0.0.0.0:40001"), &server, "u1").expect("c1 udp");
        let b2 = udp_ask(&c2.ns, Some("0.0.0.0:40001"), &server, "u2").expect("c2 udp");
        assert!(b1.ends_with("|u1") && b2.ends_with("|u2"), "{b1} {b2}");
        let peers = u.join().unwrap();
        assert_eq!(peers.len(), 2);
        assert!(peers.iter().all(|p| p.ip().to_string() == HOST_UPLINK_IP));
        assert_ne!(peers[0].port(), peers[1].port());

        // ICMP echo: the outside has no route to 10.93.0.0/24, so an answer
        // proves the request left with the uplink's address.
        assert!(ping(&c1.ns, OUTSIDE_IP), "c1 pings the outside");
        assert!(ping(&c2.ns, OUTSIDE_IP), "c2 pings the outside");
        let counts = dp.ct_counts().unwrap();
        // 2 TCP + 2 UDP + 2 ICMP flows, each with both directions recorded.
        assert_eq!(counts.snat_fwd, 6, "{counts:?}");
        assert_eq!(counts.snat_rev, 6, "{counts:?}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn without_masquerade_the_container_address_is_kept() {
    require_root!();
    let mut w = World::new(false);
    let mut net = w.network(1, "10.94.0.0/24");
    net.masquerade = false;
    w.networks[0].masquerade = false;
    let c1 = w.container("c1", &net, "10.94.0.2");
    let out = w.host.outside_ns.clone();
    // The outside routes the container subnet back via the host.
    sh(&[
        "ip",
        "-n",
        &out,
        "route",
        "add",
        "10.94.0.0/24",
        "via",
        HOST_UPLINK_IP,
    ]);
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let s = tcp_server(&out, 7000, 1);
        let a = tcp_ask(&c1.ns, &format!("{OUTSIDE_IP}:7000"), "plain").expect("routed");
        assert_eq!(peer_ip(&a), "10.94.0.2", "{a}");
        assert_eq!(s.join().unwrap()[0].ip().to_string(), "10.94.0.2");
        // The flow is recorded unchanged, so its replies pass the uplink.
        let counts = dp.ct_counts().unwrap();
        assert_eq!((counts.snat_fwd, counts.snat_rev), (1, 1), "{counts:?}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn only_published_ports_are_exposed_and_netfilter_does_not_matter() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.95.0.0/24");
    let c1 = w.container("c1", &net, "10.95.0.2");
    let out = w.host.outside_ns.clone();
    let hns = w.host.host_ns.clone();
    // The outside has a route to the container subnet via the host.
    sh(&[
        "ip",
        "-n",
        &out,
        "route",
        "add",
        "10.95.0.0/24",
        "via",
        HOST_UPLINK_IP,
    ]);
    // Netfilter in the host namespace: flushed, and FORWARD dropping.
    sh(&["ip", "netns", "exec", &hns, "iptables", "-F"]);
    sh(&["ip", "netns", "exec", &hns, "nft", "flush", "ruleset"]);
    sh(&[
        "ip", "netns", "exec", &hns, "iptables", "-P", "FORWARD", "DROP",
    ]);
    let fw_set = firewall_snapshot(Some(&hns));
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    TestHost::in_netns(&hns, || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // The container listens on 8080 (published) and 9000 (not).
        let s = tcp_server(&c1.ns, 8080, 1);
        let _s9 = tcp_server(&c1.ns, 9000, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "pub").expect("published");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s.join().unwrap();
        // Directly: neither the published container port nor another one.
        let _s = tcp_server(&c1.ns, 8080, 1);
        for dst in ["10.95.0.2:8080", "10.95.0.2:9000"] {
            let e = tcp_ask(&out, dst, "direct").expect_err(dst);
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{dst}: {e}");
        }
        assert!(
            !ping(&out, "10.95.0.2"),
            "the container address answers ping"
        );
        // An unpublished port on the host address is not forwarded anywhere.
        let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:9000"), "x").expect_err("9000");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let drops = dp.drop_counts().unwrap();
        let not_published = drops
            .iter()
            .find(|(r, _)| *r == pier_common::drop::DropReason::NotPublished)
            .unwrap()
            .1;
        assert!(not_published.packets >= 3, "{drops:?}");
        dp.remove_all().unwrap();
    });
    assert_eq!(
        firewall_snapshot(Some(&hns)),
        fw_set,
        "pier changed netfilter"
    );
    w.assert_machine_firewall_untouched();
}
