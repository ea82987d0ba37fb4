//! `pier_prof`: what one primitive of the TC programs costs — a map lookup
//! of each kind they use, a clock or checksum helper — for the run-time
//! profile of issue 15 (`dataplane_prim_cost`). Never attached: run with
//! `BPF_PROG_TEST_RUN` on a frame whose byte 14 (after the Ethernet header)
//! names the primitive ([`pier_common::config::PROF_OPS`]) and whose bytes
//! 16.. hold the key; it runs the primitive `PROF_REPS` times and returns
//! how many found their entry.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{
        bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_redirect_neigh, bpf_redirect_peer,
    },
    macros::classifier,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use pier_common::{config::PROF_REPS, ct::FlowKey, nat::PortKey};

use crate::{
    maps::{
        CT, ENDPOINTS, IF_PKTS, PORT_DROPS, PORT_STATS, PORTS, SNAT_FWD, SNAT_REV, SUBNETS,
        VETH_EP4,
    },
    parse::{self, ptr_at},
};

#[classifier]
pub fn pier_prof(ctx: TcContext) -> i32 {
    let Some(op) = ptr_at::<u8>(&ctx, 14) else {
        return TC_ACT_OK;
    };
    let Some(k) = ptr_at::<[u8; 16]>(&ctx, 16) else {
        return TC_ACT_OK;
    };
    let op = unsafe { *op };
    let raw = unsafe { *k };
    let flow: FlowKey = unsafe { core::ptr::read_unaligned(raw.as_ptr() as *const FlowKey) };
    let port: PortKey = unsafe { core::ptr::read_unaligned(raw.as_ptr() as *const PortKey) };
    let addr = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let mut hits = 0;
    match op {
        1 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(PORTS.get_ptr(&port).is_some());
            }
        }
        2 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(CT.get_ptr(&flow).is_some());
            }
        }
        3 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(SNAT_FWD.get_ptr(&flow).is_some());
            }
        }
        // A per-CPU hash keyed by `PortKey` (what `PIER_PORT_STATS` was).
        4 => {
            for _ in 0..PROF_REPS {
                if let Some(c) = PORT_DROPS.get_ptr_mut(&port) {
                    unsafe { (*c).packets += 1 };
                    hits += 1;
                }
            }
        }
        5 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { ENDPOINTS.get(addr) }.is_some());
            }
        }
        6 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(VETH_EP4.get(addr & 0xfff).is_some());
            }
        }
        7 => {
            for _ in 0..PROF_REPS {
                if let Some(s) = IF_PKTS.get_ptr_mut(addr & 0xfff) {
                    unsafe { (*s).rx.packets += 1 };
                    hits += 1;
                }
            }
        }
        8 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { bpf_ktime_get_coarse_ns() } != 0);
            }
        }
        9 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { bpf_ktime_get_ns() } != 0);
            }
        }
        10 => {
            // TCP checksum at 14 + 20 + 16 of an option-less frame.
            for i in 0..PROF_REPS {
                hits += u32::from(ctx.l4_csum_replace(50, i as u64, (i + 1) as u64, 2).is_ok());
            }
        }
        11 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { bpf_get_prandom_u32() } != 1);
            }
        }
        12 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(SUBNETS.get(Key::new(32, addr)).is_some());
            }
        }
        13 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(SNAT_REV.get_ptr(&flow).is_some());
            }
        }
        14 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { bpf_redirect_peer(addr, 0) } == 7);
            }
        }
        15 => {
            for _ in 0..PROF_REPS {
                let r = unsafe { bpf_redirect_neigh(addr, core::ptr::null_mut(), 0, 0) };
                hits += u32::from(r == 7);
            }
        }
        16 => {
            for _ in 0..PROF_REPS {
                if let Some(c) = PORT_STATS.get_ptr_mut(addr & 0xffff) {
                    unsafe { (*c).packets += 1 };
                    hits += 1;
                }
            }
        }
        17 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(unsafe { bpf_jiffies64() } != 0);
            }
        }
        18 => {
            for _ in 0..PROF_REPS {
                hits += u32::from(crate::ct::now() != 0);
            }
        }
        // An IPv4 frame's byte 14 (version 4, 5 words): its parse.
        0x45 => {
            for _ in 0..PROF_REPS {
                // (Memory may have changed: each parse reads the frame anew.)
                core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
                hits += u32::from(matches!(parse::ipv4(&ctx), Ok(Some(_))));
            }
        }
        _ => {}
    }
    hits as i32
}
