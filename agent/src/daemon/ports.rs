//! Published ports seen from the daemon: `pier port`, `pier stats --ports`,
//! and the conntrack timer.
use std::net::Ipv4Addr;

use super::Daemon;
use crate::{
    api::types::{PortMapping, PortStatsRow},
    dataplane::Proto,
    error::{Result, not_found},
};

/// How often the agent retires expired conntrack and NAT entries.
pub const CT_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

fn host_ip_text(ip: Option<std::net::IpAddr>) -> String {
    ip.map(|i| i.to_string())
        .unwrap_or_else(|| Ipv4Addr::UNSPECIFIED.to_string())
}

impl Daemon {
    /// Retire expired conntrack and NAT entries (run on [`CT_GC_INTERVAL`]).
    /// The allocator's free pages go back to the kernel after each pass.
    pub fn dataplane_gc(&self) -> Result<()> {
        let r = self.lock_inner().dataplane.gc();
        crate::memory::trim();
        Ok(r?)
    }

    /// The host changed under the agent (`hostwatch`): the dataplane reads
    /// its addresses and uplinks again.
    pub fn host_changed(&self) -> Result<()> {
        Ok(self.lock_inner().dataplane.host_changed()?)
    }

    /// The ports container `key` publishes while it runs, one row per port
    /// (a range gives one row each), sorted by private port and protocol.
    pub fn container_ports(&self, key: &str) -> Result<Vec<PortMapping>> {
        let st = &self.snapshot();
        let c = st
            .find_container(key)
            .ok_or_else(|| not_found(format!("No such container: {key}")))?;
        // Like Docker: a stopped container publishes nothing.
        if !c.running || c.endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows: Vec<PortMapping> = c
            .ports
            .iter()
            .flat_map(|p| {
                c.served_host_ips(p).into_iter().flat_map(move |ip| {
                    p.pairs().map(move |(hp, cp)| PortMapping {
                        private_port: cp,
                        proto: p.proto.as_str().into(),
                        host_ip: ip.to_string(),
                        host_port: hp,
                        policy: super::policy::port_policy_text(st, c, hp, p.proto),
                    })
                })
            })
            .collect();
        // (Stable: each port's IPv4 row before its IPv6 one, as Docker.)
        rows.sort_by(|a, b| {
            (a.private_port, &a.proto, a.host_port).cmp(&(b.private_port, &b.proto, b.host_port))
        });
        Ok(rows)
    }

    /// Packets and bytes per published port, read from the dataplane's maps,
    /// with the container each port leads to; sorted by host port.
    pub fn port_stats(&self) -> Result<Vec<PortStatsRow>> {
        let stats = self.lock_inner().dataplane.port_stats()?;
        let st = self.snapshot();
        let mut rows: Vec<PortStatsRow> = stats
            .into_iter()
            .map(|s| {
                let container = st
                    .containers
                    .values()
                    .find(|c| {
                        c.running
                            && c.endpoints
                                .first()
                                .is_some_and(|e| match s.port.container_ip {
                                    std::net::IpAddr::V4(a) => e.ip == Some(a),
                                    std::net::IpAddr::V6(a) => e.ip6 == Some(a),
                                })
                    })
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                PortStatsRow {
                    container,
                    // An IPv6 row of a port on every address reads `::`.
                    host_ip: match (s.port.host_ip, s.port.container_ip) {
                        (None, std::net::IpAddr::V6(_)) => "::".into(),
                        (ip, _) => host_ip_text(ip),
                    },
                    host_port: s.port.host_port,
                    proto: match s.port.proto {
                        Proto::Tcp => "tcp",
                        Proto::Udp => "udp",
                    }
                    .into(),
                    container_ip: s.port.container_ip.to_string(),
                    container_port: s.port.container_port,
                    packets: s.packets,
                    bytes: s.bytes,
                    denied: s.denied,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.host_port, &a.proto, &a.host_ip).cmp(&(b.host_port, &b.proto, &b.host_ip))
        });
        Ok(rows)
    }
}
