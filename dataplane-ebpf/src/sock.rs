//! Socket-hook logic: translate host-local connections to published ports
//! (connect4/sendmsg4, connect6/sendmsg6) and show the dialled address back
//! (recvmsg4/getpeername4, recvmsg6/getpeername6), and forget it when the
//! socket is released. Acts only on sockets of the agent's host namespace.
//!
//! IPv6 sockets: `PIER_PORTS6` and `PIER_SOCK_NAT6`. A v4-mapped address
//! (`::ffff:a.b.c.d`) on an IPv6 socket is IPv4 (the kernel sends IPv4
//! for it): the IPv4 ports and `PIER_SOCK_NAT`, the address kept mapped.
//! Its unconnected UDP datagrams never reach sendmsg6 (the kernel hands
//! them to the IPv4 path, whose sendmsg4 translates them), their replies
//! do reach recvmsg6, mapped.
use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::{SockAddrContext, SockContext},
};
use pier_common::{
    endpoint::Addr6,
    nat::{SockKey, SockVal},
    nat6::{SockKey6, SockVal6},
};

use crate::{
    lookup::published,
    maps::{SOCK_NAT, SOCK_NAT6},
    nat6::published6,
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
const AF_INET6: u32 = 10;

/// `::ffff:a.b.c.d` (packet order): an IPv4 peer of an IPv6 socket.
#[inline(always)]
fn v4_mapped(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0xffffu32.to_be()
}

/// sock_release: drop the entry `to_backend` / `to_backend6` made for this
/// socket's connection (TCP, connected UDP: its peer is the backend it was
/// sent to). An unconnected UDP socket's entries, one per published
/// destination it sent to, are left to the maps' LRU.
#[inline(always)]
pub fn forget(ctx: &SockContext) {
    let sk = ctx.sock;
    let (family, proto, dport) = unsafe { ((*sk).family, (*sk).protocol, (*sk).dst_port) };
    if proto != IPPROTO_TCP as u32 && proto != IPPROTO_UDP as u32 {
        return;
    }
    // Each family on its own path: a value merged across them (an
    // `Option<Addr6>`) leaves registers the verifier sees as unset.
    match family {
        AF_INET => forget4(sk, unsafe { (*sk).dst_ip4 }, dport),
        AF_INET6 => {
            let d = unsafe {
                [
                    (*sk).dst_ip6[0],
                    (*sk).dst_ip6[1],
                    (*sk).dst_ip6[2],
                    (*sk).dst_ip6[3],
                ]
            };
            if v4_mapped(&d) {
                forget4(sk, d[3], dport);
            } else if d[0] | d[1] | d[2] | d[3] != 0 {
                forget6(sk, d, dport);
            }
        }
        _ => {}
    }
}

/// `forget` for an IPv4 peer (`0`: none, an unconnected socket).
#[inline(always)]
fn forget4(sk: *mut aya_ebpf::bindings::bpf_sock, daddr: u32, dport: u16) {
    if daddr == 0 || !in_host_netns(sk as *mut c_void) {
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

/// `forget` for an IPv6 peer.
#[inline(always)]
fn forget6(sk: *mut aya_ebpf::bindings::bpf_sock, daddr: Addr6, dport: u16) {
    if !in_host_netns(sk as *mut c_void) {
        return;
    }
    let key = SockKey6 {
        cookie: unsafe { bpf_get_socket_cookie(sk as *mut c_void) },
        addr: daddr,
        port_be: dport,
        _pad: [0; 6],
    };
    let _ = SOCK_NAT6.remove(&key);
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
    if let Some((ip, port)) = translate4(sa as *mut c_void, addr, port as u16, proto) {
        unsafe {
            (*sa).user_ip4 = ip;
            (*sa).user_port = port as u32;
        }
    }
}

/// The backend IPv4 (address, port) for published `(addr, port)`, recorded
/// for the socket of `ctx` so that the dialled address can be shown back.
/// `None`: not published (or the record failed): leave the call alone.
#[inline(always)]
fn translate4(ctx: *mut c_void, addr: u32, port: u16, proto: u8) -> Option<(u32, u16)> {
    let (_, v) = published(addr, port, proto)?;
    let key = SockKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx) },
        addr_be: v.backend_be,
        port_be: v.backend_port_be,
        _pad: 0,
    };
    let val = SockVal {
        addr_be: addr,
        port_be: port,
        _pad: 0,
    };
    SOCK_NAT.insert(key, val, 0).ok()?;
    Some((v.backend_be, v.backend_port_be))
}

#[inline(always)]
fn user_ip6(sa: *const aya_ebpf::bindings::bpf_sock_addr) -> Addr6 {
    // One 4-byte load per word: what the context allows on every kernel.
    unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    }
}

#[inline(always)]
fn set_user_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, a: &Addr6) {
    unsafe {
        (*sa).user_ip6[0] = a[0];
        (*sa).user_ip6[1] = a[1];
        (*sa).user_ip6[2] = a[2];
        (*sa).user_ip6[3] = a[3];
    }
}

/// connect6 / sendmsg6: a published IPv6 (address, port) becomes its
/// container's; a v4-mapped one is looked up as IPv4 (connect6 only: see
/// the module's notes) and stays mapped.
#[inline(always)]
pub fn to_backend6(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let (proto, port) = unsafe { ((*sa).protocol as u8, (*sa).user_port as u16) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return;
    }
    let addr = user_ip6(sa);
    if v4_mapped(&addr) {
        if let Some((ip, port)) = translate4(sa as *mut c_void, addr[3], port, proto) {
            unsafe {
                (*sa).user_ip6[3] = ip;
                (*sa).user_port = port as u32;
            }
        }
        return;
    }
    let Some((_, v)) = published6(&addr, port, proto) else {
        return;
    };
    let key = SockKey6 {
        cookie: unsafe { bpf_get_socket_cookie(sa as *mut c_void) },
        addr: v.backend,
        port_be: v.backend_port_be,
        _pad: [0; 6],
    };
    let val = SockVal6 {
        addr,
        port_be: port,
        _pad: 0,
    };
    if SOCK_NAT6.insert(&key, &val, 0).is_err() {
        return;
    }
    set_user_ip6(sa, &v.backend);
    unsafe {
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

/// recvmsg6 / getpeername6: a translated IPv6 peer shows as what was
/// dialled; a v4-mapped one as its IPv4 twin does.
#[inline(always)]
pub fn to_dialled6(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut c_void) };
    let port = unsafe { (*sa).user_port as u16 };
    let addr = user_ip6(sa);
    if v4_mapped(&addr) {
        let key = SockKey {
            cookie,
            addr_be: addr[3],
            port_be: port,
            _pad: 0,
        };
        if let Some(v) = unsafe { SOCK_NAT.get(key) } {
            unsafe {
                (*sa).user_ip6[3] = v.addr_be;
                (*sa).user_port = v.port_be as u32;
            }
        }
        return;
    }
    let key = SockKey6 {
        cookie,
        addr,
        port_be: port,
        _pad: [0; 6],
    };
    if let Some(v) = unsafe { SOCK_NAT6.get(&key) } {
        let (a, p) = (v.addr, v.port_be);
        set_user_ip6(sa, &a);
        unsafe {
            (*sa).user_port = p as u32;
        }
    }
}
