//! Several uplinks: masquerade leaves by the uplink the host's route for the
//! destination picks, from that route's source address, per flow, and the
//! replies come back through it. The host here has `uplink0` (the outside,
//! 198.18.0.0/24) and `uplink1` (a `wan` namespace, 198.51.100.0/24) with the
//! default route via `uplink1`; servers sit behind each.
mod agent_util;

use agent_util::*;
use pier_tests::{TestHost, require_root};

const WAN_HOST: &str = "198.51.100.1";
const WAN_PEER: &str = "198.51.100.2";
/// A server beyond the wan side, reached by the host's default route only.
const FAR: &str = "192.0.2.1";

fn sh(ns: &str, args: &[&str]) {
    let out = TestHost::cmd_in(ns, args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn masquerade_leaves_by_the_uplink_its_route_picks() {
    require_root!();
    let mut s = Sandbox::new(&[]);
    let wan = s.host.add_netns("wan");
    let hns = s.host.host_ns.clone();
    pier_tests::host::veth_between((&hns, "uplink1", WAN_HOST), (&wan, "eth0", WAN_PEER));
    sh(
        &wan,
        &["ip", "addr", "add", &format!("{FAR}/32"), "dev", "lo"],
    );
    sh(&wan, &["ip", "link", "set", "lo", "up"]);
    // The default route now leaves by uplink1 (the test's own namespace).
    sh(
        &hns,
        &[
            "ip", "route", "replace", "default", "via", WAN_PEER, "dev", "uplink1",
        ],
    );
    let agent = s.agent.take().unwrap();
    s.host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    s.agent = Some(s.host.start_agent(&["--uplink", "uplink1"]));
    s.host.wait_agent_ready();
    s.host.pier_ok(&["network", "create", "n1"]);
    for c in ["a", "b"] {
        s.host
            .pier_ok(&["run", "-d", "--name", c, "--network", "n1"]);
    }
    s.host.pier_ok(&["run", "-d", "--name", "d"]);
    let wan_ns = ns_path(&wan);
    for c in ["a", "b", "d"] {
        let ns = s.ns_of(c);
        // Behind uplink1 by the default route: from uplink1's address.
        let srv = tcp_server(&wan_ns, 9000, 1);
        let a = tcp_ask(&ns, &format!("{FAR}:9000"), c)
            .unwrap_or_else(|e| panic!("{c} to {FAR}: {e}\n{}", s.log()));
        assert_eq!(a.seen_ip(), WAN_HOST, "{c}: {a:?}");
        srv.join().unwrap();
        // On uplink0's link: from uplink0's address.
        let srv = tcp_server(&s.outside_ns(), 9000, 1);
        let a = tcp_ask(&ns, "198.18.0.2:9000", c).expect("outside");
        assert_eq!(a.seen_ip(), "198.18.0.1", "{c}: {a:?}");
        srv.join().unwrap();
        // UDP and ICMP the same way (UDP to the wan peer itself: a server
        // bound to 0.0.0.0 answers from its own address, not FAR's).
        let srv = udp_server(&wan_ns, 9001, 1);
        let a = udp_ask(&ns, &format!("{WAN_PEER}:9001"), c).expect("udp wan");
        assert!(a.text.starts_with(&format!("{WAN_HOST}:")), "{c}: {a:?}");
        srv.join().unwrap();
        let srv = udp_server(&s.outside_ns(), 9001, 1);
        let a = udp_ask(&ns, "198.18.0.2:9001", c).expect("udp outside");
        assert!(a.text.starts_with("198.18.0.1:"), "{c}: {a:?}");
        srv.join().unwrap();
        assert!(ping(&ns, FAR), "{c}: ping {FAR}");
        assert!(ping(&ns, WAN_PEER), "{c}: ping {WAN_PEER}");
        assert!(ping(&ns, "198.18.0.2"), "{c}: ping the outside");
    }
    // A route change applies to new flows: FAR by uplink0 now, where the
    // outside has it too.
    sh(
        &s.host.outside_ns,
        &["ip", "addr", "add", &format!("{FAR}/32"), "dev", "lo"],
    );
    sh(
        &hns,
        &[
            "ip",
            "route",
            "add",
            &format!("{FAR}/32"),
            "via",
            "198.18.0.2",
            "dev",
            "uplink0",
        ],
    );
    let srv = tcp_server(&s.outside_ns(), 9000, 1);
    let a = tcp_ask(&s.ns_of("a"), &format!("{FAR}:9000"), "moved").expect("far by uplink0");
    assert_eq!(a.seen_ip(), "198.18.0.1", "{a:?}");
    srv.join().unwrap();
    s.assert_firewalls_untouched();
}
