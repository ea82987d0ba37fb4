//! Who may reach a published port: `pier policy` rules, a network's
//! `pier.publish.allow` and a container's `--publish-allow`, all kept in the
//! store and compiled into `PIER_POLICY` by `desired_state` (so every front
//! end's published ports obey them).
use super::Daemon;
use crate::{
    api::types::{PolicyCreate, PolicyRow},
    error::{Result, invalid, not_found},
    state::{
        Container, PolicyAction, PolicyRecord, PortProto, State, now_rfc3339, opts, parse_cidr,
        parse_cidr_list,
    },
};

/// The most `pier policy` rules the store takes (the map holds 65536
/// entries, shared with the per-port compiled ones).
pub const MAX_POLICIES: usize = 32768;

fn action_of(s: &str) -> Result<PolicyAction> {
    match s {
        "allow" => Ok(PolicyAction::Allow),
        "deny" => Ok(PolicyAction::Deny),
        o => Err(invalid(format!(
            "invalid policy action {o:?}: allow or deny"
        ))),
    }
}

fn proto_of(s: &str) -> Result<PortProto> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProto::Tcp),
        "udp" => Ok(PortProto::Udp),
        _ => Err(invalid(format!("invalid protocol {s:?}: tcp or udp"))),
    }
}

/// Whether container `c` publishes host port `port` (of `proto`, if given).
fn publishes(c: &Container, port: u16, proto: Option<PortProto>) -> bool {
    c.ports.iter().any(|b| {
        proto.is_none_or(|p| p == b.proto) && (b.host_port..=b.host_port_end).contains(&port)
    })
}

/// One line per rule that applies to host port `port`/`proto` of `c`, as
/// `pier port` shows them; empty: no policy, anyone may reach it.
pub fn port_policy_text(st: &State, c: &Container, port: u16, proto: PortProto) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = c
        .ports_endpoint()
        .and_then(|e| st.networks.get(&e.network_id))
        && let Some(v) = n.options.get(opts::PUBLISH_ALLOW)
    {
        for src in parse_cidr_list(v).unwrap_or_default() {
            out.push(format!("allow {src} (network {})", n.name));
        }
    }
    for src in &c.publish_allow {
        out.push(format!("allow {src} (--publish-allow)"));
    }
    for r in st
        .policies
        .values()
        .filter(|r| r.applies(&c.id, port, proto))
    {
        match &r.uplink {
            None => out.push(format!("{} {} (#{})", r.action.as_str(), r.src, r.id)),
            Some(u) => out.push(format!(
                "{} {} on uplink {u} (#{})",
                r.action.as_str(),
                r.src,
                r.id
            )),
        }
    }
    out
}

impl Daemon {
    /// `pier policy allow|deny`: one rule per source, validated whole, then
    /// one change; the new rules' ids.
    pub fn policy_create(&self, req: PolicyCreate) -> Result<Vec<u32>> {
        let action = action_of(&req.action)?;
        if req.sources.is_empty() {
            return Err(invalid("a source CIDR is needed"));
        }
        let mut srcs = Vec::with_capacity(req.sources.len());
        let mut seen = std::collections::BTreeSet::new();
        for s in &req.sources {
            let n = parse_cidr(s).map_err(invalid)?;
            if !seen.insert(n) {
                return Err(invalid(format!("{n} is given twice")));
            }
            srcs.push(n);
        }
        if req.port == Some(0) {
            return Err(invalid("invalid port 0: 1 to 65535"));
        }
        let proto = req.proto.as_deref().map(proto_of).transpose()?;
        if let Some(u) = &req.uplink
            && !self.cfg.uplinks.iter().any(|x| x == u)
        {
            return Err(invalid(format!(
                "{u:?} is not one of the agent's uplinks ({})",
                self.cfg.uplinks.join(", ")
            )));
        }
        self.change(|txn| {
            let container = match &req.container {
                None => None,
                Some(key) => {
                    let c = txn
                        .state
                        .find_container(key)
                        .ok_or_else(|| not_found(format!("No such container: {key}")))?;
                    if let Some(p) = req.port
                        && !publishes(c, p, proto)
                    {
                        return Err(invalid(format!(
                            "container {} does not publish port {p}{}",
                            c.name,
                            proto
                                .map(|p| format!("/{}", p.as_str()))
                                .unwrap_or_default()
                        )));
                    }
                    Some(c.id.clone())
                }
            };
            if let Some(same) = txn.state.policies.values().find(|r| {
                r.action == action
                    && seen.contains(&r.src)
                    && r.port == req.port
                    && r.proto == proto
                    && r.container == container
                    && r.uplink == req.uplink
            }) {
                return Err(crate::error::conflict(format!(
                    "the same rule exists already (ID {})",
                    same.id
                )));
            }
            if txn.state.policies.len() + srcs.len() > MAX_POLICIES {
                return Err(crate::error::conflict(format!(
                    "too many policy rules (at most {MAX_POLICIES})"
                )));
            }
            let created = now_rfc3339();
            let mut ids = Vec::with_capacity(srcs.len());
            for src in &srcs {
                txn.state.next_policy_id += 1;
                let id = txn.state.next_policy_id;
                txn.state.policies.insert(
                    id,
                    PolicyRecord {
                        id,
                        action,
                        src: *src,
                        port: req.port,
                        proto,
                        container: container.clone(),
                        uplink: req.uplink.clone(),
                        created: created.clone(),
                    },
                );
                ids.push(id);
            }
            Ok(ids)
        })
    }

    /// `pier policy rm ID`.
    pub fn policy_rm(&self, key: &str) -> Result<()> {
        let id: u32 = key.parse().map_err(|_| {
            invalid(format!(
                "invalid policy ID {key:?}: a number from `pier policy ls`"
            ))
        })?;
        self.change(|txn| {
            txn.state
                .policies
                .remove(&id)
                .map(|_| ())
                .ok_or_else(|| not_found(format!("No such policy rule: {id}")))
        })
    }

    /// `pier policy rm --all`: every `pier policy` rule (options stay).
    pub fn policy_prune(&self) -> Result<Vec<u32>> {
        self.change(|txn| {
            let ids = txn.state.policies.keys().copied().collect();
            txn.state.policies.clear();
            Ok(ids)
        })
    }

    /// Every rule: `pier policy` ones by id, then those from networks'
    /// `pier.publish.allow` and containers' `--publish-allow`.
    pub fn policy_list(&self) -> Vec<PolicyRow> {
        let st = self.snapshot();
        let star = |o: Option<String>| o.unwrap_or_else(|| "*".into());
        let mut rows: Vec<PolicyRow> = st
            .policies
            .values()
            .map(|r| PolicyRow {
                id: r.id,
                action: r.action.as_str().into(),
                source: r.src.to_string(),
                port: star(r.port.map(|p| p.to_string())),
                proto: star(r.proto.map(|p| p.as_str().to_string())),
                container: star(r.container.as_ref().map(|id| {
                    st.containers
                        .get(id)
                        .map(|c| c.name.clone())
                        .unwrap_or_else(|| id[..12.min(id.len())].to_string())
                })),
                uplink: star(r.uplink.clone()),
                origin: "policy".into(),
            })
            .collect();
        for n in st.networks.values() {
            if let Some(v) = n.options.get(opts::PUBLISH_ALLOW) {
                for src in parse_cidr_list(v).unwrap_or_default() {
                    rows.push(PolicyRow {
                        id: 0,
                        action: "allow".into(),
                        source: src.to_string(),
                        port: "*".into(),
                        proto: "*".into(),
                        container: "*".into(),
                        uplink: "*".into(),
                        origin: format!("network {}", n.name),
                    });
                }
            }
        }
        for c in st.containers.values() {
            for src in &c.publish_allow {
                rows.push(PolicyRow {
                    id: 0,
                    action: "allow".into(),
                    source: src.to_string(),
                    port: "*".into(),
                    proto: "*".into(),
                    container: c.name.clone(),
                    uplink: "*".into(),
                    origin: format!("container {}", c.name),
                });
            }
        }
        rows
    }
}
