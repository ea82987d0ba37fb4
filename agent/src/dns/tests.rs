//! Wire-level tests of the resolver: queries in, replies parsed back. The
//! fake upstreams listen on loopback only.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use proptest::prelude::*;

use super::{
    testing::{FakeUpstream, Mode},
    *,
};

fn m(id: &str, name: &str, aliases: &[&str], ip: &str) -> MemberInput {
    MemberInput {
        container_id: id.into(),
        name: name.into(),
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

/// u1, u2, u3 (alias `web` on u2 and u3) on mynet; x1 on other; i1 and i2
/// on the internal network `sealed`.
fn world() -> NameSnapshot {
    NameSnapshot::new(&[
        net(
            "mynet",
            false,
            vec![
                m("u1", "u1", &[], "172.18.0.2"),
                m("u2", "u2", &["web"], "172.18.0.3"),
                m("u3", "u3", &["web", "db"], "172.18.0.4"),
            ],
        ),
        net("other", false, vec![m("x1", "x1", &[], "172.19.0.2")]),
        net(
            "sealed",
            true,
            vec![
                m("i1", "i1", &[], "172.20.0.2"),
                m("i2", "i2", &[], "172.20.0.3"),
            ],
        ),
    ])
}

fn resolver(upstreams: Vec<SocketAddr>) -> Resolver {
    let r = Resolver::new(ResolverConfig {
        upstreams,
        upstream_timeout: Duration::from_millis(300),
    });
    r.publish(world());
    r
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("reply parses")
}

fn a_addrs(msg: &Message) -> Vec<IpAddr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

async fn ask(r: &Resolver, asker: &str, name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    let reply = r.handle(asker, &q).await.expect("a reply");
    let msg = parse(&reply);
    assert_eq!(
        msg.metadata.id,
        u16::from_be_bytes([q[0], q[1]]),
        "ID echoed"
    );
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    msg
}

#[tokio::test]
async fn local_names_answer_a_with_ttl_600_authoritatively() {
    let r = resolver(vec![]);
    for name in ["u2", "u2.", "U2.mynet.", "u2.mynet"] {
        let msg = ask(&r, "u1", name, RecordType::A).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(msg.metadata.authoritative);
        assert!(msg.metadata.recursion_available);
        assert_eq!(
            a_addrs(&msg),
            ["172.18.0.3".parse::<IpAddr>().unwrap()],
            "{name}"
        );
        assert_eq!(msg.answers[0].ttl, 600);
        // The owner name is the question's, case and all.
        assert_eq!(
            msg.answers[0].name.to_ascii().trim_end_matches('.'),
            name.trim_end_matches('.')
        );
        assert_eq!(msg.queries.len(), 1, "question echoed");
    }
    let msg = ask(&r, "u1", "db", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["172.18.0.4".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn names_on_other_networks_are_nxdomain_and_not_forwarded() {
    let up = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 7)),
    )
    .unwrap();
    let r = resolver(vec![up.addr]);
    for (asker, name) in [
        ("u1", "x1"),
        ("u1", "x1.other"),
        ("x1", "u2"),
        ("x1", "web"),
        ("u1", "i1"),
    ] {
        let msg = ask(&r, asker, name, RecordType::A).await;
        assert_eq!(
            msg.metadata.response_code,
            ResponseCode::NXDomain,
            "{asker} asks {name}"
        );
        assert!(msg.answers.is_empty());
    }
    assert!(
        up.seen().is_empty(),
        "nothing reached the upstream: {:?}",
        up.seen()
    );
}

#[tokio::test]
async fn aaaa_for_ipv4_only_is_noerror_empty() {
    let r = resolver(vec![]);
    let msg = ask(&r, "u1", "u2", RecordType::AAAA).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    // Other types of a local name: NOERROR, no data.
    let msg = ask(&r, "u1", "u2", RecordType::MX).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
}

#[tokio::test]
async fn shared_alias_gives_all_addresses_round_robin() {
    let r = resolver(vec![]);
    let want: HashSet<IpAddr> = ["172.18.0.3", "172.18.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut firsts = Vec::new();
    for _ in 0..4 {
        let msg = ask(&r, "u1", "web", RecordType::A).await;
        let got = a_addrs(&msg);
        assert_eq!(got.len(), 2);
        assert_eq!(got.iter().copied().collect::<HashSet<_>>(), want);
        firsts.push(got[0]);
    }
    assert_ne!(firsts[0], firsts[1]);
    assert_eq!(firsts[0], firsts[2]);
    assert_eq!(firsts[1], firsts[3]);
}

#[tokio::test]
async fn ptr_of_container_address_gives_name_dot_network() {
    let r = resolver(vec![]);
    let msg = ask(&r, "u1", "3.0.18.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(msg.answers.len(), 1);
    match &msg.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "u2.mynet."),
        other => panic!("not a PTR: {other:?}"),
    }
    assert_eq!(msg.answers[0].ttl, 600);
    // An address on a network u1 is not on.
    let msg = ask(&r, "u1", "2.0.19.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        arpa_addr("3.0.18.172.in-addr.arpa"),
        Some("172.18.0.3".parse().unwrap())
    );
}

#[tokio::test]
async fn snapshot_changes_are_visible_at_once() {
    let r = resolver(vec![]);
    assert_eq!(
        ask(&r, "u1", "u2", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    // u2 removed; x1 connected to mynet with an alias.
    r.publish(NameSnapshot::new(&[
        net(
            "mynet",
            false,
            vec![
                m("u1", "u1", &[], "172.18.0.2"),
                m("x1", "x1", &["cache"], "172.18.0.3"),
            ],
        ),
        net("other", false, vec![m("x1", "x1", &[], "172.19.0.2")]),
    ]));
    // u2 is no longer a local name, so it is forwarded: with no upstream,
    // SERVFAIL.
    let msg = ask(&r, "u1", "u2", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(msg.answers.is_empty(), "u2 is gone");
    let msg = ask(&r, "u1", "cache", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["172.18.0.3".parse::<IpAddr>().unwrap()]);
    let msg = ask(&r, "u1", "x1", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["172.18.0.3".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn other_names_are_forwarded_and_the_answer_relayed() {
    let up = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 7)),
    )
    .unwrap();
    let r = resolver(vec![up.addr]);
    let msg = ask(&r, "u1", "www.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_addrs(&msg), ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(msg.answers[0].ttl, 60, "upstream's TTL relayed");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "www.example.com.");
    assert_eq!(seen[0].transport, Transport::Udp);
    // Over TCP from the client: forwarded over TCP.
    let q = query("tcp.example.com.", RecordType::A);
    let reply = parse(&r.handle_tcp("u1", &q).await.unwrap());
    assert_eq!(a_addrs(&reply), ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(up.seen()[1].transport, Transport::Tcp);
}

#[tokio::test]
async fn truncated_upstream_answer_is_retried_over_tcp() {
    let up = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), Mode::TruncateUdp(20)).unwrap();
    let r = resolver(vec![up.addr]);
    let msg = ask(&r, "u1", "big.example.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(!msg.metadata.truncation);
    assert_eq!(a_addrs(&msg).len(), 20);
    let t: Vec<_> = up.seen().iter().map(|s| s.transport).collect();
    assert_eq!(t, [Transport::Udp, Transport::Tcp]);
}

#[tokio::test]
async fn answers_too_big_for_udp_come_back_truncated_and_whole_over_tcp() {
    // 40 A records do not fit in 512 bytes.
    let up = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), Mode::TruncateUdp(40)).unwrap();
    let r = resolver(vec![up.addr]);
    let msg = ask(&r, "u1", "huge.example.", RecordType::A).await;
    assert!(msg.metadata.truncation, "TC set for the UDP client");
    assert!(msg.answers.is_empty());
    let q = query("huge.example.", RecordType::A);
    let whole = parse(&r.handle_tcp("u1", &q).await.unwrap());
    assert!(!whole.metadata.truncation);
    assert_eq!(a_addrs(&whole).len(), 40);
    // With EDNS the client takes up to 1232 bytes: no truncation.
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_ascii("huge.example.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(4096);
    msg.set_edns(e);
    let reply = parse(&r.handle("u1", &msg.to_vec().unwrap()).await.unwrap());
    assert!(!reply.metadata.truncation);
    assert_eq!(a_addrs(&reply).len(), 40);
    // Local answers to an EDNS query carry our OPT.
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_ascii("u2.").unwrap(),
        RecordType::A,
    ));
    msg.set_edns(Edns::new());
    let reply = parse(&r.handle("u1", &msg.to_vec().unwrap()).await.unwrap());
    assert_eq!(
        reply.edns.as_ref().map(|e| e.max_payload()),
        Some(MAX_UDP_PAYLOAD)
    );
}

#[tokio::test]
async fn dual_stack_members_answer_aaaa_and_ip6_ptr() {
    let r = Resolver::new(ResolverConfig::default());
    r.publish(NameSnapshot::new(&[net(
        "v6net",
        false,
        vec![
            MemberInput {
                container_id: "a".into(),
                name: "a".into(),
                aliases: vec![],
                ips: vec!["10.6.0.2".parse().unwrap(), "fd00:6::2".parse().unwrap()],
            },
            m("b", "b", &[], "10.6.0.3"),
        ],
    )]));
    let msg = ask(&r, "b", "a", RecordType::AAAA).await;
    assert_eq!(a_addrs(&msg), ["fd00:6::2".parse::<IpAddr>().unwrap()]);
    let msg = ask(&r, "b", "a", RecordType::ANY).await;
    assert_eq!(
        a_addrs(&msg),
        [
            "10.6.0.2".parse::<IpAddr>().unwrap(),
            "fd00:6::2".parse().unwrap()
        ]
    );
    let arpa = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.0.0.0.0.0.d.f.ip6.arpa.";
    let msg = ask(&r, "b", arpa, RecordType::PTR).await;
    match &msg.answers[..] {
        [rec] => match &rec.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "a.v6net."),
            o => panic!("{o:?}"),
        },
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn many_local_addresses_are_truncated_over_udp_and_whole_over_tcp() {
    let members: Vec<_> = (0..60)
        .map(|i| {
            m(
                &format!("w{i}"),
                &format!("w{i}"),
                &["pool"],
                &format!("10.5.0.{}", i + 2),
            )
        })
        .collect();
    let r = Resolver::new(ResolverConfig::default());
    r.publish(NameSnapshot::new(&[net("n", false, members)]));
    let msg = ask(&r, "w0", "pool", RecordType::A).await;
    assert!(msg.metadata.truncation);
    assert!(msg.answers.is_empty());
    assert_eq!(msg.queries.len(), 1);
    let q = query("pool", RecordType::A);
    let whole = parse(&r.handle_tcp("w0", &q).await.unwrap());
    assert!(!whole.metadata.truncation);
    assert_eq!(a_addrs(&whole).iter().collect::<HashSet<_>>().len(), 60);
}

#[tokio::test]
async fn upstream_timeout_is_servfail_and_next_upstream_is_tried() {
    let silent = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), Mode::Silent).unwrap();
    let failing = FakeUpstream::start("127.0.0.1:0".parse().unwrap(), Mode::ServFail).unwrap();
    let good = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 9)),
    )
    .unwrap();
    // Silent only: SERVFAIL after the timeout.
    let r = resolver(vec![silent.addr]);
    let t0 = Instant::now();
    let msg = ask(&r, "u1", "slow.example.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(silent.seen().len(), 1);
    // Silent, then SERVFAIL, then a good one: the good one answers.
    r.set_upstreams(vec![silent.addr, failing.addr, good.addr]);
    let msg = ask(&r, "u1", "order.example.", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["192.0.2.9".parse::<IpAddr>().unwrap()]);
    assert_eq!(failing.seen().len(), 1);
    // A fourth upstream is never tried.
    r.set_upstreams(vec![silent.addr, failing.addr, silent.addr, good.addr]);
    let before = good.seen().len();
    let msg = ask(&r, "u1", "four.example.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(good.seen().len(), before, "the fourth upstream was asked");
}

#[tokio::test]
async fn container_upstreams_override_the_defaults() {
    let default = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 1)),
    )
    .unwrap();
    let own = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 2)),
    )
    .unwrap();
    let r = resolver(vec![default.addr]);
    r.publish(world().with_upstreams("u2", vec![own.addr]));
    let msg = ask(&r, "u2", "a.example.", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    let msg = ask(&r, "u1", "a.example.", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!((default.seen().len(), own.seen().len()), (1, 1));
}

#[tokio::test]
async fn internal_networks_get_local_names_only() {
    let up = FakeUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Mode::Answer(Ipv4Addr::new(192, 0, 2, 7)),
    )
    .unwrap();
    let r = resolver(vec![up.addr]);
    let msg = ask(&r, "i1", "i2", RecordType::A).await;
    assert_eq!(a_addrs(&msg), ["172.20.0.3".parse::<IpAddr>().unwrap()]);
    let msg = ask(&r, "i1", "www.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(
        up.seen().is_empty(),
        "an internal container's query left the host"
    );
    // An unknown asker is refused, not forwarded.
    let msg = ask(&r, "stranger", "www.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    assert!(up.seen().is_empty());
    // No upstream at all: SERVFAIL.
    let r = resolver(vec![]);
    let msg = ask(&r, "u1", "www.example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn malformed_input_gets_an_error_or_is_dropped() {
    let r = resolver(vec![]);
    // Too short for a header, and responses: dropped.
    assert_eq!(r.handle("u1", &[]).await, None);
    assert_eq!(r.handle("u1", &[1, 2, 3]).await, None);
    let mut resp = query("u2", RecordType::A);
    resp[2] |= 0x80;
    assert_eq!(r.handle("u1", &resp).await, None);
    // A header claiming a question that is not there: FORMERR, same ID.
    let bad = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let msg = parse(&r.handle("u1", &bad).await.unwrap());
    assert_eq!(msg.metadata.id, 0xabcd);
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    assert!(msg.metadata.recursion_desired);
    // A name cut in the middle.
    let mut cut = query("u2.mynet.", RecordType::A);
    cut.truncate(cut.len() - 6);
    let msg = parse(&r.handle("u1", &cut).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR.
    let mut two = Message::query();
    two.add_query(Query::query(
        Name::from_ascii("u2.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("u3.").unwrap(),
        RecordType::A,
    ));
    let msg = parse(&r.handle("u1", &two.to_vec().unwrap()).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    // No question: FORMERR.
    let none = Message::query().to_vec().unwrap();
    let msg = parse(&r.handle("u1", &none).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    // Not a standard query: NOTIMP.
    let mut upd = Message::new(7, MessageType::Query, OpCode::Update);
    upd.add_query(Query::query(
        Name::from_ascii("u2.").unwrap(),
        RecordType::SOA,
    ));
    let msg = parse(&r.handle("u1", &upd.to_vec().unwrap()).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::NotImp);
    // Oversized: trailing garbage after a valid query is tolerated or refused,
    // never a crash; a 64 KiB blob of zeros is a header with no question.
    let mut big = query("u2.", RecordType::A);
    big.extend(std::iter::repeat_n(0xffu8, 60_000));
    let _ = r.handle("u1", &big).await;
    let zeros = vec![0u8; 65_535];
    let msg = parse(&r.handle("u1", &zeros).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    // Unknown type and class on a local name: NOERROR without answers;
    // CHAOS class is not local (and no upstream here): SERVFAIL.
    let msg = ask(&r, "u1", "u2.", RecordType::Unknown(65_000)).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    let mut ch = Message::query();
    let mut q = Query::query(Name::from_ascii("u2.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    ch.add_query(q);
    let msg = parse(&r.handle("u1", &ch.to_vec().unwrap()).await.unwrap());
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn server_answers_over_udp_and_tcp_on_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = Arc::new(resolver(vec![]));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let h = serve(udp, Some(tcp), r, "u1").unwrap();
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query("u3.mynet.", RecordType::A);
    c.send_to(&q, h.udp_addr()).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a_addrs(&parse(&buf[..n])),
        ["172.18.0.4".parse::<IpAddr>().unwrap()]
    );
    let mut s = tokio::net::TcpStream::connect(h.tcp_addr().unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let n = s.read_u16().await.unwrap();
        let mut b = vec![0u8; n as usize];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(
            a_addrs(&parse(&b)),
            ["172.18.0.4".parse::<IpAddr>().unwrap()]
        );
    }
    let addr = h.udp_addr();
    h.stop().await;
    // Stopped: the port is free again.
    std::net::UdpSocket::bind(addr).expect("socket closed after stop");
}

fn valid_queries() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "u2.",
        "web.",
        "u2.mynet.",
        "x1.",
        "3.0.18.172.in-addr.arpa.",
        "nosuch.",
        "WEB.MyNet.",
    ]);
    let types = prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::PTR,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::Unknown(9999),
    ]);
    (names, types).prop_map(|(n, t)| query(n, t))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Random bytes: never a panic; any reply is a well-formed response with
    /// the query's ID.
    #[test]
    fn fuzz_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let r = resolver(vec![]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Some(reply) = rt.block_on(r.handle("u1", &bytes)) {
            let msg = Message::from_vec(&reply).expect("our reply parses");
            prop_assert_eq!(msg.metadata.message_type, MessageType::Response);
            prop_assert_eq!(&reply[0..2], &bytes[0..2]);
        }
    }

    /// Valid queries with bytes flipped, cut or appended.
    #[test]
    fn fuzz_mutated_queries(
        q in valid_queries(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut q = q;
        for (i, b) in flips {
            let i = i.index(q.len());
            q[i] ^= b;
        }
        q.truncate(cut.index(q.len() + 1).max(1));
        q.extend(tail);
        let r = resolver(vec![]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for reply in [rt.block_on(r.handle("u1", &q)), rt.block_on(r.handle_tcp("u1", &q))].into_iter().flatten() {
            let msg = Message::from_vec(&reply).expect("our reply parses");
            prop_assert_eq!(msg.metadata.message_type, MessageType::Response);
            prop_assert!(reply.len() <= 65_535);
        }
    }
}
