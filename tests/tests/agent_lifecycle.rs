//! The agent's life: one agent per state dir, SIGTERM leaves containers
//! running for the next agent, reconcile repairs and cleans the kernel, and
//! `system reset` removes everything.
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pier_tests::{TestHost, require_root};

fn pid_of(host: &TestHost, name: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&host.pier_ok(&["inspect", name])).unwrap();
    v[0]["State"]["Pid"].as_i64().unwrap()
}

#[test]
fn second_agent_on_the_same_state_dir_fails() {
    require_root!();
    let mut host = TestHost::new();
    let _agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "keep"]);
    let before = host.world();
    let t = Instant::now();
    let out = host.run_agent_to_exit(&[]);
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "it must fail at once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error: another pier agent is using the state dir"),
        "{err}"
    );
    // The first agent still answers, and nothing changed.
    assert_eq!(host.world(), before);
}

#[test]
fn bad_agent_flags_fail_at_once_with_one_line_and_make_nothing() {
    require_root!();
    let host = TestHost::new();
    let links = host.host(&["ip", "-br", "link", "show"]);
    let addrs = host.host(&["ip", "-br", "-4", "addr", "show"]);
    for (extra, want) in [
        (
            vec!["--uplink", "nosuch0"],
            "Error: uplink nosuch0 does not exist",
        ),
        // uplink0 has 198.18.0.1/24: pier0 would take the host's address.
        (
            vec!["--default-subnet", "198.18.0.0/24"],
            "Error: --default-subnet 198.18.0.0/24 overlaps 198.18.0.0/24, which is routed on the host",
        ),
        (
            vec!["--default-subnet", "198.18.0.0/16"],
            "Error: --default-subnet 198.18.0.0/16 overlaps 198.18.0.0/24, which is routed on the host",
        ),
        (
            vec!["--default-subnet", "bogus"],
            "Error: --default-subnet: invalid subnet bogus",
        ),
    ] {
        // An agent that starts anyway is killed, and the test fails.
        let log = host.dir.join("bad-agent.log");
        let mut child = host
            .agent_command(&extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{extra:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("Error")).collect();
        assert_eq!(errors, [want], "{extra:?}: {err}");
        assert_eq!(
            host.host(&["ip", "-br", "link", "show"]),
            links,
            "{extra:?}"
        );
        assert_eq!(
            host.host(&["ip", "-br", "-4", "addr", "show"]),
            addrs,
            "{extra:?}"
        );
        // Refused before anything was loaded: no pin, no bpffs directory.
        assert!(
            !host.bpffs_dir.exists(),
            "{extra:?}: {} was made",
            host.bpffs_dir.display()
        );
    }
}

#[test]
fn sigterm_keeps_containers_and_a_new_agent_takes_over() {
    require_root!();
    let mut host = TestHost::new();
    let agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "mynet",
        "--",
        "sleep",
        "1000",
    ]);
    let pid = pid_of(&host, "srv");
    let ip_before = host.in_container("srv", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    let ns = host.container_netns(&host.container_id("srv"));
    host.stop_agent(&agent, Signal::SIGTERM);
    assert!(!host.socket().exists(), "the socket is removed on exit");
    // Process and networking live on without an agent.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let ip_now = pier_tests::host::sh(&[
        "nsenter",
        &format!("--net={}", ns.display()),
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert_eq!(ip_now, ip_before);
    let _agent2 = host.start_agent(&[]);
    assert_eq!(pid_of(&host, "srv"), pid, "the new agent knows the process");
    let ps = host.pier_ok(&["ps"]);
    assert!(ps.contains("srv") && ps.contains("Up"), "{ps}");
    assert_eq!(
        host.pier_ok(&["exec", "srv", "--", "cat", "/etc/hostname"])
            .len(),
        13
    );
    host.pier_ok(&["rm", "-f", "srv"]);
}

#[test]
fn reconcile_recreates_recorded_and_removes_unrecorded() {
    require_root!();
    let mut host = TestHost::new();
    let agent = host.start_agent(&[]);
    let net_id = host
        .pier_ok(&["network", "create", "mynet"])
        .trim()
        .to_string();
    let br = format!("br-{}", &net_id[..12]);
    host.pier_ok(&["run", "-d", "--name", "c1", "--network", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "c2"]);
    let c2 = host.container_id("c2");
    let v: serde_json::Value = serde_json::from_str(&host.pier_ok(&["inspect", "c1"])).unwrap();
    let ep = v[0]["NetworkSettings"]["Networks"]["mynet"]["EndpointID"]
        .as_str()
        .unwrap()
        .to_string();
    let veth = format!("veth{}", &ep[..7]);
    host.stop_agent(&agent, Signal::SIGKILL);
    // Damage: c1's veth and the bridge gone, c2's namespace gone; strays added.
    host.host(&["ip", "link", "del", &veth]);
    host.host(&["ip", "link", "del", &br]);
    nix::mount::umount2(&host.container_netns(&c2), nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_file(host.container_netns(&c2)).unwrap();
    host.host(&["ip", "link", "add", "br-0123456789ab", "type", "bridge"]);
    host.host(&[
        "ip",
        "link",
        "add",
        "veth0abcdef",
        "type",
        "veth",
        "peer",
        "name",
        "keepme0",
    ]);
    host.host(&["ip", "link", "add", "notpier0", "type", "bridge"]);
    let stray = host.run_dir().join("netns").join("f".repeat(64));
    std::fs::write(&stray, "").unwrap();

    let _agent2 = host.start_agent(&[]);
    // The killed agent left its socket: wait for the new one to answer.
    host.wait_agent_ready();
    let links = host.host_link_names();
    assert!(links.contains(&br), "bridge recreated: {links:?}");
    assert!(links.contains(&veth), "veth recreated: {links:?}");
    assert!(!links.contains(&"br-0123456789ab".to_string()), "{links:?}");
    assert!(!links.contains(&"veth0abcdef".to_string()), "{links:?}");
    assert!(links.contains(&"notpier0".to_string()), "not pier's: kept");
    assert!(!stray.exists());
    let master = host.host(&["ip", "-o", "link", "show", "master", &br]);
    assert!(master.contains(&veth), "{master}");
    let addr = host.in_container("c1", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 172.18.0.2/16"), "{addr}");
    let addr = host.in_container("c2", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 172.17.0.2/16"), "{addr}");
    host.in_container("c1", &["ping", "-c", "1", "-W", "2", "172.18.0.1"]);
}

#[test]
fn system_reset_removes_everything() {
    require_root!();
    let mut host = TestHost::new();
    let links_before = host.host_link_names();
    let agent = host.start_agent(&[]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "mynet",
        "--",
        "sleep",
        "1000",
    ]);
    host.pier_ok(&["run", "-d", "--name", "b"]);
    host.pier_ok(&["run", "-d", "--name", "c", "--network", "container:b"]);
    let pid = pid_of(&host, "a");
    // Without -f and without an answer (stdin at its end): nothing happens.
    let out = host.pier(&["system", "reset"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.trim_end()
            .ends_with("system reset cancelled: nothing was removed"),
        "{err}"
    );
    assert_eq!(pid_of(&host, "a"), pid, "the agent and `a` are untouched");
    let out = host.pier_ok(&["system", "reset", "-f"]);
    assert!(out.contains("removed"), "{out}");
    host.stop_agent(&agent, Signal::SIGTERM);
    assert_eq!(host.host_link_names(), links_before);
    let left: Vec<_> = std::fs::read_dir(host.run_dir().join("netns"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z ") || !s.contains("(sleep)")
        }
    );
    assert!(
        !host.bpffs_dir.exists(),
        "pins are left in {}",
        host.bpffs_dir.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&host.dir.to_string_lossy().into_owned()),
        "a mount is left"
    );
    // A fresh start has just the defaults again.
    let _agent2 = host.start_agent(&[]);
    assert_eq!(host.pier_ok(&["network", "ls", "-q"]).lines().count(), 3);
    assert_eq!(host.pier_ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn rm_container_whose_command_ended_without_an_agent_goes_at_restart() {
    require_root!();
    let mut host = TestHost::new();
    let agent = host.start_agent(&[]);
    host.pier_ok(&["run", "-d", "--name", "keep", "--", "sleep", "1000"]);
    let before = host.world();
    host.pier_ok(&["run", "-d", "--rm", "--name", "r", "--", "sleep", "1000"]);
    let pid = pid_of(&host, "r");
    host.stop_agent(&agent, Signal::SIGTERM);
    // Its command ends while no agent runs.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(std::time::Instant::now() < deadline, "sleep did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _agent = host.start_agent(&[]);
    assert_eq!(host.world(), before, "r is gone, keep stays");
}
