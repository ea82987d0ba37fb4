//! The per-container `/etc` files: hosts, resolv.conf, hostname.
use std::{net::Ipv4Addr, path::Path};

use crate::state::Link;

const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// `/etc/hosts`: localhost lines, one line per `--link`, then the container's
/// own address(es) with its hostname.
pub fn hosts(
    hostname: &str,
    own: &[Ipv4Addr],
    links: &[Link],
    extra: &[(String, std::net::IpAddr)],
) -> String {
    let mut s = String::from(HOSTS_HEAD);
    // `--add-host` lines first, as Docker writes them.
    for (name, ip) in extra {
        s += &format!("{ip}\t{name}\n");
    }
    for l in links {
        match &l.alias {
            Some(a) if a != &l.name => s += &format!("{}\t{} {}\n", l.ip, a, l.name),
            _ => s += &format!("{}\t{}\n", l.ip, l.name),
        }
    }
    for ip in own {
        s += &format!("{ip}\t{hostname}\n");
    }
    s
}

/// Nameservers of the host's resolv.conf that a container can reach
/// (loopback ones skipped, as Docker does), with its search/options lines.
pub fn host_resolv_conf(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        let mut w = t.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                let keep = w
                    .next()
                    .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|a| !a.is_loopback());
                if keep {
                    out += t;
                    out.push('\n');
                }
            }
            Some("search") | Some("options") | Some("domain") => {
                out += t;
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// resolv.conf for a container that is on no user-defined network (default
/// bridge, `none`): `servers` when given (`pier run --dns`, `pier agent
/// --dns-upstream`), else the host's reachable nameservers (looking through
/// systemd-resolved's stub, see [`crate::dns::system_upstreams`]); the host's
/// `search`/`domain`/`options` lines either way, as Docker does.
pub fn bridge_resolv_conf(
    host_text: &str,
    resolved_text: Option<&str>,
    servers: &[std::net::IpAddr],
) -> String {
    let servers = if servers.is_empty() {
        crate::dns::upstreams_with_resolved(host_text, resolved_text)
    } else {
        servers.to_vec()
    };
    let mut out = String::new();
    for ns in servers {
        out += &format!("nameserver {ns}\n");
    }
    for line in host_text.lines() {
        let t = line.trim();
        if matches!(
            t.split_whitespace().next(),
            Some("search") | Some("options") | Some("domain")
        ) {
            out += t;
            out.push('\n');
        }
    }
    out
}

/// resolv.conf for a container on a user-defined network: the embedded resolver.
pub fn embedded_resolv_conf() -> String {
    "nameserver 127.0.0.11\noptions ndots:0\n".to_string()
}

pub fn write_all(dir: &Path, hostname: &str, hosts: &str, resolv: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(dir.join("resolv.conf"), resolv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_skips_loopback() {
        let t = "# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch lan\noptions edns0\n";
        assert_eq!(
            host_resolv_conf(t),
            "nameserver 10.0.0.2\nsearch lan\noptions edns0\n"
        );
    }

    #[test]
    fn bridge_resolv_conf_servers() {
        let host = "nameserver 127.0.0.53\nsearch lan\noptions edns0\n";
        let resolved = "nameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(
            bridge_resolv_conf(host, Some(resolved), &[]),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch lan\noptions edns0\n"
        );
        let own = [
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        assert_eq!(
            bridge_resolv_conf(host, Some(resolved), &own),
            "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan\noptions edns0\n"
        );
        assert_eq!(bridge_resolv_conf("nameserver 127.0.0.1\n", None, &[]), "");
    }

    #[test]
    fn hosts_with_link() {
        let l = Link {
            container_id: "x".into(),
            name: "db".into(),
            alias: Some("database".into()),
            ip: Ipv4Addr::new(172, 17, 0, 2),
        };
        let h = hosts("abc", &[Ipv4Addr::new(172, 17, 0, 3)], &[l], &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(
            h.ends_with("172.17.0.2\tdatabase db\n172.17.0.3\tabc\n"),
            "{h}"
        );
    }
}
