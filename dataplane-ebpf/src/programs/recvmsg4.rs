//! `pier_recvmsg4`: cgroup recvmsg4 hook; a translated peer shows as the address that was dialled.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(recvmsg4)]
pub fn pier_recvmsg4(ctx: SockAddrContext) -> i32 {
    crate::sock::to_dialled(&ctx);
    1
}
