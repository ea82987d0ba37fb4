//! The run: build every peer's world, then measure figure by figure with the
//! peers interleaved run by run, so that drift on a shared machine spreads
//! over all of them alike.
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    bpfstats,
    load::Mode,
    peers::{Ceiling, DockerProxy, Iptables, Netavark, Peer, Pier, Plain},
    results::{Dataplane, Figure, ProgStat, Record, Results},
    world::{Ctx, Targets},
};

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Short runs per figure.
    pub runs: usize,
    /// Seconds per load run.
    pub secs: f64,
    /// Seconds per iperf3 run.
    pub iperf_secs: u32,
    /// "Other published ports" steps of the connection-rate figure.
    pub crr_ports: Vec<usize>,
    /// Containers created and removed for `create_ms`.
    pub create_count: usize,
    /// Rounds of `publish_1000_ms`.
    pub publish_rounds: usize,
    /// Most other ports netavark is asked to publish (it is quadratic).
    pub netavark_max_ports: usize,
    /// Steps of the container axis (containers on the measured network).
    pub container_steps: Vec<usize>,
    /// Containers created and removed at each step for `run_ms`/`rm_ms`.
    pub axis_count: usize,
    /// Most containers a real dockerd is asked to run (about 0.3 s each).
    pub docker_max_containers: usize,
    /// Source-policy rules of the `crr_policy` figure (pier only).
    pub policy_rules: usize,
    /// Measure the container axis only (no traffic figures but its own).
    pub containers_only: bool,
    /// Other published ports for the agent-memory note after the last
    /// container step (pier only; 0: none).
    pub rss_ports: usize,
    pub peers: Vec<Dataplane>,
}

impl Plan {
    pub fn quick() -> Self {
        Plan {
            runs: 3,
            secs: 1.0,
            iperf_secs: 1,
            crr_ports: vec![1, 100, 10000],
            create_count: 20,
            publish_rounds: 3,
            netavark_max_ports: 100,
            container_steps: vec![1, 100],
            axis_count: 5,
            docker_max_containers: 100,
            policy_rules: 10_000,
            containers_only: false,
            rss_ports: 0,
            peers: Dataplane::ALL.to_vec(),
        }
    }

    pub fn full() -> Self {
        Plan {
            runs: 5,
            secs: 3.0,
            iperf_secs: 3,
            crr_ports: vec![1, 100, 1000, 10000],
            create_count: 100,
            publish_rounds: 5,
            netavark_max_ports: 1000,
            container_steps: vec![1, 100, 1000],
            axis_count: 20,
            docker_max_containers: 100,
            policy_rules: 10_000,
            containers_only: false,
            rss_ports: 10_000,
            peers: Dataplane::ALL.to_vec(),
        }
    }

    /// Progress steps per peer (one per measurement or change).
    fn steps_per_peer(&self) -> u64 {
        let r = self.runs as u64;
        if self.containers_only {
            return 1 + self.container_steps.len() as u64 * (1 + self.axis_count as u64 + r);
        }
        1 + 5 * r
            + self.crr_ports.len() as u64 * (1 + r)
            + 4 * r
            + self.publish_rounds as u64
            + 1
            + self.create_count as u64
            + 1
            + self.container_steps.len() as u64 * (1 + self.axis_count as u64 + r)
            + r
    }
}

/// Each round's sample vector of one peer, or why it failed.
type PeerRounds = (Dataplane, Result<Vec<Vec<f64>>, String>);

struct Slot {
    peer: Box<dyn Peer>,
    targets: Option<Targets>,
    /// Why the peer cannot work at all.
    down: Option<String>,
    /// Why its published ports carry no traffic (control plane still measured).
    data_down: Option<String>,
}

impl Slot {
    fn serving(&self) -> bool {
        self.down.is_none() && self.data_down.is_none()
    }
}

/// A one-line error: the first line of the chain.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or("").to_string()
}

pub struct Runner<'a> {
    ctx: &'a Ctx,
    plan: &'a Plan,
    pub results: Results,
    pub notes: Vec<String>,
    bar: ProgressBar,
}

impl<'a> Runner<'a> {
    pub fn new(ctx: &'a Ctx, plan: &'a Plan, bar: ProgressBar) -> Self {
        bar.set_length(plan.steps_per_peer() * plan.peers.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        Runner {
            ctx,
            plan,
            results: Results::default(),
            notes: Vec::new(),
            bar,
        }
    }

    fn note(&mut self, s: String) {
        if self.bar.is_hidden() {
            eprintln!("note: {s}");
        } else {
            self.bar.println(format!("note: {s}"));
        }
        self.notes.push(s);
    }

    pub fn run(mut self) -> (Results, Vec<String>) {
        if self.plan.peers.contains(&Dataplane::Iptables) {
            self.note(
                "iptables: Docker itself would also run one docker-proxy process per published \
                 port (its default userland proxy, for host-local clients); this peer has the \
                 rules only"
                    .into(),
            );
        }
        let mut slots: Vec<Slot> = Vec::new();
        for &d in &self.plan.peers {
            let peer: anyhow::Result<Box<dyn Peer>> = match d {
                Dataplane::Ceiling => Ok(Box::new(Ceiling::new())),
                Dataplane::DockerProxy => DockerProxy::new().map(|p| Box::new(p) as Box<dyn Peer>),
                Dataplane::Docker | Dataplane::DockerPier => {
                    crate::docker::Docker::new(self.ctx, d == Dataplane::DockerPier)
                        .map(|p| Box::new(p) as Box<dyn Peer>)
                }
                Dataplane::Plain => Ok(Box::new(Plain::new())),
                Dataplane::Iptables => Ok(Box::new(Iptables::new())),
                Dataplane::Netavark => Netavark::new(self.ctx, self.plan.netavark_max_ports)
                    .map(|p| Box::new(p) as Box<dyn Peer>),
                Dataplane::Pier => Ok(Box::new(Pier::new())),
                Dataplane::PierMonitor => Ok(Box::new(Pier::with_monitor())),
                Dataplane::Ceiling6 | Dataplane::Ip6tables | Dataplane::Pier6 => crate::v6::peer(d),
            };
            self.bar
                .set_message(format!("building the {} world", d.as_str()));
            match peer {
                Ok(mut peer) => {
                    let built = peer.build(self.ctx);
                    let (targets, down) = match built {
                        Ok(t) => (Some(t), None),
                        Err(e) => (None, Some(one_line(&e))),
                    };
                    let data_down = if down.is_none() {
                        peer.data_path_error()
                    } else {
                        None
                    };
                    if let Some(why) = down.as_ref().or(data_down.as_ref()) {
                        self.note(format!("{}: cannot serve: {why}", d.as_str()));
                    }
                    slots.push(Slot {
                        peer,
                        targets,
                        down,
                        data_down,
                    });
                }
                Err(e) => {
                    let why = one_line(&e);
                    self.note(format!("{}: skipped: {why}", d.as_str()));
                    self.fail_data(d, &why);
                    self.fail_control(d, &why);
                    self.bar.inc(self.plan.steps_per_peer());
                }
            }
            self.bar.inc(1);
        }
        for s in &mut slots {
            if let Some(why) = &s.down {
                self.fail_data(s.peer.dataplane(), why);
                self.fail_control(s.peer.dataplane(), why);
                continue;
            }
            if let Some(why) = &s.data_down {
                self.fail_data(s.peer.dataplane(), why);
                continue;
            }
            // Every figure but crr's steps is measured with one other published port.
            if let Err(e) = s.peer.set_other_ports(self.ctx, 1) {
                let why = one_line(&e);
                self.note(format!(
                    "{}: cannot publish: {why}",
                    s.peer.dataplane().as_str()
                ));
                self.fail_data(s.peer.dataplane(), &why);
                self.fail_control(s.peer.dataplane(), &why);
                s.down = Some(why);
            }
        }

        if !self.plan.containers_only {
            self.throughput(&mut slots, 1, Figure::Throughput1, 1, &[]);
            self.throughput(&mut slots, 4, Figure::Throughput4, 1, &[]);
            self.rr(&mut slots, 1, &[]);
            self.udp(&mut slots, 1, &[]);
            self.local(&mut slots);
            self.prog_stats(&mut slots);
            self.control_plane(&mut slots);
            // With one other published port, before crr's steps add thousands.
            self.crr_policy(&mut slots);
            let mut skipped = Vec::new();
            for &n in &self.plan.crr_ports.clone() {
                skipped = self.crr(&mut slots, n);
            }
            // The other published-path figures again with the most other
            // ports (each peer that could publish them), beside 1 port.
            if let Some(&top) = self.plan.crr_ports.last()
                && top > 1
            {
                let top = top as u32;
                self.throughput(&mut slots, 1, Figure::Throughput1, top, &skipped);
                self.throughput(&mut slots, 4, Figure::Throughput4, top, &skipped);
                self.rr(&mut slots, top, &skipped);
                self.udp(&mut slots, top, &skipped);
            }
        }
        self.containers(&mut slots);
        self.bar.finish_and_clear();
        // Worlds are torn down here, in order.
        drop(slots);
        (self.results, self.notes)
    }

    /// Record every traffic figure of a peer that cannot serve as failed.
    fn fail_data(&mut self, d: Dataplane, why: &str) {
        let mut rows: Vec<(Figure, u32)> = Vec::new();
        if d.published_path() {
            rows.extend([
                (Figure::Throughput1, 1),
                (Figure::Throughput4, 1),
                (Figure::RrTps, 1),
                (Figure::RrP50Us, 1),
                (Figure::RrP99Us, 1),
                (Figure::UdpPps, 1),
            ]);
            rows.extend(self.plan.crr_ports.iter().map(|&n| (Figure::Crr, n as u32)));
        }
        if d.host_local() {
            rows.extend([(Figure::LocalCrr, 1), (Figure::LocalThroughput1, 1)]);
        }
        if d == Dataplane::Pier {
            rows.extend([
                (Figure::CrrPolicy, 0),
                (Figure::CrrPolicy, self.plan.policy_rules as u32),
            ]);
        }
        if d.container_axis() {
            rows.extend(
                self.plan
                    .container_steps
                    .iter()
                    .map(|&n| (Figure::CrrContainers, n as u32)),
            );
        }
        for (f, p) in rows {
            self.results.push(Record::failed(d, f, p, why));
        }
    }

    /// Record every control-plane figure of a peer that cannot work as failed.
    fn fail_control(&mut self, d: Dataplane, why: &str) {
        let mut rows: Vec<(Figure, u32)> = Vec::new();
        if d != Dataplane::Plain {
            rows.push((Figure::Publish1000Ms, 1000));
        }
        if matches!(d, Dataplane::Pier | Dataplane::Netavark) {
            rows.push((Figure::CreateMs, 1));
        }
        if d == Dataplane::Pier {
            rows.push((Figure::RssMib, 1000));
        }
        if d.container_axis() {
            for &n in &self.plan.container_steps {
                rows.push((Figure::RunMs, n as u32));
                rows.push((Figure::RmMs, n as u32));
            }
        }
        for (f, p) in rows {
            self.results.push(Record::failed(d, f, p, why));
        }
    }

    /// `runs` rounds; in each, `sample` once for every serving peer that
    /// measures the published path.
    fn rounds(
        &mut self,
        slots: &mut [Slot],
        what: &str,
        sample: impl FnMut(&Ctx, &mut dyn Peer, &Targets) -> anyhow::Result<Vec<f64>>,
    ) -> Vec<PeerRounds> {
        self.rounds_of(slots, what, Dataplane::published_path, sample)
    }

    /// `runs` rounds; in each, `sample` once for every serving peer `who` picks.
    fn rounds_of(
        &mut self,
        slots: &mut [Slot],
        what: &str,
        who: fn(Dataplane) -> bool,
        mut sample: impl FnMut(&Ctx, &mut dyn Peer, &Targets) -> anyhow::Result<Vec<f64>>,
    ) -> Vec<PeerRounds> {
        let pick = |s: &Slot| s.serving() && who(s.peer.dataplane());
        let mut acc: Vec<PeerRounds> = slots
            .iter()
            .filter(|s| pick(s))
            .map(|s| (s.peer.dataplane(), Ok(Vec::new())))
            .collect();
        for round in 0..self.plan.runs {
            for s in slots.iter_mut().filter(|s| pick(s)) {
                let d = s.peer.dataplane();
                self.bar.set_message(format!(
                    "{what}: {} run {}/{}",
                    d.as_str(),
                    round + 1,
                    self.plan.runs
                ));
                let entry = &mut acc.iter_mut().find(|(x, _)| *x == d).unwrap().1;
                if entry.is_ok() {
                    let t = s.targets.expect("serving peers have targets");
                    match sample(self.ctx, s.peer.as_mut(), &t) {
                        Ok(v) => entry.as_mut().unwrap().push(v),
                        Err(e) => *entry = Err(one_line(&e)),
                    }
                }
                self.bar.inc(1);
            }
        }
        let idle = slots.iter().filter(|s| !pick(s)).count() as u64;
        self.bar.inc(idle * self.plan.runs as u64);
        acc
    }

    /// Store column `i` of each round's sample vector as figure `f`.
    fn store(&mut self, acc: &[PeerRounds], cols: &[Figure], ports: u32) {
        for (d, r) in acc {
            for (i, &f) in cols.iter().enumerate() {
                self.results.push(match r {
                    Ok(rounds) => Record::new(*d, f, ports, rounds.iter().map(|v| v[i]).collect()),
                    Err(e) => Record::failed(*d, f, ports, e.clone()),
                });
            }
        }
    }

    /// Rounds of `sample` on every published-path peer but those in `skip`
    /// (they sit the rounds out and get no record).
    fn rounds_but(
        &mut self,
        slots: &mut [Slot],
        what: &str,
        skip: &[Dataplane],
        mut sample: impl FnMut(&Ctx, &mut dyn Peer, &Targets) -> anyhow::Result<Vec<f64>>,
    ) -> Vec<PeerRounds> {
        let mut acc = self.rounds(slots, what, |ctx, p, t| {
            if skip.contains(&p.dataplane()) {
                return Ok(vec![f64::NAN; 3]);
            }
            sample(ctx, p, t)
        });
        acc.retain(|(d, _)| !skip.contains(d));
        acc
    }

    /// `streams` iperf3 streams, with `ports` other published ports.
    fn throughput(
        &mut self,
        slots: &mut [Slot],
        streams: u32,
        f: Figure,
        ports: u32,
        skip: &[Dataplane],
    ) {
        let secs = self.plan.iperf_secs;
        let what = format!("{}, {ports} other ports", f.as_str());
        let acc = self.rounds_but(slots, &what, skip, |ctx, p, t| {
            Ok(vec![p.world().iperf(ctx, t.iperf, streams, secs)?])
        });
        self.store(&acc, &[f], ports);
    }

    fn rr(&mut self, slots: &mut [Slot], ports: u32, skip: &[Dataplane]) {
        let secs = self.plan.secs;
        let what = format!("rr, {ports} other ports");
        let acc = self.rounds_but(slots, &what, skip, |ctx, p, t| {
            let r = p.world().load(ctx, Mode::Rr, t.tcp, secs)?;
            Ok(vec![
                r.rate,
                r.p50_us.unwrap_or(f64::NAN),
                r.p99_us.unwrap_or(f64::NAN),
            ])
        });
        self.store(
            &acc,
            &[Figure::RrTps, Figure::RrP50Us, Figure::RrP99Us],
            ports,
        );
    }

    fn udp(&mut self, slots: &mut [Slot], ports: u32, skip: &[Dataplane]) {
        let secs = self.plan.secs;
        let what = format!("udp, {ports} other ports");
        let acc = self.rounds_but(slots, &what, skip, |ctx, p, t| {
            let r = p.world().load(ctx, Mode::Udp, t.udp, secs)?;
            anyhow::ensure!(r.ops > 0, "no datagram reached the sink ({} sent)", r.sent);
            Ok(vec![r.rate])
        });
        self.store(&acc, &[Figure::UdpPps], ports);
    }

    /// Host-local clients: new connections/s and one iperf3 stream from the
    /// host namespace to 127.0.0.1:PORT.
    fn local(&mut self, slots: &mut [Slot]) {
        for s in slots
            .iter()
            .filter(|s| s.serving() && s.peer.dataplane().host_local())
        {
            // The client is on the host now: no TIME_WAIT pile-up there, and
            // its ports above every port the run publishes (ranges up to
            // 10999, other ports up to 39998): a published port a host
            // socket holds is refused ("held by a host process"), as Docker's
            // docker-proxy would fail to bind it.
            let w = s.peer.world();
            let r = w
                .sysctl(&w.host, "net.ipv4.tcp_max_tw_buckets", "0")
                .and_then(|_| w.sysctl(&w.host, "net.ipv4.ip_local_port_range", "40000 60999"));
            if let Err(e) = r {
                self.note(format!("{}: {}", s.peer.dataplane().as_str(), one_line(&e)));
            }
        }
        let secs = self.plan.secs;
        let isecs = self.plan.iperf_secs;
        let acc = self.rounds_of(slots, "host-local", Dataplane::host_local, |ctx, p, _| {
            let w = p.world();
            let t = Targets::local();
            let c = w.load_in(&w.host, ctx, Mode::Crr, t.tcp, secs)?;
            anyhow::ensure!(
                c.errors * 100 <= c.ops.max(1),
                "{} of {} connections failed",
                c.errors,
                c.ops + c.errors
            );
            let g = w.iperf_in(&w.host, ctx, t.iperf, 1, isecs)?;
            Ok(vec![c.rate, g])
        });
        self.store(&acc, &[Figure::LocalCrr, Figure::LocalThroughput1], 1);
    }

    /// Run time per packet of pier's programs: one more run of each load
    /// with the kernel's run-time accounting on (off for every other figure,
    /// as it costs two clock reads per program run).
    fn prog_stats(&mut self, slots: &mut [Slot]) {
        let secs = self.plan.secs;
        let isecs = self.plan.iperf_secs;
        for s in slots.iter().filter(|s| s.serving()) {
            let d = s.peer.dataplane();
            let Some(pin) = s.peer.pier_bpffs() else {
                continue;
            };
            self.bar
                .set_message(format!("{}: run time per program", d.as_str()));
            let fd = match bpfstats::enable() {
                Ok(fd) => fd,
                Err(e) => {
                    self.note(format!("bpf_stats: {}", one_line(&e)));
                    return;
                }
            };
            let t = s.targets.expect("serving peers have targets");
            let w = s.peer.world();
            type Load<'a> = (&'a str, Box<dyn Fn() -> anyhow::Result<()> + 'a>);
            let loads: [Load; 5] = [
                (
                    "rr",
                    Box::new(|| w.load(self.ctx, Mode::Rr, t.tcp, secs).map(|_| ())),
                ),
                (
                    "crr",
                    Box::new(|| w.load(self.ctx, Mode::Crr, t.tcp, secs).map(|_| ())),
                ),
                (
                    "udp",
                    Box::new(|| w.load(self.ctx, Mode::Udp, t.udp, secs).map(|_| ())),
                ),
                (
                    "throughput_1",
                    Box::new(|| w.iperf(self.ctx, t.iperf, 1, isecs).map(|_| ())),
                ),
                (
                    "local_crr",
                    Box::new(|| {
                        w.load_in(&w.host, self.ctx, Mode::Crr, Targets::local().tcp, secs)
                            .map(|_| ())
                    }),
                ),
            ];
            let mut stats = Vec::new();
            let mut errs = Vec::new();
            for (load, f) in &loads {
                let r = (|| {
                    let before = bpfstats::snapshot(&pin)?;
                    f()?;
                    let after = bpfstats::snapshot(&pin)?;
                    Ok::<_, anyhow::Error>(bpfstats::delta(&before, &after))
                })();
                match r {
                    Ok(v) => stats.extend(v.into_iter().map(|(program, runs, ns)| ProgStat {
                        dataplane: d,
                        program,
                        load: load.to_string(),
                        runs,
                        ns_per_run: ns,
                    })),
                    Err(e) => errs.push(format!(
                        "{}: bpf_stats of {load}: {}",
                        d.as_str(),
                        one_line(&e)
                    )),
                }
            }
            drop(fd);
            self.results.prog_stats.extend(stats);
            for e in errs {
                self.note(e);
            }
        }
        self.bar.inc(1);
    }

    /// The container axis: `n` containers on the measured network; creating
    /// and removing one more, and new connections through the published port.
    fn containers(&mut self, slots: &mut [Slot]) {
        let pick = |s: &Slot| s.down.is_none() && s.peer.dataplane().container_axis();
        for s in slots.iter_mut().filter(|s| pick(s)) {
            if let Err(e) = s.peer.set_other_ports(self.ctx, 1) {
                let d = s.peer.dataplane();
                self.note(format!("{}: container axis: {}", d.as_str(), one_line(&e)));
            }
        }
        let docker_max = self.plan.docker_max_containers;
        for &n in &self.plan.container_steps.clone() {
            let mut skip: Vec<(Dataplane, String)> = Vec::new();
            for s in slots.iter_mut().filter(|s| pick(s)) {
                let d = s.peer.dataplane();
                if matches!(d, Dataplane::Docker | Dataplane::DockerPier) && n > docker_max {
                    skip.push((
                        d,
                        format!(
                            "skipped: dockerd takes about 0.3 s per container (limit for this run: {docker_max})"
                        ),
                    ));
                    self.bar.inc(1 + self.plan.axis_count as u64);
                    continue;
                }
                self.bar
                    .set_message(format!("{}: {n} containers", d.as_str()));
                match s.peer.set_containers(self.ctx, n) {
                    Ok(Some(took)) if !took.is_zero() => {
                        let msg = format!(
                            "{}: {n} containers running on the network after {:.1} s",
                            d.as_str(),
                            took.as_secs_f64()
                        );
                        self.note(msg);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        skip.push((d, one_line(&e)));
                        self.bar.inc(1 + self.plan.axis_count as u64);
                        continue;
                    }
                }
                self.bar.inc(1);
                let log = s.peer.agent_log();
                let log_from = log
                    .as_ref()
                    .and_then(|l| std::fs::metadata(l).ok())
                    .map_or(0, |m| m.len());
                let (mut run, mut rm) = (Vec::new(), Vec::new());
                let mut err = None;
                for i in 0..self.plan.axis_count {
                    self.bar.set_message(format!(
                        "{}: run and rm at {n} containers, {}/{}",
                        d.as_str(),
                        i + 1,
                        self.plan.axis_count
                    ));
                    match s.peer.run_rm(self.ctx, n * 1000 + i) {
                        Ok(Some((a, b))) => {
                            run.push(ms(a));
                            rm.push(ms(b));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            err = Some(one_line(&e));
                            break;
                        }
                    }
                    self.bar.inc(1);
                }
                if let Some(text) = log.and_then(|l| std::fs::read(l).ok()) {
                    let text =
                        String::from_utf8_lossy(&text[(log_from as usize).min(text.len())..])
                            .into_owned();
                    if let Some(b) = step_breakdown(&text, &["run", "rm"]) {
                        self.note(format!("{}: at {n} containers, {b}", d.as_str()));
                    }
                }
                match err {
                    Some(e) => {
                        self.results
                            .push(Record::failed(d, Figure::RunMs, n as u32, e.clone()));
                        self.results
                            .push(Record::failed(d, Figure::RmMs, n as u32, e));
                    }
                    None if !run.is_empty() => {
                        self.results
                            .push(Record::new(d, Figure::RunMs, n as u32, run));
                        self.results
                            .push(Record::new(d, Figure::RmMs, n as u32, rm));
                    }
                    None => {}
                }
            }
            for (d, why) in &skip {
                self.results.push(Record::failed(
                    *d,
                    Figure::CrrContainers,
                    n as u32,
                    why.clone(),
                ));
                self.results
                    .push(Record::failed(*d, Figure::RunMs, n as u32, why.clone()));
                self.results
                    .push(Record::failed(*d, Figure::RmMs, n as u32, why.clone()));
            }
            let skipped: Vec<Dataplane> = skip.iter().map(|(d, _)| *d).collect();
            let secs = self.plan.secs;
            let mut acc = self.rounds_of(
                slots,
                &format!("crr, {n} containers"),
                Dataplane::container_axis,
                |ctx, p, t| {
                    if skipped.contains(&p.dataplane()) {
                        return Ok(vec![f64::NAN]);
                    }
                    let r = p.world().load(ctx, Mode::Crr, t.tcp, secs)?;
                    anyhow::ensure!(
                        r.errors * 100 <= r.ops.max(1),
                        "{} of {} connections failed",
                        r.errors,
                        r.ops + r.errors
                    );
                    Ok(vec![r.rate])
                },
            );
            acc.retain(|(d, _)| !skipped.contains(d));
            self.store(&acc, &[Figure::CrrContainers], n as u32);
        }
        // Agent memory with the most containers and many published ports.
        let (ports, most) = (
            self.plan.rss_ports,
            self.plan.container_steps.iter().max().copied().unwrap_or(0),
        );
        if ports == 0 {
            return;
        }
        for s in slots.iter_mut().filter(|s| pick(s)) {
            let d = s.peer.dataplane();
            if d != Dataplane::Pier {
                continue;
            }
            self.bar.set_message(format!(
                "{}: memory with {most} containers and {ports} published ports",
                d.as_str()
            ));
            let r = s
                .peer
                .set_other_ports(self.ctx, ports)
                .and_then(|_| s.peer.rss_mib());
            match r {
                Ok(Some(m)) => {
                    let parts = s
                        .peer
                        .rss_parts()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    self.note(format!(
                        "{}: agent RSS with {most} containers and {ports} other published ports: {m:.1} MiB{parts}",
                        d.as_str()
                    ));
                }
                Ok(None) => {}
                Err(e) => self.note(format!(
                    "{}: agent RSS with {most} containers and {ports} ports: {}",
                    d.as_str(),
                    one_line(&e)
                )),
            }
        }
    }

    /// crr with `n` other published ports; the peers that could not publish
    /// them (skipped at this step).
    fn crr(&mut self, slots: &mut [Slot], n: usize) -> Vec<Dataplane> {
        // Publish the other ports first, on every peer.
        let mut skip: Vec<(Dataplane, String)> = Vec::new();
        for s in slots.iter_mut().filter(|s| s.serving()) {
            let d = s.peer.dataplane();
            self.bar
                .set_message(format!("{}: publishing {n} other ports", d.as_str()));
            if let Some(why) = s.peer.other_ports_limit(n) {
                skip.push((d, why));
            } else {
                match s.peer.set_other_ports(self.ctx, n) {
                    Ok(took) if d != Dataplane::Plain && !took.is_zero() => {
                        let msg = format!(
                            "{}: {n} other published ports set up in {:.0} ms",
                            d.as_str(),
                            took.as_secs_f64() * 1000.0
                        );
                        self.note(msg);
                    }
                    Ok(_) => {}
                    Err(e) => skip.push((d, one_line(&e))),
                }
                if !skip.iter().any(|(x, _)| *x == d) {
                    match s.peer.rule_count() {
                        Ok(Some(c)) => self.results.push(Record::new(
                            d,
                            Figure::RuleCount,
                            n as u32,
                            vec![c as f64],
                        )),
                        Ok(None) => {}
                        Err(e) => {
                            self.note(format!("{}: rule count: {}", d.as_str(), one_line(&e)))
                        }
                    }
                }
            }
            self.bar.inc(1);
        }
        for (d, why) in &skip {
            self.results
                .push(Record::failed(*d, Figure::Crr, n as u32, why.clone()));
        }
        let secs = self.plan.secs;
        let skipped: Vec<Dataplane> = skip.iter().map(|(d, _)| *d).collect();
        // Peers skipped at this step sit the rounds out.
        let mut acc = self.rounds(slots, &format!("crr, {n} other ports"), |ctx, p, t| {
            if skipped.contains(&p.dataplane()) {
                return Ok(vec![f64::NAN]);
            }
            let r = p.world().load(ctx, Mode::Crr, t.tcp, secs)?;
            anyhow::ensure!(
                r.errors * 100 <= r.ops.max(1),
                "{} of {} connections failed",
                r.errors,
                r.ops + r.errors
            );
            Ok(vec![r.rate])
        });
        acc.retain(|(d, _)| !skipped.contains(d));
        self.store(&acc, &[Figure::Crr], n as u32);
        skipped
    }

    /// crr without and with `policy_rules` source-policy rules, both in
    /// every round (pier only: no other peer has such rules in its fast
    /// path); the ratio of the two medians goes to the notes.
    fn crr_policy(&mut self, slots: &mut [Slot]) {
        let n = self.plan.policy_rules;
        let secs = self.plan.secs;
        let mut took = Vec::new();
        let acc = self.rounds_of(
            slots,
            &format!("crr, {n} policy rules"),
            |d| d == Dataplane::Pier,
            |ctx, p, t| {
                let mut v = Vec::new();
                for rules in [0, n] {
                    if let Some(d) = p.set_policy_rules(ctx, rules)? {
                        took.push(d);
                    }
                    let r = p.world().load(ctx, Mode::Crr, t.tcp, secs)?;
                    anyhow::ensure!(
                        r.errors * 100 <= r.ops.max(1),
                        "{} of {} connections failed with {rules} policy rules",
                        r.errors,
                        r.ops + r.errors
                    );
                    v.push(r.rate);
                }
                p.set_policy_rules(ctx, 0)?;
                Ok(v)
            },
        );
        for (d, r) in &acc {
            for (i, rules) in [0, n].into_iter().enumerate() {
                self.results.push(match r {
                    Ok(rounds) => Record::new(
                        *d,
                        Figure::CrrPolicy,
                        rules as u32,
                        rounds.iter().map(|v| v[i]).collect(),
                    ),
                    Err(e) => Record::failed(*d, Figure::CrrPolicy, rules as u32, e.clone()),
                });
            }
        }
        let med = |rules: u32| {
            self.results
                .get(Dataplane::Pier, Figure::CrrPolicy, rules)
                .and_then(|r| r.median)
        };
        if let Some(x) = crate::stats::ratio(med(n as u32), med(0)) {
            let slowest = took.iter().max().copied().unwrap_or_default();
            self.note(format!(
                "pier: crr with {n} policy rules / without: {x:.2}× \
                 (setting the rules took up to {:.0} ms)",
                slowest.as_secs_f64() * 1000.0
            ));
        }
    }

    fn control_plane(&mut self, slots: &mut [Slot]) {
        for s in slots.iter_mut() {
            let d = s.peer.dataplane();
            if s.down.is_some() {
                self.bar
                    .inc(self.plan.publish_rounds as u64 + 1 + self.plan.create_count as u64);
                continue;
            }
            // publish_1000_ms: a new container with a 1000-port range.
            let mut samples = Vec::new();
            let mut err = None;
            for round in 0..self.plan.publish_rounds {
                self.bar.set_message(format!(
                    "{}: publishing 1000 ports, round {}",
                    d.as_str(),
                    round + 1
                ));
                match s.peer.publish_1000(self.ctx, round) {
                    Ok(Some(t)) => samples.push(ms(t)),
                    Ok(None) => {}
                    Err(e) => {
                        err = Some(one_line(&e));
                        self.bar.inc((self.plan.publish_rounds - round) as u64);
                        break;
                    }
                }
                self.bar.inc(1);
            }
            match err {
                Some(e) => self
                    .results
                    .push(Record::failed(d, Figure::Publish1000Ms, 1000, e)),
                None if !samples.is_empty() => {
                    self.results
                        .push(Record::new(d, Figure::Publish1000Ms, 1000, samples))
                }
                None => {}
            }

            // Agent memory with 1000 published ports.
            self.bar
                .set_message(format!("{}: memory with 1000 published ports", d.as_str()));
            if d == Dataplane::Pier {
                let r = s
                    .peer
                    .set_other_ports(self.ctx, 1000)
                    .and_then(|_| s.peer.rss_mib());
                self.results.push(match r {
                    Ok(Some(m)) => Record::new(d, Figure::RssMib, 1000, vec![m]),
                    Ok(None) => Record::failed(d, Figure::RssMib, 1000, "no agent"),
                    Err(e) => Record::failed(d, Figure::RssMib, 1000, one_line(&e)),
                });
            }
            self.bar.inc(1);

            // create + remove containers.
            let mut samples = Vec::new();
            let mut err = None;
            for i in 0..self.plan.create_count {
                self.bar.set_message(format!(
                    "{}: create and remove container {}/{}",
                    d.as_str(),
                    i + 1,
                    self.plan.create_count
                ));
                match s.peer.create_remove(self.ctx, i) {
                    Ok(Some(t)) => samples.push(ms(t)),
                    Ok(None) => {
                        self.bar.inc((self.plan.create_count - i) as u64);
                        break;
                    }
                    Err(e) => {
                        err = Some(one_line(&e));
                        self.bar.inc((self.plan.create_count - i) as u64);
                        break;
                    }
                }
                self.bar.inc(1);
            }
            match err {
                Some(e) => self.results.push(Record::failed(d, Figure::CreateMs, 1, e)),
                None if !samples.is_empty() => {
                    self.results
                        .push(Record::new(d, Figure::CreateMs, 1, samples))
                }
                None => {}
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `Duration`'s `Debug` text (`812.3µs`, `2.1ms`, `1.5s`, `40ns`) in ms.
fn debug_ms(t: &str) -> Option<f64> {
    let t = t.trim_end_matches([')', ',']);
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("µs") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// The median of each step the agent logs at debug level
/// (`PIER_BENCH_AGENT_LOG=pier_agent=debug`) in this part of its log: its
/// `change:` lines (apply, dataplane sync, store commit, cleanup+names),
/// `dataplane sync:` lines (tables, veths, maps, host), `names hook` and
/// the host re-reads (`host change followed in`). `None`: no such lines.
/// `cycle` names the changes in turn (`["run", "rm"]`: the first change is
/// a run, the second an rm, ...); a change's lines are those up to its
/// `change:` line, which the agent logs last.
pub fn step_breakdown(log: &str, cycle: &[&str]) -> Option<String> {
    const KINDS: [(&str, &str); 4] = [
        ("change: ", "change"),
        ("dataplane sync: ", "dataplane sync"),
        ("names hook ", "names hook"),
        ("host change followed in ", "host re-read"),
    ];
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    let mut count = [0usize; KINDS.len()];
    for line in log.lines() {
        let Some((k, (marker, kind))) = KINDS
            .iter()
            .enumerate()
            .find(|(_, (m, _))| line.contains(m))
        else {
            continue;
        };
        // The change this line belongs to: the changes logged before it.
        let of = match cycle.len() {
            0 => String::new(),
            n => format!("{} ", cycle[count[0] % n]),
        };
        let kind = &format!("{of}{kind}");
        count[k] += 1;
        let rest = &line[line.find(marker).unwrap_or(0) + marker.len()..];
        for seg in rest.split(", ") {
            let words: Vec<&str> = seg.split_whitespace().collect();
            let Some(i) = words.iter().position(|w| debug_ms(w).is_some()) else {
                continue;
            };
            let label = if i == 0 {
                kind.to_string()
            } else {
                format!("{kind}: {}", words[..i].join(" "))
            };
            let v = debug_ms(words[i]).unwrap_or_default();
            match steps.iter_mut().find(|(l, _)| *l == label) {
                Some((_, vs)) => vs.push(v),
                None => steps.push((label, vec![v])),
            }
        }
    }
    if steps.is_empty() {
        return None;
    }
    let counts: Vec<String> = KINDS
        .iter()
        .zip(count)
        .filter(|(_, c)| *c > 0)
        .map(|((_, kind), c)| format!("{c} {kind}"))
        .collect();
    let parts: Vec<String> = steps
        .into_iter()
        .map(|(l, mut vs)| {
            vs.sort_by(f64::total_cmp);
            format!("{l} {:.2} ms", vs[vs.len() / 2])
        })
        .collect();
    Some(format!(
        "agent step medians ({}): {}",
        counts.join(", "),
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakdown_of_agent_debug_lines() {
        let log = "\
2026-12-06T22:00:00Z DEBUG pier_agent::dataplane::ebpf: dataplane sync: tables 1.5ms (interfaces read by name), veths 200µs, maps 3ms, host 10µs
2026-12-06T22:00:00Z DEBUG pier_agent::daemon: change: apply 2ms, dataplane sync 5ms, store commit 500µs, cleanup+names 1ms
2026-12-06T22:00:01Z DEBUG pier_agent::daemon: change: apply 4ms, dataplane sync 7ms, store commit 1.5ms, cleanup+names 3ms
2026-12-06T22:00:01Z DEBUG pier_agent::daemon: change: apply 6ms, dataplane sync 9ms, store commit 2.5ms, cleanup+names 5ms
2026-12-06T22:00:01Z DEBUG pier_agent::daemon: names hook 800µs
unrelated line 5ms
";
        let b = step_breakdown(log, &[]).unwrap();
        assert!(b.contains("3 change"), "{b}");
        assert!(b.contains("change: apply 4.00 ms"), "{b}");
        assert!(b.contains("change: store commit 1.50 ms"), "{b}");
        assert!(b.contains("dataplane sync: tables 1.50 ms"), "{b}");
        assert!(b.contains("dataplane sync: veths 0.20 ms"), "{b}");
        assert!(b.contains("names hook 0.80 ms"), "{b}");
        assert!(!b.contains("unrelated"), "{b}");
        assert_eq!(step_breakdown("nothing here\n", &[]), None);
        // Changes in turn: run (2 ms, 6 ms: median of two is the upper),
        // rm (4 ms); the sync line before the first change is the run's,
        // the names hook after the third change belongs to a fourth (rm).
        let b = step_breakdown(log, &["run", "rm"]).unwrap();
        assert!(b.contains("run change: apply 6.00 ms"), "{b}");
        assert!(b.contains("rm change: apply 4.00 ms"), "{b}");
        assert!(b.contains("run dataplane sync: maps 3.00 ms"), "{b}");
        assert!(b.contains("rm names hook 0.80 ms"), "{b}");
        assert_eq!(debug_ms("1.5s"), Some(1500.0));
        assert!(debug_ms("40ns").is_some_and(|v| (v - 4e-5).abs() < 1e-12));
        assert_eq!(debug_ms("12"), None);
    }
}
