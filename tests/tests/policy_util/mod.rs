//! Shared helpers of the source-policy tests (`policy_agent`,
//! `policy_engines`): two client addresses in the outside namespace, a
//! server that answers many kept-open connections, clients bound to one
//! source address, and readers of the policy maps and counters.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::agent_util::*;
use pier_common::{
    maps as names,
    policy::{PolicyKey, PolicyVal},
};
use pier_tests::{TestHost, host::HOST_UPLINK_IP};
use serde_json::Value;

pub const A: &str = "198.18.0.2";
pub const B: &str = "198.18.0.3";

/// A sandbox whose outside namespace has the second client address.
pub fn sandbox(extra: &[&str]) -> Sandbox {
    let s = Sandbox::new(extra);
    s.host
        .outside(&["ip", "addr", "add", &format!("{B}/24"), "dev", "eth0"]);
    s
}

/// A server in `ns` until dropped: TCP on `port` answers each line with
/// `<peer>|<line>` (many connections, each kept open), UDP on `port` answers
/// each datagram the same way; the peers seen are kept.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    udp_peers: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl Server {
    pub fn start(ns: &Path, port: u16) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let udp_peers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stop.clone();
        let tx2 = tx.clone();
        let tcp = spawn_in(ns, move || {
            let l = pier_tests::net::bind_retrying(|| TcpListener::bind(("0.0.0.0", port)))
                .expect("bind tcp");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut w = s.try_clone().unwrap();
                            for line in BufReader::new(s).lines() {
                                let Ok(line) = line else { break };
                                if writeln!(w, "{peer}|{line}").is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let st = stop.clone();
        let peers = udp_peers.clone();
        let udp = spawn_in(ns, move || {
            let u = pier_tests::net::bind_retrying(|| UdpSocket::bind(("0.0.0.0", port)))
                .expect("bind udp");
            u.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            tx2.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = u.recv_from(&mut buf) {
                    peers.lock().unwrap().push(peer);
                    let a = format!("{peer}|{}", String::from_utf8_lossy(&buf[..n]));
                    let _ = u.send_to(a.as_bytes(), peer);
                }
            }
        });
        for _ in 0..2 {
            rx.recv_timeout(IO_TIMEOUT).expect("server ready");
        }
        Server {
            stop,
            threads: vec![tcp, udp],
            udp_peers,
        }
    }

    pub fn udp_peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .udp_peers
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.ip().to_string())
            .collect();
        v.dedup();
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connection from `src` in `ns` to `dst`, with one SYN retransmit
/// (`TCP_SYNCNT` 1): a connect nobody answers fails after about 3 s.
pub fn connect_from(ns: &Path, src: &str, dst: &str) -> std::io::Result<TcpStream> {
    connect_counted(ns, src, dst).map_err(|(e, _)| e)
}

/// [`connect_from`]; a failed connect also says how many SYNs it sent: 1
/// plus the namespace's `TcpExt: TCPSynRetrans` growth meanwhile (nothing
/// else in the outside namespace opens connections during a test).
pub fn connect_counted(
    ns: &Path,
    src: &str,
    dst: &str,
) -> Result<TcpStream, (std::io::Error, u64)> {
    let before = syn_retrans(ns);
    connect_inner(ns, src, dst).map_err(|e| (e, 1 + syn_retrans(ns) - before))
}

/// `TcpExt: TCPSynRetrans` of namespace `ns`.
pub fn syn_retrans(ns: &Path) -> u64 {
    in_ns(ns, || {
        let t = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
        let mut lines = t.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "TCPSynRetrans")
            .expect("TCPSynRetrans");
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    })
}

/// `src` an address of either family, `dst` `ADDR:PORT` or `[ADDR6]:PORT`.
pub fn connect_inner(ns: &Path, src: &str, dst: &str) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket,
    };
    let src = SocketAddr::new(src.parse().unwrap(), 0);
    let dst: SocketAddr = dst.parse().unwrap();
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    in_ns(ns, move || {
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        let one: libc::c_int = 1;
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "TCP_SYNCNT");
        bind(fd.as_raw_fd(), &SockaddrStorage::from(src)).expect("bind the client address");
        connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))?;
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(Duration::from_millis(1500)))?;
        Ok(s)
    })
}

/// Send one line, read the answer line.
pub fn ask(s: &mut TcpStream, msg: &str) -> std::io::Result<String> {
    writeln!(s, "{msg}")?;
    let mut line = String::new();
    BufReader::new(s.try_clone()?).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_string())
}

/// A new connection from `src`, one line asked: the address the server saw.
pub fn reach_tcp(ns: &Path, src: &str, dst: &str) -> std::io::Result<String> {
    let mut s = connect_from(ns, src, dst)?;
    let a = ask(&mut s, "hello")?;
    Ok(a.split(':').next().unwrap_or_default().to_string())
}

/// `n` datagrams from `src` in `ns` to `dst`: how many were answered.
pub fn reach_udp(ns: &Path, src: &str, dst: &str, n: usize) -> usize {
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    in_ns(ns, move || {
        let u = UdpSocket::bind(src).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut answered = 0;
        let mut buf = [0u8; 2048];
        for i in 0..n {
            u.send_to(format!("d{i}").as_bytes(), dst).unwrap();
            if u.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered
    })
}

/// The `Denied` counter of host port `port` (`pier stats --ports --format json`).
pub fn denied(h: &TestHost, port: u16, proto: &str) -> u64 {
    h.pier_ok(&["stats", "--ports", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["HostPort"] == port && r["Type"] == proto)
        .unwrap_or_else(|| panic!("no stats row for {port}/{proto}"))["Denied"]
        .as_u64()
        .unwrap()
}

/// The pinned `PIER_POLICY` map: (prefix length, key, value), sorted.
pub fn policy_entries(bpffs: &Path) -> Vec<(u32, PolicyKey, PolicyVal)> {
    let md = aya::maps::MapData::from_pin(bpffs.join(names::POLICY)).expect("open PIER_POLICY");
    let m: aya::maps::lpm_trie::LpmTrie<_, PolicyKey, PolicyVal> =
        aya::maps::lpm_trie::LpmTrie::try_from(aya::maps::Map::LpmTrie(md))
            .expect("PIER_POLICY is an LPM trie");
    let mut v: Vec<(u32, PolicyKey, PolicyVal)> = m
        .iter()
        .map(|r| {
            let (k, v) = r.expect("read PIER_POLICY");
            (k.prefix_len(), k.data(), v)
        })
        .collect();
    v.sort_by_key(|e| (e.0, e.1));
    v
}

pub fn policy_rows(h: &TestHost) -> Vec<Value> {
    h.pier_ok(&["policy", "ls", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn dst(port: u16) -> String {
    format!("{HOST_UPLINK_IP}:{port}")
}

pub fn timed_out(r: std::io::Result<String>, what: &str) {
    let e = r.expect_err(&format!("{what}: served"));
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{what}: {e}"
    );
}

/// `PortVal::policy` of every `PIER_PORTS` entry.
pub fn port_flags(bpffs: &Path) -> Vec<u16> {
    use pier_common::nat::{PortKey, PortVal};
    let md = aya::maps::MapData::from_pin(bpffs.join(names::PORTS)).unwrap();
    let m: aya::maps::HashMap<_, PortKey, PortVal> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(md)).unwrap();
    m.iter().map(|r| r.unwrap().1.policy).collect()
}
