//! The `pier` command line: a thin client of the agent's API (Docker's words).
use std::{collections::BTreeMap, io::Write, path::PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

mod ports;

pub use ports::compact as compact_ports;

use crate::{
    api::{
        client::{Client, seg},
        exec,
        types::*,
    },
    config,
};

#[derive(Parser)]
#[command(
    name = "pier",
    version,
    about = "Docker's container network model, with an eBPF dataplane"
)]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "PIER_SOCKET", default_value = config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the agent (the daemon that owns all kernel state).
    Agent(AgentArgs),
    /// Print the kernel features pier uses.
    Features,
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create a container and optionally run a command in it.
    Run(RunArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// List containers.
    Ps {
        /// Show all containers (default shows just running).
        #[arg(short, long)]
        all: bool,
        /// Only display container IDs.
        #[arg(short, long)]
        quiet: bool,
        /// `json`: one JSON object per line (Docker's field names).
        #[arg(long)]
        format: Option<String>,
    },
    /// Show a container's details (JSON).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a container's output.
    Logs { name: String },
    /// Stop containers' processes.
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Start stopped containers.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Remove also when its process runs (kill it).
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Agent-wide operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// List a container's published ports (like `docker port`).
    Port {
        name: String,
        /// PRIVATE_PORT[/PROTO]: only this container port.
        private_port: Option<String>,
    },
    /// Show packets and bytes per published port, read from the kernel's maps.
    Stats(ports::StatsArgs),
}

#[derive(Args)]
pub struct AgentArgs {
    #[arg(long, default_value = config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[arg(long, default_value = config::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    #[arg(long, default_value = config::DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// Uplink interface(s); default: the interface of the default route.
    #[arg(long = "uplink")]
    pub uplinks: Vec<String>,
    /// Subnet of the default `bridge` network.
    #[arg(long)]
    pub default_subnet: Option<String>,
    /// Attach no socket hooks: host-local clients do not reach published ports.
    #[arg(long, conflicts_with = "cgroup")]
    pub no_cgroup: bool,
    /// Seconds between sweeps of expired conntrack and NAT entries.
    #[arg(long, value_name = "SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ct_gc_interval: u64,
    /// Seconds after which an idle UDP flow is forgotten.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub ct_udp_timeout: u64,
    /// cgroup v2 directory whose processes get the socket hooks (host-local
    /// clients of published ports); default: the cgroup v2 mount root (the
    /// hooks act only on sockets of the agent's own network namespace).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Upstream resolver for names the embedded DNS does not know
    /// (repeatable; default: the host's /etc/resolv.conf servers).
    #[arg(long = "dns-upstream", value_name = "IP")]
    pub dns_upstreams: Vec<std::net::IpAddr>,
    /// Be Docker's network driver `pier`: serve libnetwork's remote driver
    /// API on this unix socket (dockerd finds it as
    /// /run/docker/plugins/pier.sock; use `docker network create -d pier`).
    #[arg(long, value_name = "SOCKET", num_args = 0..=1,
          default_missing_value = crate::docker::DEFAULT_SOCKET)]
    pub docker_plugin: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        /// `json`: one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Create a bridge network.
    Create {
        /// Driver (only `bridge`).
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        /// No way out of the network.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE.
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Label KEY=VALUE.
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// Show networks' details (JSON array).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all networks no container uses.
    Prune {
        /// Do not ask (without it, the answer is read from stdin; none is no).
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// The container's name (default: a generated one).
    #[arg(long)]
    pub name: Option<String>,
    /// bridge (default), a network, host, none or container:NAME.
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// IPv4 address on a user-defined network (default: the lowest free one).
    #[arg(long)]
    pub ip: Option<String>,
    /// Another name on a user-defined network (repeatable).
    #[arg(long = "alias", alias = "network-alias")]
    pub aliases: Vec<String>,
    /// NAME[:ALIAS]
    #[arg(long = "link")]
    pub links: Vec<String>,
    /// [IP:]HOSTPORT[-END]:CONTPORT[-END][/tcp|udp]
    #[arg(short = 'p', long = "publish")]
    pub ports: Vec<String>,
    /// The container's hostname (default: the first 12 hex of its ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// DNS server for this container (repeatable): the embedded resolver's
    /// upstreams for it, or its resolv.conf servers on the default bridge.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Accepted for Docker's fingers; stdio always passes through.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Accepted for Docker's fingers; no terminal is allocated.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when its command exits or it is stopped.
    #[arg(long)]
    pub rm: bool,
    /// Command and arguments: after `--`, or from the first argument that
    /// is not an option (an unknown option is an error, not the command).
    #[arg(trailing_var_arg = true)]
    pub cmd: Vec<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(short = 't', long)]
    pub tty: bool,
    pub name: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Subcommand)]
pub enum SystemCmd {
    /// Remove everything this agent made and stop it.
    Reset {
        /// Do not ask (without it, the answer is read from stdin; none is no).
        #[arg(short, long)]
        force: bool,
    },
}

fn kv(list: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("invalid {what} {s:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s += c;
            } else {
                s += &format!("{c:<width$}   ", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Ask, and read the answer from stdin whether or not it is a terminal (as
/// Docker does): only `y`/`yes` goes ahead; end of input means no.
fn confirm(question: &str, input: &mut impl std::io::BufRead) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut a = String::new();
    let yes = input.read_line(&mut a).is_ok()
        && matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !a.ends_with('\n') {
        // No newline was echoed (end of input): end the prompt's line.
        eprintln!();
    }
    yes
}

/// Ask before `what`; false (with a message that nothing changed) unless yes.
fn confirmed(force: bool, question: &str, what: &str) -> bool {
    if force || confirm(question, &mut std::io::stdin().lock()) {
        return true;
    }
    eprintln!("{what} cancelled: nothing was removed");
    false
}

/// Apply `f` to each name; print what succeeded, report each failure; fail if any did.
fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    let mut code = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `inspect` of several objects: one JSON array of those found, an error
/// line for each one not found (and exit code 1), as Docker does.
fn inspect_each(
    names: &[String],
    get: impl Fn(&str) -> anyhow::Result<Value>,
) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for n in names {
        match get(n) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

/// Run a CLI command; the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let socket = cli.socket.clone();
    let c = || Client::new(&socket);
    match cli.cmd {
        Cmd::Agent(_) | Cmd::Features => unreachable!("handled in main"),
        Cmd::Network(n) => network(c()?, n),
        Cmd::Run(r) => run_container(c()?, &socket, r),
        Cmd::Exec(e) => exec::exec(
            &config::exec_socket_path(&socket),
            &ExecRequest {
                container: e.name,
                argv: e.cmd,
                main: false,
            },
        ),
        Cmd::Ps { all, quiet, format } => {
            if let Some(f) = &format
                && f != "json"
            {
                bail!("unknown format {f:?}: only json");
            }
            let list: Vec<ContainerListEntry> =
                c()?.get(&format!("/containers/json?all={}", u8::from(all)))?;
            let name = |s: &ContainerListEntry| {
                s.names
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default()
            };
            let nets = |s: &ContainerListEntry| {
                s.network_settings
                    .networks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            };
            if quiet {
                for s in list {
                    println!("{}", &s.id[..12]);
                }
            } else if format.is_some() {
                for s in list {
                    println!(
                        "{}",
                        serde_json::json!({
                            "ID": &s.id[..12],
                            "Command": s.command,
                            "Status": s.status,
                            "State": s.state,
                            "Ports": ports::compact(&s.ports).join(", "),
                            "Networks": nets(&s),
                            "Names": name(&s),
                        })
                    );
                }
            } else {
                let rows = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.id[..12].to_string(),
                            format!("{:?}", s.command),
                            s.status.clone(),
                            ports::compact(&s.ports).join(", "),
                            nets(s),
                            name(s),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "CONTAINER ID",
                            "COMMAND",
                            "STATUS",
                            "PORTS",
                            "NETWORKS",
                            "NAMES"
                        ],
                        rows
                    )
                );
            }
            Ok(0)
        }
        Cmd::Inspect { names } => {
            let c = c()?;
            inspect_each(&names, |n| c.get(&format!("/containers/{}/json", seg(n))))
        }
        Cmd::Logs { name } => {
            let b = c()?.raw(
                hyper::Method::GET,
                &format!("/containers/{}/logs", seg(&name)),
                None,
            )?;
            std::io::stdout().write_all(&b)?;
            Ok(0)
        }
        Cmd::Stop { names } => {
            let c = c()?;
            each(&names, |n| {
                c.post_unit(&format!("/containers/{}/stop", seg(n)), &())
            })
        }
        Cmd::Start { names } => {
            let c = c()?;
            each(&names, |n| {
                c.post_unit(&format!("/containers/{}/start", seg(n)), &())
            })
        }
        Cmd::Rm { force, names } => {
            let c = c()?;
            each(&names, |n| {
                c.delete(&format!("/containers/{}?force={}", seg(n), u8::from(force)))
            })
        }
        Cmd::Port { name, private_port } => ports::port(&c()?, &name, private_port.as_deref()),
        Cmd::Stats(a) => ports::stats(&c()?, a),
        Cmd::System(SystemCmd::Reset { force }) => {
            if !confirmed(
                force,
                "WARNING! This removes every container, network and namespace this pier agent made, and stops the agent. Are you sure?",
                "system reset",
            ) {
                return Ok(1);
            }
            let v: Value = c()?.post("/system/reset", &())?;
            println!("{}", v["message"].as_str().unwrap_or("done"));
            Ok(0)
        }
    }
}

fn network(c: Client, cmd: NetworkCmd) -> anyhow::Result<i32> {
    match cmd {
        NetworkCmd::Ls { quiet, format } => {
            let list: Vec<NetworkSummary> = c
                .get::<Vec<Value>>("/networks")?
                .into_iter()
                .map(|v| NetworkSummary {
                    id: v["Id"].as_str().unwrap_or_default().to_string(),
                    name: v["Name"].as_str().unwrap_or_default().to_string(),
                    driver: v["Driver"].as_str().unwrap_or_default().to_string(),
                    scope: v["Scope"].as_str().unwrap_or_default().to_string(),
                })
                .collect();
            if quiet {
                for n in list {
                    println!("{}", &n.id[..12]);
                }
            } else if let Some(f) = format {
                if f != "json" {
                    bail!("unknown format {f:?}: only json");
                }
                for n in list {
                    println!(
                        "{}",
                        serde_json::json!({"ID": &n.id[..12], "Name": n.name, "Driver": n.driver, "Scope": n.scope})
                    );
                }
            } else {
                let rows = list
                    .into_iter()
                    .map(|n| vec![n.id[..12].to_string(), n.name, n.driver, n.scope])
                    .collect();
                print!(
                    "{}",
                    table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows)
                );
            }
            Ok(0)
        }
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            opts,
            labels,
            name,
        } => {
            if driver != "bridge" {
                bail!("unsupported driver {driver:?}: pier creates bridge networks");
            }
            let pool = subnet.is_some() || gateway.is_some() || ip_range.is_some();
            let r: NetworkCreatedBody = c.post(
                "/networks/create",
                &NetworkCreateBody {
                    name,
                    driver: Some(driver),
                    ipam: pool.then(|| Ipam {
                        config: Some(vec![IpamConfig {
                            subnet,
                            ip_range,
                            gateway,
                            auxiliary_addresses: None,
                        }]),
                        ..Default::default()
                    }),
                    internal,
                    options: Some(kv(&opts, "option")?),
                    labels: Some(kv(&labels, "label")?),
                    ..Default::default()
                },
            )?;
            println!("{}", r.id);
            Ok(0)
        }
        NetworkCmd::Inspect { names } => {
            inspect_each(&names, |n| c.get(&format!("/networks/{}", seg(n))))
        }
        NetworkCmd::Rm { names } => each(&names, |n| c.delete(&format!("/networks/{}", seg(n)))),
        NetworkCmd::Prune { force } => {
            if !confirmed(
                force,
                "WARNING! This will remove all networks not used by at least one container. Are you sure?",
                "network prune",
            ) {
                return Ok(1);
            }
            let p: Pruned = c.post("/networks/prune", &())?;
            if !p.networks_deleted.is_empty() {
                println!("Deleted Networks:");
                for n in p.networks_deleted {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            c.post_unit(
                &format!("/networks/{}/connect", seg(&network)),
                &NetworkConnectBody {
                    container,
                    endpoint_config: Some(EndpointSettings {
                        ipam_config: ip.map(|ip| EndpointIpamConfig {
                            ipv4_address: Some(ip),
                            ..Default::default()
                        }),
                        aliases: (!aliases.is_empty()).then_some(aliases),
                        ..Default::default()
                    }),
                },
            )?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            c.post_unit(
                &format!("/networks/{}/disconnect", seg(&network)),
                &NetworkDisconnect { container, force },
            )?;
            Ok(0)
        }
    }
}

fn run_container(c: Client, socket: &std::path::Path, r: RunArgs) -> anyhow::Result<i32> {
    let fg = !r.detach && !r.cmd.is_empty();
    let created: ContainerCreated = c.post(
        "/containers/create",
        &ContainerCreate {
            name: r.name,
            network: r.network,
            ip: r.ip,
            aliases: r.aliases,
            links: r.links,
            ports: r.ports,
            hostname: r.hostname,
            cmd: r.cmd,
            dns: r.dns,
            detach: !fg,
            // A foreground run removes it itself, below (also when its
            // command was interrupted).
            auto_remove: r.rm && !fg,
        },
    )?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if !fg {
        println!("{}", created.id);
        return Ok(0);
    }
    let code = exec::exec(
        &config::exec_socket_path(socket),
        &ExecRequest {
            container: created.id.clone(),
            argv: Vec::new(),
            main: true,
        },
    )
    .context("running the container's command");
    if r.rm {
        // A command that could not start took its container with it already;
        // any other failure is the one to report.
        let gone = c.delete(&format!("/containers/{}?force=1", seg(&created.id)));
        if let (Err(e), Ok(_)) = (gone, &code) {
            eprintln!("Error: removing the container: {e}");
            return Ok(1);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["pier", "run"].iter().chain(argv))?;
        match cli.cmd {
            Cmd::Run(r) => Ok(r),
            _ => unreachable!(),
        }
    }

    #[test]
    fn run_takes_the_command_after_dashdash_or_the_first_non_option() {
        let r = run_args(&["--name", "x", "--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!(r.cmd, ["sh", "-c", "exit 3"]);
        assert!(!r.rm);
        let r = run_args(&["-d", "sleep", "--foo", "-n"]).unwrap();
        assert_eq!(
            (r.detach, r.cmd),
            (true, vec!["sleep".into(), "--foo".into(), "-n".into()])
        );
        let r = run_args(&["--rm", "--", "--odd-name"]).unwrap();
        assert_eq!((r.rm, r.cmd), (true, vec!["--odd-name".to_string()]));
    }

    #[test]
    fn confirm_needs_a_yes_and_end_of_input_is_no() {
        let ask = |input: &str| confirm("sure?", &mut input.as_bytes());
        for yes in ["y\n", "Y\n", "yes\n", " YES \n", "y"] {
            assert!(ask(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no\n", "yep\n", "\ny\n"] {
            assert!(!ask(no), "{no:?}");
        }
    }

    #[test]
    fn run_rejects_unknown_options_before_the_command() {
        for argv in [
            &["--bogus", "true"][..],
            &["--bogus"],
            &["-z", "--", "true"],
        ] {
            let e = run_args(argv).err().expect("an error");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{argv:?}"
            );
        }
        let r = run_args(&["--rm", "-d", "--", "true"]).unwrap();
        assert!(r.rm && r.detach);
    }
}
