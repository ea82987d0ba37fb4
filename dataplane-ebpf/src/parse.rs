//! Bounds-checked packet access: the one idiom every program uses.
use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IPPROTO_ICMP: u8 = 1;

pub const IPPROTO_UDP: u8 = 17;

/// A pointer to a `T` at `off` bytes into the packet, or `None` when the packet
/// is too short. Re-derive after any helper that may move packet data.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// The ethertype (host order) and IPv4 protocol of a packet, when it has them.
#[inline(always)]
pub fn l3_l4(ctx: &TcContext) -> (Option<u16>, Option<u8>) {
    let Some(proto) = ptr_at::<[u8; 2]>(ctx, 12) else {
        return (None, None);
    };
    let ethertype = u16::from_be_bytes(unsafe { *proto });
    if ethertype != ETH_P_IP {
        return (Some(ethertype), None);
    }
    // Offset of the protocol byte in the IPv4 header.
    let l4 = ptr_at::<u8>(ctx, ETH_HLEN + 9).map(|p| unsafe { *p });
    (Some(ethertype), l4)
}
