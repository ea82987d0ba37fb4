//! Publishing (`-p`) through the eBPF dataplane, driven directly: clients in
//! the outside namespace reach containers through the uplink, TCP and UDP,
//! side by side, ranges, host-address bindings, and the server sees the real
//! client address.
mod dataplane_util;

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, PortSpec, Proto};
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP, sh},
    require_root,
};

#[test]
fn published_tcp_and_udp_ports_reach_their_containers_with_the_client_address() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.88.0.0/16");
    let c1 = w.container("c1", &net, "10.88.0.2");
    let c2 = w.container("c2", &net, "10.88.0.3");
    let out = w.host.outside_ns.clone();
    let ports = vec![
        tcp(8081, c1.ip, 8080),
        tcp(8082, c2.ip, 8080),
        udp(8083, c1.ip, 9090),
    ];
    let desired = w.desired(ports);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");

        let s1 = tcp_server(&c1.ns, 8080, 1);
        let s2 = tcp_server(&c2.ns, 8080, 1);
        let u1 = udp_server(&c1.ns, 9090, 1);
        let a1 = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "to-c1").expect("8081");
        let a2 = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8082"), "to-c2").expect("8082");
        let a3 = udp_ask(&out, None, &format!("{HOST_UPLINK_IP}:8083"), "udp-c1").expect("8083");
        // The servers saw the outside address (no proxy, no SNAT on the way in).
        assert_eq!(peer_ip(&a1), OUTSIDE_IP, "{a1}");
        assert!(a1.ends_with("|to-c1"), "{a1}");
        assert_eq!(peer_ip(&a2), OUTSIDE_IP, "{a2}");
        assert!(a2.ends_with("|to-c2"), "{a2}");
        assert_eq!(peer_ip(&a3), OUTSIDE_IP, "{a3}");
        assert!(a3.ends_with("|udp-c1"), "{a3}");
        assert_eq!(s1.join().unwrap()[0].ip().to_string(), OUTSIDE_IP);
        assert_eq!(s2.join().unwrap()[0].ip().to_string(), OUTSIDE_IP);
        assert_eq!(u1.join().unwrap()[0].ip().to_string(), OUTSIDE_IP);

        // Each published port counted what it carried.
        let stats = dp.port_stats().unwrap();
        for s in &stats {
            assert!(s.packets >= 1, "{s:?}");
        }
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn a_thousand_port_range_works_on_its_first_and_last_port() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.89.0.0/24");
    let c1 = w.container("c1", &net, "10.89.0.2");
    let out = w.host.outside_ns.clone();
    let ports: Vec<PortSpec> = (0..1000u16)
        .map(|i| tcp(20000 + i, c1.ip, 30000 + i))
        .collect();
    let desired = w.desired(ports);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        assert_eq!(dp.port_entries().unwrap().len(), 1000);
        for (host_port, cont_port) in [(20000, 30000), (20999, 30999)] {
            let s = tcp_server(&c1.ns, cont_port, 1);
            let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:{host_port}"), "edge")
                .unwrap_or_else(|e| panic!("{host_port}: {e}"));
            assert_eq!(peer_ip(&a), OUTSIDE_IP, "{a}");
            assert!(a.ends_with("|edge"), "{a}");
            assert_eq!(s.join().unwrap().len(), 1);
        }
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn a_binding_to_one_host_address_answers_only_there() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.90.0.0/24");
    let c1 = w.container("c1", &net, "10.90.0.2");
    let out = w.host.outside_ns.clone();
    // A second host address on the uplink.
    sh(&[
        "ip",
        "-n",
        &w.host.host_ns,
        "addr",
        "add",
        "198.18.0.3/24",
        "dev",
        "uplink0",
    ]);
    let mut p = tcp(8084, c1.ip, 8080);
    p.host_ip = Some("198.18.0.3".parse().unwrap());
    let desired = w.desired(vec![p]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let s = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&out, "198.18.0.3:8084", "bound").expect("bound address");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s.join().unwrap();
        let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8084"), "other")
            .expect_err("the other host address must not answer");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn removing_a_container_or_publication_removes_its_map_entries() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.91.0.0/24");
    let c1 = w.container("c1", &net, "10.91.0.2");
    let c2 = w.container("c2", &net, "10.91.0.3");
    let out = w.host.outside_ns.clone();
    let full = w.desired(vec![
        tcp(8081, c1.ip, 8080),
        tcp(8082, c2.ip, 8080),
        udp(8082, c2.ip, 8080),
    ]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&full).expect("sync");
        let mut ports: Vec<(u16, u8)> = dp
            .port_entries()
            .unwrap()
            .iter()
            .map(|(k, _)| (u16::from_be(k.port_be), k.proto))
            .collect();
        ports.sort();
        assert_eq!(ports, vec![(8081, 6), (8082, 6), (8082, 17)]);
        assert_eq!(dp.endpoint_entries().unwrap().len(), 2);
        assert_eq!(dp.attached_veths(), vec!["vc1", "vc2"]);

        // c2 goes away with its publications.
        let mut less = full.clone();
        less.endpoints.retain(|e| e.ip == Some(c1.ip));
        less.ports
            .retain(|p| p.container_ip == std::net::IpAddr::V4(c1.ip));
        dp.sync(&less).expect("sync without c2");
        let ports: Vec<u16> = dp
            .port_entries()
            .unwrap()
            .iter()
            .map(|(k, _)| u16::from_be(k.port_be))
            .collect();
        assert_eq!(ports, vec![8081]);
        let eps: Vec<_> = dp
            .endpoint_entries()
            .unwrap()
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(eps, vec![c1.ip]);
        assert_eq!(dp.attached_veths(), vec!["vc1"]);
        // 8082 is no longer served.
        let _s2 = tcp_server(&c2.ns, 8080, 1);
        let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8082"), "x").expect_err("unpublished");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

        // The publication of c1 goes.
        less.ports.clear();
        dp.sync(&less).expect("sync without ports");
        assert!(dp.port_entries().unwrap().is_empty());
        dp.remove_all().unwrap();
    });
    assert!(!w.host.bpffs_dir.exists(), "remove_all left the pins");
    w.assert_firewalls_untouched();
}

#[test]
fn the_same_port_twice_or_a_port_held_by_a_host_process_is_refused() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.92.0.0/24");
    let c1 = w.container("c1", &net, "10.92.0.2");
    let c2 = w.container("c2", &net, "10.92.0.3");
    let cfg = w.config();
    let twice = w.desired(vec![tcp(8081, c1.ip, 8080), tcp(8081, c2.ip, 8080)]);
    let held = w.desired(vec![tcp(8081, c1.ip, 8080), tcp(8090, c2.ip, 8080)]);
    let ok = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8090, c2.ip, 8080)]);
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        let e = dp.sync(&twice).expect_err("same port twice");
        assert_eq!(e.to_string(), "port is already allocated: 0.0.0.0:8081/tcp");
        assert!(dp.port_entries().unwrap().is_empty(), "nothing half-made");

        // A host process listens on 8090/tcp.
        let listener = std::net::TcpListener::bind("0.0.0.0:8090").unwrap();
        let e = dp.sync(&held).expect_err("held by a host process");
        assert!(
            e.to_string()
                .starts_with("port is already allocated: 0.0.0.0:8090/tcp"),
            "{e}"
        );
        assert!(dp.port_entries().unwrap().is_empty(), "nothing half-made");
        // 8081 was not left reserved: a host process can take it.
        drop(std::net::TcpListener::bind("0.0.0.0:8081").expect("8081 free again"));
        drop(listener);

        // While published, the port is reserved against host processes.
        dp.sync(&ok).expect("sync");
        let e = std::net::TcpListener::bind("0.0.0.0:8081").expect_err("reserved");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        let e = std::net::UdpSocket::bind("0.0.0.0:8090").expect_err("reserved");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            ok.ports
                .iter()
                .all(|p| p.proto == Proto::Tcp || p.host_port == 8090)
        );
        dp.remove_all().unwrap();
        drop(std::net::TcpListener::bind("0.0.0.0:8081").expect("released"));
    });
    w.assert_firewalls_untouched();
}

#[test]
fn port_stats_count_exactly_what_each_published_port_carried() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let c1 = w.container("c1", &net, "10.107.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![udp(8083, c1.ip, 9090), udp(8084, c1.ip, 9091)]);
    let cfg = w.config();
    const N: usize = 25;
    const LEN: usize = 300;
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let u = udp_server(&c1.ns, 9090, N);
        pier_tests::net::send_udp(&out, &format!("{HOST_UPLINK_IP}:8083"), N, LEN);
        assert_eq!(u.join().unwrap().len(), N, "every datagram arrived");
        let stats = dp.port_stats().unwrap();
        assert_eq!(stats.len(), 2);
        let s8083 = stats.iter().find(|s| s.port.host_port == 8083).unwrap();
        let s8084 = stats.iter().find(|s| s.port.host_port == 8084).unwrap();
        assert_eq!(s8083.packets, N as u64);
        // Ethernet 14 + IPv4 20 + UDP 8 + payload, as seen on the uplink.
        assert_eq!(s8083.bytes, (N * (14 + 20 + 8 + LEN)) as u64);
        assert_eq!((s8084.packets, s8084.bytes), (0, 0));
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// A port's counter lives in a slot of `PIER_PORT_STATS` (a per-CPU array)
/// that its `PIER_PORTS` entry names: it keeps the slot, and its count,
/// across syncs and a restart of the dataplane on the same pins; a slot
/// freed by one sync is not given out by the same sync, and a port given
/// a used slot starts at zero.
#[test]
fn port_counters_keep_their_slot_and_a_reused_slot_starts_at_zero() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.113.0.0/24");
    let c1 = w.container("c1", &net, "10.113.0.2");
    let out = w.host.outside_ns.clone();
    let (a, b, c) = (
        udp(8083, c1.ip, 9090),
        udp(8084, c1.ip, 9091),
        udp(8085, c1.ip, 9092),
    );
    let cfg = w.config();
    const LEN: usize = 100;
    let bytes = |n: usize| (n * (14 + 20 + 8 + LEN)) as u64;
    let send = |port: u16, to: u16, n: usize| {
        let u = udp_server(&c1.ns, to, n);
        pier_tests::net::send_udp(&out, &format!("{HOST_UPLINK_IP}:{port}"), n, LEN);
        assert_eq!(
            u.join().unwrap().len(),
            n,
            "every datagram to {port} arrived"
        );
    };
    let s1 = w.desired(vec![a.clone(), b.clone()]);
    let s2 = w.desired(vec![b.clone()]);
    let s3 = w.desired(vec![b.clone(), c.clone()]);
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let counts = |dp: &EbpfDataplane| -> Vec<(u16, u64, u64)> {
            let mut v: Vec<_> = dp
                .port_stats()
                .unwrap()
                .iter()
                .map(|s| (s.port.host_port, s.packets, s.bytes))
                .collect();
            v.sort();
            v
        };
        let slot_of = |dp: &EbpfDataplane, port: u16| {
            dp.port_entries()
                .unwrap()
                .iter()
                .find(|(k, _)| u16::from_be(k.port_be) == port)
                .map(|(_, v)| v.slot)
                .unwrap()
        };
        let mut dp = EbpfDataplane::new(cfg.clone());
        dp.start().expect("start");
        dp.sync(&s1).expect("sync");
        let (sa, sb) = (slot_of(&dp, 8083), slot_of(&dp, 8084));
        assert_ne!(sa, sb);
        send(8083, 9090, 7);
        send(8084, 9091, 3);
        assert_eq!(counts(&dp), vec![(8083, 7, bytes(7)), (8084, 3, bytes(3))]);
        // 8083 goes and 8085 comes in one sync: 8085 gets neither slot.
        dp.sync(&s3).expect("sync: 8083 replaced by 8085");
        let sc = slot_of(&dp, 8085);
        assert!(sc != sa && sc != sb, "{sc} {sa} {sb}");
        assert_eq!(slot_of(&dp, 8084), sb, "8084 keeps its slot");
        assert_eq!(counts(&dp), vec![(8084, 3, bytes(3)), (8085, 0, 0)]);
        // 8085 goes, then 8083 comes back: the lowest free slot, 8083's
        // old one (7 packets in it), given zeroed.
        dp.sync(&s2).expect("sync: 8085 removed");
        dp.sync(&s1).expect("sync: 8083 back");
        assert_eq!(slot_of(&dp, 8083), sa.min(sc));
        assert_eq!(counts(&dp), vec![(8083, 0, 0), (8084, 3, bytes(3))]);
        send(8083, 9090, 2);
        // A new dataplane on the same pins: every port keeps its slot and
        // its count.
        drop(dp);
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("restart");
        assert_eq!(counts(&dp), vec![], "no port applied before the first sync");
        dp.sync(&s1).expect("sync after restart");
        assert_eq!(slot_of(&dp, 8084), sb);
        assert_eq!(counts(&dp), vec![(8083, 2, bytes(2)), (8084, 3, bytes(3))]);
        send(8084, 9091, 1);
        assert_eq!(counts(&dp), vec![(8083, 2, bytes(2)), (8084, 4, bytes(4))]);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn ten_thousand_published_ports_are_all_served() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.112.0.0/24");
    let c1 = w.container("c1", &net, "10.112.0.2");
    let c2 = w.container("c2", &net, "10.112.0.3");
    let out = w.host.outside_ns.clone();
    // 5000 ports to each container.
    let ports: Vec<PortSpec> = (0..10_000u16)
        .map(|i| {
            let c = if i % 2 == 0 { &c1 } else { &c2 };
            tcp(40000 + i, c.ip, 8080)
        })
        .collect();
    let desired = w.desired(ports);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        let t = std::time::Instant::now();
        dp.sync(&desired).expect("sync");
        eprintln!("sync of 10000 ports: {:?}", t.elapsed());
        assert_eq!(dp.port_entries().unwrap().len(), 10_000);
        for (port, c) in [(40000, &c1), (49999, &c2), (45001, &c2)] {
            let s = tcp_server(&c.ns, 8080, 1);
            let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:{port}"), "n").expect("served");
            assert_eq!(peer_ip(&a), OUTSIDE_IP);
            s.join().unwrap();
        }
        let t = std::time::Instant::now();
        dp.sync(&desired).expect("sync again");
        eprintln!("re-sync of 10000 ports: {:?}", t.elapsed());
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
