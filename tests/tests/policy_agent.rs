//! Issue 17 through the agent and its CLI: who may reach a published port.
//! Two client addresses in the outside namespace (198.18.0.2 and .3); an
//! allowed one is served, a denied one gets nothing (TCP and UDP) and the
//! port's drop counter counts exactly the SYNs and datagrams it sent; deny
//! over allow at the same prefix length, longest prefix otherwise; removing
//! an allow cuts the source's established connection; hairpin obeys the
//! same policy; network- and container-level scopes; rules for one uplink
//! of two; the rules survive an agent restart; bad input changes nothing;
//! no firewall rule anywhere.
mod agent_util;
mod policy_util;

use std::{
    io::{BufRead, BufReader},
    time::Duration,
};

use agent_util::*;
use pier_tests::require_root;
use policy_util::*;

#[test]
fn an_allow_list_serves_one_client_address_and_drops_the_other_counted() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "8083:8080/udp",
        "--publish-allow",
        &format!("{A}/32"),
    ]);
    let srv = Server::start(&s.ns_of("web"), 8080);
    let out = s.outside_ns();
    assert_eq!(reach_tcp(&out, A, &dst(8081)).expect("A over tcp"), A);
    let (e, syns) = connect_counted(&out, B, &dst(8081)).expect_err("B over tcp: served");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(syns >= 2, "{syns} SYNs");
    // Every SYN B sent, nothing else.
    assert_eq!(denied(&s.host, 8081, "tcp"), syns);
    assert_eq!(reach_udp(&out, A, &dst(8083), 3), 3);
    assert_eq!(reach_udp(&out, B, &dst(8083), 5), 0);
    assert_eq!(denied(&s.host, 8083, "udp"), 5);
    assert_eq!(srv.udp_peers(), vec![A.to_string()], "B reached the server");
    drop(srv);
    // `pier port` and `inspect` show the policy.
    assert_eq!(
        h.pier_ok(&["port", "web"]),
        format!(
            "8080/tcp -> 0.0.0.0:8081   policy: allow {A}/32 (--publish-allow)\n\
             8080/udp -> 0.0.0.0:8083   policy: allow {A}/32 (--publish-allow)\n"
        )
    );
    let i = s.inspect("web");
    assert_eq!(
        i["HostConfig"]["PublishAllow"],
        serde_json::json!([format!("{A}/32")])
    );
    assert_eq!(
        i["NetworkSettings"]["PublishPolicy"]["8081/tcp"],
        serde_json::json!([format!("allow {A}/32 (--publish-allow)")])
    );
    // The kernel holds the rule once per port, under the port's scope.
    let e = policy_entries(&h.bpffs_dir);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .all(|(len, k, v)| *len == pier_common::policy::SCOPE_BITS + 32
                && k.src[..4] == [198, 18, 0, 2]
                && v.action == pier_common::policy::POLICY_ALLOW)
    );
    // Without the container the rules are gone.
    h.pier_ok(&["rm", "-f", "web"]);
    assert!(policy_entries(&h.bpffs_dir).is_empty());
    s.assert_firewalls_untouched();
}

#[test]
fn deny_wins_at_the_same_length_and_the_longest_prefix_otherwise() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    h.pier_ok(&["run", "-d", "--name", "other", "-p", "8082:8080"]);
    let _srv = Server::start(&s.ns_of("web"), 8080);
    let _srv2 = Server::start(&s.ns_of("other"), 8080);
    let out = s.outside_ns();
    let both = |port: u16| {
        (
            reach_tcp(&out, A, &dst(port)).is_ok(),
            reach_tcp(&out, B, &dst(port)).is_ok(),
        )
    };
    assert_eq!(both(8081), (true, true), "no policy");
    let allow_lan = h.pier_ok(&["policy", "allow", "198.18.0.0/24"]);
    assert_eq!(both(8081), (true, true), "host-wide allow of the LAN");
    // The same length, deny: wins (for that port only).
    h.pier_ok(&["policy", "deny", "198.18.0.0/24", "--port", "8081"]);
    assert_eq!(both(8081), (false, false), "deny over allow at /24");
    assert_eq!(both(8082), (true, true), "8082 keeps the host-wide allow");
    // A longer allow for one address of web's ports.
    h.pier_ok(&["policy", "allow", &format!("{A}/32"), "--container", "web"]);
    assert_eq!(both(8081), (true, false), "the /32 allow is longer");
    // A longer deny host-wide keeps B from 8082 too.
    h.pier_ok(&["policy", "deny", B]);
    assert_eq!(both(8082), (true, false));
    let rows = policy_rows(&s.host);
    let cells: Vec<(u64, &str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["ID"].as_u64().unwrap(),
                r["Action"].as_str().unwrap(),
                r["Source"].as_str().unwrap(),
                r["Port"].as_str().unwrap(),
                r["Proto"].as_str().unwrap(),
                r["Container"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        vec![
            (1, "allow", "198.18.0.0/24", "*", "*", "*"),
            (2, "deny", "198.18.0.0/24", "8081", "*", "*"),
            (3, "allow", "198.18.0.2/32", "*", "*", "web"),
            (4, "deny", "198.18.0.3/32", "*", "*", "*"),
        ]
    );
    assert_eq!(allow_lan.trim(), "1");
    let table = h.pier_ok(&["policy", "ls"]);
    assert!(
        table.starts_with(
            "ID   ACTION   SOURCE          PORT   PROTO   CONTAINER   UPLINK   ORIGIN\n"
        ),
        "{table}"
    );
    // Host-wide rules are one entry each; 8081's scope holds its own two.
    assert_eq!(policy_entries(&h.bpffs_dir).len(), 4);
    h.pier_ok(&["policy", "rm", "2"]);
    assert_eq!(both(8081), (true, false), "allow /32 for A, deny /32 for B");
    // Several sources in one command: one rule each, ids in order.
    assert_eq!(
        h.pier_ok(&["policy", "deny", "100.64.0.0/24", "100.64.1.0/24"]),
        "5\n6\n"
    );
    assert_eq!(policy_entries(&h.bpffs_dir).len(), 5);
    h.pier_ok(&["policy", "rm", "--all"]);
    assert!(policy_rows(&s.host).is_empty());
    assert!(policy_entries(&h.bpffs_dir).is_empty());
    assert!(
        port_flags(&h.bpffs_dir).iter().all(|f| *f == 0),
        "ports without policy ask nothing"
    );
    assert_eq!(both(8081), (true, true));
    s.assert_firewalls_untouched();
}

#[test]
fn removing_an_allow_cuts_the_sources_established_connection() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let _srv = Server::start(&s.ns_of("web"), 8080);
    let out = s.outside_ns();
    let id_a = h.pier_ok(&["policy", "allow", A]);
    h.pier_ok(&["policy", "allow", B]);
    let mut ca = connect_from(&out, A, &dst(8081)).expect("A connects");
    let mut cb = connect_from(&out, B, &dst(8081)).expect("B connects");
    assert!(ask(&mut ca, "one").unwrap().ends_with("|one"));
    assert!(ask(&mut cb, "one").unwrap().ends_with("|one"));
    // Every packet is asked: A's open connection stops at once; B's goes on.
    h.pier_ok(&["policy", "rm", id_a.trim()]);
    let before = denied(&s.host, 8081, "tcp");
    assert!(ask(&mut ca, "two").is_err(), "A's connection still served");
    assert!(
        denied(&s.host, 8081, "tcp") > before,
        "A's segment not counted"
    );
    assert!(ask(&mut cb, "two").unwrap().ends_with("|two"));
    timed_out(reach_tcp(&out, A, &dst(8081)), "A's new connection");
    // Allowed again, the retransmitted segment gets through: the connection
    // was cut while denied, not torn down.
    h.pier_ok(&["policy", "allow", A]);
    let mut line = String::new();
    ca.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    BufReader::new(ca.try_clone().unwrap())
        .read_line(&mut line)
        .expect("the retransmitted line's answer");
    assert!(line.trim_end().ends_with("|two"), "{line:?}");
    s.assert_firewalls_untouched();
}

#[test]
fn hairpin_from_a_container_obeys_the_same_policy() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "8083:8080/udp",
        "--publish-allow",
        "198.18.0.0/24",
    ]);
    h.pier_ok(&["run", "-d", "--name", "cli"]);
    let srv = Server::start(&s.ns_of("web"), 8080);
    let cli = s.ip_of("cli", "bridge").to_string();
    let ns = s.ns_of("cli");
    timed_out(reach_tcp(&ns, &cli, &dst(8081)), "hairpin tcp");
    assert_eq!(reach_udp(&ns, &cli, &dst(8083), 4), 0);
    assert_eq!(denied(&s.host, 8083, "udp"), 4);
    h.pier_ok(&["policy", "allow", &cli, "--container", "web"]);
    assert_eq!(
        reach_tcp(&ns, &cli, &dst(8081)).expect("hairpin allowed"),
        cli
    );
    assert_eq!(reach_udp(&ns, &cli, &dst(8083), 2), 2);
    assert_eq!(srv.udp_peers(), vec![cli.clone()]);
    s.assert_firewalls_untouched();
}

#[test]
fn network_and_container_scopes_cover_only_their_ports() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "network",
        "create",
        "-o",
        &format!("pier.publish.allow={A}/32,10.99.0.0/16"),
        "lan",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "inlan",
        "--network",
        "lan",
        "-p",
        "8081:8080",
    ]);
    h.pier_ok(&["run", "-d", "--name", "open", "-p", "8082:8080"]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "-p",
        "8084:8080",
        "--publish-allow",
        B,
    ]);
    let _s1 = Server::start(&s.ns_of("inlan"), 8080);
    let _s2 = Server::start(&s.ns_of("open"), 8080);
    let _s3 = Server::start(&s.ns_of("own"), 8080);
    let out = s.outside_ns();
    let both = |port: u16| {
        (
            reach_tcp(&out, A, &dst(port)).is_ok(),
            reach_tcp(&out, B, &dst(port)).is_ok(),
        )
    };
    assert_eq!(both(8081), (true, false), "the network's allow-list");
    assert_eq!(both(8082), (true, true), "another network's port");
    assert_eq!(both(8084), (false, true), "the container's allow-list");
    let origins: Vec<String> = policy_rows(&s.host)
        .iter()
        .map(|r| format!("{} {} {}", r["Origin"], r["Source"], r["Container"]))
        .collect();
    assert_eq!(
        origins,
        vec![
            "\"network lan\" \"198.18.0.2/32\" \"*\"",
            "\"network lan\" \"10.99.0.0/16\" \"*\"",
            "\"container own\" \"198.18.0.3/32\" \"own\"",
        ]
    );
    s.assert_firewalls_untouched();
}

#[test]
fn the_policy_survives_an_agent_restart() {
    require_root!();
    let mut s = sandbox(&[]);
    s.host
        .pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    s.host.pier_ok(&["policy", "deny", B, "--port", "8081"]);
    s.host.pier_ok(&["policy", "deny", "203.0.113.0/24"]);
    let rows = policy_rows(&s.host);
    let entries = policy_entries(&s.host.bpffs_dir);
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let agent = s.agent.take().unwrap();
        s.host.stop_agent(&agent, signal);
        s.agent = Some(s.host.start_agent(&[]));
        s.host.wait_agent_ready();
        assert_eq!(policy_rows(&s.host), rows, "after {signal}");
        assert_eq!(policy_entries(&s.host.bpffs_dir), entries, "after {signal}");
        let _srv = Server::start(&s.ns_of("web"), 8080);
        let out = s.outside_ns();
        assert!(reach_tcp(&out, A, &dst(8081)).is_ok(), "after {signal}");
        timed_out(reach_tcp(&out, B, &dst(8081)), "B after a restart");
    }
    // A rule added after the restart gets the next id.
    assert_eq!(s.host.pier_ok(&["policy", "allow", A]).trim(), "3");
    s.assert_firewalls_untouched();
}

/// The second uplink's side: a namespace `lan` behind `uplink1`.
const LAN_HOST: &str = "198.51.100.1";
const LAN_CLIENT: &str = "198.51.100.2";

#[test]
fn an_uplinks_rules_hold_on_that_uplink_only() {
    require_root!();
    let mut s = sandbox(&[]);
    let lan = s.host.add_netns("lan");
    let hns = s.host.host_ns.clone();
    pier_tests::host::veth_between((&hns, "uplink1", LAN_HOST), (&lan, "eth0", LAN_CLIENT));
    // The agent again, now with both uplinks.
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    s.agent = Some(s.host.start_agent(&["--uplink", "uplink1"]));
    s.host.wait_agent_ready();
    let h = &s.host;
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "8082:8080",
    ]);
    let _srv = Server::start(&s.ns_of("web"), 8080);
    let out = s.outside_ns();
    let lan = ns_path(&lan);
    let on_lan = |port: u16| format!("{LAN_HOST}:{port}");
    // Before any rule: both sides served, each with its address kept.
    assert_eq!(reach_tcp(&out, B, &dst(8081)).expect("B"), B);
    assert_eq!(
        reach_tcp(&lan, LAN_CLIENT, &on_lan(8081)).expect("lan"),
        LAN_CLIENT
    );
    // Only A on uplink0; the lan side stays open.
    h.pier_ok(&["policy", "allow", A, "--uplink", "uplink0"]);
    assert_eq!(reach_tcp(&out, A, &dst(8081)).expect("A"), A);
    timed_out(reach_tcp(&out, B, &dst(8082)), "B on uplink0");
    assert_eq!(
        reach_tcp(&lan, LAN_CLIENT, &on_lan(8082)).expect("lan"),
        LAN_CLIENT
    );
    // A deny on uplink1 for 8081 only: counted; 8082 still open there.
    h.pier_ok(&[
        "policy",
        "deny",
        "198.51.100.0/24",
        "--uplink",
        "uplink1",
        "--port",
        "8081",
    ]);
    let before = denied(h, 8081, "tcp");
    let (e, syns) =
        connect_counted(&lan, LAN_CLIENT, &on_lan(8081)).expect_err("lan to 8081: served");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert_eq!(denied(h, 8081, "tcp") - before, syns);
    assert_eq!(
        reach_tcp(&lan, LAN_CLIENT, &on_lan(8082)).expect("lan 8082"),
        LAN_CLIENT
    );
    assert_eq!(reach_tcp(&out, A, &dst(8081)).expect("A"), A);
    // Listed with their uplink, and shown by `pier port`.
    let ls = h.pier_ok(&["policy", "ls"]);
    assert!(ls.lines().next().unwrap().contains("UPLINK"), "{ls}");
    let rows = policy_rows(h);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        h.pier_ok(&["port", "web"])
            .contains("deny 198.51.100.0/24 on uplink uplink1 (#2)"),
        "{}",
        h.pier_ok(&["port", "web"])
    );
    // Removed: open again on both.
    h.pier_ok(&["policy", "rm", "--all"]);
    assert_eq!(reach_tcp(&out, B, &dst(8081)).expect("B"), B);
    assert_eq!(
        reach_tcp(&lan, LAN_CLIENT, &on_lan(8081)).expect("lan"),
        LAN_CLIENT
    );
    assert!(policy_entries(&h.bpffs_dir).is_empty());
    s.assert_firewalls_untouched();
}

fn refused(s: &Sandbox, args: &[&str], want: &str) {
    let h = &s.host;
    let before = (
        h.world(),
        h.pier_ok(&["policy", "ls"]),
        policy_entries(&h.bpffs_dir),
        port_flags(&h.bpffs_dir),
    );
    let err = h.pier_err(args);
    assert!(
        err.starts_with("Error: ") && err.contains(want) && err.trim_end().lines().count() == 1,
        "pier {args:?}: want one line with {want:?}, got {err:?}"
    );
    let after = (
        h.world(),
        h.pier_ok(&["policy", "ls"]),
        policy_entries(&h.bpffs_dir),
        port_flags(&h.bpffs_dir),
    );
    assert_eq!(after, before, "pier {args:?} changed something");
}

#[test]
fn bad_policy_input_changes_nothing() {
    require_root!();
    let s = sandbox(&[]);
    let h = &s.host;
    h.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    h.pier_ok(&["policy", "deny", "203.0.113.0/24"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["policy", "allow", "10.0.0.0/33"],
            "invalid CIDR \"10.0.0.0/33\"",
        ),
        (vec!["policy", "deny", "banana"], "invalid CIDR \"banana\""),
        (
            vec!["policy", "allow", "10.0.0.5/8"],
            "host bits are set (did you mean 10.0.0.0/8?)",
        ),
        (
            vec!["policy", "allow", "10.0.0.0/8", "--container", "nosuch"],
            "No such container: nosuch",
        ),
        (
            vec![
                "policy",
                "allow",
                "10.0.0.0/8",
                "--container",
                "web",
                "--port",
                "9999",
            ],
            "container web does not publish port 9999",
        ),
        (
            vec![
                "policy",
                "allow",
                "10.0.0.0/8",
                "--container",
                "web",
                "--port",
                "8081",
                "--proto",
                "udp",
            ],
            "container web does not publish port 8081/udp",
        ),
        (
            vec!["policy", "allow", "10.0.0.0/8", "--proto", "sctp"],
            "invalid protocol \"sctp\"",
        ),
        (
            vec!["policy", "allow", "10.0.0.0/8", "--port", "0"],
            "invalid port 0",
        ),
        (
            vec!["policy", "deny", "203.0.113.0/24"],
            "the same rule exists already (ID 1)",
        ),
        (
            vec!["policy", "deny", "10.9.0.0/16", "10.9.0.0/16"],
            "10.9.0.0/16 is given twice",
        ),
        (
            vec!["policy", "deny", "10.9.0.0/16", "10.8.0.0/33"],
            "invalid CIDR \"10.8.0.0/33\"",
        ),
        (
            vec!["policy", "deny", "10.0.0.0/8", "--uplink", "nosuch0"],
            "\"nosuch0\" is not one of the agent's uplinks (uplink0)",
        ),
        (vec!["policy", "rm", "42"], "No such policy rule: 42"),
        (vec!["policy", "rm", "x"], "invalid policy ID \"x\""),
        (
            vec![
                "run",
                "-d",
                "--name",
                "w2",
                "-p",
                "8085:80",
                "--publish-allow",
                "1.2.3",
            ],
            "--publish-allow: invalid CIDR \"1.2.3\"",
        ),
        (
            vec!["run", "-d", "--name", "w3", "--publish-allow", "10.0.0.0/8"],
            "--publish-allow needs a published port",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "pier.publish.allow=10.0.0.0/8,nope",
                "n1",
            ],
            "option pier.publish.allow: invalid CIDR \"nope\"",
        ),
        (
            vec!["network", "create", "-o", "pier.publish.allow=", "n2"],
            "option pier.publish.allow: at least one CIDR",
        ),
    ];
    for (args, want) in &cases {
        refused(&s, args, want);
    }
    s.assert_firewalls_untouched();
}
