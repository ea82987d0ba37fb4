//! Request and response bodies: the contract between the CLI and the agent.
//! Field names follow Docker's Engine API where one exists.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreate {
    pub name: String,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default, rename = "IPRange")]
    pub ip_range: Option<String>,
    /// `--ipv6`: dual stack; the IPv6 pool below or the next free ULA /64.
    #[serde(default, rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// No IPv4 pool: an IPv6-only network (with `enable_ipv6`), or one
    /// without addresses (netavark's ipam `none`).
    #[serde(default, rename = "NoIPv4", skip_serializing_if = "std::ops::Not::not")]
    pub no_ipv4: bool,
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    #[serde(default, rename = "IPRange6")]
    pub ip_range6: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreated {
    pub id: String,
}

/// One row of `network ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnect {
    pub container: String,
    #[serde(default, rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
    #[serde(default, rename = "IPv6Address")]
    pub ipv6_address: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NetworkDisconnect {
    pub container: String,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pruned {
    pub networks_deleted: Vec<String>,
}

/// `POST /containers/create`: pier's own body (no images), strict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ContainerCreate {
    #[serde(default)]
    pub name: Option<String>,
    /// `bridge` (default), a network name, `host`, `none`, `container:NAME`.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// `--ip6` on a dual-stack network.
    #[serde(default)]
    pub ip6: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `NAME[:ALIAS]`.
    #[serde(default)]
    pub links: Vec<String>,
    /// `-p` specs as typed.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `--dns IP`: the container's own resolvers (Docker's `HostConfig.Dns`).
    #[serde(default)]
    pub dns: Vec<String>,
    /// Start `cmd` now with its output to the log file. When false, the
    /// client starts it through the exec socket with its own stdio.
    #[serde(default)]
    pub detach: bool,
    /// `--rm`: remove the container once its command exits or it is stopped.
    #[serde(default)]
    pub auto_remove: bool,
    /// `--expose PORT[-END][/PROTO]`: ports `-P` publishes.
    #[serde(default)]
    pub expose: Vec<String>,
    /// `-P`: publish every exposed port to an ephemeral host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--add-host NAME:IP` (`IP` may be `host-gateway`).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--mac-address` of the first network's interface.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// `--publish-allow CIDR`: only these sources reach its published ports.
    #[serde(default)]
    pub publish_allow: Vec<String>,
    /// `--dns-search DOMAIN`: resolv.conf's `search` line (`.` for none).
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option OPT`: resolv.conf's `options` line.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `-e KEY=VALUE`: the environment of the container's processes
    /// (the CLI resolves a bare `KEY` from its own environment, as Docker).
    #[serde(default)]
    pub env: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreated {
    pub id: String,
    pub warnings: Vec<String>,
}

/// API error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    /// Docker's exit code when a command could not be started (126/127).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A command that could not be started: the CLI exits with `exit_code`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CannotStart {
    pub message: String,
    pub exit_code: i32,
}

/// What the CLI sends on the exec socket, together with its fds 0, 1, 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub container: String,
    /// Empty with `main`: run the container's own command.
    pub argv: Vec<String>,
    /// Start the container's main process (foreground `pier run`).
    #[serde(default)]
    pub main: bool,
}

/// The agent's answer on the exec socket once the process has exited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// One published port of a container (`pier port`), like a row of
/// `docker port`: `8080/tcp -> 0.0.0.0:8081`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortMapping {
    pub private_port: u16,
    /// `tcp` or `udp`.
    #[serde(rename = "Type")]
    pub proto: String,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    /// The source rules that apply to the port (`allow 10.0.0.0/8`,
    /// `deny 10.1.2.3/32 (#4)`), host-wide ones included; none: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
}

/// `POST /policies/create`: one `pier policy allow|deny` rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PolicyCreate {
    /// `allow` or `deny`.
    pub action: String,
    /// The source prefixes (`10.0.0.0/8`, or an address: /32), one rule
    /// each, all made in one change (or none).
    pub sources: Vec<String>,
    /// A published host port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub proto: Option<String>,
    /// A container (name or id) whose published ports it is for.
    #[serde(default)]
    pub container: Option<String>,
    /// Only for packets arriving on this uplink (one of the agent's
    /// `--uplink` interfaces).
    #[serde(default)]
    pub uplink: Option<String>,
}

/// One row of `GET /policies` (`pier policy ls`): a rule, with where it
/// comes from (`policy`: a `pier policy` rule, `network NAME`, `container
/// NAME` for the options of those) and whom it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyRow {
    /// The rule's id (`pier policy rm ID`); 0 for rules from options.
    #[serde(rename = "ID")]
    pub id: u32,
    pub action: String,
    pub source: String,
    /// `*` or the host port.
    pub port: String,
    /// `*`, `tcp` or `udp`.
    pub proto: String,
    /// `*` or the container's name.
    pub container: String,
    /// `*` or the uplink interface.
    #[serde(default = "star")]
    pub uplink: String,
    /// `policy`, `network NAME` or `container NAME`.
    pub origin: String,
}

/// `POST /policies/prune`: the ids removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoliciesDeleted {
    pub deleted: Vec<u32>,
}

/// Packets and bytes that reached one published port (`pier stats --ports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortStatsRow {
    /// Name of the container the port leads to.
    pub container: String,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    /// `tcp` or `udp`.
    #[serde(rename = "Type")]
    pub proto: String,
    #[serde(rename = "ContainerIP")]
    pub container_ip: String,
    pub container_port: u16,
    pub packets: u64,
    pub bytes: u64,
    /// Packets its source policy dropped.
    #[serde(default)]
    pub denied: u64,
}

// ----- Docker Engine API request and response bodies -------------------------
//
// The wire shapes of `POST /networks/create`, `/networks/{id}/connect` and
// `GET /containers/json`, as the docker CLI sends and reads them. Every field
// Docker's types have is accepted (strictly: an unknown one is a 400), and
// `api::compat` turns them into the daemon's requests, refusing values pier
// does not support with a message that names the field.

/// `POST /networks/create` (Docker's `network.CreateRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NetworkCreateBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_duplicate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(
        default,
        rename = "EnableIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv4: Option<bool>,
    #[serde(
        default,
        rename = "EnableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv6: Option<bool>,
    #[serde(default, rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub config_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_from: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Ipam {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<IpamConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpamConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auxiliary_addresses: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreatedBody {
    pub id: String,
    #[serde(default)]
    pub warning: String,
}

/// `POST /networks/{id}/connect` (Docker's `NetworkConnectRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NetworkConnectBody {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_config: Option<EndpointSettings>,
}

/// Docker's `EndpointSettings`: what the docker CLI sends, zero values and
/// all; only `IPAMConfig.IPv4Address` and `Aliases` may be set for pier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EndpointSettings {
    #[serde(
        default,
        rename = "IPAMConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpamConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_priority: Option<i64>,
    #[serde(default, rename = "NetworkID", skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    #[serde(
        default,
        rename = "EndpointID",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, rename = "IPAddress", skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(
        default,
        rename = "IPPrefixLen",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_prefix_len: Option<i64>,
    #[serde(
        default,
        rename = "IPv6Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_gateway: Option<String>,
    #[serde(
        default,
        rename = "GlobalIPv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub global_ipv6_address: Option<String>,
    #[serde(
        default,
        rename = "GlobalIPv6PrefixLen",
        skip_serializing_if = "Option::is_none"
    )]
    pub global_ipv6_prefix_len: Option<i64>,
    #[serde(default, rename = "DNSNames", skip_serializing_if = "Option::is_none")]
    pub dns_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EndpointIpamConfig {
    #[serde(
        default,
        rename = "IPv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    #[serde(
        default,
        rename = "IPv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
    #[serde(
        default,
        rename = "LinkLocalIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub link_local_ips: Option<Vec<String>>,
}

/// One entry of `GET /containers/json` (Docker's `container.Summary`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerListEntry {
    pub id: String,
    /// `["/NAME"]`.
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub ports: Vec<ListPort>,
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `exited`.
    pub state: String,
    /// `Up 5 seconds`, `Exited (0) 2 minutes ago`.
    pub status: String,
    pub host_config: ListHostConfig,
    pub network_settings: ListNetworks,
    pub mounts: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPort {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    #[serde(rename = "PublicPort")]
    pub public_port: u16,
    #[serde(rename = "Type")]
    pub proto: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListHostConfig {
    pub network_mode: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListNetworks {
    /// Network name → its endpoint (Docker's `EndpointSettings` shape).
    /// The order is the container's (its first network first).
    pub networks: serde_json::Map<String, serde_json::Value>,
}

fn star() -> String {
    "*".into()
}
