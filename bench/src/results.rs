//! The result records written to `results.json`.
use serde::{Deserialize, Serialize};

use crate::stats;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// Client and server joined by one veth pair, nothing else.
    Ceiling,
    Plain,
    Iptables,
    Netavark,
    /// Docker's userland proxy alone (the host-local path).
    #[serde(rename = "docker-proxy")]
    DockerProxy,
    /// Real dockerd with its own bridge driver.
    Docker,
    /// Real dockerd with pier as its network driver.
    #[serde(rename = "docker+pier")]
    DockerPier,
    Pier,
    /// pier with a `pier monitor` attached (its events written and read).
    #[serde(rename = "pier+monitor")]
    PierMonitor,
    /// The IPv6 rows (`v6.rs`): one veth pair, Docker's ip6tables rules,
    /// pier, dialled on the host's IPv6 address.
    Ceiling6,
    Ip6tables,
    Pier6,
}

impl Dataplane {
    pub const ALL: [Dataplane; 12] = [
        Dataplane::Ceiling,
        Dataplane::Plain,
        Dataplane::Iptables,
        Dataplane::Netavark,
        Dataplane::DockerProxy,
        Dataplane::Docker,
        Dataplane::DockerPier,
        Dataplane::Pier,
        Dataplane::PierMonitor,
        Dataplane::Ceiling6,
        Dataplane::Ip6tables,
        Dataplane::Pier6,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Ceiling => "ceiling",
            Dataplane::Plain => "plain",
            Dataplane::Iptables => "iptables",
            Dataplane::Netavark => "netavark",
            Dataplane::DockerProxy => "docker-proxy",
            Dataplane::Docker => "docker",
            Dataplane::DockerPier => "docker+pier",
            Dataplane::Pier => "pier",
            Dataplane::PierMonitor => "pier+monitor",
            Dataplane::Ceiling6 => "ceiling6",
            Dataplane::Ip6tables => "ip6tables",
            Dataplane::Pier6 => "pier6",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = if s == "docker-pier" { "docker+pier" } else { s };
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether the published-port figures (from the outside) are measured.
    pub fn published_path(self) -> bool {
        self != Dataplane::DockerProxy
    }

    /// Whether the host-local figures (127.0.0.1:PORT from the host) are.
    pub fn host_local(self) -> bool {
        matches!(
            self,
            Dataplane::Pier | Dataplane::DockerProxy | Dataplane::Docker | Dataplane::DockerPier
        )
    }

    /// Whether it runs containers (the container axis).
    pub fn container_axis(self) -> bool {
        matches!(
            self,
            Dataplane::Pier | Dataplane::Docker | Dataplane::DockerPier
        )
    }

    /// Whether this dataplane's kernel programs are pier's (per-program
    /// run times are read for these).
    pub fn runs_pier_programs(self) -> bool {
        matches!(self, Dataplane::Pier | Dataplane::DockerPier)
    }
}

/// The ratio columns of the table: numerator over denominator.
pub const RATIOS: [(Dataplane, Dataplane); 10] = [
    (Dataplane::Pier, Dataplane::Ceiling),
    (Dataplane::Pier, Dataplane::Plain),
    (Dataplane::Pier, Dataplane::Iptables),
    (Dataplane::Pier, Dataplane::Netavark),
    (Dataplane::Pier, Dataplane::DockerProxy),
    (Dataplane::Pier, Dataplane::Docker),
    (Dataplane::DockerPier, Dataplane::Docker),
    (Dataplane::PierMonitor, Dataplane::Pier),
    (Dataplane::Pier6, Dataplane::Ceiling6),
    (Dataplane::Pier6, Dataplane::Ip6tables),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    #[serde(rename = "throughput_1")]
    Throughput1,
    #[serde(rename = "throughput_4")]
    Throughput4,
    RrTps,
    RrP50Us,
    RrP99Us,
    Crr,
    UdpPps,
    #[serde(rename = "publish_1000_ms")]
    Publish1000Ms,
    CreateMs,
    RssMib,
    /// iptables rules in the host namespace (iptables and netavark only).
    RuleCount,
    /// New connections/s from the host namespace to 127.0.0.1:PORT.
    LocalCrr,
    /// One iperf3 stream from the host namespace to 127.0.0.1:PORT.
    #[serde(rename = "local_throughput_1")]
    LocalThroughput1,
    /// crr through the published port with `n` containers on the network.
    CrrContainers,
    /// Creating one container (`run -d`) with `n` on the network.
    RunMs,
    /// Removing it again (`rm -f`).
    RmMs,
    /// crr through the published port with `n` source-policy rules
    /// (`pier policy`; pier only; `n` = 0 is the same run without).
    CrrPolicy,
}

impl Figure {
    pub const ALL: [Figure; 17] = [
        Figure::Throughput1,
        Figure::Throughput4,
        Figure::RrTps,
        Figure::RrP50Us,
        Figure::RrP99Us,
        Figure::Crr,
        Figure::UdpPps,
        Figure::Publish1000Ms,
        Figure::CreateMs,
        Figure::RssMib,
        Figure::RuleCount,
        Figure::LocalCrr,
        Figure::LocalThroughput1,
        Figure::CrrContainers,
        Figure::RunMs,
        Figure::RmMs,
        Figure::CrrPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Figure::Throughput1 => "throughput_1",
            Figure::Throughput4 => "throughput_4",
            Figure::RrTps => "rr_tps",
            Figure::RrP50Us => "rr_p50_us",
            Figure::RrP99Us => "rr_p99_us",
            Figure::Crr => "crr",
            Figure::UdpPps => "udp_pps",
            Figure::Publish1000Ms => "publish_1000_ms",
            Figure::CreateMs => "create_ms",
            Figure::RssMib => "rss_mib",
            Figure::RuleCount => "rule_count",
            Figure::LocalCrr => "local_crr",
            Figure::LocalThroughput1 => "local_throughput_1",
            Figure::CrrContainers => "crr_containers",
            Figure::RunMs => "run_ms",
            Figure::RmMs => "rm_ms",
            Figure::CrrPolicy => "crr_policy",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Figure::Throughput1 | Figure::Throughput4 | Figure::LocalThroughput1 => "Gbit/s",
            Figure::RrTps => "tps",
            Figure::RrP50Us | Figure::RrP99Us => "us",
            Figure::Crr | Figure::LocalCrr | Figure::CrrContainers | Figure::CrrPolicy => "conn/s",
            Figure::UdpPps => "pps",
            Figure::Publish1000Ms | Figure::CreateMs | Figure::RunMs | Figure::RmMs => "ms",
            Figure::RssMib => "MiB",
            Figure::RuleCount => "rules",
        }
    }

    /// Whether a larger value is better (rates) or worse (times, memory).
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Figure::Throughput1
                | Figure::Throughput4
                | Figure::RrTps
                | Figure::Crr
                | Figure::UdpPps
                | Figure::LocalCrr
                | Figure::LocalThroughput1
                | Figure::CrrContainers
                | Figure::CrrPolicy
        )
    }

    /// Whether `n` (the record's `ports`) counts containers, not ports.
    pub fn counts_containers(self) -> bool {
        matches!(self, Figure::CrrContainers | Figure::RunMs | Figure::RmMs)
    }
}

/// Run time per packet of one of pier's kernel programs during one load
/// (read from the kernel's `bpf_stats`, enabled only for that load).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgStat {
    pub dataplane: Dataplane,
    pub program: String,
    /// The load: rr, crr, udp, throughput_1, local_crr.
    pub load: String,
    /// Program runs (packets) during the load.
    pub runs: u64,
    pub ns_per_run: f64,
}

/// One figure of one dataplane at one port count, with every sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub dataplane: Dataplane,
    pub figure: Figure,
    /// Published ports present besides the bench's own (for `publish_1000_ms`
    /// and `rss_mib`: the ports published).
    pub ports: u32,
    pub unit: String,
    pub samples: Vec<f64>,
    pub median: Option<f64>,
    /// Why the figure could not be measured (then `samples` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn new(dataplane: Dataplane, figure: Figure, ports: u32, samples: Vec<f64>) -> Self {
        Record {
            dataplane,
            figure,
            ports,
            unit: figure.unit().to_string(),
            median: stats::median(&samples),
            samples,
            error: None,
        }
    }

    pub fn failed(
        dataplane: Dataplane,
        figure: Figure,
        ports: u32,
        why: impl Into<String>,
    ) -> Self {
        Record {
            dataplane,
            figure,
            ports,
            unit: figure.unit().to_string(),
            samples: Vec::new(),
            median: None,
            error: Some(why.into()),
        }
    }

    pub fn min_max(&self) -> Option<(f64, f64)> {
        stats::min_max(&self.samples)
    }
}

/// All records of a run, in the order they were measured.
#[derive(Default, Debug)]
pub struct Results {
    pub records: Vec<Record>,
    pub prog_stats: Vec<ProgStat>,
}

impl Results {
    pub fn push(&mut self, r: Record) {
        self.records.push(r);
    }

    pub fn get(&self, d: Dataplane, f: Figure, ports: u32) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.dataplane == d && r.figure == f && r.ports == ports)
    }

    /// The (figure, ports) rows present, in a stable order.
    pub fn rows(&self) -> Vec<(Figure, u32)> {
        let mut rows: Vec<(Figure, u32)> =
            self.records.iter().map(|r| (r.figure, r.ports)).collect();
        rows.sort();
        rows.dedup();
        rows
    }

    /// The per-program run times as JSON (`bpf-stats.json`).
    pub fn prog_stats_json(&self) -> String {
        serde_json::to_string_pretty(&self.prog_stats).expect("stats serialize")
    }

    /// Dataplanes with at least one record, in [`Dataplane::ALL`] order.
    pub fn dataplanes(&self) -> Vec<Dataplane> {
        Dataplane::ALL
            .into_iter()
            .filter(|d| self.records.iter().any(|r| r.dataplane == *d))
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.records).expect("records serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_agreed_one() {
        let mut res = Results::default();
        res.push(Record::new(
            Dataplane::Iptables,
            Figure::Crr,
            10000,
            vec![9000.0, 8000.0, 8500.0],
        ));
        res.push(Record::failed(
            Dataplane::Pier,
            Figure::Crr,
            10000,
            "agent did not start",
        ));
        let v: serde_json::Value = serde_json::from_str(&res.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"dataplane": "iptables", "figure": "crr", "ports": 10000, "unit": "conn/s",
                 "samples": [9000.0, 8000.0, 8500.0], "median": 8500.0},
                {"dataplane": "pier", "figure": "crr", "ports": 10000, "unit": "conn/s",
                 "samples": [], "median": null, "error": "agent did not start"}
            ])
        );
        let back: Vec<Record> = serde_json::from_str(&res.to_json()).unwrap();
        assert_eq!(back, res.records);
    }

    #[test]
    fn figure_names_and_units() {
        let names: Vec<&str> = Figure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "throughput_1",
                "throughput_4",
                "rr_tps",
                "rr_p50_us",
                "rr_p99_us",
                "crr",
                "udp_pps",
                "publish_1000_ms",
                "create_ms",
                "rss_mib",
                "rule_count",
                "local_crr",
                "local_throughput_1",
                "crr_containers",
                "run_ms",
                "rm_ms",
                "crr_policy"
            ]
        );
        for f in Figure::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
        }
        assert_eq!(Figure::RrP99Us.unit(), "us");
        assert!(!Figure::RrP99Us.higher_is_better());
        assert!(Figure::Crr.higher_is_better());
        assert_eq!(Dataplane::parse("netavark"), Some(Dataplane::Netavark));
        assert_eq!(Dataplane::parse("docker"), Some(Dataplane::Docker));
        assert_eq!(Dataplane::parse("docker-pier"), Some(Dataplane::DockerPier));
        assert_eq!(Dataplane::parse("podman"), None);
        assert_eq!(Dataplane::parse("ip6tables"), Some(Dataplane::Ip6tables));
        for d in Dataplane::ALL {
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
    }
}
