//! pier's performance comparison: the same world built with plain routing,
//! Docker's iptables rules, netavark and pier, measured with the same clients.
//!
//! The pure parts (statistics, result records, rule and config generation)
//! are unit-tested; the rest drives namespaces and needs root.
pub mod bpfstats;
pub mod cleanup;
pub mod docker;
pub mod echo;
pub mod iptables;
pub mod load;
pub mod netavark;
pub mod peers;
pub mod pin;
pub mod progcost;
pub mod report;
pub mod results;
pub mod run;
pub mod stats;
pub mod v6;
pub mod world;
