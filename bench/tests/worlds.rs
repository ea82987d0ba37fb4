//! Root tests of the bench's worlds: each peer builds its world, carries
//! traffic through it, shows the exact ruleset size, and leaves nothing behind.
use std::{path::PathBuf, time::Duration};

use pier_bench::{
    cleanup,
    load::Mode,
    netavark,
    peers::{Iptables, Netavark, Peer, Plain},
    pin,
    world::{Bins, Ctx, Targets},
};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces)");
    false
}

fn ctx(tag: &str) -> Ctx {
    let prefix = format!("pb{}-t{tag}", std::process::id());
    Ctx {
        scratch: cleanup::scratch_dir(&prefix),
        prefix,
        bins: Bins {
            echo: env!("CARGO_BIN_EXE_pier-echo").into(),
            load: env!("CARGO_BIN_EXE_pier-load").into(),
            pier: PathBuf::from("/nonexistent/pier"),
            netavark: netavark::PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists()),
        },
        cpu: *pin::allowed_cpus().last().unwrap(),
    }
}

/// Remove the test's scratch root and check that nothing of it is left.
fn finish(ctx: &Ctx) {
    assert_eq!(leftovers(&ctx.prefix), Vec::<String>::new());
    cleanup::remove_all(&ctx.prefix);
    assert!(!ctx.scratch.exists());
}

/// Namespaces under /run/netns whose names start with `prefix-`.
fn leftovers(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// rr, crr and udp through `t`, each a short bounded run, all answered.
fn traffic(ctx: &Ctx, p: &dyn Peer, t: &Targets) {
    let w = p.world();
    let rr = w.load(ctx, Mode::Rr, t.tcp, 0.3).expect("rr");
    assert!(rr.ops > 100, "rr: only {} transactions", rr.ops);
    assert!(rr.p50_us.unwrap() <= rr.p99_us.unwrap());
    let crr = w.load(ctx, Mode::Crr, t.tcp, 0.3).expect("crr");
    assert!(crr.ops > 50, "crr: only {} connections", crr.ops);
    assert_eq!(crr.errors, 0, "crr: failed connections");
    let udp = w.load(ctx, Mode::Udp, t.udp, 0.3).expect("udp");
    assert!(udp.ops > 0 && udp.ops <= udp.sent, "udp: {udp:?}");
    let gbit = w.iperf(ctx, t.iperf, 1, 1).expect("iperf3");
    assert!(gbit > 0.01, "iperf3: {gbit} Gbit/s");
}

fn rules_with(p: &dyn Peer, needle: &str) -> usize {
    let out = pier_bench::world::run(&mut pier_bench::world::cmd_in(
        &p.world().host,
        "iptables-save",
    ))
    .unwrap();
    out.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn plain_world_routes_to_the_container_and_is_removed() {
    if !root() {
        return;
    }
    let ctx = ctx("plain");
    {
        let mut p = Plain::new();
        let t = p.build(&ctx).expect("build");
        assert_eq!(t.tcp.to_string(), "172.17.0.2:8080");
        traffic(&ctx, &p, &t);
        assert_eq!(p.rule_count().unwrap(), None);
        assert!(!leftovers(&ctx.prefix).is_empty());
    }
    assert!(!ctx.scratch.join("plain").exists());
    finish(&ctx);
}

#[test]
fn iptables_world_has_dockers_rules_and_serves_published_ports() {
    if !root() {
        return;
    }
    let ctx = ctx("ipt");
    {
        let mut p = Iptables::new();
        let t = p.build(&ctx).expect("build");
        assert_eq!(t.tcp.to_string(), "198.18.0.1:8081");
        p.set_other_ports(&ctx, 1).unwrap();
        assert_eq!(p.rule_count().unwrap(), Some(27));
        traffic(&ctx, &p, &t);
        p.set_other_ports(&ctx, 100).unwrap();
        assert_eq!(p.rule_count().unwrap(), Some(15 + 3 * 103));
        assert_eq!(rules_with(&p, "-j DNAT"), 103);
        // The measured port's DNAT is the last one, after the other ports'.
        let out = pier_bench::world::run(&mut pier_bench::world::cmd_in(
            &p.world().host,
            "iptables-save",
        ))
        .unwrap();
        let dnat: Vec<&str> = out.lines().filter(|l| l.contains("-j DNAT")).collect();
        assert!(dnat[99].contains("--dport 20198 "), "{}", dnat[99]);
        assert!(dnat[100].contains("--dport 8081 "), "{}", dnat[100]);
        let crr = p.world().load(&ctx, Mode::Crr, t.tcp, 0.3).unwrap();
        assert!(crr.ops > 50 && crr.errors == 0, "{crr:?}");
        // Publishing 1000 ports adds 3000 rules, which go away again.
        let took = p.publish_1000(&ctx, 0).unwrap().unwrap();
        assert!(took > Duration::ZERO);
        assert_eq!(p.rule_count().unwrap(), Some(15 + 3 * 103));
        assert_eq!(p.create_remove(&ctx, 0).unwrap(), None);
    }
    finish(&ctx);
}

#[test]
fn netavark_world_is_set_up_by_netavark() {
    if !root() {
        return;
    }
    let ctx = ctx("nv");
    if ctx.bins.netavark.is_none() {
        eprintln!("skipped: netavark is not installed");
        finish(&ctx);
        return;
    }
    {
        let mut p = Netavark::new(&ctx, 10).unwrap();
        let t = p.build(&ctx).expect("build");
        p.set_other_ports(&ctx, 1).unwrap();
        assert_eq!(rules_with(&p, "-j DNAT"), 4);
        traffic(&ctx, &p, &t);
        // Fillers grow: 3 more ports, the measured container set up again.
        p.set_other_ports(&ctx, 4).unwrap();
        assert_eq!(rules_with(&p, "-j DNAT"), 7);
        let crr = p.world().load(&ctx, Mode::Crr, t.tcp, 0.3).unwrap();
        assert!(crr.ops > 50 && crr.errors == 0, "{crr:?}");
        assert!(p.set_other_ports(&ctx, 2).is_err(), "fillers only grow");
        assert!(p.other_ports_limit(10).is_none());
        assert!(p.other_ports_limit(11).unwrap().starts_with("skipped: "));
        assert!(p.publish_1000(&ctx, 0).unwrap().is_some());
        assert!(p.create_remove(&ctx, 0).unwrap().is_some());
        // publish and create leave their namespaces behind on no account.
        let names = leftovers(&ctx.prefix);
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("-pub0") || n.ends_with("-cr0")),
            "{names:?}"
        );
    }
    finish(&ctx);
}
