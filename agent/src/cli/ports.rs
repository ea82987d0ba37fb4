//! `pier port` and `pier stats --ports`.
use anyhow::bail;
use clap::Args;

use super::table;
use crate::api::{
    client::{Client, seg},
    types::{ListPort, PortMapping, PortStatsRow},
};

#[derive(Args)]
pub struct StatsArgs {
    /// Published ports: packets and bytes that reached each (without it:
    /// per container, network and uplink).
    #[arg(long)]
    pub ports: bool,
    /// `json`: one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
    /// Only ports leading to these containers.
    pub names: Vec<String>,
}

/// `8080` → (8080, "tcp"); `53/udp` → (53, "udp").
fn parse_private(s: &str) -> anyhow::Result<(u16, String)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => bail!("invalid port {s:?}: PRIVATE_PORT[/tcp|udp]"),
    };
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        bail!("invalid protocol {proto:?} in {s:?}: tcp or udp");
    }
    Ok((port, proto))
}

/// `pier port NAME [PRIVATE_PORT[/PROTO]]`, printed like `docker port`.
pub fn port(
    c: &Client,
    name: &str,
    private: Option<&str>,
    format: Option<&str>,
) -> anyhow::Result<i32> {
    let want = private.map(parse_private).transpose()?;
    let format = format
        .map(|f| super::format::Format::parse(f, &[("HostIP", "HOST IP")]))
        .transpose()?;
    let rows: Vec<PortMapping> = c.get(&format!("/containers/{}/port", seg(name)))?;
    if let Some(f) = format {
        let hits: Vec<serde_json::Value> = rows
            .iter()
            .filter(|r| {
                want.as_ref()
                    .is_none_or(|(p, proto)| r.private_port == *p && &r.proto == proto)
            })
            .map(|r| serde_json::to_value(r).expect("a port mapping is JSON"))
            .collect();
        if hits.is_empty()
            && let Some((p, proto)) = want
        {
            bail!("No public port '{p}/{proto}' published for {name}");
        }
        f.print_all(&hits)?;
        return Ok(0);
    }
    match want {
        None => {
            for r in rows {
                let policy = if r.policy.is_empty() {
                    String::new()
                } else {
                    format!("   policy: {}", r.policy.join(", "))
                };
                println!(
                    "{}/{} -> {}{policy}",
                    r.private_port,
                    r.proto,
                    host_port(&r.host_ip, r.host_port)
                );
            }
        }
        Some((p, proto)) => {
            let hits: Vec<&PortMapping> = rows
                .iter()
                .filter(|r| r.private_port == p && r.proto == proto)
                .collect();
            if hits.is_empty() {
                bail!("No public port '{p}/{proto}' published for {name}");
            }
            for r in hits {
                println!("{}", host_port(&r.host_ip, r.host_port));
            }
        }
    }
    Ok(0)
}

/// `IP:PORT`, an IPv6 address in brackets (`[::]:8080`, as Docker prints).
fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `pier stats --ports [--format json] [NAME...]`.
pub fn stats(c: &Client, a: StatsArgs) -> anyhow::Result<i32> {
    if let Some(f) = &a.format
        && f != "json"
    {
        bail!("unknown format {f:?}: only json");
    }
    let rows: Vec<PortStatsRow> = c
        .get::<Vec<PortStatsRow>>("/stats/ports")?
        .into_iter()
        .filter(|r| a.names.is_empty() || a.names.contains(&r.container))
        .collect();
    if a.format.is_some() {
        for r in rows {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(0);
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            vec![
                r.container,
                format!("{}:{}/{}", r.host_ip, r.host_port, r.proto),
                format!("{}:{}", r.container_ip, r.container_port),
                r.packets.to_string(),
                r.bytes.to_string(),
                r.denied.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "PUBLISHED", "TARGET", "PACKETS", "BYTES", "DENIED"],
            rows
        )
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_private;

    #[test]
    fn private_ports() {
        assert_eq!(parse_private("8080").unwrap(), (8080, "tcp".into()));
        assert_eq!(parse_private("53/udp").unwrap(), (53, "udp".into()));
        assert_eq!(parse_private("53/UDP").unwrap(), (53, "udp".into()));
        assert!(parse_private("0").is_err());
        assert!(parse_private("80/sctp").is_err());
        assert!(parse_private("x/tcp").is_err());
    }
}

/// `ps`'s PORTS cells from one entry per port: consecutive ports (host and
/// container side both one up, same address and protocol) as one range,
/// as Docker shows them: `0.0.0.0:8081-8083->80-82/tcp`.
pub fn compact(ports: &[ListPort]) -> Vec<String> {
    // (ip, proto, first public, first private, length)
    let mut runs: Vec<(&str, &str, u16, u16, u16)> = Vec::new();
    for p in ports {
        if let Some(last) = runs.last_mut()
            && last.0 == p.ip
            && last.1 == p.proto
            && u32::from(last.2) + u32::from(last.4) == u32::from(p.public_port)
            && u32::from(last.3) + u32::from(last.4) == u32::from(p.private_port)
        {
            last.4 += 1;
            continue;
        }
        runs.push((&p.ip, &p.proto, p.public_port, p.private_port, 1));
    }
    let range = |a: u16, n: u16| {
        if n == 1 {
            a.to_string()
        } else {
            format!("{a}-{}", a + n - 1)
        }
    };
    runs.into_iter()
        .map(|(ip, proto, h, c, n)| format!("{ip}:{}->{}/{proto}", range(h, n), range(c, n)))
        .collect()
}

#[cfg(test)]
mod compact_tests {
    use super::*;

    fn p(ip: &str, h: u16, c: u16, proto: &str) -> ListPort {
        ListPort {
            ip: ip.into(),
            private_port: c,
            public_port: h,
            proto: proto.into(),
        }
    }

    #[test]
    fn consecutive_ports_are_ranges() {
        let v = vec![
            p("0.0.0.0", 8081, 80, "tcp"),
            p("0.0.0.0", 8082, 81, "tcp"),
            p("0.0.0.0", 8083, 82, "tcp"),
            p("0.0.0.0", 5353, 53, "udp"),
            p("127.0.0.1", 9000, 90, "tcp"),
            p("127.0.0.1", 9002, 91, "tcp"),
        ];
        assert_eq!(
            compact(&v),
            [
                "0.0.0.0:8081-8083->80-82/tcp",
                "0.0.0.0:5353->53/udp",
                "127.0.0.1:9000->90/tcp",
                "127.0.0.1:9002->91/tcp"
            ]
        );
        assert!(compact(&[]).is_empty());
    }
}
