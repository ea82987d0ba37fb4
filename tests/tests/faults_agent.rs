//! Faults with nothing lost: `SIGKILL` the agent at random points while
//! containers with published ports are created and removed on a user network
//! and the default bridge (and, now and then, again while the restarted
//! agent reconciles), restart it each time, and check after every restart
//! that store, host veths, namespace mounts and the pinned maps agree. At the
//! end, after a last restart, every container answers a ping from the host
//! namespace and its published port answers from outside.
//!
//! `FAULTS_OPS` (default 300) creates/removes, `FAULTS_SEED` replays a run.
mod agent_util;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_util::{consistency::disagreements, *};
use nix::sys::signal::Signal;
use pier_tests::{
    host::{HOST_UPLINK_IP, pier_bin},
    require_root,
};

const NET: &str = "faultnet";
/// Containers alive at once: between these.
const MIN_LIVE: usize = 3;
const MAX_LIVE: usize = 10;
/// Percent of operations during which the agent is killed.
const KILL_PCT: u64 = 20;
/// Percent of restarts killed again while the new agent starts.
const KILL_AGAIN_PCT: u64 = 15;
/// First host port of slot `i` (two ports each).
fn host_base(slot: usize) -> u16 {
    21000 + 2 * slot as u16
}

struct Run {
    s: Sandbox,
    rng: Rng,
    kills: usize,
    kills_in_start: usize,
    takeovers: Vec<Duration>,
    /// Typical time of a restart, for kills during one.
    start_ms: u64,
}

impl Run {
    fn agent_pid(&self) -> u32 {
        self.s.agent.as_ref().unwrap().pid
    }

    fn kill(&mut self) -> Instant {
        let a = self.s.agent.take().unwrap();
        let t = Instant::now();
        self.s.host.stop_agent(&a, Signal::SIGKILL);
        self.kills += 1;
        t
    }

    /// Start an agent after a kill at `killed`; sometimes kill it again
    /// while it starts. Records the takeover time of the one that stays.
    fn restart(&mut self, mut killed: Instant) {
        loop {
            self.s.agent = Some(self.s.host.start_agent(&[]));
            if self.rng.below(100) < KILL_AGAIN_PCT {
                let d = self.rng.below(self.start_ms.max(1));
                std::thread::sleep(Duration::from_millis(d));
                killed = self.kill();
                self.kills_in_start += 1;
                continue;
            }
            self.s.host.wait_agent_ready();
            let t = killed.elapsed();
            self.start_ms = (self.start_ms * 3 + t.as_millis() as u64) / 4;
            self.takeovers.push(t);
            return;
        }
    }

    fn check(&self, when: &str) {
        let (_, bad) = disagreements(&self.s.host, false);
        assert!(
            bad.is_empty(),
            "{when}: store and kernel disagree:\n{}\nagent log:\n{}",
            bad.join("\n"),
            self.s.log()
        );
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    require_root!();
    let (rng, seed) = Rng::from_env("FAULTS_SEED");
    let ops = env_num("FAULTS_OPS", 300);
    println!("faults: FAULTS_SEED={seed} FAULTS_OPS={ops}");
    let s = Sandbox::new(&[]);
    s.host.pier_ok(&["network", "create", NET]);
    let mut r = Run {
        s,
        rng,
        kills: 0,
        kills_in_start: 0,
        takeovers: Vec::new(),
        start_ms: 300,
    };
    // name → slot of its host ports, as the store holds them.
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    let mut op_ms = 80u64;
    let t0 = Instant::now();
    let (mut creates, mut removes, mut refused_after_kill) = (0, 0, 0);
    for op in 0..ops {
        let create = live.len() < MIN_LIVE || (live.len() < MAX_LIVE && r.rng.below(2) == 0);
        let (name, args): (String, Vec<String>) = if create {
            creates += 1;
            let slot = (0..MAX_LIVE)
                .find(|i| !live.values().any(|s| s == i))
                .unwrap();
            let name = format!("f{op}");
            let net = if r.rng.below(2) == 0 { NET } else { "bridge" };
            let b = host_base(slot);
            live.insert(name.clone(), slot);
            let args = ["run", "-d", "--name", &name, "--network", net, "-p"]
                .iter()
                .map(|s| s.to_string())
                .chain([format!("{b}-{}:8000-8001", b + 1)])
                .collect();
            (name, args)
        } else {
            removes += 1;
            let names: Vec<&String> = live.keys().collect();
            let name = (*r.rng.pick(&names)).clone();
            (name.clone(), vec!["rm".into(), "-f".into(), name])
        };
        let kill_at = (r.rng.below(100) < KILL_PCT).then(|| r.rng.below(op_ms * 3 / 2 + 1));
        let started = Instant::now();
        let cli = Command::new(pier_bin())
            .arg("--socket")
            .arg(r.s.host.socket())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pier");
        let Some(ms) = kill_at else {
            let out = cli.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "op {op}: pier {args:?} failed without a fault: {}\nagent log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                r.s.log()
            );
            op_ms = (op_ms * 7 + started.elapsed().as_millis() as u64) / 8;
            if !create {
                live.remove(&name);
            }
            continue;
        };
        std::thread::sleep(Duration::from_millis(ms));
        let killed = r.kill();
        let out = cli.wait_with_output().unwrap();
        if !out.status.success() {
            refused_after_kill += 1;
        }
        r.restart(killed);
        // The store decides whether the interrupted operation happened.
        let now = consistency::recorded(&r.s.host);
        let present = now.iter().any(|c| c.name == name);
        if !present {
            live.remove(&name);
        }
        let names: Vec<String> = now.iter().map(|c| c.name.clone()).collect();
        assert_eq!(
            names,
            live.keys().cloned().collect::<Vec<_>>(),
            "op {op} (killed {ms} ms into {args:?}): the store lost or gained a container"
        );
        r.check(&format!(
            "after the restart at op {op} ({ms} ms into {args:?})"
        ));
    }
    let loop_time = t0.elapsed();
    // A last restart, then the whole check with traffic.
    let killed = r.kill();
    r.s.agent = Some(r.s.host.start_agent(&[]));
    r.s.host.wait_agent_ready();
    r.takeovers.push(killed.elapsed());
    let (seen, bad) = disagreements(&r.s.host, true);
    assert!(
        bad.is_empty(),
        "at the end: store and kernel disagree:\n{}\nagent log:\n{}",
        bad.join("\n"),
        r.s.log()
    );
    assert_eq!(
        seen.containers
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
        live.keys().cloned().collect::<Vec<_>>()
    );
    for c in &seen.containers {
        let ns = r.s.host.container_netns(&c.id);
        let (ip, _) = c.endpoints.values().next().unwrap();
        assert!(
            ping(&r.s.host_ns(), &ip.to_string()),
            "{} ({ip}) does not answer a ping from the host",
            c.name
        );
        let port = c.ports.iter().find(|p| p.backend_port == 8000).unwrap();
        let srv = tcp_server(&ns, 8000, 1);
        let a = tcp_ask(
            &r.s.outside_ns(),
            &format!("{HOST_UPLINK_IP}:{}", port.host_port),
            &c.name,
        )
        .unwrap_or_else(|e| panic!("{}: port {} not served: {e}", c.name, port.host_port));
        assert!(a.text.ends_with(&format!("|{}", c.name)), "{a:?}");
        srv.join().unwrap();
    }
    r.s.assert_firewalls_untouched();
    let (med, max) = median_max(&r.takeovers);
    println!(
        "faults: {ops} ops ({creates} creates, {removes} removes) in {loop_time:.1?}; \
         {} kills ({} during a restart), {refused_after_kill} interrupted ops failed; \
         takeover (kill → agent ready) median {} ms max {} ms over {} restarts; \
         {} containers at the end, {} veths, {} port entries, all agree and answer; agent RSS {} KiB",
        r.kills,
        r.kills_in_start,
        med.as_millis(),
        max.as_millis(),
        r.takeovers.len(),
        seen.containers.len(),
        seen.veths,
        seen.ports,
        rss_kib(r.agent_pid()).unwrap_or(0)
    );
}
