//! Issue 15's profile: the run time of the TC programs per packet, path by
//! path, from `BPF_PROG_TEST_RUN` (the kernel's own timing of one run on a
//! fresh copy of a hand-built frame, no `bpf_stats` and no other traffic in
//! the measurement). A frame the program passes at once (an unknown
//! ethertype) gives the harness' constant, subtracted in the "net" column.
//! A profile, not a check of a speed target (those are benchmarks'):
//! `cargo test -p pier-tests --test dataplane_prog_cost -- --ignored
//! --nocapture` (`PIER_PROG_RUNS=N` runs per path and round, default 20 000).
mod dataplane_util;

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const C1: [u8; 4] = [10, 107, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An Ethernet + IPv4 + TCP/UDP frame (checksums left zero: the programs
/// update them incrementally and never verify them).
fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&[0, 8 + 32, 0, 0]);
    }
    l4.extend_from_slice(&[0x61; 32]);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    f
}

/// Median and the mean of the middle 80 % of `ns`.
fn stats(mut ns: Vec<u64>) -> (u64, f64) {
    ns.sort_unstable();
    let cut = ns.len() / 10;
    let mid = &ns[cut..ns.len() - cut];
    let mean = mid.iter().sum::<u64>() as f64 / mid.len() as f64;
    (ns[ns.len() / 2], mean)
}

#[test]
#[ignore]
fn run_time_per_packet_of_each_path() {
    require_root!();
    let runs: usize = std::env::var("PIER_PROG_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let c1 = w.container("c1", &net, "10.107.0.2");
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let up = programs::UPLINK_IN;
        let veth = programs::VETH_IN;
        let with_mac = |f: Vec<u8>| {
            let mut f = f;
            f[6..12].copy_from_slice(&c1.mac);
            f
        };
        // The flows: a published connection and a masqueraded one, each
        // opened by its SYN (and the published one's SYN-ACK).
        let open = [
            (up, 0, frame(6, OUTSIDE, HOST, 5555, 8081, SYN)),
            (
                veth,
                vc1,
                with_mac(frame(6, C1, OUTSIDE, 8080, 5555, SYN | ACK)),
            ),
            (veth, vc1, with_mac(frame(6, C1, OUTSIDE, 40000, 7000, SYN))),
            (up, 0, frame(17, OUTSIDE, HOST, 5556, 8083, 0)),
        ];
        for (prog, ifindex, f) in &open {
            let (v, _) = dp.test_run_ns(prog, f, *ifindex, 1).unwrap();
            assert_eq!(v, TC_ACT_REDIRECT, "{prog}: opening frame");
        }
        let paths: Vec<(&str, &str, u32, Vec<u8>, u32)> = vec![
            (
                "nothing (unknown ethertype)",
                up,
                0,
                {
                    let mut f = frame(6, OUTSIDE, HOST, 1, 1, ACK);
                    f[12..14].copy_from_slice(&[0x88, 0xb5]);
                    f
                },
                TC_ACT_OK,
            ),
            (
                "uplink: TCP to an unpublished host port",
                up,
                0,
                frame(6, OUTSIDE, HOST, 5557, 9999, ACK),
                TC_ACT_OK,
            ),
            (
                "uplink: published TCP, established",
                up,
                0,
                frame(6, OUTSIDE, HOST, 5555, 8081, ACK),
                TC_ACT_REDIRECT,
            ),
            (
                "uplink: published UDP, established",
                up,
                0,
                frame(17, OUTSIDE, HOST, 5556, 8083, 0),
                TC_ACT_REDIRECT,
            ),
            (
                "veth: published TCP reply, established",
                veth,
                vc1,
                with_mac(frame(6, C1, OUTSIDE, 8080, 5555, ACK)),
                TC_ACT_REDIRECT,
            ),
            (
                "veth: masqueraded TCP, established",
                veth,
                vc1,
                with_mac(frame(6, C1, OUTSIDE, 40000, 7000, ACK)),
                TC_ACT_REDIRECT,
            ),
            (
                "uplink: masqueraded TCP reply, established",
                up,
                0,
                frame(6, OUTSIDE, HOST, 7000, 40000, ACK),
                TC_ACT_REDIRECT,
            ),
        ];
        // Rounds, interleaved: the spread between them is the noise (other
        // work on the machine); the lowest median is the figure.
        const ROUNDS: usize = 5;
        let mut res: Vec<Vec<(u64, f64)>> = vec![Vec::new(); paths.len()];
        for _ in 0..ROUNDS {
            for (i, (name, prog, ifindex, f, want)) in paths.iter().enumerate() {
                let (v, ns) = dp.test_run_ns(prog, f, *ifindex, runs).unwrap();
                assert_eq!(v, *want, "{name}");
                res[i].push(stats(ns));
            }
        }
        let best = |r: &[(u64, f64)]| r.iter().map(|x| x.0).min().unwrap_or(0);
        let base = best(&res[0]);
        println!("| path | program | median ns per round | lowest | net of the harness |");
        println!("| --- | --- | --- | --- | --- |");
        for (i, (name, prog, ..)) in paths.iter().enumerate() {
            let med: Vec<String> = res[i].iter().map(|r| r.0.to_string()).collect();
            let b = best(&res[i]);
            println!(
                "| {name} | `{prog}` | {} | {b} | {} |",
                med.join(" / "),
                b.saturating_sub(base)
            );
        }
        dp.remove_all().unwrap();
    });
}
