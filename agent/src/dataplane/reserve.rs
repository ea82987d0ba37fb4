//! Port reservations: while a port is published, the agent holds a bound (not
//! listening) socket on it in the host namespace, so no host process can take
//! it; a port a host process already holds cannot be published.
use std::{net::Ipv4Addr, os::fd::OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};

use super::{DataplaneError, Proto};

/// The identity of a published port: (host address or any, protocol, port).
pub type PortId = (Option<Ipv4Addr>, Proto, u16);

pub fn describe(id: &PortId) -> String {
    let (ip, proto, port) = id;
    let proto = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    format!("{}:{port}/{proto}", ip.unwrap_or(Ipv4Addr::UNSPECIFIED))
}

/// Bind a socket on `id` in the calling thread's namespace.
pub fn reserve(id: &PortId) -> Result<OwnedFd, DataplaneError> {
    let (ip, proto, port) = *id;
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| DataplaneError::Other(format!("socket: {e}")))?;
    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(
        ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        port,
    ));
    match bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
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
