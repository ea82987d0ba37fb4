//! Checks on user input, each failing with one clear line.
use std::net::Ipv4Addr;

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

/// `[IP:]HOSTPORT[-END]:CONTPORT[-END][/tcp|udp]`.
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
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [h, c] => (None, *h, *c),
        [ip, h, c] => (Some(*ip), *h, *c),
        _ => {
            return Err(format!(
                "invalid port spec {spec:?}: expected [IP:]HOSTPORT:CONTAINERPORT[/PROTO]"
            ));
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("invalid port spec {spec:?}: {s:?} is not an IPv4 address"))?,
        ),
    };
    let host_ip = host_ip.filter(|ip| !ip.is_unspecified());
    let (hp, hpe) = parse_range(spec, host)?;
    let (cp, cpe) = parse_range(spec, cont)?;
    if hpe - hp != cpe - cp {
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

/// Do two bindings claim a common host port (same protocol, overlapping address)?
pub fn ports_clash(a: &PortBinding, b: &PortBinding) -> Option<u16> {
    if a.proto != b.proto {
        return None;
    }
    if let (Some(x), Some(y)) = (a.host_ip, b.host_ip)
        && x != y
    {
        return None;
    }
    let lo = a.host_port.max(b.host_port);
    let hi = a.host_port_end.min(b.host_port_end);
    (lo <= hi).then_some(lo)
}

/// `0.0.0.0:8081` for messages.
pub fn bind_addr(p: &PortBinding, port: u16) -> String {
    format!("{}:{port}", p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let p = parse_port_spec("127.0.0.1:5000-5002:6000-6002/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!((p.host_port_end, p.container_port_end), (5002, 6002));
        assert_eq!(p.proto, PortProto::Udp);
        for (bad, want) in [
            ("0:80", "port 0 is out of range"),
            ("70000:80", "port 70000 is out of range"),
            ("8090-8080:80-90", "ends before it starts"),
            ("8080-8081:80-82", "differ in length"),
            ("80", "expected [IP:]HOSTPORT:CONTAINERPORT"),
            ("x:80", "is not a port"),
            ("80:80/sctp", "unknown protocol"),
            ("1.2.3:80:80", "is not an IPv4 address"),
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
}
