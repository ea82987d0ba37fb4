//! The load client (run in the outside namespace): rr, crr and udp modes,
//! each bounded in time and in count.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{echo, stats};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One connection; request, response, repeat.
    Rr,
    /// Connect, request, response, close; repeat.
    Crr,
    /// Datagrams to a UDP sink, counted there.
    Udp,
}

/// What one load run measured (printed as one JSON line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    pub mode: Mode,
    /// Transactions, connections, or datagrams counted at the sink.
    pub ops: u64,
    /// Failed connects/transactions (crr, rr) or datagrams lost (udp).
    pub errors: u64,
    /// Datagrams sent (udp).
    pub sent: u64,
    pub secs: f64,
    /// ops per second.
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

pub struct Params {
    pub target: SocketAddr,
    pub duration: Duration,
    pub max_ops: u64,
    pub size: usize,
}

pub fn run(mode: Mode, p: &Params) -> anyhow::Result<LoadResult> {
    match mode {
        Mode::Rr => rr(p),
        Mode::Crr => crr(p),
        Mode::Udp => udp(p),
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn transact(s: &mut TcpStream, req: &[u8], resp: &mut [u8]) -> std::io::Result<()> {
    s.write_all(req)?;
    s.read_exact(resp)
}

fn rr(p: &Params) -> anyhow::Result<LoadResult> {
    let mut s = TcpStream::connect_timeout(&p.target, IO_TIMEOUT)
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", p.target))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let req = vec![0x42u8; p.size];
    let mut resp = vec![0u8; p.size];
    // Warm the path (ARP, conntrack, caches) before timing.
    for _ in 0..100 {
        transact(&mut s, &req, &mut resp)?;
    }
    let mut lat_ns: Vec<u64> = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while (lat_ns.len() as u64) < p.max_ops && start.elapsed() < p.duration {
        let t = Instant::now();
        transact(&mut s, &req, &mut resp)
            .map_err(|e| anyhow::anyhow!("transaction {}: {e}", lat_ns.len()))?;
        lat_ns.push(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    lat_ns.sort_unstable();
    let us = |p| stats::percentile(&lat_ns, p).map(|ns| ns as f64 / 1000.0);
    Ok(LoadResult {
        mode: Mode::Rr,
        ops: lat_ns.len() as u64,
        errors: 0,
        sent: 0,
        secs,
        rate: lat_ns.len() as f64 / secs,
        p50_us: us(50.0),
        p99_us: us(99.0),
    })
}

fn crr(p: &Params) -> anyhow::Result<LoadResult> {
    let req = vec![0x43u8; p.size];
    let mut resp = vec![0u8; p.size];
    let one = |resp: &mut [u8]| -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&p.target, IO_TIMEOUT)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        transact(&mut s, &req, resp)
        // Dropped here: the client closes first, as an HTTP/1.0 client would.
    };
    // The first connection must work, or the target is not served at all.
    one(&mut resp).map_err(|e| anyhow::anyhow!("first connection to {}: {e}", p.target))?;
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut lat_ns: Vec<u64> = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    while ok + errors < p.max_ops && start.elapsed() < p.duration {
        let t = Instant::now();
        match one(&mut resp) {
            Ok(()) => {
                ok += 1;
                lat_ns.push(t.elapsed().as_nanos() as u64);
            }
            Err(_) => errors += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat_ns.sort_unstable();
    let us = |p| stats::percentile(&lat_ns, p).map(|ns| ns as f64 / 1000.0);
    Ok(LoadResult {
        mode: Mode::Crr,
        ops: ok,
        errors,
        sent: 0,
        secs,
        rate: ok as f64 / secs,
        p50_us: us(50.0),
        p99_us: us(99.0),
    })
}

/// Ask the sink something; retried, since a datagram may be dropped.
fn ask(s: &UdpSocket, target: SocketAddr, msg: &[u8]) -> anyhow::Result<String> {
    let mut buf = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    for _ in 0..15 {
        s.send_to(msg, target)?;
        match s.recv_from(&mut buf) {
            Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "no answer from the UDP sink at {target} to {:?}",
        String::from_utf8_lossy(msg)
    )
}

fn udp(p: &Params) -> anyhow::Result<LoadResult> {
    // The target's family (the IPv6 rows dial `[fd18::1]`).
    let any = if p.target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let s = UdpSocket::bind(any)?;
    let reply = ask(&s, p.target, echo::UDP_RESET)?;
    anyhow::ensure!(reply == "ok", "UDP sink answered {reply:?} to reset");
    let payload = vec![0x44u8; p.size];
    let mut sent = 0u64;
    let start = Instant::now();
    'outer: while sent < p.max_ops {
        // Check the clock every 64 datagrams, not on each.
        for _ in 0..64 {
            if s.send_to(&payload, p.target).is_ok() {
                sent += 1;
            }
        }
        if start.elapsed() >= p.duration {
            break 'outer;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the sink drain its queue before asking.
    std::thread::sleep(Duration::from_millis(200));
    let count: u64 = ask(&s, p.target, echo::UDP_COUNT)?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("UDP sink count: {e}"))?;
    Ok(LoadResult {
        mode: Mode::Udp,
        ops: count,
        errors: sent.saturating_sub(count),
        sent,
        secs,
        rate: count as f64 / secs,
        p50_us: None,
        p99_us: None,
    })
}
