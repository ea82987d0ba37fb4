//! Echo server for the benchmark: TCP echo on `--tcp` ports, a counting UDP
//! sink on `--udp` ports. Runs until killed.
use clap::Parser;

#[derive(Parser)]
#[command(about = "pier-bench echo server (TCP echo, UDP sink)")]
struct Args {
    /// TCP ports to echo on.
    #[arg(long, num_args = 1..)]
    tcp: Vec<u16>,
    /// UDP ports to count datagrams on.
    #[arg(long, num_args = 1..)]
    udp: Vec<u16>,
    /// Pin to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Set net.ipv4.tcp_max_tw_buckets=0 in this namespace first.
    #[arg(long)]
    tw_zero: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        !a.tcp.is_empty() || !a.udp.is_empty(),
        "nothing to serve: give --tcp and/or --udp ports"
    );
    if let Some(cpu) = a.cpu {
        pier_bench::pin::pin_to(cpu)?;
    }
    if a.tw_zero {
        pier_bench::echo::set_tw_buckets(0)
            .map_err(|e| anyhow::anyhow!("setting tcp_max_tw_buckets: {e}"))?;
    }
    pier_bench::echo::serve(&a.tcp, &a.udp).map_err(|e| anyhow::anyhow!("serving: {e}"))
}
