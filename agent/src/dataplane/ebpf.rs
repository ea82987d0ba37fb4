//! [`EbpfDataplane`]: loads the kernel programs, pins their maps and links
//! under the agent's bpffs directory, and makes every map entry, attachment
//! and port reservation agree with a [`DesiredState`] in one `sync`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, Map, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{CgroupSockAddr, ProgramError, SchedClassifier},
};
use pier_common::{
    config::{self, GLOBAL_HOST_NETNS_COOKIE},
    ct::{CtVal, FlowKey},
    drop::DropReason,
    endpoint::{
        EndpointVal, NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_NO_ICC, NetworkVal, UplinkVal,
    },
    maps as names,
    metrics::Counter,
    nat::{NatVal, PortKey, PortVal, SockKey, SockVal},
};

use super::{
    Dataplane, DataplaneConfig, DataplaneError, DesiredState, EBPF_OBJECT, EndpointSpec,
    NetworkSpec, PortSpec, PortStats, Proto, attach, programs,
    reserve::{self, PortId},
    sys,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

/// Like [`err`], with the error's sources.
fn err_chain(what: impl std::fmt::Display, e: impl std::error::Error) -> DataplaneError {
    let mut msg = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    DataplaneError::Other(msg)
}

/// `_be` form of an address: its bytes in packet order.
pub fn addr_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn addr_from_be(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

pub fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
    }
}

/// The `PIER_PORTS` key of a published port.
pub fn port_key(p: &PortSpec) -> PortKey {
    PortKey {
        addr_be: p.host_ip.map(addr_be).unwrap_or(0),
        port_be: p.host_port.to_be(),
        proto: proto_num(p.proto),
        _pad: 0,
    }
}

fn port_id(p: &PortSpec) -> PortId {
    (p.host_ip, p.proto, p.host_port)
}

/// Conntrack lifetimes (set at load time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp_established: Duration,
    /// After a FIN or RST.
    pub tcp_closing: Duration,
    /// Idle UDP flows.
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp_established: Duration::from_nanos(config::CT_TCP_ESTABLISHED_NS),
            tcp_closing: Duration::from_nanos(config::CT_TCP_CLOSING_NS),
            udp: Duration::from_nanos(config::CT_UDP_NS),
            icmp: Duration::from_nanos(config::CT_ICMP_NS),
        }
    }
}

/// Conntrack sizes, for `gc_conntrack` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounts {
    pub ct: usize,
    pub snat_fwd: usize,
    pub snat_rev: usize,
    pub sock_nat: usize,
}

/// The eBPF dataplane of one agent (one host namespace, one bpffs directory).
pub struct EbpfDataplane {
    cfg: DataplaneConfig,
    bpf: Option<Ebpf>,
    /// Host-side veths with `pier_veth_in` attached, and the pin of each link.
    veths: BTreeMap<String, PathBuf>,
    reservations: BTreeMap<PortId, OwnedFd>,
    applied: DesiredState,
    timeouts: CtTimeouts,
    /// Another ELF object than [`EBPF_OBJECT`] (tests).
    object: Option<Vec<u8>>,
}

impl EbpfDataplane {
    pub fn new(cfg: DataplaneConfig) -> Self {
        EbpfDataplane {
            cfg,
            bpf: None,
            veths: BTreeMap::new(),
            reservations: BTreeMap::new(),
            applied: DesiredState::default(),
            timeouts: CtTimeouts::default(),
            object: None,
        }
    }

    /// Load this ELF object instead of the embedded one (tests).
    pub fn with_object(mut self, object: Vec<u8>) -> Self {
        self.object = Some(object);
        self
    }

    /// Use these conntrack lifetimes (before `start`).
    pub fn with_ct_timeouts(mut self, t: CtTimeouts) -> Self {
        self.timeouts = t;
        self
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    fn bpf(&mut self) -> Result<&mut Ebpf, DataplaneError> {
        self.bpf
            .as_mut()
            .ok_or_else(|| DataplaneError::Other("the dataplane is not started".into()))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut Map, DataplaneError> {
        self.bpf()?
            .map_mut(name)
            .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))
    }

    fn map(&self, name: &str) -> Result<&Map, DataplaneError> {
        self.bpf
            .as_ref()
            .ok_or_else(|| DataplaneError::Other("the dataplane is not started".into()))?
            .map(name)
            .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))
    }

    /// Load every program, surfacing a verifier rejection as
    /// [`DataplaneError::Verifier`] with the log written to a file.
    fn load_programs(bpf: &mut Ebpf) -> Result<(), DataplaneError> {
        for (name, prog) in bpf.programs_mut() {
            let r = match prog {
                aya::programs::Program::SchedClassifier(p) => p.load(),
                aya::programs::Program::CgroupSockAddr(p) => p.load(),
                _ => continue,
            };
            if let Err(e) = r {
                return Err(verifier_error(name, e));
            }
        }
        Ok(())
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier, DataplaneError> {
        self.bpf()?
            .program_mut(name)
            .ok_or_else(|| DataplaneError::Other(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| err(name, e))
    }

    /// Refresh `PIER_HOST_ADDRS` and `PIER_UPLINK` from the host's interfaces.
    fn sync_host(&mut self) -> Result<(), DataplaneError> {
        let ifaces = sys::interfaces()?;
        let mut addrs = BTreeSet::new();
        for i in ifaces.values() {
            for a in &i.addrs {
                if !a.is_loopback() {
                    addrs.insert(addr_be(*a));
                }
            }
        }
        let mut uplink = UplinkVal::default();
        for name in &self.cfg.uplinks {
            let i = ifaces
                .get(name)
                .ok_or_else(|| DataplaneError::Other(format!("uplink {name} does not exist")))?;
            if let Some(a) = i.addrs.first()
                && uplink.ifindex == 0
            {
                uplink = UplinkVal {
                    ifindex: i.ifindex,
                    addr_be: addr_be(*a),
                };
            }
        }
        let mut m: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(names::HOST_ADDRS)?).map_err(|e| err("map", e))?;
        let have: Vec<u32> = m.keys().filter_map(Result::ok).collect();
        for k in have {
            if !addrs.contains(&k) {
                let _ = m.remove(&k);
            }
        }
        for a in &addrs {
            m.insert(a, 1, 0).map_err(|e| err("PIER_HOST_ADDRS", e))?;
        }
        let mut u: Array<_, UplinkVal> =
            Array::try_from(self.map_mut(names::UPLINK)?).map_err(|e| err("map", e))?;
        u.set(0, uplink, 0).map_err(|e| err("PIER_UPLINK", e))?;
        Ok(())
    }

    /// Validate `desired` without touching anything.
    fn validate(desired: &DesiredState) -> Result<(), DataplaneError> {
        let mut ids = BTreeSet::new();
        for n in &desired.networks {
            if !ids.insert(n.id) {
                return Err(DataplaneError::Other(format!(
                    "network id {} is used twice",
                    n.id
                )));
            }
        }
        let mut ips = BTreeSet::new();
        for e in &desired.endpoints {
            if !ids.contains(&e.network_id) {
                return Err(DataplaneError::Other(format!(
                    "endpoint {} names unknown network {}",
                    e.ip, e.network_id
                )));
            }
            if !ips.insert(e.ip) {
                return Err(DataplaneError::Other(format!(
                    "endpoint address {} is used twice",
                    e.ip
                )));
            }
        }
        let mut seen: BTreeMap<(Proto, u16), Vec<Option<Ipv4Addr>>> = BTreeMap::new();
        for p in &desired.ports {
            if !ips.contains(&p.container_ip) {
                return Err(DataplaneError::Other(format!(
                    "port {}: {} is not a container address",
                    reserve::describe(&port_id(p)),
                    p.container_ip
                )));
            }
            let bound = seen.entry((p.proto, p.host_port)).or_default();
            if bound
                .iter()
                .any(|b| b.is_none() || p.host_ip.is_none() || *b == p.host_ip)
            {
                return Err(DataplaneError::PortInUse(reserve::describe(&port_id(p))));
            }
            bound.push(p.host_ip);
        }
        Ok(())
    }

    /// The published ports that get map entries (not those of `--internal`
    /// networks: their published ports are unreachable).
    fn effective_ports(desired: &DesiredState) -> Vec<&PortSpec> {
        let internal: BTreeSet<u32> = desired
            .networks
            .iter()
            .filter(|n| n.internal)
            .map(|n| n.id)
            .collect();
        let net_of: BTreeMap<Ipv4Addr, u32> = desired
            .endpoints
            .iter()
            .map(|e| (e.ip, e.network_id))
            .collect();
        desired
            .ports
            .iter()
            .filter(|p| {
                net_of
                    .get(&p.container_ip)
                    .is_some_and(|n| !internal.contains(n))
            })
            .collect()
    }

    fn endpoint_vals(
        desired: &DesiredState,
    ) -> Result<BTreeMap<u32, (EndpointVal, &EndpointSpec)>, DataplaneError> {
        let ifaces = sys::interfaces()?;
        let bridges: BTreeMap<u32, &NetworkSpec> =
            desired.networks.iter().map(|n| (n.id, n)).collect();
        let mut out = BTreeMap::new();
        for e in &desired.endpoints {
            let net = bridges[&e.network_id];
            let veth = ifaces.get(&e.host_ifname).ok_or_else(|| {
                DataplaneError::Other(format!(
                    "endpoint {}: interface {} does not exist",
                    e.ip, e.host_ifname
                ))
            })?;
            let bridge_mac = ifaces.get(&net.bridge).and_then(|b| b.mac).ok_or_else(|| {
                DataplaneError::Other(format!(
                    "network {}: bridge {} does not exist",
                    net.id, net.bridge
                ))
            })?;
            out.insert(
                addr_be(e.ip),
                (
                    EndpointVal {
                        ifindex: veth.ifindex,
                        network_id: e.network_id,
                        mac: e.mac,
                        bridge_mac,
                    },
                    e,
                ),
            );
        }
        Ok(out)
    }

    fn write_maps(
        &mut self,
        desired: &DesiredState,
        endpoints: &BTreeMap<u32, (EndpointVal, &EndpointSpec)>,
    ) -> Result<(), DataplaneError> {
        // Networks and their subnets.
        let nets: BTreeMap<u32, NetworkVal> = desired
            .networks
            .iter()
            .map(|n| {
                let mut flags = 0;
                if n.internal {
                    flags |= NET_F_INTERNAL;
                }
                if !n.icc {
                    flags |= NET_F_NO_ICC;
                }
                if n.masquerade {
                    flags |= NET_F_MASQUERADE;
                }
                (
                    n.id,
                    NetworkVal {
                        flags,
                        gateway_be: addr_be(n.gateway),
                    },
                )
            })
            .collect();
        let subnets: BTreeMap<(u32, u32), u32> = desired
            .networks
            .iter()
            .map(|n| {
                (
                    (n.subnet.prefix_len() as u32, addr_be(n.subnet.network())),
                    n.id,
                )
            })
            .collect();
        let ports: BTreeMap<PortKey, PortVal> = Self::effective_ports(desired)
            .into_iter()
            .map(|p| {
                (
                    port_key(p),
                    PortVal {
                        backend_be: addr_be(p.container_ip),
                        backend_port_be: p.container_port.to_be(),
                        _pad: 0,
                    },
                )
            })
            .collect();

        // Add and update first (networks → endpoints → ports), remove after
        // (ports → endpoints → networks), so no packet sees a dangling entry.
        {
            let mut m: HashMap<_, u32, NetworkVal> =
                HashMap::try_from(self.map_mut(names::NETWORKS)?).map_err(|e| err("map", e))?;
            for (k, v) in &nets {
                m.insert(k, v, 0).map_err(|e| err(names::NETWORKS, e))?;
            }
        }
        {
            let mut m: LpmTrie<_, u32, u32> =
                LpmTrie::try_from(self.map_mut(names::SUBNETS)?).map_err(|e| err("map", e))?;
            for ((len, net), id) in &subnets {
                m.insert(&Key::new(*len, *net), id, 0)
                    .map_err(|e| err(names::SUBNETS, e))?;
            }
        }
        {
            let mut m: HashMap<_, u32, EndpointVal> =
                HashMap::try_from(self.map_mut(names::ENDPOINTS)?).map_err(|e| err("map", e))?;
            for (k, (v, _)) in endpoints {
                m.insert(k, v, 0).map_err(|e| err(names::ENDPOINTS, e))?;
            }
        }
        {
            let ncpu = aya::util::nr_cpus().map_err(|(w, e)| err(w, e))?;
            let mut stats: PerCpuHashMap<_, PortKey, Counter> =
                PerCpuHashMap::try_from(self.map_mut(names::PORT_STATS)?)
                    .map_err(|e| err("map", e))?;
            let have: BTreeSet<PortKey> = stats.keys().filter_map(Result::ok).collect();
            for k in ports.keys() {
                if !have.contains(k) {
                    let zero = PerCpuValues::try_from(vec![Counter::default(); ncpu])
                        .map_err(|e| err("per-cpu", e))?;
                    stats
                        .insert(k, zero, 0)
                        .map_err(|e| err(names::PORT_STATS, e))?;
                }
            }
            for k in have {
                if !ports.contains_key(&k) {
                    let _ = stats.remove(&k);
                }
            }
        }
        {
            // Backend → the (first) host port publishing it.
            let mut backends: BTreeMap<PortKey, PortKey> = BTreeMap::new();
            for (k, v) in &ports {
                let b = PortKey {
                    addr_be: v.backend_be,
                    port_be: v.backend_port_be,
                    proto: k.proto,
                    _pad: 0,
                };
                backends.entry(b).or_insert(*k);
            }
            let mut m: HashMap<_, PortKey, PortKey> =
                HashMap::try_from(self.map_mut(names::BACKENDS)?).map_err(|e| err("map", e))?;
            for (k, v) in &backends {
                m.insert(k, v, 0).map_err(|e| err(names::BACKENDS, e))?;
            }
            let have: Vec<PortKey> = m.keys().filter_map(Result::ok).collect();
            for k in have {
                if !backends.contains_key(&k) {
                    let _ = m.remove(&k);
                }
            }
        }
        {
            let mut m: HashMap<_, PortKey, PortVal> =
                HashMap::try_from(self.map_mut(names::PORTS)?).map_err(|e| err("map", e))?;
            for (k, v) in &ports {
                m.insert(k, v, 0).map_err(|e| err(names::PORTS, e))?;
            }
            let have: Vec<PortKey> = m.keys().filter_map(Result::ok).collect();
            for k in have {
                if !ports.contains_key(&k) {
                    let _ = m.remove(&k);
                }
            }
        }
        {
            let mut m: HashMap<_, u32, EndpointVal> =
                HashMap::try_from(self.map_mut(names::ENDPOINTS)?).map_err(|e| err("map", e))?;
            let have: Vec<u32> = m.keys().filter_map(Result::ok).collect();
            for k in have {
                if !endpoints.contains_key(&k) {
                    let _ = m.remove(&k);
                }
            }
        }
        {
            let mut m: LpmTrie<_, u32, u32> =
                LpmTrie::try_from(self.map_mut(names::SUBNETS)?).map_err(|e| err("map", e))?;
            let have: Vec<Key<u32>> = m.keys().filter_map(Result::ok).collect();
            for k in have {
                if !subnets.contains_key(&(k.prefix_len(), k.data())) {
                    let _ = m.remove(&k);
                }
            }
        }
        {
            let mut m: HashMap<_, u32, NetworkVal> =
                HashMap::try_from(self.map_mut(names::NETWORKS)?).map_err(|e| err("map", e))?;
            let have: Vec<u32> = m.keys().filter_map(Result::ok).collect();
            for k in have {
                if !nets.contains_key(&k) {
                    let _ = m.remove(&k);
                }
            }
        }
        Ok(())
    }

    /// Attach `pier_veth_in` to every desired host-side veth; detach the rest.
    fn sync_veths(&mut self, desired: &DesiredState) -> Result<(), DataplaneError> {
        let want: BTreeSet<&str> = desired
            .endpoints
            .iter()
            .map(|e| e.host_ifname.as_str())
            .collect();
        let dir = self.cfg.bpffs_dir.clone();
        for ifname in &want {
            if self.veths.contains_key(*ifname) {
                continue;
            }
            let pin = attach::tc_pin(&dir, programs::VETH_IN, ifname);
            let prog = self.classifier(programs::VETH_IN)?;
            attach::attach_tc(prog, programs::VETH_IN, ifname, &pin)?;
            self.veths.insert(ifname.to_string(), pin);
        }
        let gone: Vec<String> = self
            .veths
            .keys()
            .filter(|k| !want.contains(k.as_str()))
            .cloned()
            .collect();
        for ifname in gone {
            if let Some(pin) = self.veths.remove(&ifname) {
                attach::detach_pin(&pin);
            }
        }
        Ok(())
    }

    /// Reserve the desired ports not yet reserved; on failure release what this
    /// call reserved and report the port.
    fn reserve_ports(&mut self, desired: &DesiredState) -> Result<Vec<PortId>, DataplaneError> {
        let mut new = Vec::new();
        for p in &desired.ports {
            let id = port_id(p);
            if self.reservations.contains_key(&id) {
                continue;
            }
            match reserve::reserve(&id) {
                Ok(fd) => {
                    self.reservations.insert(id, fd);
                    new.push(id);
                }
                Err(e) => {
                    for id in &new {
                        self.reservations.remove(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(new)
    }

    /// Remove conntrack and NAT entries whose lifetime is over. A masquerade
    /// pair goes when both halves have expired.
    pub fn gc_conntrack(&mut self) -> Result<CtCounts, DataplaneError> {
        let now = sys::monotonic_ns();
        {
            let mut ct: HashMap<_, FlowKey, CtVal> =
                HashMap::try_from(self.map_mut(names::CT)?).map_err(|e| err("map", e))?;
            let dead: Vec<FlowKey> = ct
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, v)| v.expires_ns < now)
                .map(|(k, _)| k)
                .collect();
            for k in dead {
                let _ = ct.remove(&k);
            }
        }
        let [fwd, rev] = self
            .bpf()?
            .maps_disjoint_mut([names::SNAT_FWD, names::SNAT_REV]);
        let (Some(fwd), Some(rev)) = (fwd, rev) else {
            return Err(DataplaneError::Other("SNAT maps missing".into()));
        };
        let mut fwd: HashMap<_, FlowKey, NatVal> =
            HashMap::try_from(fwd).map_err(|e| err("map", e))?;
        let mut rev: HashMap<_, FlowKey, NatVal> =
            HashMap::try_from(rev).map_err(|e| err("map", e))?;
        let fwd_entries: Vec<(FlowKey, NatVal)> = fwd.iter().filter_map(Result::ok).collect();
        let mut paired = BTreeSet::new();
        for (k, v) in fwd_entries {
            let rkey = FlowKey {
                saddr_be: k.daddr_be,
                daddr_be: v.addr_be,
                sport_be: k.dport_be,
                dport_be: v.port_be,
                proto: k.proto,
                _pad: [0; 3],
            };
            let r = rev.get(&rkey, 0).ok();
            let newest = r.map_or(v.expires_ns, |r| r.expires_ns.max(v.expires_ns));
            if newest < now {
                let _ = fwd.remove(&k);
                let _ = rev.remove(&rkey);
            } else {
                paired.insert(flow_tuple(&rkey));
            }
        }
        let rev_entries: Vec<(FlowKey, NatVal)> = rev.iter().filter_map(Result::ok).collect();
        for (k, v) in rev_entries {
            if v.expires_ns < now && !paired.contains(&flow_tuple(&k)) {
                let _ = rev.remove(&k);
            }
        }
        self.ct_counts()
    }

    /// Forget every published connection (like `conntrack -F` for `PIER_CT`).
    /// Established connections keep working: replies are re-tracked from
    /// `PIER_BACKENDS`, requests from `PIER_PORTS`.
    pub fn flush_conntrack(&mut self) -> Result<usize, DataplaneError> {
        let mut ct: HashMap<_, FlowKey, CtVal> =
            HashMap::try_from(self.map_mut(names::CT)?).map_err(|e| err("map", e))?;
        let keys: Vec<FlowKey> = ct.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = ct.remove(k);
        }
        Ok(keys.len())
    }

    /// How many entries the conntrack and NAT maps hold.
    pub fn ct_counts(&self) -> Result<CtCounts, DataplaneError> {
        fn count<K: aya::Pod, V: aya::Pod>(m: &Map) -> usize {
            HashMap::<_, K, V>::try_from(m)
                .map(|h| h.keys().count())
                .unwrap_or(0)
        }
        Ok(CtCounts {
            ct: count::<FlowKey, CtVal>(self.map(names::CT)?),
            snat_fwd: count::<FlowKey, NatVal>(self.map(names::SNAT_FWD)?),
            snat_rev: count::<FlowKey, NatVal>(self.map(names::SNAT_REV)?),
            sock_nat: count::<SockKey, SockVal>(self.map(names::SOCK_NAT)?),
        })
    }

    /// Keys of `PIER_PORTS` as the kernel holds them.
    pub fn port_entries(&self) -> Result<Vec<(PortKey, PortVal)>, DataplaneError> {
        let m: HashMap<_, PortKey, PortVal> =
            HashMap::try_from(self.map(names::PORTS)?).map_err(|e| err("map", e))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    /// `PIER_ENDPOINTS` as the kernel holds it (address → value).
    pub fn endpoint_entries(&self) -> Result<Vec<(Ipv4Addr, EndpointVal)>, DataplaneError> {
        let m: HashMap<_, u32, EndpointVal> =
            HashMap::try_from(self.map(names::ENDPOINTS)?).map_err(|e| err("map", e))?;
        Ok(m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (addr_from_be(k), v))
            .collect())
    }

    /// Per-reason drop counters summed over the CPUs.
    pub fn drop_counts(&self) -> Result<Vec<(DropReason, Counter)>, DataplaneError> {
        let m: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.map(names::DROPS)?).map_err(|e| err("map", e))?;
        let mut out = Vec::new();
        for r in DropReason::ALL {
            let v = m.get(&(r as u32), 0).map_err(|e| err(names::DROPS, e))?;
            out.push((r, sum(v.iter())));
        }
        Ok(out)
    }

    fn start_inner(&mut self) -> Result<(), DataplaneError> {
        sys::raise_nofile();
        sys::ensure_bpffs(&self.cfg.bpffs_dir)?;

        std::fs::create_dir_all(attach::links_dir(&self.cfg.bpffs_dir))
            .map_err(|e| err("links dir", e))?;
        let cookie = sys::netns_cookie()?;
        let t = self.timeouts;
        let ns = |d: Duration| d.as_nanos() as u64;
        let (est, closing, udp, icmp) = (
            ns(t.tcp_established),
            ns(t.tcp_closing),
            ns(t.udp),
            ns(t.icmp),
        );
        let mut loader = EbpfLoader::new();
        // Pinned explicitly, by name, under this agent's directory only: a
        // plain `Ebpf::load` of the object (tests, benchmarks) pins nothing.
        let pins: Vec<(&str, PathBuf)> = names::PINNED
            .iter()
            .map(|n| (*n, self.cfg.bpffs_dir.join(n)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .override_global(GLOBAL_HOST_NETNS_COOKIE, &cookie, true)
            .override_global(config::GLOBAL_CT_TCP_EST_NS, &est, true)
            .override_global(config::GLOBAL_CT_TCP_CLOSING_NS, &closing, true)
            .override_global(config::GLOBAL_CT_UDP_NS, &udp, true)
            .override_global(config::GLOBAL_CT_ICMP_NS, &icmp, true)
            .load(&aligned(self.object.as_deref().unwrap_or(EBPF_OBJECT)))
            .map_err(|e| err_chain("loading the eBPF object", e))?;
        Self::load_programs(&mut bpf)?;
        self.bpf = Some(bpf);
        // Forwarding for networks without masquerade (routed through the host).
        sys::set_sysctl("net.ipv4.ip_forward", "1")?;
        self.sync_host()?;
        let dir = self.cfg.bpffs_dir.clone();
        for up in self.cfg.uplinks.clone() {
            let pin = attach::tc_pin(&dir, programs::UPLINK_IN, &up);
            let prog = self.classifier(programs::UPLINK_IN)?;
            attach::attach_tc(prog, programs::UPLINK_IN, &up, &pin)?;
        }
        // Host-side veths attached by a previous run: keep them, the next sync
        // swaps their programs or detaches them.
        if let Ok(rd) = std::fs::read_dir(attach::links_dir(&dir)) {
            let prefix = format!("tc_{}_", programs::VETH_IN);
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = name.strip_prefix(&prefix) {
                    let prog = self.classifier(programs::VETH_IN)?;
                    let pin = e.path();
                    if attach::attach_tc(prog, programs::VETH_IN, ifname, &pin).is_ok() {
                        self.veths.insert(ifname.to_string(), pin);
                    } else {
                        attach::detach_pin(&pin);
                    }
                }
            }
        }
        if let Some(cg) = self.cfg.cgroup.clone() {
            for name in programs::SOCK_HOOKS {
                let pin = attach::cg_pin(&dir, name);
                let prog: &mut CgroupSockAddr = self
                    .bpf()?
                    .program_mut(name)
                    .ok_or_else(|| DataplaneError::Other(format!("program {name} missing")))?
                    .try_into()
                    .map_err(|e| err(name, e))?;
                attach::attach_cgroup(prog, name, &cg, &pin)?;
            }
        }
        Ok(())
    }

    /// Run `program` once on `packet` with `BPF_PROG_TEST_RUN`, as if it
    /// arrived on interface `ifindex` (0: loopback); returns the program's
    /// verdict and the packet as it left.
    pub fn test_run(
        &mut self,
        program: &str,
        packet: &[u8],
        ifindex: u32,
    ) -> Result<(u32, Vec<u8>), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        // A zeroed `struct __sk_buff` with only `ifindex` (offset 40) set.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let prog = self.classifier(program)?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: (ifindex != 0).then_some(&ctx[..]),
                ..Default::default()
            })
            .map_err(|e| err_chain(program, e))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Host-side veths that currently have `pier_veth_in` attached.
    pub fn attached_veths(&self) -> Vec<String> {
        self.veths.keys().cloned().collect()
    }

    /// Detach every program, release every reservation and remove every pin
    /// and the bpffs directory (the agent's `system reset`). Best effort: all
    /// steps run, failures are collected.
    pub fn remove_all(&mut self) -> Result<(), DataplaneError> {
        let mut errors = Vec::new();
        self.reservations.clear();
        self.veths.clear();
        self.bpf = None;
        self.applied = DesiredState::default();
        let dir = self.cfg.bpffs_dir.clone();
        let links = attach::links_dir(&dir);
        if let Ok(rd) = std::fs::read_dir(&links) {
            for e in rd.flatten() {
                attach::detach_pin(&e.path());
            }
        }
        if let Err(e) = remove_tree(&dir)
            && dir.exists()
        {
            errors.push(format!("{}: {e}", dir.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Other(errors.join("; ")))
        }
    }
}

/// A copy of `bytes` at 8-byte alignment (ELF parsing needs it).
fn aligned(bytes: &[u8]) -> AlignedBytes {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the u64 buffer is at least bytes.len() long.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast(), bytes.len());
    }
    AlignedBytes {
        words,
        len: bytes.len(),
    }
}

struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `words` holds `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

fn flow_tuple(k: &FlowKey) -> (u32, u32, u16, u16, u8) {
    (k.saddr_be, k.daddr_be, k.sport_be, k.dport_be, k.proto)
}

fn sum<'a>(it: impl Iterator<Item = &'a Counter>) -> Counter {
    it.fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

/// bpffs allows unlink and rmdir only: remove depth first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// Map a program load failure to [`DataplaneError::Verifier`], writing the
/// verifier log to a file named after the program.
pub fn verifier_error(program: &str, e: ProgramError) -> DataplaneError {
    let (msg, log) = match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => (io_error.to_string(), verifier_log.to_string()),
        other => (other.to_string(), String::new()),
    };
    let path = std::env::temp_dir().join(format!(
        "pier-verifier-{program}-{}.log",
        std::process::id()
    ));
    let log_ref = match std::fs::write(&path, &log) {
        Ok(()) => path.display().to_string(),
        Err(w) => format!("(could not write {}: {w})", path.display()),
    };
    DataplaneError::Verifier {
        program: program.to_string(),
        msg,
        log: log_ref,
    }
}

impl Dataplane for EbpfDataplane {
    fn start(&mut self) -> Result<(), DataplaneError> {
        if self.bpf.is_some() {
            return Ok(());
        }
        let fresh = !self.cfg.bpffs_dir.exists();
        let r = self.start_inner();
        if r.is_err() {
            // Nothing half-made: drop what this start loaded, and the pins
            // too when the directory is ours (a previous run's stay).
            self.bpf = None;
            if fresh {
                let _ = self.remove_all();
            }
        }
        r
    }
    fn sync(&mut self, desired: &DesiredState) -> Result<(), DataplaneError> {
        if self.bpf.is_none() {
            return Err(DataplaneError::Other("the dataplane is not started".into()));
        }
        Self::validate(desired)?;
        let endpoints = Self::endpoint_vals(desired)?;
        let new = self.reserve_ports(desired)?;
        let applied = self
            .sync_veths(desired)
            .and_then(|()| self.write_maps(desired, &endpoints));
        if let Err(e) = applied {
            for id in &new {
                self.reservations.remove(id);
            }
            return Err(e);
        }
        let want: BTreeSet<PortId> = desired.ports.iter().map(port_id).collect();
        self.reservations.retain(|id, _| want.contains(id));
        self.applied = desired.clone();
        self.sync_host()?;
        self.gc_conntrack()?;
        Ok(())
    }

    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        let m: PerCpuHashMap<_, PortKey, Counter> =
            PerCpuHashMap::try_from(self.map(names::PORT_STATS)?).map_err(|e| err("map", e))?;
        let mut out = Vec::new();
        for p in &self.applied.ports {
            let c = m
                .get(&port_key(p), 0)
                .map(|v| sum(v.iter()))
                .unwrap_or_default();
            out.push(PortStats {
                port: p.clone(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DesiredState {
        DesiredState {
            networks: vec![
                NetworkSpec {
                    id: 1,
                    bridge: "br1".into(),
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    gateway: "10.1.0.1".parse().unwrap(),
                    internal: false,
                    icc: true,
                    masquerade: true,
                },
                NetworkSpec {
                    id: 2,
                    bridge: "br2".into(),
                    subnet: "10.2.0.0/24".parse().unwrap(),
                    gateway: "10.2.0.1".parse().unwrap(),
                    internal: true,
                    icc: true,
                    masquerade: true,
                },
            ],
            endpoints: vec![
                EndpointSpec {
                    network_id: 1,
                    ip: "10.1.0.2".parse().unwrap(),
                    mac: [2, 0, 0, 0, 0, 2],
                    host_ifname: "v1".into(),
                },
                EndpointSpec {
                    network_id: 2,
                    ip: "10.2.0.2".parse().unwrap(),
                    mac: [2, 0, 0, 0, 0, 3],
                    host_ifname: "v2".into(),
                },
            ],
            ports: Vec::new(),
        }
    }

    fn port(ip: Option<&str>, proto: Proto, host_port: u16, to: &str) -> PortSpec {
        PortSpec {
            host_ip: ip.map(|i| i.parse().unwrap()),
            proto,
            host_port,
            container_ip: to.parse().unwrap(),
            container_port: 80,
        }
    }

    #[test]
    fn the_same_port_twice_is_refused_but_other_protocols_and_addresses_are_not() {
        let mut s = state();
        s.ports = vec![
            port(None, Proto::Tcp, 8081, "10.1.0.2"),
            port(None, Proto::Udp, 8081, "10.1.0.2"),
            port(Some("192.0.2.1"), Proto::Tcp, 8082, "10.1.0.2"),
            port(Some("192.0.2.2"), Proto::Tcp, 8082, "10.1.0.2"),
        ];
        EbpfDataplane::validate(&s).unwrap();
        for (dup, want) in [
            (port(None, Proto::Tcp, 8081, "10.1.0.2"), "0.0.0.0:8081/tcp"),
            // An all-addresses binding overlaps every specific one.
            (port(None, Proto::Tcp, 8082, "10.1.0.2"), "0.0.0.0:8082/tcp"),
            (
                port(Some("192.0.2.9"), Proto::Udp, 8081, "10.1.0.2"),
                "192.0.2.9:8081/udp",
            ),
        ] {
            let mut s2 = s.clone();
            s2.ports.push(dup);
            let e = EbpfDataplane::validate(&s2).unwrap_err();
            assert_eq!(e.to_string(), format!("port is already allocated: {want}"));
        }
    }

    #[test]
    fn references_to_unknown_networks_and_containers_are_refused() {
        let mut s = state();
        s.ports = vec![port(None, Proto::Tcp, 8081, "10.1.0.99")];
        assert_eq!(
            EbpfDataplane::validate(&s).unwrap_err().to_string(),
            "port 0.0.0.0:8081/tcp: 10.1.0.99 is not a container address"
        );
        let mut s = state();
        s.endpoints[0].network_id = 7;
        assert_eq!(
            EbpfDataplane::validate(&s).unwrap_err().to_string(),
            "endpoint 10.1.0.2 names unknown network 7"
        );
        let mut s = state();
        s.endpoints[1].ip = s.endpoints[0].ip;
        assert_eq!(
            EbpfDataplane::validate(&s).unwrap_err().to_string(),
            "endpoint address 10.1.0.2 is used twice"
        );
    }

    #[test]
    fn ports_of_internal_networks_get_no_map_entry() {
        let mut s = state();
        s.ports = vec![
            port(None, Proto::Tcp, 8081, "10.1.0.2"),
            port(None, Proto::Tcp, 8082, "10.2.0.2"),
        ];
        let eff: Vec<u16> = EbpfDataplane::effective_ports(&s)
            .iter()
            .map(|p| p.host_port)
            .collect();
        assert_eq!(eff, vec![8081]);
        let k = port_key(&s.ports[0]);
        assert_eq!((k.addr_be, u16::from_be(k.port_be), k.proto), (0, 8081, 6));
        let k = port_key(&port(Some("192.0.2.1"), Proto::Udp, 53, "10.1.0.2"));
        assert_eq!(
            addr_from_be(k.addr_be),
            "192.0.2.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(k.addr_be.to_ne_bytes(), [192, 0, 2, 1], "packet byte order");
        assert_eq!(k.proto, 17);
    }
}
