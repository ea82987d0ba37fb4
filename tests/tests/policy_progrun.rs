//! `BPF_PROG_TEST_RUN` of the source policy of published ports
//! (`PIER_POLICY`): allow-lists, deny over allow at the same prefix length,
//! the longest prefix across the port's and the host-wide scope, deny-only
//! policies, hairpin from a container, the per-port drop counter, a port
//! without policy left alone, and rules for one uplink only.
mod dataplane_util;

use dataplane_util::{pkt::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, PolicyRule, PortRef, Proto, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, require_root};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const HOST: [u8; 4] = [198, 18, 0, 1];
const C2: [u8; 4] = [10, 108, 0, 3];

fn allow(s: &str) -> PolicyRule {
    PolicyRule {
        src: s.parse().unwrap(),
        deny: false,
        uplink: None,
    }
}

fn deny(s: &str) -> PolicyRule {
    PolicyRule {
        src: s.parse().unwrap(),
        deny: true,
        uplink: None,
    }
}

/// `r`, for packets arriving on uplink `ifname` only.
fn on(ifname: &str, r: PolicyRule) -> PolicyRule {
    PolicyRule {
        uplink: Some(ifname.into()),
        ..r
    }
}

fn port(proto: Proto, host_port: u16) -> PortRef {
    PortRef {
        host_ip: None,
        proto,
        host_port,
    }
}

fn syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    Ip::new(TCP, src, HOST).frame(&tcp_seg(src, HOST, 40000, dport, 0x02, b""))
}

fn dgram(src: [u8; 4], dport: u16) -> Vec<u8> {
    Ip::new(UDP, src, HOST).frame(&udp_seg(src, HOST, 40000, dport, b"x"))
}

#[test]
fn the_source_policy_decides_by_longest_prefix_with_deny_winning_ties() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.108.0.0/24");
    let c1 = w.container("c1", &net, "10.108.0.2");
    let c2 = w.container("c2", &net, "10.108.0.3");
    let ports = vec![
        tcp(8081, c1.ip, 8080),
        udp(8083, c1.ip, 9090),
        tcp(8082, c1.ip, 8080),
    ];
    let cfg = w.config();
    let base = w.desired(ports);
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        let vc2 = nix::net::if_::if_nametoindex("vc2").unwrap();
        let up = programs::UPLINK_IN;
        let verdict = |dp: &mut EbpfDataplane, prog: &str, f: &[u8]| {
            if prog == programs::VETH_IN {
                return veth_run(dp, vc2, c2.mac, f).0;
            }
            dp.test_run(prog, f, 0).unwrap().0
        };

        // 1. Port 8081 (and 8083/udp) allow 198.18.0.0/24 but deny one
        // address of it; 8082 has no policy.
        let mut d = base.clone();
        for p in [port(Proto::Tcp, 8081), port(Proto::Udp, 8083)] {
            d.port_policy.insert(
                p,
                vec![
                    allow("198.18.0.0/24"),
                    deny("198.18.0.66/32"),
                    allow("10.108.0.3/32"),
                ],
            );
        }
        dp.sync(&d).expect("sync");
        let before = drops(&dp, DropReason::PolicyDenied);
        for (src, want) in [
            ([198, 18, 0, 2], TC_ACT_REDIRECT),
            ([198, 18, 0, 66], TC_ACT_SHOT),
            ([203, 0, 113, 5], TC_ACT_SHOT),
        ] {
            assert_eq!(
                verdict(&mut dp, up, &syn(src, 8081)),
                want,
                "tcp from {src:?}"
            );
            assert_eq!(
                verdict(&mut dp, up, &dgram(src, 8083)),
                want,
                "udp from {src:?}"
            );
            assert_eq!(
                verdict(&mut dp, up, &syn(src, 8082)),
                TC_ACT_REDIRECT,
                "no policy on 8082: {src:?}"
            );
        }
        assert_eq!(drops(&dp, DropReason::PolicyDenied) - before, 4);
        let denied = |dp: &EbpfDataplane, p: u16| {
            dp.port_stats()
                .unwrap()
                .into_iter()
                .find(|s| s.port.host_port == p)
                .unwrap()
                .denied
        };
        assert_eq!(
            (denied(&dp, 8081), denied(&dp, 8083), denied(&dp, 8082)),
            (2, 2, 0)
        );
        // Hairpin from c2 (allowed by its /32) and from c1 (not in the list).
        let hp = |src: [u8; 4]| {
            Ip::new(TCP, src, HOST).frame(&tcp_seg(src, HOST, 40001, 8081, 0x02, b""))
        };
        assert_eq!(
            verdict(&mut dp, programs::VETH_IN, &hp(C2)),
            TC_ACT_REDIRECT
        );
        d.port_policy
            .get_mut(&port(Proto::Tcp, 8081))
            .unwrap()
            .pop();
        dp.sync(&d).expect("sync");
        assert_eq!(verdict(&mut dp, programs::VETH_IN, &hp(C2)), TC_ACT_SHOT);
        assert_eq!(denied(&dp, 8081), 3);

        // 2. Same prefix length in the two scopes: deny wins, whichever
        // scope it is in; a longer allow beats a shorter deny.
        let mut d = base.clone();
        d.host_policy = vec![allow("198.18.0.0/24")];
        d.port_policy
            .insert(port(Proto::Tcp, 8081), vec![deny("198.18.0.0/24")]);
        dp.sync(&d).expect("sync");
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8081)),
            TC_ACT_SHOT
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8082)),
            TC_ACT_REDIRECT,
            "8082: only the host-wide allow"
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([203, 0, 113, 5], 8082)),
            TC_ACT_SHOT,
            "a host-wide allow-list applies to every port"
        );
        d.host_policy = vec![deny("198.18.0.0/24")];
        d.port_policy
            .insert(port(Proto::Tcp, 8081), vec![allow("198.18.0.0/25")]);
        dp.sync(&d).expect("sync");
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8081)),
            TC_ACT_REDIRECT
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 200], 8081)),
            TC_ACT_SHOT
        );
        // A deny and an allow of one prefix in the same scope: deny.
        d.host_policy = vec![allow("198.18.0.0/24"), deny("198.18.0.0/24")];
        d.port_policy.clear();
        dp.sync(&d).expect("sync");
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8082)),
            TC_ACT_SHOT
        );

        // 3. Deny only: everyone else passes (no allow-list applies).
        let mut d = base.clone();
        d.host_policy = vec![deny("203.0.113.0/24")];
        dp.sync(&d).expect("sync");
        assert_eq!(
            verdict(&mut dp, up, &syn([203, 0, 113, 5], 8081)),
            TC_ACT_SHOT
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8081)),
            TC_ACT_REDIRECT
        );

        // 4. Many rules: 10 000 host-wide denies, then none: the map holds
        // exactly the rules, and the ports' flags go back to zero.
        let mut d = base.clone();
        d.host_policy = (0..10_000u32)
            .map(|i| deny(&format!("100.{}.{}.0/24", 64 + i / 256, i % 256)))
            .collect();
        dp.sync(&d).expect("sync 10 000 rules");
        assert_eq!(dp.policy_entries().unwrap().len(), 10_000);
        assert_eq!(
            verdict(&mut dp, up, &syn([100, 64, 3, 9], 8081)),
            TC_ACT_SHOT
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([198, 18, 0, 2], 8081)),
            TC_ACT_REDIRECT
        );
        dp.sync(&base).expect("sync");
        assert!(dp.policy_entries().unwrap().is_empty());
        assert!(
            dp.port_entries()
                .unwrap()
                .iter()
                .all(|(_, v)| v.policy == 0)
        );
        assert_eq!(
            verdict(&mut dp, up, &syn([100, 64, 3, 9], 8081)),
            TC_ACT_REDIRECT
        );
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn an_uplinks_rules_apply_only_to_packets_arriving_on_it() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.108.0.0/24");
    let c1 = w.container("c1", &net, "10.108.0.2");
    let c2 = w.container("c2", &net, "10.108.0.3");
    // A second uplink (no dummy driver here: a veth): only its ifindex
    // matters to the program.
    let ns = w.host.host_ns.clone();
    pier_tests::host::sh(&[
        "ip", "-n", &ns, "link", "add", "uplink1", "type", "veth", "peer", "name", "uplink1p",
    ]);
    let cfg = w.config();
    let base = w.desired(vec![tcp(8081, c1.ip, 8080), tcp(8082, c1.ip, 8080)]);
    TestHost::in_netns(&ns, || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        let idx = |n: &str| nix::net::if_::if_nametoindex(n).unwrap();
        let (u0, u1, vc2) = (idx(pier_tests::host::UPLINK), idx("uplink1"), idx("vc2"));
        let on_wire = |dp: &mut EbpfDataplane, ifindex: u32, src: [u8; 4], dport: u16| {
            dp.test_run(programs::UPLINK_IN, &syn(src, dport), ifindex)
                .unwrap()
                .0
        };
        let hairpin = |dp: &mut EbpfDataplane| {
            let f = Ip::new(TCP, C2, HOST).frame(&tcp_seg(C2, HOST, 40001, 8081, 0x02, b""));
            veth_run(dp, vc2, c2.mac, &f).0
        };
        let a = [198, 18, 0, 2];
        let b = [203, 0, 113, 5];

        // 1. A port's deny on uplink1: shut there, open on uplink0, other
        // ports untouched, hairpin (no uplink) untouched.
        let mut d = base.clone();
        d.port_policy.insert(
            port(Proto::Tcp, 8081),
            vec![
                on("uplink1", deny("198.18.0.0/24")),
                on("uplink1", deny("10.108.0.0/24")),
            ],
        );
        dp.sync(&d).expect("sync");
        let before = drops(&dp, DropReason::PolicyDenied);
        assert_eq!(on_wire(&mut dp, u1, a, 8081), TC_ACT_SHOT);
        assert_eq!(on_wire(&mut dp, u0, a, 8081), TC_ACT_REDIRECT);
        assert_eq!(on_wire(&mut dp, u1, a, 8082), TC_ACT_REDIRECT);
        assert_eq!(hairpin(&mut dp), TC_ACT_REDIRECT);
        assert_eq!(drops(&dp, DropReason::PolicyDenied) - before, 1);

        // 2. A host-wide allow on uplink0: there only it passes; uplink1
        // stays open to all; hairpin is not from an uplink.
        let mut d = base.clone();
        d.host_policy = vec![on(pier_tests::host::UPLINK, allow("203.0.113.0/24"))];
        dp.sync(&d).expect("sync");
        for (ifindex, src, want) in [
            (u0, b, TC_ACT_REDIRECT),
            (u0, a, TC_ACT_SHOT),
            (u1, a, TC_ACT_REDIRECT),
            (u1, b, TC_ACT_REDIRECT),
        ] {
            for port in [8081, 8082] {
                assert_eq!(
                    on_wire(&mut dp, ifindex, src, port),
                    want,
                    "{src:?} on ifindex {ifindex} to {port}"
                );
            }
        }
        assert_eq!(hairpin(&mut dp), TC_ACT_REDIRECT);

        // 3. Longest prefix across the kinds: a host-wide deny of the /16
        // everywhere, a longer allow on uplink0 only.
        let mut d = base.clone();
        d.host_policy = vec![
            deny("198.18.0.0/16"),
            on(pier_tests::host::UPLINK, allow("198.18.0.0/24")),
        ];
        dp.sync(&d).expect("sync");
        assert_eq!(on_wire(&mut dp, u0, a, 8081), TC_ACT_REDIRECT);
        assert_eq!(on_wire(&mut dp, u1, a, 8081), TC_ACT_SHOT);
        assert_eq!(
            on_wire(&mut dp, u0, [198, 18, 7, 1], 8081),
            TC_ACT_SHOT,
            "outside the /24: the /16 deny, and uplink0's /0 deny"
        );
        assert_eq!(on_wire(&mut dp, u1, b, 8081), TC_ACT_REDIRECT);

        // 4. An uplink that does not exist: its rules make no entry and
        // change nothing.
        let mut d = base.clone();
        d.host_policy = vec![on("nosuch0", deny("0.0.0.0/0"))];
        dp.sync(&d).expect("sync");
        assert!(dp.policy_entries().unwrap().is_empty());
        assert!(
            dp.port_entries()
                .unwrap()
                .iter()
                .all(|(_, v)| v.policy == 0)
        );
        assert_eq!(on_wire(&mut dp, u1, a, 8081), TC_ACT_REDIRECT);
        dp.sync(&base).expect("sync");
        assert!(dp.policy_entries().unwrap().is_empty());
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
