//! Developer commands: `cargo xtask setup | build-ebpf | test | demo | bench | prog-cost`.
mod bench;
mod build;
mod compat;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "pier's developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, bpf-linker, rust-src).
    #[command(alias = "set-up")]
    Setup,
    /// Build the kernel programs (nightly, bpfel-unknown-none, bpf-linker).
    BuildEbpf,
    /// Build the agent (with the kernel programs embedded).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// fmt + clippy + unit tests + root integration tests.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (a test name filter, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// pier's main job end to end, in a sandbox of namespaces.
    Demo,
    /// netavark 1.4.0's own bats suite against pier and Debian's netavark,
    /// side by side (both tallies; fails on a test only Debian passes).
    Compat,
    /// pier as podman's netavark against Debian's netavark: setup/teardown
    /// time (1, 10, 100 ports) and crr through a published port, as ratios.
    BenchNetavark {
        #[arg(long)]
        quick: bool,
    },
    /// Run time per packet of pier's TC programs (bpf_stats) under a fixed
    /// load: published and masqueraded, TCP crr and rr, UDP.
    ProgCost {
        /// Measure what the monitor costs: the programs built without its
        /// event code, the default build with no monitor attached, and with
        /// one attached, interleaved (`pier-prog-cost --variants`).
        #[arg(long)]
        monitor_cost: bool,
        /// With `--monitor-cost`: measure by `BPF_PROG_TEST_RUN` instead of
        /// under load (each path of `dataplane_prog_cost::monitor_cost_per_path`,
        /// three builds interleaved; steadier than bpf_stats under load).
        #[arg(long, requires = "monitor_cost")]
        test_run: bool,
        /// Extra arguments for pier-prog-cost (`--secs 5`, `--json FILE`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Performance comparison: pier vs plain routing, iptables and netavark
    /// (table on the terminal, target/pier-bench/results.json and a chart).
    Bench {
        /// A short run for CI smoke use (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Extra arguments for pier-bench (`--only plain,iptables`, `--runs N`, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::ensure(),
        Cmd::BuildEbpf => {
            setup::ensure()?;
            build::ebpf()
        }
        Cmd::Build { release } => {
            setup::ensure()?;
            build::ebpf()?;
            build::agent(release)
        }
        Cmd::Test { no_lint, args } => test::run(no_lint, &args),
        Cmd::Demo => {
            setup::ensure()?;
            build::ebpf()?;
            build::agent(false)?;
            util::run(util::cmd(util::root().join("target/debug/pier")).arg("--version"))?;
            util::run(util::cmd(util::root().join("target/debug/pier")).arg("features"))?;
            util::run(util::cargo().args([
                "run",
                "--quiet",
                "-p",
                "pier-tests",
                "--bin",
                "pier-demo",
            ]))
        }
        Cmd::Bench { quick, args } => bench::run_bench(quick, &args),
        Cmd::ProgCost {
            monitor_cost,
            test_run,
            args,
        } => {
            if test_run {
                bench::run_monitor_cost_test_run(&args)
            } else {
                bench::run_prog_cost(monitor_cost, &args)
            }
        }
        Cmd::Compat => {
            setup::ensure()?;
            build::ebpf()?;
            build::agent(false)?;
            compat::run()
        }
        Cmd::BenchNetavark { quick } => bench::run_netavark(quick),
    }
}
