//! Reconcile at start: make the kernel agree with the store. Recreate what is
//! recorded and missing (bridges, namespaces, veths, files), forget processes
//! that died while no agent ran, remove pier-made leftovers nothing records.
use std::{collections::BTreeSet, path::Path};

use super::{Daemon, bridge_spec, endpoint_spec, process::Proc};
use crate::{
    config::DEFAULT_BRIDGE,
    error::{AgentError, Result},
    state::{NetMode, Owner},
    topology::{self, TopologyError},
};

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Is `p` a bind mount of a network namespace?
pub fn is_netns_mount(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FsType(NSFS_MAGIC as _))
}

/// Bind-mount the namespace at `src` onto `dst` too (`--network container:X`),
/// so it lives on while either path holds it.
pub fn share_netns(src: &Path, dst: &Path) -> Result<(), TopologyError> {
    let os = |op: &str, e: std::io::Error| TopologyError::Os {
        op: format!("{op} {}", dst.display()),
        source: e,
    };
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| os("creating the parent of", e))?;
    }
    std::fs::File::create(dst).map_err(|e| os("creating", e))?;
    nix::mount::mount(
        Some(src),
        dst,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(dst);
        os("bind-mounting a namespace onto", e.into())
    })
}

/// Is `dir` a mount point in our mount namespace?
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|p| p == want)
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Interface names only pier makes: `pier0`, `br-<12 hex>`, `veth<7 hex>`.
pub fn is_pier_bridge_name(s: &str) -> bool {
    s == DEFAULT_BRIDGE || s.strip_prefix("br-").is_some_and(|h| is_hex(h, 12))
}

pub fn is_pier_veth_name(s: &str) -> bool {
    s.strip_prefix("veth").is_some_and(|h| is_hex(h, 7))
}

impl Daemon {
    pub(crate) fn reconcile(&self) -> Result<()> {
        let before = self.snapshot();
        self.change(|txn| {
            Daemon::ensure_builtin(txn)?;
            let st = txn.state.clone();
            let topo = self.topology();
            // Leftovers first, so that their names are free.
            let bridges: BTreeSet<String> = st
                .networks
                .values()
                .filter_map(|n| n.bridge.clone())
                .collect();
            let veths: BTreeSet<String> = st
                .containers
                .values()
                .flat_map(|c| c.endpoints.iter().map(|e| e.host_ifname.clone()))
                .collect();
            let host_links = if self.cfg.engine_only {
                Vec::new()
            } else {
                topo.host_links()?
            };
            for l in host_links {
                if is_pier_bridge_name(&l) && !bridges.contains(&l) {
                    tracing::info!("removing unrecorded bridge {l}");
                    topo.remove_bridge(&l)?;
                } else if is_pier_veth_name(&l) && !veths.contains(&l) {
                    tracing::info!("removing unrecorded veth {l}");
                    topo.remove_endpoint(&topology::EndpointSpec {
                        netns: Default::default(),
                        host_ifname: l.clone(),
                        ifname: String::new(),
                        bridge: String::new(),
                        address: None,
                        address6: None,
                        mac: [0; 6],
                        default_gateway: None,
                        default_gateway6: None,
                        metric: None,
                        mtu: None,
                        engine_peer: None,
                    })?;
                }
            }
            let recorded = |name: &str| st.containers.contains_key(name);
            for (dir, is_ns) in [
                (self.cfg.netns_dir(), true),
                (self.cfg.run_dir.join("containers"), false),
            ] {
                if self.cfg.engine_only {
                    break;
                }
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for ent in rd.flatten() {
                    let name = ent.file_name().to_string_lossy().into_owned();
                    if recorded(&name) {
                        continue;
                    }
                    tracing::info!("removing unrecorded {}", ent.path().display());
                    if is_ns {
                        topo.remove_netns(&ent.path())?;
                    } else {
                        std::fs::remove_dir_all(ent.path()).map_err(|e| {
                            AgentError::Internal(format!("removing {}: {e}", ent.path().display()))
                        })?;
                    }
                }
            }
            // Recorded and missing: bridges (ensure is idempotent), namespaces, veths.
            for n in st.networks.values() {
                if let Some(b) = bridge_spec(n) {
                    topo.ensure_bridge(&b)?;
                }
            }
            let links = topo.host_links()?;
            // Owners before sharers, so a sharer can join a recreated owner.
            let mut order: Vec<_> = st.containers.values().collect();
            order.sort_by_key(|c| matches!(c.mode, NetMode::Container(_)));
            for c in order {
                // A CNI runtime (or podman, through netavark) made the
                // namespace and deletes it after DEL (teardown); gone without
                // one (lost, the host rebooted): the attachment is over.
                if matches!(c.owner, Owner::Cni | Owner::Podman)
                    && !c.netns.as_deref().is_some_and(is_netns_mount)
                {
                    tracing::info!(
                        "{}: the namespace {} of {} container {} is gone: detaching",
                        c.name,
                        c.netns.as_deref().unwrap_or(Path::new("")).display(),
                        c.owner.as_str(),
                        c.engine_id.as_deref().unwrap_or("")
                    );
                    for e in &c.endpoints {
                        Daemon::detach(txn, &c.id, &e.id, false)?;
                    }
                    txn.state.containers.remove(&c.id);
                    continue;
                }
                // An engine's sandbox is the engine's to repair: pier keeps
                // its record and veths (the dataplane skips a missing veth).
                if c.owner.is_engine() {
                    continue;
                }
                // Best effort per container: one that cannot be repaired is
                // logged, and the agent still starts for all the others.
                let repair = || -> Result<()> {
                    let mut new_ns = false;
                    if let Some(p) = &c.netns
                        && !is_netns_mount(p)
                    {
                        new_ns = true;
                        tracing::info!("recreating the namespace of {}", c.name);
                        let owner_ns = match &c.mode {
                            NetMode::Container(o) => st
                                .containers
                                .get(o)
                                .and_then(|o| o.netns.clone())
                                .filter(|p| is_netns_mount(p)),
                            _ => None,
                        };
                        match owner_ns {
                            Some(src) => share_netns(&src, p)?,
                            None => topo.create_netns(p)?,
                        }
                    }
                    for (i, e) in c.endpoints.iter().enumerate() {
                        let (Some(n), Some(p)) = (st.networks.get(&e.network_id), &c.netns) else {
                            continue;
                        };
                        let spec = endpoint_spec(p, e, n, i == 0);
                        if links.contains(&e.host_ifname) {
                            if !new_ns {
                                continue;
                            }
                            // Its peer was in the lost namespace, which the
                            // kernel tears down in the background: replace it.
                            topo.remove_endpoint(&spec)?;
                        }
                        tracing::info!("recreating {} of {}", e.ifname, c.name);
                        topo.add_endpoint(&spec)?;
                    }
                    if !self.cfg.container_dir(&c.id).join("hosts").exists()
                        && !matches!(c.mode, NetMode::Container(_))
                    {
                        self.write_files(c, &st)?;
                    }
                    Ok(())
                };
                if let Err(e) = repair() {
                    tracing::error!("reconcile: container {} ({}): {e}", c.name, c.short_id());
                }
                let cm = txn.state.containers.get_mut(&c.id).unwrap();
                if let (Some(pid), Some(start_time)) = (c.pid, c.pid_start)
                    && !self.runner.alive(Proc { pid, start_time })
                {
                    tracing::info!("{}: process {pid} is gone", c.name);
                    cm.pid = None;
                    cm.pid_start = None;
                    if !c.cmd.is_empty() {
                        cm.running = false;
                        cm.finished_ms = Some(crate::state::model::now_ms());
                    }
                }
            }
            Ok(())
        })?;
        // Whatever the dataplane held before, make it agree now.
        let mut inner = self.lock_inner();
        let desired = super::desired_state(&inner.state);
        inner.dataplane.sync(&desired)?;
        inner.desired = desired;
        let unchanged =
            inner.state.containers == before.containers && inner.state.networks == before.networks;
        drop(inner);
        // The names once at start: `change` did it if reconcile changed any.
        if unchanged {
            self.dns_changed();
        }
        // `--rm` containers whose command ended while no agent ran go now.
        let ended: Vec<(String, String)> = self
            .snapshot()
            .containers
            .values()
            .filter(|c| c.auto_remove && !c.running)
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect();
        for (id, name) in ended {
            tracing::info!("{name}: removed (--rm), its command ended");
            if let Err(e) = self.container_rm(&id, true) {
                tracing::error!("reconcile: removing {name}: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pier_names() {
        assert!(is_pier_bridge_name("pier0"));
        assert!(is_pier_bridge_name("br-0123456789ab"));
        assert!(!is_pier_bridge_name("br-0123456789aB"));
        assert!(!is_pier_bridge_name("br-lan"));
        assert!(is_pier_veth_name("veth01234ab"));
        assert!(!is_pier_veth_name("veth0"));
        assert!(!is_pier_veth_name("veth01234abc"));
        assert!(!is_pier_veth_name("uplink0"));
    }
}
