//! Address management: pure functions, unit-tested without a kernel.
//!
//! - [`pick_subnet`]: the next free pool for a network created without `--subnet`.
//! - [`allocate`]: the lowest free address of a subnet (or its `--ip-range`),
//!   so a released address is handed out again, as the seed shows.
//! - [`validate_pool`]: the checks `network create` makes on its arguments.
//! - IPv6 (dual-stack networks): [`pick_subnet6`] (the next free /64 of
//!   pier's ULA pool [`ULA_POOL`]), [`parse_subnet6`], [`validate_pool6`],
//!   [`allocate6`].
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid subnet {0}")]
    InvalidSubnet(String),
    #[error("invalid subnet {given}: it should be {want}")]
    HostBitsSet { given: String, want: Ipv4Net },
    #[error("subnet {0} is too small: the prefix length must be at most 30")]
    TooSmall(Ipv4Net),
    #[error("invalid gateway {0}")]
    InvalidGateway(String),
    #[error("no matching subnet for gateway {0}")]
    GatewayOutside(Ipv4Addr),
    #[error("invalid ip range {0}")]
    InvalidRange(String),
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutside { range: Ipv4Net, subnet: Ipv4Net },
    #[error("Pool overlaps with other one on this address space")]
    Overlap,
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    NoPool,
    #[error("no available IPv4 addresses on network {0}")]
    Exhausted(String),
    #[error("no available IPv4 address {ip}: it is not in network {net}'s range {range}")]
    OutOfRange {
        ip: Ipv4Addr,
        net: String,
        range: Ipv4Net,
    },
    #[error("Address already in use: {0}")]
    InUse(Ipv4Addr),
    #[error("invalid IPv6 subnet {0}")]
    InvalidSubnet6(String),
    #[error("invalid IPv6 subnet {given}: it should be {want}")]
    HostBitsSet6 { given: String, want: Ipv6Net },
    #[error("IPv6 subnet {0} is too small: the prefix length must be at most 124")]
    TooSmall6(Ipv6Net),
    #[error("invalid IPv6 gateway {0}")]
    InvalidGateway6(String),
    #[error("no matching subnet for IPv6 gateway {0}")]
    GatewayOutside6(Ipv6Addr),
    #[error("invalid IPv6 ip range {0}")]
    InvalidRange6(String),
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutside6 { range: Ipv6Net, subnet: Ipv6Net },
    #[error(
        "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network"
    )]
    NoPool6,
    #[error("no available IPv6 addresses on network {0}")]
    Exhausted6(String),
    #[error("no available IPv6 address {ip}: it is not in network {net}'s range {range}")]
    OutOfRange6 {
        ip: Ipv6Addr,
        net: String,
        range: Ipv6Net,
    },
    #[error("Address already in use: {0}")]
    InUse6(Ipv6Addr),
}

/// pier's IPv6 pool: the unique local /48 `fd50:6965:7200::/48` (global ID
/// 50:6965:7200, "Pier" in ASCII), handed out as /64s in order.
pub const ULA_POOL: &str = "fd50:6965:7200::/48";

pub fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first /64 of [`ULA_POOL`] that overlaps none of `taken` (this
/// agent's IPv6 subnets and those routed on the host).
pub fn pick_subnet6(taken: &[Ipv6Net]) -> Result<Ipv6Net, IpamError> {
    let pool: Ipv6Net = ULA_POOL.parse().expect("pool");
    pool.subnets(64)
        .expect("/64s of a /48")
        .find(|p| !taken.iter().any(|t| overlaps6(p, t)))
        .ok_or(IpamError::NoPool6)
}

/// Parse an IPv6 `--subnet`: a network address, prefix length at most 124.
pub fn parse_subnet6(s: &str) -> Result<Ipv6Net, IpamError> {
    let n: Ipv6Net = s
        .parse()
        .map_err(|_| IpamError::InvalidSubnet6(s.to_string()))?;
    if n.addr() != n.network() {
        return Err(IpamError::HostBitsSet6 {
            given: s.to_string(),
            want: n.trunc(),
        });
    }
    if n.prefix_len() > 124 {
        return Err(IpamError::TooSmall6(n));
    }
    Ok(n)
}

/// Usable IPv6 host addresses of `net`: all but the subnet-router anycast
/// address (the network address itself).
fn is_host6(net: &Ipv6Net, ip: Ipv6Addr) -> bool {
    net.contains(&ip) && ip != net.network()
}

pub fn first_host6(subnet: &Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// Check an IPv6 pool's parts; returns the gateway (`::1` by default).
pub fn validate_pool6(
    subnet: Ipv6Net,
    gateway: Option<&str>,
    ip_range: Option<&str>,
) -> Result<(Ipv6Addr, Option<Ipv6Net>), IpamError> {
    let gw = match gateway {
        Some(g) => {
            let ip: Ipv6Addr = g
                .parse()
                .map_err(|_| IpamError::InvalidGateway6(g.to_string()))?;
            if !is_host6(&subnet, ip) {
                return Err(IpamError::GatewayOutside6(ip));
            }
            ip
        }
        None => first_host6(&subnet),
    };
    let range = match ip_range {
        Some(r) => {
            let n: Ipv6Net = r
                .parse()
                .map_err(|_| IpamError::InvalidRange6(r.to_string()))?;
            if n.addr() != n.network() {
                return Err(IpamError::InvalidRange6(r.to_string()));
            }
            if !subnet.contains(&n) {
                return Err(IpamError::RangeOutside6 { range: n, subnet });
            }
            Some(n)
        }
        None => None,
    };
    Ok((gw, range))
}

/// [`allocate`] for IPv6: `requested` if free and inside the subnet, else
/// the lowest free address of `range` (or the subnet), never the gateway.
/// The search stops after `used.len() + 2` candidates: the lowest free one
/// is always among them.
pub fn allocate6(
    net_name: &str,
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    range: Option<Ipv6Net>,
    used: &BTreeSet<Ipv6Addr>,
    requested: Option<Ipv6Addr>,
) -> Result<Ipv6Addr, IpamError> {
    if let Some(ip) = requested {
        if !is_host6(&subnet, ip) {
            return Err(IpamError::OutOfRange6 {
                ip,
                net: net_name.to_string(),
                range: subnet,
            });
        }
        if ip == gateway || used.contains(&ip) {
            return Err(IpamError::InUse6(ip));
        }
        return Ok(ip);
    }
    let pool = range.unwrap_or(subnet);
    let (lo, hi) = (u128::from(pool.network()), u128::from(pool.broadcast()));
    let tries = used.len() as u128 + 2;
    (lo..=hi.min(lo.saturating_add(tries)))
        .map(Ipv6Addr::from)
        .find(|ip| is_host6(&subnet, *ip) && *ip != gateway && !used.contains(ip))
        .ok_or_else(|| IpamError::Exhausted6(net_name.to_string()))
}

/// Default pools: 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 blocks.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let b20 = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    b16.chain(b20)
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first default pool that overlaps none of `taken` (networks of this
/// agent and subnets routed on the host).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    default_pools()
        .find(|p| !taken.iter().any(|t| overlaps(p, t)))
        .ok_or(IpamError::NoPool)
}

/// Parse a `--subnet`: a network address with a prefix length of at most 30.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, IpamError> {
    let n: Ipv4Net = s
        .parse()
        .map_err(|_| IpamError::InvalidSubnet(s.to_string()))?;
    if n.addr() != n.network() {
        return Err(IpamError::HostBitsSet {
            given: s.to_string(),
            want: n.trunc(),
        });
    }
    if n.prefix_len() > 30 {
        return Err(IpamError::TooSmall(n));
    }
    Ok(n)
}

/// The usable host addresses of `net`: all but the network and broadcast addresses.
fn is_host(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

/// Check a pool's parts; returns the gateway (the first host address by default).
pub fn validate_pool(
    subnet: Ipv4Net,
    gateway: Option<&str>,
    ip_range: Option<&str>,
) -> Result<(Ipv4Addr, Option<Ipv4Net>), IpamError> {
    let gw = match gateway {
        Some(g) => {
            let ip: Ipv4Addr = g
                .parse()
                .map_err(|_| IpamError::InvalidGateway(g.to_string()))?;
            if !is_host(&subnet, ip) {
                return Err(IpamError::GatewayOutside(ip));
            }
            ip
        }
        None => first_host(&subnet),
    };
    let range = match ip_range {
        Some(r) => {
            let n: Ipv4Net = r
                .parse()
                .map_err(|_| IpamError::InvalidRange(r.to_string()))?;
            if n.addr() != n.network() {
                return Err(IpamError::InvalidRange(r.to_string()));
            }
            if !subnet.contains(&n) {
                return Err(IpamError::RangeOutside { range: n, subnet });
            }
            Some(n)
        }
        None => None,
    };
    Ok((gw, range))
}

pub fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Pick an address on a network: `requested` if it is free and inside the
/// subnet, else the lowest free host address of `range` (or the subnet),
/// never the gateway.
pub fn allocate(
    net_name: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    range: Option<Ipv4Net>,
    used: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    if let Some(ip) = requested {
        if !is_host(&subnet, ip) {
            return Err(IpamError::OutOfRange {
                ip,
                net: net_name.to_string(),
                range: subnet,
            });
        }
        if ip == gateway || used.contains(&ip) {
            return Err(IpamError::InUse(ip));
        }
        return Ok(ip);
    }
    let pool = range.unwrap_or(subnet);
    let (lo, hi) = (u32::from(pool.network()), u32::from(pool.broadcast()));
    (lo..=hi)
        .map(Ipv4Addr::from)
        // The range's own first and last addresses are handed out too (as
        // Docker does); only the subnet's network and broadcast are not.
        .find(|ip| is_host(&subnet, *ip) && *ip != gateway && !used.contains(ip))
        .ok_or_else(|| IpamError::Exhausted(net_name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_in_order_released_reused_and_bad_pools_refused() {
        let sn: Ipv6Net = "fd00:1::/64".parse().unwrap();
        let (gw, range) = validate_pool6(sn, None, None).unwrap();
        assert_eq!((gw, range), ("fd00:1::1".parse().unwrap(), None));
        let mut used = BTreeSet::new();
        let a = allocate6("n", sn, gw, None, &used, None).unwrap();
        used.insert(a);
        let b = allocate6("n", sn, gw, None, &used, None).unwrap();
        used.insert(b);
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("fd00:1::2".into(), "fd00:1::3".into())
        );
        used.remove(&a);
        assert_eq!(allocate6("n", sn, gw, None, &used, None).unwrap(), a);
        let taken = allocate6("n", sn, gw, None, &used, Some(b)).unwrap_err();
        assert_eq!(taken, IpamError::InUse6(b));
        let out = allocate6("n", sn, gw, None, &used, Some("fd00:2::5".parse().unwrap()));
        assert!(matches!(out, Err(IpamError::OutOfRange6 { .. })));
        let r: Ipv6Net = "fd00:1::100/120".parse().unwrap();
        assert_eq!(
            allocate6("n", sn, gw, Some(r), &used, None)
                .unwrap()
                .to_string(),
            "fd00:1::100"
        );
        assert!(matches!(
            validate_pool6(sn, Some("fd00:9::1"), None),
            Err(IpamError::GatewayOutside6(_))
        ));
        assert!(matches!(
            validate_pool6(sn, None, Some("fd00:9::/120")),
            Err(IpamError::RangeOutside6 { .. })
        ));
        assert!(matches!(
            parse_subnet6("fd00:1::5/64"),
            Err(IpamError::HostBitsSet6 { .. })
        ));
        assert!(matches!(
            parse_subnet6("10.0.0.0/8"),
            Err(IpamError::InvalidSubnet6(_))
        ));
        // The pool's /64s in order, skipping taken ones.
        let first = pick_subnet6(&[]).unwrap();
        assert_eq!(first.to_string(), "fd50:6965:7200::/64");
        let second = pick_subnet6(&[first, "fd50:6965:7200:1::/80".parse().unwrap()]).unwrap();
        assert_eq!(second.to_string(), "fd50:6965:7200:2::/64");
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_in_order_and_released_ones_reused() {
        let sn = net("172.17.0.0/16");
        let gw = ip("172.17.0.1");
        let mut used = BTreeSet::new();
        let u1 = allocate("bridge", sn, gw, None, &used, None).unwrap();
        used.insert(u1);
        let u2 = allocate("bridge", sn, gw, None, &used, None).unwrap();
        used.insert(u2);
        assert_eq!((u1, u2), (ip("172.17.0.2"), ip("172.17.0.3")));
        used.remove(&u2);
        assert_eq!(
            allocate("bridge", sn, gw, None, &used, None).unwrap(),
            ip("172.17.0.3")
        );
    }

    #[test]
    fn gateway_elsewhere_frees_dot_one() {
        let sn = net("10.9.0.0/24");
        let used = BTreeSet::new();
        assert_eq!(
            allocate("n", sn, ip("10.9.0.254"), None, &used, None).unwrap(),
            ip("10.9.0.1")
        );
    }

    #[test]
    fn slash_30_holds_one_container() {
        let sn = net("10.9.0.0/30");
        let gw = first_host(&sn);
        let mut used = BTreeSet::new();
        used.insert(allocate("n", sn, gw, None, &used, None).unwrap());
        assert_eq!(used.iter().next(), Some(&ip("10.9.0.2")));
        assert_eq!(
            allocate("n", sn, gw, None, &used, None)
                .unwrap_err()
                .to_string(),
            "no available IPv4 addresses on network n"
        );
    }

    #[test]
    fn ip_range_limits_allocation() {
        let sn = net("10.9.0.0/16");
        let used = BTreeSet::new();
        assert_eq!(
            allocate(
                "n",
                sn,
                ip("10.9.0.1"),
                Some(net("10.9.5.0/24")),
                &used,
                None
            )
            .unwrap(),
            ip("10.9.5.0")
        );
    }

    #[test]
    fn ip_range_ends_are_handed_out_but_not_the_subnets() {
        let sn = net("10.9.0.0/24");
        let gw = ip("10.9.0.1");
        let all = |range: &str| {
            let mut used = BTreeSet::new();
            while let Ok(a) = allocate("n", sn, gw, Some(net(range)), &used, None) {
                used.insert(a);
            }
            used.into_iter().collect::<Vec<_>>()
        };
        // Inside the subnet: the range's first and last address too.
        assert_eq!(
            all("10.9.0.8/30"),
            [
                ip("10.9.0.8"),
                ip("10.9.0.9"),
                ip("10.9.0.10"),
                ip("10.9.0.11")
            ]
        );
        // At the subnet's edges: not its network address, gateway or broadcast.
        assert_eq!(all("10.9.0.0/30"), [ip("10.9.0.2"), ip("10.9.0.3")]);
        assert_eq!(
            all("10.9.0.252/30"),
            [ip("10.9.0.252"), ip("10.9.0.253"), ip("10.9.0.254")]
        );
    }

    #[test]
    fn requested_ip_checks() {
        let sn = net("10.9.0.0/24");
        let gw = ip("10.9.0.1");
        let used: BTreeSet<_> = [ip("10.9.0.7")].into();
        assert_eq!(
            allocate("n", sn, gw, None, &used, Some(ip("10.9.0.9"))).unwrap(),
            ip("10.9.0.9")
        );
        assert_eq!(
            allocate("n", sn, gw, None, &used, Some(ip("10.9.0.7"))),
            Err(IpamError::InUse(ip("10.9.0.7")))
        );
        assert_eq!(
            allocate("n", sn, gw, None, &used, Some(gw)),
            Err(IpamError::InUse(gw))
        );
        assert!(matches!(
            allocate("n", sn, gw, None, &used, Some(ip("10.10.0.7"))),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            allocate("n", sn, gw, None, &used, Some(ip("10.9.0.255"))),
            Err(IpamError::OutOfRange { .. })
        ));
    }

    #[test]
    fn subnet_picking_skips_taken_and_routed() {
        assert_eq!(pick_subnet(&[]).unwrap(), net("172.17.0.0/16"));
        assert_eq!(
            pick_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]).unwrap(),
            net("172.19.0.0/16")
        );
        let all16: Vec<_> = (17..=31)
            .map(|b| net(&format!("172.{b}.0.0/16")))
            .chain([net("192.168.0.0/24")])
            .collect();
        assert_eq!(pick_subnet(&all16).unwrap(), net("192.168.16.0/20"));
        let everything = [net("0.0.0.0/0")];
        assert_eq!(pick_subnet(&everything), Err(IpamError::NoPool));
    }

    #[test]
    fn subnet_and_gateway_validation() {
        assert!(matches!(
            parse_subnet("10.0.0.0/33"),
            Err(IpamError::InvalidSubnet(_))
        ));
        assert!(matches!(
            parse_subnet("banana"),
            Err(IpamError::InvalidSubnet(_))
        ));
        assert_eq!(
            parse_subnet("10.0.0.1/24").unwrap_err().to_string(),
            "invalid subnet 10.0.0.1/24: it should be 10.0.0.0/24"
        );
        assert!(matches!(
            parse_subnet("10.0.0.0/31"),
            Err(IpamError::TooSmall(_))
        ));
        let sn = parse_subnet("10.0.0.0/24").unwrap();
        assert_eq!(
            validate_pool(sn, None, None).unwrap(),
            (ip("10.0.0.1"), None)
        );
        assert_eq!(
            validate_pool(sn, Some("10.0.1.1"), None),
            Err(IpamError::GatewayOutside(ip("10.0.1.1")))
        );
        assert_eq!(
            validate_pool(sn, Some("10.0.0.0"), None),
            Err(IpamError::GatewayOutside(ip("10.0.0.0")))
        );
        assert!(matches!(
            validate_pool(sn, None, Some("10.0.1.0/25")),
            Err(IpamError::RangeOutside { .. })
        ));
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.5.0.0/16")));
        assert!(!overlaps(&net("10.0.0.0/16"), &net("10.1.0.0/16")));
    }
}
