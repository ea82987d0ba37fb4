//! Neighbour anti-spoofing: a container that takes its neighbour's address
//! and announces it with gratuitous ARP (`arping -A`) moves a third
//! container's neighbour entry to its own MAC, and so takes the victim's
//! traffic, without pier; with `pier_veth_in` attached the announcements are
//! dropped (`ArpSpoofed`, at least as many as arping sent), the client's
//! entry keeps the victim's MAC and its connections reach the victim.
mod dataplane_util;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_common::drop::DropReason;
use pier_tests::{TestHost, host::sh, require_root};

const VICTIM: &str = "10.107.0.2";
const PORT: u16 = 7000;

/// A TCP server on `0.0.0.0:PORT` in `ns` that answers every connection with
/// `name` until the test ends (its thread is left blocked in accept).
fn name_server(ns: &str, name: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let l =
            pier_tests::net::bind_retrying(|| TcpListener::bind(("0.0.0.0", PORT))).expect("bind");
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let _ = s.write_all(name.as_bytes());
        }
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
}

/// Who answers `VICTIM:PORT` for the client.
fn who_answers(ns: &str) -> String {
    TestHost::in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(
            &format!("{VICTIM}:{PORT}").parse().unwrap(),
            Duration::from_secs(3),
        )
        .expect("connect to the victim's address");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// The client's neighbour entry for the victim's address (its MAC).
fn neighbour_mac(ns: &str) -> Option<String> {
    let out = sh(&["ip", "-n", ns, "-j", "neigh", "show", VICTIM, "dev", "eth0"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["lladdr"].as_str().map(str::to_string)
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `arping -A` for the victim's address from `ns`: `count` gratuitous ARP
/// replies, one a second. Returns how many arping says it sent.
fn announce(ns: &str, count: u32) -> u64 {
    let out = TestHost::cmd_in(ns, "arping")
        .args(["-A", "-c", &count.to_string(), "-I", "eth0", VICTIM])
        .output()
        .expect("run arping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "Sent 5 probes (5 broadcast(s))"
    text.lines()
        .find_map(|l| l.strip_prefix("Sent ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("arping output: {text}"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gratuitous_arp_for_a_neighbours_address_is_dropped() {
    require_root!();
    if which("arping").is_none() {
        panic!("arping (iputils-arping) is missing: run `cargo xtask setup`");
    }
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let victim = w.container("victim", &net, VICTIM);
    let attacker = w.container("attacker", &net, "10.107.0.3");
    let client = w.container("client", &net, "10.107.0.4");
    name_server(&victim.ns, "victim");
    name_server(&attacker.ns, "attacker");

    // Without pier: the client's entry moves to the attacker, and so does
    // its traffic (this is what the test must be able to see fail).
    assert!(ping(&client.ns, VICTIM));
    assert_eq!(neighbour_mac(&client.ns), Some(mac_str(victim.mac)));
    // The attack: the attacker takes the victim's address as well.
    sh(&[
        "ip",
        "-n",
        &attacker.ns,
        "addr",
        "add",
        &format!("{VICTIM}/32"),
        "dev",
        "eth0",
    ]);
    announce(&attacker.ns, 3);
    wait_for(
        "the client's cache to be poisoned",
        Duration::from_secs(5),
        || neighbour_mac(&client.ns) == Some(mac_str(attacker.mac)),
    );
    assert_eq!(who_answers(&client.ns), "attacker");

    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // The client learns the victim afresh: the attacker's kernel answers
        // the request too (it holds the address), and is dropped.
        sh(&["ip", "-n", &client.ns, "neigh", "flush", "dev", "eth0"]);
        assert!(ping(&client.ns, VICTIM));
        assert_eq!(neighbour_mac(&client.ns), Some(mac_str(victim.mac)));
        let before = drops(&dp, DropReason::ArpSpoofed);
        let sent = announce(&attacker.ns, 5);
        assert!(sent >= 5, "arping sent {sent}");
        // Each announcement is counted at the attacker's veth before it
        // could reach anyone; wait for all of them, then look.
        wait_for("every announcement counted", Duration::from_secs(5), || {
            drops(&dp, DropReason::ArpSpoofed) - before >= sent
        });
        assert_eq!(
            neighbour_mac(&client.ns),
            Some(mac_str(victim.mac)),
            "the client's entry for the victim is unpoisoned"
        );
        assert_eq!(who_answers(&client.ns), "victim");
        // The victim's own announcement passes (and is not counted).
        let counted = drops(&dp, DropReason::ArpSpoofed);
        announce(&victim.ns, 1);
        assert_eq!(drops(&dp, DropReason::ArpSpoofed), counted);
        assert!(ping(&client.ns, VICTIM));

        // Hand-built ARP through BPF_PROG_TEST_RUN on each veth.
        let vv = nix::net::if_::if_nametoindex(victim.host_ifname.as_str()).unwrap();
        let va = nix::net::if_::if_nametoindex(attacker.host_ifname.as_str()).unwrap();
        let arp = |eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], oper: u8| {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&eth_src);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, oper]);
            f.extend_from_slice(&sha);
            f.extend_from_slice(&spa);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&[10, 107, 0, 4]);
            f
        };
        let vip = [10, 107, 0, 2];
        let aip = [10, 107, 0, 3];
        let run = |dp: &mut EbpfDataplane, f: &[u8], ifindex: u32| {
            dp.test_run(programs::VETH_IN, f, ifindex).unwrap().0
        };
        let before = drops(&dp, DropReason::ArpSpoofed);
        let malformed = drops(&dp, DropReason::Malformed);
        let cases: Vec<(&str, Vec<u8>, u32, u32)> = vec![
            ("own request", arp(victim.mac, victim.mac, vip, 1), vv, 0),
            ("own reply", arp(victim.mac, victim.mac, vip, 2), vv, 0),
            (
                "probe (0.0.0.0)",
                arp(attacker.mac, attacker.mac, [0; 4], 1),
                va,
                0,
            ),
            (
                "neighbour's address",
                arp(attacker.mac, attacker.mac, vip, 2),
                va,
                2,
            ),
            (
                "neighbour's address, its MAC too",
                arp(victim.mac, victim.mac, vip, 2),
                va,
                2,
            ),
            (
                "own address, neighbour's MAC",
                arp(attacker.mac, victim.mac, aip, 2),
                va,
                2,
            ),
            (
                "sender MAC not the frame's",
                arp(attacker.mac, victim.mac, aip, 1),
                va,
                2,
            ),
            (
                "unknown address",
                arp(attacker.mac, attacker.mac, [10, 107, 0, 99], 2),
                va,
                2,
            ),
            (
                "outside the network",
                arp(attacker.mac, attacker.mac, [198, 18, 0, 2], 2),
                va,
                2,
            ),
            (
                "not Ethernet/IPv4",
                {
                    let mut f = arp(attacker.mac, attacker.mac, aip, 1);
                    f[16..18].copy_from_slice(&[0x86, 0xdd]);
                    f
                },
                va,
                2,
            ),
        ];
        for (what, f, ifindex, verdict) in &cases {
            assert_eq!(run(&mut dp, f, *ifindex), *verdict, "{what}");
        }
        let shot = cases.iter().filter(|c| c.3 == 2).count() as u64;
        assert_eq!(drops(&dp, DropReason::ArpSpoofed) - before, shot);
        // Truncated ARP (the kernel test-runs nothing shorter than 34 bytes).
        assert_eq!(
            run(&mut dp, &arp(attacker.mac, attacker.mac, aip, 1)[..34], va),
            2
        );
        assert_eq!(drops(&dp, DropReason::Malformed) - malformed, 1);
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The bridge port (host-side veth) the bridge of `w` forwards `mac` to.
fn fdb_port(w: &World, mac: [u8; 6]) -> Option<String> {
    let out = sh(&[
        "bridge",
        "-n",
        &w.host.host_ns,
        "-j",
        "fdb",
        "show",
        "br",
        "br1",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()?
        .iter()
        .find(|e| e["mac"].as_str() == Some(mac_str(mac).as_str()) && e["vlan"].is_null())
        .and_then(|e| e["ifname"].as_str().map(str::to_string))
}

/// A container that sends with its neighbour's MAC as the Ethernet source
/// moves the bridge's forwarding entry for that MAC to its own port (the
/// victim's frames go to it) without pier; with `pier_veth_in` its frames are
/// dropped (`MacSpoofed`) before the bridge learns from them.
#[test]
fn frames_with_a_neighbours_mac_do_not_move_its_bridge_entry() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.107.0.0/24");
    let victim = w.container("victim", &net, VICTIM);
    let attacker = w.container("attacker", &net, "10.107.0.3");
    let client = w.container("client", &net, "10.107.0.4");
    name_server(&victim.ns, "victim");
    assert!(ping(&client.ns, VICTIM));
    assert_eq!(
        fdb_port(&w, victim.mac).as_deref(),
        Some(victim.host_ifname.as_str())
    );
    // The attacker takes the victim's MAC and sends IP (its neighbour entry
    // for the client set by hand: no ARP needed).
    sh(&[
        "ip",
        "-n",
        &attacker.ns,
        "neigh",
        "replace",
        "10.107.0.4",
        "lladdr",
        &mac_str(client.mac),
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip",
        "-n",
        &attacker.ns,
        "link",
        "set",
        "eth0",
        "address",
        &mac_str(victim.mac),
    ]);
    let flood = |n: &str| {
        TestHost::cmd_in(&attacker.ns, "ping")
            .args(["-c", n, "-i", "0.2", "-W", "1", "10.107.0.4"])
            .output()
            .unwrap();
    };
    flood("3");
    // Without pier: the bridge now sends the victim's frames to the attacker.
    assert_eq!(
        fdb_port(&w, victim.mac).as_deref(),
        Some(attacker.host_ifname.as_str())
    );
    // (Its frames go to the attacker until the victim speaks again.)

    let desired = w.desired(vec![]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // The victim speaks: the bridge learns it back.
        assert!(ping(&victim.ns, "10.107.0.4"));
        assert_eq!(
            fdb_port(&w, victim.mac).as_deref(),
            Some(victim.host_ifname.as_str())
        );
        let before = drops(&dp, DropReason::MacSpoofed);
        flood("5");
        let dropped = drops(&dp, DropReason::MacSpoofed) - before;
        assert!(
            dropped >= 5,
            "{dropped} frames with the victim's MAC dropped"
        );
        assert_eq!(
            fdb_port(&w, victim.mac).as_deref(),
            Some(victim.host_ifname.as_str()),
            "the bridge entry for the victim's MAC moved"
        );
        assert_eq!(who_answers(&client.ns), "victim");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.exists())
}
