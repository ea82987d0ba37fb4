//! Socket-hook logic: translate host-local connections to published ports
//! (connect4/sendmsg4) and show the dialled address back (recvmsg4,
//! getpeername4), and forget it when the socket is released. Acts only on
//! sockets of the agent's host namespace.
use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::{SockAddrContext, SockContext},
};
use pier_common::nat::{SockKey, SockVal};

use crate::{
    lookup::published,
    maps::SOCK_NAT,
    parse::{IPPROTO_TCP, IPPROTO_UDP},
};

/// The agent's host netns cookie, set at load time.
#[unsafe(no_mangle)]
static HOST_NETNS_COOKIE: Global<u64> = Global::new(0);

#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    in_host_netns(ctx.sock_addr as *mut c_void)
}

/// `ctx`: the program's context (`bpf_sock_addr` or `bpf_sock`).
#[inline(always)]
fn in_host_netns(ctx: *mut c_void) -> bool {
    let cookie = HOST_NETNS_COOKIE.load();
    cookie != 0 && unsafe { bpf_get_netns_cookie(ctx) } == cookie
}

const AF_INET: u32 = 2;

/// sock_release: drop the entry `to_backend` made for this socket's
/// connection (TCP, connected UDP: its peer is the backend it was sent to).
/// An unconnected UDP socket's entries, one per published destination it
/// sent to, are left to the map's LRU.
#[inline(always)]
pub fn forget(ctx: &SockContext) {
    let sk = ctx.sock;
    let (family, proto, daddr, dport) =
        unsafe { ((*sk).family, (*sk).protocol, (*sk).dst_ip4, (*sk).dst_port) };
    if family != AF_INET || daddr == 0 {
        return;
    }
    if proto != IPPROTO_TCP as u32 && proto != IPPROTO_UDP as u32 {
        return;
    }
    if !in_host_netns(sk as *mut c_void) {
        return;
    }
    let key = SockKey {
        cookie: unsafe { bpf_get_socket_cookie(sk as *mut c_void) },
        addr_be: daddr,
        port_be: dport,
        _pad: 0,
    };
    let _ = SOCK_NAT.remove(&key);
}

/// connect4 / sendmsg4: a published (address, port) becomes its container's.
#[inline(always)]
pub fn to_backend(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let (proto, addr, port) = unsafe { ((*sa).protocol as u8, (*sa).user_ip4, (*sa).user_port) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return;
    }
    let port = port as u16;
    let Some((_, v)) = published(addr, port, proto) else {
        return;
    };
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let key = SockKey {
        cookie,
        addr_be: v.backend_be,
        port_be: v.backend_port_be,
        _pad: 0,
    };
    let val = SockVal {
        addr_be: addr,
        port_be: port,
        _pad: 0,
    };
    if SOCK_NAT.insert(key, val, 0).is_err() {
        return;
    }
    unsafe {
        (*sa).user_ip4 = v.backend_be;
        (*sa).user_port = v.backend_port_be as u32;
    }
}

/// recvmsg4 / getpeername4: a translated peer shows as what was dialled.
#[inline(always)]
pub fn to_dialled(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let key = unsafe {
        SockKey {
            cookie,
            addr_be: (*sa).user_ip4,
            port_be: (*sa).user_port as u16,
            _pad: 0,
        }
    };
    if let Some(v) = unsafe { SOCK_NAT.get(key) } {
        unsafe {
            (*sa).user_ip4 = v.addr_be;
            (*sa).user_port = v.port_be as u32;
        }
    }
}
