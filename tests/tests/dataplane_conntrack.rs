//! Connection tracking lives in LRU maps with lifetimes: closed TCP (FIN or
//! RST) and idle UDP entries are retired, open connections are kept, and a
//! run of many connections ends with a bounded table.
mod dataplane_util;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dataplane_util::*;
use pier_agent::dataplane::{CtTimeouts, Dataplane, EbpfDataplane};
use pier_common::maps::CT_LEN;
use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};

/// Connections the many-connections run opens and closes.
const CONNS: usize = 100_000;

#[test]
fn closed_and_idle_flows_are_retired_and_the_table_stays_bounded() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.103.0.0/24");
    let c1 = w.container("c1", &net, "10.103.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![
        tcp(8081, c1.ip, 8080),
        tcp(8082, c1.ip, 8090),
        udp(8083, c1.ip, 9090),
    ]);
    let cfg = w.config();
    let timeouts = CtTimeouts {
        tcp_closing: Duration::from_millis(500),
        udp: Duration::from_millis(500),
        icmp: Duration::from_millis(500),
        ..CtTimeouts::default()
    };
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg).with_ct_timeouts(timeouts);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");

        // A server that reads to EOF and closes; it runs until told to stop.
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = spawn_in(&c1.ns, move || {
            let l = TcpListener::bind("0.0.0.0:8080").unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let mut served = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut b = [0u8; 64];
                        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            served
        });
        rx.recv().unwrap();
        let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();

        // One connection stays open (and idle) through everything: its server
        // reads to EOF, answers "bye" and closes.
        let (ktx, krx) = std::sync::mpsc::channel();
        let keep_server = spawn_in(&c1.ns, move || {
            let l = TcpListener::bind("0.0.0.0:8090").unwrap();
            ktx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"bye").unwrap();
            got
        });
        krx.recv().unwrap();
        let keep_dst: SocketAddr = format!("{HOST_UPLINK_IP}:8082").parse().unwrap();
        let keep = {
            let out = out.clone();
            TestHost::in_netns(&out, move || TcpStream::connect(keep_dst).unwrap())
        };

        // Many connections, closed with RST (no TIME_WAIT to exhaust the
        // client's ports), and some closed gracefully with FIN.
        let started = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                spawn_in(&out, move || {
                    for i in 0..CONNS / 4 {
                        let mut s = TcpStream::connect(dst).expect("connect");
                        if (i + t) % 100 == 0 {
                            s.write_all(b"fin").unwrap();
                            s.shutdown(std::net::Shutdown::Write).unwrap();
                            let mut b = [0u8; 8];
                            let _ = s.read(&mut b);
                        } else {
                            let l = libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            };
                            nix::sys::socket::setsockopt(
                                &s.as_fd(),
                                nix::sys::socket::sockopt::Linger,
                                &l,
                            )
                            .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        eprintln!("{CONNS} connections in {:?}", started.elapsed());
        // UDP flows from three source ports.
        let u = udp_server(&c1.ns, 9090, 3);
        for port in [40001, 40002, 40003] {
            let bind = format!("0.0.0.0:{port}");
            udp_ask(&out, Some(&bind), &format!("{HOST_UPLINK_IP}:8083"), "u").expect("udp");
        }
        assert!(
            u.join()
                .unwrap()
                .iter()
                .all(|p| p.ip().to_string() == OUTSIDE_IP)
        );

        let before = dp.ct_counts().unwrap();
        assert!(before.ct <= CT_LEN as usize, "{before:?}");
        assert!(before.ct >= 4, "{before:?}");
        std::thread::sleep(Duration::from_millis(1200));
        let after = dp.gc_conntrack().unwrap();
        // Every closed connection and idle UDP flow is gone. At most the open,
        // idle TCP connection is left (the LRU may have evicted it).
        assert!(after.ct <= 1, "before {before:?}, after {after:?}");
        // The open connection still works end to end: its next packet
        // re-creates its entry and the server's answer is translated back.
        let mut keep = keep;
        keep.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        keep.write_all(b"still here").unwrap();
        keep.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        keep.read_to_end(&mut rest).expect("the server answers");
        assert_eq!(rest, b"bye");
        assert_eq!(keep_server.join().unwrap(), b"still here");

        stop.store(true, Ordering::Relaxed);
        let served = server.join().unwrap();
        assert!(served >= CONNS / 2, "served {served}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn masquerade_entries_are_retired_when_idle() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.104.0.0/24");
    let c1 = w.container("c1", &net, "10.104.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![]);
    let cfg = w.config();
    let timeouts = CtTimeouts {
        tcp_closing: Duration::from_millis(300),
        udp: Duration::from_millis(300),
        icmp: Duration::from_millis(300),
        ..CtTimeouts::default()
    };
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg).with_ct_timeouts(timeouts);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let s = tcp_server(&out, 7000, 1);
        tcp_ask(&c1.ns, &format!("{OUTSIDE_IP}:7000"), "t").expect("tcp");
        s.join().unwrap();
        let u = udp_server(&out, 7001, 1);
        udp_ask(&c1.ns, None, &format!("{OUTSIDE_IP}:7001"), "u").expect("udp");
        u.join().unwrap();
        assert!(ping(&c1.ns, OUTSIDE_IP));
        let c = dp.ct_counts().unwrap();
        assert_eq!((c.snat_fwd, c.snat_rev), (3, 3), "{c:?}");
        std::thread::sleep(Duration::from_millis(700));
        let c = dp.gc_conntrack().unwrap();
        assert_eq!((c.snat_fwd, c.snat_rev), (0, 0), "{c:?}");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

#[test]
fn a_reply_whose_entry_is_gone_still_leaves_as_the_published_port() {
    require_root!();
    let mut w = World::new(false);
    let net = w.network(1, "10.109.0.0/24");
    let c1 = w.container("c1", &net, "10.109.0.2");
    let out = w.host.outside_ns.clone();
    let desired = w.desired(vec![tcp(8081, c1.ip, 8080)]);
    let cfg = w.config();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // The server speaks first, when told to.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = spawn_in(&c1.ns, move || {
            let l = TcpListener::bind("0.0.0.0:8080").unwrap();
            ready_tx.send(()).unwrap();
            let (mut s, peer) = l.accept().unwrap();
            go_rx.recv().unwrap();
            s.write_all(b"pushed").unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            (peer, rest)
        });
        ready_rx.recv().unwrap();
        let dst: SocketAddr = format!("{HOST_UPLINK_IP}:8081").parse().unwrap();
        let mut client = TestHost::in_netns(&out, move || TcpStream::connect(dst).unwrap());
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(dp.flush_conntrack().unwrap(), 1, "one tracked connection");
        go_tx.send(()).unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).expect("the push arrives");
        assert_eq!(&got, b"pushed");
        assert_eq!(client.peer_addr().unwrap(), dst);
        client.write_all(b"ack").unwrap();
        drop(client);
        let (peer, rest) = server.join().unwrap();
        assert_eq!(peer.ip().to_string(), OUTSIDE_IP);
        assert_eq!(rest, b"ack");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}

/// The programs stamp expiries with their clock (`ct::now`: jiffies times
/// the tick when the kernel's HZ is known) and the agent's gc reads the
/// very same clock (`pier_clock`): a new flow's expiry is its lifetime
/// after the clock as read around its first packet, the clock keeps
/// CLOCK_MONOTONIC's pace, and gc keeps the flow until that expiry and
/// retires it after.
#[test]
fn the_gc_reads_the_clock_the_programs_stamp_expiries_with() {
    require_root!();
    use dataplane_util::progrun::frame;
    let mut w = World::new(false);
    let net = w.network(1, "10.114.0.0/24");
    let c1 = w.container("c1", &net, "10.114.0.2");
    let desired = w.desired(vec![]);
    let cfg = w.config();
    let udp_life = Duration::from_millis(600);
    let timeouts = CtTimeouts {
        udp: udp_life,
        ..CtTimeouts::default()
    };
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg).with_ct_timeouts(timeouts);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        // The clock keeps CLOCK_MONOTONIC's pace, to a tick or two (it
        // reads 1 ms to 10 ms steps).
        let (k0, m0) = (
            dp.kernel_now().unwrap(),
            pier_agent::dataplane::sys::monotonic_ns(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let (k1, m1) = (
            dp.kernel_now().unwrap(),
            pier_agent::dataplane::sys::monotonic_ns(),
        );
        let (dk, dm) = (k1 as i64 - k0 as i64, m1 as i64 - m0 as i64);
        assert!(
            (dk - dm).abs() <= 21_000_000,
            "clock {dk} ns, monotonic {dm} ns"
        );
        // A masqueraded UDP flow's first packet.
        let vc1 = nix::net::if_::if_nametoindex("vc1").unwrap();
        let mut f = frame(17, [10, 114, 0, 2], [198, 18, 0, 2], 40000, 7000, 0);
        f[6..12].copy_from_slice(&c1.mac);
        let before = dp.kernel_now().unwrap();
        let (v, _) = dp
            .test_run(pier_agent::dataplane::programs::VETH_IN, &f, vc1)
            .unwrap();
        let after = dp.kernel_now().unwrap();
        assert_eq!(v, 7, "redirected (masqueraded)");
        let (fwd, rev) = dp.snat_entries().unwrap();
        assert_eq!((fwd.len(), rev.len()), (1, 1));
        let life = udp_life.as_nanos() as u64;
        let exp = fwd[0].1.expires_ns;
        assert!(
            before + life <= exp && exp <= after + life,
            "expiry {exp}, clock {before}..{after} + {life}"
        );
        // Kept by a gc before its expiry, retired by one after.
        dp.gc_conntrack().unwrap();
        assert_eq!(dp.snat_entries().unwrap().0.len(), 1, "kept while live");
        while dp.kernel_now().unwrap() <= exp {
            std::thread::sleep(Duration::from_millis(20));
        }
        let c = dp.gc_conntrack().unwrap();
        assert_eq!((c.snat_fwd, c.snat_rev), (0, 0), "retired once expired");
        dp.remove_all().unwrap();
    });
    w.assert_firewalls_untouched();
}
