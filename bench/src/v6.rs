//! The IPv6 rows: the same servers and clients over IPv6. The outside
//! dials the host's IPv6 uplink address `[fd18::1]`: `ceiling6` (the
//! servers one veth pair away, nothing else), `ip6tables` (Docker's
//! bridge-driver rules for IPv6, as Docker ≥ 27 writes them with
//! `ip6tables`: DNAT of the published ports to the container's IPv6
//! address, MASQUERADE, FORWARD accepts) and `pier6` (a dual-stack pier
//! network, the container publishing both families). Every other figure
//! (control plane, containers, host-local) stays with the IPv4 rows.
use std::{
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    peers::{Peer, start_pier_agent},
    results::Dataplane,
    world::{
        self, BRIDGE, Ctx, ECHO_TCP, ECHO_TCP_HOST, ECHO_UDP, ECHO_UDP_HOST, IPERF, IPERF_HOST,
        Targets, UPLINK, World, cmd_in, run, sh,
    },
};

/// The host's and the outside's IPv6 addresses on the uplink.
pub const HOST_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 1);
pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 2);
/// The containers' IPv6 subnet, its gateway and the server's address (the
/// ip6tables world; pier hands out the same first address).
pub const SUBNET6: &str = "fd00:b6::/64";
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb6, 0, 0, 0, 0, 0, 1);
pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb6, 0, 0, 0, 0, 0, 2);

const READY: Duration = Duration::from_secs(10);

/// The three IPv6 dataplanes.
pub fn is_v6(d: Dataplane) -> bool {
    matches!(
        d,
        Dataplane::Ceiling6 | Dataplane::Ip6tables | Dataplane::Pier6
    )
}

/// The peer of an IPv6 dataplane (`is_v6`).
pub fn peer(d: Dataplane) -> anyhow::Result<Box<dyn Peer>> {
    Ok(match d {
        Dataplane::Ceiling6 => Box::new(V6 {
            d,
            w: None,
            data_err: None,
        }),
        Dataplane::Ip6tables => {
            for tool in ["ip6tables-restore", "ip6tables-save"] {
                anyhow::ensure!(
                    Command::new(tool).arg("--version").output().is_ok(),
                    "{tool} is missing"
                );
            }
            Box::new(V6 {
                d,
                w: None,
                data_err: None,
            })
        }
        Dataplane::Pier6 => Box::new(V6 {
            d,
            w: None,
            data_err: None,
        }),
        _ => bail!("{} is not an IPv6 dataplane", d.as_str()),
    })
}

fn at(ip: Ipv6Addr, tcp: u16, udp: u16, iperf: u16) -> Targets {
    let a = |p| SocketAddr::new(IpAddr::V6(ip), p);
    Targets {
        tcp: a(tcp),
        udp: a(udp),
        iperf: a(iperf),
    }
}

/// `addr/64` on `dev` in `ns`, without duplicate address detection.
fn addr6(ns: &str, addr: &str, dev: &str) -> anyhow::Result<()> {
    sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"])?;
    Ok(())
}

/// A world with IPv6 on the uplink too.
fn world6(ctx: &Ctx, tag: &str) -> anyhow::Result<World> {
    let w = World::new(ctx, tag)?;
    addr6(&w.host, &format!("{HOST_UPLINK_IP6}/64"), UPLINK)?;
    addr6(&w.out, &format!("{OUTSIDE_IP6}/64"), "eth0")?;
    Ok(w)
}

/// Docker's bridge-driver rules for IPv6 (`ip6tables-restore` input): what
/// `iptables::docker_rules` is for IPv4, with the container's IPv6 address.
pub fn docker_rules6(bridge: &str, subnet: &str, server: Ipv6Addr) -> String {
    let published = [
        (ECHO_TCP_HOST, ECHO_TCP, "tcp"),
        (ECHO_UDP_HOST, ECHO_UDP, "udp"),
        (IPERF_HOST, IPERF, "tcp"),
    ];
    let mut s = String::new();
    s.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str(":POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    s.push_str("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n");
    s.push_str("-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER\n");
    let _ = writeln!(s, "-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE");
    for (_, c, proto) in published {
        let _ = writeln!(
            s,
            "-A POSTROUTING -s {server}/128 -d {server}/128 -p {proto} -m {proto} --dport {c} -j MASQUERADE"
        );
    }
    let _ = writeln!(s, "-A DOCKER -i {bridge} -j RETURN");
    for (h, c, proto) in published {
        let _ = writeln!(
            s,
            "-A DOCKER ! -i {bridge} -p {proto} -m {proto} --dport {h} -j DNAT --to-destination [{server}]:{c}"
        );
    }
    s.push_str("COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str(":DOCKER - [0:0]\n");
    let _ = writeln!(
        s,
        "-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(s, "-A FORWARD -o {bridge} -j DOCKER");
    let _ = writeln!(s, "-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT");
    let _ = writeln!(s, "-A FORWARD -i {bridge} -o {bridge} -j ACCEPT");
    for (_, c, proto) in published {
        let _ = writeln!(
            s,
            "-A DOCKER -d {server}/128 ! -i {bridge} -o {bridge} -p {proto} -m {proto} --dport {c} -j ACCEPT"
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// One IPv6 peer.
struct V6 {
    d: Dataplane,
    w: Option<World>,
    data_err: Option<String>,
}

impl V6 {
    fn build_ceiling(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = world6(ctx, "ceiling6")?;
        let host = w.host.clone();
        w.start_servers(ctx, &host)?;
        self.w = Some(w);
        Ok(at(HOST_UPLINK_IP6, ECHO_TCP, ECHO_UDP, IPERF))
    }

    fn build_ip6tables(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let mut w = world6(ctx, "ip6tables")?;
        let c0 = w.bridge_container("c0", world::SERVER_IP)?;
        let h = w.host.clone();
        addr6(&h, &format!("{GATEWAY6}/64"), BRIDGE)?;
        addr6(&c0, &format!("{SERVER_IP6}/64"), "eth0")?;
        sh(&[
            "ip",
            "-n",
            &c0,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GATEWAY6.to_string(),
        ])?;
        w.sysctl(&h, "net.ipv6.conf.all.forwarding", "1")?;
        let rules = docker_rules6(BRIDGE, SUBNET6, SERVER_IP6);
        let mut child = cmd_in(&h, "ip6tables-restore")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ip6tables-restore")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "ip6tables-restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        w.start_servers(ctx, &c0)?;
        self.w = Some(w);
        Ok(at(
            HOST_UPLINK_IP6,
            ECHO_TCP_HOST,
            ECHO_UDP_HOST,
            IPERF_HOST,
        ))
    }

    fn build_pier(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        if !ctx.bins.pier.exists() {
            bail!(
                "{} is missing (cargo xtask bench builds it)",
                ctx.bins.pier.display()
            );
        }
        let mut w = world6(ctx, "pier6")?;
        let agent = start_pier_agent(ctx, &mut w, &[], false);
        self.w = Some(w);
        let agent = agent?;
        let pier = |args: &[String]| {
            run(Command::new(&ctx.bins.pier)
                .arg("--socket")
                .arg(&agent.socket)
                .args(args))
        };
        let net: Vec<String> = [
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "172.18.0.0/16",
            "--subnet",
            SUBNET6,
            "b6",
        ]
        .map(String::from)
        .to_vec();
        pier(&net)?;
        let mut args: Vec<String> = ["run", "-d", "--name", "srv", "--network", "b6"]
            .map(String::from)
            .to_vec();
        for p in [
            format!("{ECHO_TCP_HOST}:{ECHO_TCP}"),
            format!("{ECHO_UDP_HOST}:{ECHO_UDP}/udp"),
            format!("{IPERF_HOST}:{IPERF}"),
        ] {
            args.push("-p".into());
            args.push(p);
        }
        args.push("--".into());
        args.extend(World::server_command(ctx));
        pier(&args)?;
        Ok(at(
            HOST_UPLINK_IP6,
            ECHO_TCP_HOST,
            ECHO_UDP_HOST,
            IPERF_HOST,
        ))
    }
}

impl Peer for V6 {
    fn dataplane(&self) -> Dataplane {
        self.d
    }

    fn build(&mut self, ctx: &Ctx) -> anyhow::Result<Targets> {
        let t = match self.d {
            Dataplane::Ceiling6 => self.build_ceiling(ctx)?,
            Dataplane::Ip6tables => self.build_ip6tables(ctx)?,
            _ => self.build_pier(ctx)?,
        };
        // Reachable over IPv6 from the outside (DAD-free addresses, but the
        // neighbours and the servers take a moment).
        let deadline = Instant::now() + READY;
        while let Err(e) = self.world().wait_tcp(t.tcp, Duration::from_millis(500)) {
            if Instant::now() > deadline {
                self.data_err = Some(format!("{e:#}"));
                break;
            }
        }
        Ok(t)
    }

    fn world(&self) -> &World {
        self.w.as_ref().expect("built")
    }

    fn data_path_error(&self) -> Option<String> {
        self.data_err.clone()
    }

    fn set_other_ports(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn other_ports_limit(&self, n: usize) -> Option<String> {
        (n > 1).then(|| "the IPv6 rows are measured with the own ports only".into())
    }

    fn publish_1000(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn create_remove(&mut self, _: &Ctx, _: usize) -> anyhow::Result<Option<Duration>> {
        Ok(None)
    }

    fn rule_count(&self) -> anyhow::Result<Option<usize>> {
        if self.d != Dataplane::Ip6tables {
            return Ok(None);
        }
        let out = run(&mut cmd_in(&self.world().host, "ip6tables-save"))?;
        Ok(Some(crate::iptables::rule_count(&out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip6tables_rules_dnat_each_port_to_the_container() {
        let r = docker_rules6("docker0", SUBNET6, SERVER_IP6);
        assert!(r.contains(
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8081 -j DNAT --to-destination [fd00:b6::2]:8080\n"
        ));
        assert!(r.contains(
            "-A DOCKER ! -i docker0 -p udp -m udp --dport 9001 -j DNAT --to-destination [fd00:b6::2]:9000\n"
        ));
        assert!(r.contains("-A POSTROUTING -s fd00:b6::/64 ! -o docker0 -j MASQUERADE\n"));
        assert_eq!(r.matches("COMMIT\n").count(), 2);
        assert_eq!(crate::iptables::rule_count(&r), 17);
    }
}
