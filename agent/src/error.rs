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
    /// The container's command cannot be executed; `exit_code` is Docker's
    /// 127 (not found) or 126 (cannot be invoked).
    #[error("{message}")]
    CannotStart { message: String, exit_code: i32 },
}

impl AgentError {
    /// HTTP status code of this error in the API.
    /// The exit code `pier run`/`exec` ends with for this error, if special.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            AgentError::CannotStart { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    /// A process that did not start, as an error of `what`.
    pub fn spawn(what: &str, e: crate::daemon::process::SpawnError) -> Self {
        let message = format!("starting {what}: {e}");
        match e.exit_code {
            Some(exit_code) => AgentError::CannotStart { message, exit_code },
            None => AgentError::Internal(message),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AgentError::Invalid(_) => 400,
            AgentError::NotFound(_) => 404,
            AgentError::Conflict(_) => 409,
            AgentError::CannotStart { .. } => 400,
            AgentError::Dataplane(DataplaneError::PortInUse(_)) => 409,
            // What the topology refused as given (an interface that already
            // exists, a name the kernel will not take): the caller's, not ours.
            AgentError::Topology(TopologyError::Invalid(_)) => 400,
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

/// `err` and its causes on one line, `a: b: c`, leaving out a cause whose
/// text the line already holds (error types that print their source in their
/// own message, and wrappers such as [`AgentError`]'s, would repeat it).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_each_cause_once() {
        // A dataplane error wrapped by AgentError, then by anyhow as `pier
        // agent` does: the message once.
        let e = anyhow::Error::from(AgentError::from(DataplaneError::Other(
            "loading the eBPF object: bad".into(),
        )));
        assert_eq!(one_line(e.as_ref()), "loading the eBPF object: bad");
        // An OS error printed in its own message and kept as its source.
        let e = AgentError::from(TopologyError::Os {
            op: "open /x".into(),
            source: std::io::Error::from_raw_os_error(2),
        });
        assert_eq!(
            one_line(&e),
            "open /x: No such file or directory (os error 2)"
        );
        // Context that adds something is kept, in order.
        let e =
            anyhow::Error::from(std::io::Error::from_raw_os_error(13)).context("--state-dir /y");
        assert_eq!(
            one_line(e.as_ref()),
            "--state-dir /y: Permission denied (os error 13)"
        );
    }
}
