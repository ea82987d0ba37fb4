//! The agent's side of the CNI plugin: `POST /cni/{add,del,check,gc}` and
//! `GET /cni/status` on the API socket, each one call on the endpoint core.
//! An attachment is the CNI runtime's `(CNI_CONTAINERID, CNI_IFNAME)`; its
//! record is a pier container of owner `cni` (`engine_id` = the container
//! id), with one endpoint per interface, on networks of owner `cni`.
use std::{path::Path, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{Attached, Call, Failure, code, delete_queue_dir};
use crate::{
    daemon::{
        Daemon,
        engine::{EngineAttach, NamedNetwork},
        reconcile::is_netns_mount,
    },
    state::{Container, Owner, mac_string},
};

/// The resolver pier serves in every namespace with names (`dns_hook`).
const NAMESERVER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

fn netns_ok(netns: &str) -> Result<&Path, Failure> {
    let p = Path::new(netns);
    if netns.is_empty() {
        return Err(Failure::new(code::INVALID_ENV, "CNI_NETNS is empty"));
    }
    if !p.is_absolute() || !is_netns_mount(p) {
        return Err(Failure::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {netns} is not a network namespace"),
        ));
    }
    Ok(p)
}

fn attached(d: &Daemon, c: &Container, ifname: &str) -> Option<Attached> {
    let st = d.snapshot();
    let e = c.endpoints.iter().find(|e| e.ifname == ifname)?;
    let n = st.networks.get(&e.network_id)?;
    Some(Attached {
        host_ifname: e.host_ifname.clone(),
        ifname: e.ifname.clone(),
        mac: mac_string(&e.mac),
        address: ipnet::Ipv4Net::new(e.ip?, e.prefix_len).ok()?,
        gateway: (!n.internal).then_some(n.gateway).flatten(),
        address6: e
            .ip6
            .and_then(|a| ipnet::Ipv6Net::new(a, e.prefix_len6).ok()),
        gateway6: (!n.internal && e.ip6.is_some())
            .then_some(n.gateway6)
            .flatten(),
        netns: c
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        mtu: n.mtu,
        nameservers: vec![NAMESERVER],
        ports: if c.ports_on.as_deref() == Some(e.id.as_str()) {
            c.ports.clone()
        } else {
            Vec::new()
        },
    })
}

fn check_ids(r: &Call) -> Result<(), Failure> {
    if !super::valid_container_id(&r.container_id) {
        return Err(Failure::new(
            code::INVALID_ENV,
            format!(
                "CNI_CONTAINERID {:?}: alphanumerics first, then alphanumerics, '_', '.', '-'",
                r.container_id
            ),
        ));
    }
    if !crate::config::valid_ifname(&r.ifname) {
        return Err(Failure::new(
            code::INVALID_ENV,
            format!("CNI_IFNAME {:?} is not an interface name", r.ifname),
        ));
    }
    Ok(())
}

/// ADD: the network (made on first use), then the attachment.
pub fn add(d: &Daemon, r: Call) -> Result<Attached, Failure> {
    check_ids(&r)?;
    let netns = netns_ok(&r.netns)?;
    let net = NamedNetwork {
        owner: Owner::Cni,
        name: r.network.name.clone(),
        subnet: r.network.subnet,
        gateway: r.network.gateway,
        no_ipv4: false,
        ipv6: r.network.ipv6,
        subnet6: r.network.subnet6,
        gateway6: r.network.gateway6,
        internal: r.network.internal,
        options: r.network.options.clone(),
    };
    d.engine_attach_named(
        &net,
        EngineAttach {
            owner: Owner::Cni,
            engine_id: r.container_id.clone(),
            name: None,
            netns: netns.to_path_buf(),
            network_id: String::new(),
            ifname: r.ifname.clone(),
            ip: None,
            ip6: None,
            mac: None,
            aliases: r.aliases.clone(),
            ports: r.ports.clone(),
        },
    )?;
    let c = d
        .engine_container(Owner::Cni, &r.container_id)
        .ok_or_else(|| Failure::new(code::INTERNAL, "the attachment vanished"))?;
    attached(d, &c, &r.ifname)
        .ok_or_else(|| Failure::new(code::INTERNAL, "the attachment vanished"))
}

/// DEL: idempotent; what is not attached is already detached.
pub fn del(d: &Daemon, r: Call) -> Result<(), Failure> {
    check_ids(&r)?;
    if let (Some(q), Some(c)) = (r.queued_ms, d.engine_container(Owner::Cni, &r.container_id))
        && c.started_ms.is_some_and(|s| s > q)
    {
        // Attached again after the runtime's DEL was queued: not that one.
        tracing::info!(
            "cni: queued DEL of {} {} is older than its attachment: dropped",
            r.container_id,
            r.ifname
        );
        return Ok(());
    }
    d.engine_detach(Owner::Cni, &r.container_id, Some(&r.ifname))?;
    Ok(())
}

/// CHECK: the attachment is recorded on the config's network, in that
/// namespace, its veth exists, and holds the address the runtime has.
pub fn check(d: &Daemon, r: Call) -> Result<(), Failure> {
    check_ids(&r)?;
    let netns = netns_ok(&r.netns)?;
    let unknown = |m: String| Failure::new(code::UNKNOWN_CONTAINER, m);
    let c = d
        .engine_container(Owner::Cni, &r.container_id)
        .ok_or_else(|| unknown(format!("container {} is not attached", r.container_id)))?;
    if c.netns.as_deref() != Some(netns) {
        return Err(unknown(format!(
            "container {} is attached in another namespace",
            r.container_id
        )));
    }
    let a = attached(d, &c, &r.ifname).ok_or_else(|| {
        unknown(format!(
            "container {} has no interface {}",
            r.container_id, r.ifname
        ))
    })?;
    let st = d.snapshot();
    let e = c.endpoints.iter().find(|e| e.ifname == r.ifname).unwrap();
    if st.networks.get(&e.network_id).map(|n| n.name.as_str()) != Some(&r.network.name) {
        return Err(unknown(format!(
            "interface {} of {} is not on network {}",
            r.ifname, r.container_id, r.network.name
        )));
    }
    let links = d
        .topology()
        .host_links()
        .map_err(crate::error::AgentError::from)?;
    if !links.contains(&a.host_ifname) {
        return Err(Failure::new(
            code::INTERNAL,
            format!("the host side {} of {} is missing", a.host_ifname, r.ifname),
        ));
    }
    // Each family prevResult names must be the one pier holds.
    let held: Vec<ipnet::IpNet> = std::iter::once(ipnet::IpNet::V4(a.address))
        .chain(a.address6.map(ipnet::IpNet::V6))
        .collect();
    for family_v4 in [true, false] {
        let prev: Vec<&ipnet::IpNet> = r
            .prev_ips
            .iter()
            .filter(|p| matches!(p, ipnet::IpNet::V4(_)) == family_v4)
            .collect();
        let ours = held
            .iter()
            .find(|h| matches!(h, ipnet::IpNet::V4(_)) == family_v4);
        if !prev.is_empty() && ours.is_none_or(|o| !prev.contains(&o)) {
            return Err(Failure::new(
                code::INTERNAL,
                format!(
                    "{} holds {}, not the address of prevResult ({:?})",
                    r.ifname,
                    held.iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.prev_ips
                ),
            ));
        }
    }
    Ok(())
}

/// GC: pier's CNI attachments on the config's network that the runtime
/// no longer lists go.
pub fn gc(d: &Daemon, r: Call) -> Result<(), Failure> {
    let st = d.snapshot();
    let Some(n) = st.network_by_name(&r.network.name) else {
        return Ok(());
    };
    if n.owner != Owner::Cni {
        return Err(Failure::new(
            code::CONFLICT,
            format!("network {} is not a CNI network of pier", n.name),
        ));
    }
    for (id, ifname) in d.engine_gc(Owner::Cni, &n.id, &r.valid)? {
        tracing::info!("cni: GC detached {id} {ifname} from {}", n.name);
    }
    Ok(())
}

fn answer(r: Result<Option<Attached>, Failure>) -> Response {
    match r {
        Ok(Some(a)) => (StatusCode::OK, Json(a)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => {
            let status = match f.code {
                code::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
                code::CONFLICT => StatusCode::CONFLICT,
                code::UNKNOWN_CONTAINER => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, Json(f)).into_response()
        }
    }
}

async fn verb(
    State(d): State<Arc<Daemon>>,
    UrlPath(verb): UrlPath<String>,
    body: Bytes,
) -> Response {
    let r: Call = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(Err(Failure::new(
                code::DECODE,
                format!("malformed CNI request: {e}"),
            )));
        }
    };
    tracing::debug!("cni: {verb} {r:?}");
    let res = tokio::task::spawn_blocking(move || match verb.as_str() {
        "add" => add(&d, r).map(Some),
        "del" => del(&d, r).map(|()| None),
        "check" => check(&d, r).map(|()| None),
        "gc" => gc(&d, r).map(|()| None),
        v => Err(Failure::new(
            code::INVALID_ENV,
            format!("unknown CNI verb {v:?}"),
        )),
    })
    .await
    .unwrap_or_else(|e| Err(Failure::new(code::INTERNAL, format!("task: {e}"))));
    if let Err(f) = &res {
        tracing::info!("cni: {f}");
    }
    answer(res)
}

/// STATUS: an agent that answers can attach.
async fn status() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The routes, nested at `/cni` by the API server.
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/status", get(status))
        .route("/{verb}", post(verb))
}

/// Carry out the DELs queued while no agent answered (see
/// [`super::delete_queue_dir`]); a file goes once its DEL is done or
/// refused for good.
pub fn drain_delete_queue(d: &Daemon) {
    let dir = delete_queue_dir(&d.cfg.socket);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for ent in rd.flatten() {
        let p = ent.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let r = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Call>(&b).map_err(|e| e.to_string()));
        match r {
            Ok(call) => {
                let what = format!("{} {}", call.container_id, call.ifname);
                match del(d, call) {
                    Ok(()) => tracing::info!("cni: queued DEL of {what} done"),
                    Err(f) if f.code == code::INTERNAL => {
                        tracing::warn!("cni: queued DEL of {what}: {f}; retried later");
                        continue;
                    }
                    Err(f) => tracing::warn!("cni: queued DEL of {what} refused: {f}"),
                }
            }
            Err(e) => tracing::warn!("cni: unreadable queued DEL {}: {e}", p.display()),
        }
        let _ = std::fs::remove_file(&p);
    }
}

/// Drain the queue now and then (a DEL may have been queued while this
/// agent was starting).
pub fn spawn_queue_drain(d: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(2));
        loop {
            t.tick().await;
            let d = d.clone();
            let _ = tokio::task::spawn_blocking(move || drain_delete_queue(&d)).await;
        }
    });
}
