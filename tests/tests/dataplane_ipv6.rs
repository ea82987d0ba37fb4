//! IPv6 obeys the isolation IPv4 does: by `BPF_PROG_TEST_RUN` with
//! hand-built frames (malformed, extension-header chains past the bound,
//! fragments, jumbograms, v4-mapped addresses, neighbour discovery, router
//! advertisements), each passing unchanged or dropped with a counted reason;
//! and with real traffic between namespaces: no reach across networks (a
//! container on both reaches both), `icc=false` (link-local included),
//! `--internal`, spoofed sources.
mod dataplane_util;

use std::net::Ipv6Addr;

use dataplane_util::{pkt::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, host::sh, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

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

#[test]
fn ipv6_frames_pass_unchanged_or_drop_with_a_counted_reason() {
    require_root!();
    let mut w = World::new(false);
    w.network(1, "10.106.0.0/24");
    let s1 = w.ipv6(1, "fd00:106::/64");
    w.network(2, "10.107.0.0/24");
    w.ipv6(2, "fd00:107::/64");
    let n1 = w.networks[0].clone();
    let c1_mac = w.container("c1", &n1, "10.106.0.2").mac;
    w.ip6("vc1", "fd00:106::2", s1, true);
    uplink6(&w);
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let c1 = a6("fd00:106::2");
        let peer = a6("fd00:106::9");
        let other_net = a6("fd00:107::5");
        let out = a6(OUTSIDE6);
        // c1's link-local address: the EUI-64 of its MAC, as its kernel has it.
        let m = c1_mac;
        let ll = a6(&format!(
            "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
            m[0] ^ 2,
            m[1],
            m[2],
            m[3],
            m[4],
            m[5]
        ));
        let all_nodes = a6("ff02::1");
        let udp_to = |dst: [u8; 16]| udp6(c1, dst, 4000, 53, b"pier-v6");
        let mut cases: Vec<(&str, &str, Vec<u8>, Option<DropReason>)> = Vec::new();
        let veth = programs::VETH_IN;
        let up = programs::UPLINK_IN;
        // Within the network: UDP, behind five extension headers, a first
        // fragment, a later fragment, a jumbogram (payload length 0, the
        // hop-by-hop jumbo option).
        cases.push((
            veth,
            "udp to a peer",
            frame6(UDP, c1, peer, &[], &udp_to(peer)),
            None,
        ));
        let mut five = Vec::new();
        for _ in 0..4 {
            five.extend(ext8(60));
        }
        five.extend(ext8(UDP));
        cases.push((
            veth,
            "five extension headers",
            frame6(0, c1, peer, &five, &udp_to(peer)),
            None,
        ));
        cases.push((
            veth,
            "first fragment",
            frame6(44, c1, peer, &frag6(UDP, 0, true), &udp_to(peer)),
            None,
        ));
        cases.push((
            veth,
            "later fragment",
            frame6(44, c1, peer, &frag6(UDP, 16, false), b"rest of it"),
            None,
        ));
        let mut jumbo = frame6(0, c1, peer, &[UDP, 0, 0xc2, 4, 0, 1, 0, 0], &udp_to(peer));
        jumbo[18..20].copy_from_slice(&[0, 0]);
        cases.push((veth, "jumbogram", jumbo, None));
        // Neighbour discovery and MLD pass untouched.
        let mut ns_body = vec![0u8; 4];
        ns_body.extend_from_slice(&peer);
        let sol = a6("ff02::1:ff00:9");
        cases.push((
            veth,
            "neighbour solicitation",
            frame6(ICMPV6, c1, sol, &[], &icmp6(c1, sol, 135, 0, &ns_body)),
            None,
        ));
        let mut dad = vec![0u8; 4];
        dad.extend_from_slice(&c1);
        cases.push((
            veth,
            "duplicate address detection",
            frame6(
                ICMPV6,
                [0; 16],
                sol,
                &[],
                &icmp6([0; 16], sol, 135, 0, &dad),
            ),
            None,
        ));
        let mld = a6("ff02::16");
        cases.push((
            veth,
            "MLDv2 report behind hop-by-hop (router alert)",
            frame6(
                0,
                ll,
                mld,
                &[ICMPV6, 0, 5, 2, 0, 0, 1, 0],
                &icmp6(ll, mld, 143, 0, &[0, 0, 0, 0]),
            ),
            None,
        ));
        let na = |target: [u8; 16]| {
            let mut b = vec![0x60, 0, 0, 0];
            b.extend_from_slice(&target);
            frame6(
                ICMPV6,
                c1,
                all_nodes,
                &[],
                &icmp6(c1, all_nodes, 136, 0, &b),
            )
        };
        cases.push((veth, "advertising its own address", na(c1), None));
        cases.push((veth, "advertising its link-local address", na(ll), None));
        // A neighbour's link-local address (another MAC's EUI-64), as the
        // target of an advertisement or the source of a solicitation, would
        // poison that neighbour's entry.
        let other_ll = a6("fe80::42:aff:fe6a:9");
        cases.push((
            veth,
            "advertising a neighbour's link-local address",
            na(other_ll),
            Some(DropReason::Spoofed),
        ));
        cases.push((
            veth,
            "a solicitation from a neighbour's link-local address",
            frame6(
                ICMPV6,
                other_ll,
                all_nodes,
                &[],
                &icmp6(other_ll, all_nodes, 135, 0, &[0; 20]),
            ),
            Some(DropReason::Spoofed),
        ));
        cases.push((
            veth,
            "advertising a peer's address",
            na(peer),
            Some(DropReason::Spoofed),
        ));
        // Router advertisements and redirects from a container.
        for (what, typ) in [("router advertisement", 134), ("redirect", 137)] {
            cases.push((
                veth,
                what,
                frame6(
                    ICMPV6,
                    ll,
                    all_nodes,
                    &[],
                    &icmp6(ll, all_nodes, typ, 0, &[0; 12]),
                ),
                Some(DropReason::RouterAdvert),
            ));
        }
        // Sources: not its own, link-local off the link, unspecified unicast.
        cases.push((
            veth,
            "spoofed source",
            frame6(UDP, peer, out, &[], &udp6(peer, out, 1, 2, b"x")),
            Some(DropReason::Spoofed),
        ));
        cases.push((
            veth,
            "link-local source to a global address",
            frame6(UDP, ll, out, &[], &udp6(ll, out, 1, 2, b"x")),
            Some(DropReason::Spoofed),
        ));
        cases.push((
            veth,
            "unspecified source to unicast",
            frame6(UDP, [0; 16], peer, &[], &udp6([0; 16], peer, 1, 2, b"x")),
            Some(DropReason::Spoofed),
        ));
        // v4-mapped either way.
        let mapped = a6("::ffff:198.18.0.2");
        cases.push((
            veth,
            "v4-mapped destination",
            frame6(UDP, c1, mapped, &[], &udp_to(mapped)),
            Some(DropReason::V4Mapped),
        ));
        cases.push((
            veth,
            "v4-mapped source",
            frame6(UDP, mapped, peer, &[], &udp6(mapped, peer, 1, 2, b"x")),
            Some(DropReason::V4Mapped),
        ));
        // Chains pier does not walk.
        let mut seven = Vec::new();
        for _ in 0..6 {
            seven.extend(ext8(60));
        }
        seven.extend(ext8(UDP));
        cases.push((
            veth,
            "seven extension headers",
            frame6(60, c1, peer, &seven, &udp_to(peer)),
            Some(DropReason::Ipv6ExtHdrs),
        ));
        let mut long = vec![UDP, 40];
        long.resize(41 * 8, 0);
        cases.push((
            veth,
            "a 328-byte hop-by-hop header",
            frame6(0, c1, peer, &long, &udp_to(peer)),
            Some(DropReason::Ipv6ExtHdrs),
        ));
        cases.push((
            veth,
            "mobility header",
            frame6(135, c1, peer, &[59, 0, 0, 0, 0, 0, 0, 0], &[]),
            Some(DropReason::Ipv6ExtHdrs),
        ));
        // Across networks, later fragments included.
        cases.push((
            veth,
            "to another network",
            frame6(UDP, c1, other_net, &[], &udp_to(other_net)),
            Some(DropReason::Isolation),
        ));
        cases.push((
            veth,
            "later fragment to another network",
            frame6(44, c1, other_net, &frag6(UDP, 16, false), b"rest"),
            Some(DropReason::Isolation),
        ));
        // (Masquerade itself: dataplane_nat6.) A protocol without ports
        // cannot be masqueraded, and its own address must not leave.
        cases.push((
            veth,
            "ESP leaving a masquerading network",
            frame6(50, c1, out, &[], &[0u8; 16]),
            Some(DropReason::NatUnsupported),
        ));
        // Truncated.
        let good = frame6(UDP, c1, peer, &[], &udp_to(peer));
        cases.push((
            veth,
            "truncated UDP header",
            good[..14 + 40 + 4].to_vec(),
            Some(DropReason::Malformed),
        ));
        cases.push((
            veth,
            "truncated extension header",
            frame6(60, c1, peer, &[UDP], &[]),
            Some(DropReason::Malformed),
        ));
        let mut v4_in_v6 = good.clone();
        v4_in_v6[14] = 0x45;
        cases.push((
            veth,
            "IPv4 version under the IPv6 ethertype",
            v4_in_v6,
            Some(DropReason::Malformed),
        ));
        // From outside: nothing reaches a container subnet; the host's own
        // traffic (behind an unwalked chain too) is the host stack's.
        let host6 = a6(HOST6);
        cases.push((
            up,
            "outside to a container",
            frame6(UDP, out, c1, &[], &udp6(out, c1, 5, 53, b"x")),
            Some(DropReason::NotPublished),
        ));
        cases.push((
            up,
            "later fragment to a container",
            frame6(44, out, c1, &frag6(UDP, 16, false), b"rest"),
            Some(DropReason::NotPublished),
        ));
        cases.push((
            up,
            "outside to the host",
            frame6(UDP, out, host6, &[], &udp6(out, host6, 5, 53, b"x")),
            None,
        ));
        cases.push((
            up,
            "seven extension headers to the host",
            frame6(60, out, host6, &seven, &udp6(out, host6, 5, 53, b"x")),
            None,
        ));
        cases.push((
            up,
            "truncated to the host",
            frame6(UDP, out, host6, &[], &udp6(out, host6, 5, 53, b"x"))[..14 + 40 + 3].to_vec(),
            Some(DropReason::Malformed),
        ));

        let before = dp.drop_counts().unwrap();
        let mut want: std::collections::BTreeMap<u32, u64> = Default::default();
        for (prog, what, f, drop) in &cases {
            let (v, outf) = if *prog == veth {
                veth_run(&mut dp, vc1, c1_mac, f)
            } else {
                dp.test_run(prog, f, 0)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
            };
            match drop {
                None => assert_eq!((v, &outf), (TC_ACT_OK, f), "{what}: passes unchanged"),
                Some(r) => {
                    assert_eq!(v, TC_ACT_SHOT, "{what}: dropped ({r:?})");
                    *want.entry(*r as u32).or_default() += 1;
                }
            }
        }
        // A veth pier does not know: nothing IPv6 from it passes.
        let (v, _) = dp.test_run(veth, &good, 1).unwrap();
        assert_eq!(v, TC_ACT_SHOT, "unknown veth");
        *want.entry(DropReason::Spoofed as u32).or_default() += 1;
        for (r, c) in dp.drop_counts().unwrap() {
            let was = before.iter().find(|(b, _)| *b == r).unwrap().1.packets;
            assert_eq!(
                c.packets - was,
                want.get(&(r as u32)).copied().unwrap_or(0),
                "drops counted as {r:?}"
            );
        }
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// A dual-stack world: networks 1 and 2 (IPv4 + IPv6), c1 on 1, c2 on 2,
/// c3 on both.
#[test]
fn ipv6_networks_are_isolated_and_a_container_on_both_reaches_both() {
    require_root!();
    let mut w = World::new(false);
    let n1 = w.network(1, "10.96.0.0/24");
    let s1 = w.ipv6(1, "fd00:96::/64");
    let n2 = w.network(2, "10.97.0.0/24");
    let s2 = w.ipv6(2, "fd00:97::/64");
    let c1 = w.container("c1", &n1, "10.96.0.2");
    w.ip6("vc1", "fd00:96::2", s1, true);
    let c2 = w.container("c2", &n2, "10.97.0.2");
    w.ip6("vc2", "fd00:97::2", s2, true);
    let c3 = w.container("c3", &n1, "10.96.0.3");
    w.ip6("vc3", "fd00:96::3", s1, true);
    w.connect(&c3.ns.clone(), "c3b", "eth1", &n2, "10.97.0.3");
    w.ip6("vc3b", "fd00:97::3", s2, false);
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let _t1 = tcp_server_on(&c1.ns, "::", 8080, 1);
        let _t2 = tcp_server_on(&c2.ns, "::", 8080, 1);
        let _u1 = udp_server_on(&c1.ns, "::", 9090, 1);
        let _u2 = udp_server_on(&c2.ns, "::", 9090, 1);
        for (from, to) in [(&c1.ns, "fd00:97::2"), (&c2.ns, "fd00:96::2")] {
            let e = tcp_ask(from, &format!("[{to}]:8080"), "x").expect_err("tcp across");
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            udp_ask(from, None, &format!("[{to}]:9090"), "x").expect_err("udp across");
            assert!(!ping(from, to), "ping across");
        }
        assert!(drops(&dp, DropReason::Isolation) >= 6);
        // c3 reaches both, each with its own address of that network.
        let t1 = tcp_server_on(&c1.ns, "::", 8081, 1);
        let t2 = tcp_server_on(&c2.ns, "::", 8081, 1);
        let a = tcp_ask(&c3.ns, "[fd00:96::2]:8081", "n1").expect("c3 -> c1");
        assert_eq!(peer_ip(&a), "fd00:96::3");
        let b = tcp_ask(&c3.ns, "[fd00:97::2]:8081", "n2").expect("c3 -> c2");
        assert_eq!(peer_ip(&b), "fd00:97::3");
        assert!(ping(&c3.ns, "fd00:96::2") && ping(&c3.ns, "fd00:97::2"));
        // The gateway (the host) answers on its network.
        assert!(ping(&c1.ns, "fd00:96::1"));
        t1.join().unwrap();
        t2.join().unwrap();
        // c1 cannot sneak into n2 with an n2 address of its own making.
        sh(&[
            "ip",
            "-n",
            &c1.ns,
            "addr",
            "add",
            "fd00:97::50/128",
            "dev",
            "eth0",
            "nodad",
        ]);
        let spoofed_before = drops(&dp, DropReason::Spoofed);
        let _u = udp_server_on(&c2.ns, "::", 9091, 1);
        udp_ask(
            &c1.ns,
            Some("[fd00:97::50]:0"),
            "[fd00:97::2]:9091",
            "spoof",
        )
        .expect_err("a spoofed source gets through");
        assert!(drops(&dp, DropReason::Spoofed) > spoofed_before);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn ipv6_without_icc_and_internal_networks_stay_apart() {
    require_root!();
    let mut w = World::new(false);
    let n = w.network(1, "10.99.0.0/24");
    let s = w.ipv6(1, "fd00:99::/64");
    w.networks[0].icc = false;
    let c1 = w.container("c1", &n, "10.99.0.2");
    w.ip6("vc1", "fd00:99::2", s, true);
    let c2 = w.container("c2", &n, "10.99.0.3");
    w.ip6("vc2", "fd00:99::3", s, true);
    let m = w.network(2, "10.98.0.0/24");
    let si = w.ipv6(2, "fd00:98::/64");
    w.networks[1].internal = true;
    let i1 = w.container("i1", &m, "10.98.0.2");
    w.ip6("vi1", "fd00:98::2", si, true);
    let i2 = w.container("i2", &m, "10.98.0.3");
    w.ip6("vi2", "fd00:98::3", si, true);
    uplink6(&w);
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![]);
    let cfg = w.config();
    for ns in [&c1.ns, &c2.ns, &i1.ns, &i2.ns] {
        wait_dad(ns);
    }
    let c2_ll = link_local(&c2.ns, "eth0");
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // icc=false: neither the global nor the link-local address of a
        // peer; the gateway still answers.
        let _s2 = tcp_server_on(&c2.ns, "::", 8080, 1);
        let e = tcp_ask(&c1.ns, "[fd00:99::3]:8080", "x").expect_err("icc off");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(!ping(&c1.ns, "fd00:99::3"));
        assert!(!ping(&c1.ns, &format!("{c2_ll}%eth0")), "link-local peer");
        assert!(ping(&c1.ns, "fd00:99::1"), "gateway");
        assert!(drops(&dp, DropReason::NoIcc) >= 3);
        // --internal: no way out, not even to the host's uplink address;
        // within the network, containers reach each other.
        let _o = tcp_server_on(&out, "::", 7000, 1);
        let e = tcp_ask(&i1.ns, &format!("[{OUTSIDE6}]:7000"), "out").expect_err("way out");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::NetworkUnreachable
            ),
            "{e}"
        );
        assert!(!ping(&i1.ns, OUTSIDE6));
        assert!(!ping(&i1.ns, HOST6));
        assert!(drops(&dp, DropReason::Internal) >= 2);
        let s = tcp_server_on(&i2.ns, "::", 8080, 1);
        let a = tcp_ask(&i1.ns, "[fd00:98::3]:8080", "peer").expect("within");
        assert_eq!(peer_ip(&a), "fd00:98::2");
        s.join().unwrap();
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// Every ordered pair of three dual-stack networks (two masquerading, one
/// routed without masquerade) refuses TCP, UDP and ICMPv6 echo, each
/// counted `Isolation`; each container still reaches the outside (its own
/// network works), masqueraded or routed.
#[test]
fn ipv6_isolation_holds_between_every_pair_of_three_networks() {
    require_root!();
    let mut w = World::new(false);
    let mut cs = Vec::new();
    for (id, v4, v6) in [
        (1, "10.91.0.0/24", "fd00:91::/64"),
        (2, "10.92.0.0/24", "fd00:92::/64"),
        (3, "10.93.0.0/24", "fd00:93::/64"),
    ] {
        let n = w.network(id, v4);
        let s = w.ipv6(id, v6);
        if id == 3 {
            w.networks[2].masquerade = false;
        }
        let name = format!("c{id}");
        let c = w.container(&name, &n, &v4.replace(".0/24", ".2"));
        let a6 = v6.replace("::/64", "::2");
        w.ip6(&format!("v{name}"), &a6, s, true);
        cs.push((c.ns.clone(), a6));
    }
    uplink6(&w);
    let out = w.host.outside_ns.clone();
    // The outside routes the routed network back to the host.
    sh(&[
        "ip",
        "-n",
        &out,
        "-6",
        "route",
        "add",
        "fd00:93::/64",
        "via",
        HOST6,
    ]);
    for (ns, _) in &cs {
        wait_dad(ns);
    }
    wait_dad(&out);
    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let before = drops(&dp, DropReason::Isolation);
        let mut pairs = 0;
        for (i, (from, _)) in cs.iter().enumerate() {
            for (j, (to_ns, to)) in cs.iter().enumerate() {
                if i == j {
                    continue;
                }
                let _t = tcp_server_on(to_ns, "::", 8080, 1);
                let _u = udp_server_on(to_ns, "::", 9090, 1);
                let what = format!("c{} -> c{}", i + 1, j + 1);
                let e = tcp_ask(from, &format!("[{to}]:8080"), "x")
                    .expect_err(&format!("{what}: tcp across"));
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{what}: {e}");
                udp_ask(from, None, &format!("[{to}]:9090"), "x")
                    .expect_err(&format!("{what}: udp across"));
                assert!(!ping(from, to), "{what}: ping across");
                pairs += 1;
                // Unblock the servers (they wait for one client each).
                let _ = tcp_ask(to_ns, "[::1]:8080", "done");
                let _ = udp_ask(to_ns, None, "[::1]:9090", "done");
            }
        }
        assert_eq!(pairs, 6);
        let counted = drops(&dp, DropReason::Isolation) - before;
        assert!(counted >= 18, "{counted} isolation drops for 6 pairs x 3");
        // Each network works: the outside sees the host's address from
        // the masquerading ones, the container's own from the routed one.
        for (i, (ns, addr)) in cs.iter().enumerate() {
            let s = tcp_server_on(&out, "::", 7000, 1);
            let a = tcp_ask(ns, &format!("[{OUTSIDE6}]:7000"), "out")
                .unwrap_or_else(|e| panic!("c{} to the outside: {e}", i + 1));
            s.join().unwrap();
            let want = if i == 2 { addr.as_str() } else { HOST6 };
            assert_eq!(peer_ip(&a), want, "c{}", i + 1);
        }
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
