//! Restart without loss, through the agent: a long TCP transfer through a
//! published port survives `SIGTERM` and `SIGKILL` of the agent and its
//! restart byte for byte, and new connections work afterwards; over IPv6
//! too (a dual-stack container's published port, `SIGKILL`).
mod agent_util;

use std::{net::SocketAddr, time::Duration};

use agent_util::*;
use nix::sys::signal::Signal;
use pier_tests::{host::HOST_UPLINK_IP, require_root};

/// Bytes of the transfer, written in chunks with a pause after each.
const TOTAL: usize = 24 << 20;
const PAUSE: Duration = Duration::from_millis(8);

/// A transfer of [`TOTAL`] bytes to `dst` (served by `srv`, a checking
/// server) while the agent is stopped with `signal` a little into it and a
/// new one started while the bytes flow: every byte arrives, unchanged.
fn across_a_restart(
    s: &mut Sandbox,
    srv: std::thread::JoinHandle<(usize, usize)>,
    dst: SocketAddr,
    signal: Signal,
) {
    let t0 = std::time::Instant::now();
    let client = slow_client(&s.outside_ns(), dst, TOTAL, PAUSE);
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
}

fn transfer_survives(signal: Signal) {
    let mut s = Sandbox::new(&[]);
    s.host
        .pier_ok(&["run", "-d", "--name", "sink", "-p", "8081:8080"]);
    let ns = s.ns_of("sink");
    let srv = checking_server(&ns, 8080);
    let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();
    across_a_restart(&mut s, srv, dst, signal);
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

/// The IPv6 twin: a transfer from outside to `[fd18::1]:8081` (a
/// dual-stack container's published port) survives `SIGKILL` of the agent
/// and its restart byte for byte; the port serves new IPv6 connections
/// before and after.
#[test]
fn an_ipv6_transfer_survives_sigkill_and_restart_of_the_agent() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    s.add_ipv6_uplink();
    s.host.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.82.0.0/24",
        "--subnet",
        "fd00:82::/64",
        "r6",
    ]);
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "sink",
        "--network",
        "r6",
        "-p",
        "8081:8080",
    ]);
    let ns = s.ns_of("sink");
    let dst: SocketAddr = format!("[{HOST_UPLINK_IP6}]:8081").parse().unwrap();
    // A short checked transfer: the port serves IPv6.
    let short = |s: &Sandbox, when: &str| {
        let srv = checking_server_on(&ns, "::", 8080);
        let a = slow_client(&s.outside_ns(), dst, CHUNK, Duration::ZERO)
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{when}: {e}\n{}", s.log()));
        assert_eq!(a, format!("{CHUNK} 0"), "{when}");
        assert_eq!(srv.join().unwrap(), (CHUNK, 0), "{when}");
    };
    short(&s, "before the restart");
    let srv = checking_server_on(&ns, "::", 8080);
    across_a_restart(&mut s, srv, dst, Signal::SIGKILL);
    short(&s, "after the restart");
    s.assert_firewalls_untouched();
}
