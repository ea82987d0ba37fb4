//! Container create/remove speed (issue 3): in a throw-away TestHost, create
//! N containers on the default bridge with `pier run -d`, then remove them
//! with `pier rm`, timing each CLI call end to end (CLI start, API round
//! trip, netns + veth + addresses through netlink, store commit). Prints the
//! median, p90 and max per container for create, remove and both.
//!
//! Run as root: `cargo run -p pier-tests --example agent_create_bench [N]`.
use std::time::Instant;

use pier_tests::TestHost;

fn stats(name: &str, v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<16} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        pct(0.5),
        pct(0.9),
        v[0],
        v[v.len() - 1]
    );
}

fn main() {
    if !pier_tests::is_root() {
        eprintln!("needs root");
        std::process::exit(1);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let mut create = Vec::new();
    let mut remove = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        host.pier_ok(&["run", "-d", "--name", &format!("b{i}")]);
        create.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for i in 0..n {
        let t = Instant::now();
        host.pier_ok(&["rm", &format!("b{i}")]);
        remove.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut both: Vec<f64> = create.iter().zip(&remove).map(|(a, b)| a + b).collect();
    println!("{n} containers on the default bridge, ms per container (CLI end to end)");
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9}",
        "", "median", "p90", "min", "max"
    );
    stats("create", &mut create);
    stats("remove", &mut remove);
    stats("create+remove", &mut both);
}
