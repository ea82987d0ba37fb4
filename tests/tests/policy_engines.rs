//! The source policy of published ports applies to ports an engine
//! published through pier's endpoint core: a port `docker run -p` publishes
//! on a `docker network create -d pier` network obeys the network's
//! `pier.publish.allow` (given to docker) and pier's host-wide `pier policy`
//! rules, from two client addresses in the outside namespace (skipped with a
//! message when dockerd is not installed); a port pier's CNI plugin
//! published (`portMappings`, as containerd and Kubernetes pass them) obeys
//! host-wide, per-port and per-container rules alike.
mod agent_util;
mod policy_util;

use std::path::PathBuf;

use agent_util::*;
use pier_tests::{
    TestHost,
    cni::invoke,
    docker::{Dockerd, IMAGE},
    net::firewall_snapshot,
    require_dockerd, require_root,
};
use policy_util::*;
use serde_json::json;

fn plugin_dir(h: &TestHost) -> PathBuf {
    h.dir.join("plugins")
}

#[test]
fn a_docker_published_port_obeys_the_network_option_and_host_wide_policy() {
    require_dockerd!();
    let fw_machine = firewall_snapshot(None);
    let mut host = TestHost::new();
    let fw_host = firewall_snapshot(Some(&host.host_ns));
    host.outside(&["ip", "addr", "add", &format!("{B}/24"), "dev", "eth0"]);
    let sock = plugin_dir(&host).join("pier.sock");
    let _agent = host.start_agent(&["--docker-plugin", &sock.to_string_lossy()]);
    let d = Dockerd::start(&host, &plugin_dir(&host), &[]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "pier",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "pier.publish.allow=198.18.0.0/24",
        "pnet",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "pnet",
        "-p",
        "8081:8080",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let _srv = Server::start(&d.netns_of("web"), 8080);
    let out = ns_path(&host.outside_ns);
    let both = || {
        (
            reach_tcp(&out, A, &dst(8081)).is_ok(),
            reach_tcp(&out, B, &dst(8081)).is_ok(),
        )
    };
    assert_eq!(both(), (true, true), "both in the network's allow-list");
    // A client outside the allow-list: denied (a third address).
    host.outside(&["ip", "addr", "add", "198.18.1.9/16", "dev", "eth0"]);
    timed_out(
        reach_tcp(&out, "198.18.1.9", &dst(8081)),
        "outside the list",
    );
    // pier's host-wide deny of one address is the longer prefix.
    host.pier_ok(&["policy", "deny", B]);
    assert_eq!(both(), (true, false), "host-wide deny of B");
    assert!(
        denied(&host, 8081, "tcp") >= 4,
        "SYNs of .1.9 and B counted"
    );
    let origins: Vec<String> = policy_rows(&host)
        .iter()
        .map(|r| format!("{}", r["Origin"]))
        .collect();
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert!(origins[1].starts_with("\"network docker-"), "{origins:?}");
    host.pier_ok(&["policy", "rm", "--all"]);
    assert_eq!(both(), (true, true));
    d.ok(&["rm", "-f", "web"]);
    d.ok(&["network", "rm", "pnet"]);
    assert!(policy_entries(&host.bpffs_dir).is_empty());
    drop(d);
    assert_eq!(
        firewall_snapshot(Some(&host.host_ns)),
        fw_host,
        "the host namespace's firewall changed"
    );
    assert_eq!(
        firewall_snapshot(None),
        fw_machine,
        "the machine's firewall changed"
    );
}

#[test]
fn a_cni_published_port_obeys_host_wide_port_and_container_rules() {
    require_root!();
    let mut s = sandbox(&[]);
    let ns = s.host.add_netns("pod");
    pier_tests::host::sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    let netns = ns_path(&ns);
    let id = format!("pod-{}", s.host.prefix);
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "podnet",
        "type": "pier",
        "socket": s.host.socket(),
        "subnet": "10.94.0.0/24",
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8081, "containerPort": 8080, "protocol": "tcp"},
            {"hostPort": 8083, "containerPort": 8080, "protocol": "udp"},
        ]},
    });
    let cni = |command: &str| {
        let n = netns.to_string_lossy().into_owned();
        invoke(
            command,
            &[
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", &n),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf,
        )
    };
    cni("ADD").ok();
    let h = &s.host;
    let name = h
        .pier_ok(&["ps", "--format", "{{.Names}}"])
        .lines()
        .find(|n| n.starts_with("cni-"))
        .expect("the CNI container in pier ps")
        .to_string();
    let srv = Server::start(&netns, 8080);
    let out = s.outside_ns();
    let both = |port: u16| {
        (
            reach_tcp(&out, A, &dst(port)).is_ok(),
            reach_tcp(&out, B, &dst(port)).is_ok(),
        )
    };
    assert_eq!(both(8081), (true, true), "no rule yet");
    // Host-wide deny of B; A over UDP untouched, B's datagrams counted.
    h.pier_ok(&["policy", "deny", B]);
    assert_eq!(both(8081), (true, false), "host-wide deny of B");
    assert_eq!(reach_udp(&out, A, &dst(8083), 2), 2);
    assert_eq!(reach_udp(&out, B, &dst(8083), 3), 0);
    assert_eq!(denied(h, 8083, "udp"), 3);
    assert!(
        !srv.udp_peers().contains(&B.to_string()),
        "B reached the pod"
    );
    // An allow-list for the CNI container's ports: only A (B stays denied).
    h.pier_ok(&["policy", "rm", "--all"]);
    h.pier_ok(&["policy", "allow", A, "--container", &name]);
    assert_eq!(both(8081), (true, false), "--container allow of A");
    // Per port: an allow of B for 8081 joins the container's list there.
    h.pier_ok(&["policy", "allow", B, "--port", "8081"]);
    assert_eq!(both(8081), (true, true), "B allowed on 8081");
    let shown = h.pier_ok(&["port", &name]);
    assert!(
        shown.contains(&format!("allow {A}/32 (#2)"))
            && shown.contains(&format!("allow {B}/32 (#3)")),
        "{shown}"
    );
    // DEL: the container and its rules go; nothing stays in the map.
    cni("DEL").ok();
    drop(srv);
    assert!(policy_entries(&h.bpffs_dir).is_empty());
    assert_eq!(
        policy_rows(h).len(),
        1,
        "the --port rule stays (host-level)"
    );
    s.assert_firewalls_untouched();
}
