//! `pier-prog-cost`: ns per packet of pier's TC programs under a fixed
//! workload (published and masqueraded; TCP crr, rr and UDP), from the
//! kernel's `bpf_stats`. Run by `cargo xtask prog-cost`.
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use pier_bench::{
    cleanup, pin,
    progcost::{self, ProgCost},
    world::{Bins, Ctx},
};

#[derive(Parser)]
#[command(about = "Run time per packet of pier's TC programs (bpf_stats) under a fixed load")]
struct Args {
    /// Seconds per load.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// The CPU that clients and servers share (default: the last one allowed).
    #[arg(long)]
    cpu: Option<usize>,
    /// The pier binary (default: `pier` next to this program).
    #[arg(long)]
    pier: Option<PathBuf>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep a `pier monitor` attached during the loads.
    #[arg(long)]
    monitor: bool,
    /// What the monitor costs: measure the programs built without its event
    /// code (`--baseline-object`), the default build with no monitor
    /// attached, and with one attached, interleaved for `--rounds` rounds.
    #[arg(long, requires = "baseline_object")]
    variants: bool,
    /// The baseline object of `--variants` (`cargo xtask prog-cost
    /// --monitor-cost` builds it with `--cfg pier_no_monitor`).
    #[arg(long)]
    baseline_object: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("pier-prog-cost builds namespaces and must run as root");
    }
    anyhow::ensure!(a.secs > 0.0 && a.secs <= 60.0, "--secs must be in (0, 60]");
    let cpus = pin::allowed_cpus();
    let cpu = a.cpu.unwrap_or(*cpus.last().unwrap_or(&0));
    anyhow::ensure!(cpus.contains(&cpu), "cpu {cpu} is not one of {cpus:?}");
    let here = std::env::current_exe()?;
    let dir = here.parent().context("exe dir")?.to_path_buf();
    let bins = Bins {
        echo: dir.join("pier-echo"),
        load: dir.join("pier-load"),
        pier: a.pier.clone().unwrap_or_else(|| dir.join("pier")),
        netavark: None,
    };
    for b in [&bins.echo, &bins.load, &bins.pier] {
        anyhow::ensure!(b.exists(), "{} is missing", b.display());
    }
    let ctx = Ctx::prepare("pier-prog-cost", bins, cpu, || {})?;
    let once = |monitor: bool| {
        let r = (|| {
            let pc = ProgCost::build(&ctx, a.secs, monitor)?;
            pc.measure(&ctx)
        })();
        cleanup::remove_all(&ctx.prefix);
        r
    };
    if a.variants {
        let base = a.baseline_object.as_ref().context("--baseline-object")?;
        anyhow::ensure!(base.exists(), "{} is missing", base.display());
        let names = ["no monitor code", "none attached", "one attached"];
        let mut all: Vec<(String, Vec<Vec<progcost::Cost>>)> =
            names.iter().map(|n| (n.to_string(), Vec::new())).collect();
        for round in 0..a.rounds.max(1) {
            for (i, name) in names.iter().enumerate() {
                eprintln!("round {} of {}: {name}", round + 1, a.rounds.max(1));
                // SAFETY: no other thread reads the environment here (the
                // agent, started below, inherits it).
                unsafe {
                    if i == 0 {
                        std::env::set_var("PIER_EBPF_OBJECT_FILE", base);
                    } else {
                        std::env::remove_var("PIER_EBPF_OBJECT_FILE");
                    }
                }
                all[i].1.push(once(i == 2)?);
            }
        }
        println!("{}", progcost::variants_table(&all));
        if let Some(p) = &a.json {
            let v: Vec<_> = all
                .iter()
                .map(|(n, r)| serde_json::json!({"variant": n, "rounds": r}))
                .collect();
            std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
        }
        return Ok(());
    }
    let costs = once(a.monitor)?;
    println!("{}", progcost::table(&costs));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&costs)?)?;
    }
    Ok(())
}
