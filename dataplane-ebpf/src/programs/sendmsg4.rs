//! `pier_sendmsg4`: cgroup sendmsg4 hook; a published address becomes its container's.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(sendmsg4)]
pub fn pier_sendmsg4(ctx: SockAddrContext) -> i32 {
    crate::sock::to_backend(&ctx);
    1
}
