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
    let r = (|| {
        let pc = ProgCost::build(&ctx, a.secs)?;
        pc.measure(&ctx)
    })();
    cleanup::remove_all(&ctx.prefix);
    let costs = r?;
    println!("{}", progcost::table(&costs));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&costs)?)?;
    }
    Ok(())
}
