//! Loading the kernel programs and keeping their maps in sync with the store.
//!
//! The agent derives a [`DesiredState`] from its store after every change (and
//! once at start) and calls [`Dataplane::sync`]; the dataplane makes maps and
//! attachments agree with it. The same call serves a normal change and the
//! reconcile after a restart.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use ipnet::{Ipv4Net, Ipv6Net};

mod attach;
pub mod ebpf;
mod maps;
pub mod observe;
mod reserve;
pub mod sys;

pub use ebpf::{CtCounts, CtTimeouts, EbpfDataplane};
pub use observe::{IfCounters, KernelCounters, MonitorHub, Subscription};

/// Environment variable: the path of an eBPF object the agent loads instead
/// of [`EBPF_OBJECT`] (for measuring builds of the programs against each
/// other; a warning is logged).
pub const OBJECT_FILE_ENV: &str = "PIER_EBPF_OBJECT_FILE";

/// The ELF object of `dataplane-ebpf`, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PIER_EBPF_OBJECT"));

/// Names of the programs in [`EBPF_OBJECT`].
pub mod programs {
    /// TC smoke test: counts packets into `SMOKE_COUNTERS`.
    pub const SMOKE: &str = "pier_smoke";
    /// TC, never attached: the cost of one primitive (map lookup, helper)
    /// under `BPF_PROG_TEST_RUN` (`pier_common::config::PROF_OPS`).
    pub const PROF: &str = "pier_prof";
    /// TC, never attached: the dataplane's clock (`ct::now`) for the
    /// agent's conntrack gc, by `BPF_PROG_TEST_RUN`.
    pub const CLOCK: &str = "pier_clock";
    /// TC ingress of each uplink: publishing, masquerade replies, exposure.
    pub const UPLINK_IN: &str = "pier_uplink_in";
    /// TC ingress of each container's host-side veth: replies, isolation,
    /// hairpin, masquerade.
    pub const VETH_IN: &str = "pier_veth_in";
    pub const CONNECT4: &str = "pier_connect4";
    pub const SENDMSG4: &str = "pier_sendmsg4";
    pub const RECVMSG4: &str = "pier_recvmsg4";
    pub const GETPEERNAME4: &str = "pier_getpeername4";
    pub const CONNECT6: &str = "pier_connect6";
    pub const SENDMSG6: &str = "pier_sendmsg6";
    pub const RECVMSG6: &str = "pier_recvmsg6";
    pub const GETPEERNAME6: &str = "pier_getpeername6";
    /// The cgroup socket-address hooks for host-local clients, IPv4 and IPv6.
    pub const SOCK_HOOKS: [&str; 8] = [
        CONNECT4,
        SENDMSG4,
        RECVMSG4,
        GETPEERNAME4,
        CONNECT6,
        SENDMSG6,
        RECVMSG6,
        GETPEERNAME6,
    ];
    /// cgroup sock_release: forgets a closed socket's translation.
    pub const SOCK_RELEASE: &str = "pier_sock_release";
}

/// Start-up configuration of the dataplane.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Per-agent bpffs directory for pins (e.g. /sys/fs/bpf/pier).
    pub bpffs_dir: PathBuf,
    /// Uplink interfaces (published ports are served on them; masquerade leaves by them).
    pub uplinks: Vec<String>,
    /// cgroup v2 directory for the socket hooks (host-local clients).
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A network as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Small numeric id, unique among this agent's networks.
    pub id: u32,
    /// Bridge interface name.
    pub bridge: String,
    /// `None`: a network without IPv4 (IPv6 only, or no addresses).
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// `--ipv6`: the IPv6 subnet (its gateway is on the bridge too).
    pub subnet6: Option<Ipv6Net>,
    /// The IPv6 gateway (`None`: `::1` of `subnet6`), the source a
    /// container sees when it dials its own published port over IPv6.
    pub gateway6: Option<Ipv6Addr>,
    /// `--internal`: no way out, published ports not reachable.
    pub internal: bool,
    /// `com.docker.network.bridge.enable_icc` (default true).
    pub icc: bool,
    /// `com.docker.network.bridge.enable_ip_masquerade` (default true).
    pub masquerade: bool,
}

/// One container interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub network_id: u32,
    /// `None` on a network without IPv4.
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    /// Host-side veth name.
    pub host_ifname: String,
}

/// One published port (ranges are expanded by the agent). Its family is
/// the container address's: an IPv6 one goes to `PIER_PORTS6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every host address of the family.
    pub host_ip: Option<IpAddr>,
    pub proto: Proto,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    /// Hold the host port with a bound socket; `false`: the engine holds it
    /// itself (rootful podman's conmon listens on its published ports).
    pub reserve: bool,
}

impl PortSpec {
    pub fn is_v6(&self) -> bool {
        self.container_ip.is_ipv6()
    }
}

/// One source rule of a published port's policy (`PIER_POLICY`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRule {
    pub src: ipnet::IpNet,
    /// Deny (else allow) sources in `src`.
    pub deny: bool,
    /// Only for packets arriving on this uplink (an interface name); a
    /// rule whose uplink does not exist now matches nothing.
    pub uplink: Option<String>,
}

/// A published host port, as a policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRef {
    pub host_ip: Option<IpAddr>,
    pub proto: Proto,
    pub host_port: u16,
}

impl PortRef {
    pub fn of(p: &PortSpec) -> Self {
        PortRef {
            host_ip: p.host_ip,
            proto: p.proto,
            host_port: p.host_port,
        }
    }
}

/// Everything the maps and attachments must reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub networks: Vec<NetworkSpec>,
    pub endpoints: Vec<EndpointSpec>,
    pub ports: Vec<PortSpec>,
    /// Rules for every published port (`pier policy` without a port,
    /// protocol or container).
    pub host_policy: Vec<PolicyRule>,
    /// Rules for one published port each (compiled by the agent from the
    /// per-port, per-container and per-network rules that apply to it).
    pub port_policy: std::collections::BTreeMap<PortRef, Vec<PolicyRule>>,
}

/// Per published port counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStats {
    pub port: PortSpec,
    pub packets: u64,
    pub bytes: u64,
    /// Packets its source policy dropped (`PolicyDenied`).
    pub denied: u64,
}

/// What the kernel counted, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every drop reason with its packets and bytes.
    pub drops: Vec<(pier_common::drop::DropReason, pier_common::metrics::Counter)>,
    /// Entries of the conntrack and NAT maps.
    pub maps: CtCounts,
    /// The most masquerade ports in use towards one peer (address, port,
    /// protocol): the pool that can run out.
    pub nat_ports_max_peer: usize,
    pub kernel: KernelCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading program {program}: {msg} (verifier log: {log})")]
    Verifier {
        program: String,
        msg: String,
        log: String,
    },
    #[error("port is already allocated: {0}")]
    PortInUse(String),
    #[error("{0}")]
    Other(String),
}

pub trait Dataplane: Send {
    /// Load, pin (or re-open the pins of a previous run) and attach.
    fn start(&mut self) -> Result<(), DataplaneError>;
    /// Make maps, attachments and port reservations agree with `desired`.
    fn sync(&mut self, desired: &DesiredState) -> Result<(), DataplaneError>;
    /// Counters per published port.
    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError>;
    /// Retire expired conntrack and NAT entries (the agent calls it on a timer).
    fn gc(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// The host changed (an address, a link, a route): read its addresses
    /// and uplinks again and re-attach an uplink whose interface is new.
    fn host_changed(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// Counters of every veth and uplink pier attached to.
    fn if_stats(&self) -> Result<Vec<IfCounters>, DataplaneError> {
        Ok(Vec::new())
    }
    /// The monitor's event hub (`pier monitor`), when the dataplane has one.
    fn monitor(&self) -> Option<std::sync::Arc<MonitorHub>> {
        None
    }
    /// Drop counters, map fill and the kernel's event counters (metrics).
    fn observed(&self) -> Result<Observed, DataplaneError> {
        Ok(Observed::default())
    }
    /// Detach every program and remove every pin (`pier system reset`).
    fn teardown(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
}

/// A dataplane that does nothing: topology-only runs and unit tests.
#[derive(Debug, Default)]
pub struct NoopDataplane;

impl Dataplane for NoopDataplane {
    fn start(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn sync(&mut self, _desired: &DesiredState) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        Ok(Vec::new())
    }
}
