//! The core's calls for engines that keep their own containers (Docker's
//! libnetwork today): the engine names the network and endpoint ids, its
//! IPAM gives the addresses, and its sandbox is a namespace it made. Each
//! call is one [`Daemon::change`] over the endpoint core (`core.rs`), so an
//! engine's endpoint gets the same checks, veth, maps and undo as `pier run`.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use ipnet::{Ipv4Net, Ipv6Net};

use super::{Daemon, EndpointReq, Txn};
use crate::{
    api::types::NetworkCreate,
    error::{Result, conflict, invalid, not_found},
    state::{
        Container, NetMode, Network, Owner, PendingEndpoint, PortBinding, mac_for, new_id, now_ms,
        now_rfc3339,
    },
};

/// A network as an engine describes it.
#[derive(Debug, Clone)]
pub struct EngineNetwork {
    pub owner: Owner,
    /// The name pier shows; `None`: `<owner>-<12 hex of the id>`.
    pub name: Option<String>,
    /// The engine's network id (64 hex digits), which pier keeps.
    pub id: String,
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Dual stack (`--ipv6`): the engine's IPv6 pool and gateway.
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    /// Docker's `-o` options (`com.docker.network.bridge.*`, mtu).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// What a joined endpoint tells the engine.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The container end, in the host namespace, for the engine to move.
    pub peer: String,
    /// `None` on `--internal` networks: no way out.
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway of a dual-stack network (`None` when internal).
    pub gateway6: Option<Ipv6Addr>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_id(kind: &str, id: &str) -> Result<()> {
    if !is_hex64(id) {
        return Err(invalid(format!(
            "invalid {kind} id {id:?}: 64 hexadecimal digits expected"
        )));
    }
    Ok(())
}

/// The network holding `ep_id` as a pending endpoint.
fn pending_of<'a>(txn: &'a Txn, ep_id: &str) -> Option<(&'a Network, &'a PendingEndpoint)> {
    txn.state
        .networks
        .values()
        .find_map(|n| n.pending.get(ep_id).map(|p| (n, p)))
}

/// The record of an engine's sandbox: a namespace the engine made, no
/// process of pier's, endpoints to come.
fn sandbox_record(
    id: String,
    name: String,
    network_mode: &str,
    netns: std::path::PathBuf,
    owner: Owner,
    engine_id: Option<String>,
) -> Container {
    Container {
        id,
        name,
        created: now_rfc3339(),
        hostname: String::new(),
        mode: NetMode::Bridge,
        network_mode: network_mode.to_string(),
        netns: Some(netns),
        endpoints: Vec::new(),
        links: Vec::new(),
        ports: Vec::new(),
        cmd: Vec::new(),
        running: true,
        pid: None,
        pid_start: None,
        exit_code: None,
        started_ms: Some(now_ms()),
        finished_ms: None,
        auto_remove: false,
        dns: Vec::new(),
        extra_hosts: Vec::new(),
        dns_search: Vec::new(),
        dns_options: Vec::new(),
        env: Vec::new(),
        exposed: Vec::new(),
        owner,
        engine_id,
        ports_on: None,
        publish_allow: Vec::new(),
    }
}

impl Daemon {
    /// The engine's network: its pool and gateway, checked as pier's own
    /// (no overlap with another network or a subnet the host routes).
    pub fn engine_network_create(&self, req: EngineNetwork) -> Result<()> {
        check_id("network", &req.id)?;
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", req.owner.as_str(), &req.id[..12]));
        let create = NetworkCreate {
            name,
            subnet: Some(req.subnet.to_string()),
            gateway: req.gateway.map(|g| g.to_string()),
            ip_range: None,
            enable_ipv6: req.subnet6.is_some(),
            subnet6: req.subnet6.map(|s| s.to_string()),
            gateway6: req.gateway6.map(|g| g.to_string()),
            internal: req.internal,
            options: req.options,
            labels: req.labels,
            ..Default::default()
        };
        self.change(|txn| {
            if let Some(n) = txn.state.networks.get(&req.id) {
                // Already recorded (a retried call, the next container of
                // an engine that has no daemon): it must be the same.
                if n.subnet != Some(req.subnet) || n.subnet6 != req.subnet6 {
                    return Err(conflict(format!(
                        "network {} exists with subnets {:?} {:?}, not {} {:?}",
                        n.name, n.subnet, n.subnet6, req.subnet, req.subnet6
                    )));
                }
                return Ok(());
            }
            Self::create_network(txn, &create, req.owner, Some(req.id.clone())).map(|_| ())
        })
    }

    /// Remove an engine's network; one pier does not know is already gone.
    pub fn engine_network_delete(&self, id: &str) -> Result<()> {
        self.change(|txn| {
            let Some(n) = txn.state.networks.get(id).cloned() else {
                return Ok(());
            };
            if !n.owner.is_engine() {
                return Err(conflict(format!(
                    "network {} is pier's own: remove it with pier network rm",
                    n.name
                )));
            }
            if !txn.state.containers_on(&n).is_empty() || !n.pending.is_empty() {
                return Err(conflict(format!("network {} has active endpoints", n.name)));
            }
            Self::remove_network(txn, &n);
            Ok(())
        })
    }

    /// Record an endpoint on `net_id` with the engine's address (and IPv6
    /// address on a dual-stack network; MAC, else Docker's 02:42 + address,
    /// which is returned). Ports that a running container already publishes
    /// are refused here, early.
    pub fn engine_endpoint_create(
        &self,
        net_id: &str,
        ep_id: &str,
        address: Ipv4Net,
        address6: Option<Ipv6Net>,
        mac: Option<[u8; 6]>,
        ports: &[PortBinding],
    ) -> Result<[u8; 6]> {
        check_id("endpoint", ep_id)?;
        check_bindings(ports)?;
        if let Some(m) = mac
            && (m[0] & 1 != 0 || m == [0; 6])
        {
            return Err(invalid(format!(
                "invalid MAC address {}: a non-zero unicast address",
                crate::state::mac_string(&m)
            )));
        }
        self.change(|txn| {
            let n = txn
                .state
                .networks
                .get(net_id)
                .cloned()
                .ok_or_else(|| not_found(format!("network {net_id} not found")))?;
            if !n.owner.is_engine() {
                return Err(conflict(format!(
                    "network {} is pier's own, not the engine's",
                    n.name
                )));
            }
            if let Some(p) = n.pending.get(ep_id) {
                return Ok(p.mac);
            }
            if txn.state.container_with_endpoint(ep_id).is_some() {
                return Err(conflict(format!("endpoint {ep_id} already exists")));
            }
            let (Some(subnet), Some(gw)) = (n.subnet, n.gateway) else {
                return Err(invalid(format!("network {} has no IPv4 pool", n.name)));
            };
            let ip = address.addr();
            if !subnet.contains(&ip) || address.prefix_len() != subnet.prefix_len() {
                return Err(invalid(format!(
                    "address {address} is not in the network's subnet {subnet}"
                )));
            }
            if ip == gw || txn.state.used_ips(net_id).contains(&ip) {
                return Err(conflict(format!(
                    "address {ip} is already in use on network {}",
                    n.name
                )));
            }
            let ip6 = match (n.subnet6, n.gateway6, address6) {
                (_, _, None) => None,
                (Some(sn6), Some(gw6), Some(a6)) => {
                    let ip6 = a6.addr();
                    if !sn6.contains(&ip6) || a6.prefix_len() != sn6.prefix_len() {
                        return Err(invalid(format!(
                            "address {a6} is not in the network's IPv6 subnet {sn6}"
                        )));
                    }
                    if ip6 == gw6 || txn.state.used_ips6(net_id).contains(&ip6) {
                        return Err(conflict(format!(
                            "address {ip6} is already in use on network {}",
                            n.name
                        )));
                    }
                    Some(ip6)
                }
                (_, _, Some(a6)) => {
                    return Err(invalid(format!(
                        "IPv6 address {a6} on network {}, which has no IPv6",
                        n.name
                    )));
                }
            };
            if n.subnet6.is_some() && ip6.is_none() {
                return Err(invalid(format!(
                    "network {} is dual stack: the endpoint needs an IPv6 address too",
                    n.name
                )));
            }
            super::validate::check_ipv6_host_ips(ports, ip6.is_some()).map_err(invalid)?;
            Self::check_ports_free(&txn.state, ports, "")?;
            let mac = mac.unwrap_or_else(|| mac_for(ip));
            txn.state.networks.get_mut(net_id).unwrap().pending.insert(
                ep_id.to_string(),
                PendingEndpoint {
                    id: ep_id.to_string(),
                    ip,
                    prefix_len: subnet.prefix_len(),
                    ip6,
                    prefix_len6: n.subnet6.map(|s| s.prefix_len()).unwrap_or(0),
                    mac,
                    host_ifname: None,
                },
            );
            Ok(mac)
        })
    }

    /// Join endpoint `ep_id` to the engine's sandbox (a namespace path):
    /// the veth pair is made with its container end in the host namespace
    /// for the engine to move there. Endpoints on one sandbox share one
    /// pier container record, named `<engine>-<sandbox>`.
    pub fn engine_join(&self, owner: Owner, ep_id: &str, sandbox: &Path) -> Result<Joined> {
        self.change(|txn| {
            if let Some(c) = txn.state.container_with_endpoint(ep_id) {
                return Err(conflict(format!(
                    "endpoint {ep_id} has already joined {}",
                    c.name
                )));
            }
            let (net, p) = pending_of(txn, ep_id)
                .map(|(n, p)| (n.clone(), p.clone()))
                .ok_or_else(|| not_found(format!("endpoint {ep_id} not found")))?;
            if p.host_ifname.is_some() {
                return Err(conflict(format!(
                    "endpoint {ep_id} left its sandbox: delete it and create a new one"
                )));
            }
            let cid = match txn
                .state
                .containers
                .values()
                .find(|c| c.netns.as_deref() == Some(sandbox))
            {
                Some(c) => c.id.clone(),
                None => {
                    let base = sandbox
                        .file_name()
                        .map(|b| b.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let id = new_id();
                    let mut name = format!("{}-{}", owner.as_str(), base);
                    if base.is_empty() || txn.state.find_container(&name).is_some() {
                        name = format!("{}-{}", owner.as_str(), &id[..12]);
                    }
                    txn.state.containers.insert(
                        id.clone(),
                        sandbox_record(
                            id.clone(),
                            name,
                            &net.name,
                            sandbox.to_path_buf(),
                            owner,
                            None,
                        )
                        .into(),
                    );
                    id
                }
            };
            let e = Self::attach(
                txn,
                &cid,
                &net,
                EndpointReq {
                    id: Some(ep_id.to_string()),
                    ip: Some(p.ip),
                    ip6: p.ip6,
                    mac: Some(p.mac),
                    aliases: Vec::new(),
                    engine_peer: Some(format!("pier{}", &ep_id[..7])),
                    ifname: None,
                },
            )?;
            Ok(Joined {
                peer: e.engine_peer.unwrap_or_default(),
                gateway: (!net.internal).then_some(net.gateway).flatten(),
                gateway6: (!net.internal).then_some(net.gateway6).flatten(),
            })
        })
    }

    /// Publish `ports` (each `host_port..=host_port_end` a choice for one
    /// container port; host port 0: an ephemeral one) to endpoint `ep_id`.
    /// A host port held by a container or a host process is refused, and
    /// nothing is published.
    pub fn engine_publish(&self, ep_id: &str, ports: &[PortBinding]) -> Result<()> {
        check_bindings(ports)?;
        self.change(|txn| {
            let c = txn
                .state
                .container_with_endpoint(ep_id)
                .cloned()
                .ok_or_else(|| not_found(format!("endpoint {ep_id} has not joined a sandbox")))?;
            let has_ip6 = c.endpoints.iter().any(|e| e.id == ep_id && e.ip6.is_some());
            super::validate::check_ipv6_host_ips(ports, has_ip6).map_err(invalid)?;
            let ports = Self::choose_host_ports(&txn.state, ports, &c.id)?;
            let cm = txn.state.containers.get_mut(&c.id).unwrap();
            cm.ports = ports;
            cm.ports_on = Some(ep_id.to_string());
            Ok(())
        })
    }

    /// Unpublish what [`Daemon::engine_publish`] published on `ep_id`.
    pub fn engine_unpublish(&self, ep_id: &str) -> Result<()> {
        self.change(|txn| {
            let Some(c) = txn.state.container_with_endpoint(ep_id).cloned() else {
                return Ok(());
            };
            if c.ports_on.as_deref() == Some(ep_id) {
                let cm = txn.state.containers.get_mut(&c.id).unwrap();
                cm.ports.clear();
                cm.ports_on = None;
            }
            Ok(())
        })
    }

    /// The endpoint leaves its sandbox: out of the maps at once, its veth
    /// kept until [`Daemon::engine_endpoint_delete`] (the engine moves the
    /// container end back meanwhile). The sandbox's record goes with its
    /// last endpoint.
    pub fn engine_leave(&self, ep_id: &str) -> Result<()> {
        self.change(|txn| {
            let Some(c) = txn.state.container_with_endpoint(ep_id).cloned() else {
                return Ok(());
            };
            let e = Self::detach(txn, &c.id, ep_id, true)?;
            let Some(ip) = e.ip else {
                // Not an engine's pending kind (those have IPv4): the veth
                // goes now.
                if let (Some(n), Some(ns)) = (txn.state.networks.get(&e.network_id), &c.netns) {
                    let spec = super::endpoint_spec(ns, &e, n, false);
                    txn.after_commit(super::Action::RemoveEndpoint(spec));
                }
                if txn.state.containers[&c.id].endpoints.is_empty() {
                    txn.state.containers.remove(&c.id);
                }
                return Ok(());
            };
            if let Some(n) = txn.state.networks.get_mut(&e.network_id) {
                n.pending.insert(
                    e.id.clone(),
                    PendingEndpoint {
                        id: e.id.clone(),
                        ip,
                        prefix_len: e.prefix_len,
                        ip6: e.ip6,
                        prefix_len6: e.prefix_len6,
                        mac: e.mac,
                        host_ifname: Some(e.host_ifname.clone()),
                    },
                );
            }
            if txn.state.containers[&c.id].endpoints.is_empty() {
                txn.state.containers.remove(&c.id);
            }
            Ok(())
        })
    }

    /// Forget endpoint `ep_id` and remove its veth (also when the engine
    /// never sent Leave). Unknown: already gone.
    pub fn engine_endpoint_delete(&self, ep_id: &str) -> Result<()> {
        if self.snapshot().container_with_endpoint(ep_id).is_some() {
            self.engine_leave(ep_id)?;
        }
        self.change(|txn| {
            let Some((n, p)) = pending_of(txn, ep_id).map(|(n, p)| (n.clone(), p.clone())) else {
                return Ok(());
            };
            if let Some(h) = &p.host_ifname {
                txn.after_commit(super::Action::RemoveEndpoint(
                    crate::topology::EndpointSpec {
                        netns: Default::default(),
                        host_ifname: h.clone(),
                        ifname: String::new(),
                        bridge: n.bridge.clone().unwrap_or_default(),
                        address: Ipv4Net::new(p.ip, p.prefix_len).ok(),
                        address6: None,
                        mac: p.mac,
                        default_gateway: None,
                        default_gateway6: None,
                        metric: None,
                        mtu: None,
                        engine_peer: None,
                    },
                ));
            }
            txn.state
                .networks
                .get_mut(&n.id)
                .unwrap()
                .pending
                .remove(ep_id);
            Ok(())
        })
    }
}

/// An engine's container attached in one call, in a namespace the engine
/// made (netavark's `setup`, CNI's `ADD`): pier makes the veth with its peer
/// inside, with address and default route.
#[derive(Debug, Clone)]
pub struct EngineAttach {
    pub owner: Owner,
    /// The engine's container id: with `ifname`, the attachment's key.
    pub engine_id: String,
    /// The name pier shows; `None`: `<owner>-<12 first of the id>`.
    pub name: Option<String>,
    pub netns: std::path::PathBuf,
    /// pier network id (an engine's network, see [`Daemon::engine_network_create`]).
    pub network_id: String,
    pub ifname: String,
    /// The engine's IPAM (netavark's static IPs); `None`: pier's.
    pub ip: Option<Ipv4Addr>,
    /// The same for IPv6, on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
    pub aliases: Vec<String>,
    /// Published on this endpoint (host ranges and port 0: a choice).
    pub ports: Vec<PortBinding>,
}

impl Daemon {
    /// The record of the engine's container `engine_id`, if any.
    pub fn engine_container(&self, owner: Owner, engine_id: &str) -> Option<Container> {
        self.snapshot()
            .containers
            .values()
            .find(|c| c.owner == owner && c.engine_id.as_deref() == Some(engine_id))
            .map(|c| Container::clone(c))
    }

    /// Attach the engine's container to a network in its namespace; the
    /// endpoint pier made and the network's gateway. Nothing is left when
    /// it fails.
    pub fn engine_attach(
        &self,
        req: EngineAttach,
    ) -> Result<(crate::state::Endpoint, Option<Ipv4Addr>)> {
        self.change(|txn| Self::engine_attach_in(txn, &req))
    }

    /// [`Daemon::engine_attach`] inside a change (with the network made in
    /// the same change, see [`Daemon::engine_attach_named`]).
    fn engine_attach_in(
        txn: &mut Txn,
        req: &EngineAttach,
    ) -> Result<(crate::state::Endpoint, Option<Ipv4Addr>)> {
        if req.engine_id.is_empty() {
            return Err(invalid("an empty container id"));
        }
        check_bindings(&req.ports)?;
        let net = txn
            .state
            .networks
            .get(&req.network_id)
            .cloned()
            .ok_or_else(|| not_found(format!("network {} not found", req.network_id)))?;
        if net.owner != req.owner {
            return Err(conflict(format!(
                "network {} is managed by {}, not {}",
                net.name,
                net.owner.as_str(),
                req.owner.as_str()
            )));
        }
        let existing = txn
            .state
            .containers
            .values()
            .find(|c| c.owner == req.owner && c.engine_id.as_deref() == Some(&req.engine_id))
            .cloned();
        let cid = match existing {
            Some(c) => {
                if c.netns.as_deref() != Some(req.netns.as_path()) {
                    return Err(conflict(format!(
                        "container {} is attached in another namespace ({})",
                        req.engine_id,
                        c.netns
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )));
                }
                c.id.clone()
            }
            None => {
                let id = new_id();
                let short: String = req.engine_id.chars().take(12).collect();
                let mut name = req
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{short}", req.owner.as_str()));
                if txn.state.find_container(&name).is_some() {
                    name = format!("{}-{}", req.owner.as_str(), &id[..12]);
                }
                txn.state.containers.insert(
                    id.clone(),
                    sandbox_record(
                        id.clone(),
                        name,
                        &net.name,
                        req.netns.clone(),
                        req.owner,
                        Some(req.engine_id.clone()),
                    )
                    .into(),
                );
                id
            }
        };
        let e = Self::attach(
            txn,
            &cid,
            &net,
            EndpointReq {
                id: None,
                ip: req.ip,
                ip6: req.ip6,
                mac: req.mac,
                aliases: req.aliases.clone(),
                engine_peer: None,
                ifname: Some(req.ifname.clone()),
            },
        )?;
        if !req.ports.is_empty() {
            super::validate::check_ipv6_host_ips(&req.ports, e.ip6.is_some()).map_err(invalid)?;
            let ports = Self::choose_host_ports(&txn.state, &req.ports, &cid)?;
            let cm = txn.state.containers.get_mut(&cid).unwrap();
            cm.ports.extend(ports);
            cm.ports_on = Some(e.id.clone());
        }
        Ok((e, (!net.internal).then_some(net.gateway).flatten()))
    }

    /// Detach the engine's container from `ifname` (all its interfaces when
    /// `None`); the record goes with its last endpoint. What is not
    /// attached is already detached.
    pub fn engine_detach(&self, owner: Owner, engine_id: &str, ifname: Option<&str>) -> Result<()> {
        self.change(|txn| {
            let Some(c) = txn
                .state
                .containers
                .values()
                .find(|c| c.owner == owner && c.engine_id.as_deref() == Some(engine_id))
                .cloned()
            else {
                return Ok(());
            };
            for e in c
                .endpoints
                .iter()
                .filter(|e| ifname.is_none_or(|i| e.ifname == i))
            {
                Self::detach(txn, &c.id, &e.id, false)?;
            }
            if txn.state.containers[&c.id].endpoints.is_empty() {
                txn.state.containers.remove(&c.id);
            }
            Ok(())
        })
    }
}

/// A network an engine knows by its name only (CNI's `name`): made on the
/// first attachment, from the engine's config or with pier's choices.
#[derive(Debug, Clone)]
pub struct NamedNetwork {
    pub owner: Owner,
    pub name: String,
    /// `None`: the next free subnet, as `pier network create` picks.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// No IPv4 pool (`subnet` and `gateway` then `None`): IPv6 only, or no
    /// addresses at all (netavark's ipam `none`).
    pub no_ipv4: bool,
    /// Dual stack: with `subnet6` (and `gateway6`) as given, else the next
    /// free ULA /64, as `pier network create --ipv6` picks.
    pub ipv6: bool,
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    pub internal: bool,
    /// pier's network options (`opts::*`: bridge name, masquerade, mtu).
    pub options: BTreeMap<String, String>,
}

impl Daemon {
    /// The id of network `req.name`, made if missing. One that exists must
    /// be the same engine's, with the subnet and gateway asked for (if any).
    fn ensure_named_network(txn: &mut Txn, req: &NamedNetwork) -> Result<String> {
        if let Some(n) = txn.state.network_by_name(&req.name) {
            if n.owner != req.owner {
                return Err(conflict(format!(
                    "network {} exists and is managed by {}, not {}",
                    n.name,
                    n.owner.as_str(),
                    req.owner.as_str()
                )));
            }
            if let Some(s) = req.subnet
                && n.subnet != Some(s)
            {
                return Err(conflict(format!(
                    "network {} exists with subnet {}, not {s}",
                    n.name,
                    n.subnet.map(|s| s.to_string()).unwrap_or_default()
                )));
            }
            if let Some(g) = req.gateway
                && n.gateway != Some(g)
            {
                return Err(conflict(format!(
                    "network {} exists with gateway {}, not {g}",
                    n.name,
                    n.gateway.map(|g| g.to_string()).unwrap_or_default()
                )));
            }
            if req.no_ipv4 != n.subnet.is_none() {
                return Err(conflict(format!(
                    "network {} exists {} IPv4",
                    n.name,
                    if n.subnet.is_none() {
                        "without"
                    } else {
                        "with"
                    }
                )));
            }
            let want6 = req.ipv6 || req.subnet6.is_some();
            if want6 != n.ipv6()
                || req.subnet6.is_some_and(|s| n.subnet6 != Some(s))
                || req.gateway6.is_some_and(|g| n.gateway6 != Some(g))
            {
                let has = match (n.subnet6, n.gateway6) {
                    (Some(s), Some(g)) => format!("IPv6 subnet {s} (gateway {g})"),
                    _ => "no IPv6".to_string(),
                };
                let asked = match (req.subnet6, req.gateway6) {
                    (Some(s), Some(g)) => format!("{s} (gateway {g})"),
                    (Some(s), None) => s.to_string(),
                    _ if want6 => "IPv6".to_string(),
                    _ => "no IPv6".to_string(),
                };
                return Err(conflict(format!(
                    "network {} exists with {has}, not {asked}",
                    n.name
                )));
            }
            return Ok(n.id.clone());
        }
        let create = NetworkCreate {
            name: req.name.clone(),
            subnet: req.subnet.map(|s| s.to_string()),
            gateway: req.gateway.map(|g| g.to_string()),
            ip_range: None,
            enable_ipv6: req.ipv6 || req.subnet6.is_some(),
            no_ipv4: req.no_ipv4,
            subnet6: req.subnet6.map(|s| s.to_string()),
            gateway6: req.gateway6.map(|g| g.to_string()),
            internal: req.internal,
            options: req.options.clone(),
            labels: BTreeMap::new(),
            ..Default::default()
        };
        Self::create_network(txn, &create, req.owner, None)
    }

    /// [`Daemon::engine_attach`] to the network `net` names, made in the
    /// same change when it is the first attachment: a failed attachment
    /// leaves no network behind either.
    pub fn engine_attach_named(
        &self,
        net: &NamedNetwork,
        req: EngineAttach,
    ) -> Result<(crate::state::Endpoint, Option<Ipv4Addr>)> {
        self.change(|txn| Self::engine_attach_named_in(txn, net, req))
    }

    /// [`Daemon::engine_attach_named`] inside a change (netavark attaches
    /// all of a container's networks in one).
    pub(crate) fn engine_attach_named_in(
        txn: &mut Txn,
        net: &NamedNetwork,
        mut req: EngineAttach,
    ) -> Result<(crate::state::Endpoint, Option<Ipv4Addr>)> {
        check_bindings(&req.ports)?;
        req.network_id = Self::ensure_named_network(txn, net)?;
        Self::engine_attach_in(txn, &req)
    }

    /// Detach the `owner`'s attachments on network `network_id` whose
    /// `(engine id, ifname)` is not in `valid` (CNI's GC); the ones removed.
    pub fn engine_gc(
        &self,
        owner: Owner,
        network_id: &str,
        valid: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        self.change(|txn| {
            let stale: Vec<(String, String, String)> = txn
                .state
                .containers
                .values()
                .filter(|c| c.owner == owner)
                .flat_map(|c| {
                    let eid = c.engine_id.clone().unwrap_or_default();
                    c.endpoints
                        .iter()
                        .filter(|e| e.network_id == network_id)
                        .filter(move |e| !valid.iter().any(|(i, f)| *i == eid && *f == e.ifname))
                        .map(move |e| (c.id.clone(), e.id.clone(), e.ifname.clone()))
                })
                .collect();
            let mut gone = Vec::new();
            for (cid, eid, ifname) in stale {
                Self::detach(txn, &cid, &eid, false)?;
                let c = &txn.state.containers[&cid];
                gone.push((c.engine_id.clone().unwrap_or_default(), ifname));
                if c.endpoints.is_empty() {
                    txn.state.containers.remove(&cid);
                }
            }
            Ok(gone)
        })
    }
}

/// Bindings as a front end hands them over (the CNI route takes them as
/// JSON): refused before anything is made unless they are ones `-p` could
/// have typed.
fn check_bindings(ports: &[PortBinding]) -> Result<()> {
    ports
        .iter()
        .try_for_each(super::validate::check_binding)
        .map_err(invalid)
}
