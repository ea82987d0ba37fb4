//! `pier monitor`, `pier stats` (per container, network, uplink) and `pier graph`.
use anyhow::bail;
use clap::Args;

use super::table;
use crate::{
    api::client::Client,
    observe::{MonitorEvent, TrafficRow},
};

#[derive(Args)]
pub struct MonitorArgs {
    /// Only `drop` events or only `trace` events (new published-port
    /// connections, masquerade allocations, conntrack entries made again).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only events of this container (the interface's, the source's or the
    /// destination's).
    #[arg(long)]
    pub container: Option<String>,
    /// Only events on this network.
    #[arg(long)]
    pub network: Option<String>,
    /// Only events with this source or destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// `json`: one JSON object per line (lost counts as `{"type":"lost",…}`).
    #[arg(long)]
    pub format: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

fn query(a: &MonitorArgs) -> String {
    let mut q = Vec::new();
    let enc = |s: &str| crate::api::client::seg(s);
    if let Some(k) = &a.kind {
        q.push(format!("type={}", enc(k)));
    }
    if let Some(c) = &a.container {
        q.push(format!("container={}", enc(c)));
    }
    if let Some(n) = &a.network {
        q.push(format!("network={}", enc(n)));
    }
    if let Some(p) = a.port {
        q.push(format!("port={p}"));
    }
    if q.is_empty() {
        "/monitor".into()
    } else {
        format!("/monitor?{}", q.join("&"))
    }
}

fn endpoint(addr: &Option<String>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.clone(),
        _ => "?".into(),
    }
}

/// One event as a line of text.
pub fn text(e: &MonitorEvent) -> String {
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let what = match &e.reason {
        Some(r) => format!("DROP {r}"),
        None => format!("TRACE {}", e.event),
    };
    let who = |c: &Option<String>| c.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
    let mut s = format!(
        "{time} {what:<20} {}{} {} {}{} -> {}{}",
        e.interface,
        match (&e.container, &e.network) {
            (Some(c), Some(n)) => format!(" [{c} on {n}]"),
            _ => String::new(),
        },
        e.proto,
        endpoint(&e.src, e.sport),
        who(&e.src_container),
        endpoint(&e.dst, e.dport),
        who(&e.dst_container),
    );
    if let (Some(t), Some(c)) = (e.icmp_type, e.icmp_code) {
        s.push_str(&format!(" type {t} code {c}"));
    }
    if let Some(p) = &e.published_port {
        s.push_str(&format!(
            " published {}:{} of {}",
            p.host_ip, p.host_port, p.container
        ));
    }
    if let Some(n) = &e.nat {
        s.push_str(&format!(" via {n}"));
    }
    s.push_str(&format!(" {} bytes", e.len));
    s
}

/// `pier monitor`: until interrupted (or `--count` events).
pub fn monitor(c: &Client, a: MonitorArgs) -> anyhow::Result<i32> {
    let json = match a.format.as_deref() {
        None => false,
        Some("json") => true,
        Some(f) => bail!("unknown format {f:?}: only json"),
    };
    if let Some(k) = &a.kind
        && k != "drop"
        && k != "trace"
    {
        bail!("invalid --type {k:?}: drop or trace");
    }
    let mut seen = 0u64;
    let limit = a.count;
    c.stream_lines(
        &query(&a),
        || eprintln!("pier monitor: attached (Ctrl-C to stop)"),
        |l| {
            if l.iter().all(u8::is_ascii_whitespace) {
                return Ok(true);
            }
            let v: serde_json::Value = serde_json::from_slice(l)?;
            if v["type"] == "lost" {
                if json {
                    println!("{v}");
                } else {
                    eprintln!("pier monitor: {} events lost so far", v["lost"]);
                }
                return Ok(true);
            }
            if json {
                println!("{v}");
            } else {
                let e: MonitorEvent = serde_json::from_value(v)?;
                println!("{}", text(&e));
            }
            seen += 1;
            Ok(limit.is_none_or(|n| seen < n))
        },
    )?;
    Ok(0)
}

/// `pier stats` without `--ports`.
pub fn traffic(c: &Client, format: Option<&str>, names: &[String]) -> anyhow::Result<i32> {
    let rows: Vec<TrafficRow> = c
        .get::<Vec<TrafficRow>>("/stats")?
        .into_iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .collect();
    if let Some(f) = format
        && f != "json"
    {
        bail!("unknown format {f:?}: only json");
    }
    if format.is_some() {
        for r in rows {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(0);
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            let drops: Vec<String> = r.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                r.name,
                r.kind,
                r.networks.join(","),
                r.packets_in.to_string(),
                r.bytes_in.to_string(),
                r.packets_out.to_string(),
                r.bytes_out.to_string(),
                if drops.is_empty() {
                    "-".into()
                } else {
                    drops.join(",")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "TYPE",
                "NETWORKS",
                "PKTS IN",
                "BYTES IN",
                "PKTS OUT",
                "BYTES OUT",
                "DROPS"
            ],
            rows
        )
    );
    Ok(0)
}

#[derive(Args)]
pub struct GraphArgs {
    /// `dot` (Graphviz) or `svg`.
    #[arg(long, default_value = "dot")]
    pub format: String,
    /// Write it to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// `pier graph`: the host's networks as DOT or SVG.
pub fn graph(c: &Client, a: GraphArgs) -> anyhow::Result<i32> {
    if a.format != "dot" && a.format != "svg" {
        bail!("unknown format {:?}: dot or svg", a.format);
    }
    let body = c.raw(
        hyper::Method::GET,
        &format!("/graph?format={}", a.format),
        None,
    )?;
    match a.output {
        Some(p) => std::fs::write(&p, &body)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?,
        None => print!("{}", String::from_utf8_lossy(&body)),
    }
    Ok(0)
}
