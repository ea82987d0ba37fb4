//! `GET /monitor` (a stream of JSON lines), `GET /stats`, `GET /graph`.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::server::{ApiError, blocking};
use crate::{
    daemon::Daemon,
    dataplane::Subscription,
    error::{AgentError, invalid},
    observe::{MonitorFilter, Names, TrafficRow, graph},
};

type D = State<Arc<Daemon>>;

/// How often the stream reports lost events (when their count changed),
/// refreshes names, and, when idle, sends an empty line (so a monitor that
/// went away is noticed and detached).
const TICK: Duration = Duration::from_millis(250);
const NAMES_EVERY: Duration = Duration::from_secs(2);
const IDLE_LINE: Duration = Duration::from_secs(1);

struct Stream {
    d: Arc<Daemon>,
    sub: Subscription,
    filter: MonitorFilter,
    names: Names,
    names_at: Instant,
    offset: i128,
    checked: Instant,
    written: Instant,
    lost_sent: u64,
    started: bool,
}

async fn fresh_names(d: &Arc<Daemon>) -> Names {
    let d = d.clone();
    tokio::task::spawn_blocking(move || d.monitor_names())
        .await
        .unwrap_or_default()
}

/// `GET /monitor?type=drop|trace&container=&network=&port=`: attaches a
/// monitor for as long as the client reads. Each event is one JSON line
/// ([`crate::observe::MonitorEvent`]); `{"type":"lost","lost":N}` says how
/// many events this monitor has lost since it attached (sent when it grows);
/// empty lines are keep-alives.
pub async fn monitor(
    State(d): D,
    Query(filter): Query<MonitorFilter>,
) -> Result<Response, ApiError> {
    filter.validate().map_err(|e| ApiError::from(invalid(e)))?;
    let hub = d.dataplane_monitor().ok_or_else(|| {
        ApiError::from(AgentError::Internal(
            "this agent's dataplane has no monitor".into(),
        ))
    })?;
    let sub = hub
        .subscribe()
        .map_err(|e| ApiError::from(AgentError::from(e)))?;
    let names = fresh_names(&d).await;
    let now = Instant::now();
    let st = Stream {
        d,
        sub,
        filter,
        names,
        names_at: now,
        offset: crate::observe::wall_minus_mono_ns(),
        checked: now,
        written: now,
        lost_sent: 0,
        started: false,
    };
    let body = futures::stream::unfold(st, |mut st| async move {
        loop {
            if !st.started {
                // Headers and a first line at once: the client knows it is attached.
                st.started = true;
                return Some((Ok::<_, std::io::Error>(Bytes::from_static(b"\n")), st));
            }
            if st.checked.elapsed() >= TICK {
                st.checked = Instant::now();
                let lost = st.sub.lost();
                if lost != st.lost_sent {
                    st.lost_sent = lost;
                    st.written = Instant::now();
                    let line = format!("{}\n", serde_json::json!({"type": "lost", "lost": lost}));
                    return Some((Ok(Bytes::from(line)), st));
                }
                if st.names_at.elapsed() >= NAMES_EVERY {
                    st.names = fresh_names(&st.d).await;
                    st.names_at = Instant::now();
                }
                if st.written.elapsed() >= IDLE_LINE {
                    st.written = Instant::now();
                    return Some((Ok(Bytes::from_static(b"\n")), st));
                }
            }
            if let Some(e) = st.sub.next(TICK).await {
                let ev = st.names.event(&e, st.offset);
                if st.filter.matches(&ev) {
                    st.written = Instant::now();
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok(Bytes::from(line)), st));
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /stats`: packets/bytes in and out and drops per container, network, uplink.
pub async fn stats(State(d): D) -> Result<Json<Vec<TrafficRow>>, ApiError> {
    Ok(Json(blocking(d, |d| d.traffic()).await?))
}

#[derive(Deserialize)]
pub struct GraphQuery {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /graph?format=dot|svg`: the host's networks as a picture.
pub async fn graph(State(d): D, Query(q): Query<GraphQuery>) -> Result<Response, ApiError> {
    let fmt = q.format.unwrap_or_else(|| "dot".into());
    if fmt != "dot" && fmt != "svg" {
        return Err(invalid(format!("invalid format {fmt:?}: dot or svg")).into());
    }
    let dot = blocking(d, |d| Ok(graph::dot(&d.snapshot(), &d.cfg.uplinks))).await?;
    if fmt == "svg" {
        let svg = graph::svg(&dot).map_err(|e| ApiError::from(AgentError::Internal(e)))?;
        return Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response());
    }
    Ok(([(header::CONTENT_TYPE, "text/vnd.graphviz")], dot).into_response())
}
