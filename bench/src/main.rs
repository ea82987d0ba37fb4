//! `pier-bench`: pier against plain routing, Docker's iptables rules and
//! netavark, side by side, in namespaces of its own. Run by `cargo xtask bench`.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::ProgressBar;
use pier_bench::{
    cleanup, netavark, pin, report,
    results::Dataplane,
    run::{Plan, Runner},
    world::{Bins, Ctx},
};

#[derive(Parser)]
#[command(about = "Performance comparison: pier vs plain routing, iptables and netavark")]
struct Args {
    /// A short run for CI smoke use (under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Where results.json and the chart go.
    #[arg(long, default_value = "target/pier-bench")]
    out: PathBuf,
    /// Only these dataplanes (comma separated: plain,iptables,netavark,pier).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The CPU that clients and servers share (default: the last one allowed).
    #[arg(long)]
    cpu: Option<usize>,
    /// The pier binary (default: `pier` next to this program).
    #[arg(long)]
    pier: Option<PathBuf>,
    /// Runs per figure (overrides the plan).
    #[arg(long)]
    runs: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("pier-bench builds namespaces and must run as root");
    }
    let mut plan = if a.quick { Plan::quick() } else { Plan::full() };
    if let Some(r) = a.runs {
        anyhow::ensure!((1..=50).contains(&r), "--runs must be 1..=50");
        plan.runs = r;
    }
    if !a.only.is_empty() {
        plan.peers = a
            .only
            .iter()
            .map(|s| {
                Dataplane::parse(s).with_context(|| {
                    format!("unknown dataplane {s:?} (plain, iptables, netavark, pier)")
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    for tool in [
        "ip",
        "nsenter",
        "iptables-restore",
        "iptables-save",
        "iperf3",
    ] {
        which(tool).with_context(|| {
            format!("{tool} is missing; `cargo xtask setup` installs what the bench needs")
        })?;
    }
    let cpus = pin::allowed_cpus();
    let cpu = a.cpu.unwrap_or(*cpus.last().unwrap_or(&0));
    anyhow::ensure!(cpus.contains(&cpu), "cpu {cpu} is not one of {cpus:?}");

    let here = std::env::current_exe()?;
    let dir = here.parent().context("exe dir")?.to_path_buf();
    let bins = Bins {
        echo: dir.join("pier-echo"),
        load: dir.join("pier-load"),
        pier: a.pier.clone().unwrap_or_else(|| dir.join("pier")),
        netavark: netavark::PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| which("netavark")),
    };
    for b in [&bins.echo, &bins.load] {
        anyhow::ensure!(
            b.exists(),
            "{} is missing; build pier-bench first",
            b.display()
        );
    }

    let stale = cleanup::remove_stale();
    if !stale.is_empty() {
        eprintln!(
            "pier-bench: removed what crashed runs left: {}",
            stale.join(", ")
        );
    }
    let prefix = cleanup::prefix();
    let ctx = Ctx {
        scratch: cleanup::scratch_dir(&prefix),
        prefix: prefix.clone(),
        bins,
        cpu,
    };
    std::fs::create_dir_all(&ctx.scratch)?;
    let bar = ProgressBar::new(0);
    {
        let bar = bar.clone();
        cleanup::on_interrupt(prefix.clone(), move || bar.abandon())?;
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    println!(
        "pier-bench: {} run, {} runs per figure, client and servers on cpu {cpu} of {}, kernel {kernel}",
        if a.quick { "quick" } else { "full" },
        plan.runs,
        cpus.len()
    );
    let started = Instant::now();
    let (results, notes) = Runner::new(&ctx, &plan, bar).run();
    cleanup::remove_all(&prefix);

    std::fs::create_dir_all(&a.out)?;
    let json = a.out.join("results.json");
    std::fs::write(&json, results.to_json())?;
    let svg = a.out.join("crr-vs-ports.svg");
    let chart = report::chart(&results, &svg);
    std::fs::write(a.out.join("table.md"), report::markdown(&results))?;
    let mut notes_all = notes.clone();
    notes_all.extend(
        report::failures(&results)
            .into_iter()
            .map(|f| format!("failed: {f}")),
    );
    std::fs::write(a.out.join("notes.txt"), notes_all.join("\n") + "\n")?;

    println!("{}", report::table(&results));
    for f in report::failures(&results) {
        println!("failed: {f}");
    }
    println!(
        "pier-bench: {:.0} s; {} and {}",
        started.elapsed().as_secs_f64(),
        json.display(),
        match &chart {
            Ok(()) => svg.display().to_string(),
            Err(e) => format!("no chart ({e})"),
        }
    );
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}
