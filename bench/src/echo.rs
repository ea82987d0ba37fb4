//! The echo server run inside the container: TCP echo (request/response and
//! connect/request/response/close) and a UDP sink that counts datagrams.
//!
//! One thread, one epoll loop: no thread per connection, so connection set-up
//! costs the server only accept + a few syscalls.
use std::{
    collections::HashMap,
    io::{self, ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

/// Control datagrams of the UDP sink; anything else is counted.
pub const UDP_RESET: &[u8] = b"pier-bench:reset";
pub const UDP_COUNT: &[u8] = b"pier-bench:count";

const LISTEN: u64 = 1 << 62;
const UDP: u64 = 2 << 62;
const CONN: u64 = 3 << 62;
const TAG: u64 = 3 << 62;

struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: ev outlives the call; fd is open.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        loop {
            // SAFETY: events is a valid buffer of the given length.
            let n =
                unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, -1) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// Serve forever on `tcp` ports (echo) and `udp` ports (counting sink).
pub fn serve(tcp: &[u16], udp: &[u16]) -> io::Result<()> {
    let ep = Epoll::new()?;
    let mut listeners = Vec::new();
    for &p in tcp {
        // `::` takes both families (the IPv6 rows), `0.0.0.0` where a
        // namespace has no IPv6.
        let l = TcpListener::bind(("::", p)).or_else(|_| TcpListener::bind(("0.0.0.0", p)))?;
        l.set_nonblocking(true)?;
        ep.add(l.as_raw_fd(), LISTEN | listeners.len() as u64)?;
        listeners.push(l);
    }
    let mut sinks = Vec::new();
    for &p in udp {
        let s = UdpSocket::bind(("::", p)).or_else(|_| UdpSocket::bind(("0.0.0.0", p)))?;
        s.set_nonblocking(true)?;
        // A deep buffer, so that the sink's count measures the path, not the
        // scheduling of one process that shares the CPU with its sender.
        let _ =
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20));
        ep.add(s.as_raw_fd(), UDP | sinks.len() as u64)?;
        sinks.push((s, 0u64));
    }
    let mut conns: HashMap<u64, TcpStream> = HashMap::new();
    let mut next_conn: u64 = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = ep.wait(&mut events)?;
        for ev in &events[..n] {
            let token = ev.u64;
            let idx = token & !TAG;
            match token & TAG {
                LISTEN => loop {
                    match listeners[idx as usize].accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(true)?;
                            let _ = s.set_nodelay(true);
                            let id = next_conn;
                            next_conn += 1;
                            if ep.add(s.as_raw_fd(), CONN | id).is_ok() {
                                conns.insert(id, s);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        // ECONNABORTED and friends: the client gave up; go on.
                        Err(_) => break,
                    }
                },
                CONN => {
                    let done = match conns.get_mut(&idx) {
                        Some(s) => echo_once(s, &mut buf),
                        None => false,
                    };
                    if done {
                        // Dropping closes the fd, which also leaves the epoll set.
                        conns.remove(&idx);
                    }
                }
                UDP => {
                    let (s, count) = &mut sinks[idx as usize];
                    sink_once(s, count, &mut buf);
                }
                _ => {}
            }
        }
    }
}

/// Echo whatever is readable; `true` when the connection is finished.
fn echo_once(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match s.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                if write_all_blocking(s, &buf[..n]).is_err() {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

fn write_all_blocking(s: &mut TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sink_once(s: &UdpSocket, count: &mut u64, buf: &mut [u8]) {
    loop {
        match s.recv_from(buf) {
            Ok((n, from)) => {
                let msg = &buf[..n];
                if msg == UDP_RESET {
                    *count = 0;
                    reply(s, b"ok", from);
                } else if msg == UDP_COUNT {
                    reply(s, count.to_string().as_bytes(), from);
                } else {
                    *count += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

fn reply(s: &UdpSocket, msg: &[u8], to: SocketAddr) {
    let _ = s.send_to(msg, to);
}

/// Set `net.ipv4.tcp_max_tw_buckets` of the caller's network namespace:
/// /proc/sys/net follows the namespace of the process that opens it.
pub fn set_tw_buckets(n: u32) -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", n.to_string())
}
