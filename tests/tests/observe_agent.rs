//! Observability through a real agent: `pier monitor` shows every kind of
//! drop with its flow and names, a flood is seen or counted lost exactly,
//! `/metrics` parses as Prometheus text and its counters match the packets
//! sent, `pier stats` per container/network/uplink, and `pier graph` holds
//! every container and port.
mod agent_util;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use agent_util::*;
use pier_tests::{
    host::{HOST_UPLINK_IP, OUTSIDE_IP, pier_bin},
    require_root,
};
use serde_json::Value;

/// A `pier monitor --format json` running against the sandbox's agent.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(s: &Sandbox, args: &[&str]) -> Monitor {
        let mut child = Command::new(pier_bin())
            .arg("--socket")
            .arg(s.host.socket())
            .args(["monitor", "--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pier monitor");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(
            first.contains("attached"),
            "monitor did not attach: {first:?}"
        );
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines: rx }
    }

    /// Every line until none came for `quiet` (or `max` passed).
    fn collect(&self, quiet: Duration, max: Duration) -> Vec<Value> {
        let t0 = Instant::now();
        let mut v = Vec::new();
        while t0.elapsed() < max {
            match self.lines.recv_timeout(quiet) {
                Ok(l) => v.push(
                    serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("monitor line is not JSON ({e}): {l:?}")),
                ),
                Err(_) => break,
            }
        }
        v
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one UDP datagram from `ns` (bound to `from`, if given) to `dst`.
fn udp_send(ns: &std::path::Path, from: Option<&str>, dst: &str, n: usize) {
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    let from = from.unwrap_or("0.0.0.0").to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind((from.as_str(), 0)).expect("bind");
        for _ in 0..n {
            // ENOBUFS/EPERM under a flood are fine: the count is what left.
            s.send_to(b"pier-observe", dst).expect("send");
        }
    });
}

fn nsenter(ns: &std::path::Path, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn drop_of<'a>(events: &'a [Value], reason: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == "drop" && e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} drop among {events:#?}"))
}

#[test]
fn every_drop_reason_reaches_the_monitor_with_its_flow_and_names() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.71.0.0/24", "n1"]);
    h.pier_ok(&["network", "create", "--subnet", "10.72.0.0/24", "n2"]);
    h.pier_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.73.0.0/24",
        "quiet",
    ]);
    h.pier_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.74.0.0/24",
        "inner",
    ]);
    h.pier_ok(&["run", "-d", "--name", "a", "--network", "n1"]);
    h.pier_ok(&["run", "-d", "--name", "b", "--network", "n2"]);
    h.pier_ok(&["run", "-d", "--name", "c", "--network", "quiet"]);
    h.pier_ok(&["run", "-d", "--name", "d", "--network", "quiet"]);
    h.pier_ok(&["run", "-d", "--name", "i", "--network", "inner"]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "p",
        "--network",
        "n1",
        "-p",
        "8082:8080/udp",
        "--publish-allow",
        "203.0.113.0/24",
    ]);
    let (ip_a, ip_b) = (s.ip_of("a", "n1"), s.ip_of("b", "n2"));
    let ip_d = s.ip_of("d", "quiet");
    let ip_i = s.ip_of("i", "inner");
    let (na, nc, ni) = (s.ns_of("a"), s.ns_of("c"), s.ns_of("i"));
    // The outside reaches n1's subnet through the host (not published: dropped).
    h.outside(&["ip", "route", "add", "10.71.0.0/24", "via", HOST_UPLINK_IP]);
    // A second address in a's namespace, to send as someone else.
    nsenter(&na, &["ip", "addr", "add", "10.71.0.99/32", "dev", "eth0"]);
    // An internal network has no default route: give i one, to try to leave.
    nsenter(&ni, &["ip", "route", "add", "default", "via", "10.74.0.1"]);

    let m = Monitor::start(&s, &["--type", "drop"]);
    udp_send(&na, None, &format!("{ip_b}:9001"), 1);
    udp_send(&s.outside_ns(), None, &format!("{ip_a}:9002"), 1);
    udp_send(&na, Some("10.71.0.99"), "10.71.0.1:9003", 1);
    udp_send(&ni, None, &format!("{OUTSIDE_IP}:9004"), 1);
    udp_send(&nc, None, &format!("{ip_d}:9005"), 1);
    udp_send(&s.outside_ns(), None, &format!("{HOST_UPLINK_IP}:8082"), 1);
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(15));
    assert!(
        ev.iter().all(|e| e["type"] == "drop"),
        "--type drop: {ev:#?}"
    );

    let e = drop_of(&ev, "Isolation");
    assert_eq!(e["container"], "a");
    assert_eq!(e["network"], "n1");
    assert_eq!(e["src"], ip_a.to_string());
    assert_eq!(e["dst"], ip_b.to_string());
    assert_eq!(e["dport"], 9001);
    assert_eq!(e["proto"], "udp");
    assert_eq!(e["dst_container"], "b");
    assert_eq!(e["dst_network"], "n2");
    assert!(e["interface"].as_str().unwrap().starts_with("veth"), "{e}");

    let e = drop_of(&ev, "NotPublished");
    assert_eq!(e["interface"], "uplink0");
    assert_eq!(e["src"], OUTSIDE_IP);
    assert_eq!(e["dst"], ip_a.to_string());
    assert_eq!(e["dport"], 9002);
    assert_eq!(e["dst_container"], "a");

    let e = drop_of(&ev, "Spoofed");
    assert_eq!(e["container"], "a");
    assert_eq!(e["src"], "10.71.0.99");
    assert_eq!(e["dst"], "10.71.0.1");
    assert_eq!(e["dport"], 9003);

    let e = drop_of(&ev, "Internal");
    assert_eq!(e["container"], "i");
    assert_eq!(e["network"], "inner");
    assert_eq!(e["src"], ip_i.to_string());
    assert_eq!(e["dst"], OUTSIDE_IP);
    assert_eq!(e["dport"], 9004);

    let e = drop_of(&ev, "NoIcc");
    assert_eq!(e["container"], "c");
    assert_eq!(e["dst_container"], "d");
    assert_eq!(e["network"], "quiet");
    assert_eq!(e["dport"], 9005);

    let e = drop_of(&ev, "PolicyDenied");
    assert_eq!(e["interface"], "uplink0");
    assert_eq!(e["src"], OUTSIDE_IP);
    assert_eq!(e["dst"], HOST_UPLINK_IP);
    assert_eq!(e["dport"], 8082);
    assert_eq!(e["published_port"]["container"], "p");
    assert_eq!(e["published_port"]["host_port"], 8082);
    drop(m);

    // The filters: only b's events (the isolation drop towards it), only a port.
    let m = Monitor::start(&s, &["--container", "b"]);
    udp_send(&na, None, &format!("{ip_b}:9011"), 1);
    udp_send(&nc, None, &format!("{ip_d}:9012"), 1);
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(10));
    assert!(
        ev.iter()
            .all(|e| e["container"] == "b" || e["dst_container"] == "b"),
        "{ev:#?}"
    );
    assert!(ev.iter().any(|e| e["dport"] == 9011), "{ev:#?}");
    drop(m);
    let m = Monitor::start(&s, &["--port", "9022", "--network", "quiet"]);
    udp_send(&na, None, &format!("{ip_b}:9021"), 1);
    udp_send(&nc, None, &format!("{ip_d}:9022"), 1);
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(10));
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0]["dport"], 9022);
    drop(m);

    // Traces: a published connection, a masquerade allocation.
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n2",
        "-p",
        "8090:8080",
    ]);
    let m = Monitor::start(&s, &["--type", "trace"]);
    let srv = tcp_server(&s.ns_of("web"), 8080, 1);
    tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8090"), "hi").expect("published");
    srv.join().unwrap();
    let out = tcp_server(&s.outside_ns(), 7000, 1);
    tcp_ask(&s.ns_of("b"), &format!("{OUTSIDE_IP}:7000"), "out").expect("masquerade");
    out.join().unwrap();
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(10));
    let p = ev
        .iter()
        .find(|e| e["event"] == "publish")
        .unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(p["dport"], 8090);
    assert_eq!(p["src"], OUTSIDE_IP);
    assert_eq!(p["published_port"]["container"], "web");
    assert!(p["nat"].as_str().unwrap().ends_with(":8080"), "{p}");
    let q = ev
        .iter()
        .find(|e| e["event"] == "masquerade")
        .unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(q["container"], "b");
    assert_eq!(q["dst"], OUTSIDE_IP);
    assert_eq!(q["dport"], 7000);
    assert!(
        q["nat"].as_str().unwrap().starts_with(HOST_UPLINK_IP),
        "{q}"
    );
    drop(m);

    // The same drops, counted per container and uplink in `pier stats`.
    let rows: Vec<Value> = h
        .pier_ok(&["stats", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |kind: &str, name: &str| {
        rows.iter()
            .find(|r| r["Kind"] == kind && r["Name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}: {rows:#?}"))
            .clone()
    };
    assert_eq!(row("container", "a")["Drops"]["Isolation"], 3);
    assert_eq!(row("container", "a")["Drops"]["Spoofed"], 1);
    assert_eq!(row("container", "c")["Drops"]["NoIcc"], 3);
    assert_eq!(row("container", "i")["Drops"]["Internal"], 1);
    assert_eq!(row("network", "quiet")["Drops"]["NoIcc"], 3);
    assert_eq!(row("uplink", "uplink0")["Drops"]["NotPublished"], 1);
    assert_eq!(row("uplink", "uplink0")["Drops"]["PolicyDenied"], 1);
    let web = row("container", "web");
    assert!(web["PacketsIn"].as_u64().unwrap() >= 3, "{web}");
    assert!(web["PacketsOut"].as_u64().unwrap() >= 3, "{web}");
    let text = h.pier_ok(&["stats", "a"]);
    assert!(text.contains("Isolation=3"), "{text}");
    s.assert_firewalls_untouched();
}

/// IPv6 flows reach the monitor as IPv4 ones do: a published connection and a
/// masquerade allocation with their translated addresses, a drop with its
/// IPv6 flow and names; and the kernel's counters count them.
#[test]
fn ipv6_traces_and_drops_carry_their_addresses() {
    require_root!();
    const HOST6: &str = HOST_UPLINK_IP6;
    const OUT6: &str = OUTSIDE_IP6;
    const METRICS: u16 = 19466;
    let s = Sandbox::new(&["--metrics-addr", &format!("127.0.0.1:{METRICS}")]);
    let h = &s.host;
    s.add_ipv6_uplink();
    h.outside(&["ip", "-6", "route", "add", "fd00:84::/64", "via", HOST6]);
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.84.0.0/24",
        "--subnet",
        "fd00:84::/64",
        "d6",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "d6",
        "-p",
        "8090:8080",
    ]);
    h.pier_ok(&["run", "-d", "--name", "b", "--network", "d6"]);
    let web6 = s.inspect("web")["NetworkSettings"]["Networks"]["d6"]["GlobalIPv6Address"]
        .as_str()
        .unwrap()
        .to_string();
    let kernel = |name: &str| value(&scrape(&s, METRICS), name, &[]);
    let (ct0, nat0) = (
        kernel("pier_conntrack_new_total"),
        kernel("pier_masquerade_allocations_total"),
    );
    let m = Monitor::start(&s, &[]);
    let srv = tcp_server_on(&s.ns_of("web"), "::", 8080, 1);
    let a = tcp_ask(&s.outside_ns(), &format!("[{HOST6}]:8090"), "hi").expect("published v6");
    assert!(a.text.starts_with(&format!("[{OUT6}]:")), "{a:?}");
    srv.join().unwrap();
    let out = tcp_server_on(&s.outside_ns(), "::", 7000, 1);
    let a = tcp_ask(&s.ns_of("b"), &format!("[{OUT6}]:7000"), "out").expect("masquerade v6");
    assert!(a.text.starts_with(&format!("[{HOST6}]:")), "{a:?}");
    out.join().unwrap();
    // Not published: the outside dials the container's own address.
    let e = tcp_ask(&s.outside_ns(), &format!("[{web6}]:8080"), "x");
    assert!(
        e.is_err(),
        "reached an unpublished container address: {e:?}"
    );
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(15));
    let p = ev
        .iter()
        .find(|e| e["event"] == "publish")
        .unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(p["family"], "ipv6", "{p}");
    assert_eq!(p["src"], OUT6);
    assert_eq!(p["dst"], HOST6);
    assert_eq!(p["dport"], 8090);
    assert_eq!(p["published_port"]["container"], "web");
    assert_eq!(p["nat"], format!("[{web6}]:8080"), "{p}");
    let q = ev
        .iter()
        .find(|e| e["event"] == "masquerade")
        .unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(q["family"], "ipv6", "{q}");
    assert_eq!(q["container"], "b");
    assert_eq!(q["dst"], OUT6);
    assert_eq!(q["dport"], 7000);
    assert!(
        q["nat"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[{HOST6}]:")),
        "{q}"
    );
    let d = drop_of(&ev, "NotPublished");
    assert_eq!(d["family"], "ipv6", "{d}");
    assert_eq!(d["src"], OUT6);
    assert_eq!(d["dst"], web6.as_str());
    assert_eq!(d["dport"], 8080);
    assert_eq!(d["interface"], "uplink0");
    assert_eq!(d["dst_container"], "web", "{d}");
    drop(m);
    assert_eq!(kernel("pier_conntrack_new_total"), ct0 + 1.0);
    assert_eq!(kernel("pier_masquerade_allocations_total"), nat0 + 1.0);
    s.assert_firewalls_untouched();
}

#[test]
fn a_flood_is_seen_or_counted_lost_exactly() {
    require_root!();
    const SENT: u64 = 20_000;
    // One page of ring: the monitor cannot keep up with a flood.
    let s = Sandbox::new(&["--monitor-buffer", "4096"]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.75.0.0/24", "n1"]);
    h.pier_ok(&["run", "-d", "--name", "a", "--network", "n1"]);
    let ip_a = s.ip_of("a", "n1");
    h.outside(&["ip", "route", "add", "10.75.0.0/24", "via", HOST_UPLINK_IP]);
    let m = Monitor::start(&s, &["--type", "drop"]);
    udp_send(
        &s.outside_ns(),
        None,
        &format!("{ip_a}:9999"),
        SENT as usize,
    );
    let ev = m.collect(Duration::from_secs(2), Duration::from_secs(60));
    let seen = ev
        .iter()
        .filter(|e| e["reason"] == "NotPublished" && e["dport"] == 9999)
        .count() as u64;
    let lost = ev
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["lost"].as_u64().unwrap())
        .max()
        .unwrap_or(0);
    let other = ev
        .iter()
        .filter(|e| e["type"] == "drop" && e["dport"] != 9999)
        .count();
    assert_eq!(other, 0, "only the flood was dropped");
    assert!(
        lost > 0,
        "a 4 KiB ring lost nothing of {SENT} (seen {seen})"
    );
    assert!(seen > 0, "nothing seen");
    assert_eq!(seen + lost, SENT, "seen {seen} + lost {lost}");
    eprintln!("flood: {SENT} sent, {seen} seen, {lost} lost");
    drop(m);
    // A bad ring size is refused at start.
    let out = h.run_agent_to_exit(&["--monitor-buffer", "5000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--monitor-buffer"), "{err}");
    let out = h.pier(&["monitor", "--type", "sideways"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("drop or trace"));
}

/// GET /metrics from the host namespace (the agent listens on its loopback).
fn scrape(s: &Sandbox, port: u16) -> prometheus_parse::Scrape {
    let body = in_ns(&s.host_ns(), move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: pier\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        r
    });
    let (head, body) = body.split_once("\r\n\r\n").expect("http answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("openmetrics-text"),
        "{head}"
    );
    // The body may be chunked: take the exposition lines only.
    let lines: Vec<std::io::Result<String>> = body
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("pier_"))
        .map(|l| Ok(l.to_string()))
        .collect();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("prometheus text")
}

fn value(sc: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = sc
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn metrics_parse_and_their_counters_match_the_packets_sent() {
    require_root!();
    const PORT: u16 = 19464;
    let s = Sandbox::new(&["--metrics-addr", &format!("127.0.0.1:{PORT}")]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.76.0.0/24", "n1"]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "n1",
        "-p",
        "8085:8080/udp",
    ]);
    let ip = s.ip_of("srv", "n1");
    h.outside(&["ip", "route", "add", "10.76.0.0/24", "via", HOST_UPLINK_IP]);
    let before = scrape(&s, PORT);
    let dropped0 = value(
        &before,
        "pier_drop_packets_total",
        &[("reason", "NotPublished")],
    );
    udp_send(&s.outside_ns(), None, &format!("{HOST_UPLINK_IP}:8085"), 50);
    udp_send(&s.outside_ns(), None, &format!("{ip}:7777"), 7);
    std::thread::sleep(Duration::from_millis(300));
    let sc = scrape(&s, PORT);
    let port = [
        ("host_port", "8085"),
        ("proto", "udp"),
        ("container", "srv"),
    ];
    assert_eq!(value(&sc, "pier_port_packets_total", &port), 50.0);
    // Ethernet 14 + IPv4 20 + UDP 8 + 12 bytes of payload.
    assert_eq!(value(&sc, "pier_port_bytes_total", &port), 50.0 * 54.0);
    assert_eq!(value(&sc, "pier_port_denied_packets_total", &port), 0.0);
    assert_eq!(
        value(
            &sc,
            "pier_drop_packets_total",
            &[("reason", "NotPublished")]
        ) - dropped0,
        7.0
    );
    assert_eq!(
        value(
            &sc,
            "pier_traffic_packets_total",
            &[("kind", "container"), ("name", "srv"), ("direction", "in")]
        ),
        50.0
    );
    assert_eq!(
        value(
            &sc,
            "pier_traffic_drop_packets_total",
            &[
                ("kind", "uplink"),
                ("name", "uplink0"),
                ("reason", "NotPublished")
            ]
        ),
        7.0
    );
    assert_eq!(value(&sc, "pier_containers", &[]), 1.0);
    let nets = h.pier_ok(&["network", "ls", "-q"]).lines().count();
    assert_eq!(value(&sc, "pier_networks", &[]), nets as f64);
    assert_eq!(value(&sc, "pier_endpoints", &[]), 1.0);
    assert_eq!(value(&sc, "pier_published_ports", &[]), 1.0);
    assert_eq!(
        value(&sc, "pier_map_capacity", &[("map", "PIER_CT")]),
        65536.0
    );
    assert!(value(&sc, "pier_map_entries", &[("map", "PIER_CT")]) >= 1.0);
    assert_eq!(value(&sc, "pier_monitors_attached", &[]), 0.0);
    assert_eq!(value(&sc, "pier_masquerade_port_pool_size", &[]), 64512.0);
    // Histograms: the API requests made so far, and the syncs of the changes.
    let count = |name: &str| {
        sc.samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => 0.0,
            })
            .sum::<f64>()
    };
    let hist: Vec<_> = sc
        .samples
        .iter()
        .filter(|s| s.metric.contains("duration"))
        .collect();
    assert!(
        count("pier_api_request_duration_seconds") >= 2.0,
        "{hist:#?}"
    );
    assert!(
        hist.iter()
            .any(|s| s.metric == "pier_api_request_duration_seconds"
                && s.labels.get("path") == Some("/containers/create")
                && s.labels.get("method") == Some("POST")),
        "{hist:#?}"
    );
    assert!(
        count("pier_dataplane_sync_duration_seconds") >= 2.0,
        "{hist:#?}"
    );
    let out = h.run_agent_to_exit(&["--metrics-addr", "not-an-address"]);
    assert!(!out.status.success());
    s.assert_firewalls_untouched();
}

#[test]
fn the_graph_shows_every_container_and_port() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.77.0.0/24", "front"]);
    h.pier_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.78.0.0/24",
        "back",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "-p",
        "8081:80",
        "-p",
        "8443:443",
    ]);
    h.pier_ok(&["run", "-d", "--name", "db", "--network", "back"]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "cache",
        "--network",
        "front",
        "-p",
        "127.0.0.1:6380:6379/udp",
    ]);
    h.pier_ok(&["network", "connect", "back", "web"]);
    let dot = h.pier_ok(&["graph"]);
    assert!(dot.starts_with("digraph pier {"), "{dot}");
    for c in ["web", "db", "cache"] {
        assert!(dot.contains(&format!("\"ctr:{c}\"")), "{c}: {dot}");
    }
    for p in ["0.0.0.0:8081/tcp", "0.0.0.0:8443/tcp", "127.0.0.1:6380/udp"] {
        assert!(dot.contains(&format!("\"port:{p}\"")), "{p}: {dot}");
    }
    for a in [
        s.ip_of("web", "front"),
        s.ip_of("web", "back"),
        s.ip_of("db", "back"),
        s.ip_of("cache", "front"),
    ] {
        assert!(dot.contains(&a.to_string()), "{a}: {dot}");
    }
    assert!(dot.contains("\"uplink:uplink0\""), "{dot}");
    assert!(dot.contains("internal"), "{dot}");
    assert!(
        dot.contains("\"net:front\" -> \"net:back\" [label=\"isolated\"")
            || dot.contains("\"net:back\" -> \"net:front\" [label=\"isolated\""),
        "{dot}"
    );
    // The internal network has no way to the uplink.
    assert!(!dot.contains("\"net:back\" -> \"uplink:uplink0\""), "{dot}");
    let file = h.dir.join("graph.svg");
    h.pier_ok(&["graph", "--format", "svg", "-o", file.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    for w in ["web", "db", "cache", "8081", "6380"] {
        assert!(svg.contains(w), "{w} not in the SVG");
    }
    let out = h.pier(&["graph", "--format", "png"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dot or svg"));
}
