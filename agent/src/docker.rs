//! The Docker front end: libnetwork's remote network driver protocol
//! (`POST /Plugin.Activate`, `POST /NetworkDriver.*`, JSON bodies of
//! `application/vnd.docker.plugins.v1.2+json`), served on its own unix
//! socket (`pier agent --docker-plugin`, `/run/docker/plugins/pier.sock`).
//!
//! Thin: each call is decoded, checked for shape, and handed to one of the
//! endpoint core's engine calls (`daemon/engine.rs`). Docker keeps its own
//! IPAM (pools, addresses) and names; pier keeps the networks, endpoints
//! and ports in its store, so neither a dockerd nor a pier restart loses
//! them (dockerd does not replay CreateNetwork).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    daemon::{Daemon, engine::EngineNetwork},
    error::{AgentError, invalid},
    state::{Owner, PortBinding, PortProto, mac_string, opts},
};

/// The protocol's media type (Docker accepts v1 and v1.x).
const MEDIA: &str = "application/vnd.docker.plugins.v1+json";

pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/pier.sock";

/// Docker's option keys in CreateNetwork/CreateEndpoint/Join `Options`.
mod keys {
    pub const GENERIC: &str = "com.docker.network.generic";
    pub const INTERNAL: &str = "com.docker.network.internal";
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    pub const PORTMAP: &str = "com.docker.network.portmap";
}

fn reply(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, MEDIA)],
        v.to_string(),
    )
        .into_response()
}

/// Docker shows `Err` to the user (`docker: Error response from daemon: …`).
fn err_reply(msg: impl std::fmt::Display) -> Response {
    reply(json!({ "Err": msg.to_string() }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpData {
    pool: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: BTreeMap<String, Value>,
    #[serde(default, rename = "IPv4Data")]
    ipv4_data: Option<Vec<IpData>>,
    #[serde(default, rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpData>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ids {
    #[serde(default, rename = "NetworkID")]
    network_id: String,
    #[serde(default, rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    options: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(default, rename = "AddressIPv6")]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<Interface>,
    #[serde(default)]
    options: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Join {
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    sandbox_key: String,
}

/// One entry of `com.docker.network.portmap` (libnetwork's PortBinding).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortMap {
    proto: u8,
    #[serde(default, rename = "HostIP")]
    host_ip: String,
    port: u16,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, body: &Bytes) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("{method}: malformed request: {e}")))
}

/// The generic `-o` options as strings (Docker sends them as a map).
fn generic_options(o: &BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, AgentError> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = o.get(keys::GENERIC) {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => return Err(invalid(format!("option {k}: unsupported value {other}"))),
            };
            if ![
                opts::BRIDGE_NAME,
                opts::ENABLE_ICC,
                opts::ENABLE_MASQ,
                opts::MTU,
                opts::PUBLISH_ALLOW,
            ]
            .contains(&k.as_str())
            {
                return Err(invalid(format!(
                    "option {k} is not supported by the pier driver (known: {}, {}, {}, {}, {})",
                    opts::BRIDGE_NAME,
                    opts::ENABLE_ICC,
                    opts::ENABLE_MASQ,
                    opts::MTU,
                    opts::PUBLISH_ALLOW
                )));
            }
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
}

fn flag(o: &BTreeMap<String, Value>, key: &str) -> bool {
    match o.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// `10.1.0.1/24` or `10.1.0.1` → the address.
fn addr_of(s: &str) -> Result<Ipv4Addr, AgentError> {
    let a = s.split('/').next().unwrap_or(s);
    a.parse()
        .map_err(|_| invalid(format!("invalid IPv4 address {s:?}")))
}

/// `fd00::1/64` or `fd00::1` → the address.
fn addr6_of(s: &str) -> Result<Ipv6Addr, AgentError> {
    let a = s.split('/').next().unwrap_or(s);
    a.parse()
        .map_err(|_| invalid(format!("invalid IPv6 address {s:?}")))
}

/// CreateNetwork's IPv6 pool (`--ipv6 --subnet fd..::/64`): Docker's IPAM
/// gives it in `IPv6Data`; pier takes one.
fn pool6(
    enable: bool,
    data: Option<Vec<IpData>>,
) -> Result<(Option<Ipv6Net>, Option<Ipv6Addr>), AgentError> {
    let pools = data.unwrap_or_default();
    match &pools[..] {
        [] if enable => Err(invalid(
            "--ipv6 without an IPv6 pool: give docker network create an IPv6 --subnet too",
        )),
        [] => Ok((None, None)),
        [p] => {
            let sn: Ipv6Net = p
                .pool
                .parse()
                .map_err(|_| invalid(format!("invalid IPv6 pool {:?}", p.pool)))?;
            let gw = p.gateway.as_deref().map(addr6_of).transpose()?;
            Ok((Some(sn), gw))
        }
        _ => Err(invalid(format!(
            "the pier driver takes one IPv6 pool, got {}",
            pools.len()
        ))),
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], AgentError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || invalid(format!("invalid MAC address {s:?}"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// `com.docker.network.portmap` as pier's bindings: each entry one
/// container port, its host range a choice (0: an ephemeral port).
fn port_bindings(o: &BTreeMap<String, Value>) -> Result<Vec<PortBinding>, AgentError> {
    let Some(v) = o.get(keys::PORTMAP) else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let maps: Vec<PortMap> = serde_json::from_value(v.clone())
        .map_err(|e| invalid(format!("{}: {e}", keys::PORTMAP)))?;
    maps.into_iter()
        .map(|m| {
            let proto = match m.proto {
                6 => PortProto::Tcp,
                17 => PortProto::Udp,
                132 => return Err(invalid("sctp ports are not supported by pier")),
                p => return Err(invalid(format!("unknown protocol number {p}"))),
            };
            let host_ip = crate::daemon::validate::engine_host_ip(&m.host_ip).map_err(invalid)?;
            if m.port == 0 {
                return Err(invalid("container port 0"));
            }
            let end = m.host_port_end.max(m.host_port);
            Ok(PortBinding {
                host_ip,
                host_port: m.host_port,
                host_port_end: if m.host_port == 0 { 0 } else { end },
                container_port: m.port,
                container_port_end: m.port,
                proto,
            })
        })
        .collect()
}

/// One protocol call, decoded and run on the blocking pool.
async fn call(d: Arc<Daemon>, method: String, body: Bytes) -> Response {
    tracing::debug!("docker: {method} {}", String::from_utf8_lossy(&body));
    let r = tokio::task::spawn_blocking(move || handle(&d, &method, &body)).await;
    match r {
        Ok(Ok(Some(v))) => reply(v),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
        Ok(Err(e)) => {
            tracing::info!("docker: {e}");
            err_reply(e)
        }
        Err(e) => err_reply(format!("internal error: {e}")),
    }
}

fn handle(d: &Daemon, method: &str, body: &Bytes) -> Result<Option<Value>, AgentError> {
    let v = match method {
        "Plugin.Activate" => json!({ "Implements": ["NetworkDriver"] }),
        "NetworkDriver.GetCapabilities" => {
            json!({ "Scope": "local", "ConnectivityScope": "local" })
        }
        "NetworkDriver.CreateNetwork" => {
            let r: CreateNetwork = parse(method, body)?;
            let (subnet6, gateway6) = pool6(flag(&r.options, keys::ENABLE_IPV6), r.ipv6_data)?;
            let pools = r.ipv4_data.unwrap_or_default();
            let [pool] = &pools[..] else {
                return Err(invalid(format!(
                    "the pier driver needs exactly one IPv4 pool, got {}",
                    pools.len()
                )));
            };
            let subnet: Ipv4Net = pool
                .pool
                .parse()
                .map_err(|_| invalid(format!("invalid pool {:?}", pool.pool)))?;
            let gateway = pool.gateway.as_deref().map(addr_of).transpose()?;
            d.engine_network_create(EngineNetwork {
                owner: Owner::Docker,
                name: None,
                id: r.network_id,
                subnet,
                gateway,
                subnet6,
                gateway6,
                internal: flag(&r.options, keys::INTERNAL),
                options: generic_options(&r.options)?,
                labels: BTreeMap::new(),
            })?;
            json!({})
        }
        "NetworkDriver.DeleteNetwork" => {
            let r: Ids = parse(method, body)?;
            d.engine_network_delete(&r.network_id)?;
            json!({})
        }
        "NetworkDriver.CreateEndpoint" => {
            let r: CreateEndpoint = parse(method, body)?;
            let i = r.interface.unwrap_or_default();
            if i.address.is_empty() {
                return Err(invalid("CreateEndpoint without an IPv4 address"));
            }
            let address: Ipv4Net = i
                .address
                .parse()
                .map_err(|_| invalid(format!("invalid address {:?}", i.address)))?;
            let address6: Option<Ipv6Net> = (!i.address_ipv6.is_empty())
                .then(|| {
                    i.address_ipv6
                        .parse()
                        .map_err(|_| invalid(format!("invalid IPv6 address {:?}", i.address_ipv6)))
                })
                .transpose()?;
            let given = (!i.mac_address.is_empty())
                .then(|| parse_mac(&i.mac_address))
                .transpose()?;
            let ports = port_bindings(&r.options)?;
            let mac = d.engine_endpoint_create(
                &r.network_id,
                &r.endpoint_id,
                address,
                address6,
                given,
                &ports,
            )?;
            // Only a MAC Docker did not give may be returned.
            if given.is_some() {
                json!({})
            } else {
                json!({ "Interface": { "MacAddress": mac_string(&mac) } })
            }
        }
        "NetworkDriver.EndpointOperInfo" => {
            let r: Ids = parse(method, body)?;
            let st = d.snapshot();
            let mut value = serde_json::Map::new();
            if let Some(c) = st.container_with_endpoint(&r.endpoint_id) {
                value.insert("pier.container".into(), json!(c.name));
                if let Some(e) = c.endpoints.iter().find(|e| e.id == r.endpoint_id) {
                    value.insert("pier.veth".into(), json!(e.host_ifname));
                }
            }
            json!({ "Value": value })
        }
        "NetworkDriver.DeleteEndpoint" => {
            let r: Ids = parse(method, body)?;
            d.engine_endpoint_delete(&r.endpoint_id)?;
            json!({})
        }
        "NetworkDriver.Join" => {
            let r: Join = parse(method, body)?;
            let key = std::path::PathBuf::from(&r.sandbox_key);
            if !key.is_absolute() {
                return Err(invalid(format!("invalid sandbox key {:?}", r.sandbox_key)));
            }
            let j = d.engine_join(Owner::Docker, &r.endpoint_id, &key)?;
            let mut v = json!({
                "InterfaceName": { "SrcName": j.peer, "DstPrefix": "eth" },
            });
            match j.gateway {
                Some(g) => v["Gateway"] = json!(g.to_string()),
                // `--internal`: no way out, and no gwbridge either.
                None => v["DisableGatewayService"] = json!(true),
            }
            if let Some(g6) = j.gateway6 {
                v["GatewayIPv6"] = json!(g6.to_string());
            }
            v
        }
        "NetworkDriver.Leave" => {
            let r: Ids = parse(method, body)?;
            d.engine_leave(&r.endpoint_id)?;
            json!({})
        }
        "NetworkDriver.ProgramExternalConnectivity" => {
            let r: Ids = parse(method, body)?;
            let ports = port_bindings(&r.options)?;
            d.engine_publish(&r.endpoint_id, &ports)?;
            json!({})
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            let r: Ids = parse(method, body)?;
            d.engine_unpublish(&r.endpoint_id)?;
            json!({})
        }
        // Swarm node discovery: nothing to do on a local-scope driver.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => json!({}),
        _ => return Ok(None),
    };
    Ok(Some(v))
}

async fn route(State(d): State<Arc<Daemon>>, Path(method): Path<String>, body: Bytes) -> Response {
    call(d, method, body).await
}

/// The driver's routes: `POST /<Method>`.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new().route("/{method}", post(route)).with_state(d)
}
