//! Issue 15's profile, one level down from `dataplane_prog_cost`'s paths:
//! what each primitive the TC programs are made of costs (`pier_prof`, by
//! `BPF_PROG_TEST_RUN`), and the routed (no masquerade) flow's paths, by
//! the same harness, for this build's object or another's
//! (`PIER_PROG_COST_OBJECT=path`: a before/after). Profiles, not checks:
//! `cargo test -p pier-tests --test dataplane_prim_cost -- --ignored
//! --nocapture` (`PIER_PROG_RUNS=N` runs per case and round, default 20 000).
mod dataplane_util;

use dataplane_util::{progrun::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Median of `ns`.
fn median(mut ns: Vec<u64>) -> u64 {
    ns.sort_unstable();
    ns[ns.len() / 2]
}

/// A routed flow's established packets, both ways, next to a masqueraded
/// one's, net of the harness (a frame passed at once): a routed flow's
/// entry was written twice per packet before (`PIER_SNAT_FWD` and `_REV`
/// re-inserted), it is now refreshed in place.
#[test]
#[ignore]
fn run_time_of_routed_and_masqueraded_flows() {
    require_root!();
    let runs = runs_per_round();
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let c1 = w.container("c1", &net, "10.107.0.2");
    const C1: [u8; 4] = [10, 107, 0, 2];
    let mut routed = w.network(2, "10.108.0.0/24");
    routed.masquerade = false;
    w.networks[1].masquerade = false;
    let c2 = w.container("c2", &routed, "10.108.0.2");
    const C2: [u8; 4] = [10, 108, 0, 2];
    let desired = w.desired(vec![]);
    let cfg = w.config();
    let object = std::env::var_os("PIER_PROG_COST_OBJECT")
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")));
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        if let Some(o) = object {
            dp = dp.with_object(o);
        }
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let (up, veth) = (programs::UPLINK_IN, programs::VETH_IN);
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let vc2 = nix::net::if_::if_nametoindex("vc2").unwrap();
        let from = |mac: [u8; 6], f: Vec<u8>| {
            let mut f = f;
            f[6..12].copy_from_slice(&mac);
            f
        };
        let masq_syn = from(c1.mac, frame(6, C1, OUTSIDE, 40000, 7000, SYN));
        let (v, _) = dp.test_run_ns(veth, &masq_syn, vc1, 1).unwrap();
        assert_eq!(v, TC_ACT_REDIRECT, "masqueraded SYN");
        let routed_syn = from(c2.mac, frame(6, C2, OUTSIDE, 40001, 7000, SYN));
        let (v, _) = dp.test_run_ns(veth, &routed_syn, vc2, 1).unwrap();
        assert_eq!(v, TC_ACT_OK, "routed SYN");
        let mut nothing = frame(6, OUTSIDE, HOST, 1, 1, ACK);
        nothing[12..14].copy_from_slice(&[0x88, 0xb5]);
        let cases: Vec<(&str, &str, u32, Vec<u8>, u32)> = vec![
            ("nothing (unknown ethertype)", up, 0, nothing, TC_ACT_OK),
            (
                "veth: routed TCP (no masquerade), established",
                veth,
                vc2,
                from(c2.mac, frame(6, C2, OUTSIDE, 40001, 7000, ACK)),
                TC_ACT_OK,
            ),
            (
                "uplink: routed TCP reply, established",
                up,
                0,
                frame(6, OUTSIDE, C2, 7000, 40001, ACK),
                TC_ACT_REDIRECT,
            ),
            (
                "veth: masqueraded TCP, established",
                veth,
                vc1,
                from(c1.mac, frame(6, C1, OUTSIDE, 40000, 7000, ACK)),
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
        const ROUNDS: usize = 5;
        let mut res: Vec<Vec<u64>> = vec![Vec::new(); cases.len()];
        for _ in 0..ROUNDS {
            for (i, (name, prog, ifindex, f, want)) in cases.iter().enumerate() {
                let (v, ns) = dp.test_run_ns(prog, f, *ifindex, runs).unwrap();
                assert_eq!(v, *want, "{name}");
                res[i].push(median(ns));
            }
        }
        let best = |r: &[u64]| r.iter().copied().min().unwrap_or(0);
        let base = best(&res[0]);
        println!("| path | program | median ns per round | lowest | net of the harness |");
        println!("| --- | --- | --- | --- | --- |");
        for (i, (name, prog, ..)) in cases.iter().enumerate() {
            let med: Vec<String> = res[i].iter().map(|r| r.to_string()).collect();
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

/// Where the nanoseconds of `dataplane_prog_cost`'s paths go: what one
/// primitive costs —
/// each kind of map lookup the programs make (on an entry present), the
/// clock, checksum and random helpers — from `pier_prof`, which runs the
/// one a frame names `PROF_REPS` times (less the same frame naming none,
/// divided by the repetitions). A profile, not a check: `cargo test -p
/// pier-tests --test dataplane_prim_cost -- --ignored --nocapture primitive`.
#[test]
#[ignore]
fn run_time_of_each_primitive() {
    use pier_common::config::{PROF_OPS, PROF_REPS};
    require_root!();
    let runs = runs_per_round();
    let mut w = World::new(false);
    let net = w.network(1, "10.109.0.0/24");
    let c1 = w.container("c1", &net, "10.109.0.2");
    const C: [u8; 4] = [10, 109, 0, 2];
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let with_mac = |f: Vec<u8>| {
            let mut f = f;
            f[6..12].copy_from_slice(&c1.mac);
            f
        };
        // The entries looked up: a published connection's (PIER_CT) and a
        // masqueraded flow's (PIER_SNAT_*), made by their first packets.
        let open = [
            (
                programs::UPLINK_IN,
                0,
                frame(6, OUTSIDE, HOST, 5555, 8081, SYN),
            ),
            (
                programs::VETH_IN,
                vc1,
                with_mac(frame(6, C, OUTSIDE, 40000, 7000, SYN)),
            ),
        ];
        for (prog, ifindex, f) in &open {
            let (v, _) = dp.test_run_ns(prog, f, *ifindex, 1).unwrap();
            assert_eq!(v, TC_ACT_REDIRECT, "{prog}: opening frame");
        }
        let flow = |s: [u8; 4], d: [u8; 4], sp: u16, dp: u16| {
            let mut k = Vec::new();
            k.extend_from_slice(&s);
            k.extend_from_slice(&d);
            k.extend_from_slice(&sp.to_be_bytes());
            k.extend_from_slice(&dp.to_be_bytes());
            k.extend_from_slice(&[6, 0, 0, 0]);
            k
        };
        let port_key = {
            let mut k = vec![0, 0, 0, 0];
            k.extend_from_slice(&8081u16.to_be_bytes());
            k.extend_from_slice(&[6, 0]);
            k.resize(16, 0);
            k
        };
        let index = {
            let mut k = vc1.to_ne_bytes().to_vec();
            k.resize(16, 0);
            k
        };
        let addr = {
            let mut k = C.to_vec();
            k.resize(16, 0);
            k
        };
        let key_of = |op: u8| match op {
            1 | 4 => port_key.clone(),
            2 => flow(C, OUTSIDE, 8080, 5555),
            3 => flow(C, OUTSIDE, 40000, 7000),
            13 => flow(OUTSIDE, HOST, 7000, 40000),
            5 | 12 => addr.clone(),
            6 | 7 | 14 | 15 => index.clone(),
            _ => vec![0; 16],
        };
        let prof_frame = |op: u8| {
            if op == 0x45 {
                // A whole TCP frame (its version byte names the parse).
                return frame(6, OUTSIDE, HOST, 5555, 8081, ACK);
            }
            let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
            f.extend_from_slice(&[op, 0]);
            f.extend_from_slice(&key_of(op));
            f.resize(96, 0);
            f
        };
        let ops: Vec<(u8, &str)> = std::iter::once((0, "nothing (the harness and loop)"))
            .chain(PROF_OPS.iter().copied())
            .collect();
        const ROUNDS: usize = 5;
        let mut res: Vec<Vec<u64>> = vec![Vec::new(); ops.len()];
        for _ in 0..ROUNDS {
            for (i, (op, name)) in ops.iter().enumerate() {
                let (v, ns) = dp
                    .test_run_ns(programs::PROF, &prof_frame(*op), 0, runs)
                    .unwrap();
                let want = if *op == 0 { 0 } else { PROF_REPS };
                assert_eq!(v, want, "{name}: found its entry each time");
                res[i].push(median(ns));
            }
        }
        let best = |r: &[u64]| r.iter().copied().min().unwrap_or(0);
        let base = best(&res[0]);
        println!("| primitive | median ns of {PROF_REPS} per round | ns each, net |");
        println!("| --- | --- | --- |");
        for (i, (_, name)) in ops.iter().enumerate() {
            let med: Vec<String> = res[i].iter().map(|r| r.to_string()).collect();
            let each = best(&res[i]).saturating_sub(base) as f64 / PROF_REPS as f64;
            println!("| {name} | {} | {each:.1} |", med.join(" / "));
        }
        dp.remove_all().unwrap();
    });
}
