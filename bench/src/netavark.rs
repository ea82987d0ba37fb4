//! Input for `netavark setup|teardown NS_PATH` (the JSON Podman passes on stdin).
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::iptables::Proto;

/// Where Debian installs netavark (it is not on PATH).
pub const PATHS: &[&str] = &["/usr/lib/podman/netavark", "/usr/libexec/podman/netavark"];

/// The network every bench container joins: a bridge like Podman's default.
pub struct Network<'a> {
    pub name: &'a str,
    pub bridge: &'a str,
    pub subnet: &'a str,
    pub gateway: Ipv4Addr,
}

/// `podman run -p host:container[/proto]`; `range` > 1 publishes a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub range: u16,
    pub proto: Proto,
}

/// A 64-hex-digit id derived from `seed` (netavark wants one per container and network).
pub fn hex_id(seed: &str) -> String {
    // FNV-1a, stretched: stable and dependency-free; uniqueness within a run is all we need.
    let mut out = String::with_capacity(64);
    let mut h: u64 = 0xcbf29ce484222325;
    for round in 0u8..4 {
        for b in seed.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// Docker's MAC for a container address: 02:42 and the four address bytes.
pub fn docker_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The options for one container `name` at `ip` on `net` with `ports`.
pub fn options(net: &Network, name: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "host_ip": "",
                "container_port": p.container_port,
                "host_port": p.host_port,
                "range": p.range,
                "protocol": p.proto.as_str(),
            })
        })
        .collect();
    json!({
        "container_id": hex_id(name),
        "container_name": name,
        "port_mappings": mappings,
        "networks": {
            net.name: {
                "static_ips": [ip.to_string()],
                // Docker's rule (02:42 + the address), so that a container set
                // up again keeps its MAC and the host's neighbour entry stays right.
                "static_mac": docker_mac(ip),
                "interface_name": "eth0",
            }
        },
        "network_info": {
            net.name: {
                "name": net.name,
                "id": hex_id(net.name),
                "driver": "bridge",
                "network_interface": net.bridge,
                "subnets": [{"subnet": net.subnet, "gateway": net.gateway.to_string()}],
                "ipv6_enabled": false,
                "internal": false,
                "dns_enabled": false,
                "ipam_options": {"driver": "host-local"},
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_have_podmans_shape() {
        let net = Network {
            name: "pb",
            bridge: "podman0",
            subnet: "172.17.0.0/16",
            gateway: Ipv4Addr::new(172, 17, 0, 1),
        };
        let v = options(
            &net,
            "srv",
            Ipv4Addr::new(172, 17, 0, 2),
            &[
                PortMapping {
                    host_port: 8081,
                    container_port: 8080,
                    range: 1,
                    proto: Proto::Tcp,
                },
                PortMapping {
                    host_port: 10000,
                    container_port: 10000,
                    range: 1000,
                    proto: Proto::Udp,
                },
            ],
        );
        assert_eq!(v["container_name"], "srv");
        assert_eq!(v["container_id"].as_str().unwrap().len(), 64);
        assert_eq!(
            v["port_mappings"],
            json!([
                {"host_ip": "", "container_port": 8080, "host_port": 8081, "range": 1, "protocol": "tcp"},
                {"host_ip": "", "container_port": 10000, "host_port": 10000, "range": 1000, "protocol": "udp"}
            ])
        );
        assert_eq!(v["networks"]["pb"]["static_ips"], json!(["172.17.0.2"]));
        assert_eq!(v["networks"]["pb"]["static_mac"], "02:42:ac:11:00:02");
        let info = &v["network_info"]["pb"];
        assert_eq!(info["network_interface"], "podman0");
        assert_eq!(info["driver"], "bridge");
        assert_eq!(
            info["subnets"],
            json!([{"subnet": "172.17.0.0/16", "gateway": "172.17.0.1"}])
        );
        assert_eq!(info["id"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn ids_are_hex_stable_and_distinct() {
        let a = hex_id("srv");
        assert_eq!(a, hex_id("srv"));
        assert_ne!(a, hex_id("fill"));
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
