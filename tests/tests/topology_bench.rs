//! Benchmark (not a test of speed): how long the kernel side of creating and
//! removing a container takes through `NetlinkTopology` — namespace, veth pair
//! on a bridge, address, MAC, default route; then removal. Prints the median,
//! p90 and max per container over 100 containers.
//!
//! Run: `cargo test -p pier-tests --test topology_bench -- --ignored --nocapture`
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use pier_agent::topology::{BridgeSpec, EndpointSpec, NetlinkTopology, Topology};
use pier_tests::{TestHost, require_root};

const N: usize = 100;

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<22} median {:>7.3} ms   p90 {:>7.3} ms   max {:>7.3} ms   (n={})",
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_container_create_and_remove() {
    require_root!();
    let host = TestHost::new();
    let (create, remove) = TestHost::in_netns(&host.host_ns, || {
        let topo = NetlinkTopology::new().unwrap();
        topo.ensure_bridge(&BridgeSpec {
            name: "pier0".into(),
            gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
            subnet: Some("172.17.0.0/16".parse().unwrap()),
            gateway6: None,
            mtu: None,
        })
        .unwrap();
        let eps: Vec<EndpointSpec> = (0..N)
            .map(|i| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 17, 0, 2)) + i as u32);
                let o = ip.octets();
                EndpointSpec {
                    netns: host.dir.join(format!("run/netns/c{i}")),
                    host_ifname: format!("veth{i:07x}"),
                    ifname: "eth0".into(),
                    bridge: "pier0".into(),
                    address: Some(format!("{ip}/16").parse().unwrap()),
                    address6: None,
                    mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
                    default_gateway: Some(Ipv4Addr::new(172, 17, 0, 1)),
                    default_gateway6: None,
                    metric: None,
                    mtu: None,
                    engine_peer: None,
                }
            })
            .collect();
        let mut create = Vec::new();
        let (mut ns_t, mut ep_t) = (Vec::new(), Vec::new());
        for ep in &eps {
            let t = Instant::now();
            topo.create_netns(&ep.netns).unwrap();
            let t1 = Instant::now();
            topo.add_endpoint(ep).unwrap();
            create.push(t.elapsed());
            ns_t.push(t1 - t);
            ep_t.push(t1.elapsed());
        }
        stats("  create_netns", ns_t);
        stats("  add_endpoint", ep_t);
        assert_eq!(topo.host_links().unwrap().len(), N + 3);
        let mut remove = Vec::new();
        let (mut ns_t, mut ep_t) = (Vec::new(), Vec::new());
        for ep in &eps {
            let t = Instant::now();
            topo.remove_endpoint(ep).unwrap();
            let t1 = Instant::now();
            topo.remove_netns(&ep.netns).unwrap();
            remove.push(t.elapsed());
            ep_t.push(t1 - t);
            ns_t.push(t1.elapsed());
        }
        stats("  remove_endpoint", ep_t);
        stats("  remove_netns", ns_t);
        assert_eq!(topo.host_links().unwrap().len(), 3);
        (create, remove)
    });
    let total: Vec<Duration> = create.iter().zip(&remove).map(|(a, b)| *a + *b).collect();
    println!("\nNetlinkTopology, {N} containers (netns + veth on bridge + address + route):");
    stats("create", create);
    stats("remove", remove);
    stats("create + remove", total);
}
