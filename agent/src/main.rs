use clap::Parser;
use pier_agent::{
    cli::{Cli, Cmd},
    config::AgentConfig,
};

fn agent(socket: std::path::PathBuf, a: pier_agent::cli::AgentArgs) -> anyhow::Result<()> {
    // Before any thread: one malloc arena, fixed thresholds (see `memory`).
    let tuned = pier_agent::memory::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !tuned {
        tracing::debug!("the C library took no malloc settings: memory stays as it allocates");
    }
    // `ip netns exec`: the DNS upstreams are that namespace's resolv.conf
    // (its /etc/netns bind mount), read before leaving its mount namespace.
    let mut dns_upstreams = a.dns_upstreams.clone();
    let netns_upstreams = pier_agent::dns::system_upstreams();
    if let Some(pid) = pier_agent::mountns::join_origin()? {
        tracing::info!(
            "no bpffs or cgroup v2 in this mount namespace (ip netns exec?): joined that of process {pid}, so namespaces and pins outlive the agent"
        );
        if dns_upstreams.is_empty() {
            dns_upstreams = netns_upstreams;
        }
    }
    let cgroup = match (&a.cgroup, a.no_cgroup) {
        (Some(cg), _) => Some(cg.clone()),
        (None, true) => None,
        (None, false) => match pier_agent::features::Features::probe().cgroup2 {
            Some(root) => Some(std::path::PathBuf::from(root)),
            None => match pier_agent::mountns::private_cgroup2(&a.run_dir) {
                Ok(dir) => {
                    tracing::info!("no cgroup v2 mounted: mounted one at {}", dir.display());
                    Some(dir)
                }
                Err(e) => {
                    tracing::warn!(
                        "no cgroup v2 mounted ({e}): host-local clients do not reach published ports"
                    );
                    None
                }
            },
        },
    };
    if let Some(cg) = &cgroup
        && !cg.join("cgroup.procs").exists()
    {
        anyhow::bail!("--cgroup: {} is not a cgroup v2 directory", cg.display());
    }
    let mut cfg = AgentConfig::new(
        a.state_dir,
        a.run_dir,
        socket,
        a.bpffs_dir,
        a.uplinks,
        a.default_subnet.as_deref(),
    )?;
    if let Some(s6) = &a.default_subnet_v6 {
        cfg.default_subnet6 = Some(
            pier_agent::ipam::parse_subnet6(s6)
                .map_err(|e| anyhow::anyhow!("--default-subnet-v6: {e}"))?,
        );
    }
    cfg.ct_gc_interval = std::time::Duration::from_secs(a.ct_gc_interval);
    cfg.ct_udp_timeout = std::time::Duration::from_secs(a.ct_udp_timeout);
    cfg.cgroup = cgroup;
    if a.monitor_buffer < 4096 || !a.monitor_buffer.is_power_of_two() {
        anyhow::bail!(
            "--monitor-buffer: {} is not a power of two of at least 4096",
            a.monitor_buffer
        );
    }
    cfg.monitor_buffer = a.monitor_buffer;
    cfg.metrics_addr = a.metrics_addr;
    cfg.dns_upstreams = dns_upstreams;
    if let Some(p) = &a.docker_plugin
        && !p.is_absolute()
    {
        anyhow::bail!("--docker-plugin: {} is not an absolute path", p.display());
    }
    cfg.docker_plugin = a.docker_plugin;
    pier_agent::daemon::serve::run_default(cfg)
}

fn main() {
    // Multi-call: run as `netavark` (a link or copy named so), or `pier netavark …`.
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if argv0 == "netavark" {
        std::process::exit(pier_agent::netavark::cli::main(&args[1..]));
    }
    if args.get(1).map(String::as_str) == Some("netavark") {
        std::process::exit(pier_agent::netavark::cli::main(&args[2..]));
    }
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Features => {
            print!("{}", pier_agent::features::Features::probe().report());
            Ok(0)
        }
        Cmd::Agent(a) => agent(cli.socket, a).map(|()| 0),
        _ => pier_agent::cli::run(cli),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {}", pier_agent::error::one_line(e.as_ref()));
            // Docker's 126/127 for a command that could not be started.
            let code = e
                .downcast_ref::<pier_agent::api::types::CannotStart>()
                .map_or(1, |c| c.exit_code);
            std::process::exit(code);
        }
    }
}
