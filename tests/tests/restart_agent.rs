//! Restart without loss, through the agent: a long TCP transfer through a
//! published port survives `SIGTERM` and `SIGKILL` of the agent and its
//! restart byte for byte, and new connections work afterwards.
mod agent_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread::JoinHandle,
    time::Duration,
};

use agent_util::*;
use nix::sys::signal::Signal;
use pier_tests::{host::HOST_UPLINK_IP, require_root};

/// Bytes of the transfer, written in `CHUNK`s with a pause after each.
const TOTAL: usize = 24 << 20;
const CHUNK: usize = 64 << 10;
const PAUSE: Duration = Duration::from_millis(8);

fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// A server in `ns` on `port` for one connection: it reads to EOF, checks
/// every byte against [`pattern`] and answers `<bytes> <mismatches>`.
fn checking_server(ns: &Path, port: u16) -> JoinHandle<(usize, usize)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (mut n, mut bad) = (0usize, 0usize);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let k = s.read(&mut buf).expect("read");
            if k == 0 {
                break;
            }
            for (j, b) in buf[..k].iter().enumerate() {
                if *b != pattern(n + j) {
                    bad += 1;
                }
            }
            n += k;
        }
        let _ = write!(s, "{n} {bad}");
        (n, bad)
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// A client in `ns` sending [`TOTAL`] pattern bytes to `dst` slowly, then
/// reading the server's verdict.
fn slow_client(ns: &Path, dst: SocketAddr) -> JoinHandle<std::io::Result<String>> {
    spawn_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut sent = 0;
        while sent < TOTAL {
            let chunk: Vec<u8> = (sent..sent + CHUNK).map(pattern).collect();
            s.write_all(&chunk)?;
            sent += CHUNK;
            std::thread::sleep(PAUSE);
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

fn transfer_survives(signal: Signal) {
    let mut s = Sandbox::new(&[]);
    s.host
        .pier_ok(&["run", "-d", "--name", "sink", "-p", "8081:8080"]);
    let ns = s.ns_of("sink");
    let srv = checking_server(&ns, 8080);
    let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();
    let t0 = std::time::Instant::now();
    let client = slow_client(&s.outside_ns(), dst);
    // Stop the agent a little into the transfer, start a new one while the
    // bytes flow.
    std::thread::sleep(Duration::from_millis(400));
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, signal);
    assert!(
        !client.is_finished(),
        "the transfer ended before the agent stopped"
    );
    std::thread::sleep(Duration::from_millis(300));
    s.agent = Some(s.host.start_agent(&[]));
    s.host.wait_agent_ready();
    let answer = client.join().unwrap().expect("transfer");
    let elapsed = t0.elapsed();
    assert_eq!(answer, format!("{TOTAL} 0"), "bytes received, mismatches");
    assert_eq!(srv.join().unwrap(), (TOTAL, 0));
    assert!(
        elapsed > Duration::from_millis(700),
        "the transfer ({elapsed:?}) did not span the restart"
    );
    // New connections work with the new agent, and the entries are there.
    let srv = tcp_server(&ns, 8080, 1);
    let a = tcp_ask(&s.outside_ns(), &dst.to_string(), "after").expect("new connection");
    assert!(a.text.ends_with("|after"), "{a:?}");
    srv.join().unwrap();
    let ip = s.ip_of("sink", "bridge");
    assert_eq!(
        s.port_entries(),
        vec![PortEntry {
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: 8081,
            proto: TCP,
            backend: ip,
            backend_port: 8080
        }]
    );
    s.assert_firewalls_untouched();
}

#[test]
fn a_transfer_survives_sigterm_and_restart_of_the_agent() {
    require_root!();
    transfer_survives(Signal::SIGTERM);
}

#[test]
fn a_transfer_survives_sigkill_and_restart_of_the_agent() {
    require_root!();
    transfer_survives(Signal::SIGKILL);
}
