//! The daemon: owns the store, the topology, the dataplane and the processes,
//! and applies every change as validate → apply (with an undo list) →
//! dataplane sync → store commit, rolling back on the first error.
pub mod core;
pub mod engine;
pub mod files;
pub mod hostwatch;
pub mod inspect;
pub mod observe;
pub mod policy;
pub mod ports;
pub mod process;
pub mod reconcile;
pub mod serve;
pub mod validate;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use ipnet::Ipv4Net;

pub use self::core::EndpointReq;
use crate::{
    api::types::{ContainerCreate, NetworkConnect, NetworkCreate},
    config::{AgentConfig, DEFAULT_BRIDGE},
    dataplane::{self, Dataplane, DesiredState},
    error::{AgentError, ErrorList, Result, conflict, invalid, not_found},
    ipam,
    state::{
        Container, DRIVER_BRIDGE, DRIVER_HOST, DRIVER_NULL, Endpoint, Link, NetMode, Network,
        Owner, PolicyAction, State, Store, new_id, now_ms, now_rfc3339, opts,
    },
    topology::{self, Topology},
};
use process::{Proc, ProcSpec, Runner};

/// One step to undo if a change fails, or to finish once it is committed.
#[derive(Debug, Clone)]
pub enum Action {
    RemoveBridge(String),
    RemoveNetns(PathBuf),
    RemoveEndpoint(topology::EndpointSpec),
    /// The container's default route now goes out of this endpoint.
    DefaultRoute(topology::EndpointSpec),
    RemoveDir(PathBuf),
    Kill(Proc),
}

/// Called with the committed state after every change to containers,
/// aliases or networks, and once at start: where DNS plugs in.
pub type NamesHook = Box<dyn Fn(&State) + Send + Sync>;

pub struct Daemon {
    pub cfg: AgentConfig,
    topo: Box<dyn Topology>,
    runner: Box<dyn Runner>,
    inner: Mutex<Inner>,
    names_hook: Option<NamesHook>,
    /// Serialises hook calls, so that the last call sees the newest state.
    hook_lock: Mutex<()>,
    /// The hook saw a change in progress (see [`Daemon::names_before_spawn`]).
    names_early: std::sync::atomic::AtomicBool,
}

struct Inner {
    /// The committed state; shared (not copied) with readers of a whole
    /// snapshot such as the names hook.
    state: std::sync::Arc<State>,
    /// What the dataplane was last synced to (`desired_state(&state)`
    /// once a sync succeeded): the next change compares with it instead of
    /// deriving it again.
    desired: DesiredState,
    /// A change panicked after the dataplane may have seen it: the next
    /// change syncs whatever it compares equal to.
    resync: bool,
    store: Store,
    dataplane: Box<dyn Dataplane>,
}

/// A committed change: `f`'s result, when (since the change began) apply,
/// sync and commit ended, and whether names changed.
struct Committed<R> {
    r: R,
    t_apply: std::time::Duration,
    t_sync: std::time::Duration,
    t_commit: std::time::Duration,
    changed_names: bool,
}

/// A change in progress: the new state plus what to undo or finish.
pub struct Txn<'a> {
    d: &'a Daemon,
    pub state: State,
    undo: Vec<Action>,
    after: Vec<Action>,
}

impl Txn<'_> {
    fn on_fail(&mut self, a: Action) {
        self.undo.push(a);
    }
    fn after_commit(&mut self, a: Action) {
        self.after.push(a);
    }
}

/// The one function that derives what the dataplane must reflect from the store.
pub fn desired_state(st: &State) -> DesiredState {
    let mut d = DesiredState::default();
    // Rules naming a port, protocol or container (few); the host-wide ones
    // (possibly thousands) go to the dataplane once, not per port.
    let scoped: Vec<&crate::state::PolicyRecord> =
        st.policies.values().filter(|r| !r.host_wide()).collect();
    for n in st.networks.values().filter(|n| n.is_bridge()) {
        let Some(bridge) = &n.bridge else {
            continue;
        };
        d.networks.push(dataplane::NetworkSpec {
            id: n.num,
            bridge: bridge.clone(),
            subnet: n.subnet,
            gateway: n.gateway,
            subnet6: n.subnet6,
            gateway6: n.gateway6,
            internal: n.internal,
            icc: n.icc,
            masquerade: n.masquerade,
        });
    }
    for c in st.containers.values() {
        for e in &c.endpoints {
            let Some(n) = st.networks.get(&e.network_id) else {
                continue;
            };
            d.endpoints.push(dataplane::EndpointSpec {
                network_id: n.num,
                ip: e.ip,
                ip6: e.ip6,
                mac: e.mac,
                host_ifname: e.host_ifname.clone(),
            });
        }
        // Published ports lead to the container's first address (or the
        // endpoint an engine named) while it runs.
        let Some(first) = c.ports_endpoint() else {
            continue;
        };
        if !c.running {
            continue;
        }
        for p in &c.ports {
            // The families it binds: no address = both (IPv6 when the
            // endpoint has an address of it); an unspecified one = its
            // family's every address.
            let mut families: Vec<(Option<std::net::IpAddr>, std::net::IpAddr)> = Vec::new();
            match p.host_ip {
                None => {
                    if let Some(ip) = first.ip {
                        families.push((None, ip.into()));
                    }
                    if let Some(ip6) = first.ip6 {
                        families.push((None, ip6.into()));
                    }
                }
                Some(h) if h.is_ipv6() => {
                    if let Some(ip6) = first.ip6 {
                        families.push((Some(h).filter(|h| !h.is_unspecified()), ip6.into()));
                    }
                }
                Some(h) => {
                    if let Some(ip) = first.ip {
                        families.push((Some(h).filter(|h| !h.is_unspecified()), ip.into()));
                    }
                }
            }
            for (host_ip, container_ip) in families {
                for (hp, cp) in p.pairs() {
                    let spec = dataplane::PortSpec {
                        host_ip,
                        proto: match p.proto {
                            crate::state::PortProto::Tcp => dataplane::Proto::Tcp,
                            crate::state::PortProto::Udp => dataplane::Proto::Udp,
                        },
                        host_port: hp,
                        container_ip,
                        container_port: cp,
                        // Rootful podman holds its published ports itself.
                        reserve: !engine_holds_ports(st, c, first),
                    };
                    let rules = port_rules(st, &scoped, c, first, hp, p.proto);
                    if !rules.is_empty() {
                        d.port_policy.insert(dataplane::PortRef::of(&spec), rules);
                    }
                    d.ports.push(spec);
                }
            }
        }
    }
    d.host_policy = st
        .policies
        .values()
        .filter(|r| r.host_wide())
        .map(policy_rule)
        .collect();
    d
}

/// The rules of one published port but the host-wide ones: its network's
/// `pier.publish.allow`, the container's `--publish-allow`, and the `pier
/// policy` rules naming its port, protocol or container.
fn port_rules(
    st: &State,
    scoped: &[&crate::state::PolicyRecord],
    c: &Container,
    ports_on: &Endpoint,
    host_port: u16,
    proto: crate::state::PortProto,
) -> Vec<dataplane::PolicyRule> {
    let allow = |src| dataplane::PolicyRule {
        src,
        deny: false,
        uplink: None,
    };
    let mut rules: Vec<dataplane::PolicyRule> = st
        .networks
        .get(&ports_on.network_id)
        .and_then(|n| n.options.get(opts::PUBLISH_ALLOW))
        .and_then(|v| crate::state::parse_cidr_list(v).ok())
        .unwrap_or_default()
        .into_iter()
        .map(allow)
        .collect();
    rules.extend(c.publish_allow.iter().copied().map(allow));
    rules.extend(
        scoped
            .iter()
            .filter(|r| r.applies(&c.id, host_port, proto))
            .map(|r| policy_rule(r)),
    );
    rules
}

/// The dataplane's form of a `pier policy` rule.
fn policy_rule(r: &crate::state::PolicyRecord) -> dataplane::PolicyRule {
    dataplane::PolicyRule {
        src: r.src,
        deny: r.action == PolicyAction::Deny,
        uplink: r.uplink.clone(),
    }
}

/// Whether the engine keeps `c`'s published host ports open itself, so
/// that pier must not reserve them: podman through netavark, and a CNI
/// runtime whose config says so (podman's CNI backend, see `crate::cni`).
fn engine_holds_ports(st: &State, c: &Container, ports_on: &Endpoint) -> bool {
    c.owner == Owner::Podman
        || (c.owner == Owner::Cni
            && st.networks.get(&ports_on.network_id).is_some_and(|n| {
                n.options
                    .get(crate::cni::PORTS_HELD)
                    .is_some_and(|v| v == "true")
            }))
}

/// The topology's view of an endpoint.
pub fn endpoint_spec(
    netns: &Path,
    e: &Endpoint,
    net: &Network,
    default_route: bool,
) -> topology::EndpointSpec {
    topology::EndpointSpec {
        netns: netns.to_path_buf(),
        host_ifname: e.host_ifname.clone(),
        ifname: e.ifname.clone(),
        bridge: net.bridge.clone().unwrap_or_default(),
        address: e
            .ip
            .map(|ip| Ipv4Net::new(ip, e.prefix_len).expect("prefix ≤ 32")),
        address6: e
            .ip6
            .map(|a| ipnet::Ipv6Net::new(a, e.prefix_len6).expect("prefix ≤ 128")),
        mac: e.mac,
        // An internal network leads nowhere: no default route (Docker, netavark).
        default_gateway: if default_route && !net.internal && e.ip.is_some() {
            net.gateway
        } else {
            None
        },
        default_gateway6: if default_route && !net.internal && e.ip6.is_some() {
            net.gateway6
        } else {
            None
        },
        metric: net
            .options
            .get(opts::ROUTE_METRIC)
            .and_then(|m| m.parse().ok()),
        mtu: net.mtu,
        engine_peer: e.engine_peer.clone(),
    }
}

pub fn bridge_spec(n: &Network) -> Option<topology::BridgeSpec> {
    Some(topology::BridgeSpec {
        name: n.bridge.clone()?,
        gateway: n.gateway,
        subnet: n.subnet,
        gateway6: match (n.gateway6, n.subnet6) {
            (Some(g), Some(s)) => ipnet::Ipv6Net::new(g, s.prefix_len()).ok(),
            _ => None,
        },
        mtu: n.mtu,
    })
}

fn parse_bool_opt(key: &str, v: Option<&String>) -> Result<bool> {
    match v.map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(o) => Err(invalid(format!(
            "invalid value {o:?} for option {key}: true or false"
        ))),
    }
}

impl Daemon {
    /// Open the store (locking the state dir), reconcile the kernel with it,
    /// start the dataplane. Fails at once if another agent holds the lock.
    pub fn start(
        cfg: AgentConfig,
        topo: Box<dyn Topology>,
        runner: Box<dyn Runner>,
        dataplane: Box<dyn Dataplane>,
    ) -> Result<Self> {
        Self::start_with_hook(cfg, topo, runner, dataplane, None)
    }

    /// [`Daemon::start`] with a hook for name changes (see [`NamesHook`]).
    pub fn start_with_hook(
        cfg: AgentConfig,
        topo: Box<dyn Topology>,
        runner: Box<dyn Runner>,
        mut dataplane: Box<dyn Dataplane>,
        names_hook: Option<NamesHook>,
    ) -> Result<Self> {
        let store = Store::open(&cfg.state_dir)?;
        let state = store.load()?;
        let first = state.networks.is_empty() && state.containers.is_empty();
        dataplane.start()?;
        let d = Daemon {
            cfg,
            topo,
            runner,
            inner: Mutex::new(Inner {
                desired: desired_state(&state),
                resync: false,
                state: std::sync::Arc::new(state),
                store,
                dataplane,
            }),
            names_hook,
            hook_lock: Mutex::new(()),
            names_early: Default::default(),
        };
        if let Err(e) = d.reconcile() {
            // A first start refused (`--default-subnet` routed on the host):
            // no pins, no attachment left behind.
            if first {
                let _ = d.lock_inner().dataplane.teardown();
            }
            return Err(e);
        }
        Ok(d)
    }

    /// The state lock. A panic while it was held cannot have left a half
    /// change (changes are made on a copy and swapped in at the end), so a
    /// poisoned lock is taken over rather than taking the agent down.
    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn topology(&self) -> &dyn Topology {
        self.topo.as_ref()
    }

    /// A copy of the current state (for reads).
    pub fn snapshot(&self) -> State {
        State::clone(&self.lock_inner().state)
    }

    /// The current state, shared: no copy (for whole-state readers).
    pub fn shared_snapshot(&self) -> std::sync::Arc<State> {
        self.lock_inner().state.clone()
    }

    /// Apply a change: `f` validates and applies kernel steps on a copy of the
    /// state, registering undo steps; then the dataplane is synced and the
    /// store committed. Any failure undoes what `f` did and leaves the state.
    pub fn change<R>(&self, f: impl FnOnce(&mut Txn) -> Result<R>) -> Result<R> {
        let r = self.change_locked(f);
        if self
            .names_early
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && r.is_err()
        {
            // The resolver saw the change before it failed: show it the
            // state as it is again.
            self.dns_changed();
        }
        r
    }

    /// Before a container's process starts inside a change: give the names
    /// hook the state `st` of the change in progress, so that the embedded
    /// resolver knows the container and serves its namespace before its
    /// command's first query (as Docker does). Runs with the state lock
    /// held, so it does not take `hook_lock`; the hook runs again after the
    /// commit, or, if the change fails, with the state as it stayed.
    fn names_before_spawn(&self, st: &State) {
        if let Some(h) = &self.names_hook {
            self.names_early
                .store(true, std::sync::atomic::Ordering::SeqCst);
            h(st);
        }
    }

    fn change_locked<R>(&self, f: impl FnOnce(&mut Txn) -> Result<R>) -> Result<R> {
        let t0 = std::time::Instant::now();
        let mut inner = self.lock_inner();
        let mut txn = Txn {
            d: self,
            state: State::clone(&inner.state),
            undo: Vec::new(),
            after: Vec::new(),
        };
        // A bug that panics mid-change must not leave its interfaces,
        // namespaces or processes behind: undo them as a failure would, make
        // the next change sync the dataplane, and let the panic go on.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_and_commit(&mut inner, &mut txn, f, t0)
        }));
        let Committed {
            r,
            t_apply,
            t_sync,
            t_commit,
            changed_names,
        } = match done {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                inner.resync = true;
                drop(inner);
                self.run_actions(
                    std::mem::take(&mut txn.undo).into_iter().rev(),
                    "rollback after a panic",
                );
                std::panic::resume_unwind(panic);
            }
        };
        let after = std::mem::take(&mut txn.after);
        drop(inner);
        self.run_actions(after.into_iter(), "cleanup");
        if changed_names {
            self.dns_changed();
        }
        tracing::debug!(
            "change: apply {:?}, dataplane sync {:?}, store commit {:?}, cleanup+names {:?}",
            t_apply,
            t_sync - t_apply,
            t_commit - t_sync,
            t0.elapsed() - t_commit
        );
        Ok(r)
    }

    /// The steps of [`Daemon::change`] under the state lock: `f`, the
    /// dataplane sync, the store commit. A failure runs the undo list; a
    /// commit empties it.
    fn apply_and_commit<R>(
        &self,
        inner: &mut Inner,
        txn: &mut Txn,
        f: impl FnOnce(&mut Txn) -> Result<R>,
        t0: std::time::Instant,
    ) -> Result<Committed<R>> {
        let rollback = |txn: &mut Txn| {
            self.run_actions(std::mem::take(&mut txn.undo).into_iter().rev(), "rollback");
        };
        let r = match f(txn) {
            Ok(r) => r,
            Err(e) => {
                rollback(txn);
                return Err(e);
            }
        };
        let t_apply = t0.elapsed();
        // A container's policy rules go with it (whichever front end removed it).
        let st = &mut txn.state;
        st.policies.retain(|_, r| {
            r.container
                .as_ref()
                .is_none_or(|c| st.containers.contains_key(c))
        });
        let desired = desired_state(&txn.state);
        let synced = inner.resync || desired != inner.desired;
        if synced && let Err(e) = inner.dataplane.sync(&desired) {
            rollback(txn);
            return Err(e.into());
        }
        let t_sync = t0.elapsed();
        if synced {
            crate::observe::metrics::observe_sync((t_sync - t_apply).as_secs_f64());
        }
        let old = inner.state.clone();
        if let Err(e) = inner.store.commit(&old, &txn.state) {
            rollback(txn);
            if synced {
                let old_desired = inner.desired.clone();
                if let Err(e2) = inner.dataplane.sync(&old_desired) {
                    tracing::error!("restoring the dataplane after a failed commit: {e2}");
                    inner.resync = true;
                }
            }
            return Err(e);
        }
        let t_commit = t0.elapsed();
        // Committed: nothing to undo any more, whatever happens next.
        txn.undo.clear();
        if synced {
            inner.desired = desired;
            inner.resync = false;
        }
        inner.state = std::sync::Arc::new(std::mem::take(&mut txn.state));
        let changed_names =
            old.containers != inner.state.containers || old.networks != inner.state.networks;
        Ok(Committed {
            r,
            t_apply,
            t_sync,
            t_commit,
            changed_names,
        })
    }

    fn run_actions(&self, actions: impl Iterator<Item = Action>, what: &str) -> ErrorList {
        let mut errs = ErrorList::default();
        for a in actions {
            let r = match &a {
                Action::RemoveBridge(n) => self.topo.remove_bridge(n).map_err(|e| e.to_string()),
                Action::RemoveNetns(p) => self.topo.remove_netns(p).map_err(|e| e.to_string()),
                Action::RemoveEndpoint(ep) => {
                    self.topo.remove_endpoint(ep).map_err(|e| e.to_string())
                }
                Action::DefaultRoute(ep) => ep
                    .default_gateway
                    .map_or(Ok(()), |gw| {
                        self.topo.set_default_route(&ep.netns, &ep.ifname, gw)
                    })
                    .and_then(|()| match ep.default_gateway6 {
                        Some(g6) => self.topo.set_default_route6(&ep.netns, &ep.ifname, g6),
                        None => Ok(()),
                    })
                    .map_err(|e| e.to_string()),
                Action::RemoveDir(p) => match std::fs::remove_dir_all(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
                Action::Kill(p) => {
                    kill_and_wait(self.runner.as_ref(), *p, std::time::Duration::ZERO);
                    Ok(())
                }
            };
            if let Err(e) = r {
                errs.push(&format!("{what}: {a:?}"), e);
            }
        }
        errs
    }

    /// Called after every change to containers, aliases or networks (also
    /// the one at start, from reconcile), without the state lock held: the
    /// place where the embedded DNS resolver gets its new name table
    /// (`self.snapshot()`) and per-container servers are started/stopped.
    /// Runs on a thread with the agent's tokio runtime entered.
    pub fn dns_changed(&self) {
        tracing::debug!("names changed");
        if let Some(h) = &self.names_hook {
            let t0 = std::time::Instant::now();
            let _g = self.hook_lock.lock().unwrap_or_else(|e| e.into_inner());
            h(&self.shared_snapshot());
            tracing::debug!("names hook {:?}", t0.elapsed());
        }
    }

    // ----- networks -------------------------------------------------------

    /// Create the built-in networks (`bridge`, `host`, `none`) if missing.
    pub(crate) fn ensure_builtin(txn: &mut Txn) -> Result<()> {
        let cfg = &txn.d.cfg;
        let mk = |st: &mut State, name: &str, driver: &str| {
            st.next_net_num += 1;
            Network {
                id: new_id(),
                num: st.next_net_num,
                name: name.into(),
                driver: driver.into(),
                created: now_rfc3339(),
                default: false,
                bridge: None,
                subnet: None,
                gateway: None,
                ip_range: None,
                internal: false,
                icc: true,
                masquerade: true,
                mtu: None,
                options: BTreeMap::new(),
                labels: BTreeMap::new(),
                owner: Owner::Pier,
                subnet6: None,
                gateway6: None,
                ip_range6: None,
                pending: BTreeMap::new(),
            }
        };
        if let Some(n) = txn.state.networks.values().find(|n| n.default)
            && n.subnet != Some(cfg.default_subnet)
        {
            tracing::warn!(
                "the default network keeps its recorded subnet {:?}; --default-subnet {} applies after `pier system reset`",
                n.subnet,
                cfg.default_subnet
            );
        }
        if !cfg.engine_only && !txn.state.networks.values().any(|n| n.default) {
            // A first start: the default subnet must not be one the host
            // routes already (a leftover pier0 is taken over, route and all).
            let sn = cfg.default_subnet;
            if !txn.d.topo.host_links()?.iter().any(|l| l == DEFAULT_BRIDGE)
                && let Some(r) = routed_overlap(txn.d.topo.as_ref(), &sn)?
            {
                return Err(invalid(format!(
                    "--default-subnet {sn} overlaps {r}, which is routed on the host"
                )));
            }
            let mut n = mk(&mut txn.state, "bridge", DRIVER_BRIDGE);
            n.default = true;
            n.bridge = Some(DEFAULT_BRIDGE.into());
            n.subnet = Some(cfg.default_subnet);
            n.gateway = Some(ipam::first_host(&cfg.default_subnet));
            if let Some(s6) = cfg.default_subnet6 {
                n.subnet6 = Some(s6);
                n.gateway6 = Some(ipam::first_host6(&s6));
            }
            for (k, v) in [
                (opts::BRIDGE_NAME, DEFAULT_BRIDGE),
                (opts::ENABLE_ICC, "true"),
                (opts::ENABLE_MASQ, "true"),
            ] {
                n.options.insert(k.into(), v.into());
            }
            txn.state.networks.insert(n.id.clone(), n);
        }
        for (name, driver) in [("host", DRIVER_HOST), ("none", DRIVER_NULL)] {
            if !txn.state.networks.values().any(|n| n.driver == driver) {
                let n = mk(&mut txn.state, name, driver);
                txn.state.networks.insert(n.id.clone(), n);
            }
        }
        Ok(())
    }

    pub fn network_create(&self, req: NetworkCreate) -> Result<String> {
        self.change(|txn| Self::create_network(txn, &req, Owner::Pier, None))
    }

    pub fn network_rm(&self, key: &str) -> Result<()> {
        self.change(|txn| {
            let n = txn
                .state
                .find_network(key)
                .ok_or_else(|| not_found(format!("network {key} not found")))?
                .clone();
            if n.default || n.driver != DRIVER_BRIDGE {
                return Err(conflict(format!(
                    "{} is a pre-defined network and cannot be removed",
                    n.name
                )));
            }
            // CNI has no verb that removes a network (the conflist just goes
            // away): an unused one is pier's to remove.
            if n.owner != Owner::Cni {
                not_engine_network(&n)?;
            }
            if !txn.state.containers_on(&n).is_empty() {
                return Err(conflict(format!(
                    "error while removing network: network {} id {} has active endpoints",
                    n.name, n.id
                )));
            }
            Self::remove_network(txn, &n);
            Ok(())
        })
    }

    /// Remove every user network without containers; their names.
    pub fn network_prune(&self) -> Result<Vec<String>> {
        self.change(|txn| {
            let unused: Vec<Network> = txn
                .state
                .networks
                .values()
                .filter(|n| !n.default && n.driver == DRIVER_BRIDGE && !n.owner.is_engine())
                .filter(|n| txn.state.containers_on(n).is_empty())
                .cloned()
                .collect();
            let mut names = Vec::new();
            for n in unused {
                Self::remove_network(txn, &n);
                names.push(n.name);
            }
            names.sort();
            Ok(names)
        })
    }

    pub fn network_connect(&self, net_key: &str, req: NetworkConnect) -> Result<()> {
        for a in &req.aliases {
            validate::check_name("alias", a).map_err(invalid)?;
        }
        self.change(|txn| {
            let net = txn
                .state
                .find_network(net_key)
                .ok_or_else(|| not_found(format!("network {net_key} not found")))?
                .clone();
            let c = txn
                .state
                .find_container(&req.container)
                .ok_or_else(|| not_found(format!("No such container: {}", req.container)))?
                .clone();
            if net.driver != DRIVER_BRIDGE {
                return Err(invalid(format!(
                    "container cannot be connected to the {} network",
                    net.name
                )));
            }
            not_engine_network(&net)?;
            not_engine_container(&c)?;
            if c.mode != NetMode::Bridge {
                return Err(invalid(format!(
                    "container {} is in {} network mode and cannot be connected to other networks",
                    c.name, c.network_mode
                )));
            }
            if c.endpoint_on(&net.id).is_some() {
                return Err(conflict(format!(
                    "endpoint with name {} already exists in network {}",
                    c.name, net.name
                )));
            }
            let ip = match &req.ipv4_address {
                Some(s) if !s.is_empty() => {
                    if net.default {
                        return Err(invalid(
                            "user specified IP address is supported on user defined networks only",
                        ));
                    }
                    Some(s.parse::<Ipv4Addr>().map_err(|_| {
                        invalid(format!("invalid IPv4 address {s:?}"))
                    })?)
                }
                _ => None,
            };
            if net.default && !req.aliases.is_empty() {
                return Err(invalid(
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
            let ip6 = parse_ip6(req.ipv6_address.as_deref(), Some(&net))?;
            Self::attach(
                txn,
                &c.id,
                &net,
                EndpointReq {
                    ip,
                    ip6,
                    aliases: req.aliases.clone(),
                    ..Default::default()
                },
            )?;
            Ok(c.id)
        })
        .map(|id| self.refresh_resolv(&id))
    }

    pub fn network_disconnect(&self, net_key: &str, container: &str, force: bool) -> Result<()> {
        self.change(|txn| {
            let net = txn
                .state
                .find_network(net_key)
                .ok_or_else(|| not_found(format!("network {net_key} not found")))?
                .clone();
            let c = match txn.state.find_container(container) {
                Some(c) => c.clone(),
                None if force => return Ok(None),
                None => return Err(not_found(format!("No such container: {container}"))),
            };
            if net.driver != DRIVER_BRIDGE {
                return Err(conflict(format!(
                    "container cannot be disconnected from the {} network",
                    net.name
                )));
            }
            not_engine_container(&c)?;
            let Some(e) = c.endpoint_on(&net.id).cloned() else {
                return Err(invalid(format!(
                    "container {} is not connected to network {}",
                    c.name, net.name
                )));
            };
            Self::detach(txn, &c.id, &e.id, false)?;
            Ok(Some(c.id))
        })
        .map(|id| {
            if let Some(id) = id {
                self.refresh_resolv(&id);
            }
        })
    }

    // ----- containers -----------------------------------------------------

    /// Where a host-mode container's own `/etc` files live: only those its
    /// flags need (`--dns*`: resolv.conf, `--add-host`: hosts); none, and
    /// it sees the host's files.
    pub(crate) fn host_mode_etc(&self, id: &str) -> PathBuf {
        self.cfg.container_dir(id).join("host-etc")
    }

    fn write_files(&self, c: &Container, st: &State) -> Result<()> {
        if c.mode == NetMode::Host {
            return self.write_host_mode_files(c, st);
        }
        let dir = self.cfg.container_dir(&c.id);
        let own: Vec<std::net::IpAddr> = c
            .endpoints
            .iter()
            .flat_map(|e| {
                e.ip.map(std::net::IpAddr::V4)
                    .into_iter()
                    .chain(e.ip6.map(std::net::IpAddr::V6))
            })
            .collect();
        let hosts = files::hosts(&c.hostname, &own, &c.links, &c.extra_hosts);
        let resolv = self.resolv_conf_for(c, st);
        files::write_all(&dir, &c.hostname, &hosts, &resolv)
            .map_err(|e| AgentError::Internal(format!("writing {}: {e}", dir.display())))
    }

    /// Host mode: the host's files, with a container's own resolv.conf
    /// (Docker: `--dns`, `--dns-search`, `--dns-option` apply in host mode
    /// too) and hosts (`--add-host`) where its flags ask for them.
    fn write_host_mode_files(&self, c: &Container, st: &State) -> Result<()> {
        let dir = self.host_mode_etc(&c.id);
        let io =
            |e: std::io::Error| AgentError::Internal(format!("writing {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        if !(c.dns.is_empty() && c.dns_search.is_empty() && c.dns_options.is_empty()) {
            std::fs::write(dir.join("resolv.conf"), self.resolv_conf_for(c, st)).map_err(io)?;
        }
        if !c.extra_hosts.is_empty() {
            let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            std::fs::write(
                dir.join("hosts"),
                files::host_mode_hosts(&host, &c.extra_hosts),
            )
            .map_err(io)?;
        }
        Ok(())
    }

    /// The resolv.conf `c` gets: the embedded resolver while it is on a
    /// user-defined network, else its `--dns` servers, the agent's
    /// `--dns-upstream` ones or the host's, in that order (Docker's rules).
    fn resolv_conf_for(&self, c: &Container, st: &State) -> String {
        let on_user_net = c
            .endpoints
            .iter()
            .any(|e| st.networks.get(&e.network_id).is_some_and(|n| !n.default));
        let ov = files::DnsOverrides {
            search: &c.dns_search,
            options: &c.dns_options,
        };
        if on_user_net {
            return files::embedded_resolv_conf(ov);
        }
        let servers = if c.dns.is_empty() {
            &self.cfg.dns_upstreams
        } else {
            &c.dns
        };
        files::bridge_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
                .ok()
                .as_deref(),
            servers,
            ov,
        )
    }

    /// Rewrite the resolv.conf of container `id` and of the containers that
    /// share its namespace, after `network connect`/`disconnect` changed
    /// whether it is on a user-defined network (Docker rebuilds it then too).
    /// Written in place: processes already running see the new file through
    /// their bind mount.
    fn refresh_resolv(&self, id: &str) {
        let st = self.snapshot();
        let Some(c) = st.containers.get(id) else {
            return;
        };
        let text = self.resolv_conf_for(c, &st);
        let ids = std::iter::once(id).chain(st.sharers_of(id).into_iter().map(|s| s.id.as_str()));
        for i in ids {
            let p = self.cfg.container_dir(i).join("resolv.conf");
            if std::fs::read_to_string(&p).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            if let Err(e) = std::fs::write(&p, &text) {
                tracing::warn!("rewriting {}: {e}", p.display());
            }
        }
    }

    pub fn container_create(&self, req: ContainerCreate) -> Result<(String, Vec<String>)> {
        let mut warnings = Vec::new();
        if let Some(n) = &req.name {
            validate::check_name("container", n).map_err(invalid)?;
        }
        if let Some(h) = &req.hostname {
            validate::check_hostname(h).map_err(invalid)?;
        }
        for a in &req.aliases {
            validate::check_name("alias", a).map_err(invalid)?;
        }
        let mut ports: Vec<crate::state::PortBinding> = Vec::new();
        for p in &req.ports {
            let b = validate::parse_port_spec(p).map_err(invalid)?;
            if !validate::is_choice(&b)
                && let Some(prev) = ports
                    .iter()
                    .filter(|q| !validate::is_choice(q))
                    .find_map(|q| validate::ports_clash(q, &b))
            {
                return Err(conflict(format!(
                    "Bind for {} failed: port is already allocated",
                    validate::bind_addr(&b, prev)
                )));
            }
            ports.push(b);
        }
        let ip = match &req.ip {
            Some(s) => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|_| invalid(format!("invalid IPv4 address {s:?}")))?,
            ),
            None => None,
        };
        let mut exposed: Vec<(u16, crate::state::PortProto)> = Vec::new();
        for e in &req.expose {
            for p in validate::parse_expose(e).map_err(invalid)? {
                if !exposed.contains(&p) {
                    exposed.push(p);
                }
            }
        }
        let mut extra: Vec<(String, validate::HostAddr)> = Vec::new();
        for h in &req.extra_hosts {
            extra.push(validate::parse_add_host(h).map_err(invalid)?);
        }
        let mac = match &req.mac_address {
            Some(m) if !m.is_empty() => Some(validate::parse_mac(m).map_err(invalid)?),
            _ => None,
        };
        let mut publish_allow: Vec<ipnet::IpNet> = Vec::new();
        for s in &req.publish_allow {
            let n = crate::state::parse_cidr(s)
                .map_err(|e| invalid(format!("--publish-allow: {e}")))?;
            if !publish_allow.contains(&n) {
                publish_allow.push(n);
            }
        }
        let mut dns: Vec<std::net::IpAddr> = Vec::new();
        for s in &req.dns {
            let a = s
                .parse()
                .map_err(|_| invalid(format!("invalid DNS server address {s:?}")))?;
            if !dns.contains(&a) {
                dns.push(a);
            }
        }
        for d in &req.dns_search {
            validate::check_dns_search(d).map_err(invalid)?;
        }
        for o in &req.dns_options {
            validate::check_dns_option(o).map_err(invalid)?;
        }
        // KEY=VALUE in order, a later one of the same key winning; a bare
        // KEY leaves it out.
        let mut env: Vec<String> = Vec::new();
        for e in &req.env {
            let (k, v) = validate::parse_env(e).map_err(invalid)?;
            env.retain(|x| x.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
            if let Some(v) = v {
                env.push(format!("{k}={v}"));
            }
        }
        let id = self.change(|txn| {
            let id = new_id();
            let name = req.name.clone().unwrap_or_else(|| format!("pier_{}", &id[..8]));
            if let Some(o) = txn.state.containers.values().find(|c| c.name == name) {
                return Err(conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    o.id
                )));
            }
            let network_mode = req.network.clone().unwrap_or_else(|| "bridge".into());
            let (mode, net) = match network_mode.as_str() {
                "host" => (NetMode::Host, None),
                "none" => (NetMode::None, None),
                m if m.starts_with("container:") => {
                    let key = &m["container:".len()..];
                    let o = txn
                        .state
                        .find_container(key)
                        .ok_or_else(|| not_found(format!("No such container: {key}")))?;
                    // Sharing a sharer means sharing its owner (while it exists).
                    let owner = match &o.mode {
                        NetMode::Container(oid) if txn.state.containers.contains_key(oid) => {
                            oid.clone()
                        }
                        _ => o.id.clone(),
                    };
                    (NetMode::Container(owner), None)
                }
                n => {
                    let net = txn
                        .state
                        .find_network(n)
                        .ok_or_else(|| not_found(format!("network {n} not found")))?
                        .clone();
                    not_engine_network(&net)?;
                    match net.driver.as_str() {
                        DRIVER_HOST => (NetMode::Host, None),
                        DRIVER_NULL => (NetMode::None, None),
                        _ => (NetMode::Bridge, Some(net)),
                    }
                }
            };
            let user_net = net.as_ref().is_some_and(|n| !n.default);
            if let NetMode::Container(_) = mode {
                if !ports.is_empty() {
                    return Err(invalid(
                        "conflicting options: port publishing and the container type network mode",
                    ));
                }
                if req.hostname.is_some() {
                    return Err(invalid(
                        "conflicting options: hostname and the network mode",
                    ));
                }
                if !dns.is_empty() {
                    return Err(invalid("conflicting options: dns and the network mode"));
                }
                if !req.dns_search.is_empty() {
                    return Err(invalid(
                        "conflicting options: dns search and the network mode",
                    ));
                }
                if !req.dns_options.is_empty() {
                    return Err(invalid(
                        "conflicting options: dns options and the network mode",
                    ));
                }
            }
            if (ip.is_some() || req.ip6.is_some()) && !user_net {
                return Err(invalid(
                    "user specified IP address is supported on user defined networks only",
                ));
            }
            let ip6 = parse_ip6(req.ip6.as_deref(), net.as_ref())?;
            // An IPv6 host address needs an IPv6 container address.
            validate::check_ipv6_host_ips(&ports, net.as_ref().is_some_and(|n| n.subnet6.is_some()))
                .map_err(invalid)?;
            if !req.aliases.is_empty() && !user_net {
                return Err(invalid(
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
            let mut ports = ports.clone();
            // -P: every exposed port (and each -p one is exposed already).
            if req.publish_all {
                for (p, proto) in &exposed {
                    let published = ports.iter().any(|b| {
                        b.proto == *proto && (b.container_port..=b.container_port_end).contains(p)
                    });
                    if !published {
                        ports.push(crate::state::PortBinding {
                            host_ip: None,
                            host_port: 0,
                            host_port_end: 0,
                            container_port: *p,
                            container_port_end: *p,
                            proto: *proto,
                        });
                    }
                }
            }
            if mac.is_some() && net.is_none() {
                return Err(invalid(format!(
                    "--mac-address needs a bridge network, not {network_mode}"
                )));
            }
            // `host-gateway`: the gateway of the container's first network.
            let extra_hosts = extra
                .iter()
                .map(|(n, a)| match a {
                    validate::HostAddr::Ip(ip) => Ok((n.clone(), *ip)),
                    validate::HostAddr::Gateway => net
                        .as_ref()
                        .and_then(|n| n.gateway)
                        .map(|g| (n.clone(), std::net::IpAddr::V4(g)))
                        .ok_or_else(|| {
                            invalid(format!(
                                "--add-host {n}:host-gateway needs a bridge network, not {network_mode}"
                            ))
                        }),
                })
                .collect::<Result<Vec<_>>>()?;
            if !publish_allow.is_empty() && ports.is_empty() {
                return Err(invalid(
                    "--publish-allow needs a published port (-p or -P)",
                ));
            }
            if mode == NetMode::Host && !ports.is_empty() {
                warnings.push("Published ports are discarded when using host network mode".into());
                ports.clear();
            }
            let dns = dns.clone();
            // Host ports already taken by another container; ephemeral and
            // ranged ones chosen now.
            let ports = Self::choose_host_ports(&txn.state, &ports, &id)?;
            let mut links = Vec::new();
            for l in &req.links {
                let (lname, alias) = match l.split_once(':') {
                    Some((n, a)) => (n, Some(a.to_string())),
                    None => (l.as_str(), None),
                };
                if let Some(a) = &alias {
                    validate::check_name("link alias", a).map_err(invalid)?;
                }
                let t = txn
                    .state
                    .find_container(lname)
                    .ok_or_else(|| invalid(format!("could not get container for {lname}")))?;
                let Some(ip) = t.endpoints.first().and_then(|e| e.ip) else {
                    return Err(invalid(format!(
                        "cannot link to {lname}: it has no IPv4 address"
                    )));
                };
                links.push(Link {
                    container_id: t.id.clone(),
                    name: t.name.clone(),
                    alias,
                    ip,
                });
            }
            let hostname = match &mode {
                NetMode::Container(o) => txn.state.containers[o].hostname.clone(),
                NetMode::Host => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| id[..12].to_string()),
                _ => req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            };
            let netns = match &mode {
                NetMode::Host => None,
                _ => Some(self.cfg.netns_path(&id)),
            };
            let c = Container {
                id: id.clone(),
                name,
                created: now_rfc3339(),
                hostname,
                mode: mode.clone(),
                network_mode: network_mode.clone(),
                netns: netns.clone(),
                endpoints: Vec::new(),
                links,
                ports,
                cmd: req.cmd.clone(),
                running: true,
                pid: None,
                pid_start: None,
                exit_code: None,
                started_ms: Some(now_ms()),
                finished_ms: None,
                auto_remove: req.auto_remove,
                dns,
                dns_search: req.dns_search.clone(),
                dns_options: req.dns_options.clone(),
                env: env.clone(),
                extra_hosts,
                exposed: exposed.clone(),
                owner: Owner::Pier,
                engine_id: None,
                ports_on: None,
                publish_allow: publish_allow.clone(),
            };
            txn.state.containers.insert(id.clone(), c.into());
            let dir = self.cfg.container_dir(&id);
            txn.on_fail(Action::RemoveDir(dir));
            match &mode {
                NetMode::Host => {}
                NetMode::None | NetMode::Bridge => {
                    let p = netns.clone().unwrap();
                    txn.on_fail(Action::RemoveNetns(p.clone()));
                    self.topo.create_netns(&p)?;
                }
                NetMode::Container(owner) => {
                    let p = netns.clone().unwrap();
                    let src = txn.state.containers[owner]
                        .netns
                        .clone()
                        .ok_or_else(|| {
                            invalid("cannot share the namespace of a host-mode container")
                        })?;
                    txn.on_fail(Action::RemoveNetns(p.clone()));
                    reconcile::share_netns(&src, &p)?;
                }
            }
            if let Some(net) = &net {
                Self::attach(
                    txn,
                    &id,
                    net,
                    EndpointReq {
                        ip,
                        ip6,
                        mac,
                        aliases: req.aliases.clone(),
                        ..Default::default()
                    },
                )?;
            }
            let c = txn.state.containers[&id].clone();
            if let NetMode::Container(owner) = &mode {
                // The sharer sees the owner's files.
                let src = self.cfg.container_dir(owner);
                let dst = self.cfg.container_dir(&id);
                std::fs::create_dir_all(&dst)
                    .and_then(|_| {
                        for f in ["hosts", "resolv.conf", "hostname"] {
                            std::fs::copy(src.join(f), dst.join(f))?;
                        }
                        Ok(())
                    })
                    .map_err(|e| AgentError::Internal(format!("copying /etc files: {e}")))?;
            } else {
                self.write_files(&c, &txn.state)?;
            }
            if req.detach && !req.cmd.is_empty() {
                self.names_before_spawn(&txn.state);
                let p = self.spawn_main(&c)?;
                txn.on_fail(Action::Kill(p));
                let cm = txn.state.containers.get_mut(&id).unwrap();
                cm.pid = Some(p.pid);
                cm.pid_start = Some(p.start_time);
            }
            Ok(id)
        })?;
        Ok((id, warnings))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.cfg.container_dir(id).join("log")
    }

    fn proc_spec(
        &self,
        c: &Container,
        argv: Vec<String>,
        stdio: [std::os::fd::OwnedFd; 3],
    ) -> ProcSpec {
        let etc = if c.mode == NetMode::Host {
            let d = self.host_mode_etc(&c.id);
            // Only when the flags gave it files (an empty dir binds nothing).
            std::fs::read_dir(&d)
                .is_ok_and(|mut r| r.next().is_some())
                .then_some(d)
        } else {
            Some(self.cfg.container_dir(&c.id))
        };
        let join_pid = match (c.pid, c.pid_start) {
            (Some(pid), Some(st))
                if self.runner.alive(Proc {
                    pid,
                    start_time: st,
                }) =>
            {
                Some(pid)
            }
            _ => None,
        };
        ProcSpec {
            netns: c.netns.clone(),
            etc_dir: etc,
            hostname: (c.mode != NetMode::Host).then(|| c.hostname.clone()),
            argv,
            env: c.env.clone(),
            join_pid,
            stdio,
        }
    }

    /// Start the container's command detached, output appended to its log.
    fn spawn_main(&self, c: &Container) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&c.id))
            .map_err(|e| AgentError::Internal(format!("opening the log: {e}")))?;
        let null = std::fs::File::open("/dev/null")
            .map_err(|e| AgentError::Internal(format!("/dev/null: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        let mut spec = self.proc_spec(c, c.cmd.clone(), [null.into(), log.into(), log2.into()]);
        spec.join_pid = None;
        self.runner
            .spawn_detached(spec)
            .map_err(|e| AgentError::spawn(&format!("{:?}", c.cmd), e))
    }

    /// Remove one container (`force`: also when its process runs).
    pub fn container_rm(&self, key: &str, force: bool) -> Result<String> {
        self.remove_container(key, force, false)
    }

    /// [`Daemon::container_rm`]; `engines`: also what an engine manages
    /// (`system reset`: its veths go, its namespace stays the engine's).
    fn remove_container(&self, key: &str, force: bool, engines: bool) -> Result<String> {
        self.change(|txn| {
            let c = txn
                .state
                .find_container(key)
                .ok_or_else(|| not_found(format!("No such container: {key}")))?
                .clone();
            if !engines {
                not_engine_container(&c)?;
            }
            let live = self.live_proc(&c);
            if live.is_some() && !force {
                return Err(conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            if let Some(p) = live {
                txn.after_commit(Action::Kill(p));
            }
            if let Some(netns) = &c.netns {
                for e in &c.endpoints {
                    if let Some(n) = txn.state.networks.get(&e.network_id) {
                        txn.after_commit(Action::RemoveEndpoint(endpoint_spec(netns, e, n, false)));
                    }
                }
                if !c.owner.is_engine() {
                    txn.after_commit(Action::RemoveNetns(netns.clone()));
                }
            }
            txn.after_commit(Action::RemoveDir(self.cfg.container_dir(&c.id)));
            txn.state.containers.remove(&c.id);
            Ok(c.name)
        })
    }

    fn live_proc(&self, c: &Container) -> Option<Proc> {
        let p = Proc {
            pid: c.pid?,
            start_time: c.pid_start?,
        };
        self.runner.alive(p).then_some(p)
    }

    /// Containers whose detached command ended on its own are stopped: their
    /// published ports are released and their names leave the resolver, as
    /// when Docker sees a container exit. The agent calls it on a timer.
    pub fn reap_exited(&self) -> Result<()> {
        let gone: Vec<(String, Option<i32>)> = {
            let inner = self.lock_inner();
            inner
                .state
                .containers
                .values()
                .filter(|c| c.running && c.pid.is_some() && self.live_proc(c).is_none())
                .map(|c| (c.id.clone(), c.pid))
                .collect()
        };
        if gone.is_empty() {
            return Ok(());
        }
        let mut remove = Vec::new();
        self.change(|txn| {
            for (id, pid) in &gone {
                // Not if it was stopped or started again meanwhile.
                if let Some(cm) = txn.state.containers.get_mut(id)
                    && cm.running
                    && cm.pid == *pid
                {
                    tracing::info!("{}: its command exited", cm.name);
                    if let (Some(pid), Some(start_time)) = (cm.pid, cm.pid_start) {
                        cm.exit_code = self.runner.exit_code(Proc { pid, start_time });
                    }
                    cm.running = false;
                    cm.pid = None;
                    cm.pid_start = None;
                    cm.finished_ms = Some(now_ms());
                    if cm.auto_remove {
                        remove.push(cm.id.clone());
                    }
                }
            }
            Ok(())
        })?;
        // `--rm`: gone with its command.
        for id in remove {
            self.container_rm(&id, true)?;
        }
        Ok(())
    }

    pub fn container_stop(&self, key: &str) -> Result<()> {
        let c = self
            .snapshot()
            .find_container(key)
            .cloned()
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        not_engine_container(&c)?;
        let code = self
            .live_proc(&c)
            .map(|p| kill_and_wait(self.runner.as_ref(), p, std::time::Duration::from_secs(10)));
        self.change(|txn| {
            if let Some(cm) = txn.state.containers.get_mut(&c.id) {
                if cm.running {
                    cm.finished_ms = Some(now_ms());
                }
                cm.running = false;
                cm.pid = None;
                cm.pid_start = None;
                if code.is_some() {
                    cm.exit_code = code;
                }
            }
            Ok(())
        })?;
        if c.auto_remove {
            self.container_rm(&c.id, true)?;
        }
        Ok(())
    }

    pub fn container_start(&self, key: &str) -> Result<()> {
        self.change(|txn| {
            let c = txn
                .state
                .find_container(key)
                .ok_or_else(|| not_found(format!("No such container: {key}")))?
                .clone();
            not_engine_container(&c)?;
            if self.live_proc(&c).is_some() {
                return Ok(());
            }
            Self::check_ports_free(&txn.state, &c.ports, &c.id)?;
            let cm = txn.state.containers.get_mut(&c.id).unwrap();
            cm.running = true;
            cm.exit_code = None;
            cm.started_ms = Some(now_ms());
            if !c.cmd.is_empty() {
                let p = self.spawn_main(&c)?;
                txn.on_fail(Action::Kill(p));
                let cm = txn.state.containers.get_mut(&c.id).unwrap();
                cm.pid = Some(p.pid);
                cm.pid_start = Some(p.start_time);
            }
            Ok(())
        })
    }

    /// Docker's restart: stop (its ports unpublished), then start again.
    pub fn container_restart(&self, key: &str) -> Result<()> {
        let c = self
            .snapshot()
            .find_container(key)
            .cloned()
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        not_engine_container(&c)?;
        if c.auto_remove {
            return Err(conflict(format!(
                "cannot restart {}: it was started with --rm, a stop removes it",
                c.name
            )));
        }
        self.container_stop(&c.id)?;
        self.container_start(&c.id)
    }

    pub fn container_logs(&self, key: &str) -> Result<Vec<u8>> {
        let c = self
            .snapshot()
            .find_container(key)
            .cloned()
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        match std::fs::read(self.log_path(&c.id)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(AgentError::Internal(format!("reading the log: {e}"))),
        }
    }

    /// Run `argv` in a container with the caller's stdio; its exit code.
    /// With `main`, start the container's own command in the foreground.
    /// `started` learns the process once it runs (e.g. to watch the caller).
    pub fn exec(
        &self,
        key: &str,
        argv: Vec<String>,
        main: bool,
        stdio: [std::os::fd::OwnedFd; 3],
        started: impl FnOnce(Proc),
    ) -> Result<i32> {
        let c = self
            .snapshot()
            .find_container(key)
            .cloned()
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        not_engine_container(&c)?;
        if !c.running {
            return Err(conflict(format!("Container {} is not running", c.id)));
        }
        let argv = if main { c.cmd.clone() } else { argv };
        if argv.is_empty() {
            return Err(invalid("no command given"));
        }
        let mut spec = self.proc_spec(&c, argv.clone(), stdio);
        if main {
            spec.join_pid = None;
        }
        let w = match self.runner.spawn_attached(spec) {
            Ok(w) => w,
            Err(e) => {
                let e = AgentError::spawn(&format!("{argv:?}"), e);
                // A foreground `run` whose command cannot start leaves nothing,
                // as a detached one does.
                if main
                    && c.pid.is_none()
                    && c.exit_code.is_none()
                    && let Err(rm) = self.container_rm(&c.id, true)
                {
                    tracing::warn!("removing {} after a failed start: {rm}", c.id);
                }
                return Err(e);
            }
        };
        started(w.proc());
        if main {
            let p = w.proc();
            self.change(|txn| {
                if let Some(cm) = txn.state.containers.get_mut(&c.id) {
                    cm.pid = Some(p.pid);
                    cm.pid_start = Some(p.start_time);
                    cm.started_ms = Some(now_ms());
                }
                Ok(())
            })?;
        }
        let code = w.wait().map_err(AgentError::Internal)?;
        if main {
            self.change(|txn| {
                if let Some(cm) = txn.state.containers.get_mut(&c.id) {
                    cm.pid = None;
                    cm.pid_start = None;
                    cm.exit_code = Some(code);
                    cm.running = false;
                    cm.finished_ms = Some(now_ms());
                }
                Ok(())
            })?;
        }
        Ok(code)
    }

    /// Remove everything this agent made: containers, networks (the default
    /// bridge too), namespaces, files; the store ends empty.
    pub fn system_reset(&self) -> Result<()> {
        let ids: Vec<String> = self.snapshot().containers.keys().cloned().collect();
        for id in ids {
            self.remove_container(&id, true, true)?;
        }
        self.change(|txn| {
            for n in std::mem::take(&mut txn.state.networks).into_values() {
                if let Some(b) = n.bridge {
                    txn.after_commit(Action::RemoveBridge(b));
                }
            }
            txn.state.next_net_num = 0;
            txn.after_commit(Action::RemoveDir(self.cfg.run_dir.join("containers")));
            Ok(())
        })?;
        // Detach programs and remove pins: nothing of the dataplane is left.
        self.lock_inner().dataplane.teardown()?;
        // The namespace dir is a shared mount point of its own (see topology::netns).
        let dir = self.cfg.netns_dir();
        if reconcile::is_mount_point(&dir) {
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir(self.cfg.run_dir.join("containers"));
        Ok(())
    }
}

/// pier's own commands do not change what an engine manages.
fn not_engine_network(n: &Network) -> Result<()> {
    if n.owner.is_engine() {
        return Err(conflict(format!(
            "network {} is managed by {}: use {} to change it",
            n.name,
            n.owner.as_str(),
            n.owner.as_str()
        )));
    }
    Ok(())
}

fn not_engine_container(c: &Container) -> Result<()> {
    if c.owner.is_engine() {
        return Err(conflict(format!(
            "container {} is managed by {}: use {} to change it",
            c.name,
            c.owner.as_str(),
            c.owner.as_str()
        )));
    }
    Ok(())
}

/// Stop `p` (SIGTERM, up to `grace`, then SIGKILL; zero grace: SIGKILL at
/// once); its exit code as the runner saw it, else 128 + the signal.
fn kill_and_wait(runner: &dyn Runner, p: Proc, grace: std::time::Duration) -> i32 {
    runner.stop(p, grace);
    // The waiter thread records the code right after the process is reaped.
    for _ in 0..50 {
        if let Some(c) = runner.exit_code(p) {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    128 + if grace.is_zero() { 9 } else { 15 }
}

/// The subnets routed in the host namespace, default routes left out.
/// `--ip6`: an IPv6 address, on a dual-stack network.
fn parse_ip6(s: Option<&str>, net: Option<&Network>) -> Result<Option<std::net::Ipv6Addr>> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let a = s
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| invalid(format!("invalid IPv6 address {s:?}")))?;
    match net {
        Some(n) if n.ipv6() => Ok(Some(a)),
        Some(n) => Err(invalid(format!(
            "--ip6 {a}: network {} has no IPv6 (create it with --ipv6)",
            n.name
        ))),
        None => Err(invalid("--ip6 needs a bridge network")),
    }
}

fn routed_subnets(topo: &dyn Topology) -> Result<Vec<Ipv4Net>> {
    Ok(topo
        .routed_subnets()?
        .into_iter()
        .filter(|n| n.prefix_len() > 0)
        .collect())
}

/// A subnet routed on the host that `sn` overlaps: such a network would be
/// shadowed, and its gateway could be a host address.
fn routed_overlap(topo: &dyn Topology, sn: &Ipv4Net) -> Result<Option<Ipv4Net>> {
    Ok(routed_subnets(topo)?
        .into_iter()
        .find(|r| ipam::overlaps(r, sn)))
}
