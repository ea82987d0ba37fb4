//! Port reservations: while a port is published, the agent holds a bound (not
//! listening) socket on it in the host namespace, so no host process can take
//! it; a port a host process already holds cannot be published.
use std::{
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};

use super::{DataplaneError, Proto};

/// The identity of a published port: (host address, the family's
/// unspecified one for all, protocol, port).
pub type PortId = (IpAddr, Proto, u16);

pub fn describe(id: &PortId) -> String {
    let (ip, proto, port) = id;
    let proto = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    format!("{}/{proto}", SocketAddr::new(*ip, *port))
}

/// Binds tried again after EADDRINUSE, 2 ms apart (see [`reserve`]).
const BIND_RETRIES: usize = 5;

/// Bind a socket on `id` in the calling thread's namespace.
pub fn reserve(id: &PortId) -> Result<OwnedFd, DataplaneError> {
    let (ip, proto, port) = *id;
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let family = if ip.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| DataplaneError::Other(format!("socket: {e}")))?;
    if ip.is_ipv6() {
        // `[::]` holds the IPv6 port only (the IPv4 one is its own spec).
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .map_err(|e| DataplaneError::Other(format!("IPV6_V6ONLY: {e}")))?;
    }
    let addr = SockaddrStorage::from(SocketAddr::new(ip, port));
    let mut r = bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    // A reservation this agent closed a moment ago can still be bound: a
    // process forked at that moment (by this agent, or a test's thread)
    // holds a copy of every descriptor until its exec closes them. That
    // lasts microseconds to milliseconds, so a few short waits tell it
    // from a port a host process really holds.
    for _ in 0..BIND_RETRIES {
        if r != Err(nix::errno::Errno::EADDRINUSE) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        r = bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    }
    match r {
        Ok(()) => Ok(fd),
        Err(nix::errno::Errno::EADDRINUSE) => Err(DataplaneError::PortInUse(format!(
            "{} (held by a host process)",
            describe(id)
        ))),
        Err(e) => Err(DataplaneError::Other(format!(
            "reserving {}: {e}",
            describe(id)
        ))),
    }
}
