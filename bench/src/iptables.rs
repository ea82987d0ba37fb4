//! Docker's bridge-driver rules (as Docker 20.10 lays them out for `docker0`
//! with `-p` publishing), generated as `iptables-restore` input.
use std::{fmt::Write, net::Ipv4Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: `-p host_port:container_port/proto` of the container
/// at `container_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub proto: Proto,
}

/// The ruleset Docker's bridge driver keeps for bridge `bridge` with subnet
/// `subnet` and the given published ports, in the order given (Docker appends
/// per container, so the last container published is matched last).
///
/// Per published port Docker adds three rules: the DNAT in nat `DOCKER`, the
/// hairpin MASQUERADE in `POSTROUTING`, and the ACCEPT in filter `DOCKER`.
pub fn docker_rules(bridge: &str, subnet: &str, published: &[Publish]) -> String {
    let mut s = String::new();
    s.push_str("*nat\n");
    s.push_str(":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str(":POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    s.push_str("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n");
    s.push_str("-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n");
    let _ = writeln!(s, "-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE");
    for p in published {
        let _ = writeln!(
            s,
            "-A POSTROUTING -s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {cport} -j MASQUERADE",
            ip = p.container_ip,
            proto = p.proto.as_str(),
            cport = p.container_port
        );
    }
    let _ = writeln!(s, "-A DOCKER -i {bridge} -j RETURN");
    for p in published {
        let _ = writeln!(
            s,
            "-A DOCKER ! -i {bridge} -p {proto} -m {proto} --dport {hport} -j DNAT --to-destination {ip}:{cport}",
            proto = p.proto.as_str(),
            hport = p.host_port,
            ip = p.container_ip,
            cport = p.container_port
        );
    }
    s.push_str("COMMIT\n");

    s.push_str("*filter\n");
    s.push_str(":INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str(":DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n");
    s.push_str(":DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n");
    s.push_str("-A FORWARD -j DOCKER-USER\n");
    s.push_str("-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n");
    let _ = writeln!(
        s,
        "-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(s, "-A FORWARD -o {bridge} -j DOCKER");
    let _ = writeln!(s, "-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT");
    let _ = writeln!(s, "-A FORWARD -i {bridge} -o {bridge} -j ACCEPT");
    for p in published {
        let _ = writeln!(
            s,
            "-A DOCKER -d {ip}/32 ! -i {bridge} -o {bridge} -p {proto} -m {proto} --dport {cport} -j ACCEPT",
            ip = p.container_ip,
            proto = p.proto.as_str(),
            cport = p.container_port
        );
    }
    let _ = writeln!(
        s,
        "-A DOCKER-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} -j DOCKER-ISOLATION-STAGE-2"
    );
    s.push_str("-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n");
    let _ = writeln!(s, "-A DOCKER-ISOLATION-STAGE-2 -o {bridge} -j DROP");
    s.push_str("-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n");
    s.push_str("-A DOCKER-USER -j RETURN\n");
    s.push_str("COMMIT\n");
    s
}

/// The rules Docker appends when a container publishes `published`, as
/// `iptables-restore --noflush` input (the chains exist already).
pub fn docker_publish_delta(bridge: &str, published: &[Publish]) -> String {
    let mut s = String::from("*nat\n");
    for p in published {
        let (ip, proto, cport) = (p.container_ip, p.proto.as_str(), p.container_port);
        let _ = writeln!(
            s,
            "-A POSTROUTING -s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {cport} -j MASQUERADE"
        );
        let _ = writeln!(
            s,
            "-A DOCKER ! -i {bridge} -p {proto} -m {proto} --dport {hport} -j DNAT --to-destination {ip}:{cport}",
            hport = p.host_port
        );
    }
    s.push_str("COMMIT\n*filter\n");
    for p in published {
        let _ = writeln!(
            s,
            "-A DOCKER -d {ip}/32 ! -i {bridge} -o {bridge} -p {proto} -m {proto} --dport {cport} -j ACCEPT",
            ip = p.container_ip,
            proto = p.proto.as_str(),
            cport = p.container_port
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// Rules (`-A` lines) in `iptables-save`/`iptables-restore` text.
pub fn rule_count(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Rules Docker keeps for its bridge with no published port.
pub const BASE_RULES: usize = 15;

/// `n` host ports for "other" published ports, starting at `first`, two apart
/// so that no tool can merge them into one range rule.
pub fn spread_ports(first: u16, n: usize) -> Vec<u16> {
    (0..n).map(|i| first + 2 * i as u16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Publish {
        Publish {
            host_port: 8081,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 8080,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn one_published_port_is_dockers_ruleset() {
        let text = docker_rules("docker0", "172.17.0.0/16", &[web()]);
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(
            rules,
            [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
                "-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 8080 -j MASQUERADE",
                "-A DOCKER -i docker0 -j RETURN",
                "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 172.17.0.2:8080",
                "-A FORWARD -j DOCKER-USER",
                "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
                "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A FORWARD -o docker0 -j DOCKER",
                "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
                "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
                "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 8080 -j ACCEPT",
                "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
                "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
                "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
                "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
                "-A DOCKER-USER -j RETURN",
            ]
        );
        assert_eq!(text.matches("COMMIT").count(), 2);
        assert!(text.contains(":FORWARD DROP"));
    }

    #[test]
    fn each_published_port_adds_three_rules_in_order() {
        let mut ps: Vec<Publish> = spread_ports(20000, 1000)
            .into_iter()
            .map(|p| Publish {
                host_port: p,
                container_ip: Ipv4Addr::new(172, 17, 0, 3),
                container_port: p,
                proto: Proto::Tcp,
            })
            .collect();
        ps.push(Publish {
            proto: Proto::Udp,
            ..web()
        });
        let text = docker_rules("docker0", "172.17.0.0/16", &ps);
        assert_eq!(rule_count(&text), BASE_RULES + 3 * 1001);
        let dnat: Vec<&str> = text.lines().filter(|l| l.contains("-j DNAT")).collect();
        assert_eq!(dnat.len(), 1001);
        assert_eq!(
            dnat[0],
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 20000 -j DNAT --to-destination 172.17.0.3:20000"
        );
        assert_eq!(
            dnat[999],
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 21998 -j DNAT --to-destination 172.17.0.3:21998"
        );
        // The measured port comes last, as the newest container's would.
        assert_eq!(
            dnat[1000],
            "-A DOCKER ! -i docker0 -p udp -m udp --dport 8081 -j DNAT --to-destination 172.17.0.2:8080"
        );
    }

    #[test]
    fn publish_delta_appends_the_same_three_rules() {
        let delta = docker_publish_delta("docker0", &[web()]);
        let full = docker_rules("docker0", "172.17.0.0/16", &[web()]);
        let delta_rules: Vec<&str> = delta.lines().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(delta_rules.len(), 3);
        for r in &delta_rules {
            assert!(full.lines().any(|l| l == *r), "{r} is not one of Docker's");
        }
        assert!(
            !delta.contains(":DOCKER"),
            "--noflush input declares no chain"
        );
        assert_eq!(delta.matches("COMMIT").count(), 2);
    }

    #[test]
    fn no_published_port_is_the_base() {
        assert_eq!(
            rule_count(&docker_rules("docker0", "172.17.0.0/16", &[])),
            BASE_RULES
        );
    }

    #[test]
    fn spread_ports_never_touch() {
        let p = spread_ports(20000, 10000);
        assert_eq!(p.len(), 10000);
        assert_eq!(p[0], 20000);
        assert_eq!(p[9999], 39998);
        assert!(p.windows(2).all(|w| w[1] - w[0] == 2));
    }
}
