//! Benchmark of the embedded resolver for local names, with 1, 100 and
//! 10 000 containers in the name table.
//!
//! - `handler`: the query handler alone (parse, look up, encode), one thread.
//! - `udp`: the server on 127.0.0.1 (a one-thread tokio runtime, i.e. one
//!   core) and a client thread: first one query at a time for latency
//!   (p50/p99), then 32 queries in flight for throughput.
//!
//! Traffic stays on loopback; every phase is bounded in time.
//! Run: `cargo run --release -p pier-agent --example dns_bench [-- SECONDS]`.
use std::{
    net::{IpAddr, Ipv4Addr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use pier_agent::dns::{MemberInput, NameSnapshot, NetworkInput, Resolver, ResolverConfig, serve};

const SIZES: [usize; 3] = [1, 100, 10_000];
const WINDOW: usize = 32;

fn snapshot(n: usize) -> NameSnapshot {
    let members = (0..n)
        .map(|i| MemberInput {
            container_id: format!("id{i}"),
            name: format!("c{i}"),
            aliases: vec![format!("alias{i}")],
            ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0002 + i as u32))],
        })
        .collect();
    NameSnapshot::new(&[NetworkInput {
        name: "bench".into(),
        internal: false,
        names: true,
        members,
    }])
}

/// Pre-encoded queries for names spread over the whole table.
fn queries(n: usize) -> Vec<Vec<u8>> {
    let count = n.clamp(1, 1000);
    (0..count)
        .map(|k| {
            let i = k * n / count;
            let name = if k % 2 == 0 {
                format!("c{i}.")
            } else {
                format!("alias{i}.bench.")
            };
            let mut m = Message::query();
            m.metadata.id = k as u16;
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        })
        .collect()
}

fn check(reply: &[u8]) {
    let m = Message::from_vec(reply).expect("reply parses");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "one address per name");
}

struct Row {
    n: usize,
    handler_qps: f64,
    udp_qps: f64,
    p50_us: f64,
    p99_us: f64,
    lat_samples: usize,
    build_ms: f64,
    publish_us: f64,
}

fn bench_handler(r: &Resolver, qs: &[Vec<u8>], dur: Duration) -> f64 {
    for q in qs {
        check(&futures::executor::block_on(r.handle("id0", q)).unwrap());
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    while t0.elapsed() < dur {
        for q in qs.iter().take(256) {
            let reply = futures::executor::block_on(r.handle("id0", q));
            std::hint::black_box(reply);
            done += 1;
        }
    }
    done as f64 / t0.elapsed().as_secs_f64()
}

fn bench_udp(r: Arc<Resolver>, qs: &[Vec<u8>], dur: Duration) -> (f64, f64, f64, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = sock.local_addr().unwrap();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    // The server: one tokio thread, i.e. one core.
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = {
            let _g = rt.enter();
            serve(sock, None, r, "id0").unwrap()
        };
        ready_tx.send(()).unwrap();
        rt.block_on(async {
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        drop(h);
    });
    ready_rx.recv().unwrap();

    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(server_addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    // Latency: one query at a time.
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut k = 0;
    while t0.elapsed() < dur / 2 && lat.len() < 200_000 {
        let q = &qs[k % qs.len()];
        k += 1;
        let s = Instant::now();
        c.send(q).unwrap();
        let Ok(n) = c.recv(&mut buf) else { continue };
        lat.push(s.elapsed());
        if lat.len() == 1 {
            check(&buf[..n]);
        }
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    let (p50, p99) = (pct(0.50), pct(0.99));
    // Throughput: WINDOW queries in flight.
    let t0 = Instant::now();
    let mut done = 0u64;
    for _ in 0..WINDOW {
        c.send(&qs[k % qs.len()]).unwrap();
        k += 1;
    }
    while t0.elapsed() < dur / 2 {
        match c.recv(&mut buf) {
            Ok(_) => {
                done += 1;
                c.send(&qs[k % qs.len()]).unwrap();
                k += 1;
            }
            // A lost datagram: refill the window.
            Err(_) => {
                for _ in 0..WINDOW {
                    c.send(&qs[k % qs.len()]).unwrap();
                    k += 1;
                }
            }
        }
    }
    let qps = done as f64 / t0.elapsed().as_secs_f64();
    stop_tx.send(()).unwrap();
    server.join().unwrap();
    (qps, p50, p99, lat.len())
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dur = Duration::from_secs_f64(secs.clamp(0.2, 30.0));
    let mut rows = Vec::new();
    for n in SIZES {
        let r = Arc::new(Resolver::new(ResolverConfig::default()));
        let t = Instant::now();
        let snap = snapshot(n);
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        r.publish(snap);
        let publish_us = t.elapsed().as_secs_f64() * 1e6;
        let qs = queries(n);
        let handler_qps = bench_handler(&r, &qs, dur / 2);
        let (udp_qps, p50_us, p99_us, lat_samples) = bench_udp(r, &qs, dur);
        rows.push(Row {
            n,
            handler_qps,
            udp_qps,
            p50_us,
            p99_us,
            lat_samples,
            build_ms,
            publish_us,
        });
    }
    println!(
        "pier embedded DNS, local A queries ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:>10} | {:>12} | {:>10} | {:>10} | {:>10} | {:>8} | {:>9} | {:>10}",
        "containers",
        "handler q/s",
        "udp q/s",
        "p50 µs",
        "p99 µs",
        "samples",
        "build ms",
        "publish µs"
    );
    println!("{}", "-".repeat(102));
    for r in &rows {
        println!(
            "{:>10} | {:>12.0} | {:>10.0} | {:>10.1} | {:>10.1} | {:>8} | {:>9.2} | {:>10.1}",
            r.n,
            r.handler_qps,
            r.udp_qps,
            r.p50_us,
            r.p99_us,
            r.lat_samples,
            r.build_ms,
            r.publish_us
        );
    }
}
