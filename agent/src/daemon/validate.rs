//! Checks on user input, each failing with one clear line.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::state::{PortBinding, PortProto};

/// Longest container/network name or alias (a DNS label).
pub const MAX_NAME: usize = 63;

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, plus a length limit.
pub fn check_name(kind: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{kind} name must not be empty"));
    }
    if s.len() > MAX_NAME {
        return Err(format!(
            "{kind} name {s:?} is too long: at most {MAX_NAME} characters"
        ));
    }
    let mut b = s.bytes();
    let first_ok = b.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)) {
        return Err(format!(
            "invalid {kind} name {s:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ));
    }
    Ok(())
}

/// A hostname: dot-separated labels of `[a-zA-Z0-9-]`, each 1..=63, not
/// starting or ending with `-`.
pub fn check_hostname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid hostname {s:?}"))
    }
}

/// A `--dns-search` domain: `.` (no search) or a domain name (Docker's
/// `validateDNSSearch`: a trailing dot allowed, at most 255 characters).
pub fn check_dns_search(s: &str) -> Result<(), String> {
    if s == "." {
        return Ok(());
    }
    let d = s.strip_suffix('.').unwrap_or(s);
    if d.len() <= 255 && check_hostname(d).is_ok() {
        Ok(())
    } else {
        Err(format!("{s} is not a valid domain"))
    }
}

/// A `--dns-option` (`ndots:2`, `edns0`, `timeout:1`): one word.
pub fn check_dns_option(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("invalid DNS option {s:?}: one word, e.g. ndots:2"))
    } else {
        Ok(())
    }
}

/// One `-e` entry as the API takes it: `KEY=VALUE`, or `KEY` to leave the
/// variable out (Docker's API rule). The key is not empty and has no `=`
/// or NUL; the value has no NUL.
pub fn parse_env(s: &str) -> Result<(String, Option<String>), String> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    if k.is_empty() || k.contains('\0') || v.is_some_and(|v| v.contains('\0')) {
        return Err(format!("invalid environment variable: {s}"));
    }
    Ok((k.to_string(), v.map(str::to_string)))
}

fn parse_port(spec: &str, s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!(
            "invalid port spec {spec:?}: port {p} is out of range 1-65535"
        )),
        Err(_) => Err(format!("invalid port spec {spec:?}: {s:?} is not a port")),
    }
}

fn parse_range(spec: &str, s: &str) -> Result<(u16, u16), String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_port(spec, a)?, parse_port(spec, b)?),
        None => {
            let p = parse_port(spec, s)?;
            (p, p)
        }
    };
    if b < a {
        return Err(format!(
            "invalid port spec {spec:?}: range {a}-{b} ends before it starts"
        ));
    }
    Ok((a, b))
}

/// `[IP:][HOSTPORT[-END]:]CONTPORT[-END][/tcp|udp]`, as Docker: without a
/// host port (`80`, `127.0.0.1::80`) the host port is 0, an ephemeral one
/// picked when the container is created; a host range longer than a single
/// container port (`8000-8010:80`) is a choice of one.
pub fn parse_port_spec(spec: &str) -> Result<PortBinding, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, PortProto::Tcp),
        Some((b, "udp")) => (b, PortProto::Udp),
        Some((_, p)) => {
            return Err(format!(
                "invalid port spec {spec:?}: unknown protocol {p:?} (tcp or udp)"
            ));
        }
        None => (spec, PortProto::Tcp),
    };
    // `[v6]:HOST:CONT` (Docker's form for an IPv6 host address).
    let (ip6, body) = match body.strip_prefix('[') {
        Some(rest) => {
            let Some((a, rest)) = rest.split_once("]:") else {
                return Err(format!(
                    "invalid port spec {spec:?}: expected [IPV6]:HOSTPORT:CONTAINERPORT"
                ));
            };
            (Some(a), rest)
        }
        None => (None, body),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let parts: Vec<&str> = match ip6 {
        Some(a) => {
            if parts.len() != 2 {
                return Err(format!(
                    "invalid port spec {spec:?}: expected [IPV6]:HOSTPORT:CONTAINERPORT"
                ));
            }
            vec![a, parts[0], parts[1]]
        }
        None => parts,
    };
    let (ip, host, cont) = match parts.as_slice() {
        [c] => (None, "", *c),
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => {
            return Err(format!(
                "invalid port spec {spec:?}: expected [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]"
            ));
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        // A v4-mapped address is the IPv4 one (the engines' too).
        Some(s) if ip6.is_some() => Some(
            IpAddr::V6(s.parse::<Ipv6Addr>().map_err(|_| {
                format!("invalid port spec {spec:?}: {s:?} is not an IPv6 address")
            })?)
            .to_canonical(),
        ),
        Some(s) => Some(IpAddr::V4(s.parse::<Ipv4Addr>().map_err(|_| {
            format!(
                "invalid port spec {spec:?}: {s:?} is not an IP address (IPv6 in brackets: [::1])"
            )
        })?)),
    };
    let (cp, cpe) = parse_range(spec, cont)?;
    let (hp, hpe) = if host.is_empty() {
        if cpe != cp {
            return Err(format!(
                "invalid port spec {spec:?}: a container port range needs its host ports"
            ));
        }
        (0, 0)
    } else {
        parse_range(spec, host)?
    };
    let choice = cp == cpe && hpe > hp;
    if hp != 0 && !choice && hpe - hp != cpe - cp {
        return Err(format!(
            "invalid port spec {spec:?}: host and container port ranges differ in length"
        ));
    }
    Ok(PortBinding {
        host_ip,
        host_port: hp,
        host_port_end: hpe,
        container_port: cp,
        container_port_end: cpe,
        proto,
    })
}

/// An engine's host address of a port mapping (Docker's portmap `HostIP`,
/// CNI's `hostIP`, netavark's `host_ip`) as a binding's `host_ip`, the
/// CLI's `-p IP:H:C` / `-p [IPV6]:H:C` meaning: `""` and `0.0.0.0` (the
/// engines' default) every address of both families, `::` every IPv6
/// address, any other its own family only. A v4-mapped IPv6 address is
/// the IPv4 one.
pub fn engine_host_ip(s: &str) -> Result<Option<IpAddr>, String> {
    match s {
        "" | "0.0.0.0" => Ok(None),
        s => s
            .parse::<IpAddr>()
            .map(|ip| Some(ip.to_canonical()))
            .map_err(|_| format!("host IP {s:?} is not an IP address")),
    }
}

/// The first binding with an IPv6 host address, when the container has no
/// IPv6 address to lead it to (pier has no userland proxy to carry IPv6
/// to IPv4): one clear error.
pub fn check_ipv6_host_ips(ports: &[PortBinding], has_ip6: bool) -> Result<(), String> {
    match ports
        .iter()
        .find(|b| b.host_ip.is_some_and(|i| i.is_ipv6()))
    {
        Some(b) if !has_ip6 => Err(format!(
            "port {}: the container has no IPv6 address (its network is not --ipv6)",
            bind_addr(b, b.host_port)
        )),
        _ => Ok(()),
    }
}

/// `--expose PORT[-END][/tcp|udp]`: the ports it names.
pub fn parse_expose(s: &str) -> Result<Vec<(u16, PortProto)>, String> {
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, PortProto::Tcp),
        Some((b, "udp")) => (b, PortProto::Udp),
        Some((_, p)) => {
            return Err(format!(
                "invalid --expose {s:?}: unknown protocol {p:?} (tcp or udp)"
            ));
        }
        None => (s, PortProto::Tcp),
    };
    let (a, b) = parse_range(s, body).map_err(|e| e.replace("port spec", "--expose"))?;
    Ok((a..=b).map(|p| (p, proto)).collect())
}

/// The address of an `--add-host` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAddr {
    Ip(std::net::IpAddr),
    /// Docker's `host-gateway`: the gateway of the container's network.
    Gateway,
}

/// `--add-host NAME:IP` (Docker also takes `NAME=IP`; IPv6 addresses as
/// `NAME:2001:db8::1` or `NAME=[2001:db8::1]`).
pub fn parse_add_host(s: &str) -> Result<(String, HostAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("bad format for add-host: {s:?} (NAME:IP)"))?;
    check_hostname(name).map_err(|e| format!("invalid --add-host {s:?}: {e}"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr == "host-gateway" {
        return Ok((name.to_string(), HostAddr::Gateway));
    }
    let ip = addr
        .parse()
        .map_err(|_| format!("invalid IP address in add-host: {addr:?}"))?;
    Ok((name.to_string(), HostAddr::Ip(ip)))
}

/// `--mac-address`: six hex bytes, a non-zero unicast address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("invalid MAC address {s:?}: six hex bytes like 02:42:ac:11:00:02");
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 != 0 || m == [0; 6] {
        return Err(format!(
            "invalid MAC address {s:?}: not a unicast address (the first byte must be even, and not all zero)"
        ));
    }
    Ok(m)
}

/// A binding that `-p` could have typed: container ports `1..=65535` in
/// order; host port 0 (an ephemeral one) for one container port, else host
/// ports in order, as many as the container's or a range to choose one from.
pub fn check_binding(b: &PortBinding) -> Result<(), String> {
    let text = format!(
        "port binding {}-{}:{}-{}/{}",
        b.host_port,
        b.host_port_end,
        b.container_port,
        b.container_port_end,
        b.proto.as_str()
    );
    if b.container_port == 0 || b.container_port_end < b.container_port {
        return Err(format!(
            "invalid {text}: the container ports must be 1-65535, in order"
        ));
    }
    let one = b.container_port == b.container_port_end;
    if b.host_port == 0 {
        if b.host_port_end != 0 || !one {
            return Err(format!(
                "invalid {text}: an ephemeral host port (0) is for one container port"
            ));
        }
        return Ok(());
    }
    if b.host_port_end < b.host_port {
        return Err(format!("invalid {text}: the host ports must be in order"));
    }
    if !one && b.host_port_end - b.host_port != b.container_port_end - b.container_port {
        return Err(format!(
            "invalid {text}: host and container port ranges differ in length"
        ));
    }
    Ok(())
}

/// A binding whose host port is still to be chosen (port 0, or a host
/// range offered for one container port).
pub fn is_choice(b: &PortBinding) -> bool {
    b.host_port == 0 || b.host_port_end - b.host_port != b.container_port_end - b.container_port
}

/// Do two host addresses of bindings overlap? `None` is every address of
/// both families, an unspecified one every address of its family.
pub fn addrs_overlap(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => {
            x == y || (x.is_ipv6() == y.is_ipv6() && (x.is_unspecified() || y.is_unspecified()))
        }
        _ => true,
    }
}

/// Do two bindings claim a common host port (same protocol, overlapping address)?
pub fn ports_clash(a: &PortBinding, b: &PortBinding) -> Option<u16> {
    if a.proto != b.proto {
        return None;
    }
    if !addrs_overlap(a.host_ip, b.host_ip) {
        return None;
    }
    let lo = a.host_port.max(b.host_port);
    let hi = a.host_port_end.min(b.host_port_end);
    (lo <= hi).then_some(lo)
}

/// `0.0.0.0:8081` for messages.
pub fn bind_addr(p: &PortBinding, port: u16) -> String {
    let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    std::net::SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_from_front_ends() {
        for spec in [
            "80",
            "8080:80",
            "8000-8009:80-89",
            "8000-8009:80",
            "127.0.0.1:1:65535/udp",
        ] {
            let b = parse_port_spec(spec).unwrap();
            assert_eq!(check_binding(&b), Ok(()), "{spec}");
        }
        let b = |hp, hpe, cp, cpe| PortBinding {
            host_ip: None,
            host_port: hp,
            host_port_end: hpe,
            container_port: cp,
            container_port_end: cpe,
            proto: PortProto::Tcp,
        };
        // (The API fuzz's CNI ADD with hostPortEnd < hostPort panicked.)
        for bad in [
            b(18200, 2, 80, 81),
            b(18200, 18201, 81, 80),
            b(1, 2, 0, 1),
            b(0, 5, 80, 80),
            b(0, 0, 80, 81),
            b(100, 102, 80, 81),
        ] {
            assert!(check_binding(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_search_options_env() {
        assert!(check_dns_search("example.com").is_ok());
        assert!(check_dns_search("example.com.").is_ok());
        assert!(check_dns_search(".").is_ok());
        assert_eq!(
            check_dns_search("bad_domain").unwrap_err(),
            "bad_domain is not a valid domain"
        );
        assert!(check_dns_search("-x.example").is_err());
        assert!(check_dns_option("ndots:2").is_ok());
        assert!(check_dns_option("").is_err());
        assert!(check_dns_option("a b").is_err());
        assert_eq!(parse_env("A=1").unwrap(), ("A".into(), Some("1".into())));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), Some(String::new())));
        assert_eq!(parse_env("A=b=c").unwrap().1.as_deref(), Some("b=c"));
        assert_eq!(parse_env("A").unwrap(), ("A".into(), None));
        assert_eq!(
            parse_env("=x").unwrap_err(),
            "invalid environment variable: =x"
        );
    }

    #[test]
    fn names() {
        assert!(check_name("container", "web-1_a.b").is_ok());
        assert!(check_name("container", "-web").is_err());
        assert!(check_name("container", "we b").is_err());
        assert!(check_name("container", "").is_err());
        assert!(check_name("container", &"a".repeat(63)).is_ok());
        assert_eq!(
            check_name("container", &"a".repeat(64)).unwrap_err(),
            format!(
                "container name {:?} is too long: at most 63 characters",
                "a".repeat(64)
            )
        );
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("web.example").is_ok());
        assert!(check_hostname("-x").is_err());
        assert!(check_hostname("a_b").is_err());
    }

    #[test]
    fn port_specs() {
        let p = parse_port_spec("8081:8080").unwrap();
        assert_eq!(
            (
                p.host_ip,
                p.host_port,
                p.host_port_end,
                p.container_port,
                p.proto
            ),
            (None, 8081, 8081, 8080, PortProto::Tcp)
        );
        // Docker's shorthands: an ephemeral host port, a host range for one port.
        let p = parse_port_spec("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        assert!(is_choice(&p));
        let p = parse_port_spec("127.0.0.1::80/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port),
            (Some(Ipv4Addr::LOCALHOST.into()), 0)
        );
        let p = parse_port_spec("8000-8010:80").unwrap();
        assert_eq!(
            (p.host_port, p.host_port_end, p.container_port_end),
            (8000, 8010, 80)
        );
        assert!(is_choice(&p));
        assert!(!is_choice(&parse_port_spec("8000-8001:80-81").unwrap()));
        assert_eq!(parse_expose("91-92/udp").unwrap().len(), 2);
        assert!(parse_add_host("db:10.0.0.5").is_ok());
        assert_eq!(
            parse_add_host("gw:host-gateway").unwrap().1,
            HostAddr::Gateway
        );
        assert!(parse_add_host("v6:2001:db8::1").is_ok());
        assert!(parse_mac("02:42:ac:11:00:02").is_ok());
        assert!(parse_mac("03:42:ac:11:00:02").is_err());
        // IPv6 host addresses in brackets; `[::]` and `0.0.0.0` are one
        // family's every address, no address both.
        let p = parse_port_spec("[2001:db8::1]:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        let any6 = parse_port_spec("[::]:8080:80").unwrap();
        assert_eq!(any6.host_ip, Some(Ipv6Addr::UNSPECIFIED.into()));
        let any4 = parse_port_spec("0.0.0.0:8080:80").unwrap();
        assert_eq!(any4.host_ip, Some(Ipv4Addr::UNSPECIFIED.into()));
        let both = parse_port_spec("8080:80").unwrap();
        assert_eq!(ports_clash(&any4, &any6), None, "one port per family");
        assert_eq!(ports_clash(&both, &any6), Some(8080));
        assert_eq!(ports_clash(&both, &any4), Some(8080));
        let l6 = parse_port_spec("[::1]:8080:80").unwrap();
        assert_eq!(ports_clash(&l6, &any6), Some(8080));
        assert_eq!(ports_clash(&l6, &any4), None);
        assert_eq!(bind_addr(&l6, 8080), "[::1]:8080");
        let p = parse_port_spec("127.0.0.1:5000-5002:6000-6002/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!((p.host_port_end, p.container_port_end), (5002, 6002));
        assert_eq!(p.proto, PortProto::Udp);
        for (bad, want) in [
            ("0:80", "port 0 is out of range"),
            ("70000:80", "port 70000 is out of range"),
            ("8090-8080:80-90", "ends before it starts"),
            ("8080-8081:80-82", "differ in length"),
            ("1:2:3:4", "expected [IP:][HOSTPORT:]CONTAINERPORT"),
            ("80-82", "needs its host ports"),
            ("x:80", "is not a port"),
            ("80:80/sctp", "unknown protocol"),
            ("1.2.3:80:80", "is not an IP address"),
            ("[::1:8080:80", "expected [IPV6]:HOSTPORT:CONTAINERPORT"),
            ("[::1]:80", "expected [IPV6]:HOSTPORT:CONTAINERPORT"),
            ("[1.2.3.4]:80:80", "is not an IPv6 address"),
            (
                "2001:db8::1:80:80",
                "expected [IP:][HOSTPORT:]CONTAINERPORT",
            ),
        ] {
            let e = parse_port_spec(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn clashes() {
        let a = parse_port_spec("8081-8085:81-85").unwrap();
        assert_eq!(
            ports_clash(&a, &parse_port_spec("8085:80").unwrap()),
            Some(8085)
        );
        assert_eq!(ports_clash(&a, &parse_port_spec("8086:80").unwrap()), None);
        assert_eq!(
            ports_clash(&a, &parse_port_spec("8081:80/udp").unwrap()),
            None
        );
        let l1 = parse_port_spec("127.0.0.1:9000:80").unwrap();
        let l2 = parse_port_spec("127.0.0.2:9000:80").unwrap();
        assert_eq!(ports_clash(&l1, &l2), None);
        assert_eq!(
            ports_clash(&l1, &parse_port_spec("9000:80").unwrap()),
            Some(9000)
        );
    }

    #[test]
    fn engine_host_ips_mean_what_the_cli_forms_do() {
        assert_eq!(engine_host_ip(""), Ok(None));
        assert_eq!(engine_host_ip("0.0.0.0"), Ok(None));
        assert_eq!(engine_host_ip("::"), Ok(Some(Ipv6Addr::UNSPECIFIED.into())));
        assert_eq!(
            engine_host_ip("fd00::1"),
            Ok(Some("fd00::1".parse().unwrap()))
        );
        assert_eq!(
            engine_host_ip("127.0.0.1"),
            Ok(Some(Ipv4Addr::LOCALHOST.into()))
        );
        assert_eq!(
            engine_host_ip("::ffff:127.0.0.1"),
            Ok(Some(Ipv4Addr::LOCALHOST.into()))
        );
        let e = engine_host_ip("fd00::1::2").unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
        let m = parse_port_spec("[::ffff:127.0.0.1]:8080:80").unwrap();
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        let b = parse_port_spec("[::1]:8080:80").unwrap();
        assert!(check_ipv6_host_ips(std::slice::from_ref(&b), true).is_ok());
        let e = check_ipv6_host_ips(&[b], false).unwrap_err();
        assert!(
            e.contains("[::1]:8080") && e.contains("no IPv6 address"),
            "{e}"
        );
    }
}
