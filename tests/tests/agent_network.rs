//! `pier network ...` against a real agent in a TestHost: the default
//! networks, create/inspect/rm/prune, and every bad-input case, each of which
//! must leave the kernel and the store exactly as they were.
use pier_tests::{TestHost, require_root};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn default_networks_and_bridge() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let ls = host.pier_ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(cols, ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(
        names,
        [
            ("bridge", "bridge", "local"),
            ("host", "host", "local"),
            ("none", "null", "local")
        ]
    );
    for r in &rows {
        assert_eq!(r[0].len(), 12, "12 hex id: {r:?}");
        assert!(r[0].bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // -q prints exactly the ids.
    let q = host.pier_ok(&["network", "ls", "-q"]);
    assert_eq!(
        q.lines().collect::<Vec<_>>(),
        rows.iter().map(|r| r[0]).collect::<Vec<_>>()
    );
    // The default bridge: pier0 with 172.17.0.1/16, up.
    let addr = host.host(&["ip", "-4", "-o", "addr", "show", "dev", "pier0"]);
    assert!(addr.contains("inet 172.17.0.1/16"), "{addr}");
    let v = json(&host.pier_ok(&["network", "inspect", "bridge"]));
    assert_eq!(v[0]["Name"], "bridge");
    assert_eq!(v[0]["Driver"], "bridge");
    assert_eq!(v[0]["Scope"], "local");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    assert_eq!(v[0]["Options"]["com.docker.network.bridge.name"], "pier0");
    assert_eq!(v[0]["Containers"], serde_json::json!({}));
    assert_eq!(v[0]["Id"].as_str().unwrap().len(), 64);
    // The sockets are the agent's alone.
    use std::os::unix::fs::PermissionsExt;
    for sock in [host.socket(), host.socket().with_extension("exec.sock")] {
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", sock.display());
    }
    // PIER_SOCKET finds the agent as --socket does.
    let out = std::process::Command::new(pier_tests::host::pier_bin())
        .args(["network", "ls", "-q"])
        .env("PIER_SOCKET", host.socket())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), q);
    // Without an agent: one clear line.
    let out = std::process::Command::new(pier_tests::host::pier_bin())
        .args(["--socket", "/nonexistent/pier.sock", "network", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: cannot connect to the pier agent at /nonexistent/pier.sock")
            && err.lines().count() == 1,
        "{err}"
    );
    // JSON format.
    let j = host.pier_ok(&["network", "ls", "--format", "json"]);
    let first = json(j.lines().next().unwrap());
    assert_eq!(first["Name"], "bridge");
}

#[test]
fn default_subnet_flag() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&["--default-subnet", "10.77.0.0/24"]);
    let addr = host.host(&["ip", "-4", "-o", "addr", "show", "dev", "pier0"]);
    assert!(addr.contains("inet 10.77.0.1/24"), "{addr}");
}

#[test]
fn create_inspect_rm_prune() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let id = host
        .pier_ok(&["network", "create", "mynet"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let br = format!("br-{}", &id[..12]);
    // The next free /16 after the default bridge's.
    let addr = host.host(&["ip", "-4", "-o", "addr", "show", "dev", &br]);
    assert!(addr.contains("inet 172.18.0.1/16"), "{addr}");
    let v = json(&host.pier_ok(&["network", "inspect", "mynet"]));
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");
    assert_eq!(v[0]["Internal"], false);
    assert_eq!(v[0]["EnableIPv6"], false);
    // A subnet routed on the host is skipped: 172.19/16 is taken by a route.
    host.host(&["ip", "route", "add", "172.19.3.0/24", "via", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "n2"]);
    let v = json(&host.pier_ok(&["network", "inspect", "n2"]));
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.20.0.0/16");
    // Explicit subnet, gateway, range, internal, options.
    host.pier_ok(&[
        "network",
        "create",
        "--subnet",
        "10.5.0.0/24",
        "--gateway",
        "10.5.0.254",
        "--ip-range",
        "10.5.0.128/25",
        "--internal",
        "-o",
        "com.docker.network.bridge.name=pierbr5",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "n3",
    ]);
    let link = host.host(&["ip", "-o", "link", "show", "dev", "pierbr5"]);
    assert!(link.contains("mtu 1400"), "{link}");
    let addr = host.host(&["ip", "-4", "-o", "addr", "show", "dev", "pierbr5"]);
    assert!(addr.contains("inet 10.5.0.254/24"), "{addr}");
    let v = json(&host.pier_ok(&["network", "inspect", "n3", "mynet"]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["IPAM"]["Config"][0]["IPRange"], "10.5.0.128/25");
    assert_eq!(v[0]["Internal"], true);
    assert_eq!(v[0]["Options"]["com.docker.network.driver.mtu"], "1400");
    // rm one, prune the others; the bridges go away.
    assert_eq!(host.pier_ok(&["network", "rm", "mynet"]), "mynet\n");
    assert!(!host.host_link_names().contains(&br));
    let pruned = host.pier_ok(&["network", "prune", "-f"]);
    assert_eq!(pruned, "Deleted Networks:\nn2\nn3\n");
    assert!(!host.host_link_names().contains(&"pierbr5".to_string()));
    assert_eq!(host.pier_ok(&["network", "ls", "-q"]).lines().count(), 3);
}

/// Run `args`, expect failure with `want` in the one-line error, and nothing changed.
fn refused(host: &TestHost, args: &[&str], want: &str) {
    let before = host.world();
    let err = host.pier_err(args);
    assert!(
        err.starts_with("Error: ") && err.contains(want) && err.trim_end().lines().count() == 1,
        "pier {args:?}: want one line with {want:?}, got {err:?}"
    );
    assert_eq!(host.world(), before, "pier {args:?} changed something");
}

#[test]
fn bad_network_input_changes_nothing() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "--subnet", "10.8.0.0/16", "taken"]);
    let long = "n".repeat(64);
    for (args, want) in [
        (
            vec!["network", "create", "--subnet", "10.9.0.0/33", "x"],
            "invalid subnet 10.9.0.0/33",
        ),
        (
            vec!["network", "create", "--subnet", "nonsense", "x"],
            "invalid subnet nonsense",
        ),
        (
            vec!["network", "create", "--subnet", "10.9.0.1/24", "x"],
            "it should be 10.9.0.0/24",
        ),
        (
            vec!["network", "create", "--subnet", "10.8.128.0/24", "x"],
            "Pool overlaps with other one on this address space",
        ),
        (
            vec!["network", "create", "--subnet", "172.17.0.0/16", "x"],
            "Pool overlaps",
        ),
        // The uplink's subnet (198.18.0.1/24 is on uplink0): the bridge
        // would take the host's own address.
        (
            vec!["network", "create", "--subnet", "198.18.0.0/24", "x"],
            "subnet 198.18.0.0/24 overlaps 198.18.0.0/24, which is routed on the host",
        ),
        (
            vec!["network", "create", "--subnet", "198.18.0.128/25", "x"],
            "overlaps 198.18.0.0/24, which is routed on the host",
        ),
        (
            vec!["network", "create", "--subnet", "198.0.0.0/8", "x"],
            "overlaps 198.18.0.0/24, which is routed on the host",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.9.0.0/24",
                "--gateway",
                "10.9.1.1",
                "x",
            ],
            "no matching subnet for gateway 10.9.1.1",
        ),
        (
            vec!["network", "create", "taken"],
            "network with name taken already exists",
        ),
        (
            vec!["network", "create", "bridge"],
            "network with name bridge already exists",
        ),
        (vec!["network", "create", &long], "is too long"),
        (
            vec!["network", "create", "bad/name"],
            "invalid network name",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=uplink0",
                "x",
            ],
            "bridge name uplink0 is already in use",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.driver.mtu=12",
                "x",
            ],
            "invalid value \"12\"",
        ),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.enable_icc=maybe",
                "x",
            ],
            "true or false",
        ),
        (vec!["network", "rm", "nosuch"], "network nosuch not found"),
        (
            vec!["network", "inspect", "nosuch"],
            "network nosuch not found",
        ),
        (
            vec!["network", "rm", "bridge"],
            "bridge is a pre-defined network and cannot be removed",
        ),
        (vec!["network", "rm", "host"], "pre-defined network"),
    ] {
        refused(&host, &args, want);
    }
}

#[test]
fn network_in_use_cannot_be_removed() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "busy"]);
    host.pier_ok(&["run", "-d", "--name", "c1", "--network", "busy"]);
    refused(&host, &["network", "rm", "busy"], "has active endpoints");
    // Without -f the answer is read even from a pipe: none, or not yes, is no.
    host.pier_ok(&["network", "create", "idle"]);
    for input in ["", "n\n", "whatever\n"] {
        let out = host.pier_with_input(&["network", "prune"], input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{input:?}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert!(
            err.contains("Are you sure? [y/N]")
                && err
                    .trim_end()
                    .ends_with("network prune cancelled: nothing was removed"),
            "{input:?}: {err}"
        );
        host.pier_ok(&["network", "inspect", "idle"]);
    }
    let out = host.pier_with_input(&["network", "prune"], "y\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Deleted Networks:\nidle\n"
    );
    // prune keeps it too.
    assert_eq!(host.pier_ok(&["network", "prune", "-f"]), "");
    host.pier_ok(&["rm", "c1"]);
    host.pier_ok(&["network", "rm", "busy"]);
}
