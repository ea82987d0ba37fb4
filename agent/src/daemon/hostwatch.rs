//! Follow the host: the agent's namespace's rtnetlink multicast groups
//! (links, IPv4 addresses, IPv4 routes). Any message, or an overrun of the
//! socket, means the host may have changed: once the messages pause for
//! [`QUIET`] (a change is often several), the dataplane reads the host
//! again (`Dataplane::host_changed`: host addresses, the masquerade source,
//! uplinks re-attached when their interface was re-created). Messages about
//! pier's own veths and bridges as links, and the IPv6 link-local addresses
//! of its veths, are not host changes (every container create and remove
//! makes several): they are read and passed over, so that a change's cost
//! does not grow a whole-host read per container.
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

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes (type, payload) of a netlink message body after its
/// fixed header of `fixed` bytes.
fn attrs(body: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(fixed..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some((ty, payload))
    })
}

/// Whether one rtnetlink message (type `ty`, body after the header) may be
/// a change of the host that the dataplane follows: anything but a link
/// message of a pier veth or bridge, or an IPv6 link-local address of a
/// pier veth (or of an interface already gone).
pub fn is_host_change(ty: u16, body: &[u8]) -> bool {
    match ty {
        RTM_NEWLINK | RTM_DELLINK => {
            let name = attrs(body, 16)
                .find(|(t, _)| *t == IFLA_IFNAME)
                .map(|(_, v)| String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(v)));
            !name.is_some_and(|n| {
                super::reconcile::is_pier_veth_name(&n) || super::reconcile::is_pier_bridge_name(&n)
            })
        }
        RTM_NEWADDR | RTM_DELADDR => {
            if body.len() < 8 || body[0] != libc::AF_INET6 as u8 {
                return true;
            }
            let index = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
            let link_local = attrs(body, 8)
                .find(|(t, _)| *t == IFA_ADDRESS)
                .is_some_and(|(_, a)| a.len() == 16 && a[0] == 0xfe && a[1] & 0xc0 == 0x80);
            if !link_local {
                return true;
            }
            // (Gone: an error, or an empty name from some libcs.)
            match nix::net::if_::if_indextoname(index) {
                Ok(n) if !n.is_empty() => {
                    !super::reconcile::is_pier_veth_name(&n.to_string_lossy())
                }
                _ => false,
            }
        }
        _ => true,
    }
}

/// The interface a link or address message is about (for the debug log).
fn describe(ty: u16, body: &[u8]) -> String {
    match ty {
        RTM_NEWLINK | RTM_DELLINK => attrs(body, 16)
            .find(|(t, _)| *t == IFLA_IFNAME)
            .map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default(),
        RTM_NEWADDR | RTM_DELADDR if body.len() >= 8 => {
            let index = u32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
            format!("family {}, ifindex {index}", body[0])
        }
        _ => String::new(),
    }
}

/// Whether a buffer of rtnetlink messages holds one [`is_host_change`].
fn has_host_change(mut buf: &[u8]) -> bool {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return true;
        }
        if is_host_change(ty, &buf[NLMSG_HDRLEN..len]) {
            tracing::debug!(
                "host change: rtnetlink message type {ty} ({})",
                describe(ty, &buf[NLMSG_HDRLEN..len])
            );
            return true;
        }
        buf = buf.get(align4(len)..).unwrap_or_default();
    }
    false
}

/// Wait up to `timeout` (`None`: for ever) for messages and read all that
/// are queued. `Ok(true)`: a host change came (an overrun counts; pier's
/// own veths and bridges do not, see [`is_host_change`]).
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
    let mut changed = false;
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
                Some(libc::EAGAIN) => return Ok(changed),
                // Messages were lost: the host changed in some way.
                Some(libc::ENOBUFS) => {
                    tracing::debug!("host change: rtnetlink messages were lost (ENOBUFS)");
                    changed = true;
                    continue;
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        changed = changed || has_host_change(&buf[..r as usize]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One rtnetlink message: header, fixed part, attributes.
    fn msg(ty: u16, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = fixed.to_vec();
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend((len as u16).to_ne_bytes());
            body.extend(t.to_ne_bytes());
            body.extend(*v);
            body.resize(align4(body.len()), 0);
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(ty.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    fn link(ty: u16, name: &str) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        msg(ty, &[0; 16], &[(IFLA_IFNAME, &n)])
    }

    fn addr6(index: u32, a: std::net::Ipv6Addr) -> Vec<u8> {
        let mut fixed = vec![libc::AF_INET6 as u8, 64, 0, 0];
        fixed.extend(index.to_ne_bytes());
        msg(RTM_NEWADDR, &fixed, &[(IFA_ADDRESS, &a.octets())])
    }

    #[test]
    fn pier_veths_and_bridges_are_not_host_changes() {
        assert!(!has_host_change(&link(RTM_NEWLINK, "veth0123abc")));
        assert!(!has_host_change(&link(RTM_DELLINK, "veth0123abc")));
        assert!(!has_host_change(&link(RTM_NEWLINK, "pier0")));
        assert!(!has_host_change(&link(RTM_NEWLINK, "br-0123456789ab")));
        assert!(has_host_change(&link(RTM_NEWLINK, "uplink0")));
        assert!(has_host_change(&link(RTM_DELLINK, "veth0")));
        // Several in one buffer: one host change is enough.
        let mut both = link(RTM_NEWLINK, "veth0123abc");
        both.extend(link(RTM_NEWLINK, "eth1"));
        assert!(has_host_change(&both));
        // A link-local address of an interface that is gone: not one; a
        // global one: always; IPv4: always.
        let gone = 999_999;
        assert!(!has_host_change(&addr6(gone, "fe80::1".parse().unwrap())));
        assert!(has_host_change(&addr6(gone, "fd00::1".parse().unwrap())));
        // Loopback (index 1) exists in every namespace and is no pier veth.
        assert!(has_host_change(&addr6(1, "fe80::1".parse().unwrap())));
        let mut v4 = vec![libc::AF_INET as u8, 24, 0, 0];
        v4.extend(gone.to_ne_bytes());
        assert!(has_host_change(&msg(
            RTM_NEWADDR,
            &v4,
            &[(IFA_ADDRESS, &[10, 0, 0, 1])]
        )));
        // Routes and anything unknown count; so does a broken header.
        assert!(has_host_change(&msg(24, &[0; 12], &[])));
        assert!(has_host_change(&[
            1, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
    }
}
