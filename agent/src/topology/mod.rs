//! Kernel topology: bridges, veth pairs, network namespaces, addresses, routes.
//!
//! Everything goes through netlink (rtnetlink) and syscalls, never `ip`.
//! Methods are blocking: the daemon calls them from `spawn_blocking`. A netlink
//! socket belongs to the namespace it was opened in, so work inside a container
//! namespace opens its socket on a thread that has joined that namespace.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{Ipv4Net, Ipv6Net};

pub mod netlink;
pub mod netns;
pub mod sysctl;
mod worker;

pub use netlink::NetlinkTopology;

/// A bridge pier owns (the default `pier0`-style bridge or a user network's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// Gateway address, put on the bridge with the subnet's prefix length
    /// (`None`: a network without IPv4).
    pub gateway: Option<Ipv4Addr>,
    pub subnet: Option<Ipv4Net>,
    /// Dual stack: the IPv6 gateway with the subnet's prefix length (no
    /// duplicate address detection: pier owns the subnet).
    pub gateway6: Option<Ipv6Net>,
    pub mtu: Option<u32>,
}

/// One container interface: a veth pair, host end on a bridge, peer inside the
/// container namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The container's network namespace (a bind mount under the run dir).
    pub netns: PathBuf,
    /// Host-side veth name (≤15 bytes, unique on the host).
    pub host_ifname: String,
    /// Name inside the container: `eth0`, `eth1`, ...
    pub ifname: String,
    /// Bridge to enslave the host end to.
    pub bridge: String,
    /// `None` on a network without IPv4.
    pub address: Option<Ipv4Net>,
    /// Dual stack: the IPv6 address (no DAD) and, with `default_gateway`,
    /// the IPv6 default route via `default_gateway6`.
    pub address6: Option<Ipv6Net>,
    pub mac: [u8; 6],
    /// Install a default route via this gateway (the first network only).
    pub default_gateway: Option<Ipv4Addr>,
    pub default_gateway6: Option<Ipv6Addr>,
    /// The default routes' metric (netavark's `metric`, 100 by default
    /// there); `None`: the kernel's (0).
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    /// The engine moves the container end itself (Docker's Join): make it in
    /// the host namespace under this name, with the MAC and MTU but no
    /// address or route (the engine sets those); `netns` and `ifname` are
    /// then not used.
    pub engine_peer: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("netlink: {op}: {msg}")]
    Netlink { op: String, msg: String },
    #[error("{op}: {source}")]
    Os {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TopologyError> = std::result::Result<T, E>;

/// What the agent needs from the kernel's topology.
pub trait Topology: Send + Sync {
    /// Create the bridge (or adopt an existing one of that name), set its
    /// gateway address and MTU, bring it up. Idempotent. Returns its ifindex.
    fn ensure_bridge(&self, bridge: &BridgeSpec) -> Result<u32>;
    /// Remove a bridge; absent is not an error.
    fn remove_bridge(&self, name: &str) -> Result<()>;
    /// Create a network namespace bind-mounted at `path` with `lo` up.
    fn create_netns(&self, path: &std::path::Path) -> Result<()>;
    /// Unmount and remove a namespace's bind mount; absent is not an error.
    fn remove_netns(&self, path: &std::path::Path) -> Result<()>;
    /// Create the veth pair and configure both ends. On error nothing is left.
    fn add_endpoint(&self, ep: &EndpointSpec) -> Result<()>;
    /// Remove the veth pair (deleting the host end removes both); absent is not an error.
    fn remove_endpoint(&self, ep: &EndpointSpec) -> Result<()>;
    /// Names of the host's interfaces (for reconcile: find pier-made leftovers).
    fn host_links(&self) -> Result<Vec<String>>;
    /// IPv4 subnets routed in the host namespace (to skip when picking a subnet).
    fn routed_subnets(&self) -> Result<Vec<Ipv4Net>>;
    /// IPv6 subnets routed in the host namespace, but the default route,
    /// link-local and multicast ones.
    fn routed_subnets6(&self) -> Result<Vec<Ipv6Net>> {
        Ok(Vec::new())
    }
    /// The interface of the host's default route, if any.
    fn default_route_iface(&self) -> Result<Option<String>>;
    /// In the namespace at `netns`, make the default route go via `gateway`
    /// out of `ifname` (replacing any other default route).
    fn set_default_route(
        &self,
        netns: &std::path::Path,
        ifname: &str,
        gateway: std::net::Ipv4Addr,
    ) -> Result<()>;
    /// The same for IPv6 (dual-stack networks).
    fn set_default_route6(
        &self,
        _netns: &std::path::Path,
        _ifname: &str,
        _gateway: Ipv6Addr,
    ) -> Result<()> {
        Ok(())
    }
}
