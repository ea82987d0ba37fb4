//! The Docker flags people type, through the CLI and a real agent:
//! ephemeral and ranged host ports (also under a race), `--expose`/`-P`,
//! `--add-host` (with `host-gateway`), `--mac-address`, `restart`,
//! `--filter` and `--format` (Go templates) on `ps`, `network ls`,
//! `inspect -f` and `network inspect -f`, and their bad input.
mod agent_util;

use std::net::Ipv4Addr;

use agent_util::*;
use pier_tests::{host::HOST_UPLINK_IP, require_root};

fn ephemeral_range() -> (u16, u16) {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// `pier port NAME` as (container port/proto, host ip, host port).
fn ports(s: &Sandbox, name: &str) -> Vec<(String, String, u16)> {
    s.host
        .pier_ok(&["port", name])
        .lines()
        .map(|l| {
            let (c, h) = l.split_once(" -> ").unwrap();
            let (ip, p) = h.rsplit_once(':').unwrap();
            (c.to_string(), ip.to_string(), p.parse().unwrap())
        })
        .collect()
}

/// Each `pier run -d ARGS -- true` fails with one `Error:` line containing
/// its text, and leaves the host's world as it was.
fn run_refused(s: &Sandbox, cases: &[(Vec<&str>, &str)]) {
    let before = s.host.world();
    for (args, want) in cases {
        let mut a = vec!["run", "-d"];
        a.extend(args.iter().copied());
        a.extend(["--", "true"]);
        let e = s.host.pier_err(&a);
        assert!(
            e.starts_with("Error: ") && e.contains(want) && e.trim_end().lines().count() == 1,
            "{args:?}: {e}"
        );
    }
    assert_eq!(s.host.world(), before);
}

#[test]
fn ephemeral_and_ranged_host_ports() {
    require_root!();
    let s = Sandbox::new(&[]);
    let (lo, hi) = ephemeral_range();
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "e1",
        "-p",
        "80",
        "-p",
        "127.0.0.1::81",
        "--",
        "sleep",
        "300",
    ]);
    let p = ports(&s, "e1");
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0.as_str(), p[0].1.as_str()), ("80/tcp", "0.0.0.0"));
    assert_eq!((p[1].0.as_str(), p[1].1.as_str()), ("81/tcp", "127.0.0.1"));
    for (_, _, hp) in &p {
        assert!((lo..=hi).contains(hp), "{hp} outside {lo}-{hi}");
    }
    // The picked port is served from outside.
    let srv = tcp_server(&s.ns_of("e1"), 80, 1);
    let a = tcp_ask(
        &s.outside_ns(),
        &format!("{HOST_UPLINK_IP}:{}", p[0].2),
        "hi",
    )
    .expect("picked port");
    assert!(a.text.ends_with("|hi"), "{a:?}");
    srv.join().unwrap();
    // A host range for one port: the first free one.
    s.host.pier_ok(&[
        "run", "-d", "--name", "r1", "-p", "9100:80", "--", "sleep", "300",
    ]);
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "r2",
        "-p",
        "9100-9105:80",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(ports(&s, "r2")[0].2, 9101);
    let before = s.host.world();
    let e = s.host.pier_err(&[
        "run",
        "-d",
        "-p",
        "9100-9101:80",
        "-p",
        "9100-9101:81",
        "--",
        "true",
    ]);
    assert!(e.contains("no free port"), "{e}");
    let e = s.host.pier_err(&["run", "-d", "-p", "80-81", "--", "true"]);
    assert!(e.contains("needs its host ports"), "{e}");
    assert_eq!(s.host.world(), before);
    // --expose and -P.
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "pa",
        "--expose",
        "90",
        "--expose",
        "91-92/udp",
        "-p",
        "8090:90",
        "-P",
        "--",
        "sleep",
        "300",
    ]);
    let p = ports(&s, "pa");
    let names: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["90/tcp", "91/udp", "92/udp"], "{p:?}");
    assert_eq!(p[0].2, 8090, "-p wins over -P for 90");
    let v = s.inspect("pa");
    assert!(v["Config"]["ExposedPorts"]["91/udp"].is_object(), "{v}");
    s.assert_firewalls_untouched();
}

#[test]
fn twenty_parallel_ephemeral_runs_get_twenty_ports() {
    require_root!();
    let s = Sandbox::new(&[]);
    let host = &s.host;
    let picked: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                sc.spawn(move || {
                    let n = format!("par{i}");
                    host.pier_ok(&["run", "-d", "--name", &n, "-p", "80", "--", "sleep", "300"]);
                    n
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| ports(&s, &h.join().unwrap())[0].2)
            .collect()
    });
    let mut uniq = picked.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 20, "{picked:?}");
}

#[test]
fn add_host_mac_address_and_restart() {
    require_root!();
    let s = Sandbox::new(&[]);
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8081:80",
        "--add-host",
        "db:10.0.0.5",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--mac-address",
        "02:42:ac:11:00:99",
        "--",
        "sleep",
        "300",
    ]);
    // The file the container's /etc/hosts is bind-mounted from.
    let id = s.host.container_id("web");
    let hosts =
        std::fs::read_to_string(s.host.run_dir().join("containers").join(&id).join("hosts"))
            .unwrap();
    assert!(hosts.contains("10.0.0.5\tdb\n"), "{hosts}");
    assert!(
        hosts.contains("172.17.0.1\thost.docker.internal\n"),
        "{hosts}"
    );
    let v = s.inspect("web");
    assert_eq!(
        v["HostConfig"]["ExtraHosts"],
        serde_json::json!(["db:10.0.0.5", "host.docker.internal:172.17.0.1"])
    );
    let link = s.host.in_container("web", &["ip", "link", "show", "eth0"]);
    assert!(link.contains("02:42:ac:11:00:99"), "{link}");
    assert_eq!(v["NetworkSettings"]["MacAddress"], "02:42:ac:11:00:99");
    // restart: stopped (unpublished) and started again.
    let pid0 = s.inspect("web")["State"]["Pid"].clone();
    s.host.pier_ok(&["restart", "web"]);
    let v = s.inspect("web");
    assert_eq!(v["State"]["Status"], "running");
    assert_ne!(v["State"]["Pid"], pid0);
    assert_eq!(s.port_entries().len(), 1);
    // Bad input: one error line, nothing made.
    run_refused(
        &s,
        &[
            (vec!["--add-host", "db"], "bad format for add-host"),
            (vec!["--add-host", "db:10.0.0.300"], "invalid IP address"),
            (
                vec!["--add-host", "bad_name!:10.0.0.1"],
                "invalid --add-host",
            ),
            (
                vec!["--mac-address", "01:00:5e:00:00:01"],
                "not a unicast address",
            ),
            (vec!["--mac-address", "02:42"], "invalid MAC address"),
            (
                vec!["--network", "host", "--mac-address", "02:42:ac:11:00:98"],
                "needs a bridge network",
            ),
            (vec!["--expose", "70000"], "out of range"),
            (vec!["--expose", "80/sctp"], "unknown protocol"),
        ],
    );
}

#[test]
fn filters_and_formats() {
    require_root!();
    let s = Sandbox::new(&[]);
    let h = &s.host;
    h.pier_ok(&[
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "--label",
        "env=test",
        "mynet",
    ]);
    h.pier_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "mynet",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "300",
    ]);
    h.pier_ok(&[
        "run", "-d", "--name", "worker", "--expose", "7000", "--", "sleep", "300",
    ]);
    h.pier_ok(&["run", "-d", "--name", "done", "--", "true"]);
    // `done`'s command ends by itself.
    let t0 = std::time::Instant::now();
    while !h
        .pier_ok(&["ps", "-a", "--filter", "status=exited", "-q"])
        .contains(&h.container_id("done")[..12])
    {
        assert!(t0.elapsed().as_secs() < 10, "done never exited");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let f = |args: &[&str]| {
        h.pier_ok(args)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        f(&[
            "network",
            "ls",
            "--filter",
            "driver=bridge",
            "--format",
            "{{.Name}}"
        ]),
        ["bridge", "mynet"]
    );
    assert_eq!(
        f(&[
            "network",
            "ls",
            "--filter",
            "type=builtin",
            "--format",
            "{{.Name}}"
        ]),
        ["bridge", "host", "none"]
    );
    assert_eq!(
        f(&[
            "network",
            "ls",
            "--filter",
            "label=env=test",
            "--format",
            "{{.Name}} {{.Driver}}"
        ]),
        ["mynet bridge"]
    );
    assert_eq!(
        f(&[
            "network",
            "ls",
            "-f",
            "name=my",
            "-f",
            "name=hos",
            "--format",
            "{{.Name}}"
        ]),
        ["host", "mynet"]
    );
    let t = f(&[
        "network",
        "ls",
        "--filter",
        "name=mynet",
        "--format",
        "table {{.ID}}\t{{.Name}}",
    ]);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(
        t[0].starts_with("NETWORK ID") && t[0].contains("NAME"),
        "{t:?}"
    );
    assert!(t[1].ends_with("mynet"), "{t:?}");
    assert_eq!(
        f(&["ps", "--format", "{{.Names}}", "--filter", "name=web"]),
        ["web"]
    );
    assert_eq!(
        f(&["ps", "--filter", "network=mynet", "--format", "{{.Names}}"]),
        ["web"]
    );
    assert_eq!(
        f(&["ps", "--filter", "publish=8080", "--format", "{{.Names}}"]),
        ["web"]
    );
    assert_eq!(
        f(&["ps", "--filter", "expose=7000", "--format", "{{.Names}}"]),
        ["worker"]
    );
    assert_eq!(
        f(&[
            "ps",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}} {{.State}}"
        ]),
        ["done exited"]
    );
    assert_eq!(
        f(&[
            "ps",
            "--format",
            "{{.Names}}|{{.Ports}}",
            "--filter",
            "name=web"
        ]),
        ["web|0.0.0.0:8080->80/tcp"]
    );
    let ip: Ipv4Addr = h
        .pier_ok(&[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"mynet\").IPAddress}}",
            "web",
        ])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(ip, Ipv4Addr::new(10, 61, 0, 2));
    assert_eq!(
        h.pier_ok(&[
            "inspect",
            "-f",
            "{{.Name}} {{.State.Status}}",
            "web",
            "worker"
        ]),
        "/web running\n/worker running\n"
    );
    assert_eq!(
        h.pier_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            "mynet"
        ]),
        "10.61.0.0/24\n"
    );
    assert_eq!(
        h.pier_ok(&["network", "inspect", "-f", "{{json .Labels}}", "mynet"]),
        "{\"env\":\"test\"}\n"
    );
    // Bad input.
    for (args, want) in [
        (
            vec!["ps", "--filter", "colour=red"],
            "invalid filter 'colour'",
        ),
        (
            vec!["ps", "--filter", "status=sleepy"],
            "invalid filter 'status=sleepy'",
        ),
        (vec!["ps", "--filter", "nameweb"], "bad format of filter"),
        (
            vec!["network", "ls", "--filter", "type=other"],
            "custom or builtin",
        ),
        (
            vec!["network", "ls", "--format", "{{.Name"],
            "template parsing error",
        ),
        (
            vec!["inspect", "-f", "{{nosuch .Name}}", "web"],
            "template parsing error",
        ),
    ] {
        let e = h.pier_err(&args);
        assert!(
            e.starts_with("Error: ") && e.contains(want),
            "{args:?}: {e}"
        );
    }
}

/// What a container's processes see as `/etc/FILE` (through its mounts).
fn etc_file(s: &Sandbox, name: &str, file: &str) -> String {
    s.host
        .pier_ok(&["exec", name, "cat", &format!("/etc/{file}")])
}

#[test]
fn dns_search_dns_option_and_env() {
    require_root!();
    let s = Sandbox::new(&[]);
    s.host.pier_ok(&["network", "create", "usernet"]);
    let dns_flags = [
        "--dns-search",
        "corp.example",
        "--dns-search",
        "lab.example",
        "--dns-option",
        "timeout:2",
        "--dns-option",
        "attempts:3",
    ];
    // Every network type: the default bridge, a user network (the embedded
    // resolver keeps ndots:0), none and host.
    for (name, net) in [
        ("b", "bridge"),
        ("u", "usernet"),
        ("n", "none"),
        ("h", "host"),
    ] {
        let mut a = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--dns",
            "192.0.2.53",
        ];
        a.extend(dns_flags);
        a.extend(["--", "sleep", "300"]);
        let out = s.host.pier(&a);
        assert!(out.status.success(), "{net}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "{net}: no warning"
        );
        let r = etc_file(&s, name, "resolv.conf");
        let want = if net == "usernet" {
            "nameserver 127.0.0.11\nsearch corp.example lab.example\noptions ndots:0 timeout:2 attempts:3\n"
        } else {
            "nameserver 192.0.2.53\nsearch corp.example lab.example\noptions timeout:2 attempts:3\n"
        };
        assert_eq!(r, want, "{net}");
        let v = s.inspect(name);
        assert_eq!(
            v["HostConfig"]["DnsSearch"],
            serde_json::json!(["corp.example", "lab.example"]),
            "{net}"
        );
        assert_eq!(
            v["HostConfig"]["DnsOptions"],
            serde_json::json!(["timeout:2", "attempts:3"]),
            "{net}"
        );
    }
    // A host-mode container without DNS flags keeps the host's own file.
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "h0",
        "--network",
        "host",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(
        etc_file(&s, "h0", "resolv.conf"),
        std::fs::read_to_string("/etc/resolv.conf").unwrap()
    );
    assert_eq!(s.inspect("h0")["ResolvConfPath"], "/etc/resolv.conf");
    // `--dns-search .`: no search line at all.
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "dot",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        ".",
        "--",
        "sleep",
        "300",
    ]);
    assert!(
        !etc_file(&s, "dot", "resolv.conf").contains("search"),
        "{}",
        etc_file(&s, "dot", "resolv.conf")
    );
    // An ndots of the container's own replaces the embedded resolver's ndots:0.
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "nd",
        "--network",
        "usernet",
        "--dns-option",
        "ndots:3",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(
        etc_file(&s, "nd", "resolv.conf"),
        "nameserver 127.0.0.11\noptions ndots:3\n"
    );

    // -e: the main command's environment and exec's; a later one wins; a bare
    // KEY takes the CLI's value, an unset bare KEY is left out.
    let out = s.host.pier_with_env(
        &[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "-e",
            "A=2",
            "-e",
            "FROM_SHELL",
            "-e",
            "UNSET_HERE",
            "--",
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_SHELL|${UNSET_HERE-unset}|$PATH\"",
        ],
        &[("FROM_SHELL", "shell value")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "2|x=y|shell value|unset|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    let envf = s.host.run_dir().join("envfile");
    std::fs::write(&envf, "# a comment\n\nFILE_A=from file\nA=file\n").unwrap();
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "envy",
        "--env-file",
        envf.to_str().unwrap(),
        "-e",
        "A=flag",
        "-e",
        "PATH=/bin",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(
        s.host
            .pier_ok(&["exec", "envy", "sh", "-c", "echo \"$FILE_A|$A|$PATH\""])
            .trim_end(),
        "from file|flag|/bin"
    );
    assert_eq!(
        s.inspect("envy")["Config"]["Env"],
        serde_json::json!(["FILE_A=from file", "A=flag", "PATH=/bin"])
    );

    // Bad input: one error line, nothing made.
    run_refused(
        &s,
        &[
            (vec!["--dns-search", "bad_domain!"], "is not a valid domain"),
            (vec!["--dns-option", "two words"], "invalid DNS option"),
            (vec!["-e", "=x"], "invalid environment variable: =x"),
            (
                vec!["--network", "container:b", "--dns-search", "x.example"],
                "conflicting options: dns search and the network mode",
            ),
            (
                vec!["--network", "container:b", "--dns-option", "ndots:1"],
                "conflicting options: dns options and the network mode",
            ),
            (vec!["--env-file", "/nonexistent/env"], "/nonexistent/env"),
        ],
    );
}

#[test]
fn port_format_and_completions() {
    require_root!();
    let s = Sandbox::new(&[]);
    s.host.pier_ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "-p",
        "8081:80",
        "-p",
        "127.0.0.1:8082:81/udp",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(
        s.host
            .pier_ok(&["port", "w", "--format", "{{.HostIP}}:{{.HostPort}}"]),
        "0.0.0.0:8081\n127.0.0.1:8082\n"
    );
    assert_eq!(
        s.host.pier_ok(&[
            "port",
            "w",
            "81/udp",
            "--format",
            "{{.PrivatePort}}/{{.Type}}={{.HostPort}}"
        ]),
        "81/udp=8082\n"
    );
    assert_eq!(
        s.host.pier_ok(&[
            "port",
            "w",
            "--format",
            "table {{.PrivatePort}}\t{{.HostIP}}"
        ]),
        "PRIVATEPORT   HOST IP\n80            0.0.0.0\n81            127.0.0.1\n"
    );
    let json: Vec<serde_json::Value> = s
        .host
        .pier_ok(&["port", "w", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        json[0],
        serde_json::json!({"PrivatePort": 80, "Type": "tcp", "HostIP": "0.0.0.0", "HostPort": 8081})
    );
    let e = s.host.pier_err(&["port", "w", "--format", "{{.HostPort"]);
    assert!(e.starts_with("Error: template parsing error"), "{e}");
    let e = s
        .host
        .pier_err(&["port", "w", "90", "--format", "{{.HostPort}}"]);
    assert_eq!(
        e.trim_end(),
        "Error: No public port '90/tcp' published for w"
    );

    // Completions: each shell's script names the subcommands and run's flags.
    for (shell, marker) in [
        ("bash", "complete -F _pier"),
        ("zsh", "#compdef pier"),
        ("fish", "complete -c pier"),
    ] {
        let out = s.host.pier_ok(&["completion", shell]);
        assert!(out.contains(marker), "{shell}: {out:.300}");
        for w in ["network", "dns-search", "publish-all", "add-host"] {
            assert!(out.contains(w), "{shell} completion lacks {w}");
        }
    }
    // bash parses its script.
    let script = s.host.run_dir().join("pier.bash");
    std::fs::write(&script, s.host.pier_ok(&["completion", "bash"])).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    let e = s.host.pier_err(&["completion", "tcsh"]);
    assert!(e.contains("invalid value 'tcsh'"), "{e}");
}
