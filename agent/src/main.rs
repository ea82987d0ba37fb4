use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pier",
    version,
    about = "Docker's container network model, with an eBPF dataplane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the kernel features pier uses.
    Features,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Features => {
            print!("{}", pier_agent::features::Features::probe().report());
            Ok(())
        }
    }
}
