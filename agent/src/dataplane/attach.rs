//! Attachments that outlive the agent. Uplink TCX links and cgroup links are
//! pinned under `<bpffs_dir>/links/`, so a restarted (or killed) agent leaves
//! the programs in place; the next start swaps in its own programs atomically
//! (`bpf_link_update`) for TC, and attach-then-unpin for cgroup hooks.
//!
//! Host-side veths use a classic netlink attachment instead (clsact qdisc and
//! a direct-action `cls_bpf` filter at a fixed priority and handle): creating
//! or releasing a TCX link waits for an RCU grace period (~12 ms on 6.18, on
//! both container create and remove), a netlink filter costs ~0.05 ms. The
//! filter holds its program, so it survives the agent without a pin; the next
//! start replaces the filter's program in place (same priority and handle, no
//! gap). An empty directory `links/nl_<prog>_<ifname>` records each one.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::programs::{
    CgroupAttachMode, CgroupSock, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
};

use super::DataplaneError;

fn err(what: impl std::fmt::Display, e: impl std::error::Error) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {}", chain(e)))
}

/// An error with its sources, `: `-separated.
fn chain(e: impl std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

pub fn links_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join("links")
}

/// Pin path of the TC link of `prog` on interface `ifname`.
pub fn tc_pin(bpffs_dir: &Path, prog: &str, ifname: &str) -> PathBuf {
    links_dir(bpffs_dir).join(format!("tc_{prog}_{ifname}"))
}

/// Record (an empty bpffs directory) of the netlink filter of `prog` on `ifname`.
pub fn nl_marker(bpffs_dir: &Path, prog: &str, ifname: &str) -> PathBuf {
    links_dir(bpffs_dir).join(format!("nl_{prog}_{ifname}"))
}

/// Priority and handle of pier's ingress filter on a host-side veth.
pub const NL_PRIORITY: u16 = 1;
pub const NL_HANDLE: u32 = 1;

fn nl_options() -> TcAttachOptions {
    TcAttachOptions::Netlink(NlOptions {
        priority: NL_PRIORITY,
        handle: TcHandle::from(NL_HANDLE),
        classid: None,
    })
}

/// Attach `prog` to `ifname`'s ingress as a direct-action `cls_bpf` filter
/// (adding the clsact qdisc if missing); a filter already there (a previous
/// run) gets its program replaced in place. Records the attachment at `marker`.
pub fn attach_tc_netlink(
    prog: &mut SchedClassifier,
    prog_name: &str,
    ifname: &str,
    marker: &Path,
) -> Result<(), DataplaneError> {
    let what = || format!("attaching {prog_name} to {ifname}");
    // A fresh qdisc has no filter yet; otherwise try the in-place replace first.
    let fresh = tc::qdisc_add_clsact(ifname).is_ok();
    let mut id = None;
    if !fresh {
        let old = SchedClassifierLink::attached(
            ifname,
            TcAttachType::Ingress,
            NL_PRIORITY,
            TcHandle::from(NL_HANDLE),
            None,
        )
        .map_err(|e| err(what(), e))?;
        id = prog.attach_to_link(old).ok();
    }
    let id = match id {
        Some(id) => id,
        None => prog
            .attach_with_options(ifname, TcAttachType::Ingress, nl_options())
            .map_err(|e| err(what(), e))?,
    };
    let link = prog.take_link(id).map_err(|e| err(what(), e))?;
    // The filter lives on the interface: dropping the handle would detach it.
    std::mem::forget(link);
    if let Err(e) = std::fs::create_dir(marker)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        detach_netlink(ifname);
        return Err(err(what(), e));
    }
    Ok(())
}

/// Remove pier's filter and the clsact qdisc from `ifname` (gone already when
/// the interface was deleted).
fn detach_netlink(ifname: &str) {
    let Ok(ifindex) = nix::net::if_::if_nametoindex(ifname) else {
        return;
    };
    if super::sys::del_clsact(ifindex).is_err()
        && let Ok(link) = SchedClassifierLink::attached(
            ifname,
            TcAttachType::Ingress,
            NL_PRIORITY,
            TcHandle::from(NL_HANDLE),
            None,
        )
    {
        drop(link);
    }
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

/// Attach a cgroup program (`CgroupSockAddr`, `CgroupSock`: the same calls,
/// different types) and hand back its link as an `FdLink`. bpf_link_create
/// takes no flags for cgroups; links are always multi.
macro_rules! cgroup_link {
    ($prog:expr, $cg:expr) => {{
        let id = $prog.attach($cg, CgroupAttachMode::Single).map_err(chain)?;
        let link = $prog.take_link(id).map_err(chain)?;
        FdLink::try_from(link).map_err(chain)
    }};
}

/// Attach a cgroup socket-address hook and pin its link; a link of a
/// previous run is removed once the new one is in place.
pub fn attach_cgroup(
    prog: &mut CgroupSockAddr,
    prog_name: &str,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), DataplaneError> {
    attach_cgroup_with(prog_name, cgroup, pin, |cg| cgroup_link!(prog, cg))
}

/// [`attach_cgroup`] for a cgroup socket hook (`sock_release`).
pub fn attach_cgroup_sock(
    prog: &mut CgroupSock,
    prog_name: &str,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), DataplaneError> {
    attach_cgroup_with(prog_name, cgroup, pin, |cg| cgroup_link!(prog, cg))
}

fn attach_cgroup_with(
    prog_name: &str,
    cgroup: &Path,
    pin: &Path,
    attach: impl FnOnce(&File) -> Result<FdLink, String>,
) -> Result<(), DataplaneError> {
    let what = || format!("attaching {prog_name} to {}", cgroup.display());
    let cg = File::open(cgroup).map_err(|e| err(what(), e))?;
    let fd = attach(&cg).map_err(|e| DataplaneError::Other(format!("{}: {e}", what())))?;
    detach_pin(pin);
    fd.pin(pin).map_err(|e| err(what(), e))?;
    Ok(())
}

/// Undo an attachment recorded under `links/`: a netlink filter record
/// (directory) or a pinned link.
pub fn detach_entry(path: &Path) -> bool {
    if path.is_dir() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(ifname) = name.as_deref().and_then(nl_ifname) {
            detach_netlink(ifname);
        }
        return std::fs::remove_dir(path).is_ok();
    }
    detach_pin(path)
}

/// The interface of a netlink filter record's file name.
pub fn nl_ifname(record: &str) -> Option<&str> {
    record
        .strip_prefix("nl_")
        .and_then(|r| r.strip_prefix(super::programs::VETH_IN))
        .and_then(|r| r.strip_prefix('_'))
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
