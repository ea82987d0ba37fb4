//! The pier agent and CLI as a library, so tests and benchmarks can reuse its
//! pieces (the embedded eBPF object, the feature probe, the API types).
//!
//! Boundaries (each behind a trait with a fake/no-op implementation):
//! - `topology`: bridges, veths, namespaces, addresses, routes (netlink, syscalls).
//! - `runtime`: processes inside containers (namespaces, private /etc files).
//! - `dataplane`: the eBPF programs and their maps, driven by one `sync`.
//! - `dns`: the embedded resolver.
//! - `docker`: Docker's remote network driver, a front end of the endpoint core.
//! - `cni`: the CNI plugin (`pier-cni`) and its routes in the agent, another.
//! - `netavark`: pier as podman's `netavark` (multi-call), with or without an agent.
pub mod api;
pub mod cli;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod docker;
pub mod error;
pub mod features;
pub mod ipam;
pub mod memory;
pub mod mountns;
pub mod netavark;
pub mod observe;
pub mod runtime;
pub mod state;
pub mod topology;
