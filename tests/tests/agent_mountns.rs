//! The agent wherever it is started: under `ip netns exec` (a mount
//! namespace of its own with a fresh `/sys`: no bpffs, no cgroup v2) its
//! containers' namespaces, its pins and its host-local socket hooks outlive
//! a SIGKILL and a restart started the same way, an established transfer
//! included; and where no cgroup v2 is mounted at all it mounts one of its
//! own under the run dir for the socket hooks.
mod agent_util;

use std::{net::SocketAddr, os::unix::fs::MetadataExt, process::Command, time::Duration};

use agent_util::*;
use nix::sys::signal::Signal;
use pier_tests::{host::HOST_UPLINK_IP, require_root};

const TOTAL: usize = 16 << 20;
const PAUSE: Duration = Duration::from_millis(8);

fn netns_exec(h: &mut pier_tests::TestHost) -> pier_tests::Agent {
    let c = h.agent_command_netns_exec(&[]);
    h.start_agent_with(c, "info")
}

/// Host-local, from the outside, through the published port 8081.
fn served(s: &Sandbox, ns: &std::path::Path, msg: &str) {
    for dst in [
        "127.0.0.1:8081".to_string(),
        format!("{HOST_UPLINK_IP}:8081"),
    ] {
        let srv = tcp_server(ns, 8080, 1);
        let a = tcp_ask(&s.host_ns(), &dst, msg)
            .unwrap_or_else(|e| panic!("{dst} from the host: {e}\n{}", s.log()));
        assert!(a.text.ends_with(&format!("|{msg}")), "{dst}: {a:?}");
        srv.join().unwrap();
    }
    let srv = tcp_server(ns, 8080, 1);
    let a = tcp_ask(&s.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), msg).expect("outside");
    assert_eq!(a.seen_ip(), "198.18.0.2", "the client's address is kept");
    srv.join().unwrap();
}

#[test]
fn an_agent_under_ip_netns_exec_keeps_namespaces_pins_and_flows_across_a_restart() {
    require_root!();
    let mut s = Sandbox::with_agent(netns_exec);
    assert!(
        s.log().contains("joined that of process"),
        "the agent did not leave ip netns exec's mount namespace:\n{}",
        s.log()
    );
    s.host
        .pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    let ns = s.ns_of("web");
    let ns_ino = std::fs::metadata(&ns).unwrap().ino();
    // The container's namespace and the pins are in the test's (the host's)
    // mount namespace, not only in the agent's.
    assert!(
        s.host.bpffs_dir.join("PIER_PORTS").exists(),
        "no pins under {}",
        s.host.bpffs_dir.display()
    );
    served(&s, &ns, "before");

    let srv = checking_server(&ns, 8080);
    let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();
    let client = slow_client(&s.outside_ns(), dst, TOTAL, PAUSE);
    std::thread::sleep(Duration::from_millis(400));
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, Signal::SIGKILL);
    assert!(!client.is_finished(), "the transfer ended before the kill");
    s.agent = Some(netns_exec(&mut s.host));
    s.host.wait_agent_ready();
    assert_eq!(
        client.join().unwrap().expect("transfer"),
        format!("{TOTAL} 0"),
        "bytes received, mismatches across the restart"
    );
    assert_eq!(srv.join().unwrap(), (TOTAL, 0));
    assert_eq!(
        std::fs::metadata(&ns).unwrap().ino(),
        ns_ino,
        "the container's namespace was recreated"
    );
    assert!(!s.log().contains("recreating the namespace"), "{}", s.log());
    served(&s, &ns, "after");
    s.host.pier_ok(&["rm", "-f", "web"]);
    assert!(s.port_entries().is_empty());
    s.assert_firewalls_untouched();
}

#[test]
fn without_a_cgroup2_mount_the_agent_mounts_its_own_for_host_local_clients() {
    require_root!();
    let s = Sandbox::with_agent(|h| {
        let inner = h.agent_command(&[]);
        // A mount namespace with no cgroup v2 (and a bpffs, so the agent has
        // no reason to leave it), gone with the agent.
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "umount -l /sys/fs/cgroup 2>/dev/null; \
                 mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
                 ! grep -q ' cgroup2 ' /proc/self/mounts || exit 9; exec \"$@\"",
            )
            .arg("sh")
            .arg(inner.get_program())
            .args(inner.get_args());
        h.start_agent_with(c, "info")
    });
    let cg = s.host.dir.join("run/cgroup2");
    assert!(
        s.log().contains(&format!(
            "no cgroup v2 mounted: mounted one at {}",
            cg.display()
        )),
        "{}",
        s.log()
    );
    // The mount is the agent's own: not in the test's mount namespace.
    assert!(!cg.join("cgroup.procs").exists());
    s.host
        .pier_ok(&["run", "-d", "--name", "web", "-p", "8081:8080"]);
    // The container's namespace is mounted in the agent's mount namespace.
    let pid = s.agent.as_ref().unwrap().pid;
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/root{}", s.ns_of("web").display()));
    served(&s, &ns, "hooks");
    s.host.pier_ok(&["rm", "-f", "web"]);
    s.assert_firewalls_untouched();
}
