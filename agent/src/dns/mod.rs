//! The embedded DNS resolver that containers on user-defined networks use.
//!
//! How the agent wires it in:
//! 1. One [`Resolver`] per agent, made with the default upstreams
//!    (`--dns-upstream`, else [`system_upstreams`]: the host's resolv.conf
//!    without loopback servers), see [`upstream_addrs`].
//! 2. After every change to its store, the agent builds a [`NameSnapshot`]
//!    from all its networks and members (the default bridge with
//!    `names: false`, user-defined ones with `names: true`; plus
//!    [`NameSnapshot::with_upstreams`] for `pier run --dns`) and calls
//!    [`Resolver::publish`]; the next query sees it.
//! 3. For each container namespace on a user-defined network, the agent calls
//!    [`spawn_in_netns`] (from its runtime, in the host namespace) and keeps
//!    the [`ServerHandle`] while the namespace lives; the container's
//!    resolv.conf is [`resolv_conf`]`(&[DNS_IP.into()], &search, true)`.
//!
//! [`DnsService`] bundles 1 and 3 (a resolver and a map of running servers).
//! Containers sharing a namespace (`container:NAME`) share NAME's server.
//! After an agent restart the new agent starts the servers again for the
//! containers it finds (the old sockets died with the old process).
//!
//! Wire format is hickory-proto's; the matching rules are in [`table`].
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

mod conf;
mod forward;
mod resolver;
mod server;
mod service;
pub mod table;
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests;

pub use conf::{
    host_search, host_upstreams, resolv_conf, system_upstreams, upstreams_with_resolved,
};
pub use forward::Transport;
pub use resolver::{MAX_UDP_PAYLOAD, Resolver, ResolverConfig, arpa_addr};
pub use server::{ServerHandle, serve, spawn_in_netns};
pub use service::DnsService;
pub use table::{Lookup, MemberInput, NameSnapshot, NetworkInput, Reverse};

/// The address the resolver listens on inside every container, as Docker.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// TTL of local answers, as Docker.
pub const TTL: u32 = 600;
/// Upstreams tried per query, in order.
pub const MAX_UPSTREAMS: usize = 3;

/// Upstream socket addresses (port 53) for plain resolver addresses.
pub fn upstream_addrs(ips: &[std::net::IpAddr]) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("open network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("join network namespace {}: {source}", path.display())]
    Setns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind {addr} in {}: {source}", path.display())]
    Bind {
        addr: SocketAddr,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dns socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("the DNS server must be started from within a tokio runtime")]
    NoRuntime,
}
