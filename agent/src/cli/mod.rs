//! The `pier` command line: a thin client of the agent's API (Docker's words).
use std::{collections::BTreeMap, io::Write, path::PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

mod format;
mod observe;
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
        /// `json` (one JSON object per line), a Go template ({{.Names}}) or
        /// `table TEMPLATE`; fields: ID, Names, Command, Status, State, Ports, Networks, CreatedAt.
        #[arg(long)]
        format: Option<String>,
        /// KEY=VALUE: name, id, network, status, publish, expose.
        #[arg(short, long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Show a container's details (JSON).
    Inspect {
        /// A Go template over each container's JSON ({{.NetworkSettings.IPAddress}}).
        #[arg(short, long)]
        format: Option<String>,
        /// Containers (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a container's output.
    Logs {
        /// The container's name or ID.
        name: String,
    },
    /// Stop containers' processes.
    Stop {
        /// Containers (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Start stopped containers.
    Start {
        /// Containers (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop and start containers again (their ports published again).
    Restart {
        /// Containers (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Remove also when its process runs (kill it).
        #[arg(short, long)]
        force: bool,
        /// Containers (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Agent-wide operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// List a container's published ports (like `docker port`).
    Port {
        /// `json` (one JSON object per line) or a Go template over each
        /// mapping: {{.PrivatePort}}, {{.Type}}, {{.HostIP}}, {{.HostPort}}.
        #[arg(long)]
        format: Option<String>,
        /// The container's name or ID.
        name: String,
        /// PRIVATE_PORT[/PROTO]: only this container port.
        private_port: Option<String>,
    },
    /// Print a shell completion script: `source <(pier completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Show packets, bytes and drops per container, network and uplink
    /// (`--ports`: per published port), read from the kernel's maps.
    Stats(ports::StatsArgs),
    /// Watch the dataplane: drops with their reason and flow, new
    /// published-port connections, masquerade allocations.
    Monitor(observe::MonitorArgs),
    /// Draw the host's networks: uplinks, bridges, containers, published
    /// ports, isolation (Graphviz DOT or SVG).
    Graph(observe::GraphArgs),
    /// Who may reach published ports: source allow/deny rules (pier's
    /// DOCKER-USER; host firewalls do not see published ports).
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Let sources in CIDR reach published ports (then only allowed sources do).
    Allow(PolicyRuleArgs),
    /// Keep sources in CIDR from published ports (wins over an allow of the same length).
    Deny(PolicyRuleArgs),
    /// List the rules (also those from `pier.publish.allow` and `--publish-allow`).
    #[command(alias = "list")]
    Ls {
        /// `json`: one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove rules by ID, or all `pier policy` rules.
    #[command(alias = "remove")]
    Rm {
        /// Remove every `pier policy` rule.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Rule IDs (the ID column of `pier policy ls`).
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
    },
}

#[derive(Args)]
pub struct PolicyRuleArgs {
    /// Source prefixes (10.0.0.0/8) or addresses: one rule each.
    #[arg(required = true, value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// Only this published host port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only this protocol (tcp or udp).
    #[arg(long)]
    pub proto: Option<String>,
    /// Only the ports this container publishes.
    #[arg(long)]
    pub container: Option<String>,
    /// Only packets arriving on this uplink (one of the agent's --uplink).
    #[arg(long, value_name = "IFNAME")]
    pub uplink: Option<String>,
}

#[derive(Args)]
pub struct AgentArgs {
    /// Where the agent keeps its store (networks, containers, endpoints).
    #[arg(long, default_value = config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Runtime files: namespaces' bind mounts, containers' /etc files, logs.
    #[arg(long, default_value = config::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// bpffs directory for the pinned programs and maps (kept across restarts).
    #[arg(long, default_value = config::DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// Uplink interface(s); default: the interface of the default route.
    #[arg(long = "uplink")]
    pub uplinks: Vec<String>,
    /// Subnet of the default `bridge` network.
    #[arg(long)]
    pub default_subnet: Option<String>,
    /// Make the default `bridge` network dual stack with this IPv6 subnet
    /// (gateway `::1` on pier0), at its first start.
    #[arg(long, value_name = "SUBNET")]
    pub default_subnet_v6: Option<String>,
    /// Attach no socket hooks: host-local clients do not reach published ports.
    #[arg(long, conflicts_with = "cgroup")]
    pub no_cgroup: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Size of the monitor's ring buffer in bytes (a power of two, at least
    /// 4096); when it is full, events are counted as lost.
    #[arg(long, value_name = "BYTES", default_value_t = pier_common::maps::EVENTS_BYTES)]
    pub monitor_buffer: u32,
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
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// `json` (one JSON object per line), a Go template ({{.Name}}) or
        /// `table TEMPLATE`; fields: ID, Name, Driver, Scope, IPv6, Internal, Labels, CreatedAt.
        #[arg(long)]
        format: Option<String>,
        /// KEY=VALUE: name, id, driver, label, type (custom|builtin), dangling, scope.
        #[arg(short, long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
    },
    /// Create a bridge network.
    Create {
        /// Driver (only `bridge`).
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Dual stack: an IPv6 pool too (an IPv6 --subnet, else the next
        /// free /64 of fd50:6965:7200::/48).
        #[arg(long)]
        ipv6: bool,
        /// Subnet in CIDR form, e.g. 10.20.0.0/24 or fd00:20::/64, one per
        /// family (default: the next free one of the agent's pool).
        #[arg(long)]
        subnet: Vec<String>,
        /// The bridge's address, inside the --subnet of its family
        /// (default: its first address).
        #[arg(long)]
        gateway: Vec<String>,
        /// Give containers addresses from this CIDR only, inside the
        /// --subnet of its family.
        #[arg(long)]
        ip_range: Vec<String>,
        /// No way out of the network: no masquerade, no published ports.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE.
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Label KEY=VALUE.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The network's name (letters, digits, `_.-`; at most 63).
        name: String,
    },
    /// Show networks' details (JSON array).
    Inspect {
        /// A Go template over each network's JSON ({{.IPAM.Config}}).
        #[arg(short, long)]
        format: Option<String>,
        /// Networks (names or IDs).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks (names or IDs).
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
        /// IPv4 address on the network (default: the lowest free one).
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address on a dual-stack network (default: the lowest free one).
        #[arg(long)]
        ip6: Option<String>,
        /// Another name of the container on this network (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The network's name or ID.
        network: String,
        /// The container's name or ID.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// No error when the container does not exist (any more).
        #[arg(short, long)]
        force: bool,
        /// The network's name or ID.
        network: String,
        /// The container's name or ID.
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
    /// IPv6 address on a dual-stack user-defined network.
    #[arg(long)]
    pub ip6: Option<String>,
    /// Another name on a user-defined network (repeatable).
    #[arg(long = "alias", alias = "network-alias")]
    pub aliases: Vec<String>,
    /// NAME[:ALIAS]
    #[arg(long = "link")]
    pub links: Vec<String>,
    /// Publish a container port: [IP:][HOSTPORT[-END]:]CONTPORT[-END][/tcp|udp]
    /// (no host port, or a host range for one port: one is picked)
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub ports: Vec<String>,
    /// Publish every exposed port (--expose) to an ephemeral host port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Only sources in CIDR reach its published ports (repeatable; every
    /// -p of this run). `pier policy` has the finer rules.
    #[arg(long = "publish-allow", value_name = "CIDR")]
    pub publish_allow: Vec<String>,
    /// A port the container serves, PORT[-END][/tcp|udp] (repeatable; -P publishes it).
    #[arg(long, value_name = "PORT")]
    pub expose: Vec<String>,
    /// An /etc/hosts line NAME:IP (repeatable); IP `host-gateway` is the
    /// gateway of the container's network (Docker's host.docker.internal idiom).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// MAC address of the container's interface on its network.
    #[arg(long, value_name = "MAC")]
    pub mac_address: Option<String>,
    /// The container's hostname (default: the first 12 hex of its ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// DNS server for this container (repeatable): the embedded resolver's
    /// upstreams for it, or its resolv.conf servers on the default bridge.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// DNS search domain for resolv.conf (repeatable; `.` for none): replaces
    /// the host's search domains.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 or timeout:1 (repeatable): replaces
    /// the host's options.
    #[arg(long = "dns-option", value_name = "OPT")]
    pub dns_options: Vec<String>,
    /// Environment variable for the container's processes (repeatable);
    /// a bare KEY takes its value from this shell's environment.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file: KEY=VALUE lines (or KEY,
    /// taken from this shell); `#` comments and blank lines skipped.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
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
    /// Accepted for Docker's fingers; stdio always passes through.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Accepted for Docker's fingers; no terminal is allocated.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The container's name or ID.
    pub name: String,
    /// Command and arguments, run in the container's namespaces with its environment.
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
    format: Option<&str>,
    get: impl Fn(&str) -> anyhow::Result<Value>,
) -> anyhow::Result<i32> {
    let format = format.map(|f| format::Format::parse(f, &[])).transpose()?;
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
    match format {
        Some(f) => f.print_all(&out)?,
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(code)
}

/// `--filter KEY=VALUE`s as Docker's `&filters={"KEY":{"VALUE":true}}`.
fn filters_query(filters: &[String]) -> anyhow::Result<String> {
    if filters.is_empty() {
        return Ok(String::new());
    }
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in filters {
        let Some((k, v)) = f.split_once('=') else {
            bail!("bad format of filter {f:?} (expected name=value)");
        };
        m.entry(k.to_string())
            .or_default()
            .insert(v.to_string(), true);
    }
    let json = serde_json::to_string(&m)?;
    let enc: String = json
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("&filters={enc}"))
}

/// The command of a `ps` row without the table's quotes.
fn list_command(r: &Value) -> String {
    let q = r["Command"].as_str().unwrap_or_default();
    serde_json::from_str::<String>(q).unwrap_or_else(|_| q.to_string())
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
        Cmd::Ps {
            all,
            quiet,
            format,
            filters,
        } => {
            let f = filters_query(&filters)?;
            let list: Vec<ContainerListEntry> =
                c()?.get(&format!("/containers/json?all={}{f}", u8::from(all)))?;
            let rows: Vec<Value> = list
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "ID": &s.id[..12],
                        "Command": format!("{:?}", s.command),
                        "Status": s.status,
                        "State": s.state,
                        "Ports": ports::compact(&s.ports).join(", "),
                        "Networks": s.network_settings.networks.keys().cloned().collect::<Vec<_>>().join(","),
                        "Names": s.names.first().map(|n| n.trim_start_matches('/')).unwrap_or_default(),
                        "CreatedAt": s.created,
                        "Labels": s.labels,
                    })
                })
                .collect();
            if quiet {
                for s in list {
                    println!("{}", &s.id[..12]);
                }
            } else if let Some(f) = format {
                let f = format::Format::parse(
                    &f,
                    &[("ID", "CONTAINER ID"), ("CreatedAt", "CREATED AT")],
                )?;
                if matches!(f, format::Format::Json) {
                    for mut r in rows {
                        // The command as it is, not quoted.
                        let cmd = list_command(&r);
                        r["Command"] = serde_json::json!(cmd);
                        println!("{r}");
                    }
                } else {
                    f.print_all(&rows)?;
                }
            } else {
                let rows = rows
                    .iter()
                    .map(|r| {
                        ["ID", "Command", "Status", "Ports", "Networks", "Names"]
                            .iter()
                            .map(|k| match &r[k] {
                                Value::String(s) => s.clone(),
                                o => o.to_string(),
                            })
                            .collect()
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
        Cmd::Inspect { format, names } => {
            let c = c()?;
            inspect_each(&names, format.as_deref(), |n| {
                c.get(&format!("/containers/{}/json", seg(n)))
            })
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
        Cmd::Restart { names } => {
            let c = c()?;
            each(&names, |n| {
                c.post_unit(&format!("/containers/{}/restart", seg(n)), &())
            })
        }
        Cmd::Rm { force, names } => {
            let c = c()?;
            each(&names, |n| {
                c.delete(&format!("/containers/{}?force={}", seg(n), u8::from(force)))
            })
        }
        Cmd::Port {
            name,
            private_port,
            format,
        } => ports::port(&c()?, &name, private_port.as_deref(), format.as_deref()),
        Cmd::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "pier", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Stats(a) if !a.ports => observe::traffic(&c()?, a.format.as_deref(), &a.names),
        Cmd::Stats(a) => ports::stats(&c()?, a),
        Cmd::Monitor(a) => observe::monitor(&c()?, a),
        Cmd::Graph(a) => observe::graph(&c()?, a),
        Cmd::Policy(p) => policy(c()?, p),
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
        NetworkCmd::Ls {
            quiet,
            format,
            filters,
        } => {
            let f = filters_query(&filters)?;
            let list: Vec<Value> = c.get(&format!("/networks?{}", f.trim_start_matches('&')))?;
            let rows: Vec<Value> = list
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "ID": v["Id"].as_str().unwrap_or_default().chars().take(12).collect::<String>(),
                        "Name": v["Name"],
                        "Driver": v["Driver"],
                        "Scope": v["Scope"],
                        "IPv6": v["EnableIPv6"],
                        "Internal": v["Internal"],
                        "Labels": v["Labels"],
                        "CreatedAt": v["Created"],
                    })
                })
                .collect();
            if quiet {
                for r in &rows {
                    println!("{}", r["ID"].as_str().unwrap_or_default());
                }
            } else if let Some(f) = format {
                format::Format::parse(&f, &[("ID", "NETWORK ID"), ("CreatedAt", "CREATED")])?
                    .print_all(&rows)?;
            } else {
                let rows = rows
                    .iter()
                    .map(|r| {
                        ["ID", "Name", "Driver", "Scope"]
                            .iter()
                            .map(|k| r[k].as_str().unwrap_or_default().to_string())
                            .collect()
                    })
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
            ipv6,
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
            let config = pools(&subnet, &gateway, &ip_range)?;
            let r: NetworkCreatedBody = c.post(
                "/networks/create",
                &NetworkCreateBody {
                    name,
                    driver: Some(driver),
                    enable_ipv6: ipv6.then_some(true),
                    ipam: (!config.is_empty()).then(|| Ipam {
                        config: Some(config),
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
        NetworkCmd::Inspect { format, names } => inspect_each(&names, format.as_deref(), |n| {
            c.get(&format!("/networks/{}", seg(n)))
        }),
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
            ip6,
            aliases,
            network,
            container,
        } => {
            c.post_unit(
                &format!("/networks/{}/connect", seg(&network)),
                &NetworkConnectBody {
                    container,
                    endpoint_config: Some(EndpointSettings {
                        ipam_config: (ip.is_some() || ip6.is_some()).then(|| EndpointIpamConfig {
                            ipv4_address: ip,
                            ipv6_address: ip6,
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

fn policy(c: Client, cmd: PolicyCmd) -> anyhow::Result<i32> {
    let create = |action: &str, a: PolicyRuleArgs| -> anyhow::Result<i32> {
        let v: Value = c.post(
            "/policies/create",
            &PolicyCreate {
                action: action.into(),
                sources: a.cidrs,
                port: a.port,
                proto: a.proto,
                container: a.container,
                uplink: a.uplink,
            },
        )?;
        for id in v["Ids"].as_array().into_iter().flatten() {
            println!("{id}");
        }
        Ok(0)
    };
    match cmd {
        PolicyCmd::Allow(a) => create("allow", a),
        PolicyCmd::Deny(a) => create("deny", a),
        PolicyCmd::Ls { format } => {
            if let Some(f) = &format
                && f != "json"
            {
                bail!("unknown format {f:?}: only json");
            }
            let rows: Vec<PolicyRow> = c.get("/policies")?;
            if format.is_some() {
                for r in rows {
                    println!("{}", serde_json::to_string(&r)?);
                }
                return Ok(0);
            }
            let rows = rows
                .into_iter()
                .map(|r| {
                    vec![
                        if r.id == 0 {
                            "-".into()
                        } else {
                            r.id.to_string()
                        },
                        r.action,
                        r.source,
                        r.port,
                        r.proto,
                        r.container,
                        r.uplink,
                        r.origin,
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ID",
                        "ACTION",
                        "SOURCE",
                        "PORT",
                        "PROTO",
                        "CONTAINER",
                        "UPLINK",
                        "ORIGIN"
                    ],
                    rows
                )
            );
            Ok(0)
        }
        PolicyCmd::Rm { all: true, .. } => {
            let d: PoliciesDeleted = c.post("/policies/prune", &())?;
            for id in d.deleted {
                println!("{id}");
            }
            Ok(0)
        }
        PolicyCmd::Rm { ids, .. } => each(&ids, |id| c.delete(&format!("/policies/{}", seg(id)))),
    }
}

/// `-e`/`--env-file` as Docker's CLI sends them: a bare `KEY` gets this
/// shell's value when it has one (else stays bare: the agent leaves it out).
fn env_list(env: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let resolve = |e: &str| match e.split_once('=') {
        Some(_) => e.to_string(),
        None => match std::env::var(e) {
            Ok(v) => format!("{e}={v}"),
            Err(_) => e.to_string(),
        },
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("open {}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('=') {
                bail!(
                    "invalid environment variable: {l} (in {} line {})",
                    f.display(),
                    i + 1
                );
            }
            out.push(resolve(l));
        }
    }
    out.extend(env.iter().map(|e| resolve(e)));
    Ok(out)
}

/// `--subnet`/`--gateway`/`--ip-range` as Docker's IPAM pools: at most one
/// of each per address family, grouped by family.
fn pools(
    subnet: &[String],
    gateway: &[String],
    range: &[String],
) -> anyhow::Result<Vec<IpamConfig>> {
    let mut out: Vec<(bool, IpamConfig)> = Vec::new();
    let fam = |v: &str| v.contains(':');
    for (flag, vals) in [
        ("--subnet", subnet),
        ("--gateway", gateway),
        ("--ip-range", range),
    ] {
        for v in vals {
            let six = fam(v);
            let i = match out.iter().position(|(f, _)| *f == six) {
                Some(i) => i,
                None => {
                    out.push((six, IpamConfig::default()));
                    out.len() - 1
                }
            };
            let slot = match flag {
                "--subnet" => &mut out[i].1.subnet,
                "--gateway" => &mut out[i].1.gateway,
                _ => &mut out[i].1.ip_range,
            };
            if slot.is_some() {
                bail!(
                    "{flag}: one {} value at most",
                    if six { "IPv6" } else { "IPv4" }
                );
            }
            *slot = Some(v.clone());
        }
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

fn run_container(c: Client, socket: &std::path::Path, r: RunArgs) -> anyhow::Result<i32> {
    let fg = !r.detach && !r.cmd.is_empty();
    let env = env_list(&r.env, &r.env_files)?;
    let created: ContainerCreated = c.post(
        "/containers/create",
        &ContainerCreate {
            name: r.name,
            network: r.network,
            ip: r.ip,
            ip6: r.ip6,
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
            expose: r.expose,
            publish_all: r.publish_all,
            extra_hosts: r.add_hosts,
            mac_address: r.mac_address,
            publish_allow: r.publish_allow,
            dns_search: r.dns_search,
            dns_options: r.dns_options,
            env,
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

    /// Every subcommand, option and argument says what it is in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{path} (the subcommand)"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<Cli as clap::CommandFactory>::command(), "", &mut missing);
        assert!(missing.is_empty(), "no --help text: {missing:#?}");
    }
}
