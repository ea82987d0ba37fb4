//! `BPF_PROG_TEST_RUN` of ICMP errors, IP fragments and the TTL through the
//! TC programs: every ICMP error type pier translates, in each direction
//! (arriving on the uplink for a masqueraded or published flow, sent by a
//! container about one), with every checksum checked — the outer IPv4, the
//! ICMP, the quoted IPv4 and the quoted transport checksum; truncated and
//! malformed quotes, unmatched and forged errors; fragments following their
//! first; TTL decrement and time-exceeded answers.
mod dataplane_util;

use dataplane_util::{pkt::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const ROUTER: [u8; 4] = [203, 0, 113, 1];
const C1: [u8; 4] = [10, 107, 0, 2];
const C2: [u8; 4] = [10, 107, 0, 3];
const C3: [u8; 4] = [10, 109, 0, 2];
const GW: [u8; 4] = [10, 107, 0, 1];

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;

/// The error types pier translates, with the 4 bytes after the checksum.
const ERRORS: [(&str, u8, u8, [u8; 4]); 5] = [
    ("fragmentation needed (mtu 1280)", 3, 4, [0, 0, 0x05, 0x00]),
    ("port unreachable", 3, 3, [0; 4]),
    ("host unreachable", 3, 1, [0; 4]),
    ("time exceeded", 11, 0, [0; 4]),
    ("parameter problem", 12, 0, [8, 0, 0, 0]),
];

/// A flow's packet as pier sent it, what the quote's destination stays and
/// the quoted ports after translation.
type Sent = (&'static str, Vec<u8>, [u8; 4], (u16, u16));

struct Run<'a> {
    dp: &'a mut EbpfDataplane,
    /// Each container's host-side veth and MAC.
    vc1: (u32, [u8; 6]),
    vc2: (u32, [u8; 6]),
    vc3: (u32, [u8; 6]),
}

impl Run<'_> {
    fn up(&mut self, f: &[u8]) -> (u32, Vec<u8>) {
        self.dp
            .test_run(programs::UPLINK_IN, f, 0)
            .unwrap_or_else(|e| panic!("uplink test_run: {e}"))
    }
    fn veth(&mut self, f: &[u8]) -> (u32, Vec<u8>) {
        veth_run(self.dp, self.vc1.0, self.vc1.1, f)
    }
    /// What c3 (routed network) sends.
    fn veth3(&mut self, f: &[u8]) -> (u32, Vec<u8>) {
        veth_run(self.dp, self.vc3.0, self.vc3.1, f)
    }
    /// What c2 sends.
    fn veth2(&mut self, f: &[u8]) -> (u32, Vec<u8>) {
        veth_run(self.dp, self.vc2.0, self.vc2.1, f)
    }
}

/// A world with one network, c1 publishing 8081/tcp → 8080 and
/// 8083/udp → 9090, and c2 beside it; c3 on a network without masquerade
/// (routed); `f` gets a started dataplane.
fn with_dataplane(f: impl FnOnce(&mut Run, [u8; 6]) + Send) {
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let c1 = w.container("c1", &net, "10.107.0.2");
    let c2 = w.container("c2", &net, "10.107.0.3");
    let routed = w.network(2, "10.109.0.0/24");
    w.networks[1].masquerade = false;
    let c3 = w.container("c3", &routed, "10.109.0.2");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let vc2 = nix::net::if_::if_nametoindex("vc2").unwrap();
        let vc3 = nix::net::if_::if_nametoindex("vc3").unwrap();
        let mut run = Run {
            dp: &mut dp,
            vc1: (vc1, c1.mac),
            vc2: (vc2, c2.mac),
            vc3: (vc3, c3.mac),
        };
        f(&mut run, c1.mac);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The source port masquerade gave a container's UDP flow.
fn masquerade_udp(r: &mut Run, sport: u16, dport: u16) -> u16 {
    let f = Ip::new(UDP, C1, OUTSIDE).frame(&udp_seg(C1, OUTSIDE, sport, dport, b"query"));
    let (v, out) = r.veth(&f);
    assert_eq!(v, TC_ACT_REDIRECT, "masquerade");
    assert_eq!(ip_of(&out).src(), HOST);
    ip_of(&out).ports().0
}

fn error_frame(src: [u8; 4], dst: [u8; 4], typ: u8, code: u8, rest: [u8; 4], q: &[u8]) -> Vec<u8> {
    Ip::new(ICMP, src, dst).frame(&icmp_error(typ, code, rest, q))
}

/// A translated error: ICMP checksum over the whole message, quoted IPv4
/// header checksum, and the quoted transport checksum when `whole`.
fn assert_error_csums(what: &str, out: &[u8], whole: bool) {
    assert_ip_csums(what, &ip_of(out), true);
    assert_ip_csums(&format!("{what} (quoted)"), &quoted(out), whole);
}

#[test]
fn icmp_errors_of_translated_flows_are_translated_with_every_checksum_right() {
    require_root!();
    with_dataplane(|r, c1_mac| {
        // The flows: masqueraded UDP and echo, published TCP and UDP.
        let p = masquerade_udp(r, 4000, 53);
        let (v, out) = r.veth(&Ip::new(ICMP, C1, OUTSIDE).frame(&echo(0x4242, b"ping")));
        assert_eq!(v, TC_ACT_REDIRECT);
        let q = ip_of(&out);
        let echo_id = u16::from_be_bytes([q.l4()[4], q.l4()[5]]);
        let syn = Ip::new(TCP, OUTSIDE, HOST).frame(&tcp_seg(OUTSIDE, HOST, 5555, 8081, SYN, b""));
        assert_eq!(r.up(&syn).0, TC_ACT_REDIRECT);
        let dgram =
            Ip::new(UDP, OUTSIDE, HOST).frame(&udp_seg(OUTSIDE, HOST, 5556, 8083, b"hello"));
        assert_eq!(r.up(&dgram).0, TC_ACT_REDIRECT);

        for (name, typ, code, rest) in ERRORS {
            // Arriving on the uplink, about what pier sent for the flows.
            let sent: [Sent; 3] = [
                (
                    "masqueraded UDP",
                    Ip::new(UDP, HOST, OUTSIDE).packet(&udp_seg(HOST, OUTSIDE, p, 53, b"query")),
                    OUTSIDE,
                    (4000, 53),
                ),
                (
                    "published TCP reply",
                    Ip::new(TCP, HOST, OUTSIDE)
                        .packet(&tcp_seg(HOST, OUTSIDE, 8081, 5555, SYN_ACK, b"")),
                    OUTSIDE,
                    (8080, 5555),
                ),
                (
                    "published UDP reply",
                    Ip::new(UDP, HOST, OUTSIDE).packet(&udp_seg(HOST, OUTSIDE, 8083, 5556, b"hi")),
                    OUTSIDE,
                    (9090, 5556),
                ),
            ];
            for (flow, quote, qdst, qports) in &sent {
                let what = format!("{name} for the {flow}, from a router");
                let f = error_frame(ROUTER, HOST, typ, code, rest, quote);
                let (v, out) = r.up(&f);
                assert_eq!(v, TC_ACT_REDIRECT, "{what}");
                assert_eq!(out.len(), f.len(), "{what}: same length");
                assert_eq!(&out[0..6], &c1_mac, "{what}: to the container's MAC");
                let o = ip_of(&out);
                assert_eq!((o.src(), o.dst()), (ROUTER, C1), "{what}: outer addresses");
                assert_eq!(o.ttl(), 63, "{what}: TTL decremented");
                assert_eq!(&o.l4()[..2], &[typ, code], "{what}: type and code");
                assert_eq!(&o.l4()[4..8], &rest, "{what}: MTU / pointer kept");
                let q = quoted(&out);
                assert_eq!((q.src(), q.dst()), (C1, *qdst), "{what}: quoted addresses");
                assert_eq!(q.ports(), *qports, "{what}: quoted ports");
                assert_error_csums(&what, &out, true);
                assert_eq!(q.l4().len(), quote.len() - 20, "{what}: quote kept whole");
            }
            // The container's echo, quoted.
            let quote = Ip::new(ICMP, HOST, OUTSIDE).packet(&echo(echo_id, b"ping"));
            let (v, out) = r.up(&error_frame(ROUTER, HOST, typ, code, rest, &quote));
            assert_eq!(v, TC_ACT_REDIRECT, "{name} for an echo");
            let q = quoted(&out);
            assert_eq!(q.src(), C1);
            assert_eq!(
                u16::from_be_bytes([q.l4()[4], q.l4()[5]]),
                0x4242,
                "echo id"
            );
            assert_error_csums(&format!("{name} for an echo"), &out, true);

            // Sent by the container about what it received.
            let got: [(&str, Vec<u8>, (u16, u16)); 2] = [
                (
                    "published UDP",
                    Ip::new(UDP, OUTSIDE, C1).packet(&udp_seg(OUTSIDE, C1, 5556, 9090, b"hello")),
                    (5556, 8083),
                ),
                (
                    "masqueraded UDP reply",
                    Ip::new(UDP, OUTSIDE, C1).packet(&udp_seg(OUTSIDE, C1, 53, 4000, b"answer")),
                    (53, p),
                ),
            ];
            for (flow, quote, qports) in &got {
                let what = format!("{name} from c1 about the {flow}");
                let f = error_frame(C1, OUTSIDE, typ, code, rest, quote);
                let (v, out) = r.veth(&f);
                assert_eq!(v, TC_ACT_REDIRECT, "{what}");
                let o = ip_of(&out);
                assert_eq!(
                    (o.src(), o.dst()),
                    (HOST, OUTSIDE),
                    "{what}: outer addresses"
                );
                assert_eq!(o.ttl(), 63, "{what}: TTL decremented");
                let q = quoted(&out);
                assert_eq!(
                    (q.src(), q.dst()),
                    (OUTSIDE, HOST),
                    "{what}: quoted addresses"
                );
                assert_eq!(q.ports(), *qports, "{what}: quoted ports");
                assert_error_csums(&what, &out, true);
            }
        }

        // Hairpin: c2 dials the published UDP port on the host's address.
        let f = Ip::new(UDP, C2, HOST).frame(&udp_seg(C2, HOST, 5600, 8083, b"hairpin"));
        let (v, out) = r.veth2(&f);
        assert_eq!((v, ip_of(&out).dst()), (TC_ACT_REDIRECT, C1), "hairpin");
        for (name, typ, code, rest) in ERRORS {
            // c1 (the server) about c2's datagram: back to c2 as from the
            // published port.
            let quote = Ip::new(UDP, C2, C1).packet(&udp_seg(C2, C1, 5600, 9090, b"hairpin"));
            let what = format!("{name} from c1 about the hairpin client's datagram");
            let (v, out) = r.veth(&error_frame(C1, C2, typ, code, rest, &quote));
            assert_eq!(v, TC_ACT_REDIRECT, "{what}");
            let o = ip_of(&out);
            assert_eq!((o.src(), o.dst()), (HOST, C2), "{what}: outer addresses");
            let q = quoted(&out);
            assert_eq!(
                (q.src(), q.dst(), q.ports()),
                (C2, HOST, (5600, 8083)),
                "{what}"
            );
            assert_error_csums(&what, &out, true);
            // c2 (the client) about c1's reply: to c1 as its own port.
            let quote = Ip::new(UDP, HOST, C2).packet(&udp_seg(HOST, C2, 8083, 5600, b"reply"));
            let what = format!("{name} from the hairpin client about the reply");
            let (v, out) = r.veth2(&error_frame(C2, HOST, typ, code, rest, &quote));
            assert_eq!(v, TC_ACT_REDIRECT, "{what}");
            assert_eq!(&out[0..6], &c1_mac, "{what}: to c1's MAC");
            let o = ip_of(&out);
            assert_eq!((o.src(), o.dst()), (C2, C1), "{what}: outer addresses");
            let q = quoted(&out);
            assert_eq!(
                (q.src(), q.dst(), q.ports()),
                (C1, C2, (9090, 5600)),
                "{what}"
            );
            assert_error_csums(&what, &out, true);
        }

        // A routed (not masqueraded) flow of c3: its errors reach it with
        // nothing to rewrite but the TTL.
        let f = Ip::new(UDP, C3, OUTSIDE).frame(&udp_seg(C3, OUTSIDE, 4100, 53, b"q"));
        assert_eq!(
            r.veth3(&f),
            (TC_ACT_OK, f.clone()),
            "routed: the host stack"
        );
        let quote = Ip::new(UDP, C3, OUTSIDE).packet(&udp_seg(C3, OUTSIDE, 4100, 53, b"q"));
        let f = error_frame(ROUTER, C3, 3, 4, [0, 0, 5, 0], &quote);
        let (v, out) = r.up(&f);
        assert_eq!(v, TC_ACT_REDIRECT, "an error for a routed flow");
        assert_eq!(
            &out[14 + 12..],
            &f[14 + 12..],
            "addresses and message unchanged"
        );
        assert_eq!(ip_of(&out).ttl(), 63);
        assert_error_csums("routed flow's error", &out, true);

        // A router quoting only 8 bytes of TCP (RFC 792): the ports are
        // rewritten, the TCP checksum is not there to fix.
        let full =
            Ip::new(TCP, HOST, OUTSIDE).packet(&tcp_seg(HOST, OUTSIDE, 8081, 5555, SYN_ACK, b""));
        let (v, out) = r.up(&error_frame(ROUTER, HOST, 3, 4, [0, 0, 5, 0], &full[..28]));
        assert_eq!(v, TC_ACT_REDIRECT);
        assert_eq!(quoted(&out).ports(), (8080, 5555));
        assert_error_csums("8-byte TCP quote", &out, false);

        // Unmatched errors go to the host stack unchanged.
        let mut drops_forged = 0;
        let unmatched = [
            (
                "no flow (the host's own socket)",
                Ip::new(UDP, HOST, OUTSIDE).packet(&udp_seg(HOST, OUTSIDE, 40000, 53, b"x")),
            ),
            (
                "a quote the host did not send",
                Ip::new(UDP, OUTSIDE, HOST).packet(&udp_seg(OUTSIDE, HOST, 53, p, b"x")),
            ),
        ];
        for (what, quote) in &unmatched {
            let f = error_frame(ROUTER, HOST, 3, 3, [0; 4], quote);
            assert_eq!(r.up(&f), (TC_ACT_OK, f.clone()), "{what}");
        }
        // Forged: a published port's packet with no connection behind it, an
        // error to a container address quoting nothing pier routed, a
        // container quoting a flow it does not have.
        let forged = [
            (
                "published port, no connection",
                error_frame(
                    ROUTER,
                    HOST,
                    3,
                    4,
                    [0, 0, 5, 0],
                    &Ip::new(TCP, HOST, OUTSIDE)
                        .packet(&tcp_seg(HOST, OUTSIDE, 8081, 6666, SYN_ACK, b"")),
                ),
                true,
            ),
            (
                "to a container address",
                error_frame(
                    ROUTER,
                    C1,
                    3,
                    3,
                    [0; 4],
                    &Ip::new(UDP, C1, OUTSIDE).packet(&udp_seg(C1, OUTSIDE, 4000, 9, b"x")),
                ),
                true,
            ),
            (
                "from c1 about no flow of its own",
                error_frame(
                    C1,
                    OUTSIDE,
                    3,
                    3,
                    [0; 4],
                    &Ip::new(UDP, OUTSIDE, C1).packet(&udp_seg(OUTSIDE, C1, 1, 2, b"x")),
                ),
                false,
            ),
        ];
        for (what, f, uplink) in &forged {
            let v = if *uplink { r.up(f).0 } else { r.veth(f).0 };
            assert_eq!(v, TC_ACT_SHOT, "{what}");
            drops_forged += 1;
        }

        // Truncated and malformed quotes: never rewritten. To the host's
        // address they pass unchanged, to a container address they stop.
        let good = Ip::new(UDP, HOST, OUTSIDE).packet(&udp_seg(HOST, OUTSIDE, p, 53, b"query"));
        let mut v6 = good.clone();
        v6[0] = 0x65;
        let mut ihl3 = good.clone();
        ihl3[0] = 0x43;
        let mut later = good.clone();
        later[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        let mut gre = good.clone();
        gre[9] = 47;
        let bad: [(&str, Vec<u8>); 7] = [
            ("quoted IPv4 header cut at 10 bytes", good[..10].to_vec()),
            ("quoted IPv4 header only", good[..20].to_vec()),
            (
                "quoted transport header cut at 4 bytes",
                good[..24].to_vec(),
            ),
            ("quoted IPv6 version", v6),
            ("quoted IHL 3", ihl3),
            ("quoted later fragment", later),
            ("quoted GRE", gre),
        ];
        let mut drops_not_published = 0;
        for (what, quote) in &bad {
            let f = error_frame(ROUTER, HOST, 3, 4, [0, 0, 5, 0], quote);
            assert_eq!(r.up(&f), (TC_ACT_OK, f.clone()), "{what}, to the host");
            let f = error_frame(ROUTER, C1, 3, 4, [0, 0, 5, 0], quote);
            assert_eq!(r.up(&f).0, TC_ACT_SHOT, "{what}, to c1");
            drops_not_published += 1;
            let f = error_frame(C1, OUTSIDE, 3, 3, [0; 4], quote);
            assert_eq!(r.veth(&f).0, TC_ACT_SHOT, "{what}, from c1");
            drops_forged += 1;
        }
        // The ICMP header itself cut short.
        let short = Ip::new(ICMP, ROUTER, HOST).frame(&[3, 4, 0, 0]);
        assert_eq!(r.up(&short).0, TC_ACT_SHOT, "ICMP header cut at 4 bytes");

        // A translated error whose TTL runs out here is not forwarded (no
        // error about an error).
        let quote = Ip::new(UDP, HOST, OUTSIDE).packet(&udp_seg(HOST, OUTSIDE, p, 53, b"query"));
        let mut ip = Ip::new(ICMP, ROUTER, HOST);
        ip.ttl = 1;
        let f = ip.frame(&icmp_error(11, 0, [0; 4], &quote));
        assert_eq!(r.up(&f).0, TC_ACT_SHOT, "an error with TTL 1");

        assert_eq!(drops(r.dp, DropReason::IcmpForged), drops_forged);
        assert_eq!(drops(r.dp, DropReason::NotPublished), drops_not_published);
        assert_eq!(drops(r.dp, DropReason::TtlExceeded), 1);
        assert_eq!(drops(r.dp, DropReason::Malformed), 1);
        assert_eq!(drops(r.dp, DropReason::Helper), 0);
    });
}

/// Split an IPv4 datagram of `proto` with payload `l4` into a first
/// fragment carrying `first` payload bytes (a multiple of 8) and a later one.
fn fragments(ip: &Ip, l4: &[u8], first: usize) -> (Vec<u8>, Vec<u8>) {
    let mut a = ip.clone();
    a.frag = 0x2000;
    let mut b = ip.clone();
    b.frag = (first / 8) as u16;
    (a.frame(&l4[..first]), b.frame(&l4[first..]))
}

/// The UDP checksum of a datagram reassembled from two translated fragments.
fn assert_reassembled_udp(what: &str, first: &[u8], later: &[u8]) {
    let (a, b) = (ip_of(first), ip_of(later));
    assert_eq!(
        (a.src(), a.dst()),
        (b.src(), b.dst()),
        "{what}: same addresses"
    );
    assert_ip_csums(&format!("{what} first"), &a, false);
    assert_ip_csums(&format!("{what} later"), &b, false);
    let mut l4 = a.l4().to_vec();
    l4.extend_from_slice(b.l4());
    assert_eq!(
        csum(&l4, pseudo(&a.src(), &a.dst(), UDP, l4.len())),
        0,
        "{what}: UDP checksum of the reassembled datagram"
    );
}

#[test]
fn fragments_follow_their_first_and_unknown_ones_are_dropped() {
    require_root!();
    with_dataplane(|r, c1_mac| {
        let payload: Vec<u8> = (0..2992u32).map(|i| (i * 7) as u8).collect();

        // Outside → published UDP port.
        let mut ip = Ip::new(UDP, OUTSIDE, HOST);
        ip.id = 0x7001;
        let dgram = udp_seg(OUTSIDE, HOST, 5557, 8083, &payload);
        let (first, later) = fragments(&ip, &dgram, 1480);
        let (v, a) = r.up(&first);
        assert_eq!(v, TC_ACT_REDIRECT, "first fragment");
        assert_eq!(ip_of(&a).ports(), (5557, 9090));
        let (v, b) = r.up(&later);
        assert_eq!(v, TC_ACT_REDIRECT, "later fragment");
        assert_eq!(&b[0..6], &c1_mac, "later fragment: to the container's MAC");
        assert_eq!(ip_of(&b).dst(), C1);
        assert_eq!(ip_of(&b).ttl(), 63);
        assert_eq!(ip_of(&b).l4(), ip_of(&later).l4(), "payload untouched");
        assert_reassembled_udp("published", &a, &b);

        // The published server's fragmented reply.
        let mut ip = Ip::new(UDP, C1, OUTSIDE);
        ip.id = 0x7002;
        let dgram = udp_seg(C1, OUTSIDE, 9090, 5557, &payload);
        let (first, later) = fragments(&ip, &dgram, 1480);
        let (v, a) = r.veth(&first);
        assert_eq!(
            (v, ip_of(&a).src(), ip_of(&a).ports()),
            (TC_ACT_REDIRECT, HOST, (8083, 5557))
        );
        let (v, b) = r.veth(&later);
        assert_eq!(
            (v, ip_of(&b).src()),
            (TC_ACT_REDIRECT, HOST),
            "reply's later fragment"
        );
        assert_reassembled_udp("published reply", &a, &b);

        // A container's datagram through masquerade.
        let mut ip = Ip::new(UDP, C1, OUTSIDE);
        ip.id = 0x7003;
        let dgram = udp_seg(C1, OUTSIDE, 4001, 5353, &payload);
        let (first, later) = fragments(&ip, &dgram, 1480);
        let (v, a) = r.veth(&first);
        assert_eq!((v, ip_of(&a).src()), (TC_ACT_REDIRECT, HOST));
        assert_eq!(ip_of(&a).ports().0, 4001, "its own port, free, is kept");
        let (v, b) = r.veth(&later);
        assert_eq!(
            (v, ip_of(&b).src()),
            (TC_ACT_REDIRECT, HOST),
            "masqueraded later fragment"
        );
        assert_reassembled_udp("masqueraded", &a, &b);

        // Later fragments whose first is unknown: to the host's address they
        // may be its own (host stack), to a container or leaving through
        // masquerade they stop.
        let mut ip = Ip::new(UDP, OUTSIDE, HOST);
        ip.id = 0x7004;
        ip.frag = 185;
        let f = ip.frame(&payload[..64]);
        assert_eq!(r.up(&f), (TC_ACT_OK, f.clone()), "unknown, to the host");
        ip.dst = C1;
        assert_eq!(
            r.up(&ip.frame(&payload[..64])).0,
            TC_ACT_SHOT,
            "unknown, to c1"
        );
        let mut ip = Ip::new(UDP, C1, OUTSIDE);
        ip.id = 0x7005;
        ip.frag = 185;
        assert_eq!(
            r.veth(&ip.frame(&payload[..64])).0,
            TC_ACT_SHOT,
            "unknown, from c1"
        );

        // A first fragment pier does not translate (an unpublished host
        // port) makes the datagram the host's: an older translated datagram
        // with the same ID no longer steers its later fragments.
        let mut ip = Ip::new(UDP, OUTSIDE, HOST);
        ip.id = 0x7001;
        let dgram = udp_seg(OUTSIDE, HOST, 5557, 9999, &payload);
        let (first, later) = fragments(&ip, &dgram, 1480);
        assert_eq!(
            r.up(&first),
            (TC_ACT_OK, first.clone()),
            "untranslated first"
        );
        assert_eq!(
            r.up(&later),
            (TC_ACT_OK, later.clone()),
            "its later fragment"
        );

        assert_eq!(drops(r.dp, DropReason::FragNoFirst), 2);
        assert_eq!(drops(r.dp, DropReason::Helper), 0);
    });
}

#[test]
fn ttl_is_decremented_and_an_expiring_packet_is_answered_with_time_exceeded() {
    require_root!();
    with_dataplane(|r, _| {
        let p = masquerade_udp(r, 4000, 53);
        // Forwarded: one less.
        let mut ip = Ip::new(TCP, OUTSIDE, HOST);
        ip.ttl = 2;
        let (v, out) = r.up(&ip.frame(&tcp_seg(OUTSIDE, HOST, 5555, 8081, SYN, b"")));
        assert_eq!((v, ip_of(&out).ttl()), (TC_ACT_REDIRECT, 1));
        assert_ip_csums("TTL 2 → 1", &ip_of(&out), true);

        // Expiring on the way in (published, masquerade reply): the packet
        // becomes time exceeded from the address it was sent to, back out.
        let cases = [
            (
                "published TCP",
                Ip::new(TCP, OUTSIDE, HOST),
                tcp_seg(OUTSIDE, HOST, 5555, 8081, SYN, b"data"),
            ),
            (
                "masqueraded reply",
                Ip::new(UDP, OUTSIDE, HOST),
                udp_seg(OUTSIDE, HOST, 53, p, b"answer"),
            ),
        ];
        for (what, mut ip, l4) in cases {
            ip.ttl = 1;
            let f = ip.frame(&l4);
            let (v, out) = r.up(&f);
            assert_eq!(v, TC_ACT_REDIRECT, "{what}");
            assert_eq!(out.len(), 14 + 20 + 8 + 28, "{what}: length");
            assert_eq!(
                (&out[0..6], &out[6..12]),
                (&SRC_MAC[..], &DST_MAC[..]),
                "{what}: MACs"
            );
            let o = ip_of(&out);
            assert_eq!(
                (o.src(), o.dst(), o.proto(), o.ttl()),
                (HOST, OUTSIDE, ICMP, 64),
                "{what}"
            );
            assert_eq!(&o.l4()[..2], &[11, 0], "{what}: time exceeded in transit");
            assert_eq!(
                &o.l4()[8..],
                &f[14..14 + 28],
                "{what}: quotes the packet as sent"
            );
            assert_ip_csums(what, &o, true);
        }

        // A routed network's reply expiring here: answered from the host.
        let f = Ip::new(UDP, C3, OUTSIDE).frame(&udp_seg(C3, OUTSIDE, 4101, 53, b"q"));
        assert_eq!(r.veth3(&f).0, TC_ACT_OK);
        let mut ip = Ip::new(UDP, OUTSIDE, C3);
        ip.ttl = 1;
        let (v, out) = r.up(&ip.frame(&udp_seg(OUTSIDE, C3, 53, 4101, b"a")));
        let o = ip_of(&out);
        assert_eq!(
            (v, o.src(), o.dst()),
            (TC_ACT_REDIRECT, HOST, OUTSIDE),
            "routed, TTL 1"
        );
        assert_ip_csums("routed time exceeded", &o, true);

        // Leaving from a container: the host stack routes it untranslated
        // and Linux answers, as for any forwarded packet.
        let mut ip = Ip::new(UDP, C1, OUTSIDE);
        ip.ttl = 1;
        let f = ip.frame(&udp_seg(C1, OUTSIDE, 4000, 53, b"query"));
        assert_eq!(r.veth(&f), (TC_ACT_OK, f.clone()), "masquerade, TTL 1");
        let syn = Ip::new(TCP, OUTSIDE, HOST).frame(&tcp_seg(OUTSIDE, HOST, 5556, 8081, SYN, b""));
        assert_eq!(r.up(&syn).0, TC_ACT_REDIRECT);
        let mut ip = Ip::new(TCP, C1, OUTSIDE);
        ip.ttl = 1;
        let f = ip.frame(&tcp_seg(C1, OUTSIDE, 8080, 5556, SYN_ACK, b""));
        assert_eq!(r.veth(&f), (TC_ACT_OK, f.clone()), "published reply, TTL 1");
        // Hairpin to its own published port: answered from the gateway.
        let mut ip = Ip::new(UDP, C1, HOST);
        ip.ttl = 1;
        let (v, out) = r.veth(&ip.frame(&udp_seg(C1, HOST, 4002, 8083, b"me")));
        assert_eq!(v, TC_ACT_REDIRECT, "hairpin, TTL 1");
        let o = ip_of(&out);
        assert_eq!((o.src(), o.dst(), &o.l4()[..2]), (GW, C1, &[11u8, 0][..]));
        assert_ip_csums("hairpin time exceeded", &o, true);

        // A later fragment expiring is dropped (Linux answers only first
        // fragments), and so is a packet with IP options.
        let mut ip = Ip::new(UDP, OUTSIDE, HOST);
        ip.id = 0x7101;
        let payload = [7u8; 1600];
        let (first, later) = fragments(&ip, &udp_seg(OUTSIDE, HOST, 5558, 8083, &payload), 1480);
        assert_eq!(r.up(&first).0, TC_ACT_REDIRECT);
        let mut later = later;
        later[14 + 8] = 1;
        let c = csum(
            &{
                let mut h = later[14..34].to_vec();
                h[10] = 0;
                h[11] = 0;
                h
            },
            0,
        );
        later[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(r.up(&later).0, TC_ACT_SHOT, "later fragment, TTL 1");
        let mut opt = Ip::new(TCP, OUTSIDE, HOST);
        opt.ttl = 1;
        let mut f = opt.frame(&tcp_seg(OUTSIDE, HOST, 5559, 8081, SYN, b""));
        // Four NOP options: IHL 6.
        f.splice(34..34, [1u8, 1, 1, 1]);
        f[14] = 0x46;
        let len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&len.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = csum(&f[14..38], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(r.up(&f).0, TC_ACT_SHOT, "IP options, TTL 1");
        assert_eq!(drops(r.dp, DropReason::TtlExceeded), 2);
        assert_eq!(drops(r.dp, DropReason::Helper), 0);
    });
}
