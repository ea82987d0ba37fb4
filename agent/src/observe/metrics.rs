//! `pier agent --metrics-addr ADDR`: `/metrics` in the Prometheus/OpenMetrics
//! text format (the `prometheus-client` crate encodes it). Kernel counters
//! are read at each scrape; the API and sync histograms live in the agent.
use std::sync::LazyLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::daemon::Daemon;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    path: String,
    status: String,
}

type Hist = Family<ApiLabels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 100 µs … ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// What the agent measures itself (kept across scrapes).
struct AgentMetrics {
    api: Hist,
    sync: Histogram,
}

static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    api: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
    sync: latency_buckets(),
});

/// One API request took `secs` (`path`: the route's pattern).
pub fn observe_api(method: &str, path: &str, status: u16, secs: f64) {
    METRICS
        .api
        .get_or_create(&ApiLabels {
            method: method.to_string(),
            path: path.to_string(),
            status: status.to_string(),
        })
        .observe(secs);
}

/// One dataplane sync took `secs`.
pub fn observe_sync(secs: f64) {
    METRICS.sync.observe(secs);
}

/// The axum middleware that times every API request by route.
pub async fn track_api(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    // A monitor's stream lasts as long as it is attached: not a latency.
    if path != "/monitor" {
        observe_api(
            &method,
            &path,
            resp.status().as_u16(),
            t0.elapsed().as_secs_f64(),
        );
    }
    resp
}

fn counter_family<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) {
    let f = Family::<L, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge_family<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, i64)>,
) {
    let f = Family::<L, Gauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help, f);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    host_ip: String,
    host_port: String,
    proto: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    kind: String,
    name: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficDropLabels {
    kind: String,
    name: String,
    reason: String,
}

/// The whole exposition, read now.
pub fn render(d: &Daemon) -> anyhow::Result<String> {
    use pier_common::{config, maps as names};
    let mut reg = Registry::default();
    let st = d.snapshot();
    let ports = d.port_stats()?;
    let obs = d.dataplane_observed()?;
    let label = |r: &crate::api::types::PortStatsRow| PortLabels {
        host_ip: r.host_ip.clone(),
        host_port: r.host_port.to_string(),
        proto: r.proto.clone(),
        container: r.container.clone(),
    };
    counter_family(
        &mut reg,
        "pier_port_packets",
        "Packets that reached a published port.",
        ports.iter().map(|r| (label(r), r.packets)),
    );
    counter_family(
        &mut reg,
        "pier_port_bytes",
        "Bytes (frames) that reached a published port.",
        ports.iter().map(|r| (label(r), r.bytes)),
    );
    counter_family(
        &mut reg,
        "pier_port_denied_packets",
        "Packets a published port's source policy dropped.",
        ports.iter().map(|r| (label(r), r.denied)),
    );
    let reason = |r: &pier_common::drop::DropReason| ReasonLabels {
        reason: format!("{r:?}"),
    };
    counter_family(
        &mut reg,
        "pier_drop_packets",
        "Packets the dataplane dropped, by reason.",
        obs.drops.iter().map(|(r, c)| (reason(r), c.packets)),
    );
    counter_family(
        &mut reg,
        "pier_drop_bytes",
        "Bytes the dataplane dropped, by reason.",
        obs.drops.iter().map(|(r, c)| (reason(r), c.bytes)),
    );
    let m = obs.maps;
    let maps = [
        ("PIER_CT", m.ct, names::CT_LEN),
        ("PIER_SNAT_FWD", m.snat_fwd, names::SNAT_LEN),
        ("PIER_SNAT_REV", m.snat_rev, names::SNAT_LEN),
        ("PIER_SOCK_NAT", m.sock_nat, names::SOCK_NAT_LEN),
    ];
    let map = |n: &str| MapLabels { map: n.into() };
    gauge_family(
        &mut reg,
        "pier_map_entries",
        "Entries in the conntrack and NAT maps (LRU: a full map evicts).",
        maps.iter().map(|(n, v, _)| (map(n), *v as i64)),
    );
    gauge_family(
        &mut reg,
        "pier_map_capacity",
        "Capacity of the conntrack and NAT maps.",
        maps.iter().map(|(n, _, c)| (map(n), *c as i64)),
    );
    counter(
        &mut reg,
        "pier_conntrack_new",
        "Conntrack entries made for new published connections.",
        obs.kernel.ct_new,
    );
    counter(
        &mut reg,
        "pier_conntrack_retracked",
        "Published connections whose conntrack entry was gone mid-connection (LRU eviction, idle expiry) and was made again.",
        obs.kernel.ct_retracked,
    );
    counter(
        &mut reg,
        "pier_masquerade_allocations",
        "Masquerade source ports allocated for new flows.",
        obs.kernel.nat_allocated,
    );
    gauge(
        &mut reg,
        "pier_masquerade_ports_in_use",
        "Masquerade ports allocated now (all peers).",
        m.snat_rev as i64,
    );
    gauge(
        &mut reg,
        "pier_masquerade_ports_in_use_max_peer",
        "Masquerade ports allocated now towards the busiest peer (address, port, protocol).",
        obs.nat_ports_max_peer as i64,
    );
    gauge(
        &mut reg,
        "pier_masquerade_port_pool_size",
        "Masquerade ports per peer (the pool each peer has).",
        (config::NAT_PORT_MAX - config::NAT_PORT_MIN) as i64 + 1,
    );
    counter(
        &mut reg,
        "pier_monitor_lost_events",
        "Monitor events lost because the ring buffer was full.",
        obs.kernel.lost_events,
    );
    gauge(
        &mut reg,
        "pier_monitors_attached",
        "pier monitor sessions attached now.",
        d.dataplane_monitor().map(|m| m.attached()).unwrap_or(0) as i64,
    );
    gauge(
        &mut reg,
        "pier_containers",
        "Containers the agent knows.",
        st.containers.len() as i64,
    );
    gauge(
        &mut reg,
        "pier_containers_running",
        "Running containers.",
        st.containers.values().filter(|c| c.running).count() as i64,
    );
    gauge(
        &mut reg,
        "pier_networks",
        "Networks the agent knows.",
        st.networks.len() as i64,
    );
    gauge(
        &mut reg,
        "pier_endpoints",
        "Container interfaces on networks.",
        st.containers
            .values()
            .map(|c| c.endpoints.len())
            .sum::<usize>() as i64,
    );
    gauge(
        &mut reg,
        "pier_published_ports",
        "Published ports in the dataplane.",
        ports.len() as i64,
    );
    let rows = d.traffic()?;
    let tl = |r: &super::TrafficRow, dir: &str| TrafficLabels {
        kind: r.kind.clone(),
        name: r.name.clone(),
        direction: dir.into(),
    };
    counter_family(
        &mut reg,
        "pier_traffic_packets",
        "Packets per container, network and uplink (direction in: into the container / in from the uplink).",
        rows.iter()
            .flat_map(|r| [(tl(r, "in"), r.packets_in), (tl(r, "out"), r.packets_out)]),
    );
    counter_family(
        &mut reg,
        "pier_traffic_bytes",
        "Bytes per container, network and uplink.",
        rows.iter()
            .flat_map(|r| [(tl(r, "in"), r.bytes_in), (tl(r, "out"), r.bytes_out)]),
    );
    counter_family(
        &mut reg,
        "pier_traffic_drop_packets",
        "Packets dropped on arrival per container, network and uplink, by reason.",
        rows.iter().flat_map(|r| {
            r.drops.iter().map(|(reason, n)| {
                (
                    TrafficDropLabels {
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                        reason: reason.clone(),
                    },
                    *n,
                )
            })
        }),
    );
    reg.register(
        "pier_api_request_duration_seconds",
        "API requests by route, method and status.",
        METRICS.api.clone(),
    );
    reg.register(
        "pier_dataplane_sync_duration_seconds",
        "Dataplane syncs (one per change).",
        METRICS.sync.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// Serve `/metrics` on `l` until the runtime stops.
pub async fn serve(l: tokio::net::TcpListener, d: std::sync::Arc<Daemon>) {
    use axum::{http::header, response::IntoResponse, routing::get};
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let d = d.clone();
            async move {
                match tokio::task::spawn_blocking(move || render(&d)).await {
                    Ok(Ok(text)) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Ok(Err(e)) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response(),
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response(),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(l, app).await {
        tracing::error!("metrics server: {e}");
    }
}
