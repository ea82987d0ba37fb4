//! Dual-stack networks through the CLI against a real agent: `network
//! create --ipv6` (given pool or the next free ULA /64), the default bridge
//! with `--default-subnet-v6`, containers with IPv6 addresses in order
//! (released ones reused, `--ip6` on `run` and `network connect`), their
//! default IPv6 route, `inspect`, `network inspect` and `/etc/hosts`, IPv6
//! traffic within a network and none across; and every bad IPv6 input, each
//! one clear error with nothing left behind.
mod agent_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use agent_util::*;
use pier_tests::{TestHost, require_root};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A TCP server on `[::]:port` in `ns` answering `conns` connections with
/// the peer it saw.
fn tcp_server6(ns: &Path, port: u16, conns: usize) -> JoinHandle<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = pier_tests::net::bind_retrying(|| TcpListener::bind(("::", port))).unwrap();
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..conns {
            let Ok((mut s, peer)) = l.accept() else { break };
            let _ = write!(s, "{}", peer.ip());
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// The address the server at `dst` saw `ns` connect from.
fn seen_from(ns: &Path, dst: &str) -> std::io::Result<String> {
    let dst: SocketAddr = dst.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

fn v6_of(sb: &Sandbox, name: &str, net: &str) -> (String, u64, String) {
    let n = &sb.inspect(name)["NetworkSettings"]["Networks"][net];
    (
        n["GlobalIPv6Address"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        n["GlobalIPv6PrefixLen"].as_u64().unwrap_or(0),
        n["IPv6Gateway"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn dual_stack_networks_give_containers_both_families() {
    require_root!();
    let sb = Sandbox::new(&["--default-subnet-v6", "fd00:17::/64"]);
    let h = &sb.host;
    // The default bridge is dual stack.
    let addr = h.host(&["ip", "-6", "-o", "addr", "show", "dev", "pier0"]);
    assert!(addr.contains("inet6 fd00:17::1/64"), "{addr}");
    let b = json(&h.pier_ok(&["network", "inspect", "bridge"]));
    assert_eq!(b[0]["EnableIPv6"], true);
    assert_eq!(b[0]["IPAM"]["Config"][1]["Subnet"], "fd00:17::/64");
    assert_eq!(b[0]["IPAM"]["Config"][1]["Gateway"], "fd00:17::1");
    // A given pool, and pier's choice.
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.70.0.0/24",
        "--subnet",
        "fd00:70::/64",
        "n6",
    ]);
    h.pier_ok(&["network", "create", "--ipv6", "auto6"]);
    h.pier_ok(&["network", "create", "--ipv6", "auto6b"]);
    let n = json(&h.pier_ok(&["network", "inspect", "n6", "auto6", "auto6b"]));
    assert_eq!(n[0]["EnableIPv6"], true);
    assert_eq!(n[0]["IPAM"]["Config"][0]["Subnet"], "10.70.0.0/24");
    assert_eq!(n[0]["IPAM"]["Config"][1]["Subnet"], "fd00:70::/64");
    assert_eq!(n[0]["IPAM"]["Config"][1]["Gateway"], "fd00:70::1");
    assert_eq!(n[1]["IPAM"]["Config"][1]["Subnet"], "fd50:6965:7200::/64");
    assert_eq!(n[2]["IPAM"]["Config"][1]["Subnet"], "fd50:6965:7200:1::/64");
    let bridge = n[0]["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("br-{}", &n[0]["Id"].as_str().unwrap()[..12]));
    let addr = h.host(&["ip", "-6", "-o", "addr", "show", "dev", &bridge]);
    assert!(addr.contains("inet6 fd00:70::1/64"), "{addr}");
    // IPv4-only networks stay so.
    h.pier_ok(&["network", "create", "--subnet", "10.71.0.0/24", "n4"]);
    let n4 = json(&h.pier_ok(&["network", "inspect", "n4"]));
    assert_eq!(n4[0]["EnableIPv6"], false);
    assert_eq!(n4[0]["IPAM"]["Config"].as_array().unwrap().len(), 1);

    // Addresses in order, a released one handed out again, --ip6.
    for c in ["u1", "u2"] {
        h.pier_ok(&["run", "-d", "--name", c, "--network", "n6"]);
    }
    assert_eq!(
        v6_of(&sb, "u1", "n6"),
        ("fd00:70::2".into(), 64, "fd00:70::1".into())
    );
    assert_eq!(v6_of(&sb, "u2", "n6").0, "fd00:70::3");
    h.pier_ok(&["rm", "-f", "u1"]);
    h.pier_ok(&["run", "-d", "--name", "u3", "--network", "n6"]);
    assert_eq!(
        v6_of(&sb, "u3", "n6").0,
        "fd00:70::2",
        "released address reused"
    );
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "u4",
        "--network",
        "n6",
        "--ip6",
        "fd00:70::99",
    ]);
    assert_eq!(v6_of(&sb, "u4", "n6").0, "fd00:70::99");
    let c = json(&h.pier_ok(&["network", "inspect", "n6"]));
    let id3 = h.container_id("u3");
    assert_eq!(c[0]["Containers"][&id3]["IPv6Address"], "fd00:70::2/64");
    // Inside: the address, the default IPv6 route, /etc/hosts with both.
    let a = h.in_container("u3", &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(a.contains("inet6 fd00:70::2/64"), "{a}");
    let r = h.in_container("u3", &["ip", "-6", "route", "show", "default"]);
    assert!(r.contains("default via fd00:70::1 dev eth0"), "{r}");
    let hosts =
        std::fs::read_to_string(h.run_dir().join("containers").join(&id3).join("hosts")).unwrap();
    let hn = sb.inspect("u3")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(hosts.contains(&format!("10.70.0.2\t{hn}")), "{hosts}");
    assert!(hosts.contains(&format!("fd00:70::2\t{hn}")), "{hosts}");

    // Names: AAAA for a dual-stack peer, and its ip6.arpa name back.
    let aaaa = h.pier_ok(&["exec", "u3", "--", "getent", "ahostsv6", "u2"]);
    assert!(aaaa.lines().any(|l| l.starts_with("fd00:70::3 ")), "{aaaa}");
    let ptr = h.pier_ok(&["exec", "u3", "--", "getent", "hosts", "fd00:70::3"]);
    assert!(ptr.contains("u2.n6"), "{ptr}");
    // IPv6 within the network keeps the client's address; the gateway answers.
    let s = tcp_server6(&sb.ns_of("u2"), 8080, 1);
    let seen = seen_from(&sb.ns_of("u3"), "[fd00:70::3]:8080").expect("u3 -> u2 over IPv6");
    assert_eq!(seen, "fd00:70::2");
    s.join().unwrap();
    assert!(ping(&sb.ns_of("u3"), "fd00:70::1"), "gateway");
    // Not across networks; connected to both (--ip6 on connect), it is.
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:72::/64",
        "n7",
    ]);
    h.pier_ok(&["run", "-d", "--name", "u5", "--network", "n7"]);
    let _s = tcp_server6(&sb.ns_of("u2"), 8081, 1);
    seen_from(&sb.ns_of("u5"), "[fd00:70::3]:8081").expect_err("across networks");
    h.pier_ok(&["network", "connect", "--ip6", "fd00:70::50", "n6", "u5"]);
    assert_eq!(v6_of(&sb, "u5", "n6").0, "fd00:70::50");
    assert_eq!(v6_of(&sb, "u5", "n7").0, "fd00:72::2");
    let seen = seen_from(&sb.ns_of("u5"), "[fd00:70::3]:8081").expect("connected");
    assert_eq!(seen, "fd00:70::50");
    // Disconnect and remove leave no IPv6 address behind.
    h.pier_ok(&["network", "disconnect", "n6", "u5"]);
    for c in ["u2", "u3", "u4", "u5"] {
        h.pier_ok(&["rm", "-f", c]);
    }
    h.pier_ok(&["network", "rm", "n6", "n7", "auto6", "auto6b", "n4"]);
    let left = h.host(&["ip", "-6", "-o", "addr", "show", "scope", "global"]);
    assert!(
        !left.contains("fd00:70") && !left.contains("fd50:"),
        "{left}"
    );
    sb.assert_firewalls_untouched();
}

/// The kernel's IPv6 tables the agent writes (endpoints, network
/// gateways, published ports), and the IPv4 endpoints, as text.
fn v6_maps(h: &TestHost) -> String {
    use agent_util::consistency::hash_entries;
    use pier_common::{
        endpoint::{Addr6, EndpointVal, EndpointVal4},
        maps as names,
        nat6::{PortKey6, PortVal6},
    };
    let d = &h.bpffs_dir;
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n",
        hash_entries::<Addr6, EndpointVal>(d, names::ENDPOINTS6),
        hash_entries::<u32, Addr6>(d, names::NETWORKS6),
        hash_entries::<PortKey6, PortVal6>(d, names::PORTS6),
        hash_entries::<u32, EndpointVal4>(d, names::ENDPOINTS).len(),
    )
}

/// Run `args`, expect one `Error:` line containing `want`, nothing changed
/// (links, IPv4 and IPv6 addresses, namespaces, records, map entries).
fn refused(h: &TestHost, args: &[&str], want: &str) {
    let world = || h.world() + &h.host(&["ip", "-br", "-6", "addr", "show"]) + &v6_maps(h);
    let before = world();
    let err = h.pier_err(args);
    assert!(
        err.starts_with("Error: ") && err.contains(want) && err.trim_end().lines().count() == 1,
        "pier {args:?}: want one line with {want:?}, got {err:?}"
    );
    assert_eq!(world(), before, "pier {args:?} changed something");
}

#[test]
fn bad_ipv6_input_gets_one_error_and_changes_nothing() {
    require_root!();
    let sb = Sandbox::new(&[]);
    let h = &sb.host;
    // An IPv6 subnet the host routes (on the uplink, in the test's host namespace).
    h.host(&["ip", "addr", "add", "fd18::1/64", "dev", "uplink0", "nodad"]);
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:70::/64",
        "n6",
    ]);
    h.pier_ok(&["network", "create", "n4"]);
    h.pier_ok(&["run", "-d", "--name", "u1", "--network", "n6"]);
    // What `refused` compares holds u1's IPv6 endpoint and n6's gateway.
    let maps = v6_maps(h);
    assert!(
        maps.contains("EndpointVal {") && maps.lines().nth(1) != Some("{}"),
        "{maps}"
    );
    let create = |extra: &[&'static str]| {
        let mut v = vec!["network", "create"];
        v.extend_from_slice(extra);
        v.push("x");
        v
    };
    for (args, want) in [
        (
            create(&["--ipv6", "--subnet", "fd00:70:0:0:8000::/65"]),
            "Pool overlaps with other one on this address space",
        ),
        (
            create(&["--ipv6", "--subnet", "fd00::/16"]),
            "Pool overlaps",
        ),
        (
            create(&["--ipv6", "--subnet", "fd18::/64"]),
            "subnet fd18::/64 overlaps fd18::/64, which is routed on the host",
        ),
        (
            create(&[
                "--ipv6",
                "--subnet",
                "fd00:71::/64",
                "--gateway",
                "fd00:72::1",
            ]),
            "no matching subnet for IPv6 gateway fd00:72::1",
        ),
        (
            create(&["--ipv6", "--subnet", "fd00:71::5/64"]),
            "it should be fd00:71::/64",
        ),
        (
            create(&["--ipv6", "--subnet", "fd00:zz::/64"]),
            "invalid IPv6 subnet fd00:zz::/64",
        ),
        (
            create(&["--subnet", "fd00:71::/64"]),
            "needs EnableIPv6 (--ipv6)",
        ),
        (
            create(&[
                "--ipv6",
                "--subnet",
                "fd00:71::/64",
                "--subnet",
                "fd00:73::/64",
            ]),
            "one IPv6 value at most",
        ),
        (
            create(&["--ipv6", "--gateway", "fd00:71::1"]),
            "an IPv6 --gateway or --ip-range needs an IPv6 --subnet",
        ),
        (
            create(&[
                "--ipv6",
                "--subnet",
                "fd00:71::/64",
                "--ip-range",
                "fd00:74::/80",
            ]),
            "ip range fd00:74::/80 is not inside subnet fd00:71::/64",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "x",
                "--network",
                "n6",
                "--ip6",
                "fd00:99::5",
            ],
            "no available IPv6 address fd00:99::5: it is not in network n6's range",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "x",
                "--network",
                "n6",
                "--ip6",
                "fd00:70::2",
            ],
            "Address already in use: fd00:70::2",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "x",
                "--network",
                "n6",
                "--ip6",
                "fd00:70::1",
            ],
            "Address already in use: fd00:70::1",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "x",
                "--network",
                "n4",
                "--ip6",
                "fd00:70::9",
            ],
            "network n4 has no IPv6 (create it with --ipv6)",
        ),
        (
            vec![
                "run",
                "-d",
                "--name",
                "x",
                "--network",
                "n6",
                "--ip6",
                "10.0.0.1",
            ],
            "invalid IPv6 address \"10.0.0.1\"",
        ),
        (
            vec!["run", "-d", "--name", "x", "--ip6", "fd00:70::9"],
            "user specified IP address is supported on user defined networks only",
        ),
        (
            vec!["network", "connect", "--ip6", "fd00:70::2", "n6", "u1"],
            "endpoint with name u1 already exists in network n6",
        ),
    ] {
        refused(h, &args, want);
    }
    h.pier_ok(&["run", "-d", "--name", "u2", "--network", "n4"]);
    for (args, want) in [
        (
            vec!["network", "connect", "--ip6", "fd00:70::2", "n6", "u2"],
            "Address already in use: fd00:70::2",
        ),
        (
            vec!["network", "connect", "--ip6", "fd00:71::2", "n6", "u2"],
            "not in network n6's range",
        ),
        (
            vec!["network", "connect", "--ip6", "nonsense", "n6", "u2"],
            "not an IPv6 address",
        ),
    ] {
        refused(h, &args, want);
    }
    sb.assert_firewalls_untouched();
}

/// `-p` on a dual-stack container through the CLI: no address binds both
/// families, `[::]` and `0.0.0.0` one each, `[ADDR]` that address; from
/// outside the server sees the client's own IPv6 address; the container's
/// own IPv6 traffic leaves masqueraded as the uplink's address; and an IPv6
/// host address on a container without IPv6 is refused, leaving nothing.
#[test]
fn dual_stack_ports_publish_each_family_as_docker_does() {
    require_root!();
    let sb = Sandbox::new(&[]);
    let h = &sb.host;
    sb.add_ipv6_uplink();
    let out = sb.outside_ns();
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.81.0.0/24",
        "--subnet",
        "fd00:81::/64",
        "p6",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "w1",
        "--network",
        "p6",
        "-p",
        "8080:80",
        "-p",
        "[::]:8081:81",
        "-p",
        "0.0.0.0:8082:82",
        "-p",
        "[fd18::1]:8083:83",
    ]);
    let w1 = sb.ns_of("w1");
    let ask = |dst: &str| seen_from(&out, dst);
    let serve = |port: u16, n: usize| tcp_server6(&w1, port, n);
    // 8080: both families, each client seen as itself.
    let s = serve(80, 2);
    assert_eq!(ask("[fd18::1]:8080").expect("8080 over IPv6"), "fd18::2");
    assert_eq!(
        ask("198.18.0.1:8080").expect("8080 over IPv4"),
        "::ffff:198.18.0.2"
    );
    s.join().unwrap();
    // 8081: IPv6 only; 8082: IPv4 only; 8083: that address only.
    let s = serve(81, 1);
    assert_eq!(ask("[fd18::1]:8081").expect("[::]:8081"), "fd18::2");
    ask("198.18.0.1:8081").expect_err("[::]:8081 is not on IPv4");
    s.join().unwrap();
    let s = serve(82, 1);
    assert_eq!(
        ask("198.18.0.1:8082").expect("0.0.0.0:8082"),
        "::ffff:198.18.0.2"
    );
    ask("[fd18::1]:8082").expect_err("0.0.0.0:8082 is not on IPv6");
    s.join().unwrap();
    let s = serve(83, 1);
    assert_eq!(ask("[fd18::1]:8083").expect("[fd18::1]:8083"), "fd18::2");
    s.join().unwrap();
    let ports = h.pier_ok(&["port", "w1"]);
    assert!(ports.contains("81/tcp -> [::]:8081"), "{ports}");
    assert!(ports.contains("83/tcp -> [fd18::1]:8083"), "{ports}");
    // `-p 8080:80` on a dual-stack container: a row per family, as Docker.
    assert!(
        ports.contains("80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n"),
        "{ports}"
    );
    assert!(!ports.contains("82/tcp -> [::]"), "{ports}");
    assert_eq!(
        h.pier_ok(&["port", "w1", "80"]),
        "0.0.0.0:8080\n[::]:8080\n"
    );
    let ps = h.pier_ok(&["ps", "--format", "{{.Ports}}"]);
    // (`[::]:8081:81` joins 8080's IPv6 row into a range, as Docker's ps.)
    assert!(
        ps.contains("0.0.0.0:8080->80/tcp, :::8080-8081->80-81/tcp, 0.0.0.0:8082->82/tcp"),
        "{ps}"
    );
    let i: serde_json::Value = serde_json::from_str(&h.pier_ok(&["inspect", "w1"])).unwrap();
    assert_eq!(
        i[0]["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "::", "HostPort": "8080"}
        ]),
        "{i}"
    );
    assert_eq!(
        i[0]["HostConfig"]["PortBindings"]["80/tcp"],
        serde_json::json!([{"HostIp": "", "HostPort": "8080"}]),
        "{i}"
    );
    // The container's own traffic leaves as the host's IPv6 address.
    let s = tcp_server6(&out, 7000, 1);
    assert_eq!(
        seen_from(&w1, "[fd18::2]:7000").expect("masquerade"),
        "fd18::1"
    );
    s.join().unwrap();
    assert!(ping(&w1, "fd18::2"), "ping6 through masquerade");
    // A second container may not take a port of either family twice.
    refused(
        h,
        &[
            "run",
            "-d",
            "--name",
            "w2",
            "--network",
            "p6",
            "-p",
            "[::]:8080:80",
        ],
        "port is already allocated",
    );
    // IPv6 host address, IPv4-only network.
    h.pier_ok(&["network", "create", "--subnet", "10.82.0.0/24", "p4"]);
    refused(
        h,
        &[
            "run",
            "-d",
            "--name",
            "w3",
            "--network",
            "p4",
            "-p",
            "[::]:9000:80",
        ],
        "the container has no IPv6 address",
    );
    h.pier_ok(&["rm", "-f", "w1"]);
    h.pier_ok(&["network", "rm", "p6", "p4"]);
    sb.assert_firewalls_untouched();
}

/// Port ranges on a dual-stack container: `-p 8000-8009:8000-8009` binds
/// both families, each port reached over IPv6 (and IPv4) from outside with
/// the client's own address; `[::]:9000-9002:7000-7002` IPv6 only, each
/// host port to its container port; `port` lists every row.
#[test]
fn ipv6_port_ranges_reach_each_port() {
    require_root!();
    let sb = Sandbox::new(&[]);
    let h = &sb.host;
    sb.add_ipv6_uplink();
    let out = sb.outside_ns();
    h.pier_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.83.0.0/24",
        "--subnet",
        "fd00:83::/64",
        "r6",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "w1",
        "--network",
        "r6",
        "-p",
        "8000-8009:8000-8009",
        "-p",
        "[::]:9000-9002:7000-7002",
    ]);
    let w1 = sb.ns_of("w1");
    for port in 8000..=8009u16 {
        let s = tcp_server6(&w1, port, 2);
        assert_eq!(
            seen_from(&out, &format!("[fd18::1]:{port}"))
                .unwrap_or_else(|e| panic!("[fd18::1]:{port}: {e}")),
            "fd18::2",
            "port {port} over IPv6"
        );
        assert_eq!(
            seen_from(&out, &format!("198.18.0.1:{port}"))
                .unwrap_or_else(|e| panic!("198.18.0.1:{port}: {e}")),
            "::ffff:198.18.0.2",
            "port {port} over IPv4"
        );
        s.join().unwrap();
    }
    for (host_port, port) in [(9000u16, 7000u16), (9001, 7001), (9002, 7002)] {
        let s = tcp_server6(&w1, port, 1);
        assert_eq!(
            seen_from(&out, &format!("[fd18::1]:{host_port}"))
                .unwrap_or_else(|e| panic!("[fd18::1]:{host_port}: {e}")),
            "fd18::2",
            "[::]:{host_port}"
        );
        seen_from(&out, &format!("198.18.0.1:{host_port}"))
            .expect_err("[::]:9000-9002 is not on IPv4");
        s.join().unwrap();
    }
    let ports = h.pier_ok(&["port", "w1"]);
    for port in 8000..=8009 {
        assert!(
            ports.contains(&format!(
                "{port}/tcp -> 0.0.0.0:{port}\n{port}/tcp -> [::]:{port}\n"
            )),
            "{ports}"
        );
    }
    for (host_port, port) in [(9000, 7000), (9001, 7001), (9002, 7002)] {
        assert!(
            ports.contains(&format!("{port}/tcp -> [::]:{host_port}\n")),
            "{ports}"
        );
    }
    h.pier_ok(&["rm", "-f", "w1"]);
    h.pier_ok(&["network", "rm", "r6"]);
    sb.assert_firewalls_untouched();
}
