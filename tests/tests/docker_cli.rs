//! The real docker CLI as a client of pier's API (`DOCKER_HOST` = the
//! agent's socket): version negotiation, networks, containers, and strict
//! input (curl-like raw requests) — with both CLIs this machine has (Debian's
//! 20.10 and the 28.x one), each against its own agent.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pier_tests::{TestHost, net::firewall_snapshot, require_root};
use serde_json::Value;

fn clis() -> Vec<&'static str> {
    ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect()
}

struct Cli<'a> {
    bin: &'a str,
    host: &'a TestHost,
    cfg: PathBuf,
}

impl Cli<'_> {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(self.bin)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.host.socket().display()),
            )
            .env("DOCKER_CONFIG", &self.cfg)
            .args(args)
            .output()
            .expect("spawn docker")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "{} {args:?}: {}\n{}",
            self.bin,
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
    fn fails(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            !o.status.success(),
            "{} {args:?} succeeded: {}",
            self.bin,
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// One raw HTTP/1.1 request on the agent's socket: (status, body).
fn raw(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn the_docker_cli_manages_pier() {
    require_root!();
    if clis().is_empty() {
        eprintln!("skipped: no docker CLI installed (cargo xtask setup installs docker.io)");
        return;
    }
    for bin in clis() {
        let fw_machine = firewall_snapshot(None);
        let mut h = TestHost::new();
        let fw_host = firewall_snapshot(Some(&h.host_ns));
        h.start_agent(&[]);
        let d = Cli {
            bin,
            host: &h,
            cfg: h.dir.join("docker-cli"),
        };
        let v = d.ok(&[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Version}}",
        ]);
        assert!(v.starts_with("1.44 "), "{bin}: {v}");
        // Networks.
        let id = d.ok(&[
            "network",
            "create",
            "--subnet",
            "10.60.0.0/24",
            "--gateway",
            "10.60.0.1",
            "mynet",
        ]);
        assert_eq!(id.len(), 64, "{id}");
        let ls = d.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
        assert_eq!(
            ls.lines().collect::<Vec<_>>(),
            ["bridge bridge", "host host", "mynet bridge", "none null"],
            "{bin}"
        );
        let ls = d.ok(&["network", "ls", "-q", "--filter", "name=myn"]);
        assert_eq!(ls, &id[..12]);
        let ls = d.ok(&[
            "network",
            "ls",
            "--filter",
            "type=custom",
            "--format",
            "{{.Name}}",
        ]);
        assert_eq!(ls, "mynet");
        let e = d.fails(&["network", "ls", "--filter", "colour=red"]);
        assert!(e.contains("invalid filter 'colour'"), "{e}");
        let sub = d.ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            "mynet",
        ]);
        assert_eq!(sub, "10.60.0.0/24");
        let before = h.world();
        let e = d.fails(&["network", "create", "--subnet", "300.1.1.0/24", "bad"]);
        assert!(
            e.contains("Subnet") && e.contains("300.1.1.0/24"),
            "{bin}: {e}"
        );
        let e = d.fails(&["network", "create", "--subnet", "fd00:61::/64", "bad"]);
        assert!(e.contains("needs EnableIPv6"), "{e}");
        let e = d.fails(&["network", "create", "-d", "overlay", "bad"]);
        assert!(e.contains("bridge networks only"), "{e}");
        assert_eq!(h.world(), before, "a refused create changed something");
        // Dual stack through Docker's API: EnableIPv6 and both pools.
        d.ok(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "10.61.0.0/24",
            "--subnet",
            "fd00:61::/64",
            "dual",
        ]);
        let v = d.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.EnableIPv6}} {{(index .IPAM.Config 1).Subnet}} {{(index .IPAM.Config 1).Gateway}}",
            "dual",
        ]);
        assert_eq!(v, "true fd00:61::/64 fd00:61::1", "{bin}");
        d.ok(&["network", "rm", "dual"]);
        // Containers pier ran, seen and changed by docker.
        h.pier_ok(&[
            "run", "-d", "--name", "c1", "-p", "8081:80", "--", "sleep", "300",
        ]);
        let ps = d.ok(&["ps", "-a", "--format", "{{.Names}}|{{.Status}}|{{.Ports}}"]);
        assert!(ps.starts_with("c1|Up "), "{bin}: {ps}");
        assert!(ps.ends_with("|0.0.0.0:8081->80/tcp"), "{bin}: {ps}");
        let ip = d.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "c1"]);
        assert_eq!(ip, "172.17.0.2");
        d.ok(&[
            "network",
            "connect",
            "--ip",
            "10.60.0.9",
            "--alias",
            "db",
            "mynet",
            "c1",
        ]);
        let ip = d.ok(&[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"mynet\").IPAddress}}",
            "c1",
        ]);
        assert_eq!(ip, "10.60.0.9");
        let e = d.fails(&["network", "rm", "mynet"]);
        assert!(e.contains("active endpoints"), "{e}");
        d.ok(&["network", "disconnect", "mynet", "c1"]);
        let e = d.fails(&["run", "--rm", "busybox", "true"]);
        assert!(e.contains("pier runs no images"), "{bin}: {e}");
        d.ok(&["stop", "c1"]);
        d.ok(&["start", "c1"]);
        d.ok(&["rm", "-f", "c1"]);
        assert_eq!(d.ok(&["ps", "-aq"]), "");
        d.ok(&["network", "rm", "mynet"]);
        d.ok(&["network", "create", "spare"]);
        let p = d.ok(&["network", "prune", "-f"]);
        assert!(p.contains("spare"), "{p}");
        assert_eq!(firewall_snapshot(Some(&h.host_ns)), fw_host);
        assert_eq!(firewall_snapshot(None), fw_machine);
    }
}

#[test]
fn api_input_is_strict_and_versioned() {
    require_root!();
    let mut h = TestHost::new();
    h.start_agent(&[]);
    let sock = h.socket();
    let before = h.world();
    for (path, body, want) in [
        (
            "/networks/create",
            r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"300.1.1.0/24"}]}}"#,
            "IPAM.Config[0].Subnet",
        ),
        ("/networks/create", r#"{"Name":"x","Bogus":true}"#, "Bogus"),
        (
            "/networks/create",
            r#"{"Name":"x","Internal":"yes"}"#,
            "Internal",
        ),
        ("/networks/create", "", "empty request body"),
        (
            "/containers/create?name=web",
            r#"{"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"99999"}]}}}"#,
            "HostConfig",
        ),
        ("/containers/create", r#"{"Ports":["99999:80"]}"#, "99999"),
        (
            "/containers/create",
            r#"{"Image":"nginx"}"#,
            "pier runs no images",
        ),
        (
            "/networks/bridge/connect",
            r#"{"Container":"x","EndpointConfig":{"Links":["a"]}}"#,
            "Links",
        ),
        (
            "/networks/bridge/disconnect",
            r#"{"Container":"x","Extra":1}"#,
            "Extra",
        ),
    ] {
        let (status, text) = raw(&sock, "POST", path, body);
        assert_eq!(status, 400, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(want), "{path} {body}: {msg}");
    }
    assert_eq!(h.world(), before, "a refused request changed something");
    // ?name= is the container's name.
    let (status, text) = raw(
        &sock,
        "POST",
        "/v1.41/containers/create?name=web",
        r#"{"Detach":true}"#,
    );
    assert_eq!(status, 201, "{text}");
    assert!(
        h.pier_ok(&["ps", "-a"]).contains(" web"),
        "{}",
        h.pier_ok(&["ps", "-a"])
    );
    // Versions: in range is routed, out of range is Docker's 400.
    let (status, _) = raw(&sock, "GET", "/v1.24/networks", "");
    assert_eq!(status, 200);
    let (status, text) = raw(&sock, "GET", "/v1.99/networks", "");
    assert_eq!(status, 400);
    assert!(text.contains("too new"), "{text}");
    let (status, text) = raw(&sock, "GET", "/_ping", "");
    assert_eq!((status, text.as_str()), (200, "OK"));
    let mut s = UnixStream::connect(&sock).unwrap();
    write!(
        s,
        "GET /_ping HTTP/1.1\r\nHost: pier\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.to_ascii_lowercase().contains("api-version: 1.44"),
        "{out}"
    );
}
