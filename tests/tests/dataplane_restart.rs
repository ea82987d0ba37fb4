//! Restart without loss: maps and links are pinned under the agent's bpffs
//! directory, so dropping the dataplane (the agent exiting) leaves the
//! programs working, and a new `EbpfDataplane` on the same directory takes
//! over: long transfers through a published port and through masquerade
//! complete with every byte intact, and new connections work.
mod dataplane_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane};
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 96;

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn chunk(i: usize) -> Vec<u8> {
    (0..CHUNK).map(|j| (i * 31 + j * 7) as u8).collect()
}

fn expected() -> String {
    let mut h = 0xcbf29ce484222325;
    for i in 0..CHUNKS {
        h = fnv(&chunk(i), h);
    }
    format!("{}:{h:x}", CHUNK * CHUNKS)
}

/// A server in `ns` on `port` that reads one stream to EOF and answers
/// `<length>:<fnv hash>`.
fn sink(ns: &str, port: u16) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_in(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let (mut n, mut h) = (0usize, 0xcbf29ce484222325u64);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let r = s.read(&mut buf).unwrap();
            if r == 0 {
                break;
            }
            n += r;
            h = fnv(&buf[..r], h);
        }
        write!(s, "{n}:{h:x}").unwrap();
    });
    rx.recv().unwrap();
    h
}

/// A slow sender in `ns` to `dst`; joins to the server's answer.
fn slow_send(ns: &str, dst: &str) -> JoinHandle<String> {
    let dst: SocketAddr = dst.parse().unwrap();
    spawn_in(ns, move || {
        let mut s = TcpStream::connect(dst).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for i in 0..CHUNKS {
            s.write_all(&chunk(i)).expect("send");
            std::thread::sleep(Duration::from_millis(15));
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        answer
    })
}

/// The ingress filters of `dev` in namespace `ns`, as `(pref, handle, prog id)`
/// of each `pier_veth_in` filter, plus the number of filter lines in all.
fn veth_filters(ns: &str, dev: &str) -> (Vec<(u32, String, u32)>, usize) {
    let out = TestHost::cmd_in(ns, "tc")
        .args(["filter", "show", "dev", dev, "ingress"])
        .output()
        .expect("tc filter show");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ours = Vec::new();
    let mut lines = 0;
    for l in text.lines().filter(|l| l.contains(" handle ")) {
        lines += 1;
        let word = |k: &str| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| *x == k)
                .map(|i| w[i + 1].to_string())
                .unwrap_or_default()
        };
        if l.contains("pier_veth_in") && l.contains("direct-action") {
            ours.push((
                word("pref").parse().unwrap(),
                word("handle"),
                word("id").parse().unwrap(),
            ));
        }
    }
    (ours, lines)
}

fn has_clsact(ns: &str, dev: &str) -> bool {
    let out = TestHost::cmd_in(ns, "tc")
        .args(["qdisc", "show", "dev", dev])
        .output()
        .expect("tc qdisc show");
    String::from_utf8_lossy(&out.stdout).contains("clsact")
}

#[test]
fn a_new_dataplane_on_the_same_pins_takes_over_without_cutting_connections() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.105.0.0/24");
    let c1 = w.container("c1", &net, "10.105.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    let host_ns = w.host.host_ns.clone();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg.clone());
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");

        let published = sink(&c1.ns, 8080);
        let outbound = sink(&out, 7000);
        let t1 = slow_send(&out, &format!("{HOST_UPLINK_IP}:8081"));
        let t2 = slow_send(&c1.ns, &format!("{OUTSIDE_IP}:7000"));
        std::thread::sleep(Duration::from_millis(400));
        // The host-side veth carries one direct-action filter, pref 1 handle 0x1.
        let (before, n) = veth_filters(&host_ns, &c1.host_ifname);
        assert_eq!(n, 1, "one filter on the veth");
        assert_eq!((before[0].0, before[0].1.as_str()), (1, "0x1"));

        // The agent goes away: nothing is detached.
        drop(dp);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(veth_filters(&host_ns, &c1.host_ifname).0, before);
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("restart");
        dp.sync(&desired).expect("sync after restart");
        assert_eq!(dp.attached_veths(), vec!["vc1"]);
        // The same filter now runs the new agent's program (replaced in place).
        let (after, n) = veth_filters(&host_ns, &c1.host_ifname);
        assert_eq!(n, 1, "still one filter on the veth");
        assert_eq!((after[0].0, after[0].1.as_str()), (1, "0x1"));
        assert_ne!(after[0].2, before[0].2, "the program was replaced");

        assert_eq!(t1.join().unwrap(), expected(), "published transfer");
        assert_eq!(t2.join().unwrap(), expected(), "masqueraded transfer");
        published.join().unwrap();
        outbound.join().unwrap();

        let s = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "new").expect("new conn");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s.join().unwrap();

        // Teardown detaches everything: the port is no longer served.
        dp.remove_all().unwrap();
        let _s = tcp_server(&c1.ns, 8080, 1);
        let e = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "x").expect_err("detached");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(veth_filters(&host_ns, &c1.host_ifname).1, 0, "filter left");
        assert!(!has_clsact(&host_ns, &c1.host_ifname), "clsact qdisc left");
    });
    assert!(!w.host.bpffs_dir.exists());
    w.assert_firewalls_untouched();
}

/// A pinned map of another layout (what an older pier left: a smaller
/// conntrack value, a smaller endpoint value, an LRU masquerade table) is
/// made afresh at start,
/// while pins of the same layout are taken over as they are (same map).
#[test]
fn pins_of_another_layout_are_made_afresh_and_the_others_kept() {
    require_root!();
    use aya::maps::MapInfo;
    use pier_common::{ct::CtVal, endpoint::EndpointVal4, maps as names};
    let mut w = World::new(false);
    let net = w.network(1, "10.108.0.0/24");
    let c1 = w.container("c1", &net, "10.108.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    let dir = w.host.bpffs_dir.clone();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg.clone());
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        drop(dp);
        let id = |n: &str| MapInfo::from_pin(dir.join(n)).expect(n).id();
        let ports = id(names::PORTS);
        // What an older layout pinned: 32-byte conntrack values, 20-byte
        // endpoints, and an LRU masquerade table of today's key, value and
        // size (only its type differs).
        let snat = names::SNAT_LEN.to_string();
        for (name, kind, key, value, entries) in [
            (names::CT, "lru_hash", 16, 32, "16"),
            (names::ENDPOINTS, "hash", 4, 20, "16"),
            (names::SNAT_FWD, "lru_hash", 16, 24, snat.as_str()),
            // Port counters keyed by port (before slots).
            (names::PORT_STATS, "percpu_hash", 8, 16, "65536"),
        ] {
            let pin = dir.join(name);
            std::fs::remove_file(&pin).unwrap();
            let st = std::process::Command::new("bpftool")
                .args(["map", "create"])
                .arg(&pin)
                .args(["type", kind, "key", &key.to_string(), "value"])
                .args([&value.to_string(), "entries", entries, "name", name])
                .status()
                .expect("bpftool");
            assert!(st.success(), "bpftool map create {name}");
        }
        let old_ct = id(names::CT);
        let old_snat = id(names::SNAT_FWD);
        let old_stats = id(names::PORT_STATS);
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start over pins of another layout");
        dp.sync(&desired).expect("sync");
        let ct = MapInfo::from_pin(dir.join(names::CT)).unwrap();
        assert_ne!(ct.id(), old_ct, "PIER_CT made afresh");
        assert_eq!(ct.value_size() as usize, std::mem::size_of::<CtVal>());
        let ep = MapInfo::from_pin(dir.join(names::ENDPOINTS)).unwrap();
        assert_eq!(
            ep.value_size() as usize,
            std::mem::size_of::<EndpointVal4>()
        );
        let fwd = MapInfo::from_pin(dir.join(names::SNAT_FWD)).unwrap();
        assert_ne!(fwd.id(), old_snat, "PIER_SNAT_FWD made afresh");
        assert_eq!(fwd.map_type().unwrap(), aya::maps::MapType::Hash);
        assert_eq!(fwd.map_flags(), names::SNAT_FLAGS);
        let stats = MapInfo::from_pin(dir.join(names::PORT_STATS)).unwrap();
        assert_ne!(stats.id(), old_stats, "PIER_PORT_STATS made afresh");
        assert_eq!(stats.map_type().unwrap(), aya::maps::MapType::PerCpuArray);
        assert_eq!(id(names::PORTS), ports, "PIER_PORTS kept");
        // And the port is served through the new maps.
        let s = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "hi").expect("published");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s.join().unwrap();
        dp.remove_all().unwrap();
    });
    assert!(!w.host.bpffs_dir.exists());
    w.assert_firewalls_untouched();
}

/// Not a test on its own: the "agent" process that
/// `a_killed_agent_leaves_the_dataplane_working` starts and SIGKILLs. It
/// builds its dataplane from `PIER_DP_CHILD` and waits to be killed.
#[test]
#[ignore = "helper process of a_killed_agent_leaves_the_dataplane_working"]
fn child_agent() {
    let Ok(spec) = std::env::var("PIER_DP_CHILD") else {
        return;
    };
    let f: Vec<&str> = spec.split(',').collect();
    let [host_ns, bpffs, bridge, subnet, ip, mac, ifname] = f[..] else {
        panic!("bad PIER_DP_CHILD {spec}");
    };
    let fd = std::fs::File::open(format!("/run/netns/{host_ns}")).unwrap();
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let mut m = [0u8; 6];
    for (i, b) in mac.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    let desired = pier_agent::dataplane::DesiredState {
        networks: vec![pier_agent::dataplane::NetworkSpec {
            id: 1,
            bridge: bridge.into(),
            subnet: Some(subnet),
            gateway: subnet.hosts().next(),
            subnet6: None,
            gateway6: None,
            internal: false,
            icc: true,
            masquerade: true,
        }],
        endpoints: vec![pier_agent::dataplane::EndpointSpec {
            network_id: 1,
            ip: Some(ip),
            ip6: None,
            mac: m,
            host_ifname: ifname.into(),
        }],
        ports: vec![tcp(8081, ip, 8080)],
        ..Default::default()
    };
    let mut dp = EbpfDataplane::new(pier_agent::dataplane::DataplaneConfig {
        bpffs_dir: bpffs.into(),
        uplinks: vec!["uplink0".into()],
        cgroup: None,
    });
    dp.start().unwrap();
    dp.sync(&desired).unwrap();
    println!("PIER-CHILD-READY");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_killed_agent_leaves_the_dataplane_working() {
    require_root!();
    use std::io::BufRead;
    let mut w = World::new(false);
    let net = w.network(1, "10.108.0.0/24");
    let c1 = w.container("c1", &net, "10.108.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    let mac = c1
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let spec = format!(
        "{},{},{},{},{},{},{}",
        w.host.host_ns,
        cfg.bpffs_dir.display(),
        net.bridge,
        net.subnet.unwrap(),
        c1.ip,
        mac,
        c1.host_ifname
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_agent", "--exact", "--ignored", "--nocapture"])
        .env("PIER_DP_CHILD", spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.map(|l| l == "PIER-CHILD-READY").unwrap_or(false)),
        "the child agent did not come up"
    );

    let published = sink(&c1.ns, 8080);
    let outbound = sink(&out, 7000);
    let t1 = slow_send(&out, &format!("{HOST_UPLINK_IP}:8081"));
    let t2 = slow_send(&c1.ns, &format!("{OUTSIDE_IP}:7000"));
    std::thread::sleep(Duration::from_millis(400));
    // SIGKILL: no destructor runs.
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("restart after SIGKILL");
        dp.sync(&desired).expect("sync");
        assert_eq!(t1.join().unwrap(), expected(), "published transfer");
        assert_eq!(t2.join().unwrap(), expected(), "masqueraded transfer");
        published.join().unwrap();
        outbound.join().unwrap();
        let s = tcp_server(&c1.ns, 8080, 1);
        let a = tcp_ask(&out, &format!("{HOST_UPLINK_IP}:8081"), "new").expect("new conn");
        assert_eq!(peer_ip(&a), OUTSIDE_IP);
        s.join().unwrap();
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
