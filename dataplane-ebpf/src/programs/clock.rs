//! `pier_clock`: the dataplane's clock (`ct::now`) for the agent, whose
//! conntrack gc compares expiries with it. Never attached: run with
//! `BPF_PROG_TEST_RUN` on a frame of at least 8 bytes; its first 8 become
//! `now()` (native order).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

use crate::{ct, nat::ptr_mut};

#[classifier]
pub fn pier_clock(ctx: TcContext) -> i32 {
    if let Ok(p) = ptr_mut::<[u8; 8]>(&ctx, 0) {
        unsafe { core::ptr::write_unaligned(p, ct::now().to_ne_bytes()) };
    }
    TC_ACT_OK
}
