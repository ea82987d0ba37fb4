//! `pier run/exec/ps/inspect/logs/stop/start/rm` and `network connect/
//! disconnect` against a real agent in a TestHost: the seed's topology
//! scenarios, checked inside the containers' namespaces.
use pier_tests::{TestHost, require_root};
use serde_json::Value;

fn inspect(host: &TestHost, name: &str) -> Value {
    let v: Value = serde_json::from_str(&host.pier_ok(&["inspect", name])).unwrap();
    v[0].clone()
}

fn ip_of(host: &TestHost, name: &str, net: &str) -> String {
    inspect(host, name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Interface names inside a container.
fn links_in(host: &TestHost, name: &str) -> Vec<String> {
    host.in_container(name, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

#[test]
fn addresses_in_order_and_a_released_one_is_reused() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let id1 = host
        .pier_ok(&["run", "-d", "--name", "u1"])
        .trim()
        .to_string();
    assert_eq!(id1.len(), 64);
    host.pier_ok(&["run", "-d", "--name", "u2"]);
    assert_eq!(ip_of(&host, "u1", "bridge"), "172.17.0.2");
    assert_eq!(ip_of(&host, "u2", "bridge"), "172.17.0.3");
    host.pier_ok(&["rm", "u2"]);
    host.pier_ok(&["run", "-d", "--name", "u3"]);
    assert_eq!(ip_of(&host, "u3", "bridge"), "172.17.0.3");
    // Bridge mode in the kernel: eth0 with address, Docker's MAC, default route.
    let addr = host.in_container("u1", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 172.17.0.2/16"), "{addr}");
    let link = host.in_container("u1", &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("link/ether 02:42:ac:11:00:02"), "{link}");
    assert!(link.contains("state UP"), "{link}");
    let route = host.in_container("u1", &["ip", "route", "show", "default"]);
    assert!(
        route.starts_with("default via 172.17.0.1 dev eth0 "),
        "{route}"
    );
    assert_eq!(route.lines().count(), 1, "{route}");
    assert_eq!(links_in(&host, "u1"), ["lo", "eth0"]);
    // The host end is a veth<7 hex> enslaved to pier0.
    let i = inspect(&host, "u1");
    let ep = i["NetworkSettings"]["Networks"]["bridge"]["EndpointID"]
        .as_str()
        .unwrap();
    let veth = format!("veth{}", &ep[..7]);
    let master = host.host(&["ip", "-o", "link", "show", "master", "pier0"]);
    assert!(master.contains(&veth), "{veth} not on pier0: {master}");
    // The gateway answers.
    host.in_container("u1", &["ping", "-c", "1", "-W", "2", "172.17.0.1"]);
    // And u1 reaches u3 on the same bridge.
    host.in_container("u1", &["ping", "-c", "1", "-W", "2", "172.17.0.3"]);
    // inspect, Docker's shape.
    assert_eq!(i["Id"], id1.as_str());
    assert_eq!(i["Name"], "/u1");
    assert_eq!(i["HostConfig"]["NetworkMode"], "bridge");
    let n = &i["NetworkSettings"]["Networks"]["bridge"];
    assert_eq!(n["Gateway"], "172.17.0.1");
    assert_eq!(n["IPPrefixLen"], 16);
    assert_eq!(n["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(i["NetworkSettings"]["IPAddress"], "172.17.0.2");
    // rm removes veth and namespace.
    host.pier_ok(&["rm", "u1"]);
    assert!(!host.host_link_names().contains(&veth));
    assert!(!host.container_netns(&id1).exists());
    let ps = host.pier_ok(&["ps", "-a", "-q"]);
    assert_eq!(ps.lines().count(), 1, "{ps}");
}

#[test]
fn exec_passes_stdio_and_exit_code() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "c", "--hostname", "box1"]);
    let out = host.pier_with_input(
        &[
            "exec",
            "c",
            "--",
            "sh",
            "-c",
            "cat; echo to-stderr >&2; exit 7",
        ],
        "hello from stdin\n",
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from stdin\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    // The process is in the container: its hostname, files and interfaces.
    assert_eq!(host.pier_ok(&["exec", "c", "--", "hostname"]), "box1\n");
    let hosts = host.pier_ok(&["exec", "c", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.ends_with("172.17.0.2\tbox1\n"), "{hosts}");
    let links = host.pier_ok(&["exec", "c", "--", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 2, "{links}");
    assert!(!links.contains("uplink0"));
    // Unknown container and bad command: one-line errors.
    let e = host.pier_err(&["exec", "nosuch", "--", "true"]);
    assert_eq!(e, "Error: No such container: nosuch\n");
    // As Docker: 127 when the command is not found, 126 when it cannot be
    // invoked (here: a file without the execute bit).
    for (cmd, code, why) in [
        ("/nonexistent/cmd", 127, "No such file or directory"),
        ("nosuch-cmd", 127, "No such file or directory"),
        ("/etc/passwd", 126, "Permission denied"),
    ] {
        let out = host.pier(&["exec", "c", "--", cmd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {err}");
        assert!(
            err.starts_with("Error: ") && err.contains(why) && err.trim_end().lines().count() == 1,
            "{cmd}: {err}"
        );
    }
}

#[test]
fn foreground_run_detached_logs_stop_start() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let out = host.pier(&["run", "--name", "fg", "--", "sh", "-c", "echo out; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let ps = host.pier_ok(&["ps", "-a"]);
    let row = ps.lines().find(|l| l.ends_with("fg")).unwrap_or_default();
    assert!(
        row.contains("Exited (3) ") && row.contains(" ago "),
        "Docker's wording: {ps}"
    );
    assert!(!host.pier_ok(&["ps"]).contains("fg"));
    host.pier_ok(&["rm", "fg"]);

    // A detached command that ends on its own: its exit code is kept.
    host.pier_ok(&["run", "-d", "--name", "quick", "--", "sh", "-c", "exit 5"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while inspect(&host, "quick")["State"]["Status"] != "exited" {
        assert!(std::time::Instant::now() < deadline, "quick did not exit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(inspect(&host, "quick")["State"]["ExitCode"], 5);
    assert!(host.pier_ok(&["ps", "-a"]).contains("Exited (5)"));
    host.pier_ok(&["rm", "quick"]);

    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.pier_ok(&["logs", "bg"]) != "started\n" {
        assert!(std::time::Instant::now() < deadline, "no log line");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let i = inspect(&host, "bg");
    assert_eq!(i["State"]["Status"], "running");
    let ps = host.pier_ok(&["ps"]);
    let row = ps.lines().find(|l| l.ends_with("bg")).unwrap_or_default();
    assert!(row.contains("   Up "), "Docker's wording: {ps}");
    let pid = i["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 0);
    // A running process blocks rm without -f.
    let e = host.pier_err(&["rm", "bg"]);
    assert!(e.contains("You cannot remove a running container"), "{e}");
    host.pier_ok(&["stop", "bg"]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !s.contains("sleep")
        }
    );
    let st = &inspect(&host, "bg")["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 143, "SIGTERM ended it");
    assert!(!host.pier_ok(&["ps"]).contains("bg"));
    host.pier_ok(&["start", "bg"]);
    assert_eq!(inspect(&host, "bg")["State"]["Status"], "running");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.pier_ok(&["logs", "bg"]) != "started\nstarted\n" {
        assert!(std::time::Instant::now() < deadline, "no second log line");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = inspect(&host, "bg")["State"]["Pid"].as_i64().unwrap();
    host.pier_ok(&["rm", "-f", "bg"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains("(sleep)") && !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "rm -f left the process running");
}

#[test]
fn host_mode_none_mode() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let out = host.pier(&[
        "run",
        "-d",
        "--name",
        "h",
        "--network",
        "host",
        "-p",
        "8080:80",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "WARNING: Published ports are discarded when using host network mode\n"
    );
    let i = inspect(&host, "h");
    assert_eq!(i["HostConfig"]["NetworkMode"], "host");
    assert_eq!(i["NetworkSettings"]["Networks"]["host"]["Gateway"], "");
    assert_eq!(i["NetworkSettings"]["Networks"]["host"]["IPAddress"], "");
    assert_eq!(i["HostConfig"]["PortBindings"], serde_json::json!({}));
    // Its processes see the host's interfaces.
    let links = host.pier_ok(&["exec", "h", "--", "ip", "-o", "link"]);
    assert!(links.contains("uplink0"), "{links}");
    let v: Value = serde_json::from_str(&host.pier_ok(&["network", "inspect", "host"])).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 1);

    host.pier_ok(&["run", "-d", "--name", "n", "--network", "none"]);
    assert_eq!(links_in(&host, "n"), ["lo"]);
    let i = inspect(&host, "n");
    assert_eq!(i["NetworkSettings"]["Networks"]["none"]["IPAddress"], "");
    host.pier_ok(&["rm", "h", "n"]);
}

#[test]
fn container_mode_shares_and_outlives_its_owner() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "a"]);
    host.pier_ok(&["run", "-d", "--name", "b", "--network", "container:a"]);
    let a = host.in_container("a", &["ip", "-o", "addr"]);
    let b = host.in_container("b", &["ip", "-o", "addr"]);
    assert_eq!(a, b, "same namespace: same addresses and interface indexes");
    assert!(a.contains("172.17.0.2/16"));
    assert_eq!(
        inspect(&host, "b")["HostConfig"]["NetworkMode"],
        format!("container:{}", host.container_id("a"))
    );
    let before = host.world();
    let e = host.pier_err(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "container:a",
        "-p",
        "80:80",
    ]);
    assert_eq!(
        e,
        "Error: conflicting options: port publishing and the container type network mode\n"
    );
    assert_eq!(host.world(), before);
    host.pier_ok(&["rm", "a"]);
    assert_eq!(links_in(&host, "b"), ["lo"]);
    host.pier_ok(&["exec", "b", "--", "true"]);
    // Sharing the orphan shares its namespace (the owner is gone).
    host.pier_ok(&["run", "-d", "--name", "d", "--network", "container:b"]);
    host.in_container(
        "b",
        &[
            "ip", "link", "add", "x7a", "type", "veth", "peer", "name", "x7b",
        ],
    );
    assert_eq!(links_in(&host, "d"), ["lo", "x7b", "x7a"]);
    host.pier_ok(&["rm", "b", "d"]);
}

#[test]
fn link_is_one_way() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "A"]);
    host.pier_ok(&["run", "-d", "--name", "B", "--link", "A:db"]);
    let b_hosts = host.pier_ok(&["exec", "B", "--", "cat", "/etc/hosts"]);
    assert!(b_hosts.contains("172.17.0.2\tdb A\n"), "{b_hosts}");
    let a_hosts = host.pier_ok(&["exec", "A", "--", "cat", "/etc/hosts"]);
    assert!(!a_hosts.contains("172.17.0.3"), "{a_hosts}");
    assert!(!a_hosts.contains('B'), "{a_hosts}");
    // Default bridge: the host's upstreams; loopback ones never.
    let resolv = host.pier_ok(&["exec", "B", "--", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("127.0.0."), "{resolv}");
}

#[test]
fn connect_disconnect_and_inspect() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "c1"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "mynet",
        "--alias",
        "web",
    ]);
    assert_eq!(
        host.pier_ok(&["exec", "c2", "--", "cat", "/etc/resolv.conf"]),
        "nameserver 127.0.0.11\noptions ndots:0\n"
    );
    host.pier_ok(&["network", "connect", "--alias", "one", "mynet", "c1"]);
    assert_eq!(links_in(&host, "c1"), ["lo", "eth0", "eth1"]);
    let addr = host.in_container("c1", &["ip", "-4", "-o", "addr", "show", "dev", "eth1"]);
    assert!(addr.contains("inet 172.18.0.3/16"), "{addr}");
    let link = host.in_container("c1", &["ip", "-o", "link", "show", "dev", "eth1"]);
    assert!(link.contains("02:42:ac:12:00:03"), "{link}");
    // The default route stays on eth0.
    let route = host.in_container("c1", &["ip", "route", "show", "default"]);
    assert!(
        route.starts_with("default via 172.17.0.1 dev eth0 "),
        "{route}"
    );
    assert_eq!(route.lines().count(), 1, "{route}");
    // c1 reaches c2 on mynet.
    host.in_container("c1", &["ping", "-c", "1", "-W", "2", "172.18.0.2"]);
    let i = inspect(&host, "c1");
    let nets = i["NetworkSettings"]["Networks"].as_object().unwrap();
    assert_eq!(nets.len(), 2);
    assert_eq!(nets["bridge"]["IPAddress"], "172.17.0.2");
    assert_eq!(nets["mynet"]["IPAddress"], "172.18.0.3");
    assert_eq!(nets["mynet"]["Gateway"], "172.18.0.1");
    assert_eq!(nets["mynet"]["IPPrefixLen"], 16);
    assert_eq!(nets["mynet"]["MacAddress"], "02:42:ac:12:00:03");
    assert_eq!(nets["mynet"]["Aliases"], serde_json::json!(["one"]));
    let v: Value = serde_json::from_str(&host.pier_ok(&["network", "inspect", "mynet"])).unwrap();
    let members = v[0]["Containers"].as_object().unwrap();
    let mut names: Vec<&str> = members
        .values()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c1", "c2"]);
    let m = &members[&host.container_id("c1")];
    assert_eq!(m["IPv4Address"], "172.18.0.3/16");
    assert_eq!(m["MacAddress"], "02:42:ac:12:00:03");
    // Connecting twice is refused; disconnect removes eth1.
    let e = host.pier_err(&["network", "connect", "mynet", "c1"]);
    assert!(e.contains("already exists in network mynet"), "{e}");
    host.pier_ok(&["network", "disconnect", "mynet", "c1"]);
    assert_eq!(links_in(&host, "c1"), ["lo", "eth0"]);
    let i = inspect(&host, "c1");
    assert_eq!(
        i["NetworkSettings"]["Networks"].as_object().unwrap().len(),
        1
    );
    // --ip on connect.
    host.pier_ok(&["network", "connect", "--ip", "172.18.9.9", "mynet", "c1"]);
    assert_eq!(ip_of(&host, "c1", "mynet"), "172.18.9.9");
}

#[test]
fn parallel_runs_get_distinct_addresses() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    let host = &host;
    std::thread::scope(|s| {
        for i in 0..8 {
            s.spawn(move || host.pier_ok(&["run", "-d", "--name", &format!("p{i}")]));
        }
    });
    let mut ips: Vec<String> = (0..8)
        .map(|i| ip_of(host, &format!("p{i}"), "bridge"))
        .collect();
    ips.sort_by_key(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap());
    let want: Vec<String> = (2..10).map(|i| format!("172.17.0.{i}")).collect();
    assert_eq!(ips, want);
    let master = host.host(&["ip", "-o", "link", "show", "master", "pier0"]);
    assert_eq!(master.lines().count(), 8, "{master}");
}

#[test]
fn published_ports_are_recorded_in_dockers_shape() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:8080",
        "-p",
        "127.0.0.1:5000-5001:6000-6001/udp",
    ]);
    let i = inspect(&host, "web");
    assert_eq!(
        i["HostConfig"]["PortBindings"],
        serde_json::json!({
            "8080/tcp": [{"HostIp": "", "HostPort": "8081"}],
            "6000/udp": [{"HostIp": "127.0.0.1", "HostPort": "5000"}],
            "6001/udp": [{"HostIp": "127.0.0.1", "HostPort": "5001"}],
        })
    );
    let ps = host.pier_ok(&["ps"]);
    assert!(
        ps.contains("0.0.0.0:8081->8080/tcp, 127.0.0.1:5000-5001->6000-6001/udp"),
        "{ps}"
    );
    // Another container may take a port the first does not use, not one it uses.
    host.pier_ok(&["run", "-d", "--name", "web2", "-p", "8082:8080"]);
    let e = host.pier_err(&["run", "-d", "--name", "web3", "-p", "127.0.0.1:5001:80/udp"]);
    assert!(
        e.contains("Bind for 127.0.0.1:5001 failed: port is already allocated"),
        "{e}"
    );
    // A removed container frees its ports.
    host.pier_ok(&["rm", "web"]);
    host.pier_ok(&["run", "-d", "--name", "web3", "-p", "8081:80"]);
}

/// Pids whose command line is exactly `argv`.
fn pids_of(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn interrupting_the_cli_interrupts_the_process() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "c"]);
    // A duration no other test uses, to find the process.
    let argv = ["sleep", "4242.4242"];
    let mut cli = std::process::Command::new(pier_tests::host::pier_bin())
        .arg("--socket")
        .arg(host.socket())
        .args(["exec", "c", "--"])
        .args(argv)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids_of(&argv).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let _ = cli.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pids_of(&argv).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the process outlived its CLI"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn foreground_run_of_a_command_that_cannot_start_leaves_nothing() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "keep"]);
    let before = host.world();
    for (args, code, why) in [
        (
            &["run", "--name", "fg", "--", "/nonexistent/cmd"][..],
            127,
            "/nonexistent/cmd: No such file or directory",
        ),
        (
            &["run", "-d", "--name", "fg", "--", "/nonexistent/cmd"][..],
            127,
            "/nonexistent/cmd: No such file or directory",
        ),
        (
            &["run", "--name", "fg", "--", "/etc/passwd"][..],
            126,
            "/etc/passwd: Permission denied",
        ),
        (
            &["run", "-d", "--name", "fg", "--", "/etc/passwd"][..],
            126,
            "/etc/passwd: Permission denied",
        ),
    ] {
        let out = host.pier(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.starts_with("Error: ") && err.contains(why) && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert_eq!(host.world(), before, "{args:?} left something");
    }
    // The name and the address are free again.
    host.pier_ok(&["run", "--name", "fg", "--", "true"]);
    assert_eq!(ip_of(&host, "fg", "bridge"), "172.17.0.3");
}

#[test]
fn each_connect_takes_the_next_free_eth() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "--subnet", "10.51.0.0/24", "n1"]);
    host.pier_ok(&["network", "create", "--subnet", "10.52.0.0/24", "n2"]);
    host.pier_ok(&["network", "create", "--subnet", "10.53.0.0/24", "n3"]);
    host.pier_ok(&["run", "-d", "--name", "c"]);
    host.pier_ok(&["network", "connect", "n1", "c"]);
    host.pier_ok(&["network", "connect", "n2", "c"]);
    assert_eq!(links_in(&host, "c"), ["lo", "eth0", "eth1", "eth2"]);
    let eth2 = host.in_container("c", &["ip", "-o", "addr", "show", "dev", "eth2"]);
    assert!(eth2.contains("inet 10.52.0.2/24"), "{eth2}");
    let eth2 = host.in_container("c", &["ip", "-o", "link", "show", "dev", "eth2"]);
    assert!(eth2.contains("link/ether 02:42:0a:34:00:02"), "{eth2}");
    // A freed name is taken again by the next connect.
    host.pier_ok(&["network", "disconnect", "n1", "c"]);
    assert_eq!(links_in(&host, "c"), ["lo", "eth0", "eth2"]);
    host.pier_ok(&["network", "connect", "n3", "c"]);
    let mut links = links_in(&host, "c");
    links.sort();
    assert_eq!(links, ["eth0", "eth1", "eth2", "lo"]);
    let eth1 = host.in_container("c", &["ip", "-o", "addr", "show", "dev", "eth1"]);
    assert!(eth1.contains("inet 10.53.0.2/24"), "{eth1}");
    let nets = inspect(&host, "c")["NetworkSettings"]["Networks"].clone();
    let mut names: Vec<&String> = nets.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["bridge", "n2", "n3"]);
}

#[test]
fn run_rm_removes_the_container_and_unknown_options_are_errors() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    // (A container stays, so the bridge's carrier does not change.)
    host.pier_ok(&["run", "-d", "--name", "keep"]);
    let keep = host.pier_ok(&["ps", "-a", "-q"]);
    let before = host.world();
    let out = host.pier(&[
        "run",
        "--rm",
        "--name",
        "t",
        "-p",
        "8080:80",
        "--",
        "sh",
        "-c",
        "echo hi; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(host.pier_ok(&["ps", "-a", "-q"]), keep);
    assert_eq!(host.world(), before, "--rm left something");
    // A command that cannot start: its exit code, one error line, nothing left.
    let out = host.pier(&["run", "--rm", "--name", "t", "--", "/nonexistent/cmd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(host.world(), before);
    // Unknown options are usage errors, not the command; nothing is made.
    for args in [
        &["run", "--bogus", "true"][..],
        &["run", "--bogus", "--", "true"],
        &["run", "--rm", "-z", "--", "true"],
    ] {
        let out = host.pier(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("No such file"), "{args:?}: {err}");
    }
    assert_eq!(host.pier_ok(&["ps", "-a", "-q"]), keep);
    assert_eq!(host.world(), before);
    // Detached: removed when its command exits on its own, or when stopped
    // (also a namespace without a command).
    host.pier_ok(&[
        "run", "-d", "--rm", "--name", "quick", "--", "sh", "-c", "exit 2",
    ]);
    host.pier_ok(&["run", "-d", "--rm", "--name", "ns"]);
    host.pier_ok(&["run", "-d", "--rm", "--name", "long", "--", "sleep", "1000"]);
    assert_eq!(inspect(&host, "long")["HostConfig"]["AutoRemove"], true);
    assert_eq!(inspect(&host, "keep")["HostConfig"]["AutoRemove"], false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.pier(&["inspect", "quick"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "quick was not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(host.pier_ok(&["stop", "long", "ns"]), "long\nns\n");
    assert_eq!(host.pier_ok(&["ps", "-a", "-q"]), keep);
    assert_eq!(host.world(), before);
    // The command is the first argument that is not an option.
    let out = host.pier(&["run", "--rm", "sh", "-c", "exit 6"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(host.world(), before);
}
