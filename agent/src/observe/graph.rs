//! `pier graph`: the host's networks as Graphviz DOT, or as SVG laid out by
//! the `layout-rs` crate from that same DOT text. Uplinks, bridges with
//! their subnets and options, containers with their addresses, published
//! ports, and which networks are isolated from which (every pier network
//! from every other).
use std::fmt::Write;

use crate::state::{PortProto, State};

/// Pairs of networks drawn with an "isolated" edge up to this many
/// networks; past it one note says so (the picture would be all edges).
const ISOLATION_EDGES_MAX: usize = 6;

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The DOT text of `st` with `uplinks`.
pub fn dot(st: &State, uplinks: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "digraph pier {{");
    let _ = writeln!(o, "  rankdir=LR;");
    for u in uplinks {
        let _ = writeln!(
            o,
            "  {} [label={}, shape=ellipse, fillcolor=lightblue, style=filled];",
            q(&format!("uplink:{u}")),
            q(&format!("uplink {u}"))
        );
    }
    let nets: Vec<_> = st.networks.values().filter(|n| n.is_bridge()).collect();
    for n in &nets {
        let mut label = format!("network {}", n.name);
        if let Some(b) = &n.bridge {
            let _ = write!(label, " | bridge {b}");
        }
        if let Some(s) = n.subnet {
            let _ = write!(label, " | {s}");
        }
        if let Some(s) = n.subnet6 {
            let _ = write!(label, " {s}");
        }
        let mut flags = Vec::new();
        if n.internal {
            flags.push("internal");
        }
        if !n.icc {
            flags.push("icc=false");
        }
        if !n.masquerade && !n.internal {
            flags.push("routed");
        }
        if !flags.is_empty() {
            let _ = write!(label, " | {}", flags.join(" "));
        }
        let _ = writeln!(
            o,
            "  {} [label={}, shape=box, fillcolor=lightyellow, style=filled];",
            q(&format!("net:{}", n.name)),
            q(&label)
        );
        if !n.internal {
            for u in uplinks {
                let how = if n.masquerade { "masquerade" } else { "routed" };
                let _ = writeln!(
                    o,
                    "  {} -> {} [label={}];",
                    q(&format!("net:{}", n.name)),
                    q(&format!("uplink:{u}")),
                    q(how)
                );
            }
        }
    }
    if nets.len() > 1 && nets.len() <= ISOLATION_EDGES_MAX {
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                let _ = writeln!(
                    o,
                    "  {} -> {} [label=\"isolated\", style=dashed, color=red];",
                    q(&format!("net:{}", a.name)),
                    q(&format!("net:{}", b.name))
                );
            }
        }
    } else if nets.len() > ISOLATION_EDGES_MAX {
        let _ = writeln!(
            o,
            "  \"isolation\" [label={}, shape=box, color=red];",
            q(&format!(
                "all {} networks are isolated from each other",
                nets.len()
            ))
        );
    }
    for c in st.containers.values() {
        let addrs: Vec<String> = c
            .endpoints
            .iter()
            .flat_map(|e| {
                e.ip.map(|a| a.to_string())
                    .into_iter()
                    .chain(e.ip6.map(|a| a.to_string()))
            })
            .collect();
        let state = if c.running { "" } else { " (stopped)" };
        let _ = writeln!(
            o,
            "  {} [label={}, shape=box];",
            q(&format!("ctr:{}", c.name)),
            q(&format!(
                "container {}{state} | {}",
                c.name,
                addrs.join(" ")
            ))
        );
        for e in &c.endpoints {
            if let Some(n) = st.networks.get(&e.network_id) {
                let a =
                    e.ip.map(|a| a.to_string())
                        .into_iter()
                        .chain(e.ip6.map(|a| a.to_string()))
                        .collect::<Vec<_>>()
                        .join(" ");
                let _ = writeln!(
                    o,
                    "  {} -> {} [label={}];",
                    q(&format!("net:{}", n.name)),
                    q(&format!("ctr:{}", c.name)),
                    q(&a)
                );
            }
        }
        for p in &c.ports {
            let proto = match p.proto {
                PortProto::Tcp => "tcp",
                PortProto::Udp => "udp",
            };
            let host = p
                .host_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            for (h, cport) in p.pairs() {
                let id = format!("port:{host}:{h}/{proto}");
                let _ = writeln!(
                    o,
                    "  {} [label={}, shape=circle, fillcolor=palegreen, style=filled];",
                    q(&id),
                    q(&format!("{host}:{h}/{proto}"))
                );
                for u in uplinks {
                    let _ = writeln!(o, "  {} -> {};", q(&format!("uplink:{u}")), q(&id));
                }
                let _ = writeln!(
                    o,
                    "  {} -> {} [label={}];",
                    q(&id),
                    q(&format!("ctr:{}", c.name)),
                    q(&format!("{cport}/{proto}"))
                );
            }
        }
    }
    let _ = writeln!(o, "}}");
    o
}

/// Lay `dot` out and draw it as SVG (layout-rs).
pub fn svg(dot: &str) -> Result<String, String> {
    use layout::{backends::svg::SVGWriter, gv};
    let mut parser = gv::DotParser::new(dot);
    let g = parser.process().map_err(|e| format!("graph: {e}"))?;
    let mut b = gv::GraphBuilder::new();
    b.visit_graph(&g);
    let mut vg = b.get();
    let mut w = SVGWriter::new();
    vg.do_it(false, false, false, &mut w);
    Ok(w.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_parses_and_draws() {
        let st = State::default();
        let d = dot(&st, &["eth0".into()]);
        assert!(d.contains("uplink eth0"));
        let s = svg(&d).unwrap();
        assert!(s.contains("<svg"), "{s}");
    }
}
