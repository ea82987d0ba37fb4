//! Hand-built IPv4 frames for `BPF_PROG_TEST_RUN` cases, and checks of every
//! checksum in a frame (also of the packet an ICMP error quotes).

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// One's-complement checksum of `data` on top of the partial sum `init`.
pub fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The pseudo-header sum of a TCP/UDP segment of `len` bytes.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum()
}

/// A UDP datagram (header + payload) with a valid checksum.
pub fn udp_seg(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = csum(&u, pseudo(&src, &dst, UDP, u.len()));
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A TCP segment (20-byte header, `flags`, payload) with a valid checksum.
pub fn tcp_seg(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&7u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = csum(&t, pseudo(&src, &dst, TCP, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An ICMP echo request with identifier `id`.
pub fn echo(id: u16, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![8, 0, 0, 0];
    e.extend_from_slice(&id.to_be_bytes());
    e.extend_from_slice(&1u16.to_be_bytes());
    e.extend_from_slice(payload);
    let c = csum(&e, 0);
    e[2..4].copy_from_slice(&c.to_be_bytes());
    e
}

/// An ICMP error `typ`/`code` (`rest`: the 4 bytes after the checksum, e.g.
/// the next-hop MTU of "fragmentation needed") quoting `quote`.
pub fn icmp_error(typ: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut e = vec![typ, code, 0, 0];
    e.extend_from_slice(&rest);
    e.extend_from_slice(quote);
    let c = csum(&e, 0);
    e[2..4].copy_from_slice(&c.to_be_bytes());
    e
}

/// An IPv4 header and `payload`: `frag` is the flags+offset word.
#[derive(Clone)]
pub struct Ip {
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub id: u16,
    pub frag: u16,
}

impl Ip {
    pub fn new(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Self {
        Ip {
            proto,
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            frag: 0,
        }
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        let c = csum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(payload);
        ip
    }

    /// The packet in an Ethernet frame.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        eth(&self.packet(payload))
    }
}

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// Fields of the IPv4 packet at `off` of `f`.
pub struct View<'a> {
    pub b: &'a [u8],
}

impl View<'_> {
    pub fn ihl(&self) -> usize {
        ((self.b[0] & 0x0f) as usize) * 4
    }
    pub fn src(&self) -> [u8; 4] {
        self.b[12..16].try_into().unwrap()
    }
    pub fn dst(&self) -> [u8; 4] {
        self.b[16..20].try_into().unwrap()
    }
    pub fn ttl(&self) -> u8 {
        self.b[8]
    }
    pub fn proto(&self) -> u8 {
        self.b[9]
    }
    pub fn l4(&self) -> &[u8] {
        &self.b[self.ihl()..]
    }
    pub fn ports(&self) -> (u16, u16) {
        let l = self.l4();
        (
            u16::from_be_bytes([l[0], l[1]]),
            u16::from_be_bytes([l[2], l[3]]),
        )
    }
}

/// The IPv4 packet of a frame.
pub fn ip_of(f: &[u8]) -> View<'_> {
    View { b: &f[14..] }
}

/// The packet an ICMP error in frame `f` quotes.
pub fn quoted(f: &[u8]) -> View<'_> {
    let outer = ip_of(f);
    View {
        b: &f[14 + outer.ihl() + 8..],
    }
}

/// Assert the IPv4 header checksum of `ip`, and (when `l4_whole`) the
/// transport checksum of its whole payload.
pub fn assert_ip_csums(what: &str, ip: &View, l4_whole: bool) {
    assert_eq!(
        csum(&ip.b[..ip.ihl()], 0),
        0,
        "{what}: IPv4 header checksum"
    );
    let l4 = ip.l4();
    if !l4_whole {
        return;
    }
    match ip.proto() {
        TCP => assert_eq!(
            csum(l4, pseudo(&ip.src(), &ip.dst(), TCP, l4.len())),
            0,
            "{what}: TCP checksum"
        ),
        UDP if l4[6..8] != [0, 0] => assert_eq!(
            csum(l4, pseudo(&ip.src(), &ip.dst(), UDP, l4.len())),
            0,
            "{what}: UDP checksum"
        ),
        ICMP => assert_eq!(csum(l4, 0), 0, "{what}: ICMP checksum"),
        _ => {}
    }
}

pub const ICMPV6: u8 = 58;

/// The IPv6 pseudo-header sum of an upper-layer packet of `len` bytes.
pub fn pseudo6(src: &[u8; 16], dst: &[u8; 16], next: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum()
}

/// An IPv6 upper-layer packet (`next` = TCP, UDP, ICMPv6) with its checksum
/// filled in: `body` is the header with a zero checksum field, plus payload.
pub fn l4_6(src: [u8; 16], dst: [u8; 16], next: u8, mut body: Vec<u8>) -> Vec<u8> {
    let at = match next {
        TCP => 16,
        UDP => 6,
        _ => 2,
    };
    let c = csum(&body, pseudo6(&src, &dst, next, body.len()));
    body[at..at + 2].copy_from_slice(&c.to_be_bytes());
    body
}

pub fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    l4_6(src, dst, UDP, u)
}

/// An ICMPv6 message `typ`/`code` with `rest` after the checksum.
pub fn icmp6(src: [u8; 16], dst: [u8; 16], typ: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(rest);
    l4_6(src, dst, ICMPV6, m)
}

/// An Ethernet + IPv6 frame: `ext` is a chain of extension headers (each
/// naming the next itself) starting with next-header `first`.
pub fn frame6(first: u8, src: [u8; 16], dst: [u8; 16], ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[first, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(ext);
    f.extend_from_slice(l4);
    f
}

/// An 8-byte extension header (destination options: one PadN) naming `next`.
pub fn ext8(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header naming `next`: `offset` in 8-byte units, `more`.
pub fn frag6(next: u8, offset: u16, more: bool) -> Vec<u8> {
    let fo = (offset << 3) | more as u16;
    let mut h = vec![next, 0];
    h.extend_from_slice(&fo.to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h
}

/// A TCP segment over IPv6 with a valid checksum.
pub fn tcp6(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&7u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    l4_6(src, dst, TCP, t)
}

/// An ICMPv6 echo request (128) or reply (129) with identifier `id`.
pub fn echo6(src: [u8; 16], dst: [u8; 16], typ: u8, id: u16) -> Vec<u8> {
    let mut rest = id.to_be_bytes().to_vec();
    rest.extend_from_slice(&1u16.to_be_bytes());
    rest.extend_from_slice(b"pier-ping6");
    icmp6(src, dst, typ, 0, &rest)
}

/// The IPv6 packet (no extension headers) of an Ethernet frame.
pub struct View6<'a>(pub &'a [u8]);

impl View6<'_> {
    pub fn src(&self) -> [u8; 16] {
        self.0[8..24].try_into().unwrap()
    }
    pub fn dst(&self) -> [u8; 16] {
        self.0[24..40].try_into().unwrap()
    }
    pub fn hop(&self) -> u8 {
        self.0[7]
    }
    pub fn next(&self) -> u8 {
        self.0[6]
    }
    pub fn l4(&self) -> &[u8] {
        &self.0[40..]
    }
    /// Source and destination port (ICMPv6: the echo identifier twice).
    pub fn ports(&self) -> (u16, u16) {
        let l = self.l4();
        if self.next() == ICMPV6 {
            let id = u16::from_be_bytes([l[4], l[5]]);
            return (id, id);
        }
        (
            u16::from_be_bytes([l[0], l[1]]),
            u16::from_be_bytes([l[2], l[3]]),
        )
    }
    /// The transport checksum is right for these addresses.
    pub fn l4_ok(&self) -> bool {
        let (s, d) = (self.src(), self.dst());
        csum(self.l4(), pseudo6(&s, &d, self.next(), self.l4().len())) == 0
    }
}

pub fn ip6_of(f: &[u8]) -> View6<'_> {
    View6(&f[14..])
}

/// The packet an ICMPv6 error in frame `f` quotes.
pub fn quoted6(f: &[u8]) -> View6<'_> {
    View6(&f[14 + 40 + 8..])
}
