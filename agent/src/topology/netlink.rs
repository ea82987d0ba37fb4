//! [`Topology`] over rtnetlink and syscalls.
//!
//! One worker thread owns a netlink connection in the namespace the
//! [`NetlinkTopology`] was created in (the agent's host namespace). For work
//! inside a container namespace a second socket is opened on a short-lived
//! thread that joined it, and driven from the same worker.
//!
//! An endpoint is one RTM_NEWLINK that creates the veth pair with the host end
//! on the bridge and the peer directly inside the container (final name, MAC,
//! MTU), then up, address and default route inside. Removal hands the
//! deletion to a thread of its own and returns once the pair is unlisted.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use futures::TryStreamExt;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{
    BridgeSpec, EndpointSpec, Result, Topology, TopologyError, netns,
    worker::{Worker, ns_connection},
};

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;
const EXFULL: i32 = libc::EXFULL;

/// The kernel-backed topology.
pub struct NetlinkTopology {
    worker: Worker,
}

impl NetlinkTopology {
    /// Work on the network namespace of the calling thread (the "host").
    pub fn new() -> Result<Self> {
        Ok(NetlinkTopology {
            worker: Worker::start()?,
        })
    }

    /// The ifindex of a host interface, if it exists.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let name = name.to_string();
        self.worker
            .run(move |h| async move { Ok(link_by_name(&h, &name).await?.map(|l| l.header.index)) })
    }
}

impl NetlinkTopology {
    /// A veth pair with both ends in the host namespace: the host end on
    /// the bridge and up, the peer (`peer`, with the endpoint's MAC and MTU)
    /// left down for the engine to move into its sandbox.
    fn add_engine_veth(&self, ep: &EndpointSpec, peer: &str) -> Result<()> {
        check_ifname(peer)?;
        let (ep, peer) = (ep.clone(), peer.to_string());
        self.worker.run(move |h| async move {
            let bridge = match link_by_name(&h, &ep.bridge).await? {
                Some(l) if link_kind(&l) == Some(&InfoKind::Bridge) => l.header.index,
                _ => {
                    return Err(TopologyError::Invalid(format!(
                        "bridge {} does not exist",
                        ep.bridge
                    )));
                }
            };
            for n in [&ep.host_ifname, &peer] {
                if link_by_name(&h, n).await?.is_some() {
                    return Err(TopologyError::Invalid(format!(
                        "interface {n} already exists"
                    )));
                }
            }
            let mut p = LinkUnspec::new_with_name(&peer).address(ep.mac.to_vec());
            let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(ep.host_ifname.clone())
                .controller(bridge)
                .up();
            if let Some(m) = ep.mtu {
                p = p.mtu(m);
                host = host.mtu(m);
            }
            let msg = host
                .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
                .build();
            h.link().add(msg).execute().await.map_err(|e| {
                if errno(&e) == Some(EXFULL) {
                    bridge_full(&ep.bridge)
                } else {
                    nl(format!("create veth {} / {peer}", ep.host_ifname))(e)
                }
            })
        })
    }
}

/// The kernel's refusal of a bridge's 1 024th port, in words.
fn bridge_full(bridge: &str) -> TopologyError {
    TopologyError::Invalid(format!(
        "bridge {bridge} is full: a Linux bridge takes at most 1023 interfaces"
    ))
}

/// The errno of a netlink error reply, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> TopologyError {
    let op = op.into();
    move |e| TopologyError::Netlink {
        op,
        msg: match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        },
    }
}

/// Validate an interface name as the front ends do
/// ([`crate::config::valid_ifname`]), before the kernel sees it.
pub fn check_ifname(name: &str) -> Result<()> {
    if crate::config::valid_ifname(name) {
        Ok(())
    } else {
        Err(TopologyError::Invalid(format!(
            "invalid interface name {name:?}: 1 to 15 printable ASCII bytes, no '/', ':', '%' or spaces"
        )))
    }
}

fn check_mtu(mtu: Option<u32>) -> Result<()> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => Err(TopologyError::Invalid(format!(
            "invalid MTU {m}: must be 68 to 65535"
        ))),
        _ => Ok(()),
    }
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>> {
    let mut s = h.link().get().match_index(index).execute();
    match s.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link #{index}"))(e)),
    }
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind(l: &LinkMessage) -> Option<&InfoKind> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// Addresses (address, prefix length) on interface `index`, both families,
/// from one listing: IPv4 by its local address, IPv6 by its address.
async fn addrs(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("list addresses of #{index}")))?;
    Ok(msgs
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Local(ip @ IpAddr::V4(_))
                | AddressAttribute::Address(ip @ IpAddr::V6(_)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// Add IPv6 address `a` to interface `index` without duplicate address
/// detection (pier hands the addresses out: none is used twice).
async fn add_addr6(h: &Handle, index: u32, a: Ipv6Net, what: &str) -> Result<()> {
    let mut req = h.address().add(index, IpAddr::V6(a.addr()), a.prefix_len());
    let m = req.message_mut();
    m.header.flags |= AddressHeaderFlags::Nodad;
    m.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute()
        .await
        .map_err(nl(format!("add {a} to {what}")))
}

/// The IPv6 default route via `gw` out of `index`.
async fn add_default6(
    h: &Handle,
    index: u32,
    gw: Ipv6Addr,
    metric: Option<u32>,
    replace: bool,
) -> Result<()> {
    let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
        .gateway(gw)
        .output_interface(index);
    if let Some(m) = metric {
        b = b.priority(m);
    }
    let req = h.route().add(b.build());
    let req = if replace { req.replace() } else { req };
    req.execute()
        .await
        .map_err(nl(format!("add IPv6 default route via {gw}")))
}

async fn delete_link(h: &Handle, index: u32, what: &str) -> Result<()> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(nl(format!("delete {what}"))(e)),
    }
}

/// Delete link `index` of the calling thread's namespace from a thread of its
/// own (with its own socket, opened here so it belongs to this namespace).
/// The result arrives when the kernel has finished, RCU barrier included.
fn delete_in_background(
    index: u32,
    what: String,
) -> Result<tokio::sync::oneshot::Receiver<Result<()>>> {
    let sock = netns::netlink_socket().map_err(|e| super::worker::os("netlink socket", e))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pier-nl-delete".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build();
            let r = match rt {
                Ok(rt) => rt.block_on(async move {
                    let (h, conn) = ns_connection(sock);
                    let r = delete_link(&h, index, &what).await;
                    conn.abort();
                    r
                }),
                Err(e) => Err(super::worker::os("start netlink runtime", e)),
            };
            let _ = tx.send(r);
        })
        .map_err(|e| super::worker::os("spawn netlink thread", e))?;
    Ok(rx)
}

/// The MAC pier gives a bridge it creates: locally administered, derived
/// from the gateway (02:42 + gateway address), so it is stable across
/// re-creation and never changes when ports come and go.
pub fn bridge_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let o = gateway.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// [`bridge_mac`] of a bridge's spec: from its IPv4 gateway, else from the
/// low 32 bits of its IPv6 gateway, else (no address) from its name.
pub fn bridge_mac_of(b: &BridgeSpec) -> [u8; 6] {
    if let Some(g) = b.gateway {
        return bridge_mac(g);
    }
    let low = match b.gateway6 {
        Some(g6) => u32::from_be_bytes(g6.addr().octets()[12..].try_into().unwrap()),
        // FNV-1a of the name: stable across re-creation.
        None => b.name.bytes().fold(0x811c_9dc5u32, |h, c| {
            (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
        }),
    };
    bridge_mac(Ipv4Addr::from(low))
}

/// IPv4 routes of the main table.
async fn main_routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    let all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list routes"))?;
    Ok(all
        .into_iter()
        .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .collect())
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_dst(r: &RouteMessage) -> Option<Ipv4Net> {
    let addr = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(addr, r.header.destination_prefix_length)
        .ok()
        .map(|n| n.trunc())
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
        _ => None,
    })
}

fn route_priority(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

impl Topology for NetlinkTopology {
    fn ensure_bridge(&self, b: &BridgeSpec) -> Result<u32> {
        check_ifname(&b.name)?;
        check_mtu(b.mtu)?;
        match (b.gateway, b.subnet) {
            (Some(g), Some(sn)) if !sn.contains(&g) => {
                return Err(TopologyError::Invalid(format!(
                    "gateway {g} is outside subnet {sn}"
                )));
            }
            (Some(_), Some(_)) | (None, None) => {}
            _ => {
                return Err(TopologyError::Invalid(format!(
                    "bridge {}: an IPv4 gateway needs its subnet and back",
                    b.name
                )));
            }
        }
        let b = b.clone();
        self.worker.run(move |h| async move {
            let existing = link_by_name(&h, &b.name).await?;
            let (index, created) = match existing {
                Some(l) => {
                    if link_kind(&l) != Some(&InfoKind::Bridge) {
                        return Err(TopologyError::Invalid(format!(
                            "interface {} exists and is not a bridge",
                            b.name
                        )));
                    }
                    (l.header.index, false)
                }
                None => {
                    let mut msg = LinkBridge::new(&b.name).address(bridge_mac_of(&b).to_vec());
                    if let Some(m) = b.mtu {
                        msg = msg.mtu(m);
                    }
                    h.link()
                        .add(msg.build())
                        .execute()
                        .await
                        .map_err(nl(format!("create bridge {}", b.name)))?;
                    let l = link_by_name(&h, &b.name).await?.ok_or_else(|| {
                        TopologyError::Invalid(format!("bridge {} vanished after creation", b.name))
                    })?;
                    (l.header.index, true)
                }
            };
            let configure = async {
                let addrs = addrs(&h, index).await?;
                if let (Some(gw), Some(sn)) = (b.gateway, b.subnet) {
                    let prefix = sn.prefix_len();
                    if !addrs.contains(&(IpAddr::V4(gw), prefix)) {
                        h.address()
                            .add(index, IpAddr::V4(gw), prefix)
                            .execute()
                            .await
                            .map_err(nl(format!("add {gw}/{prefix} to bridge {}", b.name)))?;
                    }
                }
                if let Some(g6) = b.gateway6
                    && !addrs.contains(&(IpAddr::V6(g6.addr()), g6.prefix_len()))
                {
                    add_addr6(&h, index, g6, &format!("bridge {}", b.name)).await?;
                }
                let mut set = LinkUnspec::new_with_index(index).up();
                if let Some(m) = b.mtu {
                    set = set.mtu(m);
                }
                h.link()
                    .set(set.build())
                    .execute()
                    .await
                    .map_err(nl(format!("set bridge {} up", b.name)))?;
                Ok(index)
            };
            let r = configure.await;
            if r.is_err() && created {
                let _ = delete_link(&h, index, "bridge").await;
            }
            r
        })
    }

    fn remove_bridge(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        let name = name.to_string();
        self.worker.run(move |h| async move {
            match link_by_name(&h, &name).await? {
                None => Ok(()),
                Some(l) if link_kind(&l) != Some(&InfoKind::Bridge) => Err(TopologyError::Invalid(
                    format!("interface {name} is not a bridge"),
                )),
                Some(l) => delete_link(&h, l.header.index, &format!("bridge {name}")).await,
            }
        })
    }

    fn create_netns(&self, path: &Path) -> Result<()> {
        let sock = netns::create(path)?;
        let up = self.worker.run(move |_| async move {
            let (h, conn) = ns_connection(sock);
            // `lo` is always ifindex 1 in a new namespace.
            let r = h
                .link()
                .set(LinkUnspec::new_with_index(1).up().build())
                .execute()
                .await
                .map_err(nl("set lo up"));
            conn.abort();
            r
        });
        if up.is_err() {
            let _ = netns::remove(path);
        }
        up
    }

    fn remove_netns(&self, path: &Path) -> Result<()> {
        netns::remove(path)
    }

    fn add_endpoint(&self, ep: &EndpointSpec) -> Result<()> {
        check_ifname(&ep.host_ifname)?;
        check_ifname(&ep.ifname)?;
        check_ifname(&ep.bridge)?;
        check_mtu(ep.mtu)?;
        if ep.mac[0] & 1 != 0 || ep.mac == [0; 6] {
            return Err(TopologyError::Invalid(format!(
                "invalid MAC {}: must be a non-zero unicast address",
                fmt_mac(&ep.mac)
            )));
        }
        if let Some(gw) = ep.default_gateway
            && !ep.address.is_some_and(|a| a.contains(&gw))
        {
            return Err(TopologyError::Invalid(format!(
                "gateway {gw} is outside {}",
                ep.address
                    .map(|a| a.trunc().to_string())
                    .unwrap_or_else(|| "an interface without IPv4".into())
            )));
        }
        if let Some(peer) = &ep.engine_peer {
            return self.add_engine_veth(ep, peer);
        }
        // Opening these first checks the namespace exists before anything is made.
        let ns_file = std::fs::File::open(&ep.netns)
            .map_err(|e| super::worker::os(format!("open netns {}", ep.netns.display()), e))?;
        let ns_sock: OwnedFd = netns::netlink_socket_in(&ep.netns)?;
        let ep = ep.clone();
        self.worker.run(move |h| async move {
            let (bridge, bridge_mac) = match link_by_name(&h, &ep.bridge).await? {
                Some(l) if link_kind(&l) == Some(&InfoKind::Bridge) => {
                    (l.header.index, link_mac(&l))
                }
                Some(_) => {
                    return Err(TopologyError::Invalid(format!(
                        "interface {} is not a bridge",
                        ep.bridge
                    )));
                }
                None => {
                    return Err(TopologyError::Invalid(format!(
                        "bridge {} does not exist",
                        ep.bridge
                    )));
                }
            };
            // One request makes both ends: the host end enslaved and up, the
            // peer directly inside the container with its final name, MAC and
            // MTU. Creating the peer in place spares the move between
            // namespaces (which costs a synchronize_net, ~15 ms) and any
            // temporary name in the host namespace.
            // (The peer cannot be set up in the same request: veth refuses to
            // open a peer before its other end exists, ENOTCONN.)
            let mut peer = LinkUnspec::new_with_name(&ep.ifname)
                .address(ep.mac.to_vec())
                .setns_by_fd(ns_file.as_raw_fd());
            let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(ep.host_ifname.clone())
                .controller(bridge)
                .up();
            if let Some(m) = ep.mtu {
                peer = peer.mtu(m);
                host = host.mtu(m);
            }
            let msg = host
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .build();
            if link_by_name(&h, &ep.host_ifname).await?.is_some() {
                return Err(TopologyError::Invalid(format!(
                    "interface {} already exists",
                    ep.host_ifname
                )));
            }
            h.link().add(msg).execute().await.map_err(|e| {
                if errno(&e) == Some(EEXIST) {
                    TopologyError::Invalid(format!(
                        "interface {} already exists in {}",
                        ep.ifname,
                        ep.netns.display()
                    ))
                } else if errno(&e) == Some(EXFULL) {
                    bridge_full(&ep.bridge)
                } else {
                    nl(format!("create veth {} / {}", ep.host_ifname, ep.ifname))(e)
                }
            })?;
            let host = link_by_name(&h, &ep.host_ifname)
                .await?
                .ok_or_else(|| {
                    TopologyError::Invalid(format!(
                        "veth {} vanished after creation",
                        ep.host_ifname
                    ))
                })?
                .header
                .index;
            let (ns, conn) = ns_connection(ns_sock);
            // Container namespaces make interfaces without IPv6 (see
            // `netns::create`); a dual-stack endpoint's gets it back.
            let r = match ep.address6 {
                Some(_) => netns::in_netns(&ep.netns, || {
                    super::sysctl::set(&format!("net.ipv6.conf.{}.disable_ipv6", ep.ifname), "0")
                })
                .and_then(|r| r),
                None => Ok(()),
            };
            let r = match r {
                Ok(()) => configure_inside(&ns, &ep, bridge_mac.as_deref()).await,
                Err(e) => Err(e),
            };
            if r.is_err() {
                // Deleting the host end removes the peer too, wherever it is.
                let _ = delete_link(&h, host, "veth").await;
            }
            conn.abort();
            r
        })
    }

    fn remove_endpoint(&self, ep: &EndpointSpec) -> Result<()> {
        check_ifname(&ep.host_ifname)?;
        let name = ep.host_ifname.clone();
        self.worker.run(move |h| async move {
            let index = match link_by_name(&h, &name).await? {
                None => return Ok(()),
                Some(l) if link_kind(&l) != Some(&InfoKind::Veth) => {
                    return Err(TopologyError::Invalid(format!(
                        "interface {name} is not a veth"
                    )));
                }
                Some(l) => l.header.index,
            };
            // The kernel unlists the pair early, then the deleting request
            // waits for an RCU barrier (~20 ms) before it is answered. That
            // wait happens on a thread of its own; we return once the pair is
            // gone from both namespaces.
            let mut done = delete_in_background(index, format!("veth {name}"))?;
            loop {
                match done.try_recv() {
                    Ok(r) => return r,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        return Err(TopologyError::Invalid(format!(
                            "deleting veth {name}: the deleting thread died"
                        )));
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                }
                if link_by_index(&h, index).await?.is_none() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_micros(250)).await;
            }
        })
    }

    fn host_links(&self) -> Result<Vec<String>> {
        self.worker.run(|h| async move {
            let links: Vec<LinkMessage> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl("list links"))?;
            Ok(links
                .iter()
                .filter_map(|l| link_name(l).map(str::to_string))
                .collect())
        })
    }

    fn routed_subnets(&self) -> Result<Vec<Ipv4Net>> {
        self.worker.run(|h| async move {
            let mut nets: Vec<Ipv4Net> = main_routes(&h)
                .await?
                .iter()
                .filter(|r| r.header.destination_prefix_length > 0)
                .filter_map(route_dst)
                .collect();
            nets.sort();
            nets.dedup();
            Ok(nets)
        })
    }

    fn routed_subnets6(&self) -> Result<Vec<Ipv6Net>> {
        self.worker.run(|h| async move {
            let all: Vec<RouteMessage> = h
                .route()
                .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .map_err(nl("list IPv6 routes"))?;
            let mut nets: Vec<Ipv6Net> = all
                .iter()
                .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
                .filter(|r| r.header.destination_prefix_length > 0)
                .filter_map(|r| {
                    let addr = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(*ip),
                        _ => None,
                    })?;
                    Ipv6Net::new(addr, r.header.destination_prefix_length)
                        .ok()
                        .map(|n| n.trunc())
                })
                // Link-local and multicast routes are on every interface.
                .filter(|n| {
                    let s = n.network().segments()[0];
                    s & 0xffc0 != 0xfe80 && s & 0xff00 != 0xff00
                })
                .collect();
            nets.sort();
            nets.dedup();
            Ok(nets)
        })
    }

    fn set_default_route6(&self, netns: &Path, ifname: &str, gateway: Ipv6Addr) -> Result<()> {
        check_ifname(ifname)?;
        let ns_sock: OwnedFd = netns::netlink_socket_in(netns)?;
        let (ifname, where_) = (ifname.to_string(), netns.display().to_string());
        self.worker.run(move |_| async move {
            let (ns, conn) = ns_connection(ns_sock);
            let r = async {
                let index = link_by_name(&ns, &ifname)
                    .await?
                    .ok_or_else(|| {
                        TopologyError::Invalid(format!("no interface {ifname} in {where_}"))
                    })?
                    .header
                    .index;
                add_default6(&ns, index, gateway, None, true).await
            }
            .await;
            conn.abort();
            r
        })
    }

    fn default_route_iface(&self) -> Result<Option<String>> {
        self.worker.run(|h| async move {
            let best = main_routes(&h)
                .await?
                .into_iter()
                .filter(|r| {
                    r.header.destination_prefix_length == 0 && r.header.kind == RouteType::Unicast
                })
                .filter_map(|r| route_oif(&r).map(|i| (route_priority(&r), i)))
                .min();
            let Some((_, index)) = best else {
                return Ok(None);
            };
            Ok(link_by_index(&h, index)
                .await?
                .and_then(|l| link_name(&l).map(str::to_string)))
        })
    }

    fn set_default_route(&self, netns: &Path, ifname: &str, gateway: Ipv4Addr) -> Result<()> {
        check_ifname(ifname)?;
        let ns_sock: OwnedFd = netns::netlink_socket_in(netns)?;
        let (ifname, where_) = (ifname.to_string(), netns.display().to_string());
        self.worker.run(move |_| async move {
            let (ns, conn) = ns_connection(ns_sock);
            let r = async {
                let index = link_by_name(&ns, &ifname)
                    .await?
                    .ok_or_else(|| {
                        TopologyError::Invalid(format!("no interface {ifname} in {where_}"))
                    })?
                    .header
                    .index;
                ns.route()
                    .add(
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .gateway(gateway)
                            .output_interface(index)
                            .build(),
                    )
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("default route via {gateway} in {where_}")))
            }
            .await;
            conn.abort();
            r
        })
    }
}

/// Up, address and default route on the container's end (already named).
/// The caller removes the pair if this fails.
/// The MAC address of a link.
fn link_mac(l: &LinkMessage) -> Option<Vec<u8>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) if m.len() == 6 => Some(m.clone()),
        _ => None,
    })
}

/// Inside the container: the interface up, its addresses, the default
/// routes, and a permanent neighbour entry for each gateway (the bridge's
/// MAC): a container never asks for its gateway, so neither its namespace
/// nor the host's holds a learnt entry per container. The kernel's
/// neighbour tables are one per machine, shared by all namespaces (garbage
/// collection from 512 entries, none beyond 1024, permanent ones not
/// counted): a thousand containers that each learnt their gateway, and the
/// host each of them, would find the table full and go unanswered.
async fn configure_inside(ns: &Handle, ep: &EndpointSpec, bridge_mac: Option<&[u8]>) -> Result<()> {
    let inner = link_by_name(ns, &ep.ifname)
        .await?
        .ok_or_else(|| TopologyError::Invalid(format!("{} is not in the container", ep.ifname)))?
        .header
        .index;
    ns.link()
        .set(LinkUnspec::new_with_index(inner).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {} up", ep.ifname)))?;
    if let Some(a) = ep.address {
        ns.address()
            .add(inner, IpAddr::V4(a.addr()), a.prefix_len())
            .execute()
            .await
            .map_err(nl(format!("add {a} to {}", ep.ifname)))?;
    }
    if let Some(gw) = ep.default_gateway {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(inner);
        if let Some(m) = ep.metric {
            b = b.priority(m);
        }
        ns.route()
            .add(b.build())
            .execute()
            .await
            .map_err(nl(format!("add default route via {gw}")))?;
    }
    if let Some(a6) = ep.address6 {
        add_addr6(ns, inner, a6, &ep.ifname).await?;
        if let Some(gw6) = ep.default_gateway6 {
            add_default6(ns, inner, gw6, ep.metric, false).await?;
        }
    }
    let gateways = [
        ep.default_gateway.map(IpAddr::V4),
        ep.address6.and(ep.default_gateway6).map(IpAddr::V6),
    ];
    for gw in gateways.into_iter().flatten() {
        let Some(mac) = bridge_mac else { break };
        ns.neighbours()
            .add(inner, gw)
            .link_layer_address(mac)
            .execute()
            .await
            .map_err(nl(format!("add the neighbour entry of gateway {gw}")))?;
    }
    Ok(())
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for ok in ["eth0", "pier0", "veth1234567890a", "br-a.b_c"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "veth1234567890ab"] {
            let e = check_ifname(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid interface name"), "{bad}: {e}");
        }
    }

    #[test]
    fn bridge_mac_is_local_unicast_from_the_gateway() {
        let m = bridge_mac(Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(m, [0x02, 0x42, 172, 17, 0, 1]);
        assert_eq!(fmt_mac(&m), "02:42:ac:11:00:01");
    }

    #[test]
    fn mtu_bounds() {
        assert!(check_mtu(None).is_ok());
        assert!(check_mtu(Some(1500)).is_ok());
        assert_eq!(
            check_mtu(Some(67)).unwrap_err().to_string(),
            "invalid MTU 67: must be 68 to 65535"
        );
    }
}
