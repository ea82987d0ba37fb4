//! `pier-prog-cost`: the run time per packet of pier's TC programs
//! (`bpf_stats`) under a fixed workload, for the paths a change to the
//! programs touches: a published port reached from outside (TCP crr and rr,
//! UDP) and a container's masqueraded flows to an outside server (the same
//! three). One pier world, one agent; each load runs with the kernel's
//! run-time accounting on, between two snapshots of the programs' counters.
//!
//! An rr run is (almost) all established-flow packets. A crr run adds one
//! new flow per connection; the cost of the packet that creates it is
//! estimated as what the crr run spent beyond its other packets at the rr
//! run's rate: `(crr_ns - rr_ns_per_pkt * (crr_runs - conns)) / conns`.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::Context;
use serde::Serialize;

use crate::{
    bpfstats,
    load::{LoadResult, Mode},
    peers::{Peer, Pier},
    world::{self, Ctx, World, cmd_in},
};

/// The name of the client container of the masquerade loads.
const CLIENT: &str = "pcclient";

/// Which way a load's flows go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// Outside client → published port → container server.
    Published,
    /// Container client → masquerade → outside server.
    Masquerade,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Published => "published",
            Path::Masquerade => "masquerade",
        }
    }

    /// The program that sees a flow's first packet (and creates its state).
    pub fn creator(self) -> &'static str {
        match self {
            Path::Published => "pier_uplink_in",
            Path::Masquerade => "pier_veth_in",
        }
    }
}

/// One program's figure for one load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cost {
    pub path: Path,
    pub load: String,
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
    /// The load's operations (connections for crr).
    pub ops: u64,
}

/// The estimated cost of a flow's first packet in `creator` (see the module
/// doc), from a crr and an rr figure of the same program.
pub fn new_flow_ns(crr: &Cost, rr: &Cost) -> Option<f64> {
    if crr.ops == 0 || crr.runs <= crr.ops {
        return None;
    }
    let total = crr.ns_per_run * crr.runs as f64;
    let others = rr.ns_per_run * (crr.runs - crr.ops) as f64;
    Some((total - others) / crr.ops as f64)
}

/// The world: a pier agent with the published servers (the bench's own
/// world), servers in the outside namespace, and a client container.
pub struct ProgCost {
    pier: Pier,
    secs: f64,
}

impl ProgCost {
    /// With `monitor`, a `pier monitor --format json` stays attached (its
    /// output discarded) for every load.
    pub fn build(ctx: &Ctx, secs: f64, monitor: bool) -> anyhow::Result<ProgCost> {
        let mut pier = if monitor {
            Pier::with_monitor()
        } else {
            Pier::new()
        };
        pier.build(ctx).context("building the pier world")?;
        if let Some(e) = pier.data_path_error() {
            anyhow::bail!("published ports do not answer: {e}");
        }
        let out = pier.world().out.clone();
        pier.world_mut().start_servers(ctx, &out)?;
        pier.cli(
            ctx,
            &["run", "-d", "--name", CLIENT, "--", "sleep", "100000"].map(String::from),
        )?;
        // The client closes first: no TIME_WAIT pile-up in the container.
        pier.cli(
            ctx,
            &[
                "exec",
                CLIENT,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/tcp_max_tw_buckets",
            ]
            .map(String::from),
        )?;
        let me = ProgCost { pier, secs };
        me.wait_outside(ctx)?;
        Ok(me)
    }

    fn world(&self) -> &World {
        self.pier.world()
    }

    /// The outside servers answer the client container.
    fn wait_outside(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..50 {
            match self.masq_load(ctx, Mode::Rr, outside(world::ECHO_TCP), 0.2) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last
            .unwrap()
            .context("the outside server does not answer the container"))
    }

    fn masq_load(
        &self,
        ctx: &Ctx,
        mode: Mode,
        target: SocketAddr,
        secs: f64,
    ) -> anyhow::Result<LoadResult> {
        let mut args: Vec<String> = ["exec", CLIENT].map(String::from).to_vec();
        args.push(ctx.bins.load.display().to_string());
        args.extend(load_args(mode, target, secs, ctx.cpu));
        let out = self.pier.cli(ctx, &args)?;
        serde_json::from_str(out.trim()).context("reading pier-load's output")
    }

    fn published_load(
        &self,
        ctx: &Ctx,
        mode: Mode,
        target: SocketAddr,
    ) -> anyhow::Result<LoadResult> {
        let out = world::run(
            cmd_in(&self.world().out, &ctx.bins.load)
                .args(load_args(mode, target, self.secs, ctx.cpu)),
        )?;
        serde_json::from_str(out.trim()).context("reading pier-load's output")
    }

    /// Every load of both paths, each measured on its own.
    pub fn measure(&self, ctx: &Ctx) -> anyhow::Result<Vec<Cost>> {
        let pin = self.pier.pier_bpffs().context("no bpffs dir")?;
        let _stats = bpfstats::enable()?;
        let published = world::Targets::published();
        let mut out = Vec::new();
        for path in [Path::Published, Path::Masquerade] {
            for (name, mode) in [("crr", Mode::Crr), ("rr", Mode::Rr), ("udp", Mode::Udp)] {
                let before = bpfstats::snapshot(&pin)?;
                let r = match path {
                    Path::Published => {
                        let t = if mode == Mode::Udp {
                            published.udp
                        } else {
                            published.tcp
                        };
                        self.published_load(ctx, mode, t)
                    }
                    Path::Masquerade => {
                        let port = if mode == Mode::Udp {
                            world::ECHO_UDP
                        } else {
                            world::ECHO_TCP
                        };
                        self.masq_load(ctx, mode, outside(port), self.secs)
                    }
                }
                .with_context(|| format!("{} {name}", path.as_str()))?;
                let after = bpfstats::snapshot(&pin)?;
                for (program, runs, ns) in bpfstats::delta(&before, &after) {
                    if !program.contains("_in") {
                        continue;
                    }
                    out.push(Cost {
                        path,
                        load: name.to_string(),
                        program,
                        runs,
                        ns_per_run: ns,
                        ops: r.ops,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn outside(port: u16) -> SocketAddr {
    SocketAddr::from((world::OUTSIDE_IP, port))
}

fn load_args(mode: Mode, target: SocketAddr, secs: f64, cpu: usize) -> Vec<String> {
    let m = match mode {
        Mode::Rr => "rr",
        Mode::Crr => "crr",
        Mode::Udp => "udp",
    };
    [
        "--mode",
        m,
        "--target",
        &target.to_string(),
        "--secs",
        &secs.to_string(),
        "--cpu",
        &cpu.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The figures as a table: per path, load and program, ns per run; and per
/// path, the estimated cost of a new flow's first packet in its creator.
pub fn table(costs: &[Cost]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(["path", "load", "program", "runs", "ns/run"]);
    for c in costs {
        t.add_row([
            c.path.as_str().to_string(),
            c.load.clone(),
            c.program.clone(),
            c.runs.to_string(),
            format!("{:.0}", c.ns_per_run),
        ]);
    }
    let mut s = t.to_string();
    let by: BTreeMap<(&str, &str, &str), &Cost> = costs
        .iter()
        .map(|c| ((c.path.as_str(), c.load.as_str(), c.program.as_str()), c))
        .collect();
    for path in [Path::Published, Path::Masquerade] {
        let p = path.creator();
        let (Some(crr), Some(rr)) = (
            by.get(&(path.as_str(), "crr", p)),
            by.get(&(path.as_str(), "rr", p)),
        ) else {
            continue;
        };
        if let Some(ns) = new_flow_ns(crr, rr) {
            s.push_str(&format!(
                "\n{}: {p}, first packet of a new TCP flow ≈ {ns:.0} ns (established {:.0} ns)",
                path.as_str(),
                rr.ns_per_run
            ));
        }
    }
    s
}

/// The figures of several variants (builds of the programs, or states such
/// as "a monitor attached"), each measured in several rounds: per path, load
/// and program, the mean ns per run of each variant and its ratio to the
/// first (the baseline); then the new-flow estimates the same way.
pub fn variants_table(variants: &[(String, Vec<Vec<Cost>>)]) -> String {
    type Key = (&'static str, String, String);
    let mean = |rounds: &[Vec<Cost>]| -> BTreeMap<Key, (f64, Option<f64>)> {
        let mut acc: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
        let mut flows: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
        for r in rounds {
            for c in r {
                acc.entry((c.path.as_str(), c.load.clone(), c.program.clone()))
                    .or_default()
                    .push(c.ns_per_run);
            }
            for path in [Path::Published, Path::Masquerade] {
                let p = path.creator();
                let find = |load: &str| {
                    r.iter()
                        .find(|c| c.path == path && c.load == load && c.program == p)
                };
                if let (Some(crr), Some(rr)) = (find("crr"), find("rr"))
                    && let Some(ns) = new_flow_ns(crr, rr)
                {
                    flows
                        .entry((path.as_str(), "crr, first packet (est.)".into(), p.into()))
                        .or_default()
                        .push(ns);
                }
            }
        }
        let avg = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
        acc.iter()
            .map(|(k, v)| (k.clone(), (avg(v), None)))
            .chain(flows.iter().map(|(k, v)| (k.clone(), (avg(v), Some(0.0)))))
            .collect()
    };
    let means: Vec<BTreeMap<Key, (f64, Option<f64>)>> =
        variants.iter().map(|(_, r)| mean(r)).collect();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    let mut head = vec!["path".to_string(), "load".into(), "program".into()];
    for (i, (name, _)) in variants.iter().enumerate() {
        head.push(format!("{name}, ns"));
        if i > 0 {
            head.push(format!("{name} / {}", variants[0].0));
        }
    }
    t.set_header(head);
    let Some(base) = means.first() else {
        return String::new();
    };
    for (k, (b, _)) in base {
        let mut row = vec![k.0.to_string(), k.1.clone(), k.2.clone(), format!("{b:.0}")];
        for m in &means[1..] {
            match m.get(k) {
                Some((v, _)) => {
                    row.push(format!("{v:.0}"));
                    row.push(format!("{:.3}", v / b));
                }
                None => row.extend(["-".to_string(), "-".to_string()]),
            }
        }
        t.add_row(row);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(load: &str, runs: u64, ns: f64, ops: u64) -> Cost {
        Cost {
            path: Path::Published,
            load: load.into(),
            program: "pier_uplink_in".into(),
            runs,
            ns_per_run: ns,
            ops,
        }
    }

    #[test]
    fn new_flow_cost_is_what_crr_spent_beyond_established_packets() {
        // 100 connections, 5 packets each: 100 new at 1000 ns, 400 at 200 ns.
        let crr = cost("crr", 500, (100.0 * 1000.0 + 400.0 * 200.0) / 500.0, 100);
        let rr = cost("rr", 10_000, 200.0, 10_000);
        let ns = new_flow_ns(&crr, &rr).unwrap();
        assert!((ns - 1000.0).abs() < 1e-6, "{ns}");
        assert_eq!(new_flow_ns(&cost("crr", 10, 1.0, 0), &rr), None);
        assert_eq!(new_flow_ns(&cost("crr", 10, 1.0, 10), &rr), None);
    }

    #[test]
    fn variants_are_compared_with_the_first() {
        let round = |ns: f64| {
            vec![
                cost("crr", 500, (100.0 * ns * 5.0 + 400.0 * ns) / 500.0, 100),
                cost("rr", 1000, ns, 1000),
            ]
        };
        let v = vec![
            ("base".to_string(), vec![round(200.0), round(200.0)]),
            ("other".to_string(), vec![round(210.0), round(230.0)]),
        ];
        let s = variants_table(&v);
        assert!(s.contains("other / base"), "{s}");
        // rr: 200 against a mean of 220.
        assert!(
            s.contains("| 200 ") && s.contains("| 220 ") && s.contains("1.100"),
            "{s}"
        );
        // The first packet: 1000 against 1100.
        assert!(
            s.contains("first packet (est.)") && s.contains("| 1000 "),
            "{s}"
        );
    }

    #[test]
    fn table_names_the_new_flow_estimate() {
        let crr = cost("crr", 500, 360.0, 100);
        let rr = cost("rr", 1000, 200.0, 1000);
        let s = table(&[crr, rr]);
        assert!(s.contains("pier_uplink_in"), "{s}");
        assert!(
            s.contains("first packet of a new TCP flow ≈ 1000 ns (established 200 ns)"),
            "{s}"
        );
    }
}
