//! `BPF_PROG_TEST_RUN` of the TC programs with hand-built frames: the
//! fast-path rewrite is byte-exact with valid checksums (also with IP
//! options and a zero UDP checksum), and truncated, fragmented, malformed and
//! unknown-protocol packets get safe verdicts, counted by drop reason. ICMP
//! errors, fragments and the TTL: `dataplane_icmp_progrun`.
mod dataplane_util;

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const C1: [u8; 4] = [10, 106, 0, 2];

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum()
}

struct Frame {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    options: Vec<u8>,
    frag: u16,
    udp_zero_csum: bool,
    ihl_override: Option<u8>,
}

impl Frame {
    fn new(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        Frame {
            proto,
            src,
            dst,
            sport,
            dport,
            options: Vec::new(),
            frag: 0,
            udp_zero_csum: false,
            ihl_override: None,
        }
    }

    fn build(&self) -> Vec<u8> {
        let payload = b"pier-progrun";
        let l4: Vec<u8> = match self.proto {
            6 => {
                let mut t = Vec::new();
                t.extend_from_slice(&self.sport.to_be_bytes());
                t.extend_from_slice(&self.dport.to_be_bytes());
                t.extend_from_slice(&1u32.to_be_bytes()); // seq
                t.extend_from_slice(&0u32.to_be_bytes()); // ack
                t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // SYN
                t.extend_from_slice(payload);
                let c = csum(&t, pseudo(&self.src, &self.dst, 6, t.len()));
                t[16..18].copy_from_slice(&c.to_be_bytes());
                t
            }
            17 => {
                let mut u = Vec::new();
                u.extend_from_slice(&self.sport.to_be_bytes());
                u.extend_from_slice(&self.dport.to_be_bytes());
                u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.extend_from_slice(payload);
                if !self.udp_zero_csum {
                    let c = csum(&u, pseudo(&self.src, &self.dst, 17, u.len()));
                    u[6..8].copy_from_slice(&c.to_be_bytes());
                }
                u
            }
            _ => payload.to_vec(),
        };
        let ihl = self
            .ihl_override
            .unwrap_or(5 + (self.options.len() / 4) as u8);
        let mut ip = vec![0x40 | ihl, 0];
        let total = 20 + self.options.len() + l4.len();
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let c = csum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// Check the IPv4 and transport checksums of a frame.
fn assert_checksums(f: &[u8]) {
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    assert_eq!(csum(&f[14..14 + ihl], 0), 0, "IPv4 header checksum");
    let proto = f[23];
    let (src, dst) = (&f[26..30], &f[30..34]);
    let l4 = &f[14 + ihl..];
    match proto {
        6 => assert_eq!(csum(l4, pseudo(src, dst, 6, l4.len())), 0, "TCP checksum"),
        17 if l4[6..8] != [0, 0] => {
            assert_eq!(csum(l4, pseudo(src, dst, 17, l4.len())), 0, "UDP checksum")
        }
        _ => {}
    }
}

fn ports(f: &[u8]) -> (u16, u16) {
    let l4 = 14 + ((f[14] & 0x0f) as usize) * 4;
    (
        u16::from_be_bytes([f[l4], f[l4 + 1]]),
        u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
    )
}

#[test]
fn programs_rewrite_exactly_and_give_safe_verdicts_to_odd_packets() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.106.0.0/24");
    let c1 = w.container("c1", &net, "10.106.0.2");
    let bridge_mac = mac_of(&w.host.host_ns, "br1");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let mut run = |prog: &str, f: &[u8]| {
            if prog == programs::VETH_IN {
                return veth_run(&mut dp, vc1, c1.mac, f);
            }
            dp.test_run(prog, f, 0)
                .unwrap_or_else(|e| panic!("test_run of {} bytes: {e}", f.len()))
        };
        let up = programs::UPLINK_IN;
        let veth = programs::VETH_IN;

        // Published TCP, plain and with 4 bytes of IP options (NOPs).
        for options in [vec![], vec![1, 1, 1, 1]] {
            let mut fr = Frame::new(6, OUTSIDE, HOST, 5555, 8081);
            fr.options = options.clone();
            let (v, out) = run(up, &fr.build());
            assert_eq!(v, TC_ACT_REDIRECT, "options {options:?}");
            assert_eq!(&out[0..6], &c1.mac, "destination MAC = the container's");
            assert_eq!(&out[6..12], &bridge_mac, "source MAC = the bridge's");
            assert_eq!(&out[26..30], &OUTSIDE, "client address kept");
            assert_eq!(&out[30..34], &C1, "destination = the container");
            assert_eq!(&out[34..34 + options.len()], &options[..], "options intact");
            assert_eq!(ports(&out), (5555, 8080));
            assert_eq!(out.len(), fr.build().len());
            assert_checksums(&out);
        }
        // Published UDP, with a checksum and with none (zero stays zero).
        for zero in [false, true] {
            let mut fr = Frame::new(17, OUTSIDE, HOST, 5556, 8083);
            fr.udp_zero_csum = zero;
            let (v, out) = run(up, &fr.build());
            assert_eq!(v, TC_ACT_REDIRECT);
            assert_eq!(ports(&out), (5556, 9090));
            assert_eq!(&out[30..34], &C1);
            if zero {
                assert_eq!(&out[40..42], &[0, 0], "a zero UDP checksum stays zero");
            }
            assert_checksums(&out);
        }

        // Malformed: every one is dropped and counted.
        let good = Frame::new(6, OUTSIDE, HOST, 5555, 8081).build();
        let mut bad_ihl = Frame::new(6, OUTSIDE, HOST, 5555, 8081);
        bad_ihl.ihl_override = Some(3);
        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        let malformed: Vec<(&str, Vec<u8>)> = vec![
            ("IHL longer than the frame", {
                // (The kernel refuses to test-run frames shorter than an IPv4 header.)
                let mut f = good[..34].to_vec();
                f[14] = 0x4f;
                f
            }),
            ("truncated TCP header", good[..34 + 10].to_vec()),
            ("IHL below 5", bad_ihl.build()),
            ("IPv6 version in an IPv4 frame", bad_version),
            ("truncated UDP header", {
                let u = Frame::new(17, OUTSIDE, HOST, 1, 8083).build();
                u[..34 + 4].to_vec()
            }),
        ];
        for (what, f) in &malformed {
            assert_eq!(run(up, f).0, TC_ACT_SHOT, "{what}");
        }

        // A first fragment carries the ports and is translated; a later one
        // whose first is unknown is not passed into a container
        // (dataplane_icmp_progrun has the whole story).
        let mut first = Frame::new(17, OUTSIDE, HOST, 5557, 8083);
        first.frag = 0x2000; // more fragments
        let (v, out) = run(up, &first.build());
        assert_eq!(
            (v, ports(&out)),
            (TC_ACT_REDIRECT, (5557, 9090)),
            "first fragment"
        );
        let mut later = Frame::new(17, OUTSIDE, C1, 0, 0);
        later.frag = 0x0010; // offset 128
        assert_eq!(
            run(up, &later.build()).0,
            TC_ACT_SHOT,
            "fragment to a container"
        );
        // Unknown protocol (GRE).
        assert_eq!(
            run(up, &Frame::new(47, OUTSIDE, HOST, 0, 0).build()).0,
            TC_ACT_OK
        );
        assert_eq!(
            run(up, &Frame::new(47, OUTSIDE, C1, 0, 0).build()).0,
            TC_ACT_SHOT
        );
        // Not IPv4 at all: ARP passes untouched.
        let mut arp = good[..42].to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(up, &arp), (TC_ACT_OK, arp.clone()));

        // From the container: masquerade rewrites UDP (also with options)…
        for options in [vec![], vec![1, 1, 1, 1]] {
            let mut fr = Frame::new(17, C1, OUTSIDE, 4000, 53);
            fr.options = options;
            let (v, out) = run(veth, &fr.build());
            assert_eq!(v, TC_ACT_REDIRECT);
            assert_eq!(&out[26..30], &HOST, "source = the uplink's address");
            let (sport, dport) = ports(&out);
            // The flow's own source port, free here, is kept.
            assert!(sport == 4000 && dport == 53, "{sport} {dport}");
            assert_checksums(&out);
        }
        // …and drops what it cannot translate.
        assert_eq!(
            run(veth, &Frame::new(47, C1, OUTSIDE, 0, 0).build()).0,
            TC_ACT_SHOT
        );
        let mut frag = Frame::new(17, C1, OUTSIDE, 4000, 53);
        frag.frag = 0x0010; // a later fragment, its first unknown
        assert_eq!(run(veth, &frag.build()).0, TC_ACT_SHOT);
        // Multicast and broadcast are left to the host stack, untranslated.
        for dst in [[224, 0, 0, 251], [255, 255, 255, 255]] {
            let f = Frame::new(17, C1, dst, 5353, 5353).build();
            assert_eq!(run(veth, &f), (TC_ACT_OK, f.clone()), "{dst:?}");
        }
        // Within the network, anything passes.
        let peer = [10, 106, 0, 9];
        assert_eq!(
            run(veth, &Frame::new(47, C1, peer, 0, 0).build()).0,
            TC_ACT_OK
        );

        // Spoofing: c1's address on another interface, another address on c1's.
        let spoofed = Frame::new(17, C1, OUTSIDE, 4000, 53).build();
        assert_eq!(dp.test_run(veth, &spoofed, 1).unwrap().0, TC_ACT_SHOT);
        let other = Frame::new(17, [10, 106, 0, 77], [10, 106, 0, 9], 4000, 53).build();
        assert_eq!(veth_run(&mut dp, vc1, c1.mac, &other).0, TC_ACT_SHOT);
        assert_eq!(drops(&dp, DropReason::Spoofed), 2);
        // c1's own address from another MAC (a neighbour's: the bridge would
        // move that MAC's forwarding entry to c1's port): dropped too.
        let mut forged = Frame::new(17, C1, OUTSIDE, 4000, 53).build();
        forged[6..12].copy_from_slice(&[0x02, 0x42, 10, 106, 0, 3]);
        assert_eq!(dp.test_run(veth, &forged, vc1).unwrap().0, TC_ACT_SHOT);
        assert_eq!(drops(&dp, DropReason::MacSpoofed), 1);

        assert_eq!(
            drops(&dp, DropReason::Malformed),
            malformed.len() as u64,
            "malformed packets counted"
        );
        assert_eq!(drops(&dp, DropReason::NotPublished), 1);
        assert_eq!(drops(&dp, DropReason::NatUnsupported), 1);
        assert_eq!(drops(&dp, DropReason::FragNoFirst), 2);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The embedded object with the first instruction of `program` replaced by
/// `exit` (the rest is unreachable: the verifier must refuse it).
fn broken_object(program: &str) -> Vec<u8> {
    let mut elf = pier_agent::dataplane::EBPF_OBJECT.to_vec();
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum) = (u64_at(&elf, 0x28), u16_at(&elf, 0x3a), u16_at(&elf, 0x3c));
    let sh = |i: usize| shoff + i * shentsize;
    let symtab = (0..shnum)
        .find(|&i| u32_at(&elf, sh(i) + 4) == 2)
        .expect("a symbol table");
    let (sym_off, sym_size) = (
        u64_at(&elf, sh(symtab) + 0x18),
        u64_at(&elf, sh(symtab) + 0x20),
    );
    let strtab = u32_at(&elf, sh(symtab) + 0x28);
    let str_off = u64_at(&elf, sh(strtab) + 0x18);
    for s in (sym_off..sym_off + sym_size).step_by(24) {
        let name_off = str_off + u32_at(&elf, s);
        let end = name_off + elf[name_off..].iter().position(|&b| b == 0).unwrap();
        if &elf[name_off..end] == program.as_bytes() {
            let shndx = u16_at(&elf, s + 6);
            let at = u64_at(&elf, sh(shndx) + 0x18) + u64_at(&elf, s + 8);
            elf[at..at + 8].copy_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
            return elf;
        }
    }
    panic!("symbol {program} not found");
}

#[test]
fn a_verifier_rejection_names_the_program_and_leaves_its_log_in_a_file() {
    require_root!();
    let w = World::new(false);
    let cfg = w.config();
    let bpffs = cfg.bpffs_dir.clone();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg).with_object(broken_object(programs::UPLINK_IN));
        let e = dp.start().expect_err("the verifier refuses the program");
        let pier_agent::dataplane::DataplaneError::Verifier { program, msg, log } = &e else {
            panic!("not a verifier error: {e}");
        };
        assert_eq!(program, programs::UPLINK_IN);
        assert!(!msg.is_empty());
        let text = std::fs::read_to_string(log).expect("the log file");
        assert!(text.contains("unreachable insn"), "{text}");
        std::fs::remove_file(log).unwrap();
        // Nothing half-made: no map or link pins.
        assert!(!bpffs.exists(), "pins left after a failed start");
    });
    w.assert_firewalls_untouched();
}

/// Conntrack is keyed by the reply's source: a container that names another
/// container's address must not reach that container's published
/// connections (reverse-translated and sent to the client as if the backend
/// had answered). The source check comes before every lookup.
#[test]
fn a_container_cannot_answer_for_another_containers_published_connection() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.106.0.0/24");
    let c1 = w.container("c1", &net, "10.106.0.2");
    let c2 = w.container("c2", &net, "10.106.0.3");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let vc2 = nix::net::if_::if_nametoindex("vc2").unwrap();
        for (proto, host_port, port) in [(6, 8081, 8080), (17, 8083, 9090)] {
            // The client's first packet makes the conntrack entry.
            let syn = Frame::new(proto, OUTSIDE, HOST, 5555, host_port).build();
            assert_eq!(
                dp.test_run(programs::UPLINK_IN, &syn, 0).unwrap().0,
                TC_ACT_REDIRECT
            );
            let reply = Frame::new(proto, C1, OUTSIDE, port, 5555).build();
            // From c2's veth, with c1's address: dropped, counted, unchanged.
            let before = drops(&dp, DropReason::Spoofed);
            let (v, out) = veth_run(&mut dp, vc2, c2.mac, &reply);
            assert_eq!(
                v, TC_ACT_SHOT,
                "proto {proto}: injected into c1's connection"
            );
            assert_eq!(out, reply);
            assert_eq!(drops(&dp, DropReason::Spoofed), before + 1);
            // From c1's own veth it is the reply, translated.
            let (v, out) = veth_run(&mut dp, vc1, c1.mac, &reply);
            assert_eq!(v, TC_ACT_REDIRECT);
            assert_eq!(&out[26..30], &HOST);
            assert_eq!(ports(&out), (host_port, 5555));
            assert_checksums(&out);
        }
        // What the dataplane fuzz found (dataplane_fuzz.rs), each dropped:
        // from outside with a container's source (a martian), …
        let before = drops(&dp, DropReason::Spoofed);
        let martian = Frame::new(17, C1, HOST, 5555, 8083).build();
        assert_eq!(
            dp.test_run(programs::UPLINK_IN, &martian, 0).unwrap().0,
            TC_ACT_SHOT
        );
        assert_eq!(drops(&dp, DropReason::Spoofed), before + 1);
        // … an echo reply leaving a masquerading network (it answers no
        // ping: none from outside reaches it), …
        let mut reply = Frame::new(1, C1, OUTSIDE, 0, 0).build();
        reply[34..36].copy_from_slice(&[0, 0]);
        let before = drops(&dp, DropReason::NatUnsupported);
        assert_eq!(veth_run(&mut dp, vc1, c1.mac, &reply).0, TC_ACT_SHOT);
        assert_eq!(drops(&dp, DropReason::NatUnsupported), before + 1);
        // … and a later fragment whose IPv4 header is longer than the frame.
        let mut short = Frame::new(17, OUTSIDE, C1, 0, 0);
        short.frag = 0x0010;
        short.ihl_override = Some(15);
        let before = drops(&dp, DropReason::Malformed);
        assert_eq!(
            dp.test_run(programs::UPLINK_IN, &short.build(), 0)
                .unwrap()
                .0,
            TC_ACT_SHOT
        );
        assert_eq!(drops(&dp, DropReason::Malformed), before + 1);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
