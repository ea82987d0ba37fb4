//! The on-disk store: redb in the state dir, guarded by an flock so that a
//! second agent on the same state dir fails at once.
//!
//! Tables: `networks` and `containers` (id → JSON record), `policies`
//! (rule id → JSON record) and `meta`.
//! [`Store::commit`] writes the difference between two [`State`]s in one
//! transaction, so the store always holds a whole state, never half of one.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::model::{Container, Network, PolicyRecord, State};
use crate::error::{AgentError, Result};

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const POLICIES: TableDefinition<u64, &[u8]> = TableDefinition::new("policies");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// redb's page cache (its default is 1 GiB, which it fills with every page
/// ever written: 3.3 MiB of resident memory at 1 000 containers). The store
/// is read whole once at start; a change writes a few records.
const STORE_CACHE: usize = 1 << 20;
const NEXT_NET_NUM: &str = "next_net_num";
const NEXT_POLICY_ID: &str = "next_policy_id";

pub struct Store {
    db: Database,
    /// Held (flock) for the store's lifetime.
    _lock: nix::fcntl::Flock<File>,
    pub dir: PathBuf,
}

fn store_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Store(e.to_string())
}

impl Store {
    /// Lock `dir` and open (or create) the database in it.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::Store(format!("creating state dir {}: {e}", dir.display())))?;
        let lock_path = dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| AgentError::Store(format!("opening {}: {e}", lock_path.display())))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                AgentError::Conflict(format!(
                    "another pier agent is using the state dir {} ({e})",
                    dir.display()
                ))
            })?;
        let db = Database::builder()
            .set_cache_size(STORE_CACHE)
            .create(dir.join("pier.redb"))
            .map_err(store_err)?;
        let s = Store {
            db,
            _lock: lock,
            dir: dir.to_path_buf(),
        };
        // Make sure the tables exist, so reads never fail on a fresh store.
        let tx = s.db.begin_write().map_err(store_err)?;
        tx.open_table(NETWORKS).map_err(store_err)?;
        tx.open_table(CONTAINERS).map_err(store_err)?;
        tx.open_table(POLICIES).map_err(store_err)?;
        tx.open_table(META).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(s)
    }

    pub fn load(&self) -> Result<State> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let mut st = State::default();
        let t = tx.open_table(NETWORKS).map_err(store_err)?;
        for row in t.iter().map_err(store_err)? {
            let (k, v) = row.map_err(store_err)?;
            let n: Network = serde_json::from_slice(v.value())
                .map_err(|e| AgentError::Store(format!("network {}: {e}", k.value())))?;
            st.networks.insert(n.id.clone(), n);
        }
        let t = tx.open_table(CONTAINERS).map_err(store_err)?;
        for row in t.iter().map_err(store_err)? {
            let (k, v) = row.map_err(store_err)?;
            let c: Container = serde_json::from_slice(v.value())
                .map_err(|e| AgentError::Store(format!("container {}: {e}", k.value())))?;
            st.containers.insert(c.id.clone(), c.into());
        }
        let t = tx.open_table(POLICIES).map_err(store_err)?;
        for row in t.iter().map_err(store_err)? {
            let (k, v) = row.map_err(store_err)?;
            let p: PolicyRecord = serde_json::from_slice(v.value())
                .map_err(|e| AgentError::Store(format!("policy {}: {e}", k.value())))?;
            st.policies.insert(p.id, p);
        }
        let t = tx.open_table(META).map_err(store_err)?;
        st.next_net_num = t
            .get(NEXT_NET_NUM)
            .map_err(store_err)?
            .map(|v| v.value() as u32)
            .unwrap_or(0);
        st.next_policy_id = t
            .get(NEXT_POLICY_ID)
            .map_err(store_err)?
            .map(|v| v.value() as u32)
            .unwrap_or(0);
        Ok(st)
    }

    /// Persist `new`, writing only what differs from `old`, in one transaction.
    ///
    /// One commit per change, at redb's default `Durability::Immediate`
    /// (the commit is on disk, fsync'd, when `commit` returns). The cheaper
    /// `Durability::None` keeps the commit in this process's memory until a
    /// later durable one: an agent killed in between would come back to a
    /// store that has forgotten a container whose namespace and veth the
    /// kernel still holds (reconcile would then remove them: a container the
    /// user was told exists would vanish). That is the disagreement the store
    /// must never have, so it is not used. Measured (release build, 100
    /// containers, `RUST_LOG=pier_agent=debug`): the commit is about 0.5 ms
    /// of a container create or remove, so there is little to win anyway.
    pub fn commit(&self, old: &State, new: &State) -> Result<()> {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut t = tx.open_table(NETWORKS).map_err(store_err)?;
            for (id, n) in &new.networks {
                if old.networks.get(id) != Some(n) {
                    let v = serde_json::to_vec(n).map_err(store_err)?;
                    t.insert(id.as_str(), v.as_slice()).map_err(store_err)?;
                }
            }
            for id in old.networks.keys() {
                if !new.networks.contains_key(id) {
                    t.remove(id.as_str()).map_err(store_err)?;
                }
            }
            let mut t = tx.open_table(CONTAINERS).map_err(store_err)?;
            for (id, c) in &new.containers {
                if old.containers.get(id) != Some(c) {
                    let v = serde_json::to_vec(c).map_err(store_err)?;
                    t.insert(id.as_str(), v.as_slice()).map_err(store_err)?;
                }
            }
            for id in old.containers.keys() {
                if !new.containers.contains_key(id) {
                    t.remove(id.as_str()).map_err(store_err)?;
                }
            }
            let mut t = tx.open_table(POLICIES).map_err(store_err)?;
            for (id, p) in &new.policies {
                if old.policies.get(id) != Some(p) {
                    let v = serde_json::to_vec(p).map_err(store_err)?;
                    t.insert(u64::from(*id), v.as_slice()).map_err(store_err)?;
                }
            }
            for id in old.policies.keys() {
                if !new.policies.contains_key(id) {
                    t.remove(u64::from(*id)).map_err(store_err)?;
                }
            }
            let mut t = tx.open_table(META).map_err(store_err)?;
            if old.next_net_num != new.next_net_num {
                t.insert(NEXT_NET_NUM, u64::from(new.next_net_num))
                    .map_err(store_err)?;
            }
            if old.next_policy_id != new.next_policy_id {
                t.insert(NEXT_POLICY_ID, u64::from(new.next_policy_id))
                    .map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pier-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn net(name: &str, num: u32) -> Network {
        Network {
            id: new_id(),
            num,
            name: name.into(),
            driver: DRIVER_BRIDGE.into(),
            created: now_rfc3339(),
            default: false,
            bridge: Some(format!("br-{name}")),
            subnet: Some("10.1.0.0/24".parse().unwrap()),
            gateway: Some("10.1.0.1".parse().unwrap()),
            ip_range: None,
            internal: false,
            icc: true,
            masquerade: true,
            mtu: None,
            options: Default::default(),
            labels: Default::default(),
            owner: Default::default(),
            subnet6: None,
            gateway6: None,
            ip_range6: None,
            pending: Default::default(),
        }
    }

    #[test]
    fn commit_and_reload_round_trip() {
        let d = tmpdir("rt");
        let mut st = State::default();
        {
            let s = Store::open(&d).unwrap();
            let a = net("a", 1);
            let b = net("b", 2);
            st.networks.insert(a.id.clone(), a.clone());
            st.networks.insert(b.id.clone(), b);
            st.next_net_num = 3;
            st.next_policy_id = 1;
            st.policies.insert(
                1,
                PolicyRecord {
                    id: 1,
                    action: PolicyAction::Deny,
                    src: "10.0.0.0/8".parse().unwrap(),
                    port: Some(8081),
                    proto: None,
                    container: None,
                    uplink: Some("uplink0".into()),
                    created: now_rfc3339(),
                },
            );
            s.commit(&State::default(), &st).unwrap();
            let mut st2 = st.clone();
            st2.networks.remove(&a.id);
            s.commit(&st, &st2).unwrap();
            st = st2;
            assert_eq!(s.load().unwrap(), st);
        }
        // Reopened after the lock is released: same content.
        let s = Store::open(&d).unwrap();
        assert_eq!(s.load().unwrap(), st);
        assert_eq!(s.load().unwrap().next_net_num, 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn second_open_fails_with_a_clear_error() {
        let d = tmpdir("lock");
        let _s = Store::open(&d).unwrap();
        let e = Store::open(&d).err().expect("second open must fail");
        assert!(
            e.to_string()
                .starts_with("another pier agent is using the state dir"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
