//! `pier_connect4`: cgroup connect4 hook; a published address becomes its container's.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn pier_connect4(ctx: SockAddrContext) -> i32 {
    crate::sock::to_backend(&ctx);
    1
}
