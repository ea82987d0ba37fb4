//! `pier_recvmsg6`: cgroup recvmsg6 hook; a translated IPv6 peer shows as the address that was dialled.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(recvmsg6)]
pub fn pier_recvmsg6(ctx: SockAddrContext) -> i32 {
    crate::sock::to_dialled6(&ctx);
    1
}
