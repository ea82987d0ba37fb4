//! `pier_getpeername4`: cgroup getpeername4 hook; a translated peer shows as the address that was dialled.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(getpeername4)]
pub fn pier_getpeername4(ctx: SockAddrContext) -> i32 {
    crate::sock::to_dialled(&ctx);
    1
}
