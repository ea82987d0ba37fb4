//! What the agent records: networks, containers, endpoints, port bindings
//! (`model`), and the on-disk transactional store with its lock (`store`).
pub mod model;
pub mod store;

pub use model::*;
pub use store::Store;
