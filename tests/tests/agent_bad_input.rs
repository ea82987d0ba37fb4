//! Every bad-input case of `pier run` / `connect` / container commands: a
//! clear one-line error, a non-zero exit, and the kernel (host links,
//! addresses, the agent's namespaces and files) and the store (`network ls`,
//! `ps -a`) exactly as before.
use pier_tests::{TestHost, require_root};

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
fn bad_container_input_changes_nothing() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "--subnet", "10.30.0.0/30", "tiny"]);
    host.pier_ok(&["network", "create", "--subnet", "10.40.0.0/24", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "x1", "--network", "tiny"]);
    host.pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        "--network",
        "mynet",
        "--ip",
        "10.40.0.9",
    ]);
    host.pier_ok(&["run", "-d", "--name", "h", "--network", "host"]);
    host.pier_ok(&["run", "-d", "--name", "n", "--network", "none"]);
    let long = "c".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-d", "--name", "web"],
            "The container name \"/web\" is already in use by container",
        ),
        (
            vec!["run", "-d", "--network", "nosuch"],
            "network nosuch not found",
        ),
        (
            vec!["run", "-d", "--network", "tiny"],
            "no available IPv4 addresses on network tiny",
        ),
        (
            vec!["run", "-d", "--network", "mynet", "--ip", "10.41.0.5"],
            "no available IPv4 address 10.41.0.5: it is not in network mynet's range 10.40.0.0/24",
        ),
        (
            vec!["run", "-d", "--network", "mynet", "--ip", "10.40.0.9"],
            "Address already in use: 10.40.0.9",
        ),
        (
            vec!["run", "-d", "--network", "mynet", "--ip", "10.40.0.1"],
            "Address already in use: 10.40.0.1",
        ),
        (
            vec!["run", "-d", "--network", "mynet", "--ip", "banana"],
            "invalid IPv4 address \"banana\"",
        ),
        (
            vec!["run", "-d", "--ip", "172.17.0.50"],
            "user specified IP address is supported on user defined networks only",
        ),
        (
            vec!["run", "-d", "--alias", "a"],
            "network-scoped alias is supported only for containers in user defined networks",
        ),
        (
            vec!["run", "-d", "-p", "0:80"],
            "port 0 is out of range 1-65535",
        ),
        (
            vec!["run", "-d", "-p", "70000:80"],
            "port 70000 is out of range 1-65535",
        ),
        (vec!["run", "-d", "-p", "80:0"], "port 0 is out of range"),
        (
            vec!["run", "-d", "-p", "9000-8000:80-1080"],
            "ends before it starts",
        ),
        (
            vec!["run", "-d", "-p", "9000-9002:80-81"],
            "host and container port ranges differ in length",
        ),
        (vec!["run", "-d", "-p", "9000:80/sctp"], "unknown protocol"),
        (
            vec!["run", "-d", "-p", "8081:9090"],
            "Bind for 0.0.0.0:8081 failed: port is already allocated",
        ),
        (
            vec!["run", "-d", "-p", "9000:80", "-p", "9000:81"],
            "Bind for 0.0.0.0:9000 failed: port is already allocated",
        ),
        (
            vec!["run", "-d", "--name", &long],
            "is too long: at most 63 characters",
        ),
        (
            vec!["run", "-d", "--name", "bad name"],
            "invalid container name",
        ),
        (vec!["run", "-d", "--name", "_x"], "invalid container name"),
        (
            vec!["run", "-d", "--hostname", "bad_host"],
            "invalid hostname",
        ),
        (
            vec!["run", "-d", "--link", "nosuch"],
            "could not get container for nosuch",
        ),
        (
            vec!["run", "-d", "--network", "container:nosuch"],
            "No such container: nosuch",
        ),
        (
            vec!["run", "-d", "--network", "container:web", "-p", "1:1"],
            "conflicting options: port publishing and the container type network mode",
        ),
        (vec!["rm", "nosuch"], "No such container: nosuch"),
        (vec!["inspect", "nosuch"], "No such container: nosuch"),
        (vec!["logs", "nosuch"], "No such container: nosuch"),
        (vec!["stop", "nosuch"], "No such container: nosuch"),
        (vec!["start", "nosuch"], "No such container: nosuch"),
        (
            vec!["exec", "nosuch", "--", "true"],
            "No such container: nosuch",
        ),
        (
            vec!["network", "connect", "mynet", "nosuch"],
            "No such container: nosuch",
        ),
        (
            vec!["network", "connect", "nosuch", "web"],
            "network nosuch not found",
        ),
        (
            vec!["network", "connect", "--ip", "10.40.0.9", "mynet", "web"],
            "Address already in use: 10.40.0.9",
        ),
        (
            vec!["network", "connect", "tiny", "web"],
            "no available IPv4 addresses on network tiny",
        ),
        (
            vec!["network", "connect", "mynet", "m1"],
            "already exists in network mynet",
        ),
        (
            vec!["network", "disconnect", "mynet", "web"],
            "is not connected to network mynet",
        ),
        (vec!["network", "rm", "mynet"], "has active endpoints"),
        (
            vec!["network", "disconnect", "host", "h"],
            "container cannot be disconnected from the host network",
        ),
        (
            vec!["network", "disconnect", "none", "n"],
            "container cannot be disconnected from the none network",
        ),
        (
            vec!["network", "connect", "mynet", "h"],
            "container h is in host network mode and cannot be connected to other networks",
        ),
    ];
    for (args, want) in cases {
        refused(&host, &args, want);
    }
}
