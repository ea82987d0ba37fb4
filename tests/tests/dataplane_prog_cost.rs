//! Issue 15's profile: the run time of the TC programs per packet, path by
//! path, from `BPF_PROG_TEST_RUN` (the kernel's own timing of one run on a
//! fresh copy of a hand-built frame, no `bpf_stats` and no other traffic in
//! the measurement). A frame the program passes at once (an unknown
//! ethertype) gives the harness' constant, subtracted in the "net" column.
//! A profile, not a check of a speed target (those are benchmarks'):
//! `cargo test -p pier-tests --test dataplane_prog_cost -- --ignored
//! --nocapture` (`PIER_PROG_RUNS=N` runs per path and round, default 20 000).
mod dataplane_util;

use dataplane_util::{progrun::*, *};
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const C1: [u8; 4] = [10, 107, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Median and the mean of the middle 80 % of `ns`.
fn stats(mut ns: Vec<u64>) -> (u64, f64) {
    ns.sort_unstable();
    let cut = ns.len() / 10;
    let mid = &ns[cut..ns.len() - cut];
    let mean = mid.iter().sum::<u64>() as f64 / mid.len() as f64;
    (ns[ns.len() / 2], mean)
}

/// A measured path: name, program, ingress ifindex, frame, verdict.
type Path = (&'static str, &'static str, u32, Vec<u8>, u32);

const TC_ACT_SHOT: u32 = 2;

/// One host with one network, container `c1` and two published ports, its
/// dataplane started (from `object`, or the embedded programs) and the
/// measured flows opened: a published TCP connection (SYN, SYN-ACK), a
/// masqueraded one (SYN) and a published UDP flow.
struct Bench {
    w: World,
    dp: EbpfDataplane,
    paths: Vec<Path>,
}

impl Bench {
    fn new(object: Option<Vec<u8>>) -> Bench {
        let mut w = World::new(false);
        let net = w.network(1, "10.107.0.0/24");
        let c1 = w.container("c1", &net, "10.107.0.2");
        let desired = w.desired(vec![tcp(8081, c1.ip, 8080), udp(8083, c1.ip, 9090)]);
        let cfg = w.config();
        let ns = w.host.host_ns.clone();
        let (dp, paths) = TestHost::in_netns(&ns, || {
            let mut dp = EbpfDataplane::new(cfg);
            if let Some(o) = object {
                dp = dp.with_object(o);
            }
            dp.start().expect("start");
            dp.sync(&desired).expect("sync");
            let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
            let (open, paths) = paths(vc1, c1.mac);
            for (prog, ifindex, f) in &open {
                let (v, _) = dp.test_run_ns(prog, f, *ifindex, 1).unwrap();
                assert_eq!(v, TC_ACT_REDIRECT, "{prog}: opening frame");
            }
            (dp, paths)
        });
        Bench { w, dp, paths }
    }

    /// Median (and middle mean) of `runs` runs of path `i`.
    fn run(&mut self, i: usize, runs: usize) -> (u64, f64) {
        let ns = self.w.host.host_ns.clone();
        let (name, prog, ifindex, f, want) = &self.paths[i];
        let dp = &mut self.dp;
        let (v, t) = TestHost::in_netns(&ns, || dp.test_run_ns(prog, f, *ifindex, runs).unwrap());
        assert_eq!(v, *want, "{name}");
        stats(t)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let ns = self.w.host.host_ns.clone();
        let dp = &mut self.dp;
        TestHost::in_netns(&ns, || dp.remove_all().unwrap());
    }
}

/// The frames that open the measured flows, and the measured paths (the
/// first passes at once: the harness' constant).
#[allow(clippy::type_complexity)]
fn paths(vc1: u32, mac: [u8; 6]) -> (Vec<(&'static str, u32, Vec<u8>)>, Vec<Path>) {
    let up = programs::UPLINK_IN;
    let veth = programs::VETH_IN;
    let with_mac = |f: Vec<u8>| {
        let mut f = f;
        f[6..12].copy_from_slice(&mac);
        f
    };
    let open = vec![
        (up, 0, frame(6, OUTSIDE, HOST, 5555, 8081, SYN)),
        (
            veth,
            vc1,
            with_mac(frame(6, C1, OUTSIDE, 8080, 5555, SYN | ACK)),
        ),
        (veth, vc1, with_mac(frame(6, C1, OUTSIDE, 40000, 7000, SYN))),
        (up, 0, frame(17, OUTSIDE, HOST, 5556, 8083, 0)),
    ];
    let paths: Vec<Path> = vec![
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
        (
            "veth: spoofed source, dropped (an event per packet when attached)",
            veth,
            vc1,
            with_mac(frame(6, [10, 107, 0, 99], OUTSIDE, 40001, 7000, ACK)),
            TC_ACT_SHOT,
        ),
    ];
    (open, paths)
}

/// Loads per build (`PIER_PROG_LOADS`, default 3): each places the programs
/// anew (their JIT images, the maps).
fn loads() -> usize {
    std::env::var("PIER_PROG_LOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// Rounds of every path, interleaved (`PIER_PROG_ROUNDS`, default 5): the
/// spread between rounds is the noise (other work on the machine); the
/// lowest is the figure.
fn rounds() -> usize {
    std::env::var("PIER_PROG_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

#[test]
#[ignore]
fn run_time_per_packet_of_each_path() {
    require_root!();
    let runs = runs_per_round();
    let rounds = rounds();
    let mut b = Bench::new(None);
    let n = b.paths.len();
    let mut res: Vec<Vec<(u64, f64)>> = vec![Vec::new(); n];
    for _ in 0..rounds {
        for (i, r) in res.iter_mut().enumerate() {
            r.push(b.run(i, runs));
        }
    }
    let best = |r: &[(u64, f64)]| r.iter().map(|x| x.0).min().unwrap_or(0);
    // The lowest round's mean of the middle 80 % (the clock's ~10 ns steps
    // hide a few ns in a median; a before/after compares these).
    let best_mean = |r: &[(u64, f64)]| r.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let base = best(&res[0]);
    let base_mean = best_mean(&res[0]);
    println!(
        "| path | program | median ns per round | lowest | net of the harness | lowest mean, net |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, (name, prog, ..)) in b.paths.iter().enumerate() {
        let med: Vec<String> = res[i].iter().map(|r| r.0.to_string()).collect();
        let lo = best(&res[i]);
        println!(
            "| {name} | `{prog}` | {} | {lo} | {} | {:.1} |",
            med.join(" / "),
            lo.saturating_sub(base),
            best_mean(&res[i]) - base_mean
        );
    }
}

/// Issue 13's cost of the monitor, path by path, by `BPF_PROG_TEST_RUN`: the
/// programs built without the event code (`--cfg pier_no_monitor`, the
/// object named by `PIER_NOMON_OBJECT`), the default build with no monitor
/// attached, and with one attached, three hosts measured interleaved.
/// `cargo xtask prog-cost --monitor-cost --test-run` builds the variant and
/// runs this.
#[test]
#[ignore]
fn monitor_cost_per_path() {
    require_root!();
    let Some(obj) = std::env::var_os("PIER_NOMON_OBJECT") else {
        eprintln!(
            "skipped: PIER_NOMON_OBJECT names no object (`cargo xtask prog-cost --monitor-cost --test-run` builds one)"
        );
        return;
    };
    let obj = std::fs::read(&obj).expect("read PIER_NOMON_OBJECT");
    let runs = runs_per_round();
    let rounds = rounds();
    // Each load places the programs anew (their JIT images, the maps): the
    // figure of a build is the mean over `PIER_PROG_LOADS` loads (default 3)
    // of its lowest round.
    let loads = loads();
    let builds = 3;
    // best[path][build]: the sum over the loads of the lowest round's mean
    // of the middle 80 % of its runs (the kernel's clock ticks in steps of
    // about 10 ns here, so medians cannot show a few per cent; the mean over
    // 20 000 runs can). The order of the builds turns each round.
    let mut best: Vec<Vec<f64>> = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..loads {
        let mut v = [
            Bench::new(Some(obj.clone())),
            Bench::new(None),
            Bench::new(None),
        ];
        let hub = v[2].dp.monitor().expect("a monitor hub");
        let sub = hub.subscribe().expect("attach a monitor");
        let n = v[0].paths.len();
        let mut res = vec![vec![f64::INFINITY; builds]; n];
        for round in 0..rounds {
            for (i, per_build) in res.iter_mut().enumerate() {
                for j in 0..builds {
                    let k = (j + round) % builds;
                    per_build[k] = per_build[k].min(v[k].run(i, runs).1);
                }
            }
        }
        if best.is_empty() {
            best = vec![vec![0.0; builds]; n];
        }
        for (b, r) in best.iter_mut().zip(&res) {
            for k in 0..builds {
                b[k] += r[k] / loads as f64;
            }
        }
        // The attached build wrote an event for each dropped packet (read
        // or counted lost); the one with none attached wrote none.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let read = |k: usize| {
            let h = v[k].dp.monitor().expect("a monitor hub");
            let c = h.kernel_counters();
            (
                h.read.load(std::sync::atomic::Ordering::Relaxed),
                c.lost_events,
            )
        };
        let (r1, l1) = read(1);
        let (r2, l2) = read(2);
        println!("events: none attached {r1} read + {l1} lost; one attached {r2} read + {l2} lost");
        assert_eq!(r1 + l1, 0, "no events with no monitor attached");
        assert!(
            r2 + l2 >= (rounds * runs) as u64,
            "the attached build emitted an event per dropped packet"
        );
        drop(sub);
        paths = v[0].paths.iter().map(|p| (p.0, p.4)).collect();
    }
    let net = |k: usize, i: usize| best[i][k] - best[0][k];
    println!(
        "{runs} runs per path and round, {rounds} rounds, {loads} loads; ns net of each build's harness constant (mean over the loads of the lowest round's middle-80 % mean)"
    );
    println!(
        "| path | no event code | none attached | none / no code | one attached | one / no code |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let ratio = |a: f64, b: f64| {
        if b <= 0.0 {
            "-".to_string()
        } else {
            format!("{:.3}", a / b)
        }
    };
    let (mut sum0, mut sum1) = (0.0, 0.0);
    for (i, (name, verdict)) in paths.iter().enumerate().skip(1) {
        let (a, b, c) = (net(0, i), net(1, i), net(2, i));
        if *verdict != TC_ACT_SHOT {
            sum0 += a;
            sum1 += b;
        }
        println!(
            "| {} | {a:.1} | {b:.1} | {} | {c:.1} | {} |",
            name,
            ratio(b, a),
            ratio(c, a)
        );
    }
    println!(
        "sum over the forwarded paths: none attached / no event code = {}",
        ratio(sum1, sum0)
    );
}

/// A before/after of the programs, path by path, by `BPF_PROG_TEST_RUN`:
/// the object named by `PIER_PROG_COST_OBJECT` (another build of the same
/// maps' layout, e.g. the previous commit's `target/ebpf/pier-dataplane.o`)
/// against this build's, two hosts measured interleaved (the order turning
/// each round), over `PIER_PROG_LOADS` loads (default 3) as
/// `monitor_cost_per_path`. `cargo test -p pier-tests --test
/// dataplane_prog_cost -- --ignored --nocapture object_against`.
#[test]
#[ignore]
fn object_against_this_build_per_path() {
    require_root!();
    let Some(path) = std::env::var_os("PIER_PROG_COST_OBJECT") else {
        eprintln!("skipped: PIER_PROG_COST_OBJECT names no object");
        return;
    };
    let obj = std::fs::read(&path).expect("read PIER_PROG_COST_OBJECT");
    let runs = runs_per_round();
    let rounds = rounds();
    let loads = loads();
    let mut best: Vec<[f64; 2]> = Vec::new();
    let mut names = Vec::new();
    for _ in 0..loads {
        let mut v = [Bench::new(Some(obj.clone())), Bench::new(None)];
        let n = v[0].paths.len();
        let mut res = vec![[f64::INFINITY; 2]; n];
        for round in 0..rounds {
            for (i, r) in res.iter_mut().enumerate() {
                for j in 0..2 {
                    let k = (j + round) % 2;
                    r[k] = r[k].min(v[k].run(i, runs).1);
                }
            }
        }
        if best.is_empty() {
            best = vec![[0.0; 2]; n];
        }
        for (b, r) in best.iter_mut().zip(&res) {
            for k in 0..2 {
                b[k] += r[k] / loads as f64;
            }
        }
        names = v[0].paths.iter().map(|p| p.0).collect();
    }
    let net = |k: usize, i: usize| best[i][k] - best[0][k];
    println!(
        "{runs} runs per path and round, {rounds} rounds, {loads} loads; ns net of each build's harness constant (mean over the loads of the lowest round's middle-80 % mean); other = {}",
        path.to_string_lossy()
    );
    println!("| path | other | this build | this / other |");
    println!("| --- | --- | --- | --- |");
    for (i, name) in names.iter().enumerate().skip(1) {
        let (a, b) = (net(0, i), net(1, i));
        println!("| {name} | {a:.1} | {b:.1} | {:.3} |", b / a);
    }
}
