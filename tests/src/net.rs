//! Small traffic helpers that run inside a namespace.
use std::{net::UdpSocket, time::Duration};

use crate::TestHost;

/// Send `count` UDP datagrams of `len` bytes from namespace `ns` to `dst`.
pub fn send_udp(ns: &str, dst: &str, count: usize, len: usize) {
    let dst = dst.to_string();
    TestHost::in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let buf = vec![0x5au8; len];
        for _ in 0..count {
            s.send_to(&buf, &dst).expect("send");
        }
        // Give the last datagram time to cross the veth.
        std::thread::sleep(Duration::from_millis(50));
    })
}

/// A snapshot of the machine's firewall: `iptables-save` and `nft list ruleset`
/// in namespace `ns` (or the current one). Counters are left out.
pub fn firewall_snapshot(ns: Option<&str>) -> String {
    let run = |prog: &str, args: &[&str]| -> String {
        let mut c = match ns {
            Some(ns) => TestHost::cmd_in(ns, prog),
            None => std::process::Command::new(prog),
        };
        let out = c.args(args).output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("{prog}: {e}"),
        }
    };
    format!(
        "{}\n---\n{}",
        run("iptables-save", &[]),
        run("nft", &["list", "ruleset"])
    )
}

/// Bind, retrying briefly on EADDRINUSE: a process forked by a parallel test
/// holds copies of our sockets until it execs.
pub fn bind_retrying<T>(f: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// One hop of [`tracepath`]: who answered the probe with this TTL, with
/// which ICMP type and code (`None`: no answer in time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub ttl: u8,
    pub answer: Option<(std::net::Ipv4Addr, u8, u8)>,
}

/// Like `tracepath -n` (no tool needed): from namespace `ns`, UDP probes to
/// `dst:port` with TTL 1, 2, … up to `max`, each answer read from the
/// socket's error queue (`IP_RECVERR`: offender address, ICMP type and
/// code), until one is not "time exceeded" (the destination answered).
pub fn tracepath(ns: &str, dst: std::net::Ipv4Addr, port: u16, max: u8) -> Vec<Hop> {
    TestHost::in_netns(ns, move || {
        let mut hops = Vec::new();
        for ttl in 1..=max {
            let answer = probe(dst, port, ttl);
            hops.push(Hop { ttl, answer });
            if matches!(answer, Some((_, t, _)) if t != ICMP_TIME_EXCEEDED) {
                break;
            }
        }
        hops
    })
}

fn probe(dst: std::net::Ipv4Addr, port: u16, ttl: u8) -> Option<(std::net::Ipv4Addr, u8, u8)> {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind probe");
    s.connect((dst, port)).expect("connect probe");
    let fd = s.as_raw_fd();
    let set = |opt: libc::c_int, v: libc::c_int| unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set(libc::IP_RECVERR, 1), 0, "IP_RECVERR");
    assert_eq!(set(libc::IP_TTL, ttl as libc::c_int), 0, "IP_TTL");
    let _ = s.send(b"pier-tracepath");
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        if let Some(a) = read_errqueue(fd) {
            return Some(a);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One ICMP error from the socket's error queue: (offender, type, code).
fn read_errqueue(fd: libc::c_int) -> Option<(std::net::Ipv4Addr, u8, u8)> {
    let mut data = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 64];
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR {
            let ee = unsafe { &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err) };
            if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP {
                // The offender's address follows the struct (SO_EE_OFFENDER).
                let off = unsafe {
                    &*((ee as *const libc::sock_extended_err).add(1) as *const libc::sockaddr_in)
                };
                let addr = std::net::Ipv4Addr::from(u32::from_be(off.sin_addr.s_addr));
                return Some((addr, ee.ee_type, ee.ee_code));
            }
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    None
}
