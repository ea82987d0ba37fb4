//! One place maps a program's `Result` to a TC action and counts drops.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use aya_log_ebpf::debug;
use pier_common::drop::DropReason;

use crate::{events, maps::DROPS};

/// `Ok(action)` passes through (counted as received on the interface);
/// `Err(reason)` bumps the reason's per-CPU counters (global and the
/// interface's), writes a drop event while a monitor is attached, logs it
/// at debug level (aya-log: only when the agent enabled debug logging for
/// the kernel programs at load) and drops.
#[inline(always)]
pub fn verdict(ctx: &TcContext, r: Result<i32, DropReason>) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    verdict_at(ctx, ifindex, r)
}

/// [`verdict`] with the interface read by the caller (in a BPF-to-BPF call
/// LLVM may keep `ctx + 40` in a register, a modified ctx pointer the
/// verifier refuses: the program's entry reads it and passes it down).
#[inline(always)]
pub fn verdict_at(ctx: &TcContext, ifindex: u32, r: Result<i32, DropReason>) -> i32 {
    match r {
        Ok(action) => {
            events::pier_count_rx(ifindex, ctx.len());
            action
        }
        Err(reason) => {
            events::pier_count_drop(ifindex, reason as u32);
            events::drop(ctx, reason as u32);
            debug!(ctx, "drop: reason {} ({} bytes)", reason as u32, ctx.len());
            if let Some(c) = DROPS.get_ptr_mut(reason as u32) {
                // Per-CPU slot: no other writer races with us.
                unsafe {
                    (*c).packets += 1;
                    (*c).bytes += ctx.len() as u64;
                }
            }
            TC_ACT_SHOT
        }
    }
}
