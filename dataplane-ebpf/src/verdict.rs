//! One place maps a program's `Result` to a TC action and counts drops.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use aya_log_ebpf::debug;
use pier_common::drop::DropReason;

use crate::maps::DROPS;

/// `Ok(action)` passes through; `Err(reason)` bumps the reason's per-CPU
/// counter, logs it at debug level (aya-log: only when the agent enabled
/// debug logging for the kernel programs at load) and drops.
#[inline(always)]
pub fn verdict(ctx: &TcContext, r: Result<i32, DropReason>) -> i32 {
    match r {
        Ok(action) => action,
        Err(reason) => {
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
