//! The resolver plus one server per container namespace: what the agent
//! keeps for its lifetime.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use super::{DnsError, NameSnapshot, Resolver, ResolverConfig, ServerHandle, spawn_in_netns};

pub struct DnsService {
    resolver: Arc<Resolver>,
    servers: Mutex<HashMap<String, ServerHandle>>,
}

impl DnsService {
    pub fn new(config: ResolverConfig) -> Self {
        DnsService {
            resolver: Arc::new(Resolver::new(config)),
            servers: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Publish a new name table (see [`Resolver::publish`]).
    pub fn publish(&self, snapshot: NameSnapshot) {
        self.resolver.publish(snapshot);
    }

    /// Serve `container_id` on 127.0.0.11:53 inside `netns_path`, unless it
    /// is served already. Call from within the agent's runtime.
    pub fn start(&self, container_id: &str, netns_path: &Path) -> Result<(), DnsError> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if servers.contains_key(container_id) {
            return Ok(());
        }
        let h = spawn_in_netns(netns_path, self.resolver.clone(), container_id)?;
        servers.insert(container_id.to_string(), h);
        Ok(())
    }

    /// Stop serving `container_id` (no-op if it is not served). Returns
    /// whether a server was running.
    pub fn stop(&self, container_id: &str) -> bool {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container_id)
            .is_some()
    }

    /// Containers being served, sorted.
    pub fn served(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}
