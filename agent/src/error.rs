//! The agent's error type: every failure the API reports, with the HTTP status
//! it maps to. Messages are one line, meant for `Error: <message>` in the CLI.
use crate::{dataplane::DataplaneError, topology::TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is malformed or names something invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A network or container that does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what exists (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Topology(#[from] TopologyError),
    #[error("{0}")]
    Dataplane(#[from] DataplaneError),
    #[error("store: {0}")]
    Store(String),
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    /// HTTP status code of this error in the API.
    pub fn status(&self) -> u16 {
        match self {
            AgentError::Invalid(_) => 400,
            AgentError::NotFound(_) => 404,
            AgentError::Conflict(_) => 409,
            AgentError::Dataplane(DataplaneError::PortInUse(_)) => 409,
            _ => 500,
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

pub fn invalid(msg: impl Into<String>) -> AgentError {
    AgentError::Invalid(msg.into())
}

pub fn conflict(msg: impl Into<String>) -> AgentError {
    AgentError::Conflict(msg.into())
}

pub fn not_found(msg: impl Into<String>) -> AgentError {
    AgentError::NotFound(msg.into())
}

/// Errors collected by a best-effort teardown.
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<String>);

impl ErrorList {
    pub fn push(&mut self, what: &str, e: impl std::fmt::Display) {
        tracing::warn!("{what}: {e}");
        self.0.push(format!("{what}: {e}"));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for ErrorList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}
