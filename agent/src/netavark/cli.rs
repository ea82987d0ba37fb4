//! The `netavark` command line (1.4's): what podman executes. Logs go to
//! stderr, the answer (status blocks, `version`) to stdout, errors as
//! `{"error": "..."}` on stdout with exit status 1.
use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use clap::{Parser, Subcommand};

use super::{Call, Failure, NetworkOptions, aardvark::Aardvark};
use crate::cni::plugin::{Unreachable, http};

/// The real netavark that rootless calls and the macvlan driver go to.
pub const REAL_NETAVARK: &str = "/usr/lib/podman/netavark";
/// Overrides [`REAL_NETAVARK`] (tests, other distributions).
pub const REAL_NETAVARK_ENV: &str = "PIER_REAL_NETAVARK";
/// The protocol version pier speaks.
pub const NETAVARK_VERSION: &str = "1.4.0";

#[derive(Parser, Debug)]
#[command(
    name = "netavark",
    version = concat!("1.4.0 (pier ", env!("CARGO_PKG_VERSION"), ")"),
    about = "pier as netavark 1.4: podman's network setup, done by pier's eBPF dataplane"
)]
struct Opts {
    /// Instead of reading from STDIN, read the configuration to be applied from the given file.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// config directory for aardvark, usually path to a tmpfs.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Tells if current netavark invocation is for rootless container.
    #[arg(short, long)]
    rootless: Option<bool>,
    /// Path to the aardvark-dns binary.
    #[arg(short, long)]
    aardvark_binary: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Configures the given network namespace with the given configuration.
    Setup { network_namespace_path: String },
    /// Undo any configuration applied via setup command.
    Teardown { network_namespace_path: String },
    /// Updates network dns servers for an already configured network.
    Update {
        network_name: String,
        #[arg(long)]
        network_dns_servers: Vec<String>,
    },
    /// Display info about netavark.
    Version,
}

fn real_netavark() -> PathBuf {
    std::env::var_os(REAL_NETAVARK_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(REAL_NETAVARK))
}

/// Hand the whole call to the real netavark: its stdout and exit status.
fn delegate(args: &[String], stdin: Option<&[u8]>, why: &str) -> Result<i32, Failure> {
    let real = real_netavark();
    if !real.exists() {
        return Err(Failure::new(format!(
            "{why} is not done by pier and {} is not installed (apt-get install netavark)",
            real.display()
        )));
    }
    tracing::info!("netavark: {why}: handed to {}", real.display());
    let mut c = Command::new(&real);
    c.args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::inherit()
    });
    let mut child = c
        .spawn()
        .map_err(|e| Failure::new(format!("running {}: {e}", real.display())))?;
    if let (Some(b), Some(mut w)) = (stdin, child.stdin.take()) {
        let _ = w.write_all(b);
    }
    let st = child
        .wait()
        .map_err(|e| Failure::new(format!("waiting for {}: {e}", real.display())))?;
    Ok(st.code().unwrap_or(1))
}

/// The arguments without `-f FILE` (the input goes on stdin instead).
fn without_file(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == "-f" || a == "--file" {
            skip = true;
            continue;
        }
        if a.starts_with("--file=") || (a.starts_with("-f") && a.len() > 2 && !a.starts_with("--"))
        {
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn socket() -> PathBuf {
    std::env::var_os("PIER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCKET))
}

/// What the agent said, or `None` when none answers in this namespace.
fn ask_agent(verb: &str, call: &Call) -> Option<Result<Vec<u8>, Failure>> {
    let sock = socket();
    if !sock.exists() {
        return None;
    }
    let body = serde_json::to_vec(call).expect("a Call serialises");
    match http(&sock, "POST", &format!("/netavark/{verb}"), &body) {
        Err(Unreachable::Down(m)) => {
            tracing::debug!("netavark: {m}: working without the agent");
            None
        }
        Err(Unreachable::Failed(f)) => Some(Err(Failure::new(f.msg))),
        Ok((421, _)) => {
            tracing::debug!("netavark: the agent runs in another namespace: working without it");
            None
        }
        Ok((s, b)) if (200..300).contains(&s) => Some(Ok(b)),
        Ok((s, b)) => Some(Err(serde_json::from_slice::<Failure>(&b).unwrap_or_else(
            |_| {
                Failure::new(format!(
                    "the pier agent answered {s}: {}",
                    String::from_utf8_lossy(&b).trim()
                ))
            },
        ))),
    }
}

fn load(file: Option<&Path>, stdin: &mut Option<Vec<u8>>) -> Result<NetworkOptions, Failure> {
    let wrap = |m: String| Failure::new(format!("failed to load network options: IO error: {m}"));
    let bytes = match file {
        Some(f) => std::fs::read(f).map_err(|e| wrap(e.to_string()))?,
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| wrap(e.to_string()))?;
            b
        }
    };
    let o = serde_json::from_slice(&bytes).map_err(|e| wrap(e.to_string()))?;
    *stdin = Some(bytes);
    Ok(o)
}

/// setup/teardown through the agent, else in-process.
fn core(verb: &str, config: &Path, call: &Call) -> Result<Option<String>, Failure> {
    if let Some(r) = ask_agent(verb, call) {
        let b = r?;
        return Ok((verb == "setup").then(|| String::from_utf8_lossy(&b).trim().to_string()));
    }
    super::local::with_core(config, |d| match verb {
        "setup" => super::setup(d, call).map(|s| Some(serde_json::to_string(&s).unwrap())),
        _ => super::teardown(d, call).map(|()| None),
    })?
}

fn run(args: &[String]) -> Result<i32, Failure> {
    let o = match Opts::try_parse_from(
        std::iter::once("netavark".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(o) => o,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let config = o.config.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
    let aardvark_bin = o
        .aardvark_binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/podman/aardvark-dns"));
    let rootless = o.rootless.unwrap_or(false);
    let (verb, netns) = match &o.cmd {
        Sub::Version => {
            let v = serde_json::json!({
                "version": NETAVARK_VERSION,
                "commit": env!("PIER_GIT_COMMIT"),
                "build_time": env!("PIER_BUILD_TIME"),
                "target": env!("PIER_BUILD_TARGET"),
                "pier": env!("CARGO_PKG_VERSION"),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap());
            return Ok(0);
        }
        Sub::Update { .. } => return delegate(args, None, "netavark update"),
        Sub::Setup {
            network_namespace_path: n,
        } => ("setup", n.clone()),
        Sub::Teardown {
            network_namespace_path: n,
        } => ("teardown", n.clone()),
    };
    if rootless {
        return delegate(args, None, "rootless networking (--rootless=true)");
    }
    if verb == "setup"
        && let Err(e) = std::fs::File::open(&netns).and_then(|f| f.metadata())
    {
        return Err(Failure::new(format!(
            "invalid namespace path: IO error: {e}"
        )));
    }
    let mut raw = None;
    let opts = load(o.file.as_deref(), &mut raw)?;
    if opts.network_info.values().any(|n| n.driver == "macvlan") {
        return delegate(&without_file(args), raw.as_deref(), "the macvlan driver");
    }
    let host_netns = super::netns_inode(Path::new("/proc/self/ns/net")).unwrap_or(0);
    let call = Call {
        netns,
        host_netns,
        opts,
    };
    let aardvark = Aardvark::new(&config, &aardvark_bin, rootless)?;
    if verb == "setup" {
        let plans = super::plan(&call.opts)?;
        let out = core("setup", &config, &call)?.unwrap_or_default();
        if aardvark_bin.exists() {
            let entries = super::aardvark::entries(&call.opts, &plans);
            aardvark.commit(&entries).map_err(|f| {
                Failure::new(format!("IO error: Error while applying dns entries: {f}"))
            })?;
        } else {
            tracing::info!("dns disabled because aardvark-dns path does not exists");
        }
        println!("{out}");
        return Ok(0);
    }
    // Teardown: the DNS entries first (netavark's order), every error kept.
    let mut errors = Vec::new();
    if aardvark_bin.exists()
        && let Err(f) = aardvark.delete(&call.opts)
    {
        errors.push(f.error);
    }
    if let Err(f) = core("teardown", &config, &call) {
        errors.push(f.error);
    }
    match errors.len() {
        0 => Ok(0),
        1 => Err(Failure::new(errors.remove(0))),
        _ => Err(Failure::new(format!(
            "netavark encountered multiple errors:{}",
            errors
                .iter()
                .map(|e| format!("\n\t- {e}"))
                .collect::<String>()
        ))),
    }
}

/// The multi-call entry: `args` without the program name. The exit status.
pub fn main(args: &[String]) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(code) => code,
        Err(f) => {
            println!("{}", serde_json::to_string(&f).unwrap());
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flag_dropped_for_delegation() {
        let a: Vec<String> = ["--config", "/c", "-f", "x.json", "--file=y", "setup", "/n"]
            .map(String::from)
            .to_vec();
        assert_eq!(without_file(&a), ["--config", "/c", "setup", "/n"]);
    }

    #[test]
    fn parses_podmans_command_line() {
        let o = Opts::try_parse_from([
            "netavark",
            "--config",
            "/run/containers/networks",
            "--rootless=false",
            "--aardvark-binary=/usr/lib/podman/aardvark-dns",
            "setup",
            "/run/netns/netns-1",
        ])
        .unwrap();
        assert_eq!(o.rootless, Some(false));
        assert!(matches!(o.cmd, Sub::Setup { .. }));
    }
}
