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
#[command(
    about = "Performance comparison: pier vs one veth pair, plain routing, iptables, netavark, docker-proxy and Docker"
)]
struct Args {
    /// A short run for CI smoke use (under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Where results.json and the chart go.
    #[arg(long, default_value = "target/pier-bench")]
    out: PathBuf,
    /// Only these dataplanes (comma separated: ceiling, plain, iptables,
    /// netavark, docker-proxy, docker, docker+pier, pier, pier+monitor,
    /// and the IPv6 rows ceiling6, ip6tables, pier6).
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
    /// Steps of the container axis (containers on the measured network,
    /// comma separated; overrides the plan), e.g. `1,1000`.
    #[arg(long, value_delimiter = ',')]
    container_steps: Vec<usize>,
    /// Containers created and removed at each container step (overrides
    /// the plan).
    #[arg(long)]
    axis_count: Option<usize>,
    /// Measure the container axis only (create/remove at each step, new
    /// connections through the published port, agent memory after the
    /// last step): minutes instead of the whole bench.
    #[arg(long)]
    containers_only: bool,
    /// Write the results into this Markdown file, between its pier-bench
    /// markers (e.g. docs/benchmarks.md), and the chart next to it.
    #[arg(long)]
    docs: Option<PathBuf>,
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
    if !a.container_steps.is_empty() {
        anyhow::ensure!(
            a.container_steps.iter().all(|n| (1..=5000).contains(n)),
            "--container-steps must be 1..=5000 each"
        );
        plan.container_steps = a.container_steps.clone();
    }
    if let Some(n) = a.axis_count {
        anyhow::ensure!((1..=500).contains(&n), "--axis-count must be 1..=500");
        plan.axis_count = n;
    }
    plan.containers_only = a.containers_only;
    if !a.only.is_empty() {
        plan.peers = a
            .only
            .iter()
            .map(|s| {
                Dataplane::parse(s).with_context(|| {
                    format!(
                        "unknown dataplane {s:?} (ceiling, plain, iptables, netavark, \
                         docker-proxy, docker, docker+pier, pier, pier+monitor, \
                         ceiling6, ip6tables, pier6)"
                    )
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

    let bar = ProgressBar::new(0);
    let ctx = {
        let bar = bar.clone();
        Ctx::prepare("pier-bench", bins, cpu, move || bar.abandon())?
    };
    let prefix = ctx.prefix.clone();
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
    std::fs::write(a.out.join("bpf-stats.json"), results.prog_stats_json())?;
    std::fs::write(
        a.out.join("table.md"),
        report::markdown(&results) + "\n" + &report::prog_markdown(&results),
    )?;
    let mut notes_all = notes.clone();
    notes_all.extend(report::failures(&results));
    std::fs::write(a.out.join("notes.txt"), notes_all.join("\n") + "\n")?;

    if let Some(doc) = &a.docs {
        let chart_name = doc.with_file_name(format!(
            "{}-crr.svg",
            doc.file_stem().unwrap_or_default().to_string_lossy()
        ));
        let chart_ref = chart_name.file_name().unwrap_or_default().to_string_lossy();
        let section = docs_section(
            &results,
            &notes_all,
            &plan,
            a.quick,
            &ctx,
            started.elapsed(),
            &chart_ref,
        )?;
        let text =
            std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
        if chart.is_ok() {
            std::fs::copy(&svg, &chart_name)?;
        }
        std::fs::write(doc, report::replace_section(&text, &section)?)?;
        println!(
            "pier-bench: wrote {} and {}",
            doc.display(),
            chart_name.display()
        );
    }

    println!("{}", report::table(&results));
    let scale = report::scale_table(&results);
    if !scale.is_empty() {
        println!("the same figures at scale (most other ports, most containers) over at 1:");
        println!("{scale}");
    }
    let progs = report::prog_table(&results);
    if !progs.is_empty() {
        println!("run time per packet of pier's programs (bpf_stats, one extra run per load):");
        println!("{progs}");
    }
    for f in report::failures(&results) {
        println!("{f}");
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

/// The generated part of docs/benchmarks.md: machine, versions, table, chart, notes.
fn docs_section(
    results: &pier_bench::results::Results,
    notes: &[String],
    plan: &Plan,
    quick: bool,
    ctx: &Ctx,
    took: std::time::Duration,
    chart: &str,
) -> anyhow::Result<String> {
    let first_line = |prog: &str, args: &[&str]| -> String {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| "not installed".into())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let netavark = ctx
        .bins
        .netavark
        .as_ref()
        .map(|p| first_line(&p.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|| "not installed".into());
    let mut s = String::new();
    s.push_str(&format!(
        "Machine: {} CPUs ({cpu}), {mem_gib:.0} GiB, kernel {}. {}. \
         Tools: {}; {}; {}; {} ({}).\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim(),
        first_line("date", &["-u", "+Run on %Y-%m-%d at %H:%M UTC"]),
        first_line("iptables", &["--version"]),
        first_line("iperf3", &["--version"]),
        netavark,
        first_line(&ctx.bins.pier.to_string_lossy(), &["--version"]),
        ctx.bins.pier.display(),
    ));
    s.push_str(&format!(
        "Plan: {} run, {} runs per figure, {} s per load run, {} s per iperf3 run; \
         client and servers on CPU {}. Took {:.0} s; load average at the end: {}.\n\n",
        if quick { "quick" } else { "full" },
        plan.runs,
        plan.secs,
        plan.iperf_secs,
        ctx.cpu,
        took.as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    ));
    s.push_str(&report::markdown(results));
    s.push_str(&format!(
        "\n![new connections/s vs other published ports]({chart})\n\n"
    ));
    let scale = report::scale_markdown(results);
    if !scale.is_empty() {
        s.push_str(
            "The same figures at scale (the most other published ports, the most \
             containers on the network) over their value at 1:\n\n",
        );
        s.push_str(&scale);
        s.push('\n');
    }
    let progs = report::prog_markdown(results);
    if !progs.is_empty() {
        s.push_str(
            "Run time per packet of pier's programs (`bpf_stats`, one more run of each \
             load with the kernel's accounting on; ns per program run, and runs):\n\n",
        );
        s.push_str(&progs);
        s.push('\n');
    }
    if !notes.is_empty() {
        s.push_str("Notes of the run:\n\n");
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    Ok(s)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}
