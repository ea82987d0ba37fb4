//! Load client for the benchmark; prints one JSON line (`LoadResult`).
use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use pier_bench::load::{self, Mode, Params};

#[derive(Parser)]
#[command(about = "pier-bench load client (rr, crr, udp)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Server address, IP:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// ...or after this many transactions/connections/datagrams.
    #[arg(long, default_value_t = 5_000_000)]
    max: u64,
    /// Request/datagram size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.secs > 0.0 && a.secs <= 600.0,
        "--secs must be in (0, 600]"
    );
    anyhow::ensure!((1..=65000).contains(&a.size), "--size must be 1..=65000");
    if let Some(cpu) = a.cpu {
        pier_bench::pin::pin_to(cpu)?;
    }
    let r = load::run(
        a.mode,
        &Params {
            target: a.target,
            duration: Duration::from_secs_f64(a.secs),
            max_ops: a.max,
            size: a.size,
        },
    )?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
