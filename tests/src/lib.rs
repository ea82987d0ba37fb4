//! Throw-away network "hosts" built from namespaces, for root integration tests.
//!
//! A [`TestHost`] is a "host" namespace (where an agent runs) and an "outside"
//! namespace (the internet) joined by a veth pair, the uplink: `uplink0`
//! (198.18.0.1/24) in the host, `eth0` (198.18.0.2/24) outside. Addresses are
//! the same in every TestHost: they live in separate namespaces. Every name the
//! machine sees carries a unique prefix, and `Drop` removes everything, also
//! when the test panics, so tests run in parallel.
pub mod cni;
pub mod docker;
pub mod host;
pub mod net;
pub mod podman;

pub use host::{Agent, TestHost};

/// `true` when we may build namespaces. Tests call [`require_root!`] first.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skip (return from) the test with a note when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("skipped: needs root (run `cargo xtask test` as root)");
            return;
        }
    };
}
