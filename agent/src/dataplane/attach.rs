//! Attachments that outlive the agent: TCX links and cgroup links are pinned
//! under `<bpffs_dir>/links/`, so a restarted (or killed) agent leaves the
//! programs in place; the next start swaps in its own programs atomically
//! (`bpf_link_update`) for TC, and attach-then-unpin for cgroup hooks.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
};

use super::DataplaneError;

fn err(what: impl std::fmt::Display, e: impl std::error::Error) -> DataplaneError {
    let mut msg = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    DataplaneError::Other(msg)
}

pub fn links_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join("links")
}

/// Pin path of the TC link of `prog` on interface `ifname`.
pub fn tc_pin(bpffs_dir: &Path, prog: &str, ifname: &str) -> PathBuf {
    links_dir(bpffs_dir).join(format!("tc_{prog}_{ifname}"))
}

/// Pin path of the cgroup link of `prog`.
pub fn cg_pin(bpffs_dir: &Path, prog: &str) -> PathBuf {
    links_dir(bpffs_dir).join(format!("cg_{prog}"))
}

/// Attach `prog` to `ifname`'s TC ingress (TCX), replacing the program of a
/// pinned link of a previous run when there is one, and keep the link pinned.
pub fn attach_tc(
    prog: &mut SchedClassifier,
    prog_name: &str,
    ifname: &str,
    pin: &Path,
) -> Result<(), DataplaneError> {
    let what = || format!("attaching {prog_name} to {ifname}");
    if let Ok(old) = PinnedLink::from_pin(pin) {
        let link = SchedClassifierLink::try_from(FdLink::from(old));
        if let Ok(link) = link
            && let Ok(id) = prog.attach_to_link(link)
        {
            // The link is already pinned: dropping our handle keeps it.
            let _ = prog.take_link(id);
            return Ok(());
        }
        // A link whose interface went away: start afresh.
        let _ = std::fs::remove_file(pin);
    }
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| err(what(), e))?;
    let link = prog.take_link(id).map_err(|e| err(what(), e))?;
    let fd = FdLink::try_from(link).map_err(|e| err(what(), e))?;
    fd.pin(pin).map_err(|e| err(what(), e))?;
    Ok(())
}

/// Attach a cgroup socket hook and pin its link; a link of a previous run is
/// removed once the new one is in place.
pub fn attach_cgroup(
    prog: &mut CgroupSockAddr,
    prog_name: &str,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), DataplaneError> {
    let what = || format!("attaching {prog_name} to {}", cgroup.display());
    let cg = File::open(cgroup).map_err(|e| err(what(), e))?;
    let id = prog
        // bpf_link_create takes no flags for cgroups; links are always multi.
        .attach(&cg, CgroupAttachMode::Single)
        .map_err(|e| err(what(), e))?;
    let link = prog.take_link(id).map_err(|e| err(what(), e))?;
    let fd = FdLink::try_from(link).map_err(|e| err(what(), e))?;
    detach_pin(pin);
    fd.pin(pin).map_err(|e| err(what(), e))?;
    Ok(())
}

/// Unpin a link; with its last reference gone the kernel detaches it.
pub fn detach_pin(pin: &Path) -> bool {
    match PinnedLink::from_pin(pin) {
        Ok(l) => {
            let _ = l.unpin();
            true
        }
        Err(_) => std::fs::remove_file(pin).is_ok(),
    }
}
