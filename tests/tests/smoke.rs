//! The toolchain end to end: the embedded object loads, a TC program attaches
//! to an interface inside a TestHost, real packets go through it, and the
//! per-CPU counter map read from user space counts exactly what was sent.
use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{SchedClassifier, TcAttachType, tc},
};
use pier_agent::dataplane::{EBPF_OBJECT, programs};
use pier_common::{
    maps::SMOKE_COUNTERS,
    metrics::{Counter, CounterIdx},
};
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, UPLINK},
    net::{firewall_snapshot, send_udp},
    require_root,
};

fn sum(map: &PerCpuArray<&aya::maps::MapData, Counter>, idx: CounterIdx) -> Counter {
    let per_cpu = map.get(&(idx as u32), 0).expect("read counter");
    per_cpu.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

#[test]
fn tc_program_counts_exactly_the_packets_sent() {
    require_root!();
    let fw_before = firewall_snapshot(None);
    let host = TestHost::new();
    const N: usize = 37;
    const LEN: usize = 100;
    let host_ns = host.host_ns.clone();
    let outside_ns = host.outside_ns.clone();
    // Load and attach inside the host namespace; keep the Ebpf (and so the
    // attachment) alive while traffic flows from the outside.
    TestHost::in_netns(&host_ns, || {
        let mut bpf = Ebpf::load(EBPF_OBJECT).expect("load embedded object");
        let _ = tc::qdisc_add_clsact(UPLINK);
        let prog: &mut SchedClassifier = bpf
            .program_mut(programs::SMOKE)
            .expect("program in object")
            .try_into()
            .expect("a TC program");
        prog.load().expect("verifier accepts pier_smoke");
        prog.attach(UPLINK, TcAttachType::Ingress)
            .expect("attach to uplink ingress");

        send_udp(&outside_ns, &format!("{HOST_UPLINK_IP}:9"), N, LEN);

        let map = PerCpuArray::try_from(bpf.map(SMOKE_COUNTERS).expect("map")).expect("per-cpu");
        let udp = sum(&map, CounterIdx::Udp);
        assert_eq!(udp.packets, N as u64, "UDP packets counted");
        // Ethernet 14 + IPv4 20 + UDP 8 + payload.
        assert_eq!(
            udp.bytes,
            (N * (14 + 20 + 8 + LEN)) as u64,
            "UDP bytes counted"
        );
        let all = sum(&map, CounterIdx::All);
        assert!(all.packets >= N as u64);
        assert_eq!(sum(&map, CounterIdx::Icmp).packets, 0, "no ICMP was sent");
    });
    drop(host);
    assert_eq!(firewall_snapshot(None), fw_before, "the firewall changed");
}

#[test]
fn test_host_cleans_up_after_itself() {
    require_root!();
    let names;
    {
        let mut host = TestHost::new();
        let extra = host.add_netns("c1");
        names = [host.host_ns.clone(), host.outside_ns.clone(), extra];
        let listed = pier_tests::host::sh(&["ip", "netns", "list"]);
        for n in &names {
            assert!(
                listed.contains(n.as_str()),
                "{n} exists while the host lives"
            );
        }
        // The uplink works.
        host.outside(&["ping", "-c1", "-W2", HOST_UPLINK_IP]);
    }
    let listed = pier_tests::host::sh(&["ip", "netns", "list"]);
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} was left behind");
    }
}

#[test]
fn test_host_cleans_up_when_the_test_panics() {
    require_root!();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let host = TestHost::new();
        tx.send(host.host_ns.clone()).unwrap();
        panic!("deliberate");
    })
    .join();
    assert!(r.is_err());
    let ns = rx.recv().unwrap();
    let listed = pier_tests::host::sh(&["ip", "netns", "list"]);
    assert!(!listed.contains(ns.as_str()), "{ns} was left behind");
}

#[test]
fn start_agent_reports_an_agent_that_died_at_once() {
    require_root!();
    let t = std::time::Instant::now();
    let r = std::panic::catch_unwind(|| {
        let mut host = TestHost::new();
        host.start_agent(&["--default-subnet", "bogus"]);
    });
    let msg = r.expect_err("start_agent must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("agent exited (exit status: 1) before opening its socket")
            && msg.contains("Error: --default-subnet: invalid subnet bogus"),
        "{msg}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "not the 20 s wait"
    );
}
