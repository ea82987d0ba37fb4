//! One DNS server per container: UDP and TCP on 127.0.0.11:53 inside the
//! container's namespace, served by the agent's tokio runtime.
//!
//! The sockets are opened on a short-lived std thread that has joined the
//! container's network namespace; a socket stays in the namespace it was made
//! in, so the runtime's threads (in the host namespace) can drive it. No
//! iptables: the server listens on the very address resolv.conf names.
use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::Path,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::{JoinHandle, JoinSet},
};

use super::{DNS_IP, DnsError, Resolver, forward::Transport, resolver::Step};

/// Queries being forwarded at once per container; more are dropped (the
/// client retries).
const MAX_INFLIGHT: usize = 256;
/// TCP connections at once per container.
const MAX_TCP_CONNS: usize = 64;
/// A TCP connection that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest UDP query read.
const UDP_BUF: usize = 4096;

/// A running server. Dropping it stops it (the sockets close once the
/// runtime has dropped the tasks); [`ServerHandle::stop`] waits for that.
pub struct ServerHandle {
    tasks: Vec<JoinHandle<()>>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl ServerHandle {
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stop serving and wait until the sockets are closed.
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Open UDP and TCP sockets on 127.0.0.11:53 inside the network namespace at
/// `netns_path` (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`) and serve
/// `asker_container_id`'s queries there until the handle is dropped.
///
/// Must be called from within a tokio runtime whose threads are in the
/// namespace that forwarding should use (the agent's host namespace). The
/// container's `lo` may still be down: queries arrive once it is up.
pub fn spawn_in_netns(
    netns_path: &Path,
    resolver: Arc<Resolver>,
    asker_container_id: &str,
) -> Result<ServerHandle, DnsError> {
    tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
    let addr = SocketAddr::from((DNS_IP, 53));
    let (udp, tcp) = open_in_netns(netns_path, addr)?;
    serve(udp, Some(tcp), resolver, asker_container_id)
}

fn open_in_netns(path: &Path, addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let path = path.to_path_buf();
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).map_err(|source| DnsError::Netns {
                path: path.clone(),
                source,
            })?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                DnsError::Setns {
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
            let bind_err = |source| DnsError::Bind {
                addr,
                path: path.clone(),
                source,
            };
            let udp = UdpSocket::bind(addr).map_err(bind_err)?;
            let tcp = TcpListener::bind(addr).map_err(bind_err)?;
            Ok((udp, tcp))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(DnsError::Setns {
                path: path.clone(),
                source: std::io::Error::other("netns thread panicked"),
            })
        })
    })
}

/// Serve `asker`'s queries on sockets that are already bound (anywhere: the
/// benchmark and unit tests use loopback in the current namespace).
pub fn serve(
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    resolver: Arc<Resolver>,
    asker: &str,
) -> Result<ServerHandle, DnsError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
    let udp_addr = udp.local_addr().map_err(DnsError::Socket)?;
    udp.set_nonblocking(true).map_err(DnsError::Socket)?;
    let mut tasks = Vec::new();
    let tcp_addr = match &tcp {
        Some(t) => Some(t.local_addr().map_err(DnsError::Socket)?),
        None => None,
    };
    if let Some(t) = &tcp {
        t.set_nonblocking(true).map_err(DnsError::Socket)?;
    }
    let _guard = rt.enter();
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(DnsError::Socket)?;
    let tcp = match tcp {
        Some(t) => Some(tokio::net::TcpListener::from_std(t).map_err(DnsError::Socket)?),
        None => None,
    };
    let asker: Arc<str> = Arc::from(asker);
    tasks.push(rt.spawn(udp_loop(Arc::new(udp), resolver.clone(), asker.clone())));
    if let Some(t) = tcp {
        tasks.push(rt.spawn(tcp_loop(t, resolver, asker)));
    }
    Ok(ServerHandle {
        tasks,
        udp_addr,
        tcp_addr,
    })
}

async fn udp_loop(sock: Arc<tokio::net::UdpSocket>, resolver: Arc<Resolver>, asker: Arc<str>) {
    // Forwarding tasks live in this set: when the loop is aborted, they go too.
    let mut inflight = JoinSet::new();
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "dns udp recv");
                continue;
            }
        };
        while inflight.try_join_next().is_some() {}
        // Local names are answered inline: no task, no allocation beyond
        // the reply.
        match resolver.decide(&asker, &buf[..n], Transport::Udp) {
            Step::Reply(r) => {
                let _ = sock.send_to(&r, peer).await;
            }
            Step::Drop => {}
            Step::Forward(job) => {
                if inflight.len() >= MAX_INFLIGHT {
                    tracing::debug!("dns: too many queries in flight, dropping one");
                    continue;
                }
                let sock = sock.clone();
                inflight.spawn(async move {
                    let r = job.run().await;
                    let _ = sock.send_to(&r, peer).await;
                });
            }
        }
    }
}

async fn tcp_loop(listener: tokio::net::TcpListener, resolver: Arc<Resolver>, asker: Arc<str>) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_TCP_CONNS {
            drop(stream);
            continue;
        }
        conns.spawn(tcp_conn(stream, resolver.clone(), asker.clone()));
    }
}

async fn tcp_conn(mut s: tokio::net::TcpStream, resolver: Arc<Resolver>, asker: Arc<str>) {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, s.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            _ => return,
        };
        let mut buf = vec![0u8; len];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = resolver.handle_tcp(&asker, &buf).await else {
            // Nothing to say to this message: close, as servers do.
            return;
        };
        let Ok(rlen) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&reply);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}
