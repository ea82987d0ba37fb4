//! Name resolution through the real agent in a TestHost: `pier run`,
//! `network connect/disconnect`, `rm`, `--dns`, `--dns-upstream`, an
//! `--internal` network and an agent restart, observed from inside the
//! containers (queries to 127.0.0.11:53 sent from the container's namespace,
//! and `pier exec C -- getent hosts NAME`, which goes through the
//! container's own resolv.conf and /etc/hosts).
//!
//! Upstreams are fake resolvers in the outside namespace (198.18.0.2 and
//! .3); the agent always gets `--dns-upstream`, so no real resolver is ever
//! asked.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use pier_agent::dns::{
    DNS_IP,
    testing::{FakeUpstream, Mode},
};
use pier_tests::{TestHost, require_root};
use serde_json::Value;

/// What the agent's default upstream (198.18.0.2) answers for any name.
const UP_DEFAULT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// What the per-container upstream (198.18.0.3) answers for any name.
const UP_OWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

/// Fake upstreams: 198.18.0.2 answers UP_DEFAULT, 198.18.0.3 UP_OWN.
fn fake_upstreams(host: &TestHost) -> (FakeUpstream, FakeUpstream) {
    host.outside(&["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"]);
    TestHost::in_netns(&host.outside_ns, || {
        let start = |a: &str, ip| {
            FakeUpstream::start(SocketAddr::new(a.parse().unwrap(), 53), Mode::Answer(ip))
                .expect("fake upstream")
        };
        (start("198.18.0.2", UP_DEFAULT), start("198.18.0.3", UP_OWN))
    })
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn inspect(host: &TestHost, name: &str) -> Value {
    json(&host.pier_ok(&["inspect", name]))[0].clone()
}

/// The container's address on `net`.
fn ip_on(host: &TestHost, name: &str, net: &str) -> IpAddr {
    let v = inspect(host, name);
    v["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {net}: {v}"))
        .parse()
        .unwrap()
}

/// Send one UDP query to 127.0.0.11:53 from inside container `name`'s
/// namespace; `None` if nothing answers.
fn try_ask(host: &TestHost, name: &str, qname: &str, qtype: RecordType) -> Option<Message> {
    ask_in(
        &host.container_netns(&host.container_id(name)),
        qname,
        qtype,
    )
}

/// [`try_ask`] from the namespace at `ns` (works while no agent runs).
fn ask_in(ns: &Path, qname: &str, qtype: RecordType) -> Option<Message> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    let q = msg.to_vec().unwrap();
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(ns).expect("open container netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(&q, (DNS_IP, 53)).ok()?;
            let mut buf = [0u8; 4096];
            let n = s.recv(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        })
        .join()
        .expect("query thread")
    })?;
    let m = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(m.metadata.id, msg.metadata.id);
    Some(m)
}

/// One query over TCP to 127.0.0.11:53 from inside container `name`.
fn ask_tcp(host: &TestHost, name: &str, qname: &str) -> Message {
    use std::io::{Read, Write};
    let ns = host.container_netns(&host.container_id(name));
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_ascii(qname).unwrap(),
        RecordType::A,
    ));
    let q = msg.to_vec().unwrap();
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&ns).expect("open container netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut s =
                std::net::TcpStream::connect_timeout(&(DNS_IP, 53).into(), Duration::from_secs(3))
                    .expect("connect 127.0.0.11:53/tcp");
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut out = (q.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&q);
            s.write_all(&out).unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).unwrap();
            buf
        })
        .join()
        .expect("query thread")
    });
    Message::from_vec(&reply).expect("reply parses")
}

fn ask(host: &TestHost, name: &str, qname: &str, qtype: RecordType) -> Message {
    try_ask(host, name, qname, qtype)
        .unwrap_or_else(|| panic!("no answer to {qname} from inside {name}"))
}

/// Sorted A answers to `qname` asked from `name`, asserting NOERROR.
fn a(host: &TestHost, name: &str, qname: &str) -> Vec<IpAddr> {
    let mut v = a_in_order(host, name, qname);
    v.sort();
    v
}

/// A answers in the order the resolver sent them, asserting NOERROR.
fn a_in_order(host: &TestHost, name: &str, qname: &str) -> Vec<IpAddr> {
    let m = ask(host, name, qname, RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{qname} from {name}: {m:?}"
    );
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn rcode(host: &TestHost, name: &str, qname: &str) -> ResponseCode {
    ask(host, name, qname, RecordType::A).metadata.response_code
}

/// `pier exec NAME -- getent hosts KEY`: (exit code, stdout).
fn getent(host: &TestHost, name: &str, key: &str) -> (i32, String) {
    let out = host.pier(&["exec", name, "--", "getent", "hosts", key]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The address `getent hosts KEY` prints inside `name` (it must succeed).
fn getent_ip(host: &TestHost, name: &str, key: &str) -> IpAddr {
    let (code, out) = getent(host, name, key);
    assert_eq!(code, 0, "getent hosts {key} in {name}: {out}");
    let mut w = out.split_whitespace();
    let ip = w.next().unwrap().parse().unwrap();
    let names: Vec<&str> = w.collect();
    assert!(names.contains(&key), "getent hosts {key} in {name}: {out}");
    ip
}

fn resolv_conf(host: &TestHost, name: &str) -> String {
    let p = inspect(host, name)["ResolvConfPath"]
        .as_str()
        .unwrap()
        .to_string();
    let file = std::fs::read_to_string(&p).unwrap();
    // What the container's processes see is that file.
    let seen = host.pier_ok(&["exec", name, "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(seen, file, "{name} sees its resolv.conf");
    file
}

fn nameservers(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect()
}

/// Is anything listening on 127.0.0.11:53 (UDP) in `name`'s namespace?
fn dns_listening(host: &TestHost, name: &str) -> bool {
    listening_in(&host.container_netns(&host.container_id(name)))
}

fn listening_in(ns: &Path) -> bool {
    pier_tests::host::run_ok(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["--", "ss", "-Hlun"]),
    )
    .lines()
    .any(|l| l.contains("127.0.0.11:53"))
}

fn seen_names(up: &FakeUpstream) -> Vec<String> {
    up.seen().into_iter().map(|s| s.name).collect()
}

#[test]
fn dns_agent_names_on_user_networks() {
    require_root!();
    let mut host = TestHost::new();
    let (up, _own) = fake_upstreams(&host);
    let _agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["network", "create", "othernet"]);
    for args in [
        &["--name", "web", "--network", "mynet", "--alias", "www"][..],
        &["--name", "api", "--network", "mynet", "--alias", "svc"],
        &["--name", "api2", "--network", "mynet", "--alias", "svc"],
        &["--name", "far", "--network", "othernet"],
        &["--name", "b1"],
        &["--name", "b2", "--link", "b1"],
    ] {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        host.pier_ok(&a);
    }
    let web = ip_on(&host, "web", "mynet");
    let api = ip_on(&host, "api", "mynet");
    let api2 = ip_on(&host, "api2", "mynet");
    let far = ip_on(&host, "far", "othernet");
    let b1 = ip_on(&host, "b1", "bridge");

    // Names, NAME.NETWORK and aliases on the shared network, any case.
    assert_eq!(a(&host, "web", "api"), [api]);
    assert_eq!(a(&host, "web", "API.mynet."), [api]);
    assert_eq!(a(&host, "api", "www"), [web]);
    assert_eq!(a(&host, "api", "web.mynet"), [web]);
    // The short ID too, as Docker (inspect lists them all as DNSNames).
    let api_id = host.container_id("api");
    assert_eq!(a(&host, "web", &api_id[..12]), [api]);
    assert_eq!(
        inspect(&host, "api")["NetworkSettings"]["Networks"]["mynet"]["DNSNames"],
        serde_json::json!(["api", &api_id[..12], "svc"])
    );
    assert_eq!(
        inspect(&host, "b1")["NetworkSettings"]["Networks"]["bridge"]["DNSNames"],
        Value::Null
    );
    // One alias on two containers: both addresses.
    let mut both = vec![api, api2];
    both.sort();
    assert_eq!(a(&host, "web", "svc"), both);
    // ... in rotating order (Docker's round robin): the next query starts
    // with the other one.
    let first = a_in_order(&host, "web", "svc");
    let mut second = a_in_order(&host, "api", "svc");
    assert_ne!(first, second, "round robin");
    second.reverse();
    assert_eq!(first, second);
    // AAAA of an IPv4-only container: NOERROR, no answers.
    let m = ask(&host, "web", "api", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "{m:?}");
    // A name on a network the asker is not on: NXDOMAIN, never forwarded.
    assert_eq!(rcode(&host, "web", "far"), ResponseCode::NXDomain);
    assert_eq!(rcode(&host, "web", "far.othernet"), ResponseCode::NXDomain);
    assert_eq!(rcode(&host, "far", "api"), ResponseCode::NXDomain);
    assert_eq!(a(&host, "far", "far"), [far]);
    // PTR of a container address: its name (NAME.NETWORK, as Docker).
    let IpAddr::V4(v4) = api else { unreachable!() };
    let o = v4.octets();
    let arpa = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    let m = ask(&host, "web", &arpa, RecordType::PTR);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let ptrs: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(ptrs, ["api.mynet."]);
    // The same through the container's own libc: resolv.conf, then DNS.
    assert_eq!(getent_ip(&host, "web", "api"), api);
    assert_eq!(getent_ip(&host, "web", "www.mynet"), web);
    // Over TCP too.
    let m = ask_tcp(&host, "web", "api.mynet");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert!(matches!(m.answers[0].data, RData::A(x) if IpAddr::V4(x.0) == api));
    // A container sharing web's namespace asks web's server as web.
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "sharer",
        "--network",
        "container:web",
    ]);
    assert_eq!(
        resolv_conf(&host, "sharer"),
        "nameserver 127.0.0.11\noptions ndots:0\n"
    );
    assert_eq!(getent_ip(&host, "sharer", "api"), api);
    let (code, out) = getent(&host, "web", &api.to_string());
    assert_eq!(code, 0, "reverse lookup of {api}: {out}");
    assert_eq!(out.split_whitespace().nth(1), Some("api.mynet"), "{out}");
    let (code, out) = getent(&host, "web", "far");
    assert_eq!(code, 2, "far is not on mynet: {out}");
    // Other names go to the upstream (the agent's, in the outside namespace).
    assert_eq!(
        getent_ip(&host, "web", "example.test"),
        IpAddr::V4(UP_DEFAULT)
    );
    let seen = seen_names(&up);
    assert!(seen.contains(&"example.test.".to_string()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|n| n.starts_with("far") || n.starts_with("api")),
        "local names never leave the host: {seen:?}"
    );

    // The default bridge: no embedded resolver, no container names; only
    // --link, through /etc/hosts.
    for b in ["b1", "b2"] {
        assert!(!dns_listening(&host, b), "{b} has no DNS server");
        assert_eq!(nameservers(&resolv_conf(&host, b)), ["198.18.0.2"]);
    }
    assert!(dns_listening(&host, "web"));
    assert_eq!(getent_ip(&host, "b2", "b1"), b1);
    // b1 has no link to b2, and `web` is not a name its resolvers know: what
    // it gets is the upstream's answer, not a container's address.
    assert_eq!(getent_ip(&host, "b1", "b2"), IpAddr::V4(UP_DEFAULT));
    assert_eq!(getent_ip(&host, "b1", "web"), IpAddr::V4(UP_DEFAULT));

    // connect (with a network-scoped alias): the next query sees it.
    host.pier_ok(&["network", "connect", "--alias", "db", "othernet", "api"]);
    let api_far = ip_on(&host, "api", "othernet");
    assert_eq!(a(&host, "far", "api"), [api_far]);
    assert_eq!(a(&host, "far", "db"), [api_far]);
    assert_eq!(a(&host, "far", "db.othernet"), [api_far]);
    // On mynet, api keeps its mynet address; the alias lives on othernet only.
    assert_eq!(a(&host, "web", "api"), [api]);
    assert_eq!(rcode(&host, "web", "db"), ResponseCode::NXDomain);
    // api now reaches far by name (both networks searched).
    assert_eq!(a(&host, "api", "far"), [far]);

    // A default-bridge container connected to mynet gets the embedded
    // resolver (resolv.conf rewritten, server started) and finds mynet's
    // names; disconnect undoes both.
    host.pier_ok(&["run", "-d", "--name", "b1s", "--network", "container:b1"]);
    host.pier_ok(&["network", "connect", "mynet", "b1"]);
    for c in ["b1", "b1s"] {
        assert_eq!(
            resolv_conf(&host, c),
            "nameserver 127.0.0.11\noptions ndots:0\n",
            "{c}"
        );
    }
    assert_eq!(getent_ip(&host, "b1s", "web"), web);
    assert!(dns_listening(&host, "b1"));
    assert_eq!(getent_ip(&host, "b1", "web"), web);
    assert_eq!(a(&host, "web", "b1"), [ip_on(&host, "b1", "mynet")]);
    host.pier_ok(&["network", "disconnect", "mynet", "b1"]);
    for c in ["b1", "b1s"] {
        assert_eq!(nameservers(&resolv_conf(&host, c)), ["198.18.0.2"], "{c}");
    }
    assert!(!dns_listening(&host, "b1"));
    // b1 is no name on any user network now: forwarded like any other name.
    assert_eq!(a(&host, "web", "b1"), [IpAddr::V4(UP_DEFAULT)]);

    // disconnect: the name goes from that network at once.
    host.pier_ok(&["network", "disconnect", "othernet", "api"]);
    assert_eq!(rcode(&host, "far", "api"), ResponseCode::NXDomain);
    // `db` was api's alias on othernet only: no container has it now, so it
    // is just another name, forwarded.
    assert_eq!(a(&host, "far", "db"), [IpAddr::V4(UP_DEFAULT)]);
    // rm: the shared alias keeps only the one left; the name is gone.
    host.pier_ok(&["rm", "-f", "api2"]);
    assert_eq!(a(&host, "web", "svc"), [api]);
    assert_eq!(a(&host, "web", "api2"), [IpAddr::V4(UP_DEFAULT)]);
    let IpAddr::V4(v4) = api2 else { unreachable!() };
    let o = v4.octets();
    let arpa = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
    // ... and so is its PTR: the address is no container's now, so the
    // question goes upstream (whose fake answers anything with an A record).
    let m = ask(&host, "web", &arpa, RecordType::PTR);
    assert!(!m.metadata.authoritative, "{m:?}");
    assert!(
        !m.answers.iter().any(|r| matches!(r.data, RData::PTR(_))),
        "no PTR for a removed container: {m:?}"
    );
}

#[test]
fn dns_agent_upstreams_internal_and_resolv_conf() {
    require_root!();
    let mut host = TestHost::new();
    let (up, own) = fake_upstreams(&host);
    // A bad upstream is refused before the agent starts.
    let out = host.run_agent_to_exit(&["--dns-upstream", "not-an-ip"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-an-ip") && err.contains("--dns-upstream"),
        "{err}"
    );
    assert!(!host.dir.join("state").exists(), "nothing made: {err}");

    let _agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["network", "create", "--internal", "inet"]);
    host.pier_ok(&["run", "-d", "--name", "u1", "--network", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "u2",
        "--network",
        "mynet",
        "--dns",
        "198.18.0.3",
    ]);
    host.pier_ok(&["run", "-d", "--name", "d1", "--dns", "198.18.0.3"]);
    host.pier_ok(&["run", "-d", "--name", "d2"]);
    host.pier_ok(&["run", "-d", "--name", "i1", "--network", "inet"]);
    host.pier_ok(&["run", "-d", "--name", "i2", "--network", "inet"]);

    // Stored with the container, shown by inspect as Docker does.
    assert_eq!(
        inspect(&host, "u2")["HostConfig"]["Dns"],
        serde_json::json!(["198.18.0.3"])
    );
    assert_eq!(
        inspect(&host, "u1")["HostConfig"]["Dns"],
        serde_json::json!([])
    );

    // resolv.conf: the embedded resolver on user networks (also with
    // --dns: those servers become the resolver's upstreams for it) ...
    for c in ["u1", "u2", "i1"] {
        assert_eq!(
            resolv_conf(&host, c),
            "nameserver 127.0.0.11\noptions ndots:0\n",
            "{c}"
        );
    }
    // ... the given servers on the default bridge, as Docker does.
    assert_eq!(nameservers(&resolv_conf(&host, "d1")), ["198.18.0.3"]);
    assert_eq!(nameservers(&resolv_conf(&host, "d2")), ["198.18.0.2"]);

    // Forwarding: the agent's upstream, or the container's own.
    assert_eq!(a(&host, "u1", "one.example.test"), [IpAddr::V4(UP_DEFAULT)]);
    assert_eq!(a(&host, "u2", "two.example.test"), [IpAddr::V4(UP_OWN)]);
    assert_eq!(
        getent_ip(&host, "u2", "three.example.test"),
        IpAddr::V4(UP_OWN)
    );
    assert_eq!(
        getent_ip(&host, "d1", "four.example.test"),
        IpAddr::V4(UP_OWN)
    );
    assert_eq!(
        getent_ip(&host, "d2", "five.example.test"),
        IpAddr::V4(UP_DEFAULT)
    );
    let (seen_up, seen_own) = (seen_names(&up), seen_names(&own));
    for n in ["one", "five"] {
        let n = format!("{n}.example.test.");
        assert!(seen_up.contains(&n), "{n} at 198.18.0.2: {seen_up:?}");
        assert!(
            !seen_own.contains(&n),
            "{n} not at 198.18.0.3: {seen_own:?}"
        );
    }
    for n in ["two", "three", "four"] {
        let n = format!("{n}.example.test.");
        assert!(seen_own.contains(&n), "{n} at 198.18.0.3: {seen_own:?}");
        assert!(!seen_up.contains(&n), "{n} not at 198.18.0.2: {seen_up:?}");
    }
    // Local names still come first for a container with --dns.
    assert_eq!(a(&host, "u2", "u1"), [ip_on(&host, "u1", "mynet")]);

    // --internal: local names only, nothing forwarded (SERVFAIL).
    assert_eq!(a(&host, "i1", "i2"), [ip_on(&host, "i2", "inet")]);
    assert_eq!(
        rcode(&host, "i1", "inside.example.test"),
        ResponseCode::ServFail
    );
    let (code, _) = getent(&host, "i1", "inside2.example.test");
    assert_ne!(code, 0);
    for up in [&up, &own] {
        assert!(
            !seen_names(up).iter().any(|n| n.starts_with("inside")),
            "an internal network's query left the host: {:?}",
            seen_names(up)
        );
    }

    // Bad --dns: a one-line error, nothing made.
    let before = host.world();
    let err = host.pier_err(&["run", "-d", "--name", "bad", "--dns", "bogus"]);
    assert_eq!(err.trim(), "Error: invalid DNS server address \"bogus\"");
    let err = host.pier_err(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "container:u1",
        "--dns",
        "198.18.0.3",
    ]);
    assert_eq!(
        err.trim(),
        "Error: conflicting options: dns and the network mode"
    );
    assert_eq!(host.world(), before);
    // Host mode: the host's resolv.conf with --dns's servers instead of the
    // host's (Docker does the same), and no warning.
    let out = host.pier(&[
        "run",
        "-d",
        "--name",
        "h",
        "--network",
        "host",
        "--dns",
        "198.18.0.3",
        "--",
        "sleep",
        "300",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(
        inspect(&host, "h")["HostConfig"]["Dns"],
        serde_json::json!(["198.18.0.3"])
    );
    let seen = host.pier_ok(&["exec", "h", "cat", "/etc/resolv.conf"]);
    assert!(seen.starts_with("nameserver 198.18.0.3\n"), "{seen}");
    assert_eq!(seen.matches("nameserver").count(), 1, "{seen}");
}

#[test]
fn dns_agent_names_survive_an_agent_restart() {
    require_root!();
    let mut host = TestHost::new();
    let (up, _own) = fake_upstreams(&host);
    let agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "r1", "--network", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "r2",
        "--network",
        "mynet",
        "--alias",
        "r2a",
    ]);
    let r2 = ip_on(&host, "r2", "mynet");
    assert_eq!(a(&host, "r1", "r2a"), [r2]);

    let r1_ns = host.container_netns(&host.container_id("r1"));
    assert!(listening_in(&r1_ns));
    host.stop_agent(&agent, nix::sys::signal::Signal::SIGTERM);
    // The servers went with the agent's process; the container stays.
    assert!(!listening_in(&r1_ns));
    assert!(ask_in(&r1_ns, "r2", RecordType::A).is_none());

    let agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.wait_agent_ready();
    assert!(dns_listening(&host, "r1"));
    assert_eq!(a(&host, "r1", "r2"), [r2]);
    assert_eq!(a(&host, "r1", "r2a.mynet"), [r2]);
    assert_eq!(getent_ip(&host, "r2", "r1"), ip_on(&host, "r1", "mynet"));
    assert_eq!(
        a(&host, "r1", "after.example.test"),
        [IpAddr::V4(UP_DEFAULT)]
    );
    assert!(seen_names(&up).contains(&"after.example.test.".to_string()));
    // Changes after the restart reach the resolver too.
    host.pier_ok(&["rm", "-f", "r2"]);
    assert_eq!(a(&host, "r1", "r2a"), [IpAddr::V4(UP_DEFAULT)]);
    assert!(
        !agent.log().contains("dns for"),
        "no DNS server failed to start:\n{}",
        agent.log()
    );
}

#[test]
fn dns_agent_serves_a_detached_command_from_its_first_query() {
    require_root!();
    let mut host = TestHost::new();
    let (_up, _own) = fake_upstreams(&host);
    let _agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "srv", "--network", "mynet"]);
    let srv = ip_on(&host, "srv", "mynet");
    // The command asks at once, as a service looking up its database does:
    // the resolver must know it and listen in its namespace before it runs.
    for i in 0..3 {
        let name = format!("early{i}");
        host.pier_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "mynet",
            "--",
            "getent",
            "hosts",
            "srv",
        ]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let logs = loop {
            let logs = host.pier_ok(&["logs", &name]);
            if !logs.is_empty() || std::time::Instant::now() > deadline {
                break logs;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            logs.split_whitespace().collect::<Vec<_>>(),
            [srv.to_string().as_str(), "srv"],
            "{name}: {logs:?}"
        );
    }
}

#[test]
fn dns_agent_stopped_containers_have_no_name_until_started() {
    require_root!();
    let mut host = TestHost::new();
    let (_up, _own) = fake_upstreams(&host);
    let _agent = host.start_agent(&["--dns-upstream", "198.18.0.2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "s1", "--network", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "s2",
        "--network",
        "mynet",
        "--alias",
        "s2a",
    ]);
    let s2 = ip_on(&host, "s2", "mynet");
    assert_eq!(a(&host, "s1", "s2"), [s2]);
    // Stopped: neither its name nor its alias is a container's any more, so
    // the question goes upstream, as for a removed container.
    host.pier_ok(&["stop", "s2"]);
    for n in ["s2", "s2a", "s2.mynet"] {
        assert_eq!(a(&host, "s1", n), [IpAddr::V4(UP_DEFAULT)], "{n}");
    }
    // Started again: back at once.
    host.pier_ok(&["start", "s2"]);
    assert_eq!(a(&host, "s1", "s2a"), [s2]);
    assert_eq!(getent_ip(&host, "s1", "s2"), s2);
}

#[test]
fn dns_agent_forwards_to_ipv6_upstreams() {
    require_root!();
    let mut host = TestHost::new();
    // IPv6 on the uplink: the host fd18::1, the outside fd18::2 and ::3,
    // each running a fake resolver.
    host.host(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd18::1/64",
        "dev",
        "uplink0",
        "nodad",
    ]);
    for a in ["fd18::2/64", "fd18::3/64"] {
        host.outside(&["ip", "-6", "addr", "add", a, "dev", "eth0", "nodad"]);
    }
    let (up, own) = TestHost::in_netns(&host.outside_ns, || {
        let start = |a: &str, ip| {
            FakeUpstream::start(a.parse().unwrap(), Mode::Answer(ip)).expect("fake upstream")
        };
        (
            start("[fd18::2]:53", UP_DEFAULT),
            start("[fd18::3]:53", UP_OWN),
        )
    });
    let _agent = host.start_agent(&["--dns-upstream", "fd18::2"]);
    host.pier_ok(&["network", "create", "mynet"]);
    host.pier_ok(&["run", "-d", "--name", "u1", "--network", "mynet"]);
    host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "u2",
        "--network",
        "mynet",
        "--dns",
        "fd18::3",
    ]);
    host.pier_ok(&["run", "-d", "--name", "d1", "--dns", "fd18::3"]);
    host.pier_ok(&["run", "-d", "--name", "d2"]);
    assert_eq!(
        inspect(&host, "u2")["HostConfig"]["Dns"],
        serde_json::json!(["fd18::3"])
    );
    // The embedded resolver forwards over IPv6: the agent's upstream, or
    // the container's own, over UDP and TCP.
    assert_eq!(a(&host, "u1", "one.example.test"), [IpAddr::V4(UP_DEFAULT)]);
    assert_eq!(a(&host, "u2", "two.example.test"), [IpAddr::V4(UP_OWN)]);
    let m = ask_tcp(&host, "u1", "tcp.example.test");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(seen_names(&up).iter().any(|n| n == "one.example.test."));
    assert!(seen_names(&up).iter().any(|n| n == "tcp.example.test."));
    assert!(seen_names(&own).iter().any(|n| n == "two.example.test."));
    assert!(!seen_names(&up).iter().any(|n| n == "two.example.test."));
    // The default bridge lists the servers as given (Docker's rule).
    assert_eq!(nameservers(&resolv_conf(&host, "d1")), ["fd18::3"]);
    assert_eq!(nameservers(&resolv_conf(&host, "d2")), ["fd18::2"]);
    // Bad input: one error, nothing made.
    let ps = host.pier_ok(&["ps", "-a", "-q"]);
    for bad in ["fd18::3::1", "fe80::1%eth0x", "not-an-ip"] {
        let e = host.pier_err(&["run", "-d", "--name", "bad", "--dns", bad]);
        assert!(e.contains("invalid DNS server address"), "{bad}: {e}");
    }
    assert_eq!(host.pier_ok(&["ps", "-a", "-q"]), ps);
}
