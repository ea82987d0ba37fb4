//! Docker Engine API compatibility: API versions, the strict body parser,
//! Docker's request shapes turned into the daemon's requests (refusing what
//! pier does not support, naming the field), and `filters` on lists.
use std::collections::BTreeMap;

use serde_json::Value;

use super::types::{
    EndpointSettings, NetworkConnect, NetworkConnectBody, NetworkCreate, NetworkCreateBody,
};
use crate::{
    error::{AgentError, invalid},
    state::{DRIVER_BRIDGE, DRIVER_HOST, DRIVER_NULL, Network, State},
};

/// The newest Engine API version pier speaks (`/_ping`'s `Api-Version`).
pub const API_VERSION: &str = "1.44";
/// The oldest one it accepts in a `/vX.Y/` path.
pub const MIN_API_VERSION: &str = "1.24";

fn version_num(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `/v1.41/networks` → `Ok(Some("/networks"))`; a path without a version
/// → `Ok(None)`; a version pier does not speak → Docker's error text.
pub fn strip_version(path: &str) -> Result<Option<&str>, String> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(None);
    };
    let (v, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(n) = version_num(v) else {
        return Ok(None);
    };
    let max = version_num(API_VERSION).unwrap();
    let min = version_num(MIN_API_VERSION).unwrap();
    if n > max {
        return Err(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        ));
    }
    if n < min {
        return Err(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        ));
    }
    Ok(Some(tail))
}

/// Parse a JSON body strictly: an unknown field, a wrong type or a missing
/// one is an error that names the field (`IPAM.Config[0].Subnet: …`).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AgentError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("empty request body: a JSON object is needed"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde's text ends with "at line 1 column N": not helpful here.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        if path == "." || path.is_empty() {
            invalid(format!("invalid request body: {msg}"))
        } else {
            invalid(format!("invalid request body: {path}: {msg}"))
        }
    })
}

fn refuse(field: &str, value: impl std::fmt::Display, why: &str) -> AgentError {
    invalid(format!("{field}: {value}: {why}"))
}

/// Docker's `network create` body as the daemon's request.
pub fn network_create(b: NetworkCreateBody) -> Result<NetworkCreate, AgentError> {
    if let Some(d) = b.driver.as_deref()
        && !d.is_empty()
        && d != DRIVER_BRIDGE
    {
        return Err(refuse(
            "Driver",
            format!("{d:?}"),
            "pier creates bridge networks only",
        ));
    }
    if let Some(s) = b.scope.as_deref()
        && !s.is_empty()
        && s != "local"
    {
        return Err(refuse("Scope", format!("{s:?}"), "pier networks are local"));
    }
    for (field, v) in [
        ("Attachable", b.attachable),
        ("Ingress", b.ingress),
        ("ConfigOnly", b.config_only),
    ] {
        if v {
            return Err(refuse(field, v, "not supported by pier"));
        }
    }
    if let Some(c) = &b.config_from
        && !c.is_null()
    {
        return Err(refuse("ConfigFrom", c, "not supported by pier"));
    }
    if b.enable_ipv4 == Some(false) {
        return Err(refuse(
            "EnableIPv4",
            false,
            "pier networks are IPv4 networks",
        ));
    }
    let mut req = NetworkCreate {
        name: b.name,
        enable_ipv6: b.enable_ipv6 == Some(true),
        internal: b.internal,
        options: b.options.unwrap_or_default(),
        labels: b.labels.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(ipam) = b.ipam {
        if let Some(d) = ipam.driver.as_deref()
            && !d.is_empty()
            && d != "default"
        {
            return Err(refuse(
                "IPAM.Driver",
                format!("{d:?}"),
                "pier's own IPAM (\"default\") only",
            ));
        }
        if let Some(o) = &ipam.options
            && !o.is_empty()
        {
            return Err(refuse(
                "IPAM.Options",
                format!("{o:?}"),
                "no IPAM options are supported",
            ));
        }
        let configs = ipam.config.unwrap_or_default();
        // One pool per family: IPv4, and IPv6 with EnableIPv6; a pool's
        // family is its subnet's (else its gateway's or range's).
        let (mut v4, mut v6) = (false, false);
        for (i, c) in configs.into_iter().enumerate() {
            if let Some(a) = &c.auxiliary_addresses
                && !a.is_empty()
            {
                return Err(refuse(
                    &format!("IPAM.Config[{i}].AuxiliaryAddresses"),
                    format!("{a:?}"),
                    "not supported by pier",
                ));
            }
            let is6 = [&c.subnet, &c.gateway, &c.ip_range]
                .into_iter()
                .flatten()
                .next()
                .is_some_and(|v| v.contains(':'));
            if (is6 && v6) || (!is6 && v4) {
                return Err(refuse(
                    &format!("IPAM.Config[{i}]"),
                    if is6 { "IPv6" } else { "IPv4" },
                    "one pool per address family",
                ));
            }
            // The values as pier's IPAM reads them, its message prefixed
            // with the field.
            let field =
                |f: &str, e: crate::ipam::IpamError| invalid(format!("IPAM.Config[{i}].{f}: {e}"));
            if is6 {
                if !req.enable_ipv6 {
                    return Err(refuse(
                        &format!("IPAM.Config[{i}]"),
                        "an IPv6 pool",
                        "needs EnableIPv6 (--ipv6)",
                    ));
                }
                v6 = true;
                if let Some(v) = &c.subnet {
                    crate::ipam::parse_subnet6(v).map_err(|e| field("Subnet", e))?;
                }
                if let Some(v) = &c.ip_range
                    && v.parse::<ipnet::Ipv6Net>().is_err()
                {
                    return Err(field(
                        "IPRange",
                        crate::ipam::IpamError::InvalidRange6(v.clone()),
                    ));
                }
                if let Some(v) = &c.gateway
                    && v.parse::<std::net::Ipv6Addr>().is_err()
                {
                    return Err(field(
                        "Gateway",
                        crate::ipam::IpamError::InvalidGateway6(v.clone()),
                    ));
                }
                req.subnet6 = c.subnet;
                req.ip_range6 = c.ip_range;
                req.gateway6 = c.gateway;
                continue;
            }
            v4 = true;
            if let Some(v) = &c.subnet {
                crate::ipam::parse_subnet(v).map_err(|e| field("Subnet", e))?;
            }
            if let Some(v) = &c.ip_range
                && v.parse::<ipnet::Ipv4Net>().is_err()
            {
                return Err(field(
                    "IPRange",
                    crate::ipam::IpamError::InvalidRange(v.clone()),
                ));
            }
            if let Some(v) = &c.gateway
                && v.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err(field(
                    "Gateway",
                    crate::ipam::IpamError::InvalidGateway(v.clone()),
                ));
            }
            req.subnet = c.subnet;
            req.ip_range = c.ip_range;
            req.gateway = c.gateway;
        }
    }
    Ok(req)
}

/// Docker's `network connect` body as the daemon's request.
pub fn network_connect(b: NetworkConnectBody) -> Result<NetworkConnect, AgentError> {
    let e: EndpointSettings = b.endpoint_config.unwrap_or_default();
    let empty_s = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    let unsupported: [(&str, bool); 5] = [
        (
            "EndpointConfig.Links",
            e.links.as_ref().is_some_and(|l| !l.is_empty()),
        ),
        ("EndpointConfig.MacAddress", !empty_s(&e.mac_address)),
        (
            "EndpointConfig.DriverOpts",
            e.driver_opts.as_ref().is_some_and(|o| !o.is_empty()),
        ),
        (
            "EndpointConfig.IPAMConfig.LinkLocalIPs",
            e.ipam_config
                .as_ref()
                .and_then(|c| c.link_local_ips.as_ref())
                .is_some_and(|l| !l.is_empty()),
        ),
        (
            "EndpointConfig.GlobalIPv6Address",
            !empty_s(&e.global_ipv6_address),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(invalid(format!("{field}: not supported by pier")));
    }
    let ipv6 = e
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv6_address.clone())
        .filter(|s| !s.is_empty());
    if let Some(s) = &ipv6
        && s.parse::<std::net::Ipv6Addr>().is_err()
    {
        return Err(refuse(
            "EndpointConfig.IPAMConfig.IPv6Address",
            format!("{s:?}"),
            "not an IPv6 address",
        ));
    }
    let ipv4 = e
        .ipam_config
        .and_then(|c| c.ipv4_address)
        .filter(|s| !s.is_empty());
    if let Some(s) = &ipv4
        && s.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(refuse(
            "EndpointConfig.IPAMConfig.IPv4Address",
            format!("{s:?}"),
            "not an IPv4 address",
        ));
    }
    Ok(NetworkConnect {
        container: b.container,
        ipv4_address: ipv4,
        ipv6_address: ipv6,
        aliases: e.aliases.unwrap_or_default(),
    })
}

/// Docker's `filters` query parameter: `{"key":{"value":true}}` or the old
/// `{"key":["value"]}`. Keys outside `known` are refused.
pub fn parse_filters(
    raw: Option<&str>,
    known: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, AgentError> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(out);
    };
    let v: Value =
        serde_json::from_str(raw).map_err(|e| invalid(format!("invalid filters {raw:?}: {e}")))?;
    let Value::Object(m) = v else {
        return Err(invalid(format!("invalid filters {raw:?}: a JSON object")));
    };
    for (k, vals) in m {
        if !known.contains(&k.as_str()) {
            return Err(invalid(format!("invalid filter '{k}'")));
        }
        let list: Vec<String> = match vals {
            Value::Object(o) => o
                .into_iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(s, _)| s)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    o => Err(invalid(format!("invalid filter value {o} for '{k}'"))),
                })
                .collect::<Result<_, _>>()?,
            o => return Err(invalid(format!("invalid filter value {o} for '{k}'"))),
        };
        out.insert(k, list);
    }
    Ok(out)
}

/// Keys of `GET /networks?filters=` (Docker's).
pub const NETWORK_FILTERS: &[&str] =
    &["name", "id", "driver", "label", "type", "dangling", "scope"];

fn label_matches(labels: &BTreeMap<String, String>, f: &str) -> bool {
    match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    }
}

fn is_builtin(n: &Network) -> bool {
    n.default || n.driver == DRIVER_HOST || n.driver == DRIVER_NULL
}

/// Docker's matching rules: name (substring), id (prefix), driver (exact),
/// label (`KEY` or `KEY=VALUE`), type (`custom`/`builtin`), dangling
/// (no containers), scope (`local`). Values of one key are alternatives;
/// keys must all match.
pub fn network_matches(
    st: &State,
    n: &Network,
    f: &BTreeMap<String, Vec<String>>,
) -> Result<bool, AgentError> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let any = |p: &dyn Fn(&str) -> bool| vals.iter().any(|v| p(v));
        let ok = match k.as_str() {
            "name" => any(&|v| n.name.contains(v)),
            "id" => any(&|v| n.id.starts_with(v)),
            "driver" => any(&|v| n.driver == v),
            "label" => vals.iter().all(|v| label_matches(&n.labels, v)),
            "scope" => any(&|v| v == "local"),
            "type" => {
                for v in vals {
                    if v != "custom" && v != "builtin" {
                        return Err(invalid(format!(
                            "invalid filter: 'type'='{v}': custom or builtin"
                        )));
                    }
                }
                any(&|v| (v == "builtin") == is_builtin(n))
            }
            "dangling" => {
                let mut want = None;
                for v in vals {
                    want = Some(match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        o => {
                            return Err(invalid(format!(
                                "invalid filter 'dangling={o}': true or false"
                            )));
                        }
                    });
                }
                let dangling = !is_builtin(n) && st.containers_on(n).is_empty();
                want == Some(dangling)
            }
            _ => false,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Keys of `GET /containers/json?filters=` (Docker's).
pub const CONTAINER_FILTERS: &[&str] = &[
    "name", "id", "network", "status", "publish", "expose", "label",
];

/// `8080`, `8080/udp`, `8000-8010/tcp` as ports and a protocol.
fn port_filter(v: &str) -> Result<(u16, u16, Option<crate::state::PortProto>), AgentError> {
    let (ports, proto) = match v.split_once('/') {
        Some((p, "tcp")) => (p, Some(crate::state::PortProto::Tcp)),
        Some((p, "udp")) => (p, Some(crate::state::PortProto::Udp)),
        Some(_) => {
            return Err(invalid(format!(
                "invalid filter value {v:?}: PORT[/tcp|udp]"
            )));
        }
        None => (v, None),
    };
    let bad = || invalid(format!("invalid filter value {v:?}: PORT[-END][/tcp|udp]"));
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let p = ports.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    Ok((a, b, proto))
}

/// Docker's `ps` filters: name (substring), id (prefix), network (name or
/// id prefix), status, publish (a host port), expose (a container port,
/// exposed or published), label.
pub fn container_matches(
    st: &State,
    c: &crate::state::Container,
    status: &str,
    f: &BTreeMap<String, Vec<String>>,
) -> Result<bool, AgentError> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let mut ok = false;
        for v in vals {
            ok |= match k.as_str() {
                "name" => c.name.contains(v.trim_start_matches('/')),
                "id" => c.id.starts_with(v.as_str()),
                "network" => c.endpoints.iter().any(|e| {
                    st.networks
                        .get(&e.network_id)
                        .is_some_and(|n| n.name == *v || n.id.starts_with(v.as_str()))
                }),
                "status" => {
                    const KNOWN: &[&str] = &[
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !KNOWN.contains(&v.as_str()) {
                        return Err(invalid(format!(
                            "invalid filter 'status={v}': one of {}",
                            KNOWN.join(", ")
                        )));
                    }
                    status == v
                }
                "publish" => {
                    let (a, b, proto) = port_filter(v)?;
                    c.ports.iter().any(|p| {
                        proto.is_none_or(|x| x == p.proto)
                            && p.host_port <= b
                            && a <= p.host_port_end
                    })
                }
                "expose" => {
                    let (a, b, proto) = port_filter(v)?;
                    c.ports.iter().any(|p| {
                        proto.is_none_or(|x| x == p.proto)
                            && p.container_port <= b
                            && a <= p.container_port_end
                    }) || c
                        .exposed
                        .iter()
                        .any(|(p, pr)| proto.is_none_or(|x| x == *pr) && (a..=b).contains(p))
                }
                "label" => {
                    let mut l = BTreeMap::new();
                    if c.owner.is_engine() {
                        l.insert("pier.owner".to_string(), c.owner.as_str().to_string());
                    }
                    label_matches(&l, v)
                }
                _ => false,
            };
        }
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Ipam, IpamConfig};

    #[test]
    fn versions() {
        assert_eq!(strip_version("/v1.41/networks"), Ok(Some("/networks")));
        assert_eq!(strip_version("/v1.44/_ping"), Ok(Some("/_ping")));
        assert_eq!(strip_version("/networks"), Ok(None));
        assert_eq!(strip_version("/volumes"), Ok(None));
        assert!(
            strip_version("/v1.99/networks")
                .unwrap_err()
                .contains("too new")
        );
        assert!(
            strip_version("/v1.12/networks")
                .unwrap_err()
                .contains("too old")
        );
    }

    #[test]
    fn strict_bodies_name_the_field() {
        let e = parse_body::<NetworkCreateBody>(br#"{"Name":"x","Bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("Bogus"), "{e}");
        let e = parse_body::<NetworkCreateBody>(br#"{"Name":"x","Internal":"yes"}"#).unwrap_err();
        assert!(e.to_string().contains("Internal"), "{e}");
        let e = parse_body::<NetworkCreateBody>(
            br#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/24","Foo":""}]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("IPAM.Config[0]"), "{e}");
        assert!(parse_body::<NetworkCreateBody>(b"").is_err());
    }

    #[test]
    fn docker_network_bodies() {
        let b = NetworkCreateBody {
            name: "x".into(),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some("300.1.1.0/24".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = network_create(b).unwrap_err().to_string();
        assert!(
            e.contains("IPAM.Config[0].Subnet") && e.contains("300.1.1.0/24"),
            "{e}"
        );
        let ok = network_create(NetworkCreateBody {
            name: "x".into(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some("10.5.0.0/24".into()),
                    gateway: Some("10.5.0.1".into()),
                    ..Default::default()
                }]),
                options: Some(Default::default()),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.subnet.as_deref(), Some("10.5.0.0/24"));
        // Dual stack: one pool per family, the IPv6 one with EnableIPv6.
        let b: NetworkCreateBody = parse_body(
            br#"{"Name":"x","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"10.6.0.0/24"},{"Subnet":"fd00:6::/64","Gateway":"fd00:6::fe"}]}}"#,
        )
        .unwrap();
        let ok = network_create(b).unwrap();
        assert!(ok.enable_ipv6);
        assert_eq!(ok.subnet.as_deref(), Some("10.6.0.0/24"));
        assert_eq!(ok.subnet6.as_deref(), Some("fd00:6::/64"));
        assert_eq!(ok.gateway6.as_deref(), Some("fd00:6::fe"));
        let b: NetworkCreateBody = parse_body(br#"{"Name":"x","EnableIPv6":true}"#).unwrap();
        assert!(network_create(b).unwrap().subnet6.is_none());
        for bad in [
            r#"{"Name":"x","Driver":"overlay"}"#,
            r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"fd00:6::/64"}]}}"#,
            r#"{"Name":"x","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00:6::/64"},{"Subnet":"fd00:7::/64"}]}}"#,
            r#"{"Name":"x","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00:6::1/64"}]}}"#,
            r#"{"Name":"x","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00:6::/64","Gateway":"zz::1"}]}}"#,
            r#"{"Name":"x","Attachable":true}"#,
            r#"{"Name":"x","IPAM":{"Driver":"other"}}"#,
        ] {
            let b: NetworkCreateBody = parse_body(bad.as_bytes()).unwrap();
            assert!(network_create(b).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = parse_filters(Some(r#"{"driver":{"bridge":true}}"#), NETWORK_FILTERS).unwrap();
        assert_eq!(f["driver"], vec!["bridge"]);
        let f = parse_filters(Some(r#"{"name":["a","b"]}"#), NETWORK_FILTERS).unwrap();
        assert_eq!(f["name"], vec!["a", "b"]);
        assert!(parse_filters(Some(r#"{"colour":["red"]}"#), NETWORK_FILTERS).is_err());
        assert!(parse_filters(Some("nope"), NETWORK_FILTERS).is_err());
        assert!(parse_filters(None, NETWORK_FILTERS).unwrap().is_empty());
    }
}
