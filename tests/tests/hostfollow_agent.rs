//! Follow the host: the agent learns of the host's changes from rtnetlink
//! (link, IPv4 address and route groups) and resyncs within a second. Each
//! change is made under a running transfer through one published port while
//! new connections probe another; the time from the change until a new
//! connection is served again is printed. Changes: the uplink's address
//! replaced (DHCP renewal), the uplink down and up, the uplink deleted and
//! a new interface of its name made (a new ifindex: re-attached).
mod agent_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_util::*;
use pier_tests::{
    host::{OUTSIDE_IP, UPLINK},
    require_root,
};

const TOTAL: usize = 12 << 20;
const PAUSE: Duration = Duration::from_millis(8);
/// The address the transfers use: a second one the changes leave alone.
const STEADY: &str = "198.18.0.5";
const NEW_ADDR: &str = "198.18.0.9";
/// Service may be out at most this long after a change (the bound the
/// watcher is built for is a second; the box is loaded).
const LIMIT: Duration = Duration::from_secs(3);

/// A server in `ns` on `port` answering "ok" to every connection until `stop`.
fn ok_server(ns: &Path, port: u16, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let l =
            pier_tests::net::bind_retrying(|| TcpListener::bind(("0.0.0.0", port))).expect("bind");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
}

/// One probe from the outside: a new connection to `dst` answered "ok".
fn probe(outside: &Path, dst: SocketAddr) -> bool {
    in_ns(outside, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&dst, Duration::from_millis(150)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut out = String::new();
        s.read_to_string(&mut out).is_ok() && out == "ok"
    })
}

/// Probe until served; the time it took (panics past [`LIMIT`]).
fn service_out(s: &Sandbox, dst: SocketAddr, what: &str) -> Duration {
    let t0 = Instant::now();
    while !probe(&s.outside_ns(), dst) {
        assert!(
            t0.elapsed() < LIMIT,
            "{what}: {dst} still not served after {:?}; agent log:\n{}",
            t0.elapsed(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn ifindex(s: &Sandbox) -> u64 {
    let out = s.host.host(&["ip", "-j", "link", "show", UPLINK]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["ifindex"].as_u64().expect("ifindex")
}

fn host_ip(s: &Sandbox, args: &[&str]) {
    let mut a = vec!["ip"];
    a.extend_from_slice(args);
    s.host.host(&a);
}

#[test]
fn published_ports_and_masquerade_follow_address_link_and_uplink_changes() {
    require_root!();
    let s = Sandbox::new(&[]);
    host_ip(&s, &["addr", "add", &format!("{STEADY}/32"), "dev", UPLINK]);
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "8082:8090",
    ]);
    let ns = s.ns_of("web");
    let stop = Arc::new(AtomicBool::new(false));
    ok_server(&ns, 8090, stop.clone());
    let probe_at = |a: &str| -> SocketAddr { format!("{a}:8082").parse().unwrap() };
    assert!(probe(&s.outside_ns(), probe_at("198.18.0.1")));
    let steady: SocketAddr = format!("{STEADY}:8081").parse().unwrap();
    let mut figures = Vec::new();

    // 1. The uplink's address replaced, as a DHCP renewal does.
    let srv = checking_server(&ns, 8080);
    let client = slow_client(&s.outside_ns(), steady, TOTAL, PAUSE);
    std::thread::sleep(Duration::from_millis(300));
    host_ip(&s, &["addr", "del", "198.18.0.1/24", "dev", UPLINK]);
    host_ip(
        &s,
        &["addr", "add", &format!("{NEW_ADDR}/24"), "dev", UPLINK],
    );
    let out = service_out(&s, probe_at(NEW_ADDR), "address change");
    figures.push(("address change", out));
    host_ip(&s, &["route", "replace", "default", "via", OUTSIDE_IP]);
    assert!(
        !client.is_finished(),
        "the transfer ended before the change"
    );
    assert_eq!(
        client.join().unwrap().expect("transfer"),
        format!("{TOTAL} 0")
    );
    assert_eq!(srv.join().unwrap(), (TOTAL, 0));
    // The masquerade source followed too: the outside sees the new address.
    let peer_srv = tcp_server(&s.outside_ns(), 7070, 1);
    // (The source is the one the host's route for the peer names, as
    // `ip route get` tells: the new address now, never the old 198.18.0.1,
    // which would get no reply at all.)
    let route = s.host.host(&["ip", "route", "get", OUTSIDE_IP]);
    let want = route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .unwrap_or_else(|| panic!("no src in {route:?}"))
        .to_string();
    assert!(want == NEW_ADDR || want == STEADY, "{route}");
    let a = tcp_ask(&ns, &format!("{OUTSIDE_IP}:7070"), "masq").expect("masquerade");
    assert_eq!(a.text.split(':').next(), Some(want.as_str()), "{a:?}");
    peer_srv.join().unwrap();

    // 2. The uplink down and up (routes go with it; the host puts its
    // default route back).
    let srv = checking_server(&ns, 8080);
    let client = slow_client(&s.outside_ns(), steady, TOTAL, PAUSE);
    std::thread::sleep(Duration::from_millis(300));
    host_ip(&s, &["link", "set", UPLINK, "down"]);
    std::thread::sleep(Duration::from_millis(200));
    host_ip(&s, &["link", "set", UPLINK, "up"]);
    let out = service_out(&s, probe_at(NEW_ADDR), "down/up");
    figures.push(("down/up", out));
    host_ip(&s, &["route", "replace", "default", "via", OUTSIDE_IP]);
    assert_eq!(
        client.join().unwrap().expect("transfer"),
        format!("{TOTAL} 0")
    );
    assert_eq!(srv.join().unwrap(), (TOTAL, 0));

    // 3. The uplink deleted and made again: a new interface of the name
    // `--uplink` gives, with a new ifindex (the program is attached anew).
    let old = ifindex(&s);
    host_ip(&s, &["link", "del", UPLINK]);
    std::thread::sleep(Duration::from_millis(200));
    let outside = s.host.outside_ns.clone();
    host_ip(
        &s,
        &[
            "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", &outside,
        ],
    );
    host_ip(
        &s,
        &["addr", "add", &format!("{NEW_ADDR}/24"), "dev", UPLINK],
    );
    pier_tests::host::sh(&[
        "ip",
        "-n",
        &outside,
        "addr",
        "add",
        &format!("{OUTSIDE_IP}/24"),
        "dev",
        "eth0",
    ]);
    pier_tests::host::sh(&["ip", "-n", &outside, "link", "set", "eth0", "up"]);
    host_ip(&s, &["link", "set", UPLINK, "up"]);
    let out = service_out(&s, probe_at(NEW_ADDR), "uplink re-created");
    figures.push(("uplink re-created", out));
    let new = ifindex(&s);
    assert_ne!(old, new, "the uplink has a new ifindex");
    host_ip(&s, &["route", "replace", "default", "via", OUTSIDE_IP]);
    let peer_srv = tcp_server(&s.outside_ns(), 7071, 1);
    let a = tcp_ask(&ns, &format!("{OUTSIDE_IP}:7071"), "masq").expect("masquerade");
    assert_eq!(a.text.split(':').next(), Some(NEW_ADDR), "{a:?}");
    peer_srv.join().unwrap();

    for (what, d) in &figures {
        println!("host follow: {what}: service out {} ms", d.as_millis());
    }
    stop.store(true, Ordering::Relaxed);
    s.assert_firewalls_untouched();
}
