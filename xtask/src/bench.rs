//! `cargo xtask bench [--quick]`: builds what the comparison needs (kernel
//! programs, the agent and the bench tools, in release) and runs it as root.
use anyhow::bail;

use crate::{
    build, setup,
    util::{cargo, is_root, root, run},
};

pub fn run_bench(quick: bool, args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the benchmark builds network namespaces: run `cargo xtask bench` as root");
    }
    setup::ensure()?;
    build::ebpf()?;
    build::agent(true)?;
    run(cargo().args(["build", "--release", "--package", "pier-bench"]))?;
    let mut c = crate::util::cmd(root().join("target/release/pier-bench"));
    c.arg("--out").arg(root().join("target/pier-bench"));
    if quick {
        c.arg("--quick");
    }
    c.args(args);
    run(&mut c)
}

/// `cargo xtask bench-netavark [--quick]`: pier as netavark against
/// Debian's netavark (setup/teardown with 1, 10, 100 ports; crr through a
/// published port), ratios from the same run.
pub fn run_netavark(quick: bool) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the benchmark builds network namespaces: run it as root");
    }
    let mut c = release_bench(&["pier-netavark-bench"])?;
    if quick {
        c.arg("--quick");
    }
    run(&mut c)
}

/// `cargo xtask prog-cost [-- ARGS]`: ns per packet of pier's TC programs
/// (`bpf_stats`) under a fixed load, published and masqueraded, TCP crr/rr
/// and UDP (`pier-prog-cost`, release build).
pub fn run_prog_cost(monitor_cost: bool, args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("pier-prog-cost builds network namespaces: run it as root");
    }
    let mut c = release_bench(&["pier-prog-cost", "pier-echo", "pier-load"])?;
    if monitor_cost {
        let obj = build::ebpf_variant("nomon", &["--cfg=pier_no_monitor"])?;
        c.arg("--variants").arg("--baseline-object").arg(obj);
    }
    c.args(args);
    run(&mut c)
}

/// `cargo xtask prog-cost --monitor-cost --test-run [-- ARGS]`: the monitor's
/// cost path by path by `BPF_PROG_TEST_RUN` (the build without event code
/// against the default one, none and one monitor attached).
pub fn run_monitor_cost_test_run(args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the test-run profile builds network namespaces: run it as root");
    }
    setup::ensure()?;
    build::ebpf()?;
    let obj = build::ebpf_variant("nomon", &["--cfg=pier_no_monitor"])?;
    let mut c = cargo();
    c.args([
        "test",
        "--package",
        "pier-tests",
        "--test",
        "dataplane_prog_cost",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
        "monitor_cost_per_path",
    ])
    .args(args)
    .env("PIER_NOMON_OBJECT", obj);
    run(&mut c)
}

/// The toolchain, the kernel programs and a release agent, then the
/// pier-bench binaries `bins` (release): the command of the first.
fn release_bench(bins: &[&str]) -> anyhow::Result<std::process::Command> {
    setup::ensure()?;
    build::ebpf()?;
    build::agent(true)?;
    let mut b = cargo();
    b.args(["build", "--release", "--package", "pier-bench"]);
    for bin in bins {
        b.args(["--bin", bin]);
    }
    run(&mut b)?;
    Ok(crate::util::cmd(
        root().join("target/release").join(bins[0]),
    ))
}
