//! What the kernel programs tell a `pier monitor` (ring buffer `PIER_EVENTS`)
//! and the per-interface counters behind `pier stats` (`PIER_EP_STATS`).
//!
//! Events are written only while the agent has set [`MON_ON`] in
//! `PIER_MON_CFG` (a monitor is attached); otherwise the programs pay one
//! array load on their drop path and on a new flow's path, nothing else. An
//! event that finds the ring full is counted in `PIER_KCOUNTERS[LOST_EVENTS]`.

use crate::metrics::Counter;

/// `Event::kind`: a packet dropped (`Event::reason` says why).
pub const EV_DROP: u8 = 1;
/// A new connection to a published port (`xaddr`/`xport`: the backend).
pub const EV_PUBLISH: u8 = 2;
/// A masquerade allocation for a new flow leaving a container
/// (`xaddr`/`xport`: the source it leaves with).
pub const EV_MASQ: u8 = 3;
/// A reply of a published connection whose conntrack entry was gone (LRU
/// eviction, idle expiry, flush) and was made again (`xaddr`/`xport`: the
/// published address and port it leaves as).
pub const EV_RETRACK: u8 = 4;

/// `Event::family`: ARP (sender and target IPv4 in `saddr[0]`/`daddr[0]`).
pub const FAMILY_ARP: u8 = 0;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
/// Neither IPv4, IPv6 nor ARP.
pub const FAMILY_OTHER: u8 = 255;

/// One event in the ring buffer. The flow is read from the frame as it was
/// when the event was written (a drop after a rewrite shows the rewrite).
/// For ICMP and ICMPv6, `sport_be` holds the type and `dport_be` the code
/// (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub kind: u8,
    /// `DropReason` for [`EV_DROP`].
    pub reason: u8,
    pub family: u8,
    pub proto: u8,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// Frame length.
    pub len: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    /// IPv4: `[addr_be, 0, 0, 0]`; IPv6: the 16 bytes in packet order.
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    /// The extra address of a trace event, as `saddr`: IPv4 in the first
    /// word, IPv6 in packet order (all zero: none).
    pub xaddr: [u32; 4],
    pub xport_be: u16,
    pub _pad: u16,
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<Event>() == 80);

/// `PIER_MON_CFG[0]`: bit set while a monitor is attached.
pub const MON_ON: u32 = 1;

/// Slots of the per-CPU `PIER_KCOUNTERS` array.
/// Events that found the ring buffer full.
pub const LOST_EVENTS: u32 = 0;
/// New published connections (conntrack entries made).
pub const CT_NEW: u32 = 1;
/// Replies whose conntrack entry was gone and was made again.
pub const CT_RETRACKED: u32 = 2;
/// Masquerade allocations (new outbound flows).
pub const NAT_ALLOCATED: u32 = 3;
pub const KCOUNTERS_LEN: u32 = 4;

/// Drop slots per interface (`DropReason` values index it; room for more).
pub const IF_DROP_SLOTS: usize = 24;

/// Counters of one interface (a container's host-side veth or an uplink),
/// per CPU. `rx`: what arrived on it and was not dropped (a veth: what the
/// container sent; an uplink: what came in); `tx`: what pier sent through it
/// (into the container: redirects and same-network traffic; out of an
/// uplink: pier's redirects). `drops[reason]`: packets dropped on arrival.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfStats {
    pub rx: Counter,
    pub tx: Counter,
    pub drops: [u64; IF_DROP_SLOTS],
}

impl Default for IfStats {
    fn default() -> Self {
        IfStats {
            rx: Counter::default(),
            tx: Counter::default(),
            drops: [0; IF_DROP_SLOTS],
        }
    }
}

const _: () = assert!((crate::drop::DropReason::PolicyDenied as usize) < IF_DROP_SLOTS);

/// The packet counters of one interface, per CPU, in the `PIER_IF_PKTS`
/// array indexed by ifindex (an array slot costs the programs a few ns, a
/// hash entry tens): `rx` and `tx` as in [`IfStats`]. An interface whose
/// ifindex is past the array keeps them in its `PIER_IF_STATS` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfPkts {
    pub rx: Counter,
    pub tx: Counter,
}

const _: () = assert!(core::mem::size_of::<IfPkts>() == 32);

crate::pod!(Event, IfStats, IfPkts);
