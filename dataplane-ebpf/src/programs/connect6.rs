//! `pier_connect6`: cgroup connect6 hook; a published IPv6 address becomes its container's.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect6)]
pub fn pier_connect6(ctx: SockAddrContext) -> i32 {
    crate::sock::to_backend6(&ctx);
    1
}
