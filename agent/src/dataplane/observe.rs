//! What the dataplane shows about itself: per-interface counters
//! (`PIER_IF_PKTS` by ifindex, `PIER_IF_STATS` for drops and high ifindexes), kernel event counters (`PIER_KCOUNTERS`) and the
//! monitor's ring buffer (`PIER_EVENTS`, switched on by `PIER_MON_CFG`).
use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf},
};
use pier_common::{
    drop::DropReason,
    event::{Event, IF_DROP_SLOTS, IfPkts, IfStats, KCOUNTERS_LEN, LOST_EVENTS, MON_ON},
    maps as names,
    metrics::Counter,
};

use super::DataplaneError;

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

/// One interface's counters summed over the CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub ifname: String,
    pub ifindex: u32,
    /// Arrived on it and let through (a veth: the container sent it).
    pub rx: Counter,
    /// Sent through it by pier (a veth: into the container).
    pub tx: Counter,
    /// Dropped on arrival, by reason (only reasons with a count).
    pub drops: Vec<(DropReason, u64)>,
}

/// The kernel's own event counters (`PIER_KCOUNTERS`), summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub lost_events: u64,
    pub ct_new: u64,
    pub ct_retracked: u64,
    pub nat_allocated: u64,
}

/// Make `PIER_IF_STATS` hold one entry per interface of `want` (ifindex):
/// new ones zeroed (their `PIER_IF_PKTS` slot too), existing ones kept
/// (their counters go on), others removed.
pub fn sync_if_stats(bpf: &mut Ebpf, want: &BTreeSet<u32>) -> Result<(), DataplaneError> {
    let name = names::IF_STATS;
    let ncpu = aya::util::nr_cpus().map_err(|(w, e)| err(w, e))?;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let mut m: PerCpuHashMap<_, u32, IfStats> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    let have: BTreeSet<u32> = m.keys().filter_map(Result::ok).collect();
    let new: Vec<u32> = want.difference(&have).copied().collect();
    for k in &new {
        let zero =
            PerCpuValues::try_from(vec![IfStats::default(); ncpu]).map_err(|e| err(name, e))?;
        m.insert(k, zero, 0).map_err(|e| err(name, e))?;
    }
    for k in have.difference(want) {
        let _ = m.remove(k);
    }
    let name = names::IF_PKTS;
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let mut a: PerCpuArray<_, IfPkts> = PerCpuArray::try_from(map).map_err(|e| err(name, e))?;
    for k in new.into_iter().filter(|k| *k < names::IF_PKTS_LEN) {
        let zero =
            PerCpuValues::try_from(vec![IfPkts::default(); ncpu]).map_err(|e| err(name, e))?;
        a.set(k, zero, 0).map_err(|e| err(name, e))?;
    }
    Ok(())
}

/// The counters of each interface of `ifaces` (name → ifindex).
pub fn if_stats(
    bpf: &Ebpf,
    ifaces: &BTreeMap<String, u32>,
) -> Result<Vec<IfCounters>, DataplaneError> {
    let name = names::IF_STATS;
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let m: PerCpuHashMap<_, u32, IfStats> =
        PerCpuHashMap::try_from(map).map_err(|e| err(name, e))?;
    let pkts_map = bpf
        .map(names::IF_PKTS)
        .ok_or_else(|| DataplaneError::Other(format!("map {} missing", names::IF_PKTS)))?;
    let pkts: PerCpuArray<_, IfPkts> =
        PerCpuArray::try_from(pkts_map).map_err(|e| err(names::IF_PKTS, e))?;
    let mut out = Vec::new();
    for (ifname, &ifindex) in ifaces {
        let Ok(v) = m.get(&ifindex, 0) else {
            continue;
        };
        let mut c = IfCounters {
            ifname: ifname.clone(),
            ifindex,
            ..Default::default()
        };
        let mut drops = [0u64; IF_DROP_SLOTS];
        let add = |to: &mut Counter, from: &Counter| {
            to.packets += from.packets;
            to.bytes += from.bytes;
        };
        for s in v.iter() {
            add(&mut c.rx, &s.rx);
            add(&mut c.tx, &s.tx);
            for (d, n) in drops.iter_mut().zip(s.drops.iter()) {
                *d += n;
            }
        }
        if ifindex < names::IF_PKTS_LEN {
            let p = pkts.get(&ifindex, 0).map_err(|e| err(names::IF_PKTS, e))?;
            for s in p.iter() {
                add(&mut c.rx, &s.rx);
                add(&mut c.tx, &s.tx);
            }
        }
        c.drops = DropReason::ALL
            .into_iter()
            .filter_map(|r| {
                let n = drops.get(r as usize).copied().unwrap_or(0);
                (n != 0).then_some((r, n))
            })
            .collect();
        out.push(c);
    }
    Ok(out)
}

/// Fan-out of the kernel's monitor events to every attached `pier monitor`.
/// The kernel writes events only while at least one [`Subscription`] lives
/// (the first sets `PIER_MON_CFG`, the last clears it). One thread drains the
/// ring buffer; a subscriber that falls behind loses the oldest events, and
/// those are counted as lost for it like the kernel's.
pub struct MonitorHub {
    cfg: Mutex<Array<MapData, u32>>,
    kcounters: PerCpuArray<MapData, u64>,
    /// Attached monitors, and the channel to them: made by the first to
    /// attach and dropped with the last (its ring of `FANOUT_DEPTH` events
    /// is 7 MiB, held only while someone listens).
    subscribers: Mutex<Fanout>,
    /// Events read from the ring since load.
    pub read: AtomicU64,
}

/// Events a subscriber may fall behind by before it loses some.
const FANOUT_DEPTH: usize = 1 << 16;

#[derive(Default)]
struct Fanout {
    n: usize,
    tx: Option<tokio::sync::broadcast::Sender<Event>>,
}

impl MonitorHub {
    /// Take the monitor's maps out of `bpf` and start the reader thread.
    pub fn take(bpf: &mut Ebpf) -> Result<Arc<MonitorHub>, DataplaneError> {
        let take = |bpf: &mut Ebpf, n: &str| {
            bpf.take_map(n)
                .ok_or_else(|| DataplaneError::Other(format!("map {n} missing")))
        };
        let ring: RingBuf<MapData> =
            RingBuf::try_from(take(bpf, names::EVENTS)?).map_err(|e| err(names::EVENTS, e))?;
        let mut cfg: Array<MapData, u32> =
            Array::try_from(take(bpf, names::MON_CFG)?).map_err(|e| err(names::MON_CFG, e))?;
        // A monitor of a previous load is gone with it.
        cfg.set(0, 0, 0).map_err(|e| err(names::MON_CFG, e))?;
        let kcounters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(take(bpf, names::KCOUNTERS)?)
                .map_err(|e| err(names::KCOUNTERS, e))?;
        let hub = Arc::new(MonitorHub {
            cfg: Mutex::new(cfg),
            kcounters,
            subscribers: Mutex::new(Fanout::default()),
            read: AtomicU64::new(0),
        });
        let h = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("pier-monitor".into())
            .spawn(move || drain(ring, h))
            .map_err(|e| err("monitor thread", e))?;
        Ok(hub)
    }

    /// The kernel's event counters.
    pub fn kernel_counters(&self) -> KernelCounters {
        let get = |i: u32| -> u64 {
            self.kcounters
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        const _: () = assert!(KCOUNTERS_LEN == 4);
        KernelCounters {
            lost_events: get(LOST_EVENTS),
            ct_new: get(pier_common::event::CT_NEW),
            ct_retracked: get(pier_common::event::CT_RETRACKED),
            nat_allocated: get(pier_common::event::NAT_ALLOCATED),
        }
    }

    /// How many monitors are attached.
    pub fn attached(&self) -> usize {
        self.fanout().n
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sender to the attached monitors, if any.
    fn sender(&self) -> Option<tokio::sync::broadcast::Sender<Event>> {
        self.fanout().tx.clone()
    }

    /// Attach a monitor: from now on the kernel writes events.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, DataplaneError> {
        let mut f = self.fanout();
        if f.n == 0 {
            self.cfg
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set(0, MON_ON, 0)
                .map_err(|e| err(names::MON_CFG, e))?;
        }
        let rx =
            f.tx.get_or_insert_with(|| tokio::sync::broadcast::channel(FANOUT_DEPTH).0)
                .subscribe();
        f.n += 1;
        drop(f);
        Ok(Subscription {
            hub: self.clone(),
            rx,
            lost_base: self.kernel_counters().lost_events,
            lagged: 0,
        })
    }

    fn unsubscribe(&self) {
        let mut f = self.fanout();
        f.n = f.n.saturating_sub(1);
        if f.n > 0 {
            return;
        }
        f.tx = None;
        if let Err(e) = self
            .cfg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(0, 0, 0)
        {
            tracing::warn!("monitor off: {e}");
        }
    }
}

/// How often the reader looks at the ring while a monitor is attached: the
/// programs submit with `BPF_RB_NO_WAKEUP` until 64 KiB are unread, so this
/// bounds how late an event reaches a monitor on a quiet host.
const POLL_ATTACHED_MS: i32 = 10;
/// The same with none attached (nothing is written then).
const POLL_IDLE_MS: i32 = 200;

/// The reader: wait for the ring (poll, woken by the kernel only past its
/// threshold, see `POLL_ATTACHED_MS`), hand every event to the subscribers.
/// Ends when the hub is gone.
fn drain(mut ring: RingBuf<MapData>, hub: std::sync::Weak<MonitorHub>) {
    let fd = ring.as_raw_fd();
    let mut timeout = POLL_IDLE_MS;
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout) };
        let Some(h) = hub.upgrade() else {
            return;
        };
        timeout = if h.attached() > 0 {
            POLL_ATTACHED_MS
        } else {
            POLL_IDLE_MS
        };
        let mut n = 0u64;
        let tx = h.sender();
        while let Some(item) = ring.next() {
            if let Some(tx) = &tx
                && item.len() >= std::mem::size_of::<Event>()
            {
                // SAFETY: the kernel wrote a whole `Event` (plain integers).
                let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let _ = tx.send(e);
            }
            n += 1;
        }
        h.read.fetch_add(n, Ordering::Relaxed);
    }
}

/// One attached monitor. Dropping it detaches (the last one turns the
/// kernel's events off).
pub struct Subscription {
    hub: Arc<MonitorHub>,
    rx: tokio::sync::broadcast::Receiver<Event>,
    lost_base: u64,
    lagged: u64,
}

impl Subscription {
    /// The next event, or `None` after `timeout` without one.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<Event> {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(e)) => return Some(e),
                Ok(Err(RecvError::Lagged(n))) => self.lagged += n,
                Ok(Err(RecvError::Closed)) | Err(_) => return None,
            }
        }
    }

    /// Events lost to this monitor since it attached: the kernel's (ring
    /// full) and those it fell behind on.
    pub fn lost(&self) -> u64 {
        self.hub
            .kernel_counters()
            .lost_events
            .saturating_sub(self.lost_base)
            + self.lagged
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe();
    }
}

/// The most `PIER_SNAT_REV` entries (allocated masquerade ports) towards one
/// peer (its address, port and protocol): each peer has the whole pool.
pub fn nat_ports_max_peer(bpf: &Ebpf) -> Result<usize, DataplaneError> {
    use pier_common::{ct::FlowKey, nat::NatVal};
    let name = names::SNAT_REV;
    let map = bpf
        .map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing")))?;
    let m: aya::maps::HashMap<_, FlowKey, NatVal> =
        aya::maps::HashMap::try_from(map).map_err(|e| err(name, e))?;
    let mut per: BTreeMap<(u32, u16, u8), usize> = BTreeMap::new();
    for k in m.keys().filter_map(Result::ok) {
        *per.entry((k.saddr_be, k.sport_be, k.proto)).or_default() += 1;
    }
    Ok(per.values().copied().max().unwrap_or(0))
}
