//! `pier agent`: start the daemon and serve the API and exec sockets until
//! SIGTERM/SIGINT (containers keep running) or `system reset`.
use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use anyhow::Context;

use super::{
    Daemon, NamesHook,
    process::{Proc, Runner},
};
use crate::{
    api::{exec, server, types::ExecResult},
    config::AgentConfig,
    dataplane::Dataplane,
    topology::Topology,
};

fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // We hold the state dir's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// Watch the exec connection while the process runs: when the client goes
/// away (Ctrl-C on `pier exec`/`pier run`), interrupt the process as a
/// terminal would (SIGINT), like Docker's signal proxy.
fn watch_client(
    s: &std::os::unix::net::UnixStream,
    p: Proc,
    done: Arc<std::sync::atomic::AtomicBool>,
    runner_signal: impl Fn(Proc) + Send + 'static,
) {
    use std::os::fd::AsRawFd;
    let Ok(s) = s.try_clone() else { return };
    std::thread::spawn(move || {
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: poll(2) on one valid pollfd we own.
            let r = unsafe { libc::poll(&mut pfd, 1, 200) };
            if r > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                if !done.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("exec client went away: interrupting process {}", p.pid);
                    runner_signal(p);
                }
                return;
            }
        }
    });
}

fn handle_exec(d: &Daemon, s: std::os::unix::net::UnixStream) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = |p: Proc| {
        watch_client(&s, p, done.clone(), move |p| {
            if let Some(id) = crate::runtime::ProcIdentity::of(p.pid as u32)
                && id.start_time == p.start_time
            {
                let _ = id.signal(nix::sys::signal::Signal::SIGINT);
            }
        })
    };
    let r = match exec::read_request(&s) {
        Ok((req, fds)) => match d.exec(&req.container, req.argv, req.main, fds, started) {
            Ok(code) => ExecResult {
                exit_code: Some(code),
                error: None,
            },
            Err(e) => ExecResult {
                exit_code: e.exit_code(),
                error: Some(e.to_string()),
            },
        },
        Err(e) => ExecResult {
            exit_code: None,
            error: Some(e.to_string()),
        },
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    exec::write_result(&s, &r);
}

/// Run the agent until a signal or `system reset`.
pub fn run(
    cfg: AgentConfig,
    topo: Box<dyn Topology>,
    runner: Box<dyn Runner>,
    dataplane: Box<dyn Dataplane>,
    names_hook: Option<NamesHook>,
) -> anyhow::Result<()> {
    let api_path = cfg.socket.clone();
    let exec_path = cfg.exec_socket();
    let plugin_path = cfg.docker_plugin.clone();
    let metrics_addr = cfg.metrics_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The daemon's own work (reconcile included) may spawn tasks, e.g. DNS
    // servers from `dns_changed`: give it the runtime's context.
    let guard = rt.enter();
    let daemon = Arc::new(Daemon::start_with_hook(
        cfg, topo, runner, dataplane, names_hook,
    )?);
    tracing::info!(
        "pier agent ready: {} networks, {} containers",
        daemon.snapshot().networks.len(),
        daemon.snapshot().containers.len()
    );
    let result: anyhow::Result<()> = rt.block_on(async {
        let exec_l = bind(&exec_path)?;
        let plugin_l = match &plugin_path {
            Some(p) => Some(bind(p)?),
            None => None,
        };
        // Prometheus metrics, when asked for (a taken address fails the start).
        if let Some(addr) = metrics_addr {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
            tracing::info!("metrics on http://{addr}/metrics");
            tokio::spawn(crate::observe::metrics::serve(l, daemon.clone()));
        }
        // The API socket last: its existence means "ready".
        let api_l = bind(&api_path)?;
        let d = daemon.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = exec_l.accept().await else {
                    continue;
                };
                let d = d.clone();
                tokio::task::spawn_blocking(move || match s.into_std() {
                    Ok(s) => {
                        let _ = s.set_nonblocking(false);
                        handle_exec(&d, s);
                    }
                    Err(e) => tracing::warn!("exec connection: {e}"),
                });
            }
        });
        // Follow the host's addresses, links and routes.
        super::hostwatch::spawn(daemon.clone());
        // Retire idle conntrack/NAT entries also when nothing changes.
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(d.cfg.ct_gc_interval);
            t.tick().await;
            loop {
                t.tick().await;
                let d = d.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.dataplane_gc()).await {
                    tracing::warn!("conntrack gc: {e}");
                }
            }
        });
        // Stop containers whose command ended (ports released, names gone).
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                t.tick().await;
                let d = d.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.reap_exited()).await {
                    tracing::warn!("reaping exited containers: {e}");
                }
            }
        });
        // DELs a CNI runtime asked for while no agent ran.
        crate::cni::agent::drain_delete_queue(&daemon);
        crate::cni::agent::spawn_queue_drain(daemon.clone());
        // Docker's remote network driver, on a socket of its own.
        if let (Some(p), Some(l)) = (&plugin_path, plugin_l) {
            let app = crate::docker::router(daemon.clone());
            tracing::info!("docker network driver on {}", p.display());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!("docker driver socket: {e}");
                }
            });
        }
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let app = server::router(daemon.clone(), shutdown.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let app = tower::ServiceExt::map_request(app, server::rewrite_version);
        axum::serve(
            api_l,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping, containers keep running"),
                _ = int.recv() => tracing::info!("SIGINT: stopping, containers keep running"),
                _ = shutdown.notified() => tracing::info!("reset done: stopping"),
            }
        })
        .await?;
        Ok(())
    });
    drop(guard);
    let _ = std::fs::remove_file(&api_path);
    if let Some(p) = &plugin_path {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(&exec_path);
    // Do not wait for exec sessions still running: their processes carry on.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

/// The agent with the real backends: netlink topology, the process runtime,
/// and the dataplane (no-op until the eBPF dataplane is wired in here).
pub fn run_default(mut cfg: AgentConfig) -> anyhow::Result<()> {
    let topo = crate::topology::netlink::NetlinkTopology::new().context("opening netlink")?;
    if cfg.uplinks.is_empty() {
        match topo.default_route_iface()? {
            Some(i) => cfg.uplinks.push(i),
            None => tracing::warn!(
                "no default route and no --uplink: published ports and masquerade have no uplink"
            ),
        }
    }
    // Containers reach the outside through the host's routing.
    if let Err(e) = crate::topology::sysctl::set("net.ipv4.ip_forward", "1") {
        tracing::warn!("net.ipv4.ip_forward: {e}");
    }
    // The eBPF dataplane plugs in here: `EbpfDataplane::new(dp_cfg)`.
    let dp_cfg = crate::dataplane::DataplaneConfig {
        bpffs_dir: cfg.bpffs_dir.clone(),
        uplinks: cfg.uplinks.clone(),
        cgroup: cfg.cgroup.clone(),
    };
    tracing::info!("dataplane: {dp_cfg:?}");
    let timeouts = crate::dataplane::CtTimeouts {
        udp: cfg.ct_udp_timeout,
        ..Default::default()
    };
    let mut ebpf = crate::dataplane::EbpfDataplane::new(dp_cfg)
        .with_ct_timeouts(timeouts)
        .with_monitor_buffer(cfg.monitor_buffer);
    // Another build of the kernel programs than the embedded one, to
    // measure builds against each other (`pier-prog-cost --variants`).
    if let Some(p) = std::env::var_os(crate::dataplane::OBJECT_FILE_ENV) {
        let obj = std::fs::read(&p).with_context(|| {
            format!(
                "{}: reading {}",
                crate::dataplane::OBJECT_FILE_ENV,
                Path::new(&p).display()
            )
        })?;
        tracing::warn!(
            "loading the eBPF object {} instead of the embedded one",
            Path::new(&p).display()
        );
        ebpf = ebpf.with_object(obj);
    }
    let dataplane: Box<dyn Dataplane> = Box::new(ebpf);
    // `--dns-upstream` wins over the host's resolv.conf (loopback servers
    // skipped, systemd-resolved's stub looked through).
    let upstream_ips = if cfg.dns_upstreams.is_empty() {
        crate::dns::system_upstreams()
    } else {
        cfg.dns_upstreams.clone()
    };
    if upstream_ips.is_empty() {
        tracing::warn!(
            "no usable DNS upstream (host resolv.conf has only loopback servers): names other than containers' get SERVFAIL; give --dns-upstream"
        );
    }
    tracing::info!("dns upstreams: {upstream_ips:?}");
    let upstreams = crate::dns::upstream_addrs(&upstream_ips);
    let dns = Arc::new(crate::dns::DnsService::new(crate::dns::ResolverConfig {
        upstreams,
        ..Default::default()
    }));
    run(
        cfg,
        Box::new(topo),
        Box::new(super::process::RuntimeRunner::default()),
        dataplane,
        Some(dns_hook(dns)),
    )
}

/// The names a container answers to on a user-defined network, as Docker's
/// `DNSNames`: its name, its short ID, then its aliases there.
pub fn dns_names(c: &crate::state::Container, e: &crate::state::Endpoint) -> Vec<String> {
    let mut v = vec![c.name.clone(), c.short_id().to_string()];
    for a in &e.aliases {
        if !v.contains(a) {
            v.push(a.clone());
        }
    }
    v
}

/// Whether pier's resolver serves the names of what `owner` made.
fn pier_names(owner: crate::state::Owner) -> bool {
    matches!(owner, crate::state::Owner::Pier | crate::state::Owner::Cni)
}

/// Publish the names of `st` to the resolver and serve 127.0.0.11:53 in the
/// namespace of every container on a user-defined network.
fn dns_hook(dns: Arc<crate::dns::DnsService>) -> NamesHook {
    use crate::dns::{MemberInput, NameSnapshot, NetworkInput};
    Box::new(move |st: &crate::state::State| {
        let nets: Vec<NetworkInput> = st
            .networks
            .values()
            // An engine's networks have the engine's DNS (Docker's 127.0.0.11);
            // CNI has none: pier serves names there as on its own.
            .filter(|n| n.is_bridge() && pier_names(n.owner))
            .map(|n| NetworkInput {
                name: n.name.clone(),
                internal: n.internal,
                names: !n.default,
                // A stopped container has no name (Docker removes its
                // endpoint from the resolver until it starts again).
                members: st
                    .containers
                    .values()
                    .filter(|c| c.running)
                    .filter_map(|c| {
                        let e = c.endpoint_on(&n.id)?;
                        // Without names (the default bridge) a member is
                        // only an asker: its names and addresses go unused.
                        if n.default {
                            return Some(MemberInput {
                                container_id: c.id.clone(),
                                name: String::new(),
                                aliases: Vec::new(),
                                ips: Vec::new(),
                            });
                        }
                        Some(MemberInput {
                            container_id: c.id.clone(),
                            name: c.name.clone(),
                            // The name comes first in dns_names; the rest
                            // (short ID, aliases) are aliases to the table.
                            aliases: dns_names(c, e).split_off(1),
                            ips: e
                                .ip
                                .map(std::net::IpAddr::V4)
                                .into_iter()
                                .chain(e.ip6.map(std::net::IpAddr::V6))
                                .collect(),
                        })
                    })
                    .collect(),
            })
            .collect();
        let mut snap = NameSnapshot::new(&nets);
        // `pier run --dns`: that container's own upstreams.
        for c in st.containers.values().filter(|c| !c.dns.is_empty()) {
            snap = snap.with_upstreams(&c.id, crate::dns::upstream_addrs(&c.dns));
        }
        dns.publish(snap);
        let want: std::collections::BTreeMap<&str, &std::path::Path> = st
            .containers
            .values()
            .filter(|c| {
                pier_names(c.owner)
                    && c.endpoints
                        .iter()
                        .any(|e| st.networks.get(&e.network_id).is_some_and(|n| !n.default))
            })
            .filter_map(|c| Some((c.id.as_str(), c.netns.as_deref()?)))
            .collect();
        for id in dns.served() {
            if !want.contains_key(id.as_str()) {
                dns.stop(&id);
            }
        }
        for (id, ns) in want {
            if let Err(e) = dns.start(id, ns) {
                tracing::warn!("dns for {id}: {e}");
            }
        }
    })
}
