//! The `pier-cni` binary: what a CNI runtime executes for `type: "pier"`.
//! It checks `CNI_*` and the config, asks the agent (one HTTP request on
//! its unix socket) and prints the result, or the spec's error JSON on
//! stdout with exit status 1. It never touches the kernel itself.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde_json::{Value, json};

use super::{Attached, Call, Conf, Failure, SUPPORTED_VERSIONS, code, parse_conf};

/// How long one request may take (an ADD makes a veth and syncs maps).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer from the agent.
pub(crate) enum Unreachable {
    /// No agent listens: ADD may be retried, DEL is queued.
    Down(String),
    /// The agent answered with an error.
    Failed(Failure),
}

/// One HTTP/1.1 request on the agent's socket; the answer's status and body.
pub(crate) fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), Unreachable> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        Unreachable::Down(format!(
            "the pier agent does not answer on {}: {e} (is `pier agent` running?)",
            socket.display()
        ))
    })?;
    let io = |e: std::io::Error| {
        Unreachable::Failed(Failure::new(
            code::IO,
            format!("talking to the pier agent on {}: {e}", socket.display()),
        ))
    };
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let bad = || {
        Unreachable::Failed(Failure::new(
            code::IO,
            "the pier agent's answer is not HTTP",
        ))
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut rest = raw[end + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        rest = dechunk(&rest).ok_or_else(bad)?;
    }
    Ok((status, rest))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..nl])
            .ok()?
            .split(';')
            .next()?
            .trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        b = &b[nl + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}

/// `POST /cni/<verb>`: the agent's answer, or why there is none.
fn ask(conf: &Conf, verb: &str, call: &Call) -> Result<Option<Attached>, Unreachable> {
    let body = serde_json::to_vec(call).expect("a Call serialises");
    let (status, body) = http(&conf.socket, "POST", &format!("/cni/{verb}"), &body)?;
    if (200..300).contains(&status) {
        if body.is_empty() {
            return Ok(None);
        }
        return serde_json::from_slice(&body).map(Some).map_err(|e| {
            Unreachable::Failed(Failure::new(
                code::IO,
                format!("the pier agent's answer is not understood: {e}"),
            ))
        });
    }
    Err(Unreachable::Failed(
        serde_json::from_slice::<Failure>(&body).unwrap_or_else(|_| {
            Failure::new(
                code::INTERNAL,
                format!(
                    "the pier agent answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            )
        }),
    ))
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

fn need(k: &str) -> Result<String, Failure> {
    let v = env(k);
    if v.is_empty() {
        return Err(Failure::new(code::INVALID_ENV, format!("{k} is not set")));
    }
    Ok(v)
}

/// `CNI_ARGS` (`K=V;K2=V2`): the pod's or container's name, which podman
/// and the kubelet pass as `K8S_POD_NAME`, if it is a valid name.
fn pod_name() -> Option<String> {
    env("CNI_ARGS")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "K8S_POD_NAME")
        .map(|(_, v)| v.to_string())
        .filter(|v| crate::daemon::validate::check_name("alias", v).is_ok())
}

fn call_of(conf: &Conf, netns: String) -> Result<Call, Failure> {
    let mut aliases = conf.aliases.clone();
    // Podman's aliases hold only the short id: its name comes this way.
    if let Some(n) = pod_name()
        && !aliases.contains(&n)
    {
        aliases.insert(0, n);
    }
    Ok(Call {
        container_id: need("CNI_CONTAINERID")?,
        netns,
        ifname: need("CNI_IFNAME")?,
        network: conf.network.clone(),
        ports: conf.ports.clone(),
        aliases,
        prev_ips: super::prev_ips(conf.prev_result.as_ref()),
        valid: conf.valid.clone(),
        queued_ms: None,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Leave a DEL for the agent's next start (a file per attachment).
fn queue_delete(conf: &Conf, mut call: Call) -> Result<(), Failure> {
    let dir = super::delete_queue_dir(&conf.socket);
    let fail = |e: std::io::Error| {
        Failure::new(
            code::IO,
            format!(
                "the pier agent is down and its DEL queue {} failed: {e}",
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    call.queued_ms = Some(now_ms());
    let ifname_hex: String = call.ifname.bytes().map(|b| format!("{b:02x}")).collect();
    let name = format!("{}_{ifname_hex}", call.container_id);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&call).expect("a Call serialises")).map_err(fail)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json"))).map_err(fail)?;
    Ok(())
}

/// Run `command` with the config `stdin`; the JSON to print on success.
pub fn run(command: &str, stdin: &[u8]) -> Result<Option<Value>, (String, Failure)> {
    let requested = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
        .filter(|v| super::supported(v))
        .unwrap_or_else(|| "1.1.0".to_string());
    let fail = |f: Failure| (requested.clone(), f);
    if command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": requested,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    if !["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&command) {
        return Err(fail(Failure::new(
            code::INVALID_ENV,
            if command.is_empty() {
                "CNI_COMMAND is not set".to_string()
            } else {
                format!("CNI_COMMAND {command:?} is not ADD, DEL, CHECK, VERSION, STATUS or GC")
            },
        )));
    }
    let conf = parse_conf(stdin, command).map_err(&fail)?;
    let fail = |f: Failure| (conf.cni_version.clone(), f);
    match command {
        "ADD" => {
            let call = call_of(&conf, need("CNI_NETNS").map_err(&fail)?).map_err(&fail)?;
            match ask(&conf, "add", &call) {
                Ok(Some(a)) => Ok(Some(super::render_result(
                    &conf.cni_version,
                    &a,
                    conf.prev_result.as_ref(),
                    conf.dns.as_ref(),
                ))),
                Ok(None) => Err(fail(Failure::new(
                    code::INTERNAL,
                    "the pier agent answered ADD without a result",
                ))),
                Err(Unreachable::Down(m)) => Err(fail(Failure::new(code::TRY_AGAIN, m))),
                Err(Unreachable::Failed(f)) => Err(fail(f)),
            }
        }
        "DEL" => {
            let call = call_of(&conf, env("CNI_NETNS")).map_err(&fail)?;
            match ask(&conf, "del", &call) {
                Ok(_) => Ok(None),
                Err(Unreachable::Down(m)) => {
                    queue_delete(&conf, call).map_err(&fail)?;
                    eprintln!("pier-cni: {m}; the DEL is queued for its next start");
                    Ok(None)
                }
                Err(Unreachable::Failed(f)) => Err(fail(f)),
            }
        }
        "CHECK" => {
            if super::version_lt(&conf.cni_version, "0.4.0") {
                return Err(fail(Failure::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("CHECK needs CNI 0.4.0 or later, not {}", conf.cni_version),
                )));
            }
            let call = call_of(&conf, need("CNI_NETNS").map_err(&fail)?).map_err(&fail)?;
            match ask(&conf, "check", &call) {
                Ok(_) => Ok(None),
                // The spec's "try again later" for a transient failure.
                Err(Unreachable::Down(m)) => Err(fail(Failure::new(code::TRY_AGAIN, m))),
                Err(Unreachable::Failed(f)) => Err(fail(f)),
            }
        }
        "GC" => {
            let call = Call {
                network: conf.network.clone(),
                valid: conf.valid.clone(),
                ..Default::default()
            };
            match ask(&conf, "gc", &call) {
                Ok(_) => Ok(None),
                Err(Unreachable::Down(m)) => Err(fail(Failure::new(code::TRY_AGAIN, m))),
                Err(Unreachable::Failed(f)) => Err(fail(f)),
            }
        }
        _ => match http(&conf.socket, "GET", "/cni/status", b"") {
            Ok((s, _)) if (200..300).contains(&s) => Ok(None),
            Ok((s, b)) => Err(fail(Failure::new(
                code::NOT_AVAILABLE,
                format!(
                    "the pier agent answered STATUS with {s}: {}",
                    String::from_utf8_lossy(&b).trim()
                ),
            ))),
            Err(Unreachable::Down(m)) => Err(fail(Failure::new(code::NOT_AVAILABLE, m))),
            Err(Unreachable::Failed(f)) => Err(fail(Failure::new(code::NOT_AVAILABLE, f.msg))),
        },
    }
}

/// The binary's `main`: exit status 0 with the result (if any) on stdout,
/// else 1 with the error JSON on stdout.
pub fn main() -> i32 {
    let command = env("CNI_COMMAND");
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = std::io::stdout();
    let mut out = out.lock();
    match run(&command, &stdin) {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err((version, f)) => {
            let mut e = json!({ "cniVersion": version, "code": f.code, "msg": f.msg });
            if !f.details.is_empty() {
                e["details"] = json!(f.details);
            }
            let _ = writeln!(out, "{e}");
            eprintln!("pier-cni: {command}: {}", f.msg);
            1
        }
    }
}
