//! The embedded resolver end to end inside a TestHost: "containers" are
//! namespaces with only `lo`; the resolver's runtime runs in the host
//! namespace; each container's server listens on 127.0.0.11:53 inside the
//! container; fake upstreams run in the outside namespace (198.18.0.x).
use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use pier_agent::dns::{
    self, DNS_IP, MemberInput, NameSnapshot, NetworkInput, Resolver, ResolverConfig, ServerHandle,
    testing::{FakeUpstream, Mode},
};
use pier_tests::{TestHost, host::sh, net::firewall_snapshot, require_root};

const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(500);

/// A TestHost with container namespaces and a resolver runtime in the host
/// namespace.
struct World {
    host: TestHost,
    rt: tokio::runtime::Runtime,
    resolver: Arc<Resolver>,
    servers: Vec<ServerHandle>,
}

impl World {
    fn new(containers: &[&str], upstreams: Vec<SocketAddr>) -> (World, Vec<String>) {
        let mut host = TestHost::new();
        let mut names = Vec::new();
        for c in containers {
            let ns = host.add_netns(c);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            names.push(ns);
        }
        // The runtime's threads are born in the host namespace: forwarding
        // sockets are opened there.
        let rt = TestHost::in_netns(&host.host_ns, || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
        });
        let resolver = Arc::new(Resolver::new(ResolverConfig {
            upstreams,
            upstream_timeout: UPSTREAM_TIMEOUT,
        }));
        (
            World {
                host,
                rt,
                resolver,
                servers: Vec::new(),
            },
            names,
        )
    }

    /// Start the server for container `id` in namespace `ns`.
    fn serve(&mut self, ns: &str, id: &str) {
        let h = self.start(ns, id).expect("spawn_in_netns");
        self.servers.push(h);
    }

    fn start(&self, ns: &str, id: &str) -> Result<ServerHandle, dns::DnsError> {
        let path = netns_path(ns);
        let _g = self.rt.enter();
        dns::spawn_in_netns(&path, self.resolver.clone(), id)
    }
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

fn m(id: &str, aliases: &[&str], ip: &str) -> MemberInput {
    MemberInput {
        container_id: id.into(),
        name: id.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ips: vec![ip.parse().unwrap()],
    }
}

fn net(name: &str, internal: bool, members: Vec<MemberInput>) -> NetworkInput {
    NetworkInput {
        name: name.into(),
        internal,
        names: true,
        members,
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

/// Ask 127.0.0.11:53 over UDP from inside `ns`.
fn udp_ask(ns: &str, name: &str, qtype: RecordType) -> Option<Message> {
    let q = query(name, qtype);
    let reply = TestHost::in_netns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind client");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&q, (DNS_IP, 53)).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })?;
    let msg = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(msg.metadata.id, u16::from_be_bytes([q[0], q[1]]));
    Some(msg)
}

/// Ask 127.0.0.11:53 over TCP from inside `ns`.
fn tcp_ask(ns: &str, name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    let reply = TestHost::in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&(DNS_IP, 53).into(), Duration::from_secs(3))
            .expect("connect 127.0.0.11:53/tcp");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    Message::from_vec(&reply).expect("reply parses")
}

fn ask(ns: &str, name: &str, qtype: RecordType) -> Message {
    udp_ask(ns, name, qtype).unwrap_or_else(|| panic!("no answer to {name} from {ns}"))
}

fn addrs(msg: &Message) -> Vec<IpAddr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// mynet: c1, c2 (alias web), c3 (alias web); othernet: c4.
fn scenario() -> NameSnapshot {
    NameSnapshot::new(&[
        net(
            "mynet",
            false,
            vec![
                m("c1", &[], "10.88.0.2"),
                m("c2", &["web"], "10.88.0.3"),
                m("c3", &["web"], "10.88.0.4"),
            ],
        ),
        net("othernet", false, vec![m("c4", &[], "10.99.0.2")]),
    ])
}

/// `/etc/netns/NS/resolv.conf`, which `ip netns exec` binds over
/// /etc/resolv.conf; removed on drop.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn resolv_conf(ns: &str, text: &str) -> Self {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        let g = NetnsEtc(dir);
        std::fs::write(g.0.join("resolv.conf"), text).unwrap();
        g
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Leave /etc/netns as we found it when we made it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

#[test]
fn dns_local_names_from_inside_containers_over_udp_and_tcp() {
    require_root!();
    let fw_before = firewall_snapshot(None);
    let (mut w, ns) = World::new(&["c1", "c2", "c4"], vec![]);
    let fw_host_before = firewall_snapshot(Some(&w.host.host_ns));
    w.resolver.publish(scenario());
    w.serve(&ns[0], "c1");
    w.serve(&ns[1], "c2");
    w.serve(&ns[2], "c4");
    let (c1, c2, c4) = (&ns[0], &ns[1], &ns[2]);

    // NAME and NAME.NETWORK, TTL 600.
    for name in ["c2", "c2.mynet", "C2.MYNET."] {
        let msg = ask(c1, name, RecordType::A);
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(addrs(&msg), [ip("10.88.0.3")], "{name}");
        assert_eq!(msg.answers[0].ttl, 600);
    }
    assert_eq!(addrs(&ask(c2, "c1", RecordType::A)), [ip("10.88.0.2")]);
    // A name on a network the asker is not on.
    assert_eq!(
        ask(c1, "c4", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(c4, "c1", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    // The shared alias: both addresses, rotating.
    let mut firsts = Vec::new();
    for _ in 0..4 {
        let got = addrs(&ask(c1, "web", RecordType::A));
        assert_eq!(
            got.iter().copied().collect::<HashSet<_>>(),
            [ip("10.88.0.3"), ip("10.88.0.4")].into_iter().collect()
        );
        assert_eq!(got.len(), 2);
        firsts.push(got[0]);
    }
    assert_ne!(firsts[0], firsts[1]);
    assert_eq!((firsts[0], firsts[1]), (firsts[2], firsts[3]));
    // AAAA for an IPv4-only container: NOERROR, empty.
    let msg = ask(c1, "c2", RecordType::AAAA);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    // PTR → NAME.NETWORK.
    let msg = ask(c1, "3.0.88.10.in-addr.arpa.", RecordType::PTR);
    match &msg.answers[..] {
        [r] => match &r.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "c2.mynet."),
            o => panic!("{o:?}"),
        },
        o => panic!("one PTR expected: {o:?}"),
    }
    // TCP.
    let msg = tcp_ask(c1, "c2.mynet", RecordType::A);
    assert_eq!(addrs(&msg), [ip("10.88.0.3")]);

    // The C library, through the resolv.conf pier writes.
    let text = dns::resolv_conf(&[DNS_IP.into()], &[], true);
    let _etc = NetnsEtc::resolv_conf(c1, &text);
    let out = sh(&["ip", "netns", "exec", c1, "getent", "hosts", "c2"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["10.88.0.3", "c2"]
    );
    let out = sh(&["ip", "netns", "exec", c1, "getent", "hosts", "10.88.0.4"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["10.88.0.4", "c3.mynet"]
    );

    assert_eq!(firewall_snapshot(Some(&w.host.host_ns)), fw_host_before);
    drop(w);
    assert_eq!(firewall_snapshot(None), fw_before, "the firewall changed");
}

#[test]
fn dns_changes_are_visible_at_once() {
    require_root!();
    let (mut w, ns) = World::new(&["c1"], vec![]);
    w.resolver.publish(scenario());
    w.serve(&ns[0], "c1");
    let c1 = &ns[0];
    assert_eq!(addrs(&ask(c1, "c2", RecordType::A)), [ip("10.88.0.3")]);
    assert_eq!(
        ask(c1, "c4", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    // rm c2; network connect --alias cache mynet c4.
    w.resolver.publish(NameSnapshot::new(&[
        net(
            "mynet",
            false,
            vec![
                m("c1", &[], "10.88.0.2"),
                m("c3", &["web"], "10.88.0.4"),
                m("c4", &["cache"], "10.88.0.3"),
            ],
        ),
        net("othernet", false, vec![m("c4", &[], "10.99.0.2")]),
    ]));
    // c2 is unknown now: forwarded, and with no upstream that is SERVFAIL.
    let msg = ask(c1, "c2", RecordType::A);
    assert!(msg.answers.is_empty());
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    // c2's old address now belongs to c4 (released and handed out again).
    assert_eq!(addrs(&ask(c1, "c4", RecordType::A)), [ip("10.88.0.3")]);
    assert_eq!(
        addrs(&ask(c1, "cache.mynet", RecordType::A)),
        [ip("10.88.0.3")]
    );
    assert_eq!(addrs(&ask(c1, "web", RecordType::A)), [ip("10.88.0.4")]);
    // disconnect c4 from mynet: back to NXDOMAIN.
    w.resolver.publish(NameSnapshot::new(&[
        net(
            "mynet",
            false,
            vec![m("c1", &[], "10.88.0.2"), m("c3", &["web"], "10.88.0.4")],
        ),
        net("othernet", false, vec![m("c4", &[], "10.99.0.2")]),
    ]));
    assert_eq!(
        ask(c1, "c4", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
}

/// Fake upstreams in the outside namespace: .2 answers, .3 truncates over
/// UDP, .4 never answers, .5 SERVFAILs.
fn upstreams(host: &TestHost) -> Vec<FakeUpstream> {
    for a in ["198.18.0.3", "198.18.0.4", "198.18.0.5"] {
        host.outside(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
    }
    TestHost::in_netns(&host.outside_ns, || {
        [
            ("198.18.0.2", Mode::Answer(Ipv4Addr::new(192, 0, 2, 10))),
            ("198.18.0.3", Mode::TruncateUdp(20)),
            ("198.18.0.4", Mode::Silent),
            ("198.18.0.5", Mode::ServFail),
        ]
        .into_iter()
        .map(|(a, mode)| {
            FakeUpstream::start(SocketAddr::new(a.parse().unwrap(), 53), mode)
                .expect("fake upstream")
        })
        .collect()
    })
}

fn sa(a: &str) -> SocketAddr {
    SocketAddr::new(a.parse().unwrap(), 53)
}

#[test]
fn dns_forwards_other_names_to_upstreams_in_the_outside_namespace() {
    require_root!();
    let (mut w, ns) = World::new(&["c1", "i1"], vec![sa("198.18.0.2")]);
    let ups = upstreams(&w.host);
    w.resolver.publish(
        NameSnapshot::new(&[
            net("mynet", false, vec![m("c1", &[], "10.88.0.2")]),
            net("sealed", true, vec![m("i1", &[], "10.77.0.2")]),
        ])
        .with_upstreams("i1", vec![sa("198.18.0.2")]),
    );
    w.serve(&ns[0], "c1");
    w.serve(&ns[1], "i1");
    let (c1, i1) = (&ns[0], &ns[1]);

    // Forwarded over UDP from the host namespace (the container has only lo).
    let msg = ask(c1, "www.example.com", RecordType::A);
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&msg), [ip("192.0.2.10")]);
    // Over TCP from the client: over TCP to the upstream.
    assert_eq!(
        addrs(&tcp_ask(c1, "tcp.example.com", RecordType::A)),
        [ip("192.0.2.10")]
    );
    let seen: Vec<_> = ups[0]
        .seen()
        .into_iter()
        .map(|s| (s.name, s.transport))
        .collect();
    assert_eq!(
        seen,
        [
            ("www.example.com.".to_string(), dns::Transport::Udp),
            ("tcp.example.com.".to_string(), dns::Transport::Tcp)
        ]
    );

    // Truncated over UDP: retried over TCP, the whole answer relayed.
    w.resolver.set_upstreams(vec![sa("198.18.0.3")]);
    let msg = ask(c1, "big.example.com", RecordType::A);
    assert_eq!(addrs(&msg).len(), 20);
    assert!(!msg.metadata.truncation);
    let t: Vec<_> = ups[1].seen().into_iter().map(|s| s.transport).collect();
    assert_eq!(t, [dns::Transport::Udp, dns::Transport::Tcp]);

    // An upstream that never answers: SERVFAIL after the timeout.
    w.resolver.set_upstreams(vec![sa("198.18.0.4")]);
    let t0 = Instant::now();
    let msg = ask(c1, "slow.example.com", RecordType::A);
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(t0.elapsed() >= UPSTREAM_TIMEOUT);
    assert_eq!(ups[2].seen().len(), 1);

    // In order: silent, SERVFAIL, then the good one.
    w.resolver
        .set_upstreams(vec![sa("198.18.0.4"), sa("198.18.0.5"), sa("198.18.0.2")]);
    assert_eq!(
        addrs(&ask(c1, "order.example.com", RecordType::A)),
        [ip("192.0.2.10")]
    );
    assert_eq!(ups[3].seen().len(), 1);
    // At most three: the fourth is never asked.
    w.resolver.set_upstreams(vec![
        sa("198.18.0.4"),
        sa("198.18.0.5"),
        sa("198.18.0.4"),
        sa("198.18.0.2"),
    ]);
    let before = ups[0].seen().len();
    assert_eq!(
        ask(c1, "four.example.com", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::ServFail
    );
    assert_eq!(ups[0].seen().len(), before);

    // Internal network: local names only, nothing leaves.
    let before = ups[0].seen().len();
    assert_eq!(addrs(&ask(i1, "i1", RecordType::A)), [ip("10.77.0.2")]);
    assert_eq!(
        ask(i1, "www.example.com", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::ServFail
    );
    assert_eq!(
        ups[0].seen().len(),
        before,
        "an internal container's query left"
    );
    drop(ups);
}

#[test]
fn dns_server_stops_with_its_handle_and_reports_bad_input() {
    require_root!();
    let (mut w, ns) = World::new(&["c1", "down"], vec![]);
    w.resolver.publish(scenario());
    w.serve(&ns[0], "c1");
    assert_eq!(addrs(&ask(&ns[0], "c2", RecordType::A)), [ip("10.88.0.3")]);
    // Stop: no more answers, and the address can be bound again.
    let h = w.servers.pop().unwrap();
    w.rt.block_on(h.stop());
    assert!(udp_ask(&ns[0], "c2", RecordType::A).is_none());
    w.serve(&ns[0], "c1");
    assert_eq!(addrs(&ask(&ns[0], "c2", RecordType::A)), [ip("10.88.0.3")]);
    // Dropping the handle stops it too.
    drop(w.servers.pop());
    std::thread::sleep(Duration::from_millis(100));
    assert!(udp_ask(&ns[0], "c2", RecordType::A).is_none());

    // Bad input: clear one-line errors, nothing left listening.
    let err = w.start("no-such-namespace", "c1").err().expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.starts_with("open network namespace /run/netns/no-such-namespace:"),
        "{msg}"
    );
    // A server started while the container's lo is still down binds anyway
    // and answers once lo is up; a second server on the same namespace is
    // refused with a clear error.
    w.serve(&ns[1], "c1");
    sh(&["ip", "-n", &ns[1], "link", "set", "lo", "up"]);
    assert_eq!(addrs(&ask(&ns[1], "c2", RecordType::A)), [ip("10.88.0.3")]);
    let err = w
        .start(&ns[1], "c1")
        .err()
        .expect("second server must fail");
    let msg = err.to_string();
    assert!(
        msg.starts_with("bind 127.0.0.11:53 in /run/netns/"),
        "{msg}"
    );
    assert!(msg.contains("in use"), "{msg}");
    assert!(!msg.contains('\n'));
    // The first one still answers.
    assert_eq!(addrs(&ask(&ns[1], "c3", RecordType::A)), [ip("10.88.0.4")]);
    // Outside a runtime.
    let r = Arc::new(Resolver::new(ResolverConfig::default()));
    let err = dns::spawn_in_netns(&netns_path(&ns[0]), r, "c1")
        .err()
        .unwrap();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn dns_service_starts_and_stops_servers_per_container() {
    require_root!();
    let (w, ns) = World::new(&["c1", "c2"], vec![]);
    let svc = dns::DnsService::new(ResolverConfig::default());
    svc.publish(scenario());
    {
        let _g = w.rt.enter();
        svc.start("c1", &netns_path(&ns[0])).unwrap();
        // Idempotent.
        svc.start("c1", &netns_path(&ns[0])).unwrap();
        svc.start("c2", &netns_path(&ns[1])).unwrap();
    }
    assert_eq!(svc.served(), ["c1", "c2"]);
    assert_eq!(addrs(&ask(&ns[0], "c2", RecordType::A)), [ip("10.88.0.3")]);
    assert_eq!(addrs(&ask(&ns[1], "c1", RecordType::A)), [ip("10.88.0.2")]);
    assert!(svc.stop("c2"));
    assert!(!svc.stop("c2"));
    assert_eq!(svc.served(), ["c1"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(udp_ask(&ns[1], "c1", RecordType::A).is_none());
    assert_eq!(addrs(&ask(&ns[0], "c3", RecordType::A)), [ip("10.88.0.4")]);
    // A bad namespace: an error, and nothing recorded.
    let _g = w.rt.enter();
    assert!(svc.start("c9", Path::new("/run/netns/no-such-ns")).is_err());
    assert_eq!(svc.served(), ["c1"]);
}
