//! pier's CNI plugin invoked directly, as a runtime does: `CNI_*` in the
//! environment and the config on stdin, against a real agent in a
//! TestHost. Every verb (ADD, CHECK, DEL, VERSION, STATUS, GC), published
//! ports reached from the outside with the client's address kept, names,
//! bad config and bad namespaces refused with nothing made, double ADD,
//! DEL of what never existed, the agent down (ADD refused with code 11,
//! DEL queued and carried out at its start, reconcile of namespaces that
//! went meanwhile), and no netfilter rule anywhere.
mod agent_util;

use std::{path::PathBuf, process::Command};

use agent_util::*;
use nix::sys::signal::Signal;
use pier_tests::{
    TestHost,
    cni::{Outcome, invoke},
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};
use serde_json::{Value, json};

/// A config for network `name`, talking to `sb`'s agent.
fn conf(sb: &Sandbox, name: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "pier",
        "socket": sb.host.socket(),
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// One attachment's environment.
struct Att {
    id: String,
    netns: PathBuf,
    ifname: &'static str,
}

impl Att {
    /// A namespace with `lo` up, as a runtime's `loopback` leaves it.
    fn new(h: &mut TestHost, tag: &str) -> Self {
        let ns = h.add_netns(tag);
        pier_tests::host::sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        Att {
            id: format!("{tag}-{}", h.prefix),
            netns: ns_path(&ns),
            ifname: "eth0",
        }
    }

    fn run(&self, command: &str, conf: &Value) -> Outcome {
        let ns = self.netns.to_string_lossy().into_owned();
        invoke(
            command,
            &[
                ("CNI_CONTAINERID", &self.id),
                ("CNI_NETNS", &ns),
                ("CNI_IFNAME", self.ifname),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x"),
            ],
            conf,
        )
    }

    fn ns(&self, args: &[&str]) -> String {
        let o = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// pier's records of CNI containers: (name, engine id) from `ps`.
fn cni_rows(sb: &Sandbox) -> Vec<String> {
    let out = sb.host.pier_ok(&["ps", "-a", "--format", "json"]);
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Names"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|n| n.starts_with("cni-"))
        .collect();
    v.sort();
    v
}

fn veths(sb: &Sandbox) -> Vec<String> {
    sb.host
        .host_link_names()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

#[test]
fn add_check_del_with_published_ports_and_names() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let a1 = Att::new(&mut sb.host, "c1");
    let a2 = Att::new(&mut sb.host, "c2");
    let c1 = conf(
        &sb,
        "piernet",
        json!({
            "subnet": "10.89.0.0/24",
            "runtimeConfig": {
                "portMappings": [{"hostPort": 8081, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}],
                "aliases": {"piernet": ["web1", "w1"]},
            },
        }),
    );
    let r1 = a1.run("ADD", &c1).ok().clone();
    assert_eq!(r1["cniVersion"], "1.0.0", "{r1}");
    assert_eq!(r1["ips"][0]["address"], "10.89.0.2/24", "{r1}");
    assert_eq!(r1["ips"][0]["gateway"], "10.89.0.1", "{r1}");
    assert_eq!(r1["ips"][0]["interface"], 1, "{r1}");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(
        r1["interfaces"][1]["sandbox"],
        a1.netns.to_string_lossy().as_ref()
    );
    let host_veth = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(veths(&sb).contains(&host_veth), "{:?}", veths(&sb));
    assert_eq!(
        r1["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.89.0.1"})
    );
    assert_eq!(r1["dns"]["nameservers"][0], "127.0.0.11", "{r1}");
    let addr = a1.ns(&["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("10.89.0.2/24"), "{addr}");
    let route = a1.ns(&["ip", "route"]);
    assert!(route.contains("default via 10.89.0.1 dev eth0"), "{route}");
    // The network was made by the first ADD, owned by cni.
    let v: Value =
        serde_json::from_str(&sb.host.pier_ok(&["network", "inspect", "piernet"])).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.89.0.0/24", "{v}");
    // containerd's spelling for the second container; no subnet: the
    // network as it is.
    let c2 = conf(
        &sb,
        "piernet",
        json!({"runtimeConfig": {
            "portMappings": [{"HostPort": 8082, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}],
            "aliases": {"piernet": ["web2"]},
        }}),
    );
    let r2 = a2.run("ADD", &c2).ok().clone();
    assert_eq!(r2["ips"][0]["address"], "10.89.0.3/24", "{r2}");
    assert_eq!(cni_rows(&sb).len(), 2, "{:?}", cni_rows(&sb));
    // The agent holds the published ports: no host process takes them.
    let taken = in_ns(&sb.host_ns(), || {
        std::net::TcpListener::bind("0.0.0.0:8081")
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    assert_eq!(taken, Err(std::io::ErrorKind::AddrInUse));
    // Published: from the outside, the client's address kept.
    for (a, port, who) in [(&a1, 8081, "one"), (&a2, 8082, "two")] {
        let srv = tcp_server(&a.netns, 8080, 1);
        let ans = tcp_ask(&sb.outside_ns(), &format!("{HOST_UPLINK_IP}:{port}"), who)
            .unwrap_or_else(|e| panic!("outside → {port}: {e}\n{}", sb.log()));
        assert!(ans.text.ends_with(&format!("|{who}")), "{ans:?}");
        assert_eq!(ans.seen_ip(), OUTSIDE_IP, "the server saw the real client");
        srv.join().unwrap();
    }
    // Names: each resolves the other's aliases through pier's resolver.
    let mut resolved = String::new();
    for _ in 0..50 {
        resolved = a1.ns(&["busybox", "nslookup", "web2", "127.0.0.11"]);
        if resolved.contains("10.89.0.3") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(resolved.contains("10.89.0.3"), "{resolved}\n{}", sb.log());
    let out = a2.ns(&["busybox", "nslookup", "w1", "127.0.0.11"]);
    assert!(out.contains("10.89.0.2"), "{out}");
    // CHECK: with the ADD result as prevResult; a wrong address fails.
    a1.run("CHECK", &with_prev(&c1, &r1)).ok();
    let mut wrong = r1.clone();
    wrong["ips"][0]["address"] = json!("10.89.0.9/24");
    let o = a1.run("CHECK", &with_prev(&c1, &wrong));
    assert!(
        o.out["msg"].as_str().unwrap().contains("10.89.0.2"),
        "{o:?}"
    );
    let o = a2.run("CHECK", &conf(&sb, "othernet", json!({})));
    assert_eq!(o.code(), 3, "{o:?}");
    // DEL: the interface, the veth, the ports and the record go.
    a1.run("DEL", &with_prev(&c1, &r1)).ok();
    assert!(!veths(&sb).contains(&host_veth));
    let links = a1.ns(&["ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert_eq!(cni_rows(&sb).len(), 1);
    let o = tcp_ask(&sb.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), "x");
    assert!(o.is_err(), "8081 still answers: {o:?}");
    let o = a1.run("CHECK", &c1);
    assert_eq!(o.code(), 3, "{o:?}");
    // DEL again, and with an empty CNI_NETNS (the namespace gone): fine.
    a1.run("DEL", &c1).ok();
    let o = invoke(
        "DEL",
        &[
            ("CNI_CONTAINERID", &a2.id),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
        ],
        &c2,
    );
    o.ok();
    assert!(cni_rows(&sb).is_empty(), "{:?}", cni_rows(&sb));
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    sb.assert_firewalls_untouched();
}

#[test]
fn bad_input_is_refused_with_nothing_made() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let a1 = Att::new(&mut sb.host, "b1");
    let before = sb.host.world();
    let cases: Vec<(Value, u64, &str)> = vec![
        (
            conf(&sb, "n1", json!({"subent": "10.1.0.0/24"})),
            7,
            "unknown key \"subent\"",
        ),
        (
            conf(&sb, "n1", json!({"ipam": {"type": "host-local"}})),
            7,
            "own address management",
        ),
        (
            conf(&sb, "n1", json!({"subnet": "10.1.0.0/33"})),
            7,
            "subnet:",
        ),
        (
            conf(&sb, "n1", json!({"gateway": "10.1.0.1"})),
            7,
            "gateway needs subnet",
        ),
        (
            conf(
                &sb,
                "n1",
                json!({"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}),
            ),
            7,
            "gateway",
        ),
        (conf(&sb, "n1", json!({"mtu": 20})), 7, "mtu"),
        (conf(&sb, "bad name!", json!({})), 7, "name"),
        (
            conf(&sb, "n1", json!({"socket": "relative.sock"})),
            7,
            "absolute",
        ),
        (
            conf(
                &sb,
                "n1",
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 0}]}}),
            ),
            7,
            "containerPort 0",
        ),
        (
            conf(
                &sb,
                "n1",
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 81, "containerPort": 80, "protocol": "sctp"}]}}),
            ),
            7,
            "sctp",
        ),
        (
            conf(&sb, "n1", json!({"cniVersion": "9.9.9"})),
            1,
            "not supported",
        ),
        (
            conf(&sb, "n1", json!({"subnet6": "fd01::1/64"})),
            7,
            "subnet6:",
        ),
        (
            conf(&sb, "n1", json!({"gateway6": "fd01::1"})),
            7,
            "gateway6 needs subnet6",
        ),
        (
            conf(
                &sb,
                "n1",
                json!({"subnet6": "fd01::/64", "gateway6": "fd02::1"}),
            ),
            7,
            "gateway",
        ),
        // The subnet the host routes (the uplink's).
        (
            conf(&sb, "n1", json!({"subnet": "198.18.0.0/24"})),
            100,
            "routed on the host",
        ),
    ];
    for (c, code, words) in cases {
        let o = a1.run("ADD", &c);
        assert_eq!(o.code(), code, "{c}: {o:?}");
        let msg = o.out["msg"].as_str().unwrap();
        assert!(msg.contains(words), "{c}: {msg:?} lacks {words:?}");
        assert!(o.out["cniVersion"].is_string(), "{o:?}");
    }
    let o = invoke("ADD", &[], &json!("not an object"));
    assert_eq!(o.code(), 6, "{o:?}");
    let good = conf(&sb, "n1", json!({"subnet": "10.77.0.0/24"}));
    // Bad environments: missing variables, a namespace that is none.
    let file = sb.host.dir.join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    let nsx = a1.netns.to_string_lossy().into_owned();
    for (env, words) in [
        (
            vec![("CNI_NETNS", nsx.as_str()), ("CNI_IFNAME", "eth0")],
            "CNI_CONTAINERID",
        ),
        (
            vec![("CNI_CONTAINERID", "x1"), ("CNI_IFNAME", "eth0")],
            "CNI_NETNS",
        ),
        (
            vec![("CNI_CONTAINERID", "x1"), ("CNI_NETNS", nsx.as_str())],
            "CNI_IFNAME",
        ),
        (
            vec![
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", "/nonexistent/ns"),
                ("CNI_IFNAME", "eth0"),
            ],
            "not a network namespace",
        ),
        (
            vec![
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", file.to_str().unwrap()),
                ("CNI_IFNAME", "eth0"),
            ],
            "not a network namespace",
        ),
        (
            vec![
                ("CNI_CONTAINERID", "-x/1"),
                ("CNI_NETNS", nsx.as_str()),
                ("CNI_IFNAME", "eth0"),
            ],
            "CNI_CONTAINERID",
        ),
        (
            vec![
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", nsx.as_str()),
                ("CNI_IFNAME", "eth0/1"),
            ],
            "CNI_IFNAME",
        ),
    ] {
        let o = invoke("ADD", &env, &good);
        assert_eq!(o.code(), 4, "{env:?}: {o:?}");
        assert!(o.out["msg"].as_str().unwrap().contains(words), "{o:?}");
    }
    let o = invoke("FROB", &[], &good);
    assert_eq!(o.code(), 4, "{o:?}");
    assert_eq!(sb.host.world(), before, "a refused ADD left something");
    // DEL of what never existed, on a network that does not exist either.
    a1.run("DEL", &good).ok();
    assert_eq!(sb.host.world(), before);
    // Double ADD: the second is refused, the first stays whole.
    let r = a1.run("ADD", &good).ok().clone();
    let after_first = sb.host.world();
    let o = a1.run("ADD", &good);
    assert_eq!(o.code(), 100, "{o:?}");
    assert!(
        o.out["msg"]
            .as_str()
            .unwrap()
            .contains("eth0 already exists"),
        "{o:?}"
    );
    assert_eq!(sb.host.world(), after_first);
    a1.run("CHECK", &with_prev(&good, &r)).ok();
    // A network of pier's own is not the runtime's to attach to; a clashing
    // subnet for the CNI network is refused.
    sb.host.pier_ok(&["network", "create", "mine"]);
    let a2 = Att::new(&mut sb.host, "b2");
    let before = sb.host.world();
    let o = a2.run("ADD", &conf(&sb, "mine", json!({})));
    assert_eq!(o.code(), 100, "{o:?}");
    assert!(
        o.out["msg"].as_str().unwrap().contains("managed by pier"),
        "{o:?}"
    );
    let o = a2.run("ADD", &conf(&sb, "n1", json!({"subnet": "10.78.0.0/24"})));
    assert_eq!(o.code(), 100, "{o:?}");
    assert!(
        o.out["msg"]
            .as_str()
            .unwrap()
            .contains("subnet 10.77.0.0/24"),
        "{o:?}"
    );
    // A published port another attachment holds: refused, nothing made.
    let a3 = Att::new(&mut sb.host, "b3");
    let p = |port: u16| {
        conf(
            &sb,
            "n1",
            json!({"runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80}]}}),
        )
    };
    a2.run("ADD", &p(9090)).ok();
    let before3 = sb.host.world();
    let o = a3.run("ADD", &p(9090));
    assert_eq!(o.code(), 100, "{o:?}");
    assert!(
        o.out["msg"].as_str().unwrap().contains("already allocated"),
        "{o:?}"
    );
    assert_eq!(sb.host.world(), before3);
    a2.run("DEL", &p(9090)).ok();
    assert_eq!(sb.host.world(), before);
    sb.assert_firewalls_untouched();
}

#[test]
fn version_status_and_gc() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let o = invoke("VERSION", &[], &json!({"cniVersion": "1.1.0"}));
    assert_eq!(
        o.ok(),
        &json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let na = conf(
        &sb,
        "gca",
        json!({"cniVersion": "1.1.0", "subnet": "10.81.0.0/24"}),
    );
    let nb = conf(
        &sb,
        "gcb",
        json!({"cniVersion": "1.1.0", "subnet": "10.82.0.0/24"}),
    );
    invoke("STATUS", &[], &na).ok();
    let a1 = Att::new(&mut sb.host, "g1");
    let a2 = Att::new(&mut sb.host, "g2");
    let a3 = Att::new(&mut sb.host, "g3");
    // 1.1.0 results carry the requested version; 0.4.0 ones the `version`
    // field of the older spec.
    let r = a1.run("ADD", &na).ok().clone();
    assert_eq!(r["cniVersion"], "1.1.0");
    a2.run("ADD", &na).ok();
    let old = conf(
        &sb,
        "gcb",
        json!({"cniVersion": "0.4.0", "subnet": "10.82.0.0/24"}),
    );
    let r = a3.run("ADD", &old).ok().clone();
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    // a1 also on gcb, as eth1.
    let a1b = Att {
        id: a1.id.clone(),
        netns: a1.netns.clone(),
        ifname: "eth1",
    };
    a1b.run("ADD", &nb).ok();
    // And a container of pier's own, which GC must not see.
    sb.host
        .pier_ok(&["run", "-d", "--name", "own", "--", "sleep", "60"]);
    let mut gc = na.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": a1.id, "ifname": "eth0"}]);
    invoke("GC", &[], &gc).ok();
    let links2 = a2.ns(&["ip", "-o", "link"]);
    assert!(!links2.contains("eth0"), "GC left g2: {links2}");
    let l1 = a1.ns(&["ip", "-o", "link"]);
    assert!(l1.contains("eth0") && l1.contains("eth1"), "{l1}");
    assert!(
        a3.ns(&["ip", "-o", "link"]).contains("eth0"),
        "GC of gca took gcb's"
    );
    assert_eq!(cni_rows(&sb).len(), 2, "{:?}", cni_rows(&sb));
    // An empty list on gcb: a1's eth1 and a3 go, a1's eth0 on gca stays.
    let mut gc = nb.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    invoke("GC", &[], &gc).ok();
    let l1 = a1.ns(&["ip", "-o", "link"]);
    assert!(l1.contains("eth0") && !l1.contains("eth1"), "{l1}");
    assert_eq!(cni_rows(&sb).len(), 1);
    assert!(sb.host.pier_ok(&["ps"]).contains("own"));
    let o = invoke(
        "GC",
        &[],
        &conf(&sb, "gca", json!({"cni.dev/valid-attachments": "x"})),
    );
    assert_eq!(o.code(), 7, "{o:?}");
    sb.assert_firewalls_untouched();
}

#[test]
fn agent_down_add_retries_del_queued_and_gone_namespaces_reconciled() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let c = conf(&sb, "downnet", json!({"subnet": "10.83.0.0/24"}));
    let a1 = Att::new(&mut sb.host, "d1");
    let a2 = Att::new(&mut sb.host, "d2");
    let a3 = Att::new(&mut sb.host, "d3");
    a1.run("ADD", &c).ok();
    a2.run("ADD", &c).ok();
    assert_eq!(veths(&sb).len(), 2);
    let agent = sb.agent.take().unwrap();
    sb.host.stop_agent(&agent, Signal::SIGTERM);
    // No agent: STATUS says so, ADD is to be retried, DEL is queued.
    let o = invoke("STATUS", &[], &c);
    assert_eq!(o.code(), 50, "{o:?}");
    let o = a3.run("ADD", &c);
    assert_eq!(o.code(), 11, "{o:?}");
    assert!(
        o.out["msg"].as_str().unwrap().contains("does not answer"),
        "{o:?}"
    );
    a1.run("DEL", &c).ok();
    let queue = pier_tests::cni::queue_dir(&sb.host.socket());
    let queued: Vec<_> = std::fs::read_dir(&queue).unwrap().flatten().collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    // a2's namespace goes while no agent runs (its DEL never comes).
    let ns2 = a2.netns.file_name().unwrap().to_str().unwrap();
    let st = Command::new("ip")
        .args(["netns", "del", ns2])
        .status()
        .unwrap();
    assert!(st.success());
    sb.agent = Some(sb.host.start_agent(&[]));
    sb.host.wait_agent_ready();
    assert!(
        cni_rows(&sb).is_empty(),
        "{:?}\n{}",
        cni_rows(&sb),
        sb.log()
    );
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    assert!(!a1.ns(&["ip", "-o", "link"]).contains("eth0"));
    assert_eq!(std::fs::read_dir(&queue).unwrap().count(), 0);
    let log = sb.log();
    assert!(log.contains("queued DEL of"), "{log}");
    assert!(log.contains("is gone: detaching"), "{log}");
    // And the agent serves ADD again, at the freed address.
    let r = a3.run("ADD", &c).ok().clone();
    assert_eq!(r["ips"][0]["address"], "10.83.0.2/24", "{r}");
    sb.assert_firewalls_untouched();
}

#[test]
fn parallel_first_adds_share_one_new_network() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let atts: Vec<Att> = (0..6)
        .map(|i| Att::new(&mut sb.host, &format!("p{i}")))
        .collect();
    let c = conf(&sb, "parnet", json!({"subnet": "10.84.0.0/24"}));
    // Runtimes run plugins for different containers at once; the first
    // ADDs of a network race to make it.
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = atts.iter().map(|a| s.spawn(|| a.run("ADD", &c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results
        .iter()
        .map(|o| o.ok()["ips"][0]["address"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "{ips:?}");
    let nets = sb.host.pier_ok(&["network", "ls"]);
    assert_eq!(nets.matches("parnet").count(), 1, "{nets}");
    // In use: pier does not remove it, nor the runtime's containers.
    let e = sb.host.pier_err(&["network", "rm", "parnet"]);
    assert!(e.contains("active endpoints"), "{e}");
    let name = &cni_rows(&sb)[0];
    let e = sb.host.pier_err(&["rm", "-f", name]);
    assert!(e.contains("managed by cni"), "{e}");
    std::thread::scope(|s| {
        for a in &atts {
            s.spawn(|| a.run("DEL", &c).ok().clone());
        }
    });
    assert!(cni_rows(&sb).is_empty(), "{:?}", cni_rows(&sb));
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    // Unused: CNI has no verb for it; pier removes it, bridge and all.
    let links = sb.host.host_link_names();
    sb.host.pier_ok(&["network", "rm", "parnet"]);
    assert!(!sb.host.pier_ok(&["network", "ls"]).contains("parnet"));
    assert_eq!(
        sb.host.host_link_names().len(),
        links.len() - 1,
        "{links:?}"
    );
    sb.assert_firewalls_untouched();
}

#[test]
fn dual_stack_add_check_del() {
    require_root!();
    let mut sb = Sandbox::new(&[]);
    let a1 = Att::new(&mut sb.host, "d1");
    let a2 = Att::new(&mut sb.host, "d2");
    let a3 = Att::new(&mut sb.host, "d3");
    let c = conf(
        &sb,
        "net6",
        json!({
            "subnet": "10.88.6.0/24",
            "subnet6": "fd88:6::/64",
            "runtimeConfig": {"aliases": {"net6": ["web6"]}},
        }),
    );
    let r1 = a1.run("ADD", &c).ok().clone();
    assert_eq!(r1["ips"][0]["address"], "10.88.6.2/24", "{r1}");
    assert_eq!(r1["ips"][1]["address"], "fd88:6::2/64", "{r1}");
    assert_eq!(r1["ips"][1]["gateway"], "fd88:6::1", "{r1}");
    assert_eq!(r1["ips"][1]["interface"], 1, "{r1}");
    assert_eq!(
        r1["routes"][1],
        json!({"dst": "::/0", "gw": "fd88:6::1"}),
        "{r1}"
    );
    // Versions before 1.0.0 name the family.
    let mut old = c.clone();
    old["cniVersion"] = json!("0.4.0");
    let r2 = a2.run("ADD", &old).ok().clone();
    assert_eq!(r2["ips"][1]["version"], "6", "{r2}");
    assert_eq!(r2["ips"][1]["address"], "fd88:6::3/64", "{r2}");
    // pier's network has both pools.
    let v: Value = serde_json::from_str(&sb.host.pier_ok(&["network", "inspect", "net6"])).unwrap();
    assert_eq!(v[0]["EnableIPv6"], true, "{v}");
    assert_eq!(v[0]["IPAM"]["Config"][1]["Subnet"], "fd88:6::/64", "{v}");
    // Inside: the address and the IPv6 default route; traffic both ways.
    let addr = a1.ns(&["ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("fd88:6::2/64"), "{addr}");
    let route = a1.ns(&["ip", "-6", "route", "show", "default"]);
    assert!(route.contains("default via fd88:6::1 dev eth0"), "{route}");
    assert!(ping(&a2.netns, "fd88:6::2"), "ICMPv6 within the network");
    let srv = tcp_server6(&a1.netns, 8080);
    let seen = tcp_seen6(&a2.netns, "[fd88:6::2]:8080").expect("TCP over IPv6");
    assert_eq!(seen, "fd88:6::3");
    srv.join().unwrap();
    // Names: AAAA from pier's resolver.
    let mut out = String::new();
    for _ in 0..50 {
        out = a2.ns(&["busybox", "nslookup", "-type=AAAA", "web6", "127.0.0.11"]);
        if out.contains("fd88:6::2") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(out.contains("fd88:6::2"), "{out}\n{}", sb.log());
    // Another network cannot reach it over IPv6.
    let other = conf(&sb, "other6", json!({"subnet6": "fd88:7::/64"}));
    let r3 = a3.run("ADD", &other).ok().clone();
    assert_eq!(r3["ips"][1]["address"], "fd88:7::2/64", "{r3}");
    assert!(!ping(&a3.netns, "fd88:6::2"), "ICMPv6 crossed networks");
    // CHECK with the ADD result; a wrong IPv6 address fails.
    a1.run("CHECK", &with_prev(&c, &r1)).ok();
    let mut wrong = r1.clone();
    wrong["ips"][1]["address"] = json!("fd88:6::99/64");
    let o = a1.run("CHECK", &with_prev(&c, &wrong));
    assert!(
        o.out["msg"].as_str().unwrap().contains("fd88:6::2"),
        "{o:?}"
    );
    // Published ports: no hostIP binds both families, an IPv6 hostIP that
    // address only; the host reaches them over IPv6 (`[::1]`, the gateway).
    let a5 = Att::new(&mut sb.host, "d5");
    let mut pc = c.clone();
    pc["runtimeConfig"]["portMappings"] = json!([
        {"hostPort": 8090, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 8091, "containerPort": 81, "protocol": "tcp", "hostIP": "fd88:6::1"},
    ]);
    let before_ports = cni_rows(&sb);
    a5.run("ADD", &pc).ok();
    let name = cni_rows(&sb)
        .into_iter()
        .find(|n| !before_ports.contains(n))
        .expect("the new record");
    assert_eq!(
        sb.host.pier_ok(&["port", &name]),
        "80/tcp -> 0.0.0.0:8090\n80/tcp -> [::]:8090\n81/tcp -> [fd88:6::1]:8091\n"
    );
    let host = sb.host_ns();
    for dst in ["[::1]:8090", "[fd88:6::1]:8090"] {
        let srv = tcp_server6(&a5.netns, 80);
        let seen = tcp_seen6(&host, dst).unwrap_or_else(|e| panic!("{dst}: {e}"));
        assert_eq!(seen, "fd88:6::1", "{dst}");
        srv.join().unwrap();
    }
    let srv = tcp_server6(&a5.netns, 81);
    tcp_seen6(&host, "[::1]:8091").expect_err("[fd88:6::1]:8091 served on [::1]");
    assert_eq!(
        tcp_seen6(&host, "[fd88:6::1]:8091").expect("[fd88:6::1]:8091"),
        "fd88:6::1"
    );
    srv.join().unwrap();
    a5.run("DEL", &pc).ok();
    // An IPv6 hostIP on a network without IPv6: refused, nothing made.
    let before = (veths(&sb), cni_rows(&sb));
    let a6 = Att::new(&mut sb.host, "d6");
    let mut v4 = conf(&sb, "net4only", json!({"subnet": "10.88.9.0/24"}));
    v4["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 8093, "containerPort": 80, "hostIP": "::1"}
    ]});
    let o = a6.run("ADD", &v4);
    assert_ne!(o.status, 0, "{o:?}");
    assert!(
        o.out["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no IPv6 address"),
        "{o:?}"
    );
    assert_eq!((veths(&sb), cni_rows(&sb)), before);
    // (The network the ADD would have made went with it.)
    let nets = sb.host.pier_ok(&["network", "ls"]);
    assert!(!nets.contains("net4only"), "{nets}");
    // The same network asked for without IPv6: refused, nothing made.
    let before = veths(&sb);
    let a4 = Att::new(&mut sb.host, "d4");
    let o = a4.run("ADD", &conf(&sb, "net6", json!({"subnet": "10.88.6.0/24"})));
    assert_eq!(o.code(), 100, "{o:?}");
    assert_eq!(veths(&sb), before);
    for (a, cf) in [(&a1, &c), (&a2, &old), (&a3, &other)] {
        a.run("DEL", cf).ok();
    }
    assert!(cni_rows(&sb).is_empty(), "{:?}", cni_rows(&sb));
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    sb.assert_firewalls_untouched();
}

/// A TCP server on `[::]:port` in `ns` for one connection, answering with
/// the peer address it saw.
fn tcp_server6(ns: &std::path::Path, port: u16) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in(ns, move || {
        use std::io::Write;
        let l =
            pier_tests::net::bind_retrying(|| std::net::TcpListener::bind(("::", port))).unwrap();
        tx.send(()).unwrap();
        if let Ok((mut s, peer)) = l.accept() {
            let _ = write!(s, "{}", peer.ip());
        }
    });
    rx.recv_timeout(IO_TIMEOUT).expect("server ready");
    h
}

/// What the server at `dst` saw `ns` connect from.
fn tcp_seen6(ns: &std::path::Path, dst: &str) -> std::io::Result<String> {
    let dst: std::net::SocketAddr = dst.parse().unwrap();
    in_ns(ns, move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&dst, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}
