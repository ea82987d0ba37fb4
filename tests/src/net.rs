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
