//! Load with nothing lost: `SCALE_CONTAINERS` (default 150; 1000 by hand)
//! containers with 10 published ports each, established TCP connections
//! (idle echo connections and one transfer in flight) held across a
//! `SIGKILL` and restart of the agent and byte-exact after it, then every
//! published port probed from outside: each connection must reach a
//! listener on exactly the container port it maps to. Prints create time,
//! takeover time and the agent's RSS.
mod agent_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_util::{consistency::disagreements, *};
use nix::sys::signal::Signal;
use pier_tests::{host::HOST_UPLINK_IP, require_root};

const HOSTBASE: u16 = 20000;
const PORTS: u16 = 10;
/// Containers with a held echo connection (spread over the range).
const HELD: usize = 8;
/// Containers probed per batch (listeners open at once: `PORTS` × this).
const BATCH: usize = 25;

fn host_port(i: usize, k: u16) -> u16 {
    HOSTBASE + PORTS * i as u16 + k
}

fn dst(port: u16) -> SocketAddr {
    format!("{HOST_UPLINK_IP}:{port}").parse().unwrap()
}

/// An echo server in `ns` on `port` for one connection.
fn echo_server(ns: &std::path::Path, port: u16) -> std::thread::JoinHandle<usize> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind echo");
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        drop(l);
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (mut n, mut buf) = (0, vec![0u8; 65536]);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => {
                    s.write_all(&buf[..k]).expect("echo");
                    n += k;
                }
            }
        }
    });
    rx.recv_timeout(IO_TIMEOUT).expect("echo server ready");
    h
}

/// Accept on a non-blocking listener, waiting up to `d`.
fn accept_within(l: &TcpListener, d: Duration) -> std::io::Result<TcpStream> {
    let t = Instant::now();
    loop {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && t.elapsed() < d => {
                std::thread::sleep(Duration::from_millis(2));
            }
            r => return r.map(|(s, _)| s),
        }
    }
}

/// Send `len` pattern bytes from offset `off` and read them back exactly.
fn round_trip(s: &mut TcpStream, off: usize, len: usize) -> std::io::Result<()> {
    let data: Vec<u8> = (off..off + len).map(pattern).collect();
    s.write_all(&data)?;
    let mut back = vec![0u8; len];
    s.read_exact(&mut back)?;
    if back != data {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

#[test]
fn many_containers_many_ports_and_a_restart() {
    require_root!();
    let n = env_num("SCALE_CONTAINERS", 150);
    assert!(n <= 1000, "a bridge takes at most 1024 ports");
    println!("scale: SCALE_CONTAINERS={n}, {PORTS} ports each");
    let mut s = Sandbox::new(&[]);
    let t0 = Instant::now();
    let mut create_ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        s.host.pier_ok(&[
            "run",
            "-d",
            "--name",
            &format!("s{i}"),
            "-p",
            &format!(
                "{}-{}:8000-{}",
                host_port(i, 0),
                host_port(i, PORTS - 1),
                8000 + PORTS - 1
            ),
        ]);
        create_ms.push(t.elapsed());
    }
    let create_total = t0.elapsed();
    let pid = s.agent.as_ref().unwrap().pid;
    let rss_before = rss_kib(pid).unwrap_or(0);
    let recs = consistency::recorded(&s.host);
    assert_eq!(recs.len(), n);
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let r = recs.iter().find(|r| r.name == format!("s{i}")).unwrap();
            s.host.container_netns(&r.id)
        })
        .collect();
    let ns_of = |i: usize| paths[i].clone();

    // Held connections: idle echo connections to port 8009 of HELD
    // containers, and one transfer that is in flight during the restart.
    let held: Vec<usize> = (0..HELD.min(n)).map(|j| j * n / HELD.min(n)).collect();
    let mut echoes = Vec::new();
    for &i in &held {
        let srv = echo_server(&ns_of(i), 8009);
        let d = dst(host_port(i, 9));
        let mut c = in_ns(&s.outside_ns(), move || {
            TcpStream::connect_timeout(&d, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("s{i}: held connection: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        round_trip(&mut c, 0, 65536).unwrap_or_else(|e| panic!("s{i} before: {e}"));
        echoes.push((i, c, srv));
    }
    let streamer = n / 2 + 1;
    let sink = checking_server(&ns_of(streamer.min(n - 1)), 8008);
    let total = 40 << 20;
    let client = slow_client(
        &s.outside_ns(),
        dst(host_port(streamer.min(n - 1), 8)),
        total,
        Duration::from_millis(8),
    );

    // SIGKILL and restart.
    std::thread::sleep(Duration::from_millis(300));
    let a = s.agent.take().unwrap();
    let killed = Instant::now();
    s.host.stop_agent(&a, Signal::SIGKILL);
    assert!(!client.is_finished(), "the transfer ended before the kill");
    s.agent = Some(s.host.start_agent(&[]));
    s.host.wait_agent_ready();
    let takeover = killed.elapsed();
    let pid = s.agent.as_ref().unwrap().pid;
    let rss_after = rss_kib(pid).unwrap_or(0);

    for (i, c, _) in &mut echoes {
        round_trip(c, 65536, 65536).unwrap_or_else(|e| panic!("s{i}: held connection after: {e}"));
    }
    for (i, c, srv) in echoes {
        drop(c);
        assert_eq!(srv.join().unwrap(), 2 * 65536, "s{i}: echoed bytes");
    }
    assert_eq!(
        client.join().unwrap().expect("transfer"),
        format!("{total} 0"),
        "transfer across the restart: bytes, mismatches"
    );
    assert_eq!(sink.join().unwrap(), (total, 0));

    // Every published port, from outside, reaches its own container port.
    let probe_t = Instant::now();
    let mut answered = 0usize;
    for batch in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        let mut listeners = Vec::new();
        for &i in batch {
            let ls: Vec<TcpListener> = in_ns(&ns_of(i), || {
                (0..PORTS)
                    .map(|k| {
                        let l = TcpListener::bind(("0.0.0.0", 8000 + k)).expect("bind probe");
                        l.set_nonblocking(true).unwrap();
                        l
                    })
                    .collect()
            });
            listeners.push((i, ls));
        }
        let ports: Vec<(usize, u16)> = batch
            .iter()
            .flat_map(|&i| (0..PORTS).map(move |k| (i, k)))
            .collect();
        let results: Vec<(usize, u16, std::io::Result<TcpStream>)> =
            in_ns(&s.outside_ns(), move || {
                ports
                    .into_iter()
                    .map(|(i, k)| {
                        let r = TcpStream::connect_timeout(
                            &dst(host_port(i, k)),
                            Duration::from_secs(2),
                        );
                        (i, k, r)
                    })
                    .collect()
            });
        for (i, k, r) in &results {
            if let Err(e) = r {
                panic!("s{i}: host port {} not answered: {e}", host_port(*i, *k));
            }
        }
        // Each listener holds exactly the connection to its own port.
        for (i, ls) in &listeners {
            for (k, l) in ls.iter().enumerate() {
                let got = accept_within(l, Duration::from_secs(1));
                assert!(
                    got.is_ok(),
                    "s{i}: container port {} saw no connection",
                    8000 + k
                );
                assert!(
                    l.accept().is_err(),
                    "s{i}: container port {} saw two",
                    8000 + k
                );
                answered += 1;
            }
        }
        drop(results);
    }
    let probe_time = probe_t.elapsed();
    assert_eq!(answered, n * PORTS as usize);
    // The kernel's neighbour tables are shared by all namespaces of the
    // machine (no new entry beyond 1024): containers hold their gateway as
    // a permanent entry, so neither they nor the host learnt one per
    // container (from 512 on, the 1000-container probe went unanswered).
    let learnt = s
        .host
        .host(&["ip", "neigh", "show", "dev", "pier0"])
        .lines()
        .count();
    assert_eq!(learnt, 0, "the host learnt neighbours of containers");
    for i in [0, n / 2, n - 1] {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns_of(i).display()))
            .args(["--", "ip", "neigh", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            t.lines().count() == 1 && t.starts_with("172.17.0.1 ") && t.contains("PERMANENT"),
            "s{i}'s neighbours: {t:?}"
        );
    }

    let (seen, bad) = disagreements(&s.host, n <= 200);
    assert!(
        bad.is_empty(),
        "store and kernel disagree:\n{}\nagent log:\n{}",
        bad.join("\n"),
        s.log()
    );
    assert_eq!(seen.ports, n * PORTS as usize);
    s.assert_firewalls_untouched();
    let tenth = (n / 10).max(1);
    let avg = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "scale: {n} containers × {PORTS} ports created in {create_total:.1?} (first {tenth}: {:.0?} each, last {tenth}: {:.0?} each); \
         agent RSS {rss_before} KiB, after the restart {rss_after} KiB; \
         takeover (SIGKILL → agent ready) {} ms; {} held connections and a {} MiB transfer byte-exact across it; \
         {answered} published ports answered from outside in {probe_time:.1?}",
        avg(&create_ms[..tenth]),
        avg(&create_ms[n - tenth..]),
        takeover.as_millis(),
        held.len(),
        total >> 20,
    );
}

/// A Linux bridge takes 1 023 ports (Docker's bridge stops there too,
/// moby/moby#44973): the 1 023rd container on one network runs, the next is
/// refused in words and leaves nothing behind, and another network takes it.
#[test]
fn a_full_bridge_refuses_the_next_container_in_words() {
    require_root!();
    const MAX: usize = 1023;
    let s = Sandbox::new(&[]);
    let t0 = Instant::now();
    for i in 0..MAX {
        s.host.pier_ok(&["run", "-d", "--name", &format!("f{i}")]);
    }
    println!(
        "scale: {MAX} containers on one bridge in {:?}",
        t0.elapsed()
    );
    let before = s.host.world();
    let e = s.host.pier_err(&["run", "-d", "--name", "one-too-many"]);
    assert!(
        e.contains("network bridge is full") && e.contains("1023"),
        "{e}"
    );
    assert_eq!(
        s.host.world(),
        before,
        "the refused container left something"
    );
    s.host.pier_ok(&["network", "create", "more"]);
    s.host
        .pier_ok(&["run", "-d", "--name", "one-too-many", "--network", "more"]);
    let ns = s.ns_of("one-too-many");
    assert!(ns.exists(), "its namespace");
}
