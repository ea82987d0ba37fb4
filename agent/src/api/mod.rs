//! The HTTP/1.1 JSON API on the unix socket (Docker Engine API shapes), its
//! client, and the exec side channel that carries stdio fds (SCM_RIGHTS).
pub mod client;
pub mod compat;
pub mod exec;
pub mod observe;
pub mod server;
pub mod types;
