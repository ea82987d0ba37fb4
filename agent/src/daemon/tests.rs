//! The daemon's transaction logic with a fake topology and dataplane: every
//! failure (topology, dataplane sync) leaves the store and the fake kernel
//! exactly as before, and a restart finds what was committed.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    Daemon,
    process::{Proc, ProcSpec, Runner, Waitable},
};
use crate::{
    api::types::{ContainerCreate, NetworkConnect, NetworkCreate},
    config::AgentConfig,
    dataplane::{Dataplane, DataplaneError, DesiredState, PortStats},
    topology::{BridgeSpec, EndpointSpec, Topology, TopologyError},
};

#[derive(Default, Debug, Clone, PartialEq, Eq)]
struct Kernel {
    links: BTreeSet<String>,
    netns: BTreeSet<PathBuf>,
    /// Default routes set after the first endpoint went: "IFNAME via GW".
    routes: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeTopo {
    k: Arc<Mutex<Kernel>>,
    /// Fail add_endpoint for this many calls from now on.
    fail_endpoint: Arc<Mutex<bool>>,
}

impl Topology for FakeTopo {
    fn ensure_bridge(&self, b: &BridgeSpec) -> Result<u32, TopologyError> {
        self.k.lock().unwrap().links.insert(b.name.clone());
        Ok(1)
    }
    fn remove_bridge(&self, name: &str) -> Result<(), TopologyError> {
        self.k.lock().unwrap().links.remove(name);
        Ok(())
    }
    fn create_netns(&self, p: &Path) -> Result<(), TopologyError> {
        self.k.lock().unwrap().netns.insert(p.to_path_buf());
        Ok(())
    }
    fn remove_netns(&self, p: &Path) -> Result<(), TopologyError> {
        self.k.lock().unwrap().netns.remove(p);
        Ok(())
    }
    fn add_endpoint(&self, ep: &EndpointSpec) -> Result<(), TopologyError> {
        if *self.fail_endpoint.lock().unwrap() {
            return Err(TopologyError::Invalid("injected failure".into()));
        }
        let mut k = self.k.lock().unwrap();
        if !k.links.contains(&ep.bridge) {
            return Err(TopologyError::Invalid(format!("no bridge {}", ep.bridge)));
        }
        k.links.insert(ep.host_ifname.clone());
        Ok(())
    }
    fn remove_endpoint(&self, ep: &EndpointSpec) -> Result<(), TopologyError> {
        self.k.lock().unwrap().links.remove(&ep.host_ifname);
        Ok(())
    }
    fn host_links(&self) -> Result<Vec<String>, TopologyError> {
        Ok(self.k.lock().unwrap().links.iter().cloned().collect())
    }
    fn routed_subnets(&self) -> Result<Vec<ipnet::Ipv4Net>, TopologyError> {
        Ok(vec!["172.18.0.0/16".parse().unwrap()])
    }
    fn default_route_iface(&self) -> Result<Option<String>, TopologyError> {
        Ok(None)
    }
    fn set_default_route(
        &self,
        _: &Path,
        ifname: &str,
        gw: std::net::Ipv4Addr,
    ) -> Result<(), TopologyError> {
        self.k
            .lock()
            .unwrap()
            .routes
            .push(format!("{ifname} via {gw}"));
        Ok(())
    }
}

/// Refuses host port 9999, like a port another program holds.
#[derive(Clone, Default)]
struct FakeDataplane {
    synced: Arc<Mutex<Vec<DesiredState>>>,
}

impl Dataplane for FakeDataplane {
    fn start(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn sync(&mut self, d: &DesiredState) -> Result<(), DataplaneError> {
        if d.ports.iter().any(|p| p.host_port == 9999) {
            return Err(DataplaneError::PortInUse("0.0.0.0:9999/tcp".into()));
        }
        // A bug's stand-in: port 9998 panics mid-sync.
        assert!(
            d.ports.iter().all(|p| p.host_port != 9998),
            "injected panic"
        );
        self.synced.lock().unwrap().push(d.clone());
        Ok(())
    }
    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        Ok(vec![])
    }
}

struct NoRunner;
impl Runner for NoRunner {
    fn spawn_detached(&self, _: ProcSpec) -> Result<Proc, super::process::SpawnError> {
        Err("no processes in unit tests".into())
    }
    fn spawn_attached(&self, _: ProcSpec) -> Result<Box<dyn Waitable>, super::process::SpawnError> {
        Err("no processes in unit tests".into())
    }
    fn alive(&self, _: Proc) -> bool {
        false
    }
}

struct Env {
    dir: PathBuf,
    topo: FakeTopo,
    dp: FakeDataplane,
}

impl Env {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pier-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Env {
            dir,
            topo: FakeTopo::default(),
            dp: FakeDataplane::default(),
        }
    }
    fn start(&self) -> Daemon {
        let cfg = AgentConfig::new(
            self.dir.join("state"),
            self.dir.join("run"),
            self.dir.join("run/pier.sock"),
            self.dir.join("bpf"),
            vec![],
            None,
        )
        .unwrap();
        Daemon::start(
            cfg,
            Box::new(self.topo.clone()),
            Box::new(NoRunner),
            Box::new(self.dp.clone()),
        )
        .unwrap()
    }
    fn kernel(&self) -> Kernel {
        self.topo.k.lock().unwrap().clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(name: &str, net: Option<&str>, ports: &[&str]) -> ContainerCreate {
    ContainerCreate {
        name: Some(name.into()),
        network: net.map(Into::into),
        ports: ports.iter().map(|s| s.to_string()).collect(),
        detach: true,
        ..Default::default()
    }
}

#[test]
fn start_creates_defaults_and_syncs_once() {
    let env = Env::new("start");
    let d = env.start();
    let st = d.snapshot();
    let mut names: Vec<_> = st.networks.values().map(|n| n.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bridge", "host", "none"]);
    assert_eq!(env.kernel().links, BTreeSet::from(["pier0".to_string()]));
    let synced = env.dp.synced.lock().unwrap().clone();
    assert_eq!(synced.last().unwrap().networks.len(), 1);
    assert_eq!(synced.last().unwrap().networks[0].bridge, "pier0");
}

#[test]
fn a_panic_mid_change_undoes_its_steps_and_the_next_change_syncs() {
    let env = Env::new("panic");
    let d = env.start();
    d.container_create(run("ok", None, &["8080:80"])).unwrap();
    let (kernel, state) = (env.kernel(), d.snapshot());
    let syncs = env.dp.synced.lock().unwrap().len();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.container_create(run("bad", None, &["9998:80"]))
    }));
    assert!(r.is_err(), "the panic goes on to the caller");
    // Its namespace and veth are gone again, nothing was committed.
    assert_eq!(env.kernel(), kernel);
    assert_eq!(d.snapshot(), state);
    assert_eq!(env.dp.synced.lock().unwrap().len(), syncs);
    // The lock is usable, and a change the dataplane would otherwise not
    // see (nothing it reflects differs) syncs it once.
    d.change(|_| Ok(())).unwrap();
    let synced = env.dp.synced.lock().unwrap().clone();
    assert_eq!(synced.len(), syncs + 1);
    assert_eq!(synced.last().unwrap().ports.len(), 1);
    d.change(|_| Ok(())).unwrap();
    assert_eq!(env.dp.synced.lock().unwrap().len(), syncs + 1);
    drop(d);
    // A restart finds what was committed.
    assert_eq!(env.start().snapshot().containers.len(), 1);
}

#[test]
fn a_bridge_takes_1023_containers_and_the_next_is_refused_in_words() {
    let env = Env::new("full");
    let d = env.start();
    for i in 0..super::core::BRIDGE_MAX_PORTS {
        d.container_create(run(&format!("c{i}"), None, &[]))
            .unwrap();
    }
    // pier0 and a veth per container.
    assert_eq!(env.kernel().links.len(), 1 + super::core::BRIDGE_MAX_PORTS);
    let (kernel, state) = (env.kernel(), d.snapshot());
    let e = d
        .container_create(run("one-too-many", None, &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("network bridge is full") && e.contains("1023"),
        "{e}"
    );
    assert_eq!(env.kernel(), kernel, "nothing made");
    assert_eq!(d.snapshot(), state, "nothing recorded");
    // Another network takes it.
    d.network_create(NetworkCreate {
        name: "more".into(),
        ..Default::default()
    })
    .unwrap();
    d.container_create(run("one-too-many", Some("more"), &[]))
        .unwrap();
}

#[test]
fn dataplane_refusal_rolls_everything_back() {
    let env = Env::new("dp");
    let d = env.start();
    d.container_create(run("ok", None, &["8080:80"])).unwrap();
    let (st, k) = (d.snapshot(), env.kernel());
    let e = d
        .container_create(run("bad", None, &["9999:80"]))
        .unwrap_err();
    assert_eq!(e.to_string(), "port is already allocated: 0.0.0.0:9999/tcp");
    assert_eq!(e.status(), 409);
    assert_eq!(d.snapshot(), st, "store unchanged");
    assert_eq!(env.kernel(), k, "no veth or namespace left");
    // The dataplane saw the ports of `ok` only.
    let last = env.dp.synced.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.ports.len(), 1);
    assert_eq!(last.ports[0].host_port, 8080);
    assert_eq!(last.ports[0].container_ip.to_string(), "172.17.0.2");
    assert_eq!(last.endpoints.len(), 1);
}

#[test]
fn topology_failure_rolls_back_and_frees_the_address() {
    let env = Env::new("topo");
    let d = env.start();
    let id = d
        .network_create(NetworkCreate {
            name: "mynet".into(),
            ..Default::default()
        })
        .unwrap();
    // 172.18/16 is "routed" on the fake host: the next pool is used.
    assert_eq!(
        d.snapshot().networks[&id].subnet.unwrap().to_string(),
        "172.19.0.0/16"
    );
    d.container_create(run("c1", None, &[])).unwrap();
    let (st, k) = (d.snapshot(), env.kernel());
    *env.topo.fail_endpoint.lock().unwrap() = true;
    let e = d
        .network_connect(
            "mynet",
            NetworkConnect {
                container: "c1".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "injected failure");
    assert!(d.container_create(run("c2", Some("mynet"), &[])).is_err());
    assert_eq!(d.snapshot(), st);
    assert_eq!(env.kernel(), k);
    *env.topo.fail_endpoint.lock().unwrap() = false;
    d.container_create(run("c2", Some("mynet"), &[])).unwrap();
    let st = d.snapshot();
    let c2 = st.find_container("c2").unwrap();
    assert_eq!(c2.endpoints[0].ip.unwrap().to_string(), "172.19.0.2");
}

#[test]
fn restart_finds_committed_state_and_reuses_numbers() {
    let env = Env::new("restart");
    let (ids, nums) = {
        let d = env.start();
        d.network_create(NetworkCreate {
            name: "a".into(),
            ..Default::default()
        })
        .unwrap();
        d.container_create(run("c1", Some("a"), &["8081:80"]))
            .unwrap();
        let st = d.snapshot();
        let ids: BTreeSet<String> = st.containers.keys().cloned().collect();
        let nums: BTreeSet<u32> = st.networks.values().map(|n| n.num).collect();
        (ids, nums)
    };
    // The fake kernel lost the veth: the restart recreates it.
    let veth = env
        .kernel()
        .links
        .iter()
        .find(|l| l.starts_with("veth"))
        .cloned()
        .unwrap();
    env.topo.k.lock().unwrap().links.remove(&veth);
    let d = env.start();
    let st = d.snapshot();
    assert_eq!(st.containers.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert_eq!(
        st.networks.values().map(|n| n.num).collect::<BTreeSet<_>>(),
        nums
    );
    assert!(env.kernel().links.contains(&veth));
    let n = d
        .network_create(NetworkCreate {
            name: "b".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        d.snapshot().networks[&n].num,
        *nums.iter().max().unwrap() + 1
    );
}

#[test]
fn desired_state_reflects_options_endpoints_and_running_ports() {
    let env = Env::new("desired");
    let d = env.start();
    let mut opts = std::collections::BTreeMap::new();
    opts.insert(
        "com.docker.network.bridge.enable_icc".to_string(),
        "false".to_string(),
    );
    opts.insert(
        "com.docker.network.bridge.enable_ip_masquerade".to_string(),
        "false".to_string(),
    );
    d.network_create(NetworkCreate {
        name: "iso".into(),
        subnet: Some("10.7.0.0/24".into()),
        internal: true,
        options: opts,
        ..Default::default()
    })
    .unwrap();
    d.container_create(run("a", Some("iso"), &["7000-7001:80-81/udp"]))
        .unwrap();
    d.container_create(run("h", Some("host"), &["7100:80"]))
        .unwrap();
    let st = d.snapshot();
    let want = super::desired_state(&st);
    let iso = want
        .networks
        .iter()
        .find(|n| n.bridge.starts_with("br-"))
        .unwrap();
    assert_eq!(
        (
            iso.internal,
            iso.icc,
            iso.masquerade,
            iso.subnet.unwrap().to_string()
        ),
        (true, false, false, "10.7.0.0/24".to_string())
    );
    let pier0 = want.networks.iter().find(|n| n.bridge == "pier0").unwrap();
    assert!(!pier0.internal && pier0.icc && pier0.masquerade);
    assert_ne!(iso.id, pier0.id);
    assert_eq!(want.endpoints.len(), 1, "host mode has no endpoint");
    assert_eq!(want.endpoints[0].network_id, iso.id);
    assert_eq!(want.endpoints[0].mac, [0x02, 0x42, 10, 7, 0, 2]);
    let ports: Vec<(u16, u16)> = want
        .ports
        .iter()
        .map(|p| (p.host_port, p.container_port))
        .collect();
    assert_eq!(
        ports,
        [(7000, 80), (7001, 81)],
        "host-mode ports are discarded"
    );
    assert!(want.ports.iter().all(
        |p| p.proto == crate::dataplane::Proto::Udp && p.container_ip.to_string() == "10.7.0.2"
    ));
    // The dataplane got exactly this state last.
    assert_eq!(env.dp.synced.lock().unwrap().last().unwrap(), &want);
    // A stopped container's ports leave the dataplane.
    d.container_stop("a").unwrap();
    let last = env.dp.synced.lock().unwrap().last().unwrap().clone();
    assert!(last.ports.is_empty());
    assert_eq!(last.endpoints.len(), 1);
}

#[test]
fn names_hook_sees_every_committed_change_and_the_start() {
    let env = Env::new("hook");
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s2 = seen.clone();
    let cfg = AgentConfig::new(
        env.dir.join("state"),
        env.dir.join("run"),
        env.dir.join("run/pier.sock"),
        env.dir.join("bpf"),
        vec![],
        None,
    )
    .unwrap();
    let d = Daemon::start_with_hook(
        cfg,
        Box::new(env.topo.clone()),
        Box::new(NoRunner),
        Box::new(env.dp.clone()),
        Some(Box::new(move |st: &crate::state::State| {
            let mut names: Vec<String> = st.containers.values().map(|c| c.name.clone()).collect();
            names.sort();
            s2.lock().unwrap().push(names);
        })),
    )
    .unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec![Vec::<String>::new()]);
    d.container_create(run("a", None, &[])).unwrap();
    d.container_create(run("b", None, &[])).unwrap();
    // A refused change calls nothing.
    assert!(d.container_create(run("a", None, &[])).is_err());
    d.container_rm("a", false).unwrap();
    // A detached command: the hook sees the container before its process
    // starts; here the start fails, and the hook sees the state without it.
    let mut c = run("c", None, &[]);
    c.cmd = vec!["true".into()];
    assert!(d.container_create(c).is_err());
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            vec![],
            vec!["a".to_string()],
            vec!["a".to_string(), "b".to_string()],
            vec!["b".to_string()],
            vec!["b".to_string(), "c".to_string()],
            vec!["b".to_string()],
        ]
    );
}

#[test]
fn names_hook_runs_once_at_a_restart_without_changes() {
    let env = Env::new("hook2");
    drop(env.start());
    let calls = Arc::new(Mutex::new(0));
    let c2 = calls.clone();
    let cfg = AgentConfig::new(
        env.dir.join("state"),
        env.dir.join("run"),
        env.dir.join("run/pier.sock"),
        env.dir.join("bpf"),
        vec![],
        None,
    )
    .unwrap();
    let _d = Daemon::start_with_hook(
        cfg,
        Box::new(env.topo.clone()),
        Box::new(NoRunner),
        Box::new(env.dp.clone()),
        Some(Box::new(move |_: &crate::state::State| {
            *c2.lock().unwrap() += 1
        })),
    )
    .unwrap();
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[test]
fn run_dns_is_stored_and_written_to_resolv_conf() {
    let env = Env::new("rundns");
    let d = env.start();
    let resolv = |name: &str| {
        let id = d.snapshot().find_container(name).unwrap().id.clone();
        std::fs::read_to_string(d.cfg.container_dir(&id).join("resolv.conf")).unwrap()
    };
    let nameservers = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("nameserver "))
            .map(str::to_string)
            .collect()
    };
    let with_dns = |name: &str, net: Option<&str>, dns: &[&str]| ContainerCreate {
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ..run(name, net, &[])
    };
    // Default bridge: resolv.conf lists the container's own servers, once each.
    d.container_create(with_dns(
        "d1",
        None,
        &["192.0.2.53", "2001:db8::53", "192.0.2.53"],
    ))
    .unwrap();
    let want: Vec<std::net::IpAddr> = vec![
        "192.0.2.53".parse().unwrap(),
        "2001:db8::53".parse().unwrap(),
    ];
    assert_eq!(d.snapshot().find_container("d1").unwrap().dns, want);
    assert_eq!(nameservers(&resolv("d1")), ["192.0.2.53", "2001:db8::53"]);

    // Bad input: one-line errors, nothing made.
    let (st, k) = (d.snapshot(), env.kernel());
    let e = d
        .container_create(with_dns("bad", None, &["192.0.2.1", "bogus"]))
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid DNS server address \"bogus\"");
    assert_eq!(e.status(), 400);
    let e = d
        .container_create(with_dns("bad", Some("container:d1"), &["192.0.2.1"]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "conflicting options: dns and the network mode"
    );
    assert_eq!(d.snapshot(), st);
    assert_eq!(env.kernel(), k);

    // On a user-defined network the embedded resolver is the nameserver; the
    // servers are kept for it (the resolver's upstreams for this container).
    d.network_create(NetworkCreate {
        name: "mynet".into(),
        ..Default::default()
    })
    .unwrap();
    d.container_create(with_dns("u1", Some("mynet"), &["192.0.2.54"]))
        .unwrap();
    assert_eq!(resolv("u1"), "nameserver 127.0.0.11\noptions ndots:0\n");
    assert_eq!(
        d.snapshot().find_container("u1").unwrap().dns,
        ["192.0.2.54".parse::<std::net::IpAddr>().unwrap()]
    );
    // connect to a user network switches d1 to the embedded resolver,
    // disconnect switches it back.
    d.network_connect(
        "mynet",
        NetworkConnect {
            container: "d1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resolv("d1"), "nameserver 127.0.0.11\noptions ndots:0\n");
    d.network_disconnect("mynet", "d1", false).unwrap();
    assert_eq!(nameservers(&resolv("d1")), ["192.0.2.53", "2001:db8::53"]);
    // The servers survive a restart.
    drop(d);
    let d = env.start();
    assert_eq!(d.snapshot().find_container("d1").unwrap().dns, want);
}

#[test]
fn disconnecting_the_first_network_moves_the_default_route() {
    let env = Env::new("gwmove");
    let d = env.start();
    for n in ["n1", "n2"] {
        d.network_create(NetworkCreate {
            name: n.into(),
            ..Default::default()
        })
        .unwrap();
    }
    d.container_create(run("c", Some("n1"), &["8081:80"]))
        .unwrap();
    let connect = |n: &str| {
        d.network_connect(
            n,
            NetworkConnect {
                container: "c".into(),
                ..Default::default()
            },
        )
        .unwrap()
    };
    connect("n2");
    // Leaving a network that is not the first changes no route.
    d.network_create(NetworkCreate {
        name: "n3".into(),
        ..Default::default()
    })
    .unwrap();
    connect("n3");
    d.network_disconnect("n3", "c", false).unwrap();
    assert_eq!(env.kernel().routes, Vec::<String>::new());
    // Leaving the first: the next endpoint gets the default route.
    d.network_disconnect("n1", "c", false).unwrap();
    let st = d.snapshot();
    let c = st.find_container("c").unwrap();
    let n2 = st.find_network("n2").unwrap();
    assert_eq!(c.endpoints.len(), 1);
    assert_eq!(
        env.kernel().routes,
        [format!(
            "{} via {}",
            c.endpoints[0].ifname,
            n2.gateway.unwrap()
        )]
    );
    // Leaving the last one: nothing to move.
    d.network_disconnect("n2", "c", false).unwrap();
    assert_eq!(env.kernel().routes.len(), 1);
}

#[test]
fn ps_shows_ports_of_running_containers_only() {
    let env = Env::new("psports");
    let d = env.start();
    d.container_create(run(
        "web",
        None,
        &["8080:80", "127.0.0.1:9000-9001:90-91/udp"],
    ))
    .unwrap();
    let ps = |all| {
        d.list_containers(all)
            .into_iter()
            .map(|s| {
                (
                    s.names[0].trim_start_matches('/').to_string(),
                    s.status,
                    crate::cli::compact_ports(&s.ports),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ps(false),
        [(
            "web".to_string(),
            "Up Less than a second".to_string(),
            vec![
                "0.0.0.0:8080->80/tcp".to_string(),
                "127.0.0.1:9000-9001->90-91/udp".to_string()
            ]
        )]
    );
    d.container_stop("web").unwrap();
    assert_eq!(ps(false), []);
    assert_eq!(
        ps(true),
        [(
            "web".to_string(),
            "Exited (0) Less than a second ago".to_string(),
            vec![]
        )]
    );
    // The time since it stopped, in Docker's words.
    d.change(|txn| {
        let c = txn.state.containers.values_mut().next().unwrap();
        c.finished_ms = c.finished_ms.map(|t| t - 125_000);
        Ok(())
    })
    .unwrap();
    assert_eq!(ps(true)[0].1, "Exited (0) 2 minutes ago");
    // The bindings are kept: started again, it shows them again.
    d.container_start("web").unwrap();
    assert_eq!(ps(false)[0].2.len(), 2);
    // Docker's list shape: one entry per port, Created in seconds.
    let e = &d.list_containers(false)[0];
    assert_eq!(e.ports.len(), 3);
    assert_eq!(e.state, "running");
    assert!(e.created > 1_700_000_000, "{}", e.created);
}

#[test]
fn ps_status_words_are_dockers() {
    let env = Env::new("pswords");
    let d = env.start();
    // A foreground run between create and its client's exec: Created.
    let mut fg = run("fg", None, &["8080:80"]);
    fg.cmd = vec!["true".into()];
    fg.detach = false;
    d.container_create(fg).unwrap();
    d.container_create(run("ns", None, &[])).unwrap();
    let ps = || {
        d.list_containers(true)
            .into_iter()
            .map(|s| {
                (
                    s.names[0].trim_start_matches('/').to_string(),
                    s.status,
                    s.ports.len(),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        ps(),
        BTreeSet::from([
            ("fg".to_string(), "Created".to_string(), 0),
            ("ns".to_string(), "Up Less than a second".to_string(), 0)
        ])
    );
}

#[test]
fn a_command_that_cannot_start_carries_dockers_exit_code() {
    use super::process::SpawnError;
    let e = crate::error::AgentError::spawn(
        "[\"nosuch\"]",
        SpawnError {
            message: "exec nosuch: No such file or directory (os error 2)".into(),
            exit_code: Some(127),
        },
    );
    assert_eq!(
        (e.to_string(), e.status(), e.exit_code()),
        (
            "starting [\"nosuch\"]: exec nosuch: No such file or directory (os error 2)".into(),
            400,
            Some(127)
        )
    );
    let e = crate::error::AgentError::spawn("[\"x\"]", SpawnError::from("set-up failed"));
    assert_eq!((e.status(), e.exit_code()), (500, None));
}

// ----- the engine calls (Docker's driver) over the core ----------------------

mod engine {
    use super::*;
    use crate::{
        daemon::engine::EngineNetwork,
        state::{Owner, PortBinding, PortProto},
    };

    const NET: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const EP1: &str = "aaaaaaa111111111111111111111111111111111111111111111111111111111";
    const EP2: &str = "bbbbbbb222222222222222222222222222222222222222222222222222222222";

    fn net(subnet: &str) -> EngineNetwork {
        EngineNetwork {
            owner: Owner::Docker,
            name: None,
            id: NET.into(),
            subnet: subnet.parse().unwrap(),
            gateway: Some("10.70.0.1".parse().unwrap()),
            subnet6: None,
            gateway6: None,
            internal: false,
            options: Default::default(),
            labels: Default::default(),
        }
    }

    fn tcp(host: u16, end: u16, cont: u16) -> PortBinding {
        PortBinding {
            host_ip: None,
            host_port: host,
            host_port_end: end,
            container_port: cont,
            container_port_end: cont,
            proto: PortProto::Tcp,
        }
    }

    #[test]
    fn lifecycle_leaves_nothing_behind() {
        let env = Env::new("eng-life");
        let d = env.start();
        let k0 = env.kernel();
        d.engine_network_create(net("10.70.0.0/24")).unwrap();
        // A retried CreateNetwork is the same network.
        d.engine_network_create(net("10.70.0.0/24")).unwrap();
        let n = d.snapshot().networks[NET].clone();
        assert_eq!(
            (n.owner, n.name.as_str()),
            (Owner::Docker, "docker-111111111111")
        );
        let mac = d
            .engine_endpoint_create(NET, EP1, "10.70.0.2/24".parse().unwrap(), None, None, &[])
            .unwrap();
        assert_eq!(mac, crate::state::mac_for("10.70.0.2".parse().unwrap()));
        let sb = Path::new("/var/run/docker/netns/0123456789ab");
        let j = d.engine_join(Owner::Docker, EP1, sb).unwrap();
        assert_eq!(j.peer, "pieraaaaaaa");
        assert_eq!(j.gateway, Some("10.70.0.1".parse().unwrap()));
        assert!(env.kernel().links.contains("vethaaaaaaa"));
        let st = d.snapshot();
        let c = st.container_with_endpoint(EP1).unwrap();
        assert_eq!(
            (c.name.as_str(), c.owner),
            ("docker-0123456789ab", Owner::Docker)
        );
        d.engine_publish(EP1, &[tcp(8081, 8081, 80)]).unwrap();
        let ports = env.dp.synced.lock().unwrap().last().unwrap().ports.clone();
        assert_eq!(ports.len(), 1);
        assert_eq!(
            ports[0].container_ip,
            "10.70.0.2".parse::<std::net::Ipv4Addr>().unwrap()
        );
        // pier's own commands refuse what docker manages.
        assert!(
            d.container_rm("docker-0123456789ab", true)
                .unwrap_err()
                .to_string()
                .contains("managed by docker")
        );
        assert!(
            d.network_rm("docker-111111111111")
                .unwrap_err()
                .to_string()
                .contains("managed by docker")
        );
        assert!(
            d.engine_network_delete(NET).is_err(),
            "deleted with an endpoint"
        );
        d.engine_unpublish(EP1).unwrap();
        assert!(
            env.dp
                .synced
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .ports
                .is_empty()
        );
        d.engine_leave(EP1).unwrap();
        // The veth stays until DeleteEndpoint; the record goes.
        assert!(env.kernel().links.contains("vethaaaaaaa"));
        assert!(d.snapshot().container_with_endpoint(EP1).is_none());
        assert!(
            d.snapshot()
                .containers
                .values()
                .all(|c| c.owner == Owner::Pier)
        );
        d.engine_endpoint_delete(EP1).unwrap();
        d.engine_endpoint_delete(EP1).unwrap();
        d.engine_network_delete(NET).unwrap();
        d.engine_network_delete(NET).unwrap();
        assert_eq!(env.kernel(), k0);
        assert!(!d.snapshot().networks.contains_key(NET));
    }

    #[test]
    fn bad_input_and_conflicts_change_nothing() {
        let env = Env::new("eng-bad");
        let d = env.start();
        // The default bridge is 172.17.0.0/16; the host routes 172.18.0.0/16.
        let mut n = net("172.17.3.0/24");
        n.gateway = Some("172.17.3.1".parse().unwrap());
        assert!(
            d.engine_network_create(n)
                .unwrap_err()
                .to_string()
                .contains("overlap")
        );
        let mut n = net("172.18.3.0/24");
        n.gateway = Some("172.18.3.1".parse().unwrap());
        assert!(
            d.engine_network_create(n)
                .unwrap_err()
                .to_string()
                .contains("routed on the host")
        );
        let mut n = net("10.70.0.0/24");
        n.id = "xyz".into();
        assert!(d.engine_network_create(n).is_err());
        d.engine_network_create(net("10.70.0.0/24")).unwrap();
        let st0 = d.snapshot();
        let k0 = env.kernel();
        let a = |s: &str| s.parse().unwrap();
        for (ep, addr, mac) in [
            (EP1, "10.71.0.2/24", None),
            (EP1, "10.70.0.1/24", None),
            (EP1, "10.70.0.2/16", None),
            (EP1, "10.70.0.2/24", Some([1, 0, 0, 0, 0, 1])),
            ("short", "10.70.0.2/24", None),
        ] {
            assert!(
                d.engine_endpoint_create(NET, ep, a(addr), None, mac, &[])
                    .is_err(),
                "{addr}"
            );
        }
        assert_eq!(d.snapshot(), st0);
        assert_eq!(env.kernel(), k0);
        // A port a pier container publishes.
        d.container_create(run("p1", None, &["8081:80"])).unwrap();
        let st1 = d.snapshot();
        let e = d
            .engine_endpoint_create(
                NET,
                EP1,
                a("10.70.0.2/24"),
                None,
                None,
                &[tcp(8081, 8081, 80)],
            )
            .unwrap_err();
        assert!(e.to_string().contains("port is already allocated"), "{e}");
        assert_eq!(d.snapshot(), st1);
        // A join that fails in the kernel leaves the endpoint pending, no veth.
        d.engine_endpoint_create(NET, EP1, a("10.70.0.2/24"), None, None, &[])
            .unwrap();
        let before = env.kernel();
        *env.topo.fail_endpoint.lock().unwrap() = true;
        assert!(
            d.engine_join(Owner::Docker, EP1, Path::new("/x/sb1"))
                .is_err()
        );
        *env.topo.fail_endpoint.lock().unwrap() = false;
        assert_eq!(env.kernel(), before);
        assert!(d.snapshot().container_with_endpoint(EP1).is_none());
        // The dataplane refuses a host port (held by a host process): nothing published.
        d.engine_join(Owner::Docker, EP1, Path::new("/x/sb1"))
            .unwrap();
        let st2 = d.snapshot();
        assert!(d.engine_publish(EP1, &[tcp(9999, 9999, 80)]).is_err());
        assert_eq!(d.snapshot(), st2);
        assert!(
            d.engine_publish(EP2, &[tcp(8090, 8090, 80)]).is_err(),
            "unknown endpoint"
        );
        // Two endpoints on one sandbox share one record.
        d.engine_endpoint_create(NET, EP2, a("10.70.0.3/24"), None, None, &[])
            .unwrap();
        d.engine_join(Owner::Docker, EP2, Path::new("/x/sb1"))
            .unwrap();
        let st = d.snapshot();
        let c = st.container_with_endpoint(EP2).unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[1].ifname, "eth1");
    }

    #[test]
    fn dual_stack_endpoints_carry_the_engines_ipv6() {
        let env = Env::new("eng-v6");
        let d = env.start();
        let mut n = net("10.70.0.0/24");
        n.subnet6 = Some("fd70::/64".parse().unwrap());
        n.gateway6 = Some("fd70::1".parse().unwrap());
        d.engine_network_create(n.clone()).unwrap();
        // The same call again is the same network; another v6 pool is not.
        d.engine_network_create(n.clone()).unwrap();
        let mut other = n.clone();
        other.subnet6 = Some("fd71::/64".parse().unwrap());
        assert!(d.engine_network_create(other).is_err());
        let net6 = d.snapshot().networks[NET].clone();
        assert_eq!(net6.subnet6, Some("fd70::/64".parse().unwrap()));
        assert_eq!(net6.gateway6, Some("fd70::1".parse().unwrap()));
        let st0 = d.snapshot();
        let k0 = env.kernel();
        let a = |s: &str| s.parse().unwrap();
        let a6 = |s: &str| Some(s.parse().unwrap());
        // Outside the v6 subnet, another prefix length, the gateway, none.
        for (addr6, want) in [
            (a6("fd71::2/64"), "not in the network's IPv6 subnet"),
            (a6("fd70::2/80"), "not in the network's IPv6 subnet"),
            (a6("fd70::1/64"), "already in use"),
            (None, "needs an IPv6 address too"),
        ] {
            let e = d
                .engine_endpoint_create(NET, EP1, a("10.70.0.2/24"), addr6, None, &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{addr6:?}: {e}");
        }
        assert_eq!(d.snapshot(), st0);
        assert_eq!(env.kernel(), k0);
        d.engine_endpoint_create(NET, EP1, a("10.70.0.2/24"), a6("fd70::2/64"), None, &[])
            .unwrap();
        // Another endpoint cannot take the pending one's v6 address.
        let e = d
            .engine_endpoint_create(NET, EP2, a("10.70.0.3/24"), a6("fd70::2/64"), None, &[])
            .unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        let j = d
            .engine_join(Owner::Docker, EP1, Path::new("/x/sb1"))
            .unwrap();
        assert_eq!(j.gateway6, Some("fd70::1".parse().unwrap()));
        let st = d.snapshot();
        let e = st.container_with_endpoint(EP1).unwrap().endpoints[0].clone();
        assert_eq!(e.ip6, Some("fd70::2".parse().unwrap()));
        assert_eq!(e.prefix_len6, 64);
        let synced = env.dp.synced.lock().unwrap().last().unwrap().clone();
        assert!(
            synced
                .endpoints
                .iter()
                .any(|x| x.ip6 == Some("fd70::2".parse().unwrap())),
            "the dataplane knows the v6 address"
        );
        // Leave keeps it reserved; a new join gets it back.
        d.engine_leave(EP1).unwrap();
        let p = d.snapshot().networks[NET].pending[EP1].clone();
        assert_eq!(p.ip6, Some("fd70::2".parse().unwrap()));
        d.engine_endpoint_delete(EP1).unwrap();
        assert!(d.snapshot().used_ips6(NET).is_empty());
        // A v4-only network refuses a v6 address.
        const NET2: &str = "3333333333333333333333333333333333333333333333333333333333333333";
        let mut n4 = net("10.72.0.0/24");
        n4.id = NET2.into();
        n4.gateway = Some("10.72.0.1".parse().unwrap());
        d.engine_network_create(n4).unwrap();
        let e = d
            .engine_endpoint_create(NET2, EP2, a("10.72.0.2/24"), a6("fd70::3/64"), None, &[])
            .unwrap_err();
        assert!(e.to_string().contains("has no IPv6"), "{e}");
    }

    #[test]
    fn ranges_and_ephemeral_host_ports_are_chosen() {
        let env = Env::new("eng-ports");
        let d = env.start();
        d.engine_network_create(net("10.70.0.0/24")).unwrap();
        d.container_create(run("p1", None, &["8100:80"])).unwrap();
        d.engine_endpoint_create(NET, EP1, "10.70.0.2/24".parse().unwrap(), None, None, &[])
            .unwrap();
        d.engine_join(Owner::Docker, EP1, Path::new("/x/sb1"))
            .unwrap();
        d.engine_publish(EP1, &[tcp(8100, 8105, 80), tcp(0, 0, 81)])
            .unwrap();
        let c = d.snapshot().container_with_endpoint(EP1).unwrap().clone();
        assert_eq!(c.ports[0].host_port, 8101, "8100 is p1's");
        let (lo, hi) = super::super::core::tests_ephemeral_range();
        assert!(
            (lo..=hi).contains(&c.ports[1].host_port),
            "{:?}",
            c.ports[1]
        );
        assert_eq!(c.ports[1].host_port, c.ports[1].host_port_end);
    }
}

mod engine_netns {
    use super::*;
    use crate::{
        daemon::engine::{EngineAttach, EngineNetwork},
        state::Owner,
    };

    const NET: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn attach(id: &str, ifname: &str, ip: Option<&str>) -> EngineAttach {
        EngineAttach {
            owner: Owner::Cni,
            engine_id: id.into(),
            name: None,
            netns: PathBuf::from(format!("/proc/1/ns/{id}")),
            network_id: NET.into(),
            ifname: ifname.into(),
            ip: ip.map(|s| s.parse().unwrap()),
            ip6: None,
            mac: None,
            aliases: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn attach_in_the_engines_namespace_and_detach() {
        let env = Env::new("eng-ns");
        let d = env.start();
        let k0 = env.kernel();
        d.engine_network_create(EngineNetwork {
            owner: Owner::Cni,
            name: Some("piernet".into()),
            id: NET.into(),
            subnet: "10.80.0.0/24".parse().unwrap(),
            gateway: None,
            subnet6: None,
            gateway6: None,
            internal: false,
            options: Default::default(),
            labels: Default::default(),
        })
        .unwrap();
        assert_eq!(d.snapshot().networks[NET].name, "piernet");
        let (e, gw) = d.engine_attach(attach("ctr-1", "eth0", None)).unwrap();
        assert_eq!(e.ip.unwrap().to_string(), "10.80.0.2");
        assert_eq!(gw.unwrap().to_string(), "10.80.0.1");
        let (e2, _) = d.engine_attach(attach("ctr-1", "net1", None)).unwrap();
        assert_eq!(
            (e2.ifname.as_str(), e2.ip.unwrap().to_string()),
            ("net1", "10.80.0.3".into())
        );
        assert!(
            d.engine_attach(attach("ctr-1", "eth0", None)).is_err(),
            "eth0 twice"
        );
        assert!(
            d.engine_attach(attach("ctr-2", "eth0", Some("10.80.0.2")))
                .is_err(),
            "taken"
        );
        let (e3, _) = d
            .engine_attach(attach("ctr-2", "eth0", Some("10.80.0.9")))
            .unwrap();
        assert_eq!(e3.ip.unwrap().to_string(), "10.80.0.9");
        let c = d.engine_container(Owner::Cni, "ctr-1").unwrap();
        assert_eq!((c.name.as_str(), c.endpoints.len()), ("cni-ctr-1", 2));
        d.engine_detach(Owner::Cni, "ctr-1", Some("net1")).unwrap();
        assert_eq!(
            d.engine_container(Owner::Cni, "ctr-1")
                .unwrap()
                .endpoints
                .len(),
            1
        );
        d.engine_detach(Owner::Cni, "ctr-1", None).unwrap();
        d.engine_detach(Owner::Cni, "ctr-1", None).unwrap();
        d.engine_detach(Owner::Cni, "ctr-2", Some("eth0")).unwrap();
        assert!(d.engine_container(Owner::Cni, "ctr-1").is_none());
        assert!(d.engine_container(Owner::Cni, "ctr-2").is_none());
        d.engine_network_delete(NET).unwrap();
        assert_eq!(env.kernel(), k0);
    }
}

mod engine_named {
    use super::*;
    use crate::{
        daemon::engine::{EngineAttach, NamedNetwork},
        state::Owner,
    };

    fn named(subnet: Option<&str>) -> NamedNetwork {
        NamedNetwork {
            owner: Owner::Cni,
            name: "cninet".into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: None,
            no_ipv4: false,
            ipv6: false,
            subnet6: None,
            gateway6: None,
            internal: false,
            options: Default::default(),
        }
    }

    fn attach(id: &str, ifname: &str) -> EngineAttach {
        EngineAttach {
            owner: Owner::Cni,
            engine_id: id.into(),
            name: None,
            netns: PathBuf::from(format!("/proc/1/ns/{id}")),
            network_id: String::new(),
            ifname: ifname.into(),
            ip: None,
            ip6: None,
            mac: None,
            aliases: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn first_attachment_makes_the_network_and_gc_frees_the_unlisted() {
        let env = Env::new("eng-named");
        let d = env.start();
        let k0 = env.kernel();
        let nets0 = d.snapshot().networks.len();
        // A failed first attachment leaves no network either.
        assert!(
            d.engine_attach_named(&named(None), attach("c-1", "a/b"))
                .is_err()
        );
        assert_eq!(d.snapshot().networks.len(), nets0);
        assert_eq!(env.kernel(), k0);
        // No subnet: pier's choice, kept by the next attachments.
        let (e, _) = d
            .engine_attach_named(&named(None), attach("c-1", "eth0"))
            .unwrap();
        let n = d.snapshot().network_by_name("cninet").cloned().unwrap();
        assert_eq!(n.owner, Owner::Cni);
        assert!(n.subnet.unwrap().contains(&e.ip.unwrap()));
        let sn = n.subnet.unwrap().to_string();
        d.engine_attach_named(&named(Some(&sn)), attach("c-2", "eth0"))
            .unwrap();
        d.engine_attach_named(&named(None), attach("c-3", "eth0"))
            .unwrap();
        let e = d
            .engine_attach_named(&named(Some("10.99.0.0/24")), attach("c-4", "eth0"))
            .unwrap_err();
        assert!(e.to_string().contains("exists with subnet"), "{e}");
        // GC: only the unlisted attachments of this owner on this network.
        let valid = vec![("c-2".to_string(), "eth0".to_string())];
        let mut gone = d.engine_gc(Owner::Cni, &n.id, &valid).unwrap();
        gone.sort();
        assert_eq!(
            gone,
            vec![("c-1".into(), "eth0".into()), ("c-3".into(), "eth0".into())]
        );
        assert!(d.engine_container(Owner::Cni, "c-1").is_none());
        assert!(d.engine_container(Owner::Cni, "c-2").is_some());
        assert!(d.engine_gc(Owner::Docker, &n.id, &[]).unwrap().is_empty());
        assert!(d.engine_container(Owner::Cni, "c-2").is_some());
        d.engine_gc(Owner::Cni, &n.id, &[]).unwrap();
        assert!(d.engine_container(Owner::Cni, "c-2").is_none());
    }

    #[test]
    fn dual_stack_named_networks() {
        let env = Env::new("eng-named6");
        let d = env.start();
        let k0 = env.kernel();
        let st0 = d.snapshot();
        // A gateway outside the v6 subnet: refused, nothing made.
        let mut bad = named(Some("10.81.0.0/24"));
        bad.subnet6 = Some("fd81::/64".parse().unwrap());
        bad.gateway6 = Some("fd82::1".parse().unwrap());
        assert!(d.engine_attach_named(&bad, attach("c-0", "eth0")).is_err());
        assert_eq!(d.snapshot(), st0);
        assert_eq!(env.kernel(), k0);
        // Given pool: the engine's address or pier's lowest free one.
        let mut n6 = named(Some("10.81.0.0/24"));
        n6.subnet6 = Some("fd81::/64".parse().unwrap());
        let (e, _) = d.engine_attach_named(&n6, attach("c-1", "eth0")).unwrap();
        assert_eq!(e.ip6, Some("fd81::2".parse().unwrap()));
        assert_eq!(e.prefix_len6, 64);
        let mut a = attach("c-2", "eth0");
        a.ip6 = Some("fd81::99".parse().unwrap());
        let (e, _) = d.engine_attach_named(&n6, a).unwrap();
        assert_eq!(e.ip6, Some("fd81::99".parse().unwrap()));
        // Taken, outside: refused.
        let mut a = attach("c-3", "eth0");
        a.ip6 = Some("fd81::99".parse().unwrap());
        assert!(d.engine_attach_named(&n6, a).is_err());
        let mut a = attach("c-3", "eth0");
        a.ip6 = Some("fd83::3".parse().unwrap());
        assert!(d.engine_attach_named(&n6, a).is_err());
        // The same network asked for without IPv6, or with another pool.
        let e = d
            .engine_attach_named(&named(Some("10.81.0.0/24")), attach("c-3", "eth0"))
            .unwrap_err();
        assert!(
            e.to_string().contains("exists with IPv6 subnet fd81::/64"),
            "{e}"
        );
        let mut other = n6.clone();
        other.subnet6 = Some("fd84::/64".parse().unwrap());
        assert!(
            d.engine_attach_named(&other, attach("c-3", "eth0"))
                .is_err()
        );
        // An IPv6 address on an IPv4-only network.
        let mut a = attach("c-4", "eth0");
        a.ip6 = Some("fd81::4".parse().unwrap());
        let mut n4 = named(Some("10.82.0.0/24"));
        n4.name = "cninet4".into();
        let e = d.engine_attach_named(&n4, a).unwrap_err();
        assert!(e.to_string().contains("has no IPv6"), "{e}");
        // ipv6 without a pool: the next free ULA /64.
        let mut auto = named(None);
        auto.name = "cniauto6".into();
        auto.ipv6 = true;
        let (e, _) = d.engine_attach_named(&auto, attach("c-5", "eth0")).unwrap();
        let n = d.snapshot().network_by_name("cniauto6").cloned().unwrap();
        let sn6 = n.subnet6.unwrap();
        assert!(sn6.contains(&e.ip6.unwrap()), "{sn6} {e:?}");
        assert_eq!(sn6.prefix_len(), 64);
    }

    #[test]
    fn networks_without_ipv4() {
        let env = Env::new("eng-no4");
        let d = env.start();
        // IPv6 only: the endpoint has no IPv4 address, the dataplane no
        // IPv4 entry for it, and its ports are published on IPv6.
        let mut n6 = named(None);
        n6.name = "only6".into();
        n6.no_ipv4 = true;
        n6.subnet6 = Some("fd90::/64".parse().unwrap());
        let mut a = attach("c-1", "eth0");
        a.ports = vec![crate::state::PortBinding {
            host_ip: None,
            host_port: 8090,
            host_port_end: 8090,
            container_port: 80,
            container_port_end: 80,
            proto: crate::state::PortProto::Tcp,
        }];
        let (e, gw) = d.engine_attach_named(&n6, a).unwrap();
        assert_eq!((e.ip, gw), (None, None));
        assert_eq!(e.ip6, Some("fd90::2".parse().unwrap()));
        assert_eq!(e.mac, [0x02, 0x42, 0, 0, 0, 2], "from the IPv6 address");
        let n = d.snapshot().network_by_name("only6").cloned().unwrap();
        assert_eq!((n.subnet, n.gateway), (None, None));
        let spec = crate::daemon::bridge_spec(&n).unwrap();
        assert_eq!((spec.gateway, spec.subnet), (None, None));
        assert!(spec.gateway6.is_some());
        let synced = env.dp.synced.lock().unwrap().last().unwrap().clone();
        let ep = synced
            .endpoints
            .iter()
            .find(|x| x.host_ifname == e.host_ifname)
            .unwrap();
        assert_eq!((ep.ip, ep.ip6), (None, e.ip6));
        let net = synced.networks.iter().find(|x| x.id == n.num).unwrap();
        assert_eq!((net.subnet, net.gateway), (None, None));
        // Its port is published on IPv6 only (pier's IPv6 NAT).
        let ports: Vec<_> = synced
            .ports
            .iter()
            .map(|p| (p.host_ip, p.host_port, p.container_ip))
            .collect();
        assert_eq!(ports, vec![(None, 8090, "fd90::2".parse().unwrap())]);
        // An IPv4 address asked for there, or the network asked with IPv4.
        let mut a = attach("c-2", "eth0");
        a.ip = Some("10.90.0.2".parse().unwrap());
        let e2 = d.engine_attach_named(&n6, a).unwrap_err();
        assert!(e2.to_string().contains("has no IPv4"), "{e2}");
        let mut with4 = n6.clone();
        with4.no_ipv4 = false;
        let e2 = d
            .engine_attach_named(&with4, attach("c-2", "eth0"))
            .unwrap_err();
        assert!(e2.to_string().contains("exists without IPv4"), "{e2}");
        // No addresses at all (netavark's ipam none).
        let mut none = named(None);
        none.name = "noaddr".into();
        none.no_ipv4 = true;
        let (e, _) = d.engine_attach_named(&none, attach("c-3", "eth0")).unwrap();
        assert_eq!((e.ip, e.ip6), (None, None));
        assert_eq!(e.mac[..2], [0x02, 0x42]);
        let n = d.snapshot().network_by_name("noaddr").cloned().unwrap();
        assert!(n.subnet.is_none() && n.subnet6.is_none());
        d.engine_detach(Owner::Cni, "c-3", None).unwrap();
        d.engine_detach(Owner::Cni, "c-1", None).unwrap();
        assert!(d.engine_container(Owner::Cni, "c-1").is_none());
        // A v4 --subnet with no IPv4 is refused.
        let st = d.snapshot();
        let mut bad = named(Some("10.91.0.0/24"));
        bad.name = "bad4".into();
        bad.no_ipv4 = true;
        assert!(d.engine_attach_named(&bad, attach("c-4", "eth0")).is_err());
        assert_eq!(d.snapshot(), st);
    }
}
