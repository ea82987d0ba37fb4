//! `cargo xtask demo`: pier's main job end to end, in a sandbox of namespaces.
//!
//! A "host" namespace runs the agent, an "outside" namespace plays the internet.
//! Two containers publish 8081 and 8082; a user-defined network's containers reach
//! each other by name; networks are isolated; no iptables rule appears. Every step
//! prints its result; the sandbox is removed at the end, also on failure.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::ExitCode,
    time::Duration,
};

use pier_tests::{
    TestHost,
    host::{HOST_UPLINK_IP, pier_bin},
    net::firewall_snapshot,
};

struct Demo {
    host: TestHost,
    failures: usize,
}

impl Demo {
    fn step(&mut self, what: &str, ok: bool, detail: &str) {
        let mark = if ok { "ok  " } else { "FAIL" };
        println!(
            "[{mark}] {what}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!("\n       {}", detail.replace('\n', "\n       "))
            }
        );
        if !ok {
            self.failures += 1;
        }
    }

    /// Run a pier command, show it like a shell session, return (success, stdout).
    fn pier(&self, args: &[&str]) -> (bool, String) {
        println!("$ pier {}", args.join(" "));
        let out = self.host.pier(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        for l in stdout.lines().chain(stderr.lines()) {
            println!("  {l}");
        }
        (out.status.success(), stdout)
    }
}

/// GET / on `addr` from the outside namespace; the HTTP status line.
fn http_get_from(ns: &str, addr: &str) -> Result<String, String> {
    let addr = addr.to_string();
    TestHost::in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    })
}

/// The address of `container` on `network`, from `pier inspect` (Docker's shape).
fn container_ip(host: &TestHost, container: &str, network: &str) -> String {
    let out = host.pier(&["inspect", container]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn main() -> ExitCode {
    if !pier_tests::is_root() {
        eprintln!("the demo builds network namespaces: run it as root");
        return ExitCode::FAILURE;
    }
    println!("pier demo, using {}", pier_bin().display());
    let fw_before = firewall_snapshot(None);
    let mut host = TestHost::new();
    println!(
        "sandbox: host namespace {} (uplink {HOST_UPLINK_IP}), outside namespace {}",
        host.host_ns, host.outside_ns
    );
    let fw_host_before = firewall_snapshot(Some(&host.host_ns));
    let _agent = host.start_agent(&[]);
    let mut d = Demo { host, failures: 0 };

    let (ok, ls) = d.pier(&["network", "ls"]);
    let all = ["bridge", "host", "none"].iter().all(|n| ls.contains(n));
    d.step(
        "the agent made the default networks bridge, host, none",
        ok && all,
        "",
    );

    for (name, port) in [("web1", "8081"), ("web2", "8082")] {
        let spec = format!("{port}:8080");
        let (ok, _) = d.pier(&[
            "run",
            "-d",
            "--name",
            name,
            "-p",
            &spec,
            "--",
            "python3",
            "-m",
            "http.server",
            "8080",
        ]);
        d.step(
            &format!("{name} publishes host port {port} to its 8080"),
            ok,
            "",
        );
    }
    std::thread::sleep(Duration::from_millis(800));
    for port in ["8081", "8082"] {
        let r = http_get_from(&d.host.outside_ns, &format!("{HOST_UPLINK_IP}:{port}"));
        let ok = matches!(&r, Ok(l) if l.contains("200"));
        d.step(
            &format!("a client outside the host reaches {HOST_UPLINK_IP}:{port}"),
            ok,
            &format!("{r:?}"),
        );
    }

    let (ok, _) = d.pier(&["network", "create", "mynet"]);
    d.step("user-defined network mynet created", ok, "");
    for name in ["tomcat81", "tomcat82"] {
        let (ok, _) = d.pier(&["run", "-d", "--name", name, "--network", "mynet"]);
        d.step(&format!("{name} runs on mynet"), ok, "");
    }
    let (ok, _) = d.pier(&["exec", "tomcat81", "--", "ping", "-c1", "-W2", "tomcat82"]);
    d.step("tomcat81 reaches tomcat82 by name on mynet", ok, "");

    let ip = container_ip(&d.host, "tomcat82", "mynet");
    let (reached, _) = d.pier(&["exec", "web1", "--", "ping", "-c1", "-W1", &ip]);
    d.step(
        "web1 on the default bridge cannot reach tomcat82 on mynet (isolation)",
        !reached && !ip.is_empty(),
        &format!("tomcat82 is {ip}"),
    );

    let (ok, _) = d.pier(&["system", "reset", "-f"]);
    d.step(
        "pier system reset removes everything the agent made",
        ok,
        "",
    );
    let host_fw_same = firewall_snapshot(Some(&d.host.host_ns)) == fw_host_before;
    d.step(
        "no iptables or nftables rule was created in the host namespace",
        host_fw_same,
        "",
    );

    let failures = d.failures;
    drop(d);
    let fw_same = firewall_snapshot(None) == fw_before;
    println!(
        "[{}] the machine's own firewall is unchanged; sandbox removed",
        if fw_same { "ok  " } else { "FAIL" }
    );
    if failures == 0 && fw_same {
        println!("demo: every step passed");
        ExitCode::SUCCESS
    } else {
        println!("demo: {failures} step(s) failed");
        ExitCode::FAILURE
    }
}
