//! IPv6 translation, the twins of the IPv4 publish/masquerade/ICMP families:
//! by `BPF_PROG_TEST_RUN` (every rewritten address, port and checksum, the
//! hop limit; ICMPv6 errors with their quoted packet; NDP and RAs untouched;
//! hairpin; two containers with the same source port) and with real traffic
//! between the test's namespaces (published ports from outside with the
//! client's address kept, TCP and UDP; masquerade of TCP, UDP and ping6 from
//! two containers with the same source port; a network without masquerade
//! routed; a full masquerade table refusing new flows, counted, keeping the
//! live ones). Later fragments follow their first (by test run, and 4000-byte
//! datagrams over 1280-MTU links both ways, byte-exact, as ip6tables NAT
//! does too).
mod dataplane_util;

use std::net::Ipv6Addr;

use dataplane_util::{pkt::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, PortSpec, Proto, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, host::sh};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

/// The outside's and the host's addresses on the uplink's link.
const OUTSIDE6: &str = "fd18::2";
const HOST6: &str = "fd18::1";

fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// IPv6 on the uplink's link, in the test's two namespaces.
fn uplink6(w: &World) {
    let (h, o) = (&w.host.host_ns, &w.host.outside_ns);
    sh(&[
        "ip",
        "-n",
        h,
        "addr",
        "add",
        &format!("{HOST6}/64"),
        "dev",
        "uplink0",
        "nodad",
    ]);
    sh(&[
        "ip",
        "-n",
        o,
        "addr",
        "add",
        &format!("{OUTSIDE6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
}

fn port6(proto: Proto, host_port: u16, to: Ipv6Addr, port: u16) -> PortSpec {
    PortSpec {
        host_ip: None,
        proto,
        host_port,
        container_ip: to.into(),
        container_port: port,
        reserve: true,
    }
}

/// `f` as sent by the container `c` (its MAC as the source).
fn from(c: &Container, mut f: Vec<u8>) -> Vec<u8> {
    f[6..12].copy_from_slice(&c.mac);
    f
}

fn ifindex_of(ns: &str, dev: &str) -> u32 {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

#[test]
fn ipv6_translation_by_test_run_keeps_every_checksum_right() {
    pier_tests::require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.110.0.0/24");
    let s6 = w.ipv6(1, "fd00:110::/64");
    let c1 = w.container("c1", &n, "10.110.0.2");
    w.ip6("vc1", "fd00:110::2", s6, true);
    w.container("c2", &n, "10.110.0.3");
    w.ip6("vc2", "fd00:110::3", s6, true);
    uplink6(&w);
    let c1_6: Ipv6Addr = "fd00:110::2".parse().unwrap();
    let ports = vec![
        // Both families on 8080, as `-p 8080:80` on a dual-stack container.
        tcp(8080, c1.ip, 80),
        port6(Proto::Tcp, 8080, c1_6, 80),
        port6(Proto::Udp, 5353, c1_6, 53),
    ];
    let desired = w.desired(ports);
    let cfg = w.config();
    let up_ifindex = ifindex_of(&w.host.host_ns, "uplink0");
    let (c1, c2) = (w.containers[0].clone(), w.containers[1].clone());
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let v1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let v2 = nix::net::if_::if_nametoindex("vc2").unwrap();
        let (out, host) = (a6(OUTSIDE6), a6(HOST6));
        let (k1, k2) = (c1_6.octets(), a6("fd00:110::3"));
        let gw = a6("fd00:110::1");
        let up = programs::UPLINK_IN;
        let veth = programs::VETH_IN;
        let run = |dp: &mut EbpfDataplane, prog: &str, f: &[u8], ifindex: u32| {
            dp.test_run(prog, f, ifindex).unwrap()
        };

        // Published TCP from outside: DNAT to the container, the client's
        // address kept, hop limit down by one, the frame to its MAC.
        let syn = frame6(
            TCP,
            out,
            host,
            &[],
            &tcp6(out, host, 40000, 8080, 0x02, b""),
        );
        let (v, f) = run(&mut dp, up, &syn, up_ifindex);
        assert_eq!(v, TC_ACT_REDIRECT, "published: redirected");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (out, k1, (40000, 80)));
        assert_eq!(ip.hop(), 63);
        assert!(ip.l4_ok(), "published: TCP checksum");
        assert_eq!(&f[0..6], &c1.mac, "to the container's MAC");
        // Its reply leaves as the published address and port.
        let synack = from(
            &c1,
            frame6(TCP, k1, out, &[], &tcp6(k1, out, 80, 40000, 0x12, b"")),
        );
        let (v, f) = run(&mut dp, veth, &synack, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "reply: redirected");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (host, out, (8080, 40000)));
        assert!(ip.l4_ok(), "reply: TCP checksum");
        // UDP likewise.
        let q = frame6(UDP, out, host, &[], &udp6(out, host, 41000, 5353, b"q"));
        let (v, f) = run(&mut dp, up, &q, up_ifindex);
        assert_eq!(v, TC_ACT_REDIRECT);
        let ip = ip6_of(&f);
        assert_eq!((ip.dst(), ip.ports()), (k1, (41000, 53)));
        assert!(ip.l4_ok(), "published: UDP checksum");
        let a = from(
            &c1,
            frame6(UDP, k1, out, &[], &udp6(k1, out, 53, 41000, b"answer")),
        );
        let (v, f) = run(&mut dp, veth, &a, v1);
        assert_eq!(v, TC_ACT_REDIRECT);
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.ports()), (host, (5353, 41000)));
        assert!(ip.l4_ok(), "reply: UDP checksum");
        // A port nobody published, and a container address, from outside.
        let other = frame6(
            TCP,
            out,
            host,
            &[],
            &tcp6(out, host, 40000, 9999, 0x02, b""),
        );
        assert_eq!(
            run(&mut dp, up, &other, up_ifindex),
            (TC_ACT_OK, other.clone())
        );
        let direct = frame6(TCP, out, k1, &[], &tcp6(out, k1, 40000, 80, 0x02, b""));
        assert_eq!(run(&mut dp, up, &direct, up_ifindex).0, 2, "NotPublished");

        // Masquerade: two containers from the same source port to one peer.
        let m1 = from(
            &c1,
            frame6(TCP, k1, out, &[], &tcp6(k1, out, 45000, 7000, 0x02, b"")),
        );
        let (v, f) = run(&mut dp, veth, &m1, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "masquerade: redirected");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (host, out, (45000, 7000)));
        assert!(ip.l4_ok(), "masquerade: TCP checksum");
        let m2 = from(
            &c2,
            frame6(TCP, k2, out, &[], &tcp6(k2, out, 45000, 7000, 0x02, b"")),
        );
        let (v, f) = run(&mut dp, veth, &m2, v2);
        assert_eq!(v, TC_ACT_REDIRECT);
        let ip = ip6_of(&f);
        let p2 = ip.ports().0;
        assert_eq!(ip.src(), host);
        assert_ne!(p2, 45000, "the second flow gets another port");
        assert!(ip.l4_ok());
        // Replies find their container.
        for (dport, to, port) in [(45000, k1, 45000), (p2, k2, 45000)] {
            let r = frame6(
                TCP,
                out,
                host,
                &[],
                &tcp6(out, host, 7000, dport, 0x12, b""),
            );
            let (v, f) = run(&mut dp, up, &r, up_ifindex);
            assert_eq!(v, TC_ACT_REDIRECT, "masquerade reply");
            let ip = ip6_of(&f);
            assert_eq!((ip.dst(), ip.ports()), (to, (7000, port)));
            assert!(ip.l4_ok(), "masquerade reply: TCP checksum");
        }
        // ICMPv6 echo through masquerade, and its reply.
        let ping = from(
            &c1,
            frame6(ICMPV6, k1, out, &[], &echo6(k1, out, 128, 0x4242)),
        );
        let (v, f) = run(&mut dp, veth, &ping, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "ping6: masqueraded");
        let ip = ip6_of(&f);
        let id = ip.ports().0;
        assert_eq!(ip.src(), host);
        assert!(ip.l4_ok(), "ping6: ICMPv6 checksum");
        let pong = frame6(ICMPV6, out, host, &[], &echo6(out, host, 129, id));
        let (v, f) = run(&mut dp, up, &pong, up_ifindex);
        assert_eq!(v, TC_ACT_REDIRECT, "pong: back in");
        let ip = ip6_of(&f);
        assert_eq!((ip.dst(), ip.ports().0), (k1, 0x4242));
        assert!(ip.l4_ok(), "pong: ICMPv6 checksum");

        // ICMPv6 errors through NAT: a router's packet too big about the
        // masqueraded flow goes to c1 with the quote translated back.
        let router = a6("fd18::99");
        let sent = frame6(
            TCP,
            host,
            out,
            &[],
            &tcp6(host, out, 45000, 7000, 0x10, b"data"),
        );
        let mut rest = 1280u32.to_be_bytes().to_vec();
        rest.extend_from_slice(&sent[14..]);
        let ptb = frame6(ICMPV6, router, host, &[], &icmp6(router, host, 2, 0, &rest));
        let (v, f) = run(&mut dp, up, &ptb, up_ifindex);
        assert_eq!(v, TC_ACT_REDIRECT, "packet too big: to the container");
        let (ip, q) = (ip6_of(&f), quoted6(&f));
        assert_eq!((ip.src(), ip.dst()), (router, k1));
        assert_eq!((q.src(), q.dst(), q.ports()), (k1, out, (45000, 7000)));
        assert!(ip.l4_ok(), "packet too big: ICMPv6 checksum");
        assert!(q.l4_ok(), "packet too big: quoted TCP checksum");
        // Destination unreachable about a published connection's reply.
        let sent = frame6(
            UDP,
            host,
            out,
            &[],
            &udp6(host, out, 5353, 41000, b"answer"),
        );
        let mut rest = vec![0u8; 4];
        rest.extend_from_slice(&sent[14..]);
        let unreach = frame6(ICMPV6, out, host, &[], &icmp6(out, host, 1, 4, &rest));
        let (v, f) = run(&mut dp, up, &unreach, up_ifindex);
        assert_eq!(v, TC_ACT_REDIRECT, "port unreachable: to the backend");
        let (ip, q) = (ip6_of(&f), quoted6(&f));
        assert_eq!(ip.dst(), k1);
        assert_eq!((q.src(), q.ports()), (k1, (53, 41000)));
        assert!(ip.l4_ok() && q.l4_ok(), "port unreachable: checksums");
        // Time exceeded from c1 about a packet of the published connection
        // it got: leaves from the published address, quoting it.
        let got = frame6(TCP, out, k1, &[], &tcp6(out, k1, 40000, 80, 0x10, b"x"));
        let mut rest = vec![0u8; 4];
        rest.extend_from_slice(&got[14..]);
        let te = from(
            &c1,
            frame6(ICMPV6, k1, out, &[], &icmp6(k1, out, 3, 0, &rest)),
        );
        let (v, f) = run(&mut dp, veth, &te, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "time exceeded: out");
        let (ip, q) = (ip6_of(&f), quoted6(&f));
        assert_eq!((ip.src(), q.dst(), q.ports()), (host, host, (40000, 8080)));
        assert!(ip.l4_ok() && q.l4_ok(), "time exceeded: checksums");
        // An error quoting nothing of pier's, to a container: forged.
        let bogus = frame6(TCP, k1, out, &[], &tcp6(k1, out, 1, 2, 0x10, b""));
        let mut rest = vec![0u8; 4];
        rest.extend_from_slice(&bogus[14..]);
        let forged = frame6(ICMPV6, out, k1, &[], &icmp6(out, k1, 1, 0, &rest));
        let before = drops(&dp, DropReason::IcmpForged);
        assert_eq!(run(&mut dp, up, &forged, up_ifindex).0, 2);
        assert_eq!(drops(&dp, DropReason::IcmpForged), before + 1);

        // Neighbour discovery and router advertisements on the uplink are
        // the host's: untouched.
        let sol = a6("ff02::1:ff00:1");
        let mut ns_body = vec![0u8; 4];
        ns_body.extend_from_slice(&host);
        let ns = frame6(ICMPV6, out, sol, &[], &icmp6(out, sol, 135, 0, &ns_body));
        assert_eq!(run(&mut dp, up, &ns, up_ifindex), (TC_ACT_OK, ns.clone()));
        let ll = a6("fe80::1");
        let all = a6("ff02::1");
        let ra = frame6(
            ICMPV6,
            ll,
            all,
            &[],
            &icmp6(ll, all, 134, 0, &[64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
        assert_eq!(run(&mut dp, up, &ra, up_ifindex), (TC_ACT_OK, ra.clone()));

        // Hairpin: c2 dials the published port on the host's address and
        // reaches c1 as itself; c1 dialling its own port sees the gateway.
        let h = from(
            &c2,
            frame6(TCP, k2, host, &[], &tcp6(k2, host, 46000, 8080, 0x02, b"")),
        );
        let (v, f) = run(&mut dp, veth, &h, v2);
        assert_eq!(v, TC_ACT_REDIRECT, "hairpin");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (k2, k1, (46000, 80)));
        assert!(ip.l4_ok());
        let back = from(
            &c1,
            frame6(TCP, k1, k2, &[], &tcp6(k1, k2, 80, 46000, 0x12, b"")),
        );
        let (v, f) = run(&mut dp, veth, &back, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "hairpin reply");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (host, k2, (8080, 46000)));
        assert!(ip.l4_ok());
        let own = from(
            &c1,
            frame6(TCP, k1, host, &[], &tcp6(k1, host, 47000, 8080, 0x02, b"")),
        );
        let (v, f) = run(&mut dp, veth, &own, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "own port");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (gw, k1, (47000, 80)));
        assert!(ip.l4_ok());
        let own_back = from(
            &c1,
            frame6(TCP, k1, gw, &[], &tcp6(k1, gw, 80, 47000, 0x12, b"")),
        );
        let (v, f) = run(&mut dp, veth, &own_back, v1);
        assert_eq!(v, TC_ACT_REDIRECT, "own port reply");
        let ip = ip6_of(&f);
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (host, k1, (8080, 47000)));
        assert!(ip.l4_ok());

        // Hop limit 1 towards a container: not forwarded.
        let mut low = syn.clone();
        low[14 + 7] = 1;
        let before = drops(&dp, DropReason::TtlExceeded);
        assert_eq!(run(&mut dp, up, &low, up_ifindex).0, 2);
        assert_eq!(drops(&dp, DropReason::TtlExceeded), before + 1);

        let c = dp.ct_counts().unwrap();
        assert!(c.ct6 >= 3 && c.snat_fwd6 >= 3 && c.snat_rev6 >= 3, "{c:?}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// Like `tcp_ask_from`, over IPv6.
fn tcp_ask6_from(ns: &str, src_port: u16, dst: &str, msg: &str) -> std::io::Result<String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn6, bind, connect, socket};
    use std::{
        io::{Read, Write},
        net::SocketAddrV6,
        os::fd::AsRawFd,
    };
    let dst: SocketAddrV6 = dst.parse().unwrap();
    let msg = msg.to_string();
    TestHost::in_netns(ns, move || {
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let src = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, src_port, 0, 0));
        bind(fd.as_raw_fd(), &src)?;
        connect(fd.as_raw_fd(), &SockaddrIn6::from(dst))?;
        let mut s = std::net::TcpStream::from(fd);
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(format!("{msg}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

#[test]
fn ipv6_publish_and_masquerade_with_real_traffic() {
    pier_tests::require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.111.0.0/24");
    let s6 = w.ipv6(1, "fd00:111::/64");
    let c1 = w.container("c1", &n, "10.111.0.2");
    w.ip6("vc1", "fd00:111::2", s6, true);
    let c2 = w.container("c2", &n, "10.111.0.3");
    w.ip6("vc2", "fd00:111::3", s6, true);
    // A network without masquerade: routed with its own addresses.
    let r = w.network(2, "10.112.0.0/24");
    let r6 = w.ipv6(2, "fd00:112::/64");
    w.networks[1].masquerade = false;
    let c3 = w.container("c3", &r, "10.112.0.2");
    w.ip6("vc3", "fd00:112::2", r6, true);
    uplink6(&w);
    let out = w.host.outside_ns.clone();
    // The outside routes the routed network's subnet back to the host.
    sh(&[
        "ip",
        "-n",
        &out,
        "-6",
        "route",
        "add",
        "fd00:112::/64",
        "via",
        HOST6,
    ]);
    for ns in [&c1.ns, &c2.ns, &c3.ns, &out] {
        wait_dad(ns);
    }
    let c1_6: Ipv6Addr = "fd00:111::2".parse().unwrap();
    let ports = vec![
        tcp(8080, c1.ip, 80),
        port6(Proto::Tcp, 8080, c1_6, 80),
        port6(Proto::Tcp, 8081, c1_6, 81),
        port6(Proto::Udp, 5353, c1_6, 53),
    ];
    let desired = w.desired(ports);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // Published ports from outside, side by side and on both families;
        // the server sees the client's own address.
        let srv = tcp_server_on(&c1.ns, "::", 80, 2);
        let a = tcp_ask(&out, &format!("[{HOST6}]:8080"), "v6").expect("v6 publish");
        assert_eq!(peer_ip(&a), OUTSIDE6, "{a}");
        let a = tcp_ask(&out, "198.18.0.1:8080", "v4").expect("v4 publish");
        assert!(
            a.starts_with("198.18.0.2:") || a.contains("198.18.0.2"),
            "{a}"
        );
        srv.join().unwrap();
        let srv = tcp_server_on(&c1.ns, "::", 81, 1);
        let a = tcp_ask(&out, &format!("[{HOST6}]:8081"), "side").expect("second port");
        assert_eq!(peer_ip(&a), OUTSIDE6);
        srv.join().unwrap();
        let u = udp_server_on(&c1.ns, "::", 53, 1);
        let a = udp_ask(&out, None, &format!("[{HOST6}]:5353"), "udp6").expect("udp publish");
        assert_eq!(peer_ip(&a), OUTSIDE6, "{a}");
        u.join().unwrap();
        // Each port counted in a slot of its own (`PIER_PORT_STAT6`): the
        // one datagram on the UDP port, the connections on the TCP ones.
        let slots: std::collections::BTreeSet<u32> = dp
            .port6_entries()
            .unwrap()
            .iter()
            .map(|(_, v)| v.slot)
            .collect();
        assert_eq!(slots.len(), 3, "{slots:?}");
        let stats = dp.port_stats().unwrap();
        let of = |port: u16, v6: bool| {
            let s = stats
                .iter()
                .find(|s| s.port.host_port == port && s.port.is_v6() == v6)
                .unwrap();
            (s.packets, s.bytes)
        };
        assert_eq!(of(5353, true).0, 1, "{stats:?}");
        // (Ethernet 14 + IPv6 40 + UDP 8 + "udp6".)
        assert_eq!(of(5353, true).1, 14 + 40 + 8 + 4, "{stats:?}");
        assert!(of(8081, true).0 >= 3, "{stats:?}");
        assert!(of(8080, true).0 >= 3, "{stats:?}");
        assert!(of(8080, false).0 >= 3, "{stats:?}");

        // Masquerade: two containers from the same source port; the peer
        // sees the host's address, on two ports.
        let s = tcp_server_on(&out, "::", 7000, 2);
        let a1 = tcp_ask6_from(&c1.ns, 40000, &format!("[{OUTSIDE6}]:7000"), "m1").expect("c1");
        let a2 = tcp_ask6_from(&c2.ns, 40000, &format!("[{OUTSIDE6}]:7000"), "m2").expect("c2");
        let peers = s.join().unwrap();
        assert_eq!(peer_ip(&a1), HOST6, "{a1}");
        assert_eq!(peer_ip(&a2), HOST6, "{a2}");
        assert_eq!(peers[0].port(), 40000, "the first keeps its port");
        assert_ne!(peers[0].port(), peers[1].port());
        let u = udp_server_on(&out, "::", 7001, 2);
        for c in [&c1, &c2] {
            let a = udp_ask(
                &c.ns,
                Some("[::]:40001"),
                &format!("[{OUTSIDE6}]:7001"),
                "u",
            )
            .expect("udp masquerade");
            assert_eq!(peer_ip(&a), HOST6);
        }
        let peers = u.join().unwrap();
        assert_ne!(peers[0].port(), peers[1].port());
        assert!(ping(&c1.ns, OUTSIDE6), "ping6 through masquerade");
        assert!(ping(&c2.ns, OUTSIDE6), "ping6 from the second container");

        // Routed (no masquerade): the peer sees the container's address.
        let s = tcp_server_on(&out, "::", 7002, 1);
        let a = tcp_ask(&c3.ns, &format!("[{OUTSIDE6}]:7002"), "routed").expect("routed");
        assert_eq!(peer_ip(&a), "fd00:112::2", "{a}");
        s.join().unwrap();
        assert!(ping(&c3.ns, OUTSIDE6), "ping6 routed");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The UDP datagram `udp` (header and payload, checksum over all of it)
/// from `src` to `dst` as two IPv6 fragments of datagram `id`: the first
/// carrying `at` bytes (a multiple of 8), the later one the rest.
fn fragments6(src: [u8; 16], dst: [u8; 16], id: u32, udp: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    let hdr = |offset: usize, more: bool| {
        let mut h = vec![UDP, 0];
        h.extend_from_slice(&(((offset / 8) as u16) << 3 | more as u16).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h
    };
    (
        frame6(44, src, dst, &hdr(0, true), &udp[..at]),
        frame6(44, src, dst, &hdr(at, false), &udp[at..]),
    )
}

/// Addresses of an IPv6 frame with one fragment header, and what follows it.
fn frag_view(f: &[u8]) -> ([u8; 16], [u8; 16], &[u8]) {
    let ip = ip6_of(f);
    assert_eq!(ip.next(), 44, "a fragment header");
    (ip.src(), ip.dst(), &f[14 + 40 + 8..])
}

/// The UDP checksum of the datagram the two translated fragments `a`, `b`
/// make is right for their (translated) addresses.
fn reassembled_ok(a: &[u8], b: &[u8]) -> bool {
    let (s, d, pa) = frag_view(a);
    let (s2, d2, pb) = frag_view(b);
    assert_eq!((s, d), (s2, d2), "both fragments got the same addresses");
    let whole = [pa, pb].concat();
    csum(&whole, pseudo6(&s, &d, UDP, whole.len())) == 0
}

#[test]
fn ipv6_later_fragments_follow_their_first_by_test_run() {
    pier_tests::require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.113.0.0/24");
    let s6 = w.ipv6(1, "fd00:113::/64");
    w.container("c1", &n, "10.113.0.2");
    w.ip6("vc1", "fd00:113::2", s6, true);
    uplink6(&w);
    let c1_6: Ipv6Addr = "fd00:113::2".parse().unwrap();
    let desired = w.desired(vec![port6(Proto::Udp, 5353, c1_6, 53)]);
    let cfg = w.config();
    let up_ifindex = ifindex_of(&w.host.host_ns, "uplink0");
    let c1 = w.containers[0].clone();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let v1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let (out, host, k1) = (a6(OUTSIDE6), a6(HOST6), c1_6.octets());
        let up = programs::UPLINK_IN;
        let veth = programs::VETH_IN;
        let body: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();

        // To a published port: both fragments DNATed into the container,
        // the client's address kept, the payload untouched.
        let q = udp6(out, host, 41000, 5353, &body);
        let (first, later) = fragments6(out, host, 7, &q, 256);
        let later_before = later.clone();
        let (v, f1) = dp.test_run(up, &first, up_ifindex).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "first fragment: into the container");
        assert_eq!(&frag_view(&f1).2[2..4], &53u16.to_be_bytes());
        let (v, f2) = dp.test_run(up, &later, up_ifindex).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "later fragment: follows its first");
        assert_eq!((frag_view(&f2).0, frag_view(&f2).1), (out, k1));
        assert_eq!(frag_view(&f2).2, &later_before[62..], "payload untouched");
        assert_eq!(&f2[0..6], &c1.mac, "to the container's MAC");
        assert_eq!(ip6_of(&f2).hop(), 63);
        assert!(reassembled_ok(&f1, &f2), "published: UDP checksum");

        // The container's fragmented answer leaves as the published port.
        let a = udp6(k1, out, 53, 41000, &body);
        let (first, later) = fragments6(k1, out, 8, &a, 320);
        let (v, f1) = dp.test_run(veth, &from(&c1, first), v1).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "answer's first fragment: out");
        let (v, f2) = dp.test_run(veth, &from(&c1, later), v1).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "answer's later fragment: out");
        assert_eq!((frag_view(&f2).0, frag_view(&f2).1), (host, out));
        assert_eq!(&frag_view(&f1).2[0..2], &5353u16.to_be_bytes());
        assert!(reassembled_ok(&f1, &f2), "answer: UDP checksum");

        // Masquerade: a fragmented datagram from the container leaves from
        // the host's address, its reply's fragments come back in.
        let m = udp6(k1, out, 42000, 7300, &body);
        let (first, later) = fragments6(k1, out, 9, &m, 256);
        let (v, f1) = dp.test_run(veth, &from(&c1, first), v1).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "masquerade: first fragment");
        let (v, f2) = dp.test_run(veth, &from(&c1, later), v1).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "masquerade: later fragment");
        assert_eq!(frag_view(&f2).0, host, "later fragment from the host");
        assert!(reassembled_ok(&f1, &f2), "masquerade: UDP checksum");
        let sport = u16::from_be_bytes([frag_view(&f1).2[0], frag_view(&f1).2[1]]);
        let r = udp6(out, host, 7300, sport, &body);
        let (first, later) = fragments6(out, host, 10, &r, 256);
        let (v, f1) = dp.test_run(up, &first, up_ifindex).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "masquerade reply: first fragment");
        let (v, f2) = dp.test_run(up, &later, up_ifindex).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "masquerade reply: later fragment");
        assert_eq!(frag_view(&f2).1, k1);
        assert!(reassembled_ok(&f1, &f2), "masquerade reply: UDP checksum");

        // A later fragment whose first was never seen: from the container
        // dropped (`FragNoFirst`), from outside to the host untouched (the
        // host stack's), to a container address dropped (`NotPublished`).
        let (_, orphan) = fragments6(k1, out, 11, &m, 256);
        let before = drops(&dp, DropReason::FragNoFirst);
        assert_eq!(dp.test_run(veth, &from(&c1, orphan), v1).unwrap().0, 2);
        assert_eq!(drops(&dp, DropReason::FragNoFirst), before + 1);
        let (_, orphan) = fragments6(out, host, 12, &q, 256);
        assert_eq!(
            dp.test_run(up, &orphan, up_ifindex).unwrap(),
            (TC_ACT_OK, orphan.clone())
        );
        let (_, orphan) = fragments6(out, k1, 13, &q, 256);
        assert_eq!(dp.test_run(up, &orphan, up_ifindex).unwrap().0, 2);
        // A new first fragment with a known key forgets what the old one
        // got: one to an unpublished port is not translated, nor are the
        // later fragments of its datagram.
        let other = udp6(out, host, 41000, 9999, &body);
        let (first, later) = fragments6(out, host, 7, &other, 256);
        assert_eq!(
            dp.test_run(up, &first, up_ifindex).unwrap(),
            (TC_ACT_OK, first.clone())
        );
        assert_eq!(
            dp.test_run(up, &later, up_ifindex).unwrap(),
            (TC_ACT_OK, later.clone()),
            "the old datagram's record is gone"
        );
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// A UDP server in `ns` on `[::]:port` echoing `n` datagrams; joins to the
/// peers it saw.
fn udp_echo6(ns: &str, port: u16, n: usize) -> std::thread::JoinHandle<Vec<std::net::SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        let s = pier_tests::net::bind_retrying(|| std::net::UdpSocket::bind(("::", port)))
            .expect("bind udp");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut peers = Vec::new();
        for _ in 0..n {
            let Ok((len, peer)) = s.recv_from(&mut buf) else {
                break;
            };
            let _ = s.send_to(&buf[..len], peer);
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(IO_TIMEOUT).expect("udp server ready");
    h
}

/// From `ns`, a `len`-byte datagram to `dst` and its echo, byte-exact.
fn udp_roundtrip6(ns: &str, dst: &str, len: usize) -> Result<(), String> {
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    TestHost::in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("[::]:0").unwrap();
        s.connect(dst).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.send(&data).map_err(|e| format!("send: {e}"))?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf).map_err(|e| format!("no echo: {e}"))?;
        if buf[..n] != data[..] {
            return Err(format!("the echo of {n} bytes differs"));
        }
        Ok(())
    })
}

/// A dual-stack network with container c1 (`fd00:114::2`) where every
/// link has a 1280-byte MTU (IPv6's minimum): each sender fragments a
/// 4000-byte datagram into four.
fn mtu1280_world() -> (World, Container) {
    let mut w = World::new(false);
    let n = w.network(1, "10.114.0.0/24");
    let s6 = w.ipv6(1, "fd00:114::/64");
    let c1 = w.container("c1", &n, "10.114.0.2");
    w.ip6("vc1", "fd00:114::2", s6, true);
    uplink6(&w);
    let (hns, out) = (w.host.host_ns.clone(), w.host.outside_ns.clone());
    for (ns, dev) in [
        (hns.as_str(), "uplink0"),
        (out.as_str(), "eth0"),
        (hns.as_str(), "vc1"),
        (c1.ns.as_str(), "eth0"),
    ] {
        sh(&["ip", "-n", ns, "link", "set", dev, "mtu", "1280"]);
    }
    for ns in [&c1.ns, &out] {
        wait_dad(ns);
    }
    (w, c1)
}

/// 4000 bytes from outside to `[HOST6]:5353` (→ c1's port 53) and back,
/// and from c1 to the outside's port 7300 and back, byte-exact; the
/// servers see the client's address and the host's.
fn large_datagrams_both_ways(c1: &Container, out: &str) {
    let srv = udp_echo6(&c1.ns, 53, 1);
    let r = udp_roundtrip6(out, &format!("[{HOST6}]:5353"), 4000);
    let peers = srv.join().unwrap();
    assert_eq!(r, Ok(()), "4000 bytes to a published port and back");
    assert_eq!(peers[0].ip().to_string(), OUTSIDE6, "client address kept");
    let srv = udp_echo6(out, 7300, 1);
    let r = udp_roundtrip6(&c1.ns, &format!("[{OUTSIDE6}]:7300"), 4000);
    let peers = srv.join().unwrap();
    assert_eq!(r, Ok(()), "4000 bytes out through masquerade and back");
    assert_eq!(peers[0].ip().to_string(), HOST6, "masqueraded");
}

/// The same datagrams through ip6tables DNAT and MASQUERADE instead of
/// pier (what a Docker host with `--ipv6` does: conntrack reassembles and
/// refragments): the same result, so pier's is the Docker behaviour.
#[test]
fn ipv6_datagrams_larger_than_the_mtu_arrive_whole_through_ip6tables_too() {
    pier_tests::require_root!();
    let (w, c1) = mtu1280_world();
    let hns = w.host.host_ns.clone();
    let rules = format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -d {HOST6}/128 -p udp -m udp --dport 5353 -j DNAT --to-destination [fd00:114::2]:53\n\
         -A POSTROUTING -s fd00:114::/64 ! -o br1 -j MASQUERADE\nCOMMIT\n"
    );
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &hns, "ip6tables-restore"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip6tables-restore");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip6tables-restore");
    large_datagrams_both_ways(&c1, &w.host.outside_ns);
    // (The rules live in the test's namespace, gone with it.)
    w.assert_machine_firewall_untouched();
}

#[test]
fn ipv6_datagrams_larger_than_the_mtu_arrive_whole_through_nat() {
    pier_tests::require_root!();
    let (w, c1) = mtu1280_world();
    let (hns, out) = (w.host.host_ns.clone(), w.host.outside_ns.clone());
    let c1_6: Ipv6Addr = "fd00:114::2".parse().unwrap();
    let desired = w.desired(vec![port6(Proto::Udp, 5353, c1_6, 53)]);
    let cfg = w.config();
    TestHost::in_netns(&hns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        large_datagrams_both_ways(&c1, &out);
        assert!(
            drops(&dp, DropReason::FragNoFirst) == 0 && drops(&dp, DropReason::NotPublished) == 0,
            "no fragment dropped"
        );
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The IPv6 twin of `dataplane_masquerade`'s full-table case: a full
/// `PIER_SNAT_*6` table (a plain hash) refuses new flows, each packet a
/// counted `NatExhausted` drop, keeps the live ones, and takes new flows
/// again once the gc retired the expired. (A table of 8.)
#[test]
fn a_full_ipv6_masquerade_table_drops_new_flows_counted_and_keeps_the_live_ones() {
    use pier_agent::dataplane::ebpf::CtTimeouts;
    use std::time::Duration;
    pier_tests::require_root!();
    const LEN: u16 = 8;
    let mut w = World::new(false);
    let n = w.network(1, "10.113.0.0/24");
    let s6 = w.ipv6(1, "fd00:113::/64");
    let c1 = w.container("c1", &n, "10.113.0.2");
    w.ip6("vc1", "fd00:113::2", s6, true);
    uplink6(&w);
    let out = w.host.outside_ns.clone();
    for ns in [&c1.ns, &out] {
        wait_dad(ns);
    }
    let desired = w.desired(vec![]);
    let cfg = w.config();
    let timeouts = CtTimeouts {
        udp: Duration::from_secs(2),
        ..CtTimeouts::default()
    };
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg)
            .with_ct_timeouts(timeouts)
            .with_snat_len(LEN.into());
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let exhausted = |dp: &EbpfDataplane| {
            dp.drop_counts()
                .unwrap()
                .iter()
                .find(|(r, _)| *r == DropReason::NatExhausted)
                .map_or(0, |(_, c)| c.packets)
        };
        let server = format!("[{OUTSIDE6}]:7003");
        let u = udp_server_on(&out, "::", 7003, 2 * LEN as usize + 1);
        let ask = |port: u16| udp_ask(&c1.ns, Some(&format!("[::]:{port}")), &server, "x");
        for i in 0..LEN {
            ask(41000 + i).unwrap_or_else(|e| panic!("flow {i} of {LEN}: {e}"));
        }
        let counts = dp.ct_counts().unwrap();
        assert_eq!(
            (counts.snat_fwd6, counts.snat_rev6),
            (LEN.into(), LEN.into())
        );
        let before = exhausted(&dp);
        assert!(
            ask(42000).is_err() && ask(42001).is_err(),
            "a ninth flow got through"
        );
        assert_eq!(exhausted(&dp) - before, 2);
        for i in 0..LEN {
            ask(41000 + i).unwrap_or_else(|e| panic!("live flow {i} after the refusals: {e}"));
        }
        let counts = dp.ct_counts().unwrap();
        assert_eq!(
            (counts.snat_fwd6, counts.snat_rev6),
            (LEN.into(), LEN.into())
        );
        std::thread::sleep(Duration::from_millis(2500));
        let counts = dp.gc_conntrack().unwrap();
        assert_eq!((counts.snat_fwd6, counts.snat_rev6), (0, 0), "{counts:?}");
        ask(42000).expect("a new flow once the gc made room");
        assert_eq!(u.join().unwrap().len(), 2 * LEN as usize + 1);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
