//! pier's CNI plugin under real runtimes, each inside a TestHost's host
//! namespace with test-only config dirs: a libcni runner (Debian's libcni
//! 1.1.2, built at test time) doing ADD → CHECK → DEL chained after
//! `loopback`; podman 4.3.1's CNI backend (`-p` reached from the outside
//! with the client's address kept, names, two isolated networks, `rm -f`
//! leaving nothing); containerd 1.6's `ctr run --cni`. No netfilter rule.
mod agent_util;

use std::{path::Path, process::Command};

use agent_util::*;
use pier_tests::{
    cni::{self, Containerd, Podman},
    host::{HOST_UPLINK_IP, OUTSIDE_IP},
    require_root,
};
use serde_json::{Value, json};

macro_rules! require {
    ($why:expr) => {
        require_root!();
        if let Some(why) = $why {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn pier_rows(sb: &Sandbox) -> Vec<Value> {
    sb.host
        .pier_ok(&["ps", "-a", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn veths(sb: &Sandbox) -> Vec<String> {
    sb.host
        .host_link_names()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

fn file_text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[test]
fn libcni_runner_add_check_del_after_loopback() {
    require!(cni::libcni_missing());
    let mut sb = Sandbox::new(&[]);
    let runner = cni::build_libcni_runner(&sb.host.dir);
    let bin = cni::bin_dir(&sb.host.dir);
    let list = sb.host.dir.join("10-pier.conflist");
    std::fs::write(
        &list,
        json!({
            "cniVersion": "1.0.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "libcninet",
            "plugins": [
                {"type": "loopback"},
                {"type": "pier", "subnet": "10.86.0.0/24", "subnet6": "fd86::/64",
                 "socket": sb.host.socket(), "capabilities": {"portMappings": true}},
            ],
        })
        .to_string(),
    )
    .unwrap();
    let ns = sb.host.add_netns("lc");
    let nsp = ns_path(&ns);
    let cache = sb.host.dir.join("cni-cache");
    let run = |verb: &str, extra: &[&str]| {
        let o = Command::new(&runner)
            .arg(verb)
            .arg(&list)
            .arg(&nsp)
            .arg("libcni-c1")
            .arg("eth0")
            .arg(&bin)
            .arg(&cache)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "libcni {verb}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            sb.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let pm = r#"[{"hostPort": 8083, "containerPort": 8080, "protocol": "tcp"}]"#;
    let r: Value = serde_json::from_str(&run("add", &[pm])).unwrap();
    // loopback's interface first, pier's after it.
    assert_eq!(r["cniVersion"], "1.0.0", "{r}");
    assert_eq!(r["interfaces"][0]["name"], "lo", "{r}");
    assert_eq!(r["interfaces"][2]["name"], "eth0", "{r}");
    let ip = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == "10.86.0.2/24")
        .unwrap_or_else(|| panic!("no 10.86.0.2/24 in {r}"));
    assert_eq!(ip["interface"], 2, "{r}");
    assert_eq!(ip["gateway"], "10.86.0.1");
    // Dual stack: libcni parsed both families; the default routes of both.
    let ip6 = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == "fd86::2/64")
        .unwrap_or_else(|| panic!("no fd86::2/64 in {r}"));
    assert_eq!(ip6["interface"], 2, "{r}");
    assert_eq!(ip6["gateway"], "fd86::1");
    let routes = r["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({"dst": "::/0", "gw": "fd86::1"})),
        "{r}"
    );
    let inside = Command::new("nsenter")
        .arg(format!("--net={}", nsp.display()))
        .args(["--", "ip", "-6", "route", "show", "default"])
        .output()
        .unwrap();
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(inside.contains("default via fd86::1 dev eth0"), "{inside}");
    let srv = tcp_server(&nsp, 8080, 1);
    let a = tcp_ask(
        &sb.outside_ns(),
        &format!("{HOST_UPLINK_IP}:8083"),
        "libcni",
    )
    .unwrap();
    assert!(a.text.ends_with("|libcni"), "{a:?}");
    assert_eq!(a.seen_ip(), OUTSIDE_IP);
    srv.join().unwrap();
    run("check", &[pm]);
    assert_eq!(pier_rows(&sb).len(), 1);
    run("del", &[pm]);
    assert!(pier_rows(&sb).is_empty(), "{:?}", pier_rows(&sb));
    assert!(veths(&sb).is_empty());
    // A DEL again (the runtime retrying) is fine.
    run("del", &[pm]);
    sb.assert_firewalls_untouched();
}

#[test]
fn podman_cni_backend_ports_names_isolation_and_rm() {
    require!(cni::podman_missing());
    let machine_conflist = Path::new("/etc/cni/net.d/87-podman-bridge.conflist");
    let machine_before = file_text(machine_conflist);
    let sb = Sandbox::new(&[]);
    let p = Podman::new(&sb.host);
    for (file, name, subnet) in [
        ("10-piernet.conflist", "piernet", "10.87.0.0/24"),
        ("11-piernet2.conflist", "piernet2", "10.87.1.0/24"),
    ] {
        p.add_conflist(
            file,
            &json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{
                    "type": "pier",
                    "subnet": subnet,
                    "socket": sb.host.socket(),
                    "portsHeldByRuntime": true,
                    "capabilities": {"portMappings": true, "aliases": true},
                }],
            }),
        );
    }
    let nets = p.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.contains("piernet pier"), "{nets}");
    let ns1 = p.run("web1", &["--network", "piernet", "-p", "8081:8080"]);
    let ns2 = p.run("web2", &["--network", "piernet", "-p", "8082:8080"]);
    p.run("other", &["--network", "piernet2"]);
    assert_eq!(p.ip_of("web1", "piernet"), "10.87.0.2");
    assert_eq!(p.ip_of("web2", "piernet"), "10.87.0.3");
    assert_eq!(p.ip_of("other", "piernet2"), "10.87.1.2");
    assert_eq!(pier_rows(&sb).len(), 3, "{:?}", pier_rows(&sb));
    // -p from the outside, the client's address kept (conmon holds the
    // port; pier's dataplane rewrites before any socket sees the packet).
    for (ns, port, who) in [(&ns1, 8081, "one"), (&ns2, 8082, "two")] {
        let srv = tcp_server(ns, 8080, 1);
        let a = tcp_ask(&sb.outside_ns(), &format!("{HOST_UPLINK_IP}:{port}"), who)
            .unwrap_or_else(|e| panic!("outside → {port}: {e}\n{}", sb.log()));
        assert!(a.text.ends_with(&format!("|{who}")), "{a:?}");
        assert_eq!(a.seen_ip(), OUTSIDE_IP, "the server saw the real client");
        srv.join().unwrap();
    }
    // Names through the resolv.conf podman wrote from pier's result.
    let rc = p.ok(&["exec", "web1", "cat", "/etc/resolv.conf"]);
    assert!(rc.lines().next() == Some("nameserver 127.0.0.11"), "{rc}");
    let out = p.ok(&["exec", "web1", "nslookup", "web2"]);
    assert!(out.contains("10.87.0.3"), "{out}");
    let out = p.ok(&["exec", "web2", "nslookup", "web1"]);
    assert!(out.contains("10.87.0.2"), "{out}");
    let out = p.ok(&["exec", "web2", "nslookup", "web1.piernet"]);
    assert!(out.contains("10.87.0.2"), "{out}");
    let o = p.cmd(&["exec", "other", "nslookup", "web1"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("10.87.0.2"),
        "piernet2 resolves piernet's names"
    );
    // Isolation: same network reaches, the other network does not.
    assert!(
        p.cmd(&["exec", "web1", "ping", "-c1", "-W1", "10.87.0.3"])
            .status
            .success()
    );
    assert!(
        !p.cmd(&["exec", "other", "ping", "-c1", "-W1", "10.87.0.2"])
            .status
            .success()
    );
    assert!(
        !p.cmd(&["exec", "web1", "ping", "-c1", "-W1", "10.87.1.2"])
            .status
            .success()
    );
    // rm -f: attachments, veths, ports and namespaces gone.
    p.ok(&["rm", "-f", "-t", "0", "web1", "web2", "other"]);
    assert!(pier_rows(&sb).is_empty(), "{:?}", pier_rows(&sb));
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    assert!(!ns1.exists() && !ns2.exists());
    assert!(tcp_ask(&sb.outside_ns(), &format!("{HOST_UPLINK_IP}:8081"), "x").is_err());
    assert!(sb.port_entries().is_empty(), "{:?}", sb.port_entries());
    sb.assert_firewalls_untouched();
    drop(p);
    assert_eq!(file_text(machine_conflist), machine_before);
}

#[test]
fn containerd_ctr_run_cni_smoke() {
    require!(cni::containerd_missing());
    let sb = Sandbox::new(&[]);
    let c = Containerd::start(
        &sb.host,
        &json!({
            "cniVersion": "1.0.0",
            "name": "ctrnet",
            "plugins": [{"type": "pier", "subnet": "10.85.0.0/24", "socket": sb.host.socket()}],
        }),
    );
    let (rootfs, _) = cni::busybox_rootfs(&c.dir);
    let o = c.ctr(&[
        "run",
        "--rm",
        "--cni",
        "--rootfs",
        &rootfs.to_string_lossy(),
        "t1",
        "/bin/sh",
        "-c",
        "ip -4 -o addr show eth0; ip route; ping -c1 -W2 10.85.0.1 >/dev/null && echo gateway-ok",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "ctr run: {out}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        sb.log()
    );
    assert!(out.contains("inet 10.85.0.2/24"), "{out}");
    assert!(out.contains("default via 10.85.0.1 dev eth0"), "{out}");
    assert!(out.contains("gateway-ok"), "{out}");
    // --rm: ctr's DEL (with an empty CNI_NETNS) left nothing.
    assert!(pier_rows(&sb).is_empty(), "{:?}", pier_rows(&sb));
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    let v: Value =
        serde_json::from_str(&sb.host.pier_ok(&["network", "inspect", "ctrnet"])).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.85.0.0/24", "{v}");
    sb.assert_firewalls_untouched();
}
