//! The source policy of published ports applies to ports an engine
//! published through pier's endpoint core: a port `docker run -p` publishes
//! on a `docker network create -d pier` network obeys the network's
//! `pier.publish.allow` (given to docker) and pier's host-wide `pier policy`
//! rules, from two client addresses in the outside namespace. Skipped with a
//! message when dockerd is not installed.
mod agent_util;
mod policy_util;

use std::path::PathBuf;

use agent_util::*;
use pier_tests::{
    TestHost,
    docker::{Dockerd, IMAGE},
    net::firewall_snapshot,
    require_dockerd,
};
use policy_util::*;

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
