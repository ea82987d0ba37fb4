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
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreate {
    #[serde(default)]
    pub name: Option<String>,
    /// `bridge` (default), a network name, `host`, `none`, `container:NAME`.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreated {
    pub id: String,
    pub warnings: Vec<String>,
}

/// One row of `ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub command: String,
    pub status: String,
    pub running: bool,
    pub network_mode: String,
    pub networks: Vec<String>,
    pub ports: Vec<String>,
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
}
