//! The per-container `/etc` files: hosts, resolv.conf, hostname.
use std::path::Path;

use crate::state::Link;

const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// `/etc/hosts`: localhost lines, one line per `--link`, then the container's
/// own address(es) with its hostname.
pub fn hosts(
    hostname: &str,
    own: &[std::net::IpAddr],
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

/// `--dns-search` and `--dns-option` of a container: each, when given,
/// replaces the host's `search`/`domain` or `options` lines (Docker's rule);
/// a search list of just `.` means no search line at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsOverrides<'a> {
    pub search: &'a [String],
    pub options: &'a [String],
}

impl DnsOverrides<'_> {
    fn search_line(&self) -> Option<String> {
        match self.search {
            [] => None,
            [dot] if dot == "." => Some(String::new()),
            s => Some(format!("search {}\n", s.join(" "))),
        }
    }
}

/// resolv.conf for a container that is on no user-defined network (default
/// bridge, `none`, host mode with DNS flags): `servers` when given (`pier run
/// --dns`, `pier agent --dns-upstream`), else the host's reachable nameservers
/// (looking through systemd-resolved's stub, see
/// [`crate::dns::system_upstreams`]); then the host's `search`/`domain`/
/// `options` lines unless `ov` replaces them, as Docker does.
pub fn bridge_resolv_conf(
    host_text: &str,
    resolved_text: Option<&str>,
    servers: &[std::net::IpAddr],
    ov: DnsOverrides,
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
    let search = ov.search_line();
    if let Some(l) = &search {
        out += l;
    }
    for line in host_text.lines() {
        let t = line.trim();
        let keep = match t.split_whitespace().next() {
            Some("search") | Some("domain") => search.is_none(),
            Some("options") => ov.options.is_empty(),
            _ => false,
        };
        if keep {
            out += t;
            out.push('\n');
        }
    }
    if !ov.options.is_empty() {
        out += &format!("options {}\n", ov.options.join(" "));
    }
    out
}

/// resolv.conf for a container on a user-defined network: the embedded
/// resolver, with `ndots:0` unless the container's own options set ndots.
pub fn embedded_resolv_conf(ov: DnsOverrides) -> String {
    let mut out = String::from("nameserver 127.0.0.11\n");
    if let Some(l) = ov.search_line() {
        out += &l;
    }
    let mut opts: Vec<&str> = Vec::new();
    if !ov.options.iter().any(|o| o.starts_with("ndots:")) {
        opts.push("ndots:0");
    }
    opts.extend(ov.options.iter().map(String::as_str));
    out += &format!("options {}\n", opts.join(" "));
    out
}

/// `/etc/hosts` of a host-mode container with `--add-host`: the host's own
/// file and then the extra lines.
pub fn host_mode_hosts(host_text: &str, extra: &[(String, std::net::IpAddr)]) -> String {
    let mut s = host_text.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for (name, ip) in extra {
        s += &format!("{ip}\t{name}\n");
    }
    s
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
    use std::net::Ipv4Addr;

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
            bridge_resolv_conf(host, Some(resolved), &[], DnsOverrides::default()),
            "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch lan\noptions edns0\n"
        );
        let own = [
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        assert_eq!(
            bridge_resolv_conf(host, Some(resolved), &own, DnsOverrides::default()),
            "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan\noptions edns0\n"
        );
        assert_eq!(
            bridge_resolv_conf("nameserver 127.0.0.1\n", None, &[], DnsOverrides::default()),
            ""
        );
    }

    #[test]
    fn dns_search_and_options_replace_the_hosts() {
        let host = "nameserver 10.0.0.2\ndomain corp\nsearch lan\noptions edns0\n";
        let search = vec!["a.example".to_string(), "b.example".to_string()];
        let options = vec!["timeout:2".to_string(), "attempts:3".to_string()];
        let both = DnsOverrides {
            search: &search,
            options: &options,
        };
        assert_eq!(
            bridge_resolv_conf(host, None, &[], both),
            "nameserver 10.0.0.2\nsearch a.example b.example\noptions timeout:2 attempts:3\n"
        );
        let only_opts = DnsOverrides {
            search: &[],
            options: &options,
        };
        assert_eq!(
            bridge_resolv_conf(host, None, &[], only_opts),
            "nameserver 10.0.0.2\ndomain corp\nsearch lan\noptions timeout:2 attempts:3\n"
        );
        let dot = vec![".".to_string()];
        let none = DnsOverrides {
            search: &dot,
            options: &[],
        };
        assert_eq!(
            bridge_resolv_conf(host, None, &[], none),
            "nameserver 10.0.0.2\noptions edns0\n"
        );
        assert_eq!(
            embedded_resolv_conf(DnsOverrides::default()),
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert_eq!(
            embedded_resolv_conf(both),
            "nameserver 127.0.0.11\nsearch a.example b.example\noptions ndots:0 timeout:2 attempts:3\n"
        );
        let ndots = vec!["ndots:2".to_string()];
        assert_eq!(
            embedded_resolv_conf(DnsOverrides {
                search: &[],
                options: &ndots
            }),
            "nameserver 127.0.0.11\noptions ndots:2\n"
        );
    }

    #[test]
    fn host_mode_hosts_appends() {
        let extra = vec![("db".to_string(), "10.0.0.5".parse().unwrap())];
        assert_eq!(
            host_mode_hosts("127.0.0.1 localhost", &extra),
            "127.0.0.1 localhost\n10.0.0.5\tdb\n"
        );
    }

    #[test]
    fn hosts_with_link() {
        let l = Link {
            container_id: "x".into(),
            name: "db".into(),
            alias: Some("database".into()),
            ip: Ipv4Addr::new(172, 17, 0, 2),
        };
        let h = hosts("abc", &[Ipv4Addr::new(172, 17, 0, 3).into()], &[l], &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(
            h.ends_with("172.17.0.2\tdatabase db\n172.17.0.3\tabc\n"),
            "{h}"
        );
    }
}
