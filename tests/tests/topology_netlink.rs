//! `NetlinkTopology` against the kernel, inside TestHosts: bridges, veth
//! endpoints, namespaces, host queries, and that failures leave nothing.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use pier_agent::topology::{
    BridgeSpec, EndpointSpec, NetlinkTopology, Topology, netns::is_netns_mount, sysctl,
};
use pier_tests::{TestHost, host::run_ok, require_root};
use serde_json::Value;

/// `ip -j ARGS` in the TestHost namespace `ns`.
fn ip_ns(ns: &str, args: &[&str]) -> Value {
    let out = run_ok(TestHost::cmd_in(ns, "ip").arg("-j").args(args));
    serde_json::from_str(&out).expect("ip -j output")
}

/// `ip -j ARGS` in the namespace bind-mounted at `path`.
fn ip_at(path: &Path, args: &[&str]) -> Value {
    let out = run_ok(
        Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["--", "ip", "-j"])
            .args(args),
    );
    serde_json::from_str(&out).expect("ip -j output")
}

fn names(links: &Value) -> Vec<String> {
    let mut v: Vec<String> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn inet(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

fn bridge(name: &str) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
        subnet: Some("10.88.0.0/16".parse().unwrap()),
        gateway6: None,
        mtu: Some(1400),
    }
}

fn endpoint(netns: &Path, host: &str, ifname: &str, last: u8) -> EndpointSpec {
    EndpointSpec {
        netns: netns.to_path_buf(),
        host_ifname: host.into(),
        ifname: ifname.into(),
        bridge: "pier0".into(),
        address: Some(format!("10.88.0.{last}/16").parse().unwrap()),
        address6: None,
        mac: [0x02, 0x42, 10, 88, 0, last],
        default_gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
        default_gateway6: None,
        metric: None,
        mtu: None,
        engine_peer: None,
    }
}

fn ns_path(host: &TestHost, name: &str) -> PathBuf {
    host.dir.join("run/netns").join(name)
}

#[test]
fn bridge_gets_gateway_mac_mtu_and_ensure_is_idempotent() {
    require_root!();
    let host = TestHost::new();
    let ns = host.host_ns.clone();
    TestHost::in_netns(&ns, || {
        let topo = NetlinkTopology::new().expect("topology");
        let idx = topo.ensure_bridge(&bridge("pier0")).expect("ensure_bridge");
        let check = || {
            let l = &ip_ns(&ns, &["-d", "addr", "show", "dev", "pier0"])[0];
            assert_eq!(l["ifindex"].as_u64(), Some(idx as u64));
            assert_eq!(l["linkinfo"]["info_kind"], "bridge");
            assert_eq!(l["mtu"], 1400);
            assert_eq!(l["address"], "02:42:0a:58:00:01");
            assert!(
                l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                "bridge is up: {l}"
            );
            assert_eq!(inet(l), vec!["10.88.0.1/16".to_string()]);
        };
        check();
        // Idempotent: the same index, still one address.
        assert_eq!(topo.ensure_bridge(&bridge("pier0")).unwrap(), idx);
        check();
        assert_eq!(topo.link_index("pier0").unwrap(), Some(idx));

        // Host queries see it.
        let subnets = topo.routed_subnets().unwrap();
        assert!(
            subnets.contains(&"10.88.0.0/16".parse().unwrap()),
            "{subnets:?}"
        );
        assert!(
            subnets.contains(&"198.18.0.0/24".parse().unwrap()),
            "{subnets:?}"
        );
        assert!(!subnets.iter().any(|n| n.prefix_len() == 0), "{subnets:?}");
        assert_eq!(
            topo.default_route_iface().unwrap().as_deref(),
            Some("uplink0")
        );
        let mut links = topo.host_links().unwrap();
        links.sort();
        assert_eq!(links, vec!["lo", "pier0", "uplink0"]);

        // Adopting something that is not a bridge, or a gateway outside: refused.
        let e = topo.ensure_bridge(&bridge("uplink0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "interface uplink0 exists and is not a bridge"
        );
        let mut bad = bridge("pier1");
        bad.gateway = Some(Ipv4Addr::new(10, 89, 0, 1));
        let e = topo.ensure_bridge(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gateway 10.89.0.1 is outside subnet 10.88.0.0/16"
        );
        let e = topo
            .ensure_bridge(&bridge("a-very-long-bridge"))
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid interface name"), "{e}");
        assert_eq!(
            names(&ip_ns(&ns, &["link"])),
            vec!["lo", "pier0", "uplink0"]
        );

        topo.remove_bridge("pier0").expect("remove");
        assert_eq!(topo.link_index("pier0").unwrap(), None);
        topo.remove_bridge("pier0").expect("absent is fine");
        assert_eq!(
            topo.remove_bridge("uplink0").unwrap_err().to_string(),
            "interface uplink0 is not a bridge"
        );
        assert!(
            !topo
                .routed_subnets()
                .unwrap()
                .contains(&"10.88.0.0/16".parse().unwrap())
        );
    });
}

#[test]
fn endpoint_is_configured_reaches_the_gateway_and_is_removed() {
    require_root!();
    let host = TestHost::new();
    let ns = host.host_ns.clone();
    let c1 = ns_path(&host, "c1");
    TestHost::in_netns(&ns, || {
        let topo = NetlinkTopology::new().expect("topology");
        topo.ensure_bridge(&bridge("pier0")).unwrap();
        topo.create_netns(&c1).expect("create netns");
        let ep = endpoint(&c1, "vc1", "eth0", 2);
        topo.add_endpoint(&ep).expect("add_endpoint");

        // Inside: lo and eth0, eth0 with the address, MAC and a default route.
        let links = ip_at(&c1, &["addr"]);
        assert_eq!(names(&links), vec!["eth0", "lo"]);
        let eth0 = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == "eth0")
            .unwrap();
        assert_eq!(eth0["address"], "02:42:0a:58:00:02");
        assert_eq!(inet(eth0), vec!["10.88.0.2/16".to_string()]);
        // IPv4 only, like Docker without IPv6: no link-local on eth0; lo keeps ::1.
        let inet6 = |l: &Value| -> Vec<String> {
            l["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet6")
                .map(|a| a["local"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(inet6(eth0), Vec::<String>::new());
        let lo = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == "lo")
            .unwrap();
        assert_eq!(inet6(lo), vec!["::1".to_string()]);
        assert!(eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let routes = ip_at(&c1, &["route"]);
        let default: Vec<&Value> = routes
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["dst"] == "default")
            .collect();
        assert_eq!(default.len(), 1, "{routes}");
        assert_eq!(default[0]["gateway"], "10.88.0.1");
        assert_eq!(default[0]["dev"], "eth0");

        // Host end: up and enslaved to the bridge, the only port.
        let vc1 = &ip_ns(&ns, &["link", "show", "dev", "vc1"])[0];
        assert_eq!(vc1["master"], "pier0");
        assert!(vc1["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert_eq!(
            names(&ip_ns(&ns, &["link", "show", "master", "pier0"])),
            vec!["vc1"]
        );
        // No temporary name is left anywhere.
        assert_eq!(
            names(&ip_ns(&ns, &["link"])),
            vec!["lo", "pier0", "uplink0", "vc1"]
        );

        // The container reaches its gateway.
        run_ok(
            Command::new("nsenter")
                .arg(format!("--net={}", c1.display()))
                .args(["--", "ping", "-c", "1", "-W", "3", "10.88.0.1"]),
        );

        topo.remove_endpoint(&ep).expect("remove_endpoint");
        assert_eq!(names(&ip_at(&c1, &["link"])), vec!["lo"]);
        assert_eq!(
            names(&ip_ns(&ns, &["link"])),
            vec!["lo", "pier0", "uplink0"]
        );
        topo.remove_endpoint(&ep).expect("absent is fine");

        topo.remove_netns(&c1).expect("remove netns");
        assert!(!c1.exists());
        assert!(!is_mounted(&c1));
    });
}

#[test]
fn failed_add_endpoint_leaves_no_veth() {
    require_root!();
    let host = TestHost::new();
    let ns = host.host_ns.clone();
    let c1 = ns_path(&host, "c1");
    TestHost::in_netns(&ns, || {
        let topo = NetlinkTopology::new().expect("topology");
        topo.create_netns(&c1).unwrap();
        let host_links = || names(&ip_ns(&ns, &["link"]));
        let inner_links = || names(&ip_at(&c1, &["link"]));

        // Bridge missing.
        let e = topo
            .add_endpoint(&endpoint(&c1, "vc1", "eth0", 2))
            .unwrap_err();
        assert_eq!(e.to_string(), "bridge pier0 does not exist");
        assert_eq!(host_links(), vec!["lo", "uplink0"]);
        assert_eq!(inner_links(), vec!["lo"]);

        topo.ensure_bridge(&bridge("pier0")).unwrap();
        // Host name taken.
        let e = topo
            .add_endpoint(&endpoint(&c1, "uplink0", "eth0", 2))
            .unwrap_err();
        assert_eq!(e.to_string(), "interface uplink0 already exists");
        assert_eq!(host_links(), vec!["lo", "pier0", "uplink0"]);
        assert_eq!(inner_links(), vec!["lo"]);

        // Name taken inside the container: fails after the pair was made and
        // moved, and the pair is gone afterwards on both sides.
        topo.add_endpoint(&endpoint(&c1, "vc1", "eth0", 2)).unwrap();
        let e = topo
            .add_endpoint(&endpoint(&c1, "vc2", "eth0", 3))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("interface eth0 already exists in {}", c1.display())
        );
        assert_eq!(host_links(), vec!["lo", "pier0", "uplink0", "vc1"]);
        assert_eq!(inner_links(), vec!["eth0", "lo"]);

        // A second default route in the container: fails late, after the
        // address was added inside; still nothing left.
        let late = endpoint(&c1, "vc3", "eth1", 3);
        let e = topo.add_endpoint(&late).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("netlink: add default route via 10.88.0.1: File exists"),
            "{e}"
        );
        assert_eq!(host_links(), vec!["lo", "pier0", "uplink0", "vc1"]);
        assert_eq!(inner_links(), vec!["eth0", "lo"]);

        // No namespace there, bad MAC, bad names: refused up front.
        let missing = ns_path(&host, "nope");
        let e = topo
            .add_endpoint(&endpoint(&missing, "vc4", "eth0", 4))
            .unwrap_err();
        assert!(e.to_string().starts_with("open netns"), "{e}");
        let mut bad = endpoint(&c1, "vc4", "eth1", 4);
        bad.mac = [0x01, 0, 0, 0, 0, 1];
        assert_eq!(
            topo.add_endpoint(&bad).unwrap_err().to_string(),
            "invalid MAC 01:00:00:00:00:01: must be a non-zero unicast address"
        );
        let bad = endpoint(&c1, "vc4-is-far-too-long", "eth1", 4);
        assert!(
            topo.add_endpoint(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("invalid interface name")
        );
        assert_eq!(host_links(), vec!["lo", "pier0", "uplink0", "vc1"]);
        assert_eq!(inner_links(), vec!["eth0", "lo"]);
        topo.remove_netns(&c1).unwrap();
    });
}

#[test]
fn netns_create_and_remove_leave_no_mount() {
    require_root!();
    let host = TestHost::new();
    let ns = host.host_ns.clone();
    let c1 = ns_path(&host, "c1");
    TestHost::in_netns(&ns, || {
        let topo = NetlinkTopology::new().expect("topology");
        topo.create_netns(&c1).expect("create");
        assert!(is_mounted(&c1));
        assert!(is_netns_mount(&c1));
        // A fresh namespace with lo up and nothing else.
        let links = ip_at(&c1, &["link"]);
        assert_eq!(names(&links), vec!["lo"]);
        assert!(
            links[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "UP")
        );
        // It is not the host's namespace.
        let host_ino = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let c1_ino = std::fs::metadata(&c1).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(host_ino.ino(), c1_ino.ino());

        let e = topo.create_netns(&c1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("network namespace {} already exists", c1.display())
        );
        assert!(is_mounted(&c1));

        // Stacked on itself (mounted twice): removal unmounts every layer.
        nix::mount::mount(
            Some(&c1),
            &c1,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        topo.remove_netns(&c1).expect("remove");
        assert!(!is_mounted(&c1));
        assert!(!c1.exists());
        topo.remove_netns(&c1).expect("absent is fine");

        // A relative path is refused before anything is made.
        let e = topo.create_netns(Path::new("relative/ns")).unwrap_err();
        assert!(
            e.to_string().starts_with("netns path must be absolute"),
            "{e}"
        );
        assert!(!Path::new("relative").exists());
    });
    // No mount at all is left under the TestHost dir.
    let dir = host.dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(str::to_string)
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn sysctl_writes_the_calling_namespace_only() {
    require_root!();
    let host = TestHost::new();
    let ns = host.host_ns.clone();
    let outside_before =
        run_ok(TestHost::cmd_in(&host.outside_ns, "cat").arg("/proc/sys/net/ipv4/ip_forward"));
    TestHost::in_netns(&ns, || {
        sysctl::set("net.ipv4.ip_forward", "0").unwrap();
        assert_eq!(sysctl::get("net.ipv4.ip_forward").unwrap(), "0");
        sysctl::set("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(sysctl::get("net.ipv4.ip_forward").unwrap(), "1");
        assert!(sysctl::get("net.ipv4.no_such_key").is_err());
    });
    let seen = run_ok(TestHost::cmd_in(&ns, "cat").arg("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(seen.trim(), "1");
    let outside =
        run_ok(TestHost::cmd_in(&host.outside_ns, "cat").arg("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(outside, outside_before);
}
