//! Benchmark: creating and removing containers through the agent, as a user
//! sees it — the wall time of `pier run -d` and `pier rm` (CLI, API, store
//! transaction, namespace, veth pair on the bridge, address, MAC, route,
//! per-container files, dataplane and DNS updates). Prints the median, p90
//! and max per container over 100 containers.
//!
//! Run as root: `cargo bench -p pier-tests --bench containers`; the agent under
//! test is `$PIER_BIN` (default `target/debug/pier`; use
//! `PIER_BIN=$PWD/target/release/pier` after `cargo xtask build --release` for
//! release figures). The kernel side alone (NetlinkTopology) is measured by
//! `cargo test -p pier-tests --test topology_bench -- --ignored --nocapture`.
use std::time::{Duration, Instant};

use pier_tests::{TestHost, require_root};

const N: usize = 100;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<22} median {:>7.3} ms   p90 {:>7.3} ms   max {:>7.3} ms   (n={})",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

fn main() {
    require_root!();
    let mut host = TestHost::new();
    // PIER_BENCH_RUST_LOG=pier_agent=debug: the agent logs its step
    // timings; the log is copied to target/bench-agent.log at the end.
    let rust_log = std::env::var("PIER_BENCH_RUST_LOG").ok();
    let agent = host.start_agent_logging(&[], rust_log.as_deref().unwrap_or("info"));
    let timed = |args: &[&str]| {
        let t = Instant::now();
        host.pier_ok(args);
        t.elapsed()
    };
    // The floor every command pays: a CLI process and one API round trip.
    let floor: Vec<Duration> = (0..N).map(|_| timed(&["network", "ls", "-q"])).collect();
    let names: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    let create: Vec<Duration> = names
        .iter()
        .map(|n| timed(&["run", "-d", "--name", n]))
        .collect();
    let running = host.pier_ok(&["ps", "-q"]).lines().count();
    assert_eq!(running, N, "every container is up");
    let remove: Vec<Duration> = names.iter().map(|n| timed(&["rm", n])).collect();
    assert_eq!(
        host.pier_ok(&["ps", "-a", "-q"]),
        "",
        "every container is gone"
    );
    let total: Vec<Duration> = create.iter().zip(&remove).map(|(a, b)| *a + *b).collect();
    println!(
        "\npier agent ({}), {N} containers on the default bridge:",
        pier_tests::host::pier_bin().display()
    );
    stats("pier network ls -q", floor);
    stats("pier run -d", create);
    stats("pier rm", remove);
    stats("create + remove", total);
    if rust_log.is_some() {
        let out =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-agent.log");
        std::fs::write(&out, agent.log()).expect("copying the agent log");
        println!("agent log: {}", out.display());
    }
}
