//! Follow the host: the agent's namespace's rtnetlink multicast groups
//! (links, IPv4 addresses, IPv4 routes). Any message, or an overrun of the
//! socket, means the host may have changed: once the messages pause for
//! [`QUIET`] (a change is often several), the dataplane reads the host
//! again (`Dataplane::host_changed`: host addresses, the masquerade source,
//! uplinks re-attached when their interface was re-created).
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Daemon;

/// How long the messages must pause before the host is read again.
pub const QUIET: Duration = Duration::from_millis(20);
/// The longest a burst of messages delays the read.
const MAX_DELAY: Duration = Duration::from_millis(200);

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// A netlink socket subscribed to the link, IPv4 and IPv6 address and IPv4
/// route groups of the calling thread's namespace (IPv6 addresses: the
/// published and masquerade addresses of IPv6).
pub fn open() -> io::Result<OwnedFd> {
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE;
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Wait up to `timeout` (`None`: for ever) for messages and read all that
/// are queued. `Ok(true)`: something came (an overrun counts).
pub fn wait(fd: &OwnedFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis() as i32);
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(false);
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let r = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(true),
                // Messages were lost: the host changed in some way.
                Some(libc::ENOBUFS) | Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }
}

/// Watch the host on a thread of the calling thread's namespace (the
/// agent's) for as long as the agent runs.
pub fn spawn(daemon: Arc<Daemon>) {
    let fd = match open() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("not following the host (rtnetlink groups): {e}");
            return;
        }
    };
    let r = std::thread::Builder::new()
        .name("pier-host-watch".into())
        .spawn(move || {
            loop {
                match wait(&fd, None) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!("rtnetlink: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
                let t0 = Instant::now();
                while t0.elapsed() < MAX_DELAY && matches!(wait(&fd, Some(QUIET)), Ok(true)) {}
                match daemon.host_changed() {
                    Ok(()) => tracing::debug!("host change followed in {:?}", t0.elapsed()),
                    Err(e) => tracing::warn!("following a host change: {e}"),
                }
            }
        });
    if let Err(e) = r {
        tracing::warn!("not following the host: {e}");
    }
}
