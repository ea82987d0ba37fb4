//! The monitor's event path and the per-interface counters. Everything here
//! is behind `#[inline(never)]` functions (BPF-to-BPF calls) that take the
//! skb context pointer and scalars, never packet pointers: the frame is read
//! with `bpf_skb_load_bytes`, so the callers' verifier state (packet ranges)
//! is untouched, and a program pays for an event only while a monitor is
//! attached ([`monitoring`]: one array load).
use aya_ebpf::{
    Global,
    bindings::{__sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::TcContext,
};
use pier_common::{
    config::EVENTS_WAKE_BYTES_DEFAULT,
    event::{
        EV_DROP, Event, FAMILY_ARP, FAMILY_OTHER, FAMILY_V4, FAMILY_V6, IF_DROP_SLOTS, LOST_EVENTS,
        MON_ON,
    },
    maps::IF_PKTS_LEN,
    metrics::Counter,
};

use crate::maps::{EVENTS, IF_PKTS, IF_STATS, KCOUNTERS, MON_CFG};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

/// Is a monitor attached? (Never, in a build with `--cfg pier_no_monitor`:
/// the event code is compiled out, the baseline `pier-prog-cost --variants`
/// measures the monitor's cost against.)
#[inline(always)]
pub fn monitoring() -> bool {
    if cfg!(pier_no_monitor) {
        return false;
    }
    MON_CFG.get(0).is_some_and(|v| *v & MON_ON != 0)
}

/// Bump slot `idx` of `PIER_KCOUNTERS`.
#[inline(always)]
pub fn kcount(idx: u32) {
    if let Some(c) = KCOUNTERS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

/// A drop event for the frame in `skb` (see [`pier_emit`]).
#[inline(always)]
pub fn drop(ctx: &TcContext, reason: u32) {
    if monitoring() {
        pier_emit(ctx.skb.skb, EV_DROP as u32 | (reason << 8), 0, 0, 0);
    }
}

/// A trace event of `kind` with the extra IPv4 address/port (`_be`).
#[inline(always)]
pub fn trace(ctx: &TcContext, kind: u8, xaddr_be: u32, xport_be: u16) {
    if monitoring() {
        pier_emit(
            ctx.skb.skb,
            kind as u32,
            xport_be as u32,
            xaddr_be as u64,
            0,
        );
    }
}

/// A trace event of `kind` with the extra IPv6 address/port (`_be`).
#[inline(always)]
pub fn trace6(ctx: &TcContext, kind: u8, xaddr: &[u32; 4], xport_be: u16) {
    if monitoring() {
        let lo = xaddr[0] as u64 | (xaddr[1] as u64) << 32;
        let hi = xaddr[2] as u64 | (xaddr[3] as u64) << 32;
        pier_emit(ctx.skb.skb, kind as u32, xport_be as u32, lo, hi);
    }
}

/// Unread bytes in the ring past which a writer wakes the reader; below it
/// events are submitted with `BPF_RB_NO_WAKEUP` (no wake-up, no irq work per
/// event) and the agent's reader, polling every few milliseconds while a
/// monitor is attached, finds them anyway. Set at load (a quarter of the ring).
#[unsafe(no_mangle)]
static EVENTS_WAKE_BYTES: Global<u64> = Global::new(EVENTS_WAKE_BYTES_DEFAULT);

/// Write one event: `head` = kind | reason << 8; the extra address in two
/// words (`x_lo`: the first 8 bytes in packet order, IPv4 alone there). The
/// flow is re-read from the frame (IPv4, IPv6, ARP) straight into the ring's
/// memory: the callers (`pier_veth_in` uses most of the 512-byte stack)
/// leave this little room. A full ring counts the event as lost.
#[inline(never)]
pub fn pier_emit(skb: *mut __sk_buff, head: u32, xport_be: u32, x_lo: u64, x_hi: u64) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        kcount(LOST_EVENTS);
        return 0;
    };
    let e: *mut Event = entry.as_mut_ptr();
    unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).kind = head as u8;
        (*e).reason = (head >> 8) as u8;
        (*e).family = FAMILY_OTHER;
        (*e).proto = 0;
        (*e).ifindex = (*skb).ifindex;
        (*e).len = (*skb).len;
        (*e).sport_be = 0;
        (*e).dport_be = 0;
        (*e).saddr = [0; 4];
        (*e).daddr = [0; 4];
        (*e).xaddr = [
            x_lo as u32,
            (x_lo >> 32) as u32,
            x_hi as u32,
            (x_hi >> 32) as u32,
        ];
        (*e).xport_be = xport_be as u16;
        (*e)._pad = 0;
        (*e)._pad2 = 0;
        read_flow(skb, e);
    }
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS_WAKE_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wake as u64);
    0
}

/// `len` bytes of the frame at `off` into `dst`.
#[inline(always)]
unsafe fn load(skb: *mut __sk_buff, off: u32, dst: *mut u8, len: u32) -> bool {
    unsafe { bpf_skb_load_bytes(skb as *const c_void, off, dst as *mut c_void, len) == 0 }
}

#[inline(always)]
unsafe fn read_flow(skb: *mut __sk_buff, e: *mut Event) {
    unsafe {
        // The ethertype goes through `sport_be` (overwritten below).
        let tmp = &raw mut (*e).sport_be as *mut u8;
        if !load(skb, 12, tmp, 2) {
            return;
        }
        let l4_off: u32;
        match u16::from_be((*e).sport_be) {
            ETH_P_IP => {
                let proto = &raw mut (*e).proto;
                if !load(skb, 23, proto, 1)
                    || !load(skb, 26, &raw mut (*e).saddr as *mut u8, 4)
                    || !load(skb, 30, &raw mut (*e).daddr as *mut u8, 4)
                {
                    return;
                }
                (*e).family = FAMILY_V4;
                // Fragment offset, then version/IHL, through `dport_be`.
                let t = &raw mut (*e).dport_be as *mut u8;
                if !load(skb, 20, t, 2) || u16::from_be((*e).dport_be) & 0x1fff != 0 {
                    (*e).sport_be = 0;
                    (*e).dport_be = 0;
                    return;
                }
                if !load(skb, 14, t, 1) {
                    return;
                }
                l4_off = 14 + (((*t) & 0x0f) as u32) * 4;
            }
            ETH_P_IPV6 => {
                if !load(skb, 20, &raw mut (*e).proto, 1)
                    || !load(skb, 22, &raw mut (*e).saddr as *mut u8, 16)
                    || !load(skb, 38, &raw mut (*e).daddr as *mut u8, 16)
                {
                    return;
                }
                (*e).family = FAMILY_V6;
                l4_off = 54;
            }
            ETH_P_ARP => {
                (*e).sport_be = 0;
                if load(skb, 28, &raw mut (*e).saddr as *mut u8, 4)
                    && load(skb, 38, &raw mut (*e).daddr as *mut u8, 4)
                {
                    (*e).family = FAMILY_ARP;
                }
                return;
            }
            _ => {
                (*e).sport_be = 0;
                return;
            }
        }
        (*e).sport_be = 0;
        (*e).dport_be = 0;
        match (*e).proto {
            6 | 17 => {
                if load(skb, l4_off, &raw mut (*e).sport_be as *mut u8, 2) {
                    load(skb, l4_off + 2, &raw mut (*e).dport_be as *mut u8, 2);
                }
            }
            1 | 58 => {
                // Type and code, one byte each, as numbers.
                let t = &raw mut (*e).sport_be as *mut u8;
                let c = &raw mut (*e).dport_be as *mut u8;
                if load(skb, l4_off, t, 1) && load(skb, l4_off + 1, c, 1) {
                    (*e).sport_be = *t as u16;
                    (*e).dport_be = *c as u16;
                }
            }
            _ => {}
        }
    }
}

/// Count a packet that arrived on `ifindex` and was let through: in the
/// interface's `PIER_IF_PKTS` slot, or past the array in its `PIER_IF_STATS`
/// entry.
#[inline(never)]
pub fn pier_count_rx(ifindex: u32, len: u32) -> u32 {
    if ifindex < IF_PKTS_LEN {
        if let Some(s) = IF_PKTS.get_ptr_mut(ifindex) {
            unsafe { add(&mut (*s).rx, len) };
        }
    } else if let Some(s) = IF_STATS.get_ptr_mut(ifindex) {
        unsafe { add(&mut (*s).rx, len) };
    }
    0
}

/// Count a packet pier sends through `ifindex` (into a container, out of an uplink).
#[inline(never)]
pub fn pier_count_tx(ifindex: u32, len: u32) -> u32 {
    if ifindex < IF_PKTS_LEN {
        if let Some(s) = IF_PKTS.get_ptr_mut(ifindex) {
            unsafe { add(&mut (*s).tx, len) };
        }
    } else if let Some(s) = IF_STATS.get_ptr_mut(ifindex) {
        unsafe { add(&mut (*s).tx, len) };
    }
    0
}

/// Count a packet dropped on arrival at `ifindex`.
#[inline(never)]
pub fn pier_count_drop(ifindex: u32, reason: u32) -> u32 {
    if let Some(s) = IF_STATS.get_ptr_mut(ifindex) {
        let i = reason as usize;
        if i < IF_DROP_SLOTS {
            unsafe { (*s).drops[i] += 1 };
        }
    }
    0
}

#[inline(always)]
fn add(c: &mut Counter, len: u32) {
    c.packets += 1;
    c.bytes += len as u64;
}
