//! [`EbpfDataplane`]: loads the kernel programs, pins their maps and links
//! under the agent's bpffs directory, and makes every map entry, attachment
//! and port reservation agree with a [`DesiredState`] in one `sync`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupSock, CgroupSockAddr, ProgramError, SchedClassifier},
};
use pier_common::{
    config::{self, GLOBAL_HOST_NETNS_COOKIE},
    ct::FlowKey,
    drop::DropReason,
    endpoint::EndpointVal,
    maps as names,
    metrics::Counter,
    nat::{NatVal, PortKey, PortVal},
    nat6::{FlowKey6, NatVal6},
};

pub use super::maps::{
    CtCounts, addr_be, addr_from_be, addr6_be, addr6_from_be, port_key, port_key6, proto_num,
};
use super::{
    Dataplane, DataplaneConfig, DataplaneError, DesiredState, EBPF_OBJECT, PortSpec, PortStats,
    Proto, attach,
    maps::{self, Tables},
    observe::{self, IfCounters, MonitorHub},
    programs,
    reserve::{self, PortId},
    sys,
};

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

/// Remove the pins under `dir` whose map is not the one `object` defines
/// (type, flags, key or value size, or size of the table — as `sizes`
/// overrides it — differ: an older pier's layout, e.g. the LRU `PIER_SNAT_*`
/// maps of before), so the load makes them afresh instead of handing the
/// programs maps they would misread. Their entries are lost (conntrack of a
/// layout change: established connections through it are cut once); pins
/// of the same layout are kept, entries and all. Returns the names removed.
pub fn drop_stale_pins(
    object: &[u8],
    dir: &Path,
    sizes: &BTreeMap<&str, u32>,
) -> Result<Vec<String>, DataplaneError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| err("parsing the eBPF object", e))?;
    let mut removed = Vec::new();
    for name in names::PINNED {
        let path = dir.join(name);
        let Some(def) = obj.maps.get(name) else {
            continue;
        };
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else {
            // No pin (or not a map): the load makes it.
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| err(path.display(), e))?;
                removed.push(name.to_string());
            }
            continue;
        };
        let entries = sizes.get(name).copied().unwrap_or(def.max_entries());
        let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        let same = map_type == def.map_type()
            && info.map_flags() == def.map_flags()
            && info.key_size() == def.key_size()
            && info.value_size() == def.value_size()
            && info.max_entries() == entries;
        if !same {
            tracing::warn!(
                "pinned map {name} has another layout (type {map_type} flags {:#x} key {} value {} entries {}, now {} {:#x} {} {} {entries}): made afresh",
                info.map_flags(),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                def.map_type(),
                def.map_flags(),
                def.key_size(),
                def.value_size(),
            );
            std::fs::remove_file(&path).map_err(|e| err(path.display(), e))?;
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

/// Like [`err`], with the error's sources.
fn err_chain(what: impl std::fmt::Display, e: impl std::error::Error + 'static) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {}", crate::error::one_line(&e)))
}

/// The kernel programs log (aya-log) at debug level only, and only when
/// debug is enabled for their target (`RUST_LOG=pier_dataplane=debug`):
/// otherwise the level given to them at load is 0 and they log nothing.
fn kernel_log_level() -> u8 {
    if tracing::enabled!(target: "pier_dataplane", tracing::Level::DEBUG) {
        aya_log::Level::Debug as u8
    } else {
        0
    }
}

/// Forward the kernel programs' log records to the agent's log, from a
/// thread that drains their ring buffer every 100 ms (debug only).
fn read_kernel_log(bpf: &mut aya::Ebpf) {
    let mut logger = match aya_log::EbpfLogger::init(bpf) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("kernel log: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        loop {
            logger.flush();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

fn port_id(p: &PortSpec) -> PortId {
    let any = if p.is_v6() {
        std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    (p.host_ip.unwrap_or(any), p.proto, p.host_port)
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

/// The eBPF dataplane of one agent (one host namespace, one bpffs directory).
pub struct EbpfDataplane {
    cfg: DataplaneConfig,
    bpf: Option<Ebpf>,
    /// Host-side veths with `pier_veth_in` attached, and the record of each
    /// attachment (netlink filter record, or a TCX link pin of an older run).
    veths: BTreeMap<String, PathBuf>,
    reservations: BTreeMap<PortId, OwnedFd>,
    applied: DesiredState,
    timeouts: CtTimeouts,
    /// Another ELF object than [`EBPF_OBJECT`] (tests).
    object: Option<Vec<u8>>,
    /// The ifindex each uplink had when `pier_uplink_in` was attached.
    uplinks: BTreeMap<String, u32>,
    /// The map entries as the last sync wrote them (the next one writes the
    /// difference); `None` after start or a failed sync.
    written: Option<Tables>,
    /// The host's interfaces as last read: read whole at start, for a new
    /// bridge and after the host changed (`host_changed`); a new veth is
    /// looked up by name alone.
    ifaces: Option<BTreeMap<String, sys::Iface>>,
    /// The monitor's maps and reader (taken from the object at start).
    monitor: Option<std::sync::Arc<MonitorHub>>,
    /// Size of `PIER_EVENTS` in bytes.
    monitor_bytes: u32,
    /// Interfaces with a `PIER_IF_STATS` entry (veths and uplinks), by name.
    if_names: BTreeMap<String, u32>,
    /// Entries of each `PIER_SNAT_*` map ([`names::SNAT_LEN`]; tests fill a
    /// smaller one).
    snat_len: u32,
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
            uplinks: BTreeMap::new(),
            written: None,
            ifaces: None,
            monitor: None,
            monitor_bytes: names::EVENTS_BYTES,
            if_names: BTreeMap::new(),
            snat_len: names::SNAT_LEN,
        }
    }

    /// Make the `PIER_SNAT_*` maps (both families) `entries` long (before
    /// `start`; tests that fill them).
    pub fn with_snat_len(mut self, entries: u32) -> Self {
        self.snat_len = entries;
        self
    }

    /// The maps whose size is not the object's, with their size.
    fn map_sizes(&self) -> BTreeMap<&'static str, u32> {
        [
            names::SNAT_FWD,
            names::SNAT_REV,
            names::SNAT_FWD6,
            names::SNAT_REV6,
        ]
        .into_iter()
        .map(|n| (n, self.snat_len))
        .collect()
    }

    /// The monitor's ring buffer size in bytes (a power of two, at least a
    /// page; before `start`).
    pub fn with_monitor_buffer(mut self, bytes: u32) -> Self {
        self.monitor_bytes = bytes;
        self
    }

    /// One `PIER_IF_STATS` entry per attached veth and uplink: all of them
    /// read and the map compared whole when `changed` is `None`, else only
    /// the veths attached and detached since (`changed`) are written.
    fn sync_if_stats(
        &mut self,
        ifaces: &BTreeMap<String, sys::Iface>,
        changed: Option<(&[String], &[String])>,
    ) -> Result<(), DataplaneError> {
        let Some((added, gone)) = changed else {
            let names: BTreeMap<String, u32> = self
                .veths
                .keys()
                .chain(self.cfg.uplinks.iter())
                .filter_map(|n| Some((n.clone(), ifaces.get(n)?.ifindex)))
                .collect();
            let want: BTreeSet<u32> = names.values().copied().collect();
            observe::sync_if_stats(self.bpf()?, &want)?;
            self.if_names = names;
            return Ok(());
        };
        let mut new = Vec::new();
        for n in added {
            if let Some(i) = ifaces.get(n)
                && self.if_names.insert(n.clone(), i.ifindex) != Some(i.ifindex)
            {
                new.push(i.ifindex);
            }
        }
        let mut old = Vec::new();
        for n in gone {
            if self.cfg.uplinks.contains(n) {
                continue;
            }
            if let Some(i) = self.if_names.remove(n) {
                old.push(i);
            }
        }
        // An ifindex still named (reused by a new veth) keeps its entry.
        old.retain(|i| !self.if_names.values().any(|v| v == i));
        maps::if_stats_diff(self.bpf()?, &new, &old)
    }

    /// The interfaces `desired` needs: the cached ones, with each veth not
    /// in the last applied state looked up by name (one ioctl), and those
    /// no longer desired dropped (a name made again is looked up again).
    /// Read whole (`true`) at the first sync and when a bridge is not known
    /// yet.
    fn interfaces_for(
        &mut self,
        desired: &DesiredState,
    ) -> Result<(BTreeMap<String, sys::Iface>, bool), DataplaneError> {
        let Some(mut c) = self
            .ifaces
            .take()
            .filter(|c| desired.networks.iter().all(|n| c.contains_key(&n.bridge)))
        else {
            return Ok((sys::interfaces()?, true));
        };
        // (Hash sets: a thousand veth names share their first letters.)
        let known: std::collections::HashSet<&str> = self
            .applied
            .endpoints
            .iter()
            .map(|e| e.host_ifname.as_str())
            .collect();
        let want: std::collections::HashSet<&str> = desired
            .endpoints
            .iter()
            .map(|e| e.host_ifname.as_str())
            .collect();
        for gone in known.iter().filter(|n| !want.contains(*n)) {
            c.remove(*gone);
        }
        for name in want {
            if known.contains(name) && c.contains_key(name) {
                continue;
            }
            match nix::net::if_::if_nametoindex(name) {
                Ok(i) => {
                    let e = c.entry(name.to_string()).or_default();
                    e.ifindex = i;
                }
                Err(_) => {
                    c.remove(name);
                }
            }
        }
        Ok((c, false))
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

    /// Load every program, surfacing a verifier rejection as
    /// [`DataplaneError::Verifier`] with the log written to a file.
    fn load_programs(bpf: &mut Ebpf) -> Result<(), DataplaneError> {
        for (name, prog) in bpf.programs_mut() {
            // The verifier gives up with EAGAIN when a signal is pending for
            // the loading thread (a busy host: seen in parallel tests);
            // libbpf retries the same way.
            let mut tries = 0;
            loop {
                let r = match &mut *prog {
                    aya::programs::Program::SchedClassifier(p) => p.load(),
                    aya::programs::Program::CgroupSockAddr(p) => p.load(),
                    aya::programs::Program::CgroupSock(p) => p.load(),
                    _ => break,
                };
                match r {
                    Ok(()) => break,
                    Err(ProgramError::LoadError { io_error, .. })
                        if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
                    {
                        tries += 1;
                        tracing::debug!("{name}: the verifier was interrupted (EAGAIN); again");
                    }
                    Err(e) => return Err(verifier_error(name, e)),
                }
            }
        }
        Ok(())
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier, DataplaneError> {
        self.program(name)
    }

    /// The loaded program `name` as its kind `T`.
    fn program<T>(&mut self, name: &str) -> Result<&mut T, DataplaneError>
    where
        for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        self.bpf()?
            .program_mut(name)
            .ok_or_else(|| DataplaneError::Other(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| err(name, e))
    }

    /// Attach `pier_uplink_in` to each uplink that exists and is not attached
    /// at its current ifindex (new, or deleted and made again: its old TCX
    /// link went with the old interface). A missing uplink is skipped (it is
    /// attached when it appears).
    fn attach_uplinks(
        &mut self,
        ifaces: &BTreeMap<String, sys::Iface>,
    ) -> Result<(), DataplaneError> {
        let dir = self.cfg.bpffs_dir.clone();
        for up in self.cfg.uplinks.clone() {
            let Some(i) = ifaces.get(&up) else {
                self.uplinks.remove(&up);
                continue;
            };
            if self.uplinks.get(&up) == Some(&i.ifindex) {
                continue;
            }
            let pin = attach::tc_pin(&dir, programs::UPLINK_IN, &up);
            let prog = self.classifier(programs::UPLINK_IN)?;
            attach::attach_tc(prog, programs::UPLINK_IN, &up, &pin)?;
            tracing::info!(
                "{} attached to uplink {up} (ifindex {})",
                programs::UPLINK_IN,
                i.ifindex
            );
            self.uplinks.insert(up, i.ifindex);
        }
        Ok(())
    }

    /// [`Self::sync_host`] with the interfaces already read (`sync` reads
    /// them once for both the tables and the host maps).
    fn sync_host_with(
        &mut self,
        ifaces: &BTreeMap<String, sys::Iface>,
    ) -> Result<(), DataplaneError> {
        let uplinks = self.cfg.uplinks.clone();
        maps::write_host(self.bpf()?, ifaces, &uplinks)
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
        let mut ips6 = BTreeSet::new();
        for e in &desired.endpoints {
            if let Some(ip6) = e.ip6 {
                ips6.insert(ip6);
            }
            if !ids.contains(&e.network_id) {
                return Err(DataplaneError::Other(format!(
                    "endpoint {} names unknown network {}",
                    e.ip.map(|i| i.to_string())
                        .unwrap_or_else(|| e.host_ifname.clone()),
                    e.network_id
                )));
            }
            if let Some(ip) = e.ip
                && !ips.insert(ip)
            {
                return Err(DataplaneError::Other(format!(
                    "endpoint address {ip} is used twice"
                )));
            }
        }
        let mut seen: BTreeMap<(bool, Proto, u16), Vec<Option<std::net::IpAddr>>> = BTreeMap::new();
        for p in &desired.ports {
            let known = match p.container_ip {
                std::net::IpAddr::V4(a) => ips.contains(&a),
                std::net::IpAddr::V6(a) => ips6.contains(&a),
            };
            if p.host_ip.is_some_and(|h| h.is_ipv6() != p.is_v6()) {
                return Err(DataplaneError::Other(format!(
                    "port {}: {} is of the other address family",
                    reserve::describe(&port_id(p)),
                    p.container_ip
                )));
            }
            if !known {
                return Err(DataplaneError::Other(format!(
                    "port {}: {} is not a container address",
                    reserve::describe(&port_id(p)),
                    p.container_ip
                )));
            }
            let bound = seen.entry((p.is_v6(), p.proto, p.host_port)).or_default();
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

    /// Attach `pier_veth_in` to every desired host-side veth; detach the
    /// rest. The names attached and detached.
    fn sync_veths(
        &mut self,
        want: &BTreeSet<String>,
    ) -> Result<(Vec<String>, Vec<String>), DataplaneError> {
        let dir = self.cfg.bpffs_dir.clone();
        let mut added = Vec::new();
        for ifname in want {
            if self.veths.contains_key(ifname) {
                continue;
            }
            let marker = attach::nl_marker(&dir, programs::VETH_IN, ifname);
            let prog = self.classifier(programs::VETH_IN)?;
            attach::attach_tc_netlink(prog, programs::VETH_IN, ifname, &marker)?;
            self.veths.insert(ifname.to_string(), marker);
            added.push(ifname.clone());
        }
        let gone: Vec<String> = if self.veths.len() == want.len() {
            // Every attached one is wanted (all wanted ones are attached).
            Vec::new()
        } else {
            self.veths
                .keys()
                .filter(|k| !want.contains(*k))
                .cloned()
                .collect()
        };
        for ifname in &gone {
            if let Some(record) = self.veths.remove(ifname) {
                attach::detach_entry(&record);
            }
        }
        Ok((added, gone))
    }

    /// Reserve the desired ports not yet reserved; on failure release what this
    /// call reserved and report the port.
    fn reserve_ports(&mut self, desired: &DesiredState) -> Result<Vec<PortId>, DataplaneError> {
        let mut new = Vec::new();
        for p in desired.ports.iter().filter(|p| p.reserve) {
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

    /// Remove conntrack and NAT entries whose lifetime is over (also done by
    /// every `sync`; the agent may call it on a timer). A masquerade pair goes
    /// when both halves have expired.
    pub fn gc_conntrack(&mut self) -> Result<CtCounts, DataplaneError> {
        let now = self.kernel_now()?;
        maps::gc(self.bpf()?, now)?;
        self.ct_counts()
    }

    /// The programs' clock now (`pier_clock`: the very `ct::now` they stamp
    /// expiries with). An object without `pier_clock` stamps with
    /// CLOCK_MONOTONIC_COARSE, which CLOCK_MONOTONIC leads by at most a tick.
    pub fn kernel_now(&mut self) -> Result<u64, DataplaneError> {
        if self.bpf()?.program(programs::CLOCK).is_none() {
            return Ok(sys::monotonic_ns());
        }
        let (_, out) = self.test_run(programs::CLOCK, &[0u8; 64], 0)?;
        let b: [u8; 8] = out
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| DataplaneError::Other("pier_clock: no output".into()))?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Forget every published connection (like `conntrack -F` for `PIER_CT`).
    /// Established connections keep working: replies are re-tracked from
    /// `PIER_BACKENDS`, requests from `PIER_PORTS`.
    pub fn flush_conntrack(&mut self) -> Result<usize, DataplaneError> {
        maps::flush_ct(self.bpf()?)
    }

    fn bpf_ref(&self) -> Result<&Ebpf, DataplaneError> {
        self.bpf
            .as_ref()
            .ok_or_else(|| DataplaneError::Other("the dataplane is not started".into()))
    }

    /// How many entries the conntrack and NAT maps hold.
    pub fn ct_counts(&self) -> Result<CtCounts, DataplaneError> {
        maps::counts(self.bpf_ref()?)
    }

    /// `PIER_PORTS` as the kernel holds it.
    /// Every IPv4 masquerade entry: `(PIER_SNAT_FWD, PIER_SNAT_REV)`.
    pub fn snat_entries(&self) -> Result<maps::SnatEntries<FlowKey, NatVal>, DataplaneError> {
        maps::snat_entries(self.bpf_ref()?, names::SNAT_FWD, names::SNAT_REV)
    }

    /// Every IPv6 masquerade entry: `(PIER_SNAT_FWD6, PIER_SNAT_REV6)`.
    pub fn snat6_entries(&self) -> Result<maps::SnatEntries<FlowKey6, NatVal6>, DataplaneError> {
        maps::snat_entries(self.bpf_ref()?, names::SNAT_FWD6, names::SNAT_REV6)
    }

    pub fn port_entries(&self) -> Result<Vec<(PortKey, PortVal)>, DataplaneError> {
        maps::ports(self.bpf_ref()?)
    }

    /// `PIER_PORTS6` as the kernel holds it.
    pub fn port6_entries(
        &self,
    ) -> Result<Vec<(pier_common::nat6::PortKey6, pier_common::nat6::PortVal6)>, DataplaneError>
    {
        maps::ports6(self.bpf_ref()?)
    }

    /// `PIER_POLICY` as the kernel holds it (prefix length, key, value).
    pub fn policy_entries(
        &self,
    ) -> Result<
        Vec<(
            u32,
            pier_common::policy::PolicyKey,
            pier_common::policy::PolicyVal,
        )>,
        DataplaneError,
    > {
        maps::policy(self.bpf_ref()?)
    }

    /// `PIER_ENDPOINTS` as the kernel holds it (address → value).
    pub fn endpoint_entries(&self) -> Result<Vec<(Ipv4Addr, EndpointVal)>, DataplaneError> {
        maps::endpoints(self.bpf_ref()?)
    }

    /// `PIER_ENDPOINTS6` as it is.
    pub fn endpoint6_entries(&self) -> Result<Vec<(Ipv6Addr, EndpointVal)>, DataplaneError> {
        maps::endpoints6(self.bpf_ref()?)
    }

    /// Per-reason drop counters summed over the CPUs.
    pub fn drop_counts(&self) -> Result<Vec<(DropReason, Counter)>, DataplaneError> {
        maps::drops(self.bpf_ref()?)
    }

    fn start_inner(&mut self) -> Result<(), DataplaneError> {
        self.written = None;
        self.ifaces = None;
        sys::raise_nofile();
        // A mistyped --uplink is refused before anything is loaded or pinned.
        let present = sys::interfaces()?;
        if let Some(up) = self.cfg.uplinks.iter().find(|u| !present.contains_key(*u)) {
            return Err(DataplaneError::Other(format!("uplink {up} does not exist")));
        }
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
        // The programs' clock: jiffies times the tick, when the kernel's HZ
        // is known (else the programs read CLOCK_MONOTONIC_COARSE).
        let hz = sys::kernel_hz();
        let (tick, jiffies0) = hz.map_or((0, 0), |hz| {
            (config::tick_nsec(hz), config::initial_jiffies(hz))
        });
        if hz.is_none() {
            tracing::debug!("the kernel's HZ is not known: the programs read the coarse clock");
        }
        let object = aligned(self.object.as_deref().unwrap_or(EBPF_OBJECT));
        let sizes = self.map_sizes();
        drop_stale_pins(&object, &self.cfg.bpffs_dir, &sizes)?;
        let mut loader = EbpfLoader::new();
        for (name, n) in &sizes {
            loader.map_max_entries(name, *n);
        }
        // Pinned explicitly, by name, under this agent's directory only: a
        // plain `Ebpf::load` of the object (tests, benchmarks) pins nothing.
        let pins: Vec<(&str, PathBuf)> = names::PINNED
            .iter()
            .map(|n| (*n, self.cfg.bpffs_dir.join(n)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        loader.map_max_entries(names::EVENTS, self.monitor_bytes);
        let wake_bytes = self.monitor_bytes as u64 / 4;
        let mut bpf = loader
            .override_global(config::GLOBAL_EVENTS_WAKE_BYTES, &wake_bytes, true)
            .override_global(GLOBAL_HOST_NETNS_COOKIE, &cookie, true)
            .override_global(config::GLOBAL_CT_TCP_EST_NS, &est, true)
            .override_global(config::GLOBAL_CT_TCP_CLOSING_NS, &closing, true)
            .override_global(config::GLOBAL_CT_UDP_NS, &udp, true)
            .override_global(config::GLOBAL_CT_ICMP_NS, &icmp, true)
            // (Not in an older object, which another may be: measurements.)
            .override_global(config::GLOBAL_CLOCK_TICK_NS, &tick, false)
            .override_global(config::GLOBAL_CLOCK_JIFFIES0, &jiffies0, false)
            .override_global(aya_log::LEVEL, &kernel_log_level(), false)
            .load(&object)
            .map_err(|e| err_chain("loading the eBPF object", e))?;
        Self::load_programs(&mut bpf)?;
        self.monitor = Some(MonitorHub::take(&mut bpf)?);
        if kernel_log_level() != 0 {
            read_kernel_log(&mut bpf);
        }
        self.bpf = Some(bpf);
        // Forwarding for networks without masquerade (routed through the host).
        sys::set_sysctl("net.ipv4.ip_forward", "1")?;
        let ifaces = sys::interfaces()?;
        self.sync_host_with(&ifaces)?;
        let dir = self.cfg.bpffs_dir.clone();
        self.uplinks.clear();
        self.attach_uplinks(&ifaces)?;
        // Host-side veths attached by a previous run: replace their programs
        // in place now (no gap); the next sync keeps or detaches them.
        if let Ok(rd) = std::fs::read_dir(attach::links_dir(&dir)) {
            let prefix = format!("tc_{}_", programs::VETH_IN);
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = attach::nl_ifname(&name) {
                    let prog = self.classifier(programs::VETH_IN)?;
                    let marker = e.path();
                    if sys::interfaces_has(ifname)
                        && attach::attach_tc_netlink(prog, programs::VETH_IN, ifname, &marker)
                            .is_ok()
                    {
                        self.veths.insert(ifname.to_string(), marker);
                    } else {
                        attach::detach_entry(&marker);
                    }
                } else if let Some(ifname) = name.strip_prefix(&prefix) {
                    // A TCX link pinned by an older agent: keep it as it is.
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
                let prog: &mut CgroupSockAddr = self.program(name)?;
                attach::attach_cgroup(prog, name, &cg, &pin)?;
            }
            let name = programs::SOCK_RELEASE;
            let pin = attach::cg_pin(&dir, name);
            let prog: &mut CgroupSock = self.program(name)?;
            attach::attach_cgroup_sock(prog, name, &cg, &pin)?;
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

    /// [`Self::test_run`] `runs` times (each on a fresh copy of `packet`);
    /// the verdict of the last and the kernel's run time of each, in ns
    /// (`BPF_PROG_TEST_RUN`'s duration: the program plus a constant of the
    /// harness, which a run of a frame the program passes at once shows).
    pub fn test_run_ns(
        &mut self,
        program: &str,
        packet: &[u8],
        ifindex: u32,
        runs: usize,
    ) -> Result<(u32, Vec<u64>), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let prog = self.classifier(program)?;
        let mut out = vec![0u8; packet.len() + 256];
        let mut ns = Vec::with_capacity(runs);
        let mut verdict = 0;
        for _ in 0..runs {
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    data_out: Some(&mut out),
                    ctx_in: (ifindex != 0).then_some(&ctx[..]),
                    ..Default::default()
                })
                .map_err(|e| err_chain(program, e))?;
            verdict = r.return_value;
            ns.push(r.duration.as_nanos() as u64);
        }
        Ok((verdict, ns))
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
                attach::detach_entry(&e.path());
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
    fn teardown(&mut self) -> Result<(), DataplaneError> {
        self.remove_all()
    }
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
        // Step timings at debug level (`RUST_LOG=pier_agent=debug`): what a
        // container create/remove spends here (see the containers bench).
        let t0 = std::time::Instant::now();
        Self::validate(desired)?;
        // IPv6 forwarding once a dual-stack network exists (as Docker sets
        // it with `--ipv6`: routed networks need it), not before: with it
        // the host stops taking router advertisements.
        if desired.networks.iter().any(|n| n.subnet6.is_some())
            && std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
                .is_ok_and(|v| v.trim() == "0")
        {
            sys::set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        let (ifaces, full) = self.interfaces_for(desired)?;
        let tables = Tables::new(desired, &ifaces);
        // Cached again whatever happens next (the interfaces are facts of
        // the host, not of this sync).
        self.ifaces = Some(ifaces);
        let mut tables = tables?;
        let t_tables = t0.elapsed();
        let new = self.reserve_ports(desired)?;
        let mut t_veths = t_tables;
        let prev = self.written.take();
        let mut attached = (Vec::new(), Vec::new());
        let applied = self.sync_veths(&tables.veths).and_then(|a| {
            attached = a;
            t_veths = t0.elapsed();
            maps::write(self.bpf()?, &mut tables, prev.as_ref())
        });
        if let Err(e) = applied {
            for id in &new {
                self.reservations.remove(id);
            }
            // The next sync reads the host whole (and compares the
            // statistics map whole: attachments may be half made).
            self.ifaces = None;
            return Err(e);
        }
        let want: BTreeSet<PortId> = desired.ports.iter().map(port_id).collect();
        self.reservations.retain(|id, _| want.contains(id));
        self.applied = desired.clone();
        self.written = Some(tables);
        let t_maps = t0.elapsed();
        let ifaces = self.ifaces.take().unwrap_or_default();
        // The host's own addresses and uplinks only when they were read
        // (otherwise `host_changed` follows them).
        let host = if full {
            self.sync_host_with(&ifaces)
        } else {
            Ok(())
        }
        .and_then(|()| {
            let changed = (!full).then_some((attached.0.as_slice(), attached.1.as_slice()));
            self.sync_if_stats(&ifaces, changed)
        });
        self.ifaces = Some(ifaces);
        host?;
        // (Expired conntrack entries go on the agent's GC timer, not here.)
        tracing::debug!(
            "dataplane sync: tables {:?} (interfaces read {}), veths {:?}, maps {:?}, host {:?}",
            t_tables,
            if full { "whole" } else { "by name" },
            t_veths - t_tables,
            t_maps - t_veths,
            t0.elapsed() - t_maps,
        );
        Ok(())
    }

    fn gc(&mut self) -> Result<(), DataplaneError> {
        self.gc_conntrack().map(|_| ())
    }

    fn host_changed(&mut self) -> Result<(), DataplaneError> {
        if self.bpf.is_none() {
            return Ok(());
        }
        let ifaces = sys::interfaces()?;
        self.sync_host_with(&ifaces)?;
        self.attach_uplinks(&ifaces)?;
        let r = self.sync_if_stats(&ifaces, None);
        // The next sync works from what was just read.
        self.ifaces = Some(ifaces);
        r
    }

    fn if_stats(&self) -> Result<Vec<IfCounters>, DataplaneError> {
        observe::if_stats(self.bpf_ref()?, &self.if_names)
    }

    fn monitor(&self) -> Option<std::sync::Arc<MonitorHub>> {
        self.monitor.clone()
    }

    fn observed(&self) -> Result<super::Observed, DataplaneError> {
        let bpf = self.bpf_ref()?;
        Ok(super::Observed {
            drops: maps::drops(bpf)?,
            maps: maps::counts(bpf)?,
            nat_ports_max_peer: observe::nat_ports_max_peer(bpf)?,
            kernel: self
                .monitor
                .as_ref()
                .map(|m| m.kernel_counters())
                .unwrap_or_default(),
        })
    }

    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        let bpf = self.bpf_ref()?;
        // Each port's counter slot as last written (after a failed write,
        // as the kernel's map holds it); a port with none counted nothing.
        let written = self.written.as_ref();
        self.applied
            .ports
            .iter()
            .map(|p| {
                let (c, d) = if p.is_v6() {
                    let key = maps::port_key6(p);
                    let slot = match written {
                        Some(t) => t.ports6.get(&key).map(|v| v.slot),
                        None => maps::port_slot6(bpf, &key)?,
                    };
                    let c = slot.map(|s| maps::port_counter6(bpf, s)).transpose()?;
                    (c, maps::port_denied6(bpf, &key)?)
                } else {
                    let key = port_key(p);
                    let slot = match written {
                        Some(t) => t.ports.get(&key).map(|v| v.slot),
                        None => maps::port_slot(bpf, &key)?,
                    };
                    let c = slot.map(|s| maps::port_counter(bpf, s)).transpose()?;
                    (c, maps::port_denied(bpf, &key)?)
                };
                let c = c.unwrap_or_default();
                Ok(PortStats {
                    port: p.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                    denied: d.packets,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{EndpointSpec, NetworkSpec};

    fn state() -> DesiredState {
        DesiredState {
            networks: vec![
                NetworkSpec {
                    id: 1,
                    bridge: "br1".into(),
                    subnet: Some("10.1.0.0/24".parse().unwrap()),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    subnet6: None,
                    gateway6: None,
                    internal: false,
                    icc: true,
                    masquerade: true,
                },
                NetworkSpec {
                    id: 2,
                    bridge: "br2".into(),
                    subnet: Some("10.2.0.0/24".parse().unwrap()),
                    gateway: Some("10.2.0.1".parse().unwrap()),
                    subnet6: None,
                    gateway6: None,
                    internal: true,
                    icc: true,
                    masquerade: true,
                },
            ],
            endpoints: vec![
                EndpointSpec {
                    network_id: 1,
                    ip: Some("10.1.0.2".parse().unwrap()),
                    ip6: None,
                    mac: [2, 0, 0, 0, 0, 2],
                    host_ifname: "v1".into(),
                },
                EndpointSpec {
                    network_id: 2,
                    ip: Some("10.2.0.2".parse().unwrap()),
                    ip6: None,
                    mac: [2, 0, 0, 0, 0, 3],
                    host_ifname: "v2".into(),
                },
            ],
            ports: Vec::new(),
            ..Default::default()
        }
    }

    fn port(ip: Option<&str>, proto: Proto, host_port: u16, to: &str) -> PortSpec {
        PortSpec {
            host_ip: ip.map(|i| i.parse().unwrap()),
            proto,
            host_port,
            container_ip: to.parse().unwrap(),
            container_port: 80,
            reserve: true,
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

    fn ifaces(names: &[&str]) -> BTreeMap<String, sys::Iface> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let iface = sys::Iface {
                    ifindex: 10 + i as u32,
                    mac: Some([2, 0, 0, 0, 1, i as u8]),
                    addrs: Vec::new(),
                    addrs6: Vec::new(),
                };
                (n.to_string(), iface)
            })
            .collect()
    }

    #[test]
    fn an_endpoint_whose_interface_is_gone_is_skipped_with_its_ports() {
        let mut s = state();
        s.ports = vec![port(None, Proto::Tcp, 8081, "10.1.0.2")];
        let t = Tables::new(&s, &ifaces(&["br1", "br2", "v2"])).unwrap();
        let eps: Vec<Ipv4Addr> = t.endpoints.keys().map(|k| addr_from_be(*k)).collect();
        assert_eq!(eps, vec!["10.2.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert!(t.ports.is_empty() && t.backends.is_empty());
        assert_eq!(t.veths.iter().collect::<Vec<_>>(), vec!["v2"]);
        let e = Tables::new(&s, &ifaces(&["br1", "v1", "v2"])).unwrap_err();
        assert_eq!(e.to_string(), "network 2: bridge br2 does not exist");
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
    fn tables_carry_interface_facts_and_skip_ports_of_internal_networks() {
        let mut s = state();
        s.ports = vec![
            port(None, Proto::Tcp, 8081, "10.1.0.2"),
            port(None, Proto::Tcp, 8082, "10.2.0.2"),
        ];
        let t = Tables::new(&s, &ifaces(&["br1", "br2", "v1", "v2"])).unwrap();
        let eff: Vec<u16> = t.ports.keys().map(|k| u16::from_be(k.port_be)).collect();
        assert_eq!(eff, vec![8081]);
        let v4 = t.endpoints[&addr_be("10.1.0.2".parse().unwrap())];
        let ep = v4.ep;
        assert_eq!(
            (ep.ifindex, ep.network_id, ep.bridge_mac),
            (12, 1, [2, 0, 0, 0, 1, 0])
        );
        // Its network's flags and gateway ride along; it is a backend.
        let net = t.networks[&1];
        assert_eq!((v4.net_flags, v4.gateway_be), (net.flags, net.gateway_be));
        assert_eq!(v4.flags, pier_common::endpoint::EP_F_BACKEND);
        // The backend leads back to its host port.
        let (b, h) = t.backends.iter().next().unwrap();
        assert_eq!(
            (u16::from_be(b.port_be), u16::from_be(h.port_be)),
            (80, 8081)
        );
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

    #[test]
    fn a_dual_stack_endpoint_is_found_by_both_addresses_and_its_veth() {
        let mut s = state();
        s.networks[0].subnet6 = Some("fd00:1::/64".parse().unwrap());
        s.endpoints[0].ip6 = Some("fd00:1::2".parse().unwrap());
        let t = Tables::new(&s, &ifaces(&["br1", "br2", "v1", "v2"])).unwrap();
        let a6: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let k = maps::addr6_be(a6);
        assert_eq!(maps::addr6_from_be(k), a6);
        assert_eq!(k[0].to_ne_bytes(), [0xfd, 0, 0, 1], "packet byte order");
        assert_eq!(
            t.endpoints6[&k],
            t.endpoints[&addr_be("10.1.0.2".parse().unwrap())].ep
        );
        assert_eq!(t.endpoints6.len(), 1);
        let net = maps::addr6_be("fd00:1::".parse().unwrap());
        assert_eq!(t.subnets6.get(&(64, net)), Some(&1));
        assert_eq!(t.subnets6.len(), 1);
        // Every veth, single stack too, names its network.
        assert_eq!(t.veth_vals[&12].network_id, 1);
        assert_eq!(t.veth_vals[&13].network_id, 2);
        assert_eq!(t.veth_vals[&13].bridge_mac, [2, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn a_masquerade_pair_lives_while_a_half_does_unless_its_connection_closed() {
        use pier_common::ct::{CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_RST};
        let exp = maps::pair_expires;
        // Open: the newest half (a one-way flow refreshes one only).
        assert_eq!(exp((0, 10), Some((0, 50))), 50);
        assert_eq!(exp((0, 10), None), 10);
        // Half closed: still open.
        assert_eq!(exp((CT_F_FIN_ORIG, 10), Some((0, 50))), 50);
        // Closed (a FIN each way, or a reset from either side): the halves
        // that saw the close, not the established lifetime of the other.
        assert_eq!(exp((CT_F_FIN_ORIG, 10), Some((CT_F_FIN_REPLY, 12))), 12);
        assert_eq!(exp((CT_F_RST, 10), Some((0, 99))), 10);
        assert_eq!(exp((0, 99), Some((CT_F_RST, 10))), 10);
        assert_eq!(exp((CT_F_RST, 10), None), 10);
    }
}
