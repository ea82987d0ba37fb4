//! The daemon's validated configuration (`pier agent` flags).
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/pier";
pub const DEFAULT_RUN_DIR: &str = "/run/pier";
pub const DEFAULT_SOCKET: &str = "/run/pier/pier.sock";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/pier";
pub const DEFAULT_SUBNET: &str = "172.17.0.0/16";
/// Name of the default network's bridge (Docker's `docker0`).
pub const DEFAULT_BRIDGE: &str = "pier0";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub bpffs_dir: PathBuf,
    /// Empty: the interface of the default route, found at start.
    pub uplinks: Vec<String>,
    pub default_subnet: Ipv4Net,
    /// `--default-subnet-v6`: the default bridge is dual stack with it.
    pub default_subnet6: Option<ipnet::Ipv6Net>,
    /// How often expired conntrack/NAT entries are retired.
    pub ct_gc_interval: std::time::Duration,
    /// Idle UDP flows are forgotten after this long.
    pub ct_udp_timeout: std::time::Duration,
    /// cgroup v2 directory for the dataplane's socket hooks.
    pub cgroup: Option<PathBuf>,
    /// `--dns-upstream`: resolvers used instead of the host's resolv.conf
    /// ones (by the embedded DNS and in default-bridge resolv.conf files).
    pub dns_upstreams: Vec<std::net::IpAddr>,
    /// `--docker-plugin`: serve Docker's remote network driver here.
    pub docker_plugin: Option<PathBuf>,
    /// Only engines' networks live here (netavark without an agent): no
    /// built-in `bridge` network, and pier-named links nothing records are
    /// left alone (they may be a stopped agent's).
    pub engine_only: bool,
    /// `--metrics-addr`: serve `/metrics` there.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--monitor-buffer`: bytes of the monitor's ring buffer.
    pub monitor_buffer: u32,
}

impl AgentConfig {
    pub fn new(
        state_dir: PathBuf,
        run_dir: PathBuf,
        socket: PathBuf,
        bpffs_dir: PathBuf,
        uplinks: Vec<String>,
        default_subnet: Option<&str>,
    ) -> anyhow::Result<Self> {
        let default_subnet = crate::ipam::parse_subnet(default_subnet.unwrap_or(DEFAULT_SUBNET))
            .map_err(|e| anyhow::anyhow!("--default-subnet: {e}"))?;
        for u in &uplinks {
            if !valid_ifname(u) {
                anyhow::bail!("--uplink: invalid interface name {u:?}");
            }
        }
        for (flag, p) in [
            ("--state-dir", &state_dir),
            ("--run-dir", &run_dir),
            ("--socket", &socket),
            ("--bpffs-dir", &bpffs_dir),
        ] {
            if !p.is_absolute() {
                anyhow::bail!("{flag}: {} is not an absolute path", p.display());
            }
        }
        Ok(AgentConfig {
            state_dir,
            run_dir,
            socket,
            bpffs_dir,
            uplinks,
            default_subnet,
            default_subnet6: None,
            ct_gc_interval: crate::daemon::ports::CT_GC_INTERVAL,
            ct_udp_timeout: crate::dataplane::CtTimeouts::default().udp,
            cgroup: None,
            dns_upstreams: Vec::new(),
            docker_plugin: None,
            engine_only: false,
            metrics_addr: None,
            monitor_buffer: pier_common::maps::EVENTS_BYTES,
        })
    }

    /// Where container namespaces are bind-mounted.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.netns_dir().join(container_id)
    }
    /// Per-container files: hosts, resolv.conf, hostname, log.
    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.run_dir.join("containers").join(container_id)
    }
    /// The socket `exec` and foreground `run` pass their stdio through.
    pub fn exec_socket(&self) -> PathBuf {
        exec_socket_path(&self.socket)
    }
}

/// `/run/pier/pier.sock` → `/run/pier/pier.exec.sock`.
pub fn exec_socket_path(api: &Path) -> PathBuf {
    api.with_extension("exec.sock")
}

/// A Linux interface name: 1..=15 printable ASCII bytes, no `/`, `:`, `%`
/// (which makes the kernel read it as a template), not `.`/`..`.
pub fn valid_ifname(s: &str) -> bool {
    // (`%` makes the kernel read the name as a template such as `eth%d`.)
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_socket_next_to_api_socket() {
        assert_eq!(
            exec_socket_path(Path::new("/run/pier/pier.sock")),
            PathBuf::from("/run/pier/pier.exec.sock")
        );
    }

    #[test]
    fn ifnames() {
        assert!(valid_ifname("br-0123456789ab"));
        assert!(!valid_ifname("br-0123456789abc"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("%00%ff"));
        assert!(!valid_ifname("eth%d"));
    }
}
