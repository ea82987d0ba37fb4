//! Connection tracking: lifetimes and TCP close detection shared by the
//! publishing conntrack (`PIER_CT`) and masquerade (`PIER_SNAT_*`).
use aya_ebpf::{
    Global,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
};
use pier_common::{
    config::{
        CT_ICMP_NS as CT_ICMP_DEFAULT, CT_TCP_CLOSING_NS as CT_TCP_CLOSING_DEFAULT,
        CT_TCP_ESTABLISHED_NS, CT_UDP_NS as CT_UDP_DEFAULT,
    },
    ct::{CT_F_FIN_ORIG, CT_F_FIN_REPLY, CT_F_RST},
};

use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Pkt, TCP_FIN, TCP_RST, TCP_SYN};

// Lifetimes, overridable at load time (names in `pier_common::config`).
#[unsafe(no_mangle)]
static CT_TCP_EST_NS: Global<u64> = Global::new(CT_TCP_ESTABLISHED_NS);
#[unsafe(no_mangle)]
static CT_TCP_CLOSING_NS: Global<u64> = Global::new(CT_TCP_CLOSING_DEFAULT);
#[unsafe(no_mangle)]
static CT_UDP_NS: Global<u64> = Global::new(CT_UDP_DEFAULT);
#[unsafe(no_mangle)]
static CT_ICMP_NS: Global<u64> = Global::new(CT_ICMP_DEFAULT);

// The clock (`pier_common::config::GLOBAL_CLOCK_TICK_NS`): set at load.
#[unsafe(no_mangle)]
static CLOCK_TICK_NS: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static CLOCK_JIFFIES0: Global<u64> = Global::new(0);

/// The clock lifetimes are stamped with, in ns: the kernel's jiffies times
/// its tick (`bpf_jiffies64`, inlined by the verifier: a load where a
/// helper call costs ~20 ns) when the agent gave the tick, else
/// `CLOCK_MONOTONIC_COARSE`. Either has a tick's resolution; the agent
/// reads the same one (`pier_clock`). (The globals are constants of the
/// load: the verifier keeps one branch.)
#[inline(always)]
pub fn now() -> u64 {
    let tick = CLOCK_TICK_NS.load();
    if tick != 0 {
        unsafe { bpf_jiffies64() }
            .wrapping_sub(CLOCK_JIFFIES0.load())
            .wrapping_mul(tick)
    } else {
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

/// Bring an entry's flags and expiry up to date with a packet, writing only
/// what changed: the flags (and the expiry with them) on a TCP state change,
/// else the expiry only once it lags a fresh one by more than [`slack`]. An
/// established flow's packets mostly read their entry and write nothing.
///
/// # Safety
/// `flags` and `expires` point into one live map value.
#[inline(always)]
pub unsafe fn refresh(flags: *mut u32, expires: *mut u64, proto: u8, tcp_flags: u8, reply: bool) {
    unsafe {
        let old = *flags;
        let new = next_flags_of(old, proto, tcp_flags, reply);
        let life = lifetime(proto, new);
        let exp = now() + life;
        if new != old {
            *flags = new;
            *expires = exp;
        } else if exp > *expires + slack(life) {
            *expires = exp;
        }
    }
}

/// How far an entry's expiry may lag behind its last packet: an eighth of
/// its lifetime, at most 1 s.
#[inline(always)]
pub fn slack(life: u64) -> u64 {
    let s = life >> 3;
    if s < 1_000_000_000 { s } else { 1_000_000_000 }
}

/// The flags after seeing `pkt` (`reply`: it travels backend → client).
#[inline(always)]
pub fn next_flags(flags: u32, pkt: &Pkt, reply: bool) -> u32 {
    next_flags_of(flags, pkt.proto, pkt.tcp_flags, reply)
}

/// [`next_flags`] by protocol and TCP flags (IPv6 too).
#[inline(always)]
pub fn next_flags_of(flags: u32, proto: u8, tcp_flags: u8, reply: bool) -> u32 {
    if proto != IPPROTO_TCP {
        return flags;
    }
    let f = tcp_flags;
    if f & TCP_SYN != 0 && f & TCP_RST == 0 {
        // A new connection on a reused tuple starts afresh, in both
        // directions' entries (its SYN resets the originator's, its SYN-ACK
        // the other: a masquerade pair's reverse half keeping a closed
        // connection's flags would have the gc retire the new one early).
        return 0;
    }
    let mut flags = flags;
    if f & TCP_RST != 0 {
        flags |= CT_F_RST;
    }
    if f & TCP_FIN != 0 {
        flags |= if reply { CT_F_FIN_REPLY } else { CT_F_FIN_ORIG };
    }
    flags
}

/// When an entry with `flags` for `pkt`'s protocol may be retired.
#[inline(always)]
pub fn expiry(now: u64, pkt: &Pkt, flags: u32) -> u64 {
    expiry_of(now, pkt.proto, flags)
}

/// [`expiry`] by protocol (IPv6 too; ICMPv6 lives as long as ICMP).
#[inline(always)]
pub fn expiry_of(now: u64, proto: u8, flags: u32) -> u64 {
    now + lifetime(proto, flags)
}

/// How long an entry with `flags` of protocol `proto` lives after its last packet.
#[inline(always)]
pub fn lifetime(proto: u8, flags: u32) -> u64 {
    match proto {
        IPPROTO_TCP if flags != 0 => CT_TCP_CLOSING_NS.load(),
        IPPROTO_TCP => CT_TCP_EST_NS.load(),
        IPPROTO_UDP => CT_UDP_NS.load(),
        _ => CT_ICMP_NS.load(),
    }
}
