//! Issue 4 through the agent and its CLI: `pier run -p` publishes ports that
//! clients in the outside namespace, host-local clients and containers
//! (hairpin) reach; `pier rm`/`stop` remove the map entries; clashes are
//! refused with nothing half-made; `pier port` and `pier stats --ports`.
//! Servers are threads in the containers' namespaces; every test ends by
//! comparing both firewalls with their state before it.
mod agent_util;

use std::net::{Ipv4Addr, TcpListener};

use agent_util::*;
use pier_tests::{host::HOST_UPLINK_IP, host::OUTSIDE_IP, require_root};

const GW: &str = "172.17.0.1";

fn entry(host_ip: &str, host_port: u16, proto: u8, backend: Ipv4Addr, port: u16) -> PortEntry {
    PortEntry {
        host_ip: host_ip.parse().unwrap(),
        host_port,
        proto,
        backend,
        backend_port: port,
    }
}

#[test]
fn side_by_side_ports_and_udp_keep_the_client_address() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web1",
        "-p",
        "8081:8080",
        "-p",
        "8083:9090/udp",
    ]);
    h.pier_ok(&["run", "-d", "--name", "web2", "-p", "8082:8080"]);
    let (ip1, ip2) = (s.ip_of("web1", "bridge"), s.ip_of("web2", "bridge"));
    assert_eq!(
        s.port_entries(),
        vec![
            entry("0.0.0.0", 8081, TCP, ip1, 8080),
            entry("0.0.0.0", 8082, TCP, ip2, 8080),
            entry("0.0.0.0", 8083, UDP, ip1, 9090),
        ]
    );
    let out = s.outside_ns();
    for (name, port) in [("web1", 8081), ("web2", 8082)] {
        let srv = tcp_server(&s.ns_of(name), 8080, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:{port}"), name)
            .unwrap_or_else(|e| panic!("{name} via {port}: {e}\n{}", s.log()));
        // No proxy, no SNAT on the way in: the server saw the real client.
        assert_eq!(a.seen_ip(), OUTSIDE_IP, "{a:?}");
        assert!(a.text.ends_with(&format!("|{name}")), "{a:?}");
        assert_eq!(srv.join().unwrap()[0].ip().to_string(), OUTSIDE_IP);
    }
    let u = udp_server(&s.ns_of("web1"), 9090, 1);
    let a = udp_ask(&out, &format!("{HOST_UPLINK_IP}:8083"), "dgram").expect("udp answer");
    assert_eq!(a.seen_ip(), OUTSIDE_IP, "{a:?}");
    // The reply comes from the address and port that were dialled.
    assert_eq!(a.peer.to_string(), format!("{HOST_UPLINK_IP}:8083"));
    u.join().unwrap();
    s.assert_firewalls_untouched();
}

#[test]
fn a_1000_port_range_is_one_command_and_works_on_its_first_and_last_port() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "r", "-p", "20000-20999:30000-30999"]);
    let ip = s.ip_of("r", "bridge");
    let e = s.port_entries();
    assert_eq!(e.len(), 1000);
    assert_eq!(e[0], entry("0.0.0.0", 20000, TCP, ip, 30000));
    assert_eq!(e[999], entry("0.0.0.0", 20999, TCP, ip, 30999));
    assert!(e.iter().all(|x| x.backend_port - x.host_port == 10000));
    for (hp, cp) in [(20000, 30000), (20999, 30999)] {
        let srv = tcp_server(&s.ns_of("r"), cp, 1);
        let a = tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:{hp}"), "edge")
            .unwrap_or_else(|e| panic!("port {hp}: {e}"));
        assert_eq!(a.seen_ip(), OUTSIDE_IP);
        srv.join().unwrap();
    }
    let p = h.pier_ok(&["port", "r"]);
    assert_eq!(p.lines().count(), 1000);
    assert_eq!(p.lines().next(), Some("30000/tcp -> 0.0.0.0:20000"));
    assert_eq!(p.lines().last(), Some("30999/tcp -> 0.0.0.0:20999"));
    h.pier_ok(&["rm", "r"]);
    assert_eq!(s.port_entries(), vec![]);
    s.assert_firewalls_untouched();
}

#[test]
fn a_binding_to_a_host_address_answers_only_on_that_address() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    // A second address on the uplink, in the test's own host namespace.
    h.host(&["ip", "addr", "add", "198.18.0.3/24", "dev", "uplink0"]);
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "198.18.0.3:8085:8080"]);
    let ip = s.ip_of("web", "bridge");
    assert_eq!(
        s.port_entries(),
        vec![entry("198.18.0.3", 8085, TCP, ip, 8080)]
    );
    let srv = tcp_server(&s.ns_of("web"), 8080, 1);
    let a = tcp_ask(&s.outside_ns(), "198.18.0.3:8085", "bound").expect("bound address");
    assert_eq!(a.seen_ip(), OUTSIDE_IP);
    srv.join().unwrap();
    // The other host address: nothing listens there (refused, not served).
    let e = tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8085"), "other")
        .expect_err("served on an address it is not bound to");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(h.pier_ok(&["port", "web", "8080"]), "198.18.0.3:8085\n");
    s.assert_firewalls_untouched();
}

#[test]
fn host_local_clients_see_the_address_they_dialled_and_hairpin_is_served() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "8083:9090/udp",
    ]);
    h.pier_ok(&["run", "-d", "--name", "cli"]);
    let (web, cli) = (s.ns_of("web"), s.ns_of("cli"));
    let cli_ip = s.ip_of("cli", "bridge").to_string();
    // Host-local clients (the agent's default cgroup: the cgroup v2 root).
    for dialled in ["127.0.0.1", HOST_UPLINK_IP] {
        let srv = tcp_server(&web, 8080, 1);
        let a = tcp_ask(&s.host_ns(), &format!("{dialled}:8081"), "local")
            .unwrap_or_else(|e| panic!("{dialled}:8081 from the host: {e}\n{}", s.log()));
        assert_eq!(a.peer.to_string(), format!("{dialled}:8081"), "getpeername");
        assert_eq!(a.seen_ip(), GW, "{a:?}");
        srv.join().unwrap();
    }
    let u = udp_server(&web, 9090, 1);
    let a = udp_ask(&s.host_ns(), "127.0.0.1:8083", "u").expect("host-local udp");
    assert_eq!(a.peer.to_string(), "127.0.0.1:8083", "recvfrom");
    u.join().unwrap();
    // Hairpin: another container, then the container itself.
    let dst = format!("{HOST_UPLINK_IP}:8081");
    let srv = tcp_server(&web, 8080, 1);
    let a = tcp_ask(&cli, &dst, "hairpin").expect("hairpin from another container");
    assert_eq!(a.seen_ip(), cli_ip, "{a:?}");
    assert_eq!(a.peer.to_string(), dst);
    srv.join().unwrap();
    let srv = tcp_server(&web, 8080, 1);
    let a = tcp_ask(&web, &dst, "self").expect("hairpin to its own port");
    assert_eq!(a.seen_ip(), GW, "{a:?}");
    srv.join().unwrap();
    s.assert_firewalls_untouched();
}

#[test]
fn without_socket_hooks_host_local_clients_are_not_served() {
    require_root!();
    let s = Sandbox::new(&["--no-cgroup"]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let srv = tcp_server(&s.ns_of("web"), 8080, 1);
    let e = tcp_ask(&s.host_ns(), "127.0.0.1:8081", "x").expect_err("served without hooks");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // Clients outside still are.
    tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), "y").expect("outside client");
    srv.join().unwrap();
    assert!(
        !std::fs::read_dir(s.host.bpffs_dir.join("links"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("connect4")),
        "a cgroup hook is pinned"
    );
    s.assert_firewalls_untouched();
}

#[test]
fn stop_and_rm_remove_the_map_entries() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "-p",
        "8081:8080",
        "-p",
        "127.0.0.1:8091:53/udp",
    ]);
    h.pier_ok(&["run", "-d", "--name", "b", "-p", "8082:8080"]);
    let (ia, ib) = (s.ip_of("a", "bridge"), s.ip_of("b", "bridge"));
    let b_entry = entry("0.0.0.0", 8082, TCP, ib, 8080);
    assert_eq!(
        s.port_entries(),
        vec![
            entry("0.0.0.0", 8081, TCP, ia, 8080),
            b_entry,
            entry("127.0.0.1", 8091, UDP, ia, 53),
        ]
    );
    h.pier_ok(&["stop", "a"]);
    assert_eq!(s.port_entries(), vec![b_entry]);
    assert_eq!(
        h.pier_ok(&["port", "a"]),
        "",
        "a stopped container publishes nothing"
    );
    h.pier_ok(&["start", "a"]);
    assert_eq!(s.port_entries().len(), 3);
    h.pier_ok(&["rm", "-f", "a"]);
    assert_eq!(s.port_entries(), vec![b_entry]);
    // The port is free again for the host and for another container.
    in_ns(&s.host_ns(), || {
        drop(TcpListener::bind("0.0.0.0:8081").expect("8081 released"))
    });
    h.pier_ok(&["run", "-d", "--name", "c", "-p", "8081:7000"]);
    let ic = s.ip_of("c", "bridge");
    assert!(
        s.port_entries()
            .contains(&entry("0.0.0.0", 8081, TCP, ic, 7000))
    );
    h.pier_ok(&["rm", "-f", "b", "c"]);
    assert_eq!(s.port_entries(), vec![]);
    s.assert_firewalls_untouched();
}

#[test]
fn clashing_ports_are_refused_and_leave_nothing_half_made() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let before = (h.world(), s.port_entries());
    // The same port twice.
    let e = h.pier_err(&["run", "-d", "--name", "dup", "-p", "8081:9000"]);
    assert!(e.contains("port is already allocated"), "{e}");
    assert_eq!((h.world(), s.port_entries()), before);
    // A port a host process listens on.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let listener = spawn_in(&s.host_ns(), move || {
        let _l = TcpListener::bind("0.0.0.0:8086").expect("host listener");
        ready_tx.send(()).unwrap();
        let _ = rx.recv();
    });
    ready_rx.recv().unwrap();
    let e = h.pier_err(&["run", "-d", "--name", "taken", "-p", "8086:80"]);
    assert!(e.contains("port is already allocated"), "{e}");
    assert!(e.contains("8086"), "{e}");
    assert_eq!((h.world(), s.port_entries()), before);
    drop(tx);
    listener.join().unwrap();
    // Published ports are reserved against host processes.
    let r = in_ns(&s.host_ns(), || TcpListener::bind("0.0.0.0:8081").map(drop));
    assert_eq!(
        r.expect_err("a host process took a published port").kind(),
        std::io::ErrorKind::AddrInUse
    );
    // Once free, the port can be published.
    h.pier_ok(&["run", "-d", "--name", "taken", "-p", "8086:80"]);
    s.assert_firewalls_untouched();
}

#[test]
fn port_lists_published_ports_like_docker_port() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "127.0.0.1:5000-5001:6000-6001/udp",
        "-p",
        "8443:443",
    ]);
    assert_eq!(
        h.pier_ok(&["port", "web"]),
        "443/tcp -> 0.0.0.0:8443\n6000/udp -> 127.0.0.1:5000\n6001/udp -> 127.0.0.1:5001\n8080/tcp -> 0.0.0.0:8081\n"
    );
    assert_eq!(h.pier_ok(&["port", "web", "8080/tcp"]), "0.0.0.0:8081\n");
    assert_eq!(h.pier_ok(&["port", "web", "6001/udp"]), "127.0.0.1:5001\n");
    let e = h.pier_err(&["port", "web", "6001"]);
    assert_eq!(e, "Error: No public port '6001/tcp' published for web\n");
    let e = h.pier_err(&["port", "nosuch"]);
    assert_eq!(e, "Error: No such container: nosuch\n");
    let e = h.pier_err(&["port", "web", "80/sctp"]);
    assert!(e.contains("invalid protocol"), "{e}");
    s.assert_firewalls_untouched();
}

#[test]
fn stats_ports_counts_exactly_what_reached_each_port() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "dns", "-p", "8053:53/udp"]);
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let (idns, iweb) = (s.ip_of("dns", "bridge"), s.ip_of("web", "bridge"));
    // 25 datagrams of 100 bytes: each frame is 14 + 20 + 8 + 100 bytes.
    pier_tests::net::send_udp(
        &s.host.outside_ns,
        &format!("{HOST_UPLINK_IP}:8053"),
        25,
        100,
    );
    let rows: Vec<serde_json::Value> = h
        .pier_ok(&["stats", "--ports", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"Container": "dns", "HostIP": "0.0.0.0", "HostPort": 8053,
                "Type": "udp", "ContainerIP": idns.to_string(), "ContainerPort": 53,
                "Packets": 25, "Bytes": 25 * 142, "Denied": 0}),
            serde_json::json!({"Container": "web", "HostIP": "0.0.0.0", "HostPort": 8081,
                "Type": "tcp", "ContainerIP": iweb.to_string(), "ContainerPort": 8080,
                "Packets": 0, "Bytes": 0, "Denied": 0}),
        ]
    );
    // Hairpin from a container counts; host-local clients (socket hooks) do not.
    h.pier_ok(&["run", "-d", "--name", "cli"]);
    let send = |ns: std::path::PathBuf, dst: &'static str, n: usize| {
        in_ns(&ns, move || {
            let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..n {
                u.send_to(&[0x5a; 100], dst).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        })
    };
    send(s.ns_of("cli"), "198.18.0.1:8053", 3);
    send(s.host_ns(), "127.0.0.1:8053", 2);
    let table = h.pier_ok(&["stats", "--ports", "dns"]);
    let cells: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let target = format!("{idns}:53");
    assert_eq!(
        cells,
        vec![
            vec!["NAME", "PUBLISHED", "TARGET", "PACKETS", "BYTES", "DENIED"],
            vec!["dns", "0.0.0.0:8053/udp", &target, "28", "3976", "0"],
        ]
    );
    s.assert_firewalls_untouched();
}

#[test]
fn the_agent_retires_idle_udp_flows_on_its_timer() {
    require_root!();
    let s = Sandbox::new(&["--ct-udp-timeout", "1", "--ct-gc-interval", "1"]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "dns", "-p", "8053:53/udp"]);
    let bpffs = s.host.bpffs_dir.clone();
    assert_eq!(ct_entries(&bpffs), 0);
    // One flow (one source port), five datagrams.
    pier_tests::net::send_udp(&s.host.outside_ns, &format!("{HOST_UPLINK_IP}:8053"), 5, 10);
    assert_eq!(ct_entries(&bpffs), 1, "the flow is tracked");
    // No change is made from here on: only the agent's timer can retire it.
    let t0 = std::time::Instant::now();
    while ct_entries(&bpffs) != 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "the idle flow was not retired in 5 s\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(800),
        "retired before it was idle"
    );
    s.assert_firewalls_untouched();
}

#[test]
fn bad_agent_flags_are_one_line_errors() {
    require_root!();
    let h = pier_tests::TestHost::new();
    let out = h.run_agent_to_exit(&["--ct-gc-interval", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--ct-gc-interval"), "{err}");
    let out = h.run_agent_to_exit(&["--cgroup", "/sys/fs/cgroup/unified", "--no-cgroup"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot be used with"), "{err}");
    // A start failure in the dataplane (an uplink that does not exist): one
    // line that names it, each cause said once.
    let out = h.run_agent_to_exit(&["--uplink", "nosuch0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("Error: ") && line.contains("nosuch0"),
        "{err}"
    );
    let parts: Vec<&str> = line.split(": ").collect();
    let mut seen = std::collections::BTreeSet::new();
    assert!(
        parts.iter().all(|p| seen.insert(*p)),
        "a cause repeated: {line}"
    );
    // Nothing was made.
    assert!(!h.bpffs_dir.exists());
    assert!(!h.socket().exists());
}

#[test]
fn exposure_is_exact_and_publishing_does_not_depend_on_netfilter() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    s.host
        .pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let ip = s.ip_of("web", "bridge");
    let web = s.ns_of("web");
    let out = s.outside_ns();
    // The outside knows a route to the container subnet via the host.
    s.host
        .outside(&["ip", "route", "add", "172.17.0.0/16", "via", HOST_UPLINK_IP]);
    // In the test's own host namespace: no rules at all, and FORWARD DROP.
    s.host.host(&["iptables", "-F"]);
    s.host.host(&["nft", "flush", "ruleset"]);
    s.host.host(&["iptables", "-P", "FORWARD", "DROP"]);
    assert_eq!(
        s.host.host(&["iptables", "-S", "FORWARD"]),
        "-P FORWARD DROP\n"
    );
    s.rebase_firewalls();
    let srv = tcp_server(&web, 8080, 2);
    let unpublished = tcp_server(&web, 9000, 1);
    // The container's address is not reachable directly, published or not
    // (moby#45610), and an unpublished port is not reachable on the host.
    for dst in [format!("{ip}:8080"), format!("{ip}:9000")] {
        assert!(
            tcp_ask(&out, &dst, "direct").is_err(),
            "{dst} reached directly"
        );
    }
    let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:9000"), "x").expect_err("9000 reached");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // Published: served, with FORWARD DROP and no netfilter rule.
    let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "pub").expect("published port");
    assert_eq!(a.seen_ip(), OUTSIDE_IP);
    // The container still gets out (masquerade in eBPF, not netfilter).
    let o = tcp_server(&out, 7000, 1);
    let a = tcp_ask(&web, &format!("{OUTSIDE_IP}:7000"), "out").expect("masquerade");
    assert_eq!(a.seen_ip(), HOST_UPLINK_IP);
    o.join().unwrap();
    // Release the servers: only the published connection and these reached them.
    tcp_ask(&web, "127.0.0.1:8080", "local").expect("local 8080");
    tcp_ask(&web, "127.0.0.1:9000", "local").expect("local 9000");
    let peers: Vec<String> = srv
        .join()
        .unwrap()
        .iter()
        .map(|p| p.ip().to_string())
        .collect();
    assert_eq!(peers, vec![OUTSIDE_IP.to_string(), "127.0.0.1".to_string()]);
    assert_eq!(unpublished.join().unwrap()[0].ip().to_string(), "127.0.0.1");
    s.assert_firewalls_untouched();
}

#[test]
fn published_ports_follow_the_container_when_its_first_network_is_disconnected() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.67.0.0/24", "n1"]);
    h.pier_ok(&["network", "create", "--subnet", "10.68.0.0/24", "n2"]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "-p",
        "8081:8080",
    ]);
    h.pier_ok(&["network", "connect", "n2", "web"]);
    h.pier_ok(&["network", "disconnect", "n1", "web"]);
    let ip = s.ip_of("web", "n2");
    assert_eq!(
        s.port_entries(),
        vec![entry("0.0.0.0", 8081, TCP, ip, 8080)]
    );
    let web = s.ns_of("web");
    // The default route moved to n2 (as in Docker): the published port
    // answers, and the container still gets out.
    let srv = tcp_server(&web, 8080, 1);
    let a = tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), "moved")
        .expect("published port after the first network was disconnected");
    assert_eq!(a.seen_ip(), OUTSIDE_IP);
    srv.join().unwrap();
    let o = tcp_server(&s.outside_ns(), 7000, 1);
    let a = tcp_ask(&web, &format!("{OUTSIDE_IP}:7000"), "out").expect("web to outside");
    assert_eq!(a.seen_ip(), HOST_UPLINK_IP);
    o.join().unwrap();
    s.assert_firewalls_untouched();
}

#[test]
fn a_container_whose_command_exits_releases_its_ports() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "brief",
        "-p",
        "8081:8080",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 3",
    ]);
    let ip = s.ip_of("brief", "bridge");
    assert_eq!(
        s.port_entries(),
        vec![entry("0.0.0.0", 8081, TCP, ip, 8080)]
    );
    // Once the command ended: no map entry, and the port is free again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !s.port_entries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s.port_entries(), vec![], "{}", s.log());
    in_ns(&s.host_ns(), || TcpListener::bind("0.0.0.0:8081").map(drop))
        .expect("the port of an exited container is free");
    // It shows as exited, with its command's exit code.
    assert_eq!(s.inspect("brief")["State"]["ExitCode"], 3);
    assert!(
        h.pier_ok(&["ps", "-a"]).contains("Exited (3)"),
        "{}",
        h.pier_ok(&["ps", "-a"])
    );
    // Started again, it publishes again.
    h.pier_ok(&["start", "brief"]);
    assert_eq!(
        s.port_entries(),
        vec![entry("0.0.0.0", 8081, TCP, ip, 8080)]
    );
    s.assert_firewalls_untouched();
}

#[test]
fn containers_reach_published_ports_on_bridge_gateway_addresses() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&["network", "create", "--subnet", "10.69.0.0/24", "n1"]);
    h.pier_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.70.0.0/24",
        "inner",
    ]);
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    h.pier_ok(&["run", "-d", "--name", "cli"]);
    h.pier_ok(&["run", "-d", "--name", "far", "--network", "n1"]);
    h.pier_ok(&["run", "-d", "--name", "in", "--network", "inner"]);
    let web = s.ns_of("web");
    // The gateway is the host's address a container knows (Docker's
    // host-gateway, `host.docker.internal`): its own network's, or another
    // bridge's; the server sees the client container, or the gateway when a
    // container dials its own port.
    for (from, dst, seen) in [
        ("cli", GW, s.ip_of("cli", "bridge").to_string()),
        ("web", GW, GW.to_string()),
        ("far", "10.69.0.1", s.ip_of("far", "n1").to_string()),
        ("far", GW, s.ip_of("far", "n1").to_string()),
    ] {
        let srv = tcp_server(&web, 8080, 1);
        let dst = format!("{dst}:8081");
        let a =
            tcp_ask(&s.ns_of(from), &dst, "gw").unwrap_or_else(|e| panic!("{from} → {dst}: {e}"));
        assert_eq!(a.seen_ip(), seen, "{from} → {dst}");
        assert_eq!(a.peer.to_string(), dst, "getpeername");
        srv.join().unwrap();
    }
    // Not from an --internal network, not for an unpublished port.
    let srv = tcp_server(&web, 8080, 1);
    assert!(tcp_ask(&s.ns_of("in"), "10.70.0.1:8081", "in").is_err());
    let e = tcp_ask(&s.ns_of("cli"), &format!("{GW}:8082"), "x").expect_err("unpublished");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    tcp_ask(&web, "127.0.0.1:8080", "done").unwrap();
    assert_eq!(srv.join().unwrap()[0].ip().to_string(), "127.0.0.1");
    s.assert_firewalls_untouched();
}

#[test]
fn kernel_programs_log_drops_at_debug_level_only() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    s.host
        .pier_ok(&["network", "create", "--subnet", "10.71.0.0/24", "n1"]);
    s.host
        .pier_ok(&["network", "create", "--subnet", "10.72.0.0/24", "n2"]);
    s.host
        .pier_ok(&["run", "-d", "--name", "a", "--network", "n1"]);
    s.host
        .pier_ok(&["run", "-d", "--name", "b", "--network", "n2"]);
    let b = s.ip_of("b", "n2").to_string();
    // Isolation drops a's ping to b (reason 2). At the default level the
    // programs log nothing.
    assert!(!ping(&s.ns_of("a"), &b));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!s.log().contains("drop: reason"), "{}", s.log());
    // With debug enabled for them, each drop is in the agent's log.
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    let agent = s.host.start_agent_logging(&[], "info,pier_dataplane=debug");
    s.host.wait_agent_ready();
    assert!(!ping(&s.ns_of("a"), &b));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let logged = |log: &str| {
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("drop: reason 2 ("))
    };
    while !logged(&agent.log()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logged(&agent.log()), "{}", agent.log());
    s.agent = Some(agent);
    s.assert_firewalls_untouched();
}
