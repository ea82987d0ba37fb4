//! `pier_sock_release`: cgroup sock_release hook; a closing socket's
//! translation is forgotten (else `PIER_SOCK_NAT` fills and every later
//! connect pays for an LRU eviction).
use aya_ebpf::{macros::cgroup_sock, programs::SockContext};

#[cgroup_sock(sock_release)]
pub fn pier_sock_release(ctx: SockContext) -> i32 {
    crate::sock::forget(&ctx);
    1
}
