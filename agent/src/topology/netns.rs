//! Network namespaces as bind mounts, made without forking: a short-lived
//! thread `unshare`s a new network namespace and bind-mounts its
//! `/proc/thread-self/ns/net` onto the requested path.
//!
//! Removal unmounts and unlinks the file. Unlinking matters: the kernel then
//! detaches copies of that mount in every other mount namespace (those of
//! container processes, made while the namespace existed), so none of them
//! keeps a removed namespace alive. No shared mount point is needed.
use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

use super::{Result, TopologyError, worker::os};

/// Whether `path` is a namespace bind mount (an nsfs file).
pub fn is_netns_mount(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Run `f` on a fresh thread that has joined the network namespace bind-mounted
/// at `path`. Sockets opened there belong to that namespace.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ns =
        std::fs::File::open(path).map_err(|e| os(format!("open netns {}", path.display()), e))?;
    if !is_netns_mount(path) {
        return Err(TopologyError::Invalid(format!(
            "{} is not a network namespace",
            path.display()
        )));
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| os(format!("join netns {}", path.display()), e.into()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| TopologyError::Invalid("thread in netns panicked".into()))?
    })
}

/// A raw NETLINK_ROUTE socket of the calling thread's network namespace.
pub(crate) fn netlink_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); on success we own the returned descriptor.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A netlink socket belonging to the namespace at `path`.
pub(crate) fn netlink_socket_in(path: &Path) -> Result<OwnedFd> {
    in_netns(path, netlink_socket)?
        .map_err(|e| os(format!("netlink socket in {}", path.display()), e))
}

/// Create a network namespace bind-mounted at `path`; returns a netlink socket
/// opened inside it (for bringing `lo` up). On error nothing is left.
pub(crate) fn create(path: &Path) -> Result<OwnedFd> {
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return Err(TopologyError::Invalid(format!(
            "netns path must be absolute: {:?}",
            path
        )));
    }
    let parent = path
        .parent()
        .ok_or_else(|| TopologyError::Invalid(format!("netns path has no parent: {path:?}")))?;
    std::fs::create_dir_all(parent).map_err(|e| os(format!("create {}", parent.display()), e))?;
    if is_netns_mount(path) {
        return Err(TopologyError::Invalid(format!(
            "network namespace {} already exists",
            path.display()
        )));
    }
    // An empty file left by a crash is reused; a new one is removed on error.
    let created = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(os(format!("create {}", path.display()), e)),
    };
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| TopologyError::Invalid(format!("netns path has a NUL byte: {path:?}")))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            // Only this thread moves to the new namespace; it ends afterwards.
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| os("unshare(CLONE_NEWNET)", e.into()))?;
            let sock = netlink_socket().map_err(|e| os("netlink socket in new netns", e))?;
            // pier's networks are IPv4 only: like Docker for a network without
            // IPv6, interfaces made in the container later get no IPv6 (no
            // link-local address, no router solicitations). `lo` keeps ::1.
            // /proc/sys/net is this thread's (new) namespace's.
            match std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(os("disable IPv6 in the new netns", e));
                }
                _ => {}
            }
            mount(
                Some("/proc/thread-self/ns/net"),
                target.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                os(
                    format!("bind-mount netns onto {}", path.display()),
                    e.into(),
                )
            })?;
            Ok(sock)
        })
        .join()
        .map_err(|_| TopologyError::Invalid("netns thread panicked".into()))?
    });
    if made.is_err() && created {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmount and remove a namespace bind mount; absent is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    // Mounts may be stacked (the same path bind-mounted twice): unmount all.
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EINVAL) => break,
            Err(e) => return Err(os(format!("unmount {}", path.display()), e.into())),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(os(format!("remove {}", path.display()), e)),
    }
}
