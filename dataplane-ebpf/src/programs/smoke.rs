//! `pier_smoke`: a TC program that counts what passes and lets it pass. It proves
//! the toolchain end to end (build, embed, load, attach, read a per-CPU map).
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use pier_common::metrics::CounterIdx;

use crate::{
    maps::SMOKE_COUNTERS,
    parse::{IPPROTO_ICMP, IPPROTO_UDP, l3_l4},
};

#[classifier]
pub fn pier_smoke(ctx: TcContext) -> i32 {
    let len = ctx.len() as u64;
    bump(CounterIdx::All, len);
    let (ethertype, proto) = l3_l4(&ctx);
    if ethertype == Some(crate::parse::ETH_P_IP) {
        bump(CounterIdx::Ipv4, len);
        match proto {
            Some(IPPROTO_UDP) => bump(CounterIdx::Udp, len),
            Some(IPPROTO_ICMP) => bump(CounterIdx::Icmp, len),
            _ => {}
        }
    }
    TC_ACT_PIPE
}

#[inline(always)]
fn bump(idx: CounterIdx, len: u64) {
    if let Some(c) = SMOKE_COUNTERS.get_ptr_mut(idx as u32) {
        // Per-CPU slot: no other writer races with us.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
