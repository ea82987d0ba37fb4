//! Isolation in eBPF: different pier networks cannot reach each other (a
//! container on both reaches both), `--internal` networks have no way out,
//! and `enable_icc=false` separates the containers of a network while
//! publishing keeps working.
mod dataplane_util;

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane};
use pier_common::drop::DropReason;
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};

#[test]
fn networks_are_isolated_and_a_container_on_both_reaches_both() {
    require_root!();
    let mut w = World::new(false);
    let n1 = w.network(1, "10.96.0.0/24");
    let n2 = w.network(2, "10.97.0.0/24");
    let c1 = w.container("c1", &n1, "10.96.0.2");
    let c2 = w.container("c2", &n2, "10.97.0.2");
    let c3 = w.container("c3", &n1, "10.96.0.3");
    let c3b = w.connect(&c3.ns.clone(), "c3b", "eth1", &n2, "10.97.0.3");
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let _t1 = tcp_server(&c1.ns, 8080, 1);
        let _t2 = tcp_server(&c2.ns, 8080, 1);
        let _u1 = udp_server(&c1.ns, 9090, 1);
        let _u2 = udp_server(&c2.ns, 9090, 1);
        // Either direction, TCP, UDP, ICMP.
        for (from, to) in [(&c1, &c2), (&c2, &c1)] {
            let e = tcp_ask(&from.ns, &format!("{}:8080", to.ip), "x").expect_err("tcp across");
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            udp_ask(&from.ns, None, &format!("{}:9090", to.ip), "x").expect_err("udp across");
            assert!(!ping(&from.ns, &to.ip.to_string()), "ping across");
        }
        assert!(drops(&dp, DropReason::Isolation) >= 6);
        // c3 is on both networks: it reaches c1 on n1 and c2 on n2.
        let t1 = tcp_server(&c1.ns, 8081, 1);
        let t2 = tcp_server(&c2.ns, 8081, 1);
        let a = tcp_ask(&c3.ns, &format!("{}:8081", c1.ip), "n1").expect("c3 -> c1");
        assert_eq!(peer_ip(&a), c3.ip.to_string());
        let b = tcp_ask(&c3.ns, &format!("{}:8081", c2.ip), "n2").expect("c3 -> c2");
        assert_eq!(peer_ip(&b), c3b.ip.to_string());
        assert!(ping(&c3.ns, &c1.ip.to_string()) && ping(&c3.ns, &c2.ip.to_string()));
        t1.join().unwrap();
        t2.join().unwrap();
        // c1 cannot sneak into n2 with an n2 source address of its own making.
        pier_tests::host::sh(&[
            "ip",
            "-n",
            &c1.ns,
            "addr",
            "add",
            "10.97.0.50/32",
            "dev",
            "eth0",
        ]);
        let _u = udp_server(&c2.ns, 9091, 1);
        udp_ask(
            &c1.ns,
            Some("10.97.0.50:0"),
            &format!("{}:9091", c2.ip),
            "spoof",
        )
        .expect_err("a spoofed source gets through");
        assert!(drops(&dp, DropReason::Spoofed) >= 1);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn an_internal_network_has_no_way_out_and_no_published_ports() {
    require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.98.0.0/24");
    w.networks[0].internal = true;
    let c1 = w.container("c1", &n, "10.98.0.2");
    let c2 = w.container("c2", &n, "10.98.0.3");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        assert!(
            dp.port_entries().unwrap().is_empty(),
            "internal: no entries"
        );
        let _s = tcp_server(&c1.ns, 8080, 1);
        let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "in").expect_err("published");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let _o = tcp_server(&out, 7000, 1);
        let e = tcp_ask(&c1.ns, &format!("{OUTSIDE_IP}:7000"), "out").expect_err("way out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(!ping(&c1.ns, OUTSIDE_IP));
        assert!(drops(&dp, DropReason::Internal) >= 2);
        // Inside the network, containers reach each other.
        let s = tcp_server(&c2.ns, 8080, 1);
        let a = tcp_ask(&c1.ns, &format!("{}:8080", c2.ip), "peer").expect("within");
        assert_eq!(peer_ip(&a), c1.ip.to_string());
        s.join().unwrap();
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn without_icc_containers_are_apart_but_publishing_works() {
    require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.99.0.0/24");
    w.networks[0].icc = false;
    let c1 = w.container("c1", &n, "10.99.0.2");
    let c2 = w.container("c2", &n, "10.99.0.3");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let _s2 = tcp_server(&c2.ns, 8080, 1);
        let e = tcp_ask(&c1.ns, &format!("{}:8080", c2.ip), "x").expect_err("icc off");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(!ping(&c2.ns, &c1.ip.to_string()));
        assert!(drops(&dp, DropReason::NoIcc) >= 2);
        let s1 = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "pub").expect("published");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s1.join().unwrap();
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
