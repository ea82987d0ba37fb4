//! The name table: an immutable snapshot of who is called what on which network,
//! built by the agent from its store after every change and published to the
//! resolver in one atomic swap. All matching rules live here, free of I/O.
//!
//! Docker's rules, as pier applies them:
//! - A container is found as `NAME`, as `ALIAS` (`--alias`, `network connect
//!   --alias`) and as either of those followed by `.NETWORK`.
//! - Only networks that the asking container is attached to (and that have
//!   names enabled: user-defined networks, not the default bridge) are searched,
//!   in the order the asker joined them; the first network that knows the name
//!   answers, with that network's addresses.
//! - A name that pier knows on some network the asker is not on is answered
//!   NXDOMAIN (it is neither leaked to the upstreams nor answered).
//! - Several containers with one alias: every address, in an order that rotates
//!   with each query (round robin) from a base order shuffled when the snapshot
//!   is built.
//! - Reverse lookups of container addresses give `NAME.NETWORK`, as Docker does.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicUsize, Ordering},
};

use rand::seq::SliceRandom;

/// One network as the agent's store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInput {
    pub name: String,
    /// `--internal`: nothing is forwarded for containers attached only to
    /// internal networks.
    pub internal: bool,
    /// Whether names are served on this network: `true` for user-defined
    /// networks, `false` for the default bridge (its containers only know each
    /// other through `--link`, which is `/etc/hosts`, not DNS).
    pub names: bool,
    pub members: Vec<MemberInput>,
}

/// One container attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInput {
    pub container_id: String,
    /// The container's name (without a leading `/`).
    pub name: String,
    /// Aliases on this network (`--alias`, `network connect --alias`, and the
    /// short container ID if the agent wants it resolvable, as Docker does).
    pub aliases: Vec<String>,
    /// The container's addresses on this network (IPv4 and/or IPv6).
    pub ips: Vec<IpAddr>,
}

/// What a lookup of a name found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name belongs to a network the asker shares: these addresses, already
    /// in this query's round-robin order (either list may be empty).
    Found {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
        /// Network that answered.
        network: &'a str,
    },
    /// pier knows the name, but not on any network the asker is on.
    NxDomain,
    /// Not a name pier knows: forward it (if the asker may).
    NotLocal,
}

/// What a reverse lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reverse {
    /// `NAME.NETWORK` (lowercase, no trailing dot).
    Found(String),
    /// A container address, but not on a network the asker shares.
    NxDomain,
    NotLocal,
}

/// One name on one network.
#[derive(Debug, Default)]
struct Entry {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    /// Round-robin position, shared by all askers of this snapshot.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Network {
    name: String,
    names: bool,
}

/// What the resolver knows of one asking container.
#[derive(Debug, Default)]
struct Asker {
    /// Networks with names enabled, in join order.
    name_nets: Vec<u32>,
    /// At least one attached network is not internal.
    may_forward: bool,
    /// `pier run --dns`: this container's own upstreams.
    upstreams: Option<Vec<SocketAddr>>,
}

/// An immutable name table. Build one with [`NameSnapshot::new`], publish it
/// with [`crate::dns::Resolver::publish`].
#[derive(Debug, Default)]
pub struct NameSnapshot {
    networks: Vec<Network>,
    net_by_name: HashMap<String, u32>,
    /// Lowercase name or alias → (network, entry), one per network.
    names: HashMap<String, Vec<(u32, Entry)>>,
    /// Address → (network, `NAME.NETWORK`).
    ptr: HashMap<IpAddr, Vec<(u32, String)>>,
    askers: HashMap<String, Asker>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl NameSnapshot {
    /// Build the table from the store's networks. Names and aliases match
    /// case-insensitively; empty ones are ignored; duplicate addresses under
    /// one name on one network are kept once.
    pub fn new(networks: &[NetworkInput]) -> Self {
        let mut snap = NameSnapshot::default();
        let mut rng = rand::rng();
        for (idx, net) in networks.iter().enumerate() {
            let idx = idx as u32;
            let net_name = normalize(&net.name);
            snap.networks.push(Network {
                name: net_name.clone(),
                names: net.names,
            });
            snap.net_by_name.entry(net_name.clone()).or_insert(idx);
            for m in &net.members {
                let asker = snap.askers.entry(m.container_id.clone()).or_default();
                asker.may_forward |= !net.internal;
                if net.names && !asker.name_nets.contains(&idx) {
                    asker.name_nets.push(idx);
                }
                if !net.names {
                    continue;
                }
                let cname = normalize(&m.name);
                let mut keys: Vec<String> = Vec::with_capacity(1 + m.aliases.len());
                for k in std::iter::once(&m.name).chain(&m.aliases) {
                    let k = normalize(k);
                    if !k.is_empty() && !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                for k in keys {
                    let per_net = snap.names.entry(k).or_default();
                    let pos = match per_net.iter().position(|(n, _)| *n == idx) {
                        Some(p) => p,
                        None => {
                            per_net.push((idx, Entry::default()));
                            per_net.len() - 1
                        }
                    };
                    let e = &mut per_net[pos].1;
                    for ip in &m.ips {
                        match ip {
                            IpAddr::V4(a) if !e.v4.contains(a) => e.v4.push(*a),
                            IpAddr::V6(a) if !e.v6.contains(a) => e.v6.push(*a),
                            _ => {}
                        }
                    }
                }
                if !cname.is_empty() {
                    for ip in &m.ips {
                        let v = snap.ptr.entry(*ip).or_default();
                        if !v.iter().any(|(n, _)| *n == idx) {
                            v.push((idx, format!("{cname}.{net_name}")));
                        }
                    }
                }
            }
        }
        // Docker shuffles answers; rotation then walks that shuffled order.
        for per_net in snap.names.values_mut() {
            for (_, e) in per_net.iter_mut() {
                e.v4.shuffle(&mut rng);
                e.v6.shuffle(&mut rng);
            }
        }
        snap
    }

    /// Give `container_id` its own upstream resolvers (`pier run --dns`),
    /// used instead of the resolver's defaults. At most three are used.
    pub fn with_upstreams(mut self, container_id: &str, upstreams: Vec<SocketAddr>) -> Self {
        self.askers
            .entry(container_id.to_string())
            .or_default()
            .upstreams = Some(upstreams);
        self
    }

    /// Whether the table knows `container_id` (it is on at least one network).
    pub fn knows(&self, container_id: &str) -> bool {
        self.askers
            .get(container_id)
            .is_some_and(|a| a.may_forward || !a.name_nets.is_empty())
    }

    /// Whether `container_id`'s non-local queries may be forwarded: it is on
    /// at least one network that is not `--internal`.
    pub fn may_forward(&self, container_id: &str) -> bool {
        self.askers.get(container_id).is_some_and(|a| a.may_forward)
    }

    /// The container's own upstreams, if it has any.
    pub fn upstreams_of(&self, container_id: &str) -> Option<&[SocketAddr]> {
        self.askers.get(container_id)?.upstreams.as_deref()
    }

    /// Number of distinct names and aliases in the table.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Resolve `qname` (any case, trailing dot or not) for `asker`.
    pub fn lookup(&self, asker: &str, qname: &str) -> Lookup<'_> {
        let q = normalize(qname);
        if q.is_empty() {
            return Lookup::NotLocal;
        }
        let nets: &[u32] = self
            .askers
            .get(asker)
            .map(|a| a.name_nets.as_slice())
            .unwrap_or(&[]);
        let mut known = false;
        // `a.b.c` is tried as the name `a.b.c` on every network of the asker,
        // then as `a.b` on network `c`, then as `a` on network `b.c`.
        let mut split = q.len();
        loop {
            let (name, net_filter) = if split == q.len() {
                (q.as_str(), None)
            } else {
                let net = &q[split + 1..];
                match self.net_by_name.get(net) {
                    Some(&n) if self.networks[n as usize].names => (&q[..split], Some(n)),
                    _ => ("", None),
                }
            };
            if !name.is_empty()
                && let Some(per_net) = self.names.get(name)
            {
                for &n in nets {
                    if net_filter.is_some_and(|f| f != n) {
                        continue;
                    }
                    if let Some((_, e)) = per_net.iter().find(|(pn, _)| *pn == n) {
                        let turn = e.next.fetch_add(1, Ordering::Relaxed);
                        return Lookup::Found {
                            v4: rotated(&e.v4, turn),
                            v6: rotated(&e.v6, turn),
                            network: &self.networks[n as usize].name,
                        };
                    }
                }
                known |= match net_filter {
                    None => true,
                    Some(f) => per_net.iter().any(|(pn, _)| *pn == f),
                };
            }
            match q[..split].rfind('.') {
                Some(i) => split = i,
                None => break,
            }
        }
        if known {
            Lookup::NxDomain
        } else {
            Lookup::NotLocal
        }
    }

    /// Reverse-resolve `ip` for `asker`.
    pub fn reverse(&self, asker: &str, ip: IpAddr) -> Reverse {
        let Some(v) = self.ptr.get(&ip) else {
            return Reverse::NotLocal;
        };
        if let Some(a) = self.askers.get(asker) {
            for &n in &a.name_nets {
                if let Some((_, name)) = v.iter().find(|(pn, _)| *pn == n) {
                    return Reverse::Found(name.clone());
                }
            }
        }
        Reverse::NxDomain
    }
}

fn rotated<T: Copy>(v: &[T], turn: usize) -> Vec<T> {
    if v.is_empty() {
        return Vec::new();
    }
    let k = turn % v.len();
    v[k..].iter().chain(&v[..k]).copied().collect()
}

/// Convenience for tests and the benchmark: the set of addresses in a lookup.
pub fn addr_set(l: &Lookup<'_>) -> HashSet<IpAddr> {
    match l {
        Lookup::Found { v4, v6, .. } => v4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(v6.iter().map(|a| IpAddr::V6(*a)))
            .collect(),
        _ => HashSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, name: &str, aliases: &[&str], ip: &str) -> MemberInput {
        MemberInput {
            container_id: id.into(),
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ips: vec![ip.parse().unwrap()],
        }
    }

    fn net(name: &str, internal: bool, members: Vec<MemberInput>) -> NetworkInput {
        NetworkInput {
            name: name.into(),
            internal,
            names: true,
            members,
        }
    }

    fn v4(l: &Lookup<'_>) -> Vec<Ipv4Addr> {
        match l {
            Lookup::Found { v4, .. } => v4.clone(),
            other => panic!("expected Found, got {other:?}"),
        }
    }

    /// c1, c2 on mynet; c3 on other; c1 also on other (second address).
    fn world() -> NameSnapshot {
        NameSnapshot::new(&[
            NetworkInput {
                name: "bridge".into(),
                internal: false,
                names: false,
                members: vec![m("id0", "c0", &[], "172.17.0.2")],
            },
            net(
                "mynet",
                false,
                vec![
                    m("id1", "c1", &["web"], "172.18.0.2"),
                    m("id2", "c2", &["db", "Web"], "172.18.0.3"),
                ],
            ),
            net(
                "other",
                false,
                vec![
                    m("id3", "c3", &["cache"], "172.19.0.2"),
                    m("id1", "c1", &[], "172.19.0.3"),
                ],
            ),
        ])
    }

    #[test]
    fn names_and_name_dot_network_resolve_on_shared_networks() {
        let s = world();
        assert_eq!(
            v4(&s.lookup("id1", "c2")),
            ["172.18.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            v4(&s.lookup("id1", "C2.MyNet.")),
            ["172.18.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            v4(&s.lookup("id1", "db")),
            ["172.18.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            v4(&s.lookup("id1", "db.mynet")),
            ["172.18.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        // c1 is on both: c3 is found through `other`.
        assert_eq!(
            v4(&s.lookup("id1", "c3")),
            ["172.19.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        // The asker's own name, on the first network it joined.
        assert_eq!(
            v4(&s.lookup("id1", "c1")),
            ["172.18.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        // `c1.other` picks the address on `other`.
        assert_eq!(
            v4(&s.lookup("id3", "c1.other")),
            ["172.19.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        match s.lookup("id1", "c2") {
            Lookup::Found { network, .. } => assert_eq!(network, "mynet"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_on_networks_the_asker_is_not_on_are_nxdomain() {
        let s = world();
        // c3 is on `other` only; c2 is on `mynet` only.
        assert_eq!(s.lookup("id2", "c3"), Lookup::NxDomain);
        assert_eq!(s.lookup("id2", "cache"), Lookup::NxDomain);
        assert_eq!(s.lookup("id2", "c3.other"), Lookup::NxDomain);
        assert_eq!(s.lookup("id3", "c2"), Lookup::NxDomain);
        // c1 is on `other`, but the name qualified by a network c1 isn't on.
        assert_eq!(s.lookup("id3", "c1.mynet"), Lookup::NxDomain);
        // A known name qualified by a network it is not on is not a pier
        // name (Docker forwards it too).
        assert_eq!(s.lookup("id1", "c3.mynet"), Lookup::NotLocal);
    }

    #[test]
    fn default_bridge_names_are_not_served_and_other_names_are_not_local() {
        let s = world();
        assert_eq!(s.lookup("id1", "c0"), Lookup::NotLocal);
        assert_eq!(s.lookup("id0", "c1"), Lookup::NxDomain);
        assert_eq!(s.lookup("id1", "example.com"), Lookup::NotLocal);
        assert_eq!(s.lookup("id1", "nosuch.mynet"), Lookup::NotLocal);
        assert_eq!(s.lookup("id1", ""), Lookup::NotLocal);
        assert_eq!(s.lookup("id1", "."), Lookup::NotLocal);
        assert_eq!(s.lookup("unknown", "c1"), Lookup::NxDomain);
        // A network named like a TLD does not swallow the TLD's names.
        let s = NameSnapshot::new(&[net("com", false, vec![m("a", "www", &[], "10.0.0.2")])]);
        assert_eq!(s.lookup("a", "www.google.com"), Lookup::NotLocal);
        assert_eq!(
            v4(&s.lookup("a", "www.com")),
            ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn dotted_aliases_and_dotted_network_names() {
        let s = NameSnapshot::new(&[net(
            "corp.lan",
            false,
            vec![
                m("a", "api", &["api.v2"], "10.1.0.2"),
                m("b", "b", &[], "10.1.0.3"),
            ],
        )]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(v4(&s.lookup("b", "api.v2")), [ip("10.1.0.2")]);
        assert_eq!(v4(&s.lookup("b", "api.v2.corp.lan")), [ip("10.1.0.2")]);
        assert_eq!(v4(&s.lookup("b", "api.corp.lan")), [ip("10.1.0.2")]);
    }

    #[test]
    fn shared_alias_returns_every_address_in_rotating_order() {
        let s = world();
        let all: HashSet<Ipv4Addr> = ["172.18.0.2", "172.18.0.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let got = v4(&s.lookup("id2", "web"));
            assert_eq!(got.len(), 2, "duplicates or missing: {got:?}");
            assert_eq!(got.iter().copied().collect::<HashSet<_>>(), all);
            firsts.push(got[0]);
        }
        assert_ne!(firsts[0], firsts[1], "order must rotate");
        assert_eq!(firsts[0], firsts[2]);
        assert_eq!(firsts[1], firsts[3]);
    }

    #[test]
    fn rotation_visits_each_address_first_once_per_round() {
        let members: Vec<_> = (0..7)
            .map(|i| {
                m(
                    &format!("id{i}"),
                    &format!("w{i}"),
                    &["pool"],
                    &format!("10.9.0.{}", i + 2),
                )
            })
            .collect();
        let s = NameSnapshot::new(&[net("n", false, members)]);
        let mut firsts = HashSet::new();
        let mut orders = HashSet::new();
        for _ in 0..7 {
            let got = v4(&s.lookup("id0", "pool"));
            assert_eq!(got.len(), 7);
            firsts.insert(got[0]);
            orders.insert(got);
        }
        assert_eq!(firsts.len(), 7, "each address leads once in 7 queries");
        assert_eq!(orders.len(), 7);
    }

    #[test]
    fn reverse_lookups_give_name_dot_network_on_shared_networks_only() {
        let s = world();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            s.reverse("id1", ip("172.18.0.3")),
            Reverse::Found("c2.mynet".into())
        );
        assert_eq!(
            s.reverse("id3", ip("172.19.0.3")),
            Reverse::Found("c1.other".into())
        );
        assert_eq!(s.reverse("id2", ip("172.19.0.2")), Reverse::NxDomain);
        assert_eq!(s.reverse("id1", ip("8.8.8.8")), Reverse::NotLocal);
        // Default bridge addresses are not in the table.
        assert_eq!(s.reverse("id1", ip("172.17.0.2")), Reverse::NotLocal);
    }

    #[test]
    fn forwarding_policy_follows_internal_networks() {
        let s = NameSnapshot::new(&[
            net(
                "int",
                true,
                vec![m("a", "a", &[], "10.2.0.2"), m("b", "b", &[], "10.2.0.3")],
            ),
            net("ext", false, vec![m("b", "b", &[], "10.3.0.2")]),
        ])
        .with_upstreams("b", vec!["192.0.2.53:53".parse().unwrap()]);
        assert!(!s.may_forward("a"), "internal only");
        assert!(s.may_forward("b"), "also on a non-internal network");
        assert!(!s.may_forward("nobody"));
        assert!(s.knows("a") && !s.knows("nobody"));
        assert_eq!(s.upstreams_of("a"), None);
        assert_eq!(
            s.upstreams_of("b"),
            Some(&["192.0.2.53:53".parse().unwrap()][..])
        );
    }

    #[test]
    fn dual_stack_and_v6_only_members() {
        let s = NameSnapshot::new(&[net(
            "n",
            false,
            vec![
                MemberInput {
                    container_id: "a".into(),
                    name: "a".into(),
                    aliases: vec![],
                    ips: vec!["10.4.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                },
                m("b", "b", &[], "fd00::3"),
            ],
        )]);
        match s.lookup("b", "a") {
            Lookup::Found { v4, v6, .. } => {
                assert_eq!(v4, ["10.4.0.2".parse::<Ipv4Addr>().unwrap()]);
                assert_eq!(v6, ["fd00::2".parse::<Ipv6Addr>().unwrap()]);
            }
            o => panic!("{o:?}"),
        }
        match s.lookup("a", "b") {
            Lookup::Found { v4, v6, .. } => {
                assert!(v4.is_empty());
                assert_eq!(v6, ["fd00::3".parse::<Ipv6Addr>().unwrap()]);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn large_table_finds_the_last_container() {
        let members: Vec<_> = (0..10_000u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i + 2);
                m(&format!("id{i}"), &format!("c{i}"), &[], &ip.to_string())
            })
            .collect();
        let s = NameSnapshot::new(&[net("big", false, members)]);
        assert_eq!(s.len(), 10_000);
        assert_eq!(
            v4(&s.lookup("id0", "c9999")),
            [Ipv4Addr::from(0x0a00_0000 + 9999 + 2)]
        );
    }
}
