//! The container runtime: processes in a container's namespaces with private
//! /etc files and hostname; exec into a running container; exit codes;
//! process identity and reaping.
use std::{
    net::Ipv4Addr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::signal::Signal;
use pier_agent::{
    runtime::{self, ProcIdentity, ProcessSpec},
    topology::{BridgeSpec, EndpointSpec, NetlinkTopology, Topology},
};
use pier_tests::{TestHost, require_root};

const HOSTS: &str = "127.0.0.1\tlocalhost\n10.88.0.2\tweb\n10.88.0.9\tdb\n";
const RESOLV: &str = "nameserver 198.18.0.2\n";

/// A container: namespace `dir/run/netns/web` with eth0 10.88.0.2/16 on
/// bridge pier0, and its /etc files in `dir/etc/web`.
fn container(host: &TestHost, topo: &NetlinkTopology) -> (PathBuf, PathBuf) {
    let ns = host.dir.join("run/netns/web");
    topo.ensure_bridge(&BridgeSpec {
        name: "pier0".into(),
        gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
        subnet: Some("10.88.0.0/16".parse().unwrap()),
        gateway6: None,
        mtu: None,
    })
    .unwrap();
    topo.create_netns(&ns).unwrap();
    topo.add_endpoint(&EndpointSpec {
        netns: ns.clone(),
        host_ifname: "vweb".into(),
        ifname: "eth0".into(),
        bridge: "pier0".into(),
        address: Some("10.88.0.2/16".parse().unwrap()),
        address6: None,
        mac: [0x02, 0x42, 10, 88, 0, 2],
        default_gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
        default_gateway6: None,
        metric: None,
        mtu: None,
        engine_peer: None,
    })
    .unwrap();
    let etc = host.dir.join("etc/web");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), HOSTS).unwrap();
    std::fs::write(etc.join("resolv.conf"), RESOLV).unwrap();
    std::fs::write(etc.join("hostname"), "web\n").unwrap();
    (ns, etc)
}

fn out_file(host: &TestHost, name: &str) -> (PathBuf, OwnedFd) {
    let p = host.dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    (p, f.into())
}

fn spec(ns: Option<&Path>, etc: Option<&Path>, out: OwnedFd, script: &str) -> ProcessSpec {
    ProcessSpec {
        netns: ns.map(Path::to_path_buf),
        etc_dir: etc.map(Path::to_path_buf),
        hostname: Some("web".into()),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("GREETING".into(), "hi".into())],
        stdin: runtime::dev_null().unwrap(),
        stderr: out.try_clone().unwrap(),
        stdout: out,
        detached: false,
    }
}

/// Kills a long-running test process (and its group, if detached) if the
/// test fails before it does.
struct KillOnDrop(ProcIdentity);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop(Duration::ZERO);
    }
}

fn real_hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

#[test]
fn spawn_sees_its_hostname_files_and_only_its_interfaces() {
    require_root!();
    let host = TestHost::new();
    let hosts_before = std::fs::read_to_string("/etc/hosts").unwrap();
    let hostname_before = real_hostname();
    let (out_path, out) = out_file(&host, "out");
    let code = TestHost::in_netns(&host.host_ns, || {
        let topo = NetlinkTopology::new().unwrap();
        let (ns, etc) = container(&host, &topo);
        let p = runtime::spawn(spec(
            Some(&ns),
            Some(&etc),
            out,
            "hostname; echo \"$HOSTNAME $GREETING\"; cat /etc/hosts /etc/resolv.conf /etc/hostname; \
             ls /sys/class/net; ip -o link | cut -d: -f2 | cut -d@ -f1",
        ))
        .expect("spawn");
        let code = p.wait_timeout(Duration::from_secs(10)).expect("exits");
        // Reaped: no zombie left behind.
        assert!(!Path::new(&format!("/proc/{}", p.pid)).exists());
        topo.remove_netns(&ns).unwrap();
        code
    });
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(code, 0, "output: {out}");
    assert_eq!(
        out,
        format!("web\nweb hi\n{HOSTS}{RESOLV}web\neth0\nlo\n lo\n eth0\n")
    );
    // The host's own files and hostname are untouched.
    assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), hosts_before);
    assert_eq!(real_hostname(), hostname_before);
}

#[test]
fn exec_joins_the_running_container_and_passes_the_exit_code() {
    require_root!();
    let host = TestHost::new();
    let (_, main_out) = out_file(&host, "main");
    let (exec_path, exec_out) = out_file(&host, "exec");
    let (fresh_path, fresh_out) = out_file(&host, "fresh");
    TestHost::in_netns(&host.host_ns, || {
        let topo = NetlinkTopology::new().unwrap();
        let (ns, etc) = container(&host, &topo);
        let mut main = spec(Some(&ns), Some(&etc), main_out, "exec sleep 60");
        main.detached = true;
        let main = runtime::spawn(main).expect("spawn main");
        let _guard = KillOnDrop(main.identity);
        assert!(main.identity.is_running());

        // Joined: the container's hostname, files, interfaces; no etc_dir or
        // hostname needed, and the code comes back.
        let mut s = spec(
            None,
            None,
            exec_out,
            "hostname; cat /etc/hosts; ls /sys/class/net; exit 7",
        );
        s.hostname = None;
        let code = runtime::exec(s, Some(&main.identity)).expect("exec");
        assert_eq!(code, 7);
        assert_eq!(
            std::fs::read_to_string(&exec_path).unwrap(),
            format!("web\n{HOSTS}eth0\nlo\n")
        );

        // A signal-ended exec reports 128 + signal.
        let (_, o) = out_file(&host, "killed");
        let code =
            runtime::exec(spec(None, None, o, "kill -TERM $$"), Some(&main.identity)).unwrap();
        assert_eq!(code, 128 + 15);

        // Main gone: exec sets up afresh from the spec.
        assert!(main.identity.signal(Signal::SIGKILL).unwrap());
        assert_eq!(main.wait_timeout(Duration::from_secs(5)), Some(128 + 9));
        assert!(!main.identity.is_running());
        assert!(
            !main.identity.signal(Signal::SIGKILL).unwrap(),
            "already gone"
        );
        let code = runtime::exec(
            spec(
                Some(&ns),
                Some(&etc),
                fresh_out,
                "hostname; cat /etc/resolv.conf; exit 3",
            ),
            Some(&main.identity),
        )
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(
            std::fs::read_to_string(&fresh_path).unwrap(),
            format!("web\n{RESOLV}")
        );
        topo.remove_netns(&ns).unwrap();
    });
}

/// Processes whose network namespace is the one bind-mounted at `path`.
fn pids_in_netns(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(path).unwrap().ino();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want)
        })
        .collect()
}

/// Session id and process group id from /proc/<pid>/stat (fields 5 and 6).
fn session_and_group(pid: u32) -> (u32, u32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 1..].split_whitespace().collect();
    (f[3].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
fn detached_process_has_its_own_session_and_a_checkable_identity() {
    require_root!();
    let host = TestHost::new();
    let (_, out) = out_file(&host, "out");
    let (_, out2) = out_file(&host, "out2");
    TestHost::in_netns(&host.host_ns, || {
        let mut s = spec(None, None, out, "exec sleep 60");
        s.detached = true;
        // Host mode: no netns, still its own UTS namespace for the hostname.
        let p = runtime::spawn(s).expect("spawn");
        let _g1 = KillOnDrop(p.identity);
        assert_eq!(session_and_group(p.pid), (p.pid, p.pid));
        assert_eq!(ProcIdentity::of(p.pid), Some(p.identity));
        assert!(p.identity.is_running());
        assert_eq!(p.exit_code(), None);
        let attached = runtime::spawn(spec(None, None, out2, "exec sleep 60")).unwrap();
        let _g2 = KillOnDrop(attached.identity);
        let me = std::process::id();
        let (my_sid, my_pgid) = session_and_group(me);
        assert_eq!(session_and_group(attached.pid), (my_sid, my_pgid));

        // A record with another start time is a different process: not
        // running, and not signalled.
        let stale = ProcIdentity {
            start_time: p.identity.start_time - 1,
            ..p.identity
        };
        assert!(!stale.is_running());
        assert!(!stale.signal(Signal::SIGKILL).unwrap());
        assert!(p.identity.is_running());

        for q in [&p, &attached] {
            assert!(q.identity.signal(Signal::SIGKILL).unwrap());
            assert_eq!(q.wait_timeout(Duration::from_secs(5)), Some(137));
            assert!(!Path::new(&format!("/proc/{}", q.pid)).exists(), "reaped");
        }
    });
}

#[test]
fn bad_specs_are_refused_with_a_clear_error() {
    require_root!();
    let host = TestHost::new();
    let o = || out_file(&host, "o").1;
    let err = |s: ProcessSpec| runtime::spawn(s).unwrap_err().to_string();

    let mut s = spec(None, None, o(), "true");
    s.argv.clear();
    assert_eq!(err(s), "no command given");

    let mut s = spec(None, None, o(), "true");
    s.argv = vec!["pier-no-such-program".into()];
    assert_eq!(
        err(s),
        "exec pier-no-such-program: No such file or directory (os error 2)"
    );

    let not_ns = host.dir.join("o");
    assert_eq!(
        err(spec(Some(&not_ns), None, o(), "true")),
        format!("{} is not a network namespace", not_ns.display())
    );
    let missing = host.dir.join("missing");
    assert!(err(spec(Some(&missing), None, o(), "true")).starts_with("open netns"));
    assert_eq!(
        err(spec(None, Some(&missing), o(), "true")),
        format!(
            "container files directory {} does not exist",
            missing.display()
        )
    );
    let mut s = spec(None, None, o(), "true");
    s.hostname = Some("bad name".into());
    assert!(err(s).starts_with("invalid hostname \"bad name\""));

    // A failing set-up step in the child is named: a namespace file that is
    // not a network namespace (here a UTS one) fails at setns.
    let uts = host.dir.join("uts");
    std::fs::write(&uts, "").unwrap();
    nix::mount::mount(
        Some("/proc/self/ns/uts"),
        &uts,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let e = err(spec(Some(&uts), None, o(), "true"));
    nix::mount::umount2(&uts, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(
        e,
        "start sh: join the container's network namespace: Invalid argument (os error 22)"
    );
}

/// Whether `path` is a mount point in the mount namespace of `pid`.
fn mounted_in(pid: u32, path: &Path) -> bool {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

#[test]
fn removing_a_namespace_reaches_running_containers_mount_namespaces() {
    require_root!();
    let host = TestHost::new();
    let (_, out) = out_file(&host, "out");
    TestHost::in_netns(&host.host_ns, || {
        let topo = NetlinkTopology::new().unwrap();
        let a = host.dir.join("run/netns/a");
        let b = host.dir.join("run/netns/b");
        topo.create_netns(&a).unwrap();
        topo.create_netns(&b).unwrap();
        let p = runtime::spawn(spec(Some(&a), None, out, "exec sleep 60")).unwrap();
        let _g = KillOnDrop(p.identity);
        // The container's mount namespace is a copy: it holds b's mount too...
        assert!(mounted_in(p.pid, &b));
        // ...and removing b detaches that copy, so the container does not
        // keep b alive.
        topo.remove_netns(&b).unwrap();
        assert!(!mounted_in(p.pid, &b));
        assert!(mounted_in(p.pid, &a));
        assert!(p.identity.signal(Signal::SIGKILL).unwrap());
        p.wait();
        topo.remove_netns(&a).unwrap();
    });
}

#[test]
fn stop_terminates_then_kills_and_hosts_updates_in_place_are_seen() {
    require_root!();
    let host = TestHost::new();
    let (_, out1) = out_file(&host, "out1");
    let (_, out2) = out_file(&host, "out2");
    let (cat_path, cat_out) = out_file(&host, "cat");
    TestHost::in_netns(&host.host_ns, || {
        let topo = NetlinkTopology::new().unwrap();
        let (ns, etc) = container(&host, &topo);
        let mut polite = spec(Some(&ns), Some(&etc), out1, "exec sleep 60");
        polite.detached = true;
        let polite = runtime::spawn(polite).unwrap();
        let _g1 = KillOnDrop(polite.identity);
        let mut stubborn = spec(
            Some(&ns),
            Some(&etc),
            out2,
            "trap '' TERM; sleep 60 & wait; sleep 60",
        );
        stubborn.detached = true;
        let stubborn = runtime::spawn(stubborn).unwrap();
        let _g2 = KillOnDrop(stubborn.identity);

        // The container's files are bind mounts of the agent's: rewritten in
        // place (not replaced by rename), the running container sees it.
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(etc.join("hosts"), "10.88.0.7\tnewcomer\n").unwrap();
        let code = runtime::exec(
            spec(None, None, cat_out, "cat /etc/hosts"),
            Some(&polite.identity),
        )
        .unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(&cat_path).unwrap(),
            "10.88.0.7\tnewcomer\n"
        );

        // SIGTERM is enough for one...
        let t = std::time::Instant::now();
        assert!(polite.identity.stop(Duration::from_secs(5)).unwrap());
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        assert_eq!(polite.wait_timeout(Duration::from_secs(1)), Some(128 + 15));
        // ...the other ignores it and is killed after the grace period.
        let t = std::time::Instant::now();
        assert!(stubborn.identity.stop(Duration::from_millis(300)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert_eq!(stubborn.wait_timeout(Duration::from_secs(1)), Some(128 + 9));
        // The whole group went: nothing runs in the container any more.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pids_in_netns(&ns), Vec::<u32>::new());
        // Stopping what is gone says so.
        assert!(!polite.identity.stop(Duration::from_millis(10)).unwrap());
        assert!(polite.identity.wait_exit(Duration::ZERO).unwrap());
        topo.remove_netns(&ns).unwrap();
    });
}
