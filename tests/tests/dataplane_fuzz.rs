//! Dataplane fuzz: `FUZZ_PACKETS` (default 100 000) random and mutated
//! frames through each TC program with `BPF_PROG_TEST_RUN`, against a fixed
//! map set (two containers on a masquerading network, one on an internal one,
//! published TCP/UDP ports). Seeds are valid flows (published connections in
//! both directions, masqueraded flows and their replies, hairpin, ICMP,
//! ARP, fragments); mutations flip bits, set fields to interesting values,
//! swap addresses and ports, truncate and extend. Every output must be:
//! - `TC_ACT_OK` with the frame unchanged,
//! - `TC_ACT_SHOT` with exactly one drop counted under some reason,
//! - a redirect whose rewrite is one the maps allow: identity (routed),
//!   a published port's DNAT (`PIER_PORTS`), masquerade (`PIER_SNAT_FWD`),
//!   its reverse (`PIER_SNAT_REV`), a published reply's reverse DNAT
//!   (`PIER_CT`) or its re-tracking (`PIER_BACKENDS`); TTL one less, length
//!   kept, checksums as valid as they came in, a frame into a container
//!   addressed to its MAC from the bridge's; ICMP errors (translated or
//!   made for an expiring TTL) with valid checksums, to a known address.
//!
//! And from a container's veth, nothing but SHOT for IPv4 from an address
//! not its own or ARP speaking for another. Seed: `FUZZ_SEED` (printed).
mod dataplane_util;

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Instant};

use aya::maps::{HashMap as AyaHash, Map, MapData};
use dataplane_util::*;
use pier_agent::dataplane::{Dataplane, EbpfDataplane, programs};
use pier_common::{
    ct::{CtVal, FlowKey},
    endpoint::EndpointVal4,
    maps as names,
    nat::{NatVal, PortKey, PortVal},
};
use pier_tests::{TestHost, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const OUTSIDE: [u8; 4] = [198, 18, 0, 2];
const HOST: [u8; 4] = [198, 18, 0, 1];
const C1: [u8; 4] = [10, 109, 0, 2];
const C2: [u8; 4] = [10, 109, 0, 3];
const GW1: [u8; 4] = [10, 109, 0, 1];
const C3: [u8; 4] = [10, 110, 0, 2];
const GW2: [u8; 4] = [10, 110, 0, 1];

/// Addresses a mutation picks from.
const ADDRS: [[u8; 4]; 12] = [
    OUTSIDE,
    HOST,
    C1,
    C2,
    GW1,
    C3,
    GW2,
    [10, 109, 0, 99],
    [127, 0, 0, 1],
    [224, 0, 0, 251],
    [255, 255, 255, 255],
    [0, 0, 0, 0],
];
const PORTS_: [u16; 10] = [8081, 8080, 8083, 9090, 5555, 53, 61000, 65535, 0, 1];

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())].clone()
    }
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for c in [src, dst].concat().chunks(2) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    s + proto as u32 + len as u32
}

/// Fix the IPv4 header checksum and the transport checksum of a frame built
/// by hand (seeds and structural mutations stay valid packets).
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [8, 0] {
        return;
    }
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&f[14..14 + ihl], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let frag = u16::from_be_bytes([f[20], f[21]]);
    if frag & 0x3fff != 0 {
        return;
    }
    let l4 = 14 + ihl;
    let (src, dst) = ([f[26], f[27], f[28], f[29]], [f[30], f[31], f[32], f[33]]);
    let len = f.len() - l4;
    match f[23] {
        6 if len >= 20 => {
            f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
            let c = csum(&f[l4..], pseudo(&src, &dst, 6, len));
            f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        }
        17 if len >= 8 => {
            f[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
            let c = csum(&f[l4..], pseudo(&src, &dst, 17, len));
            f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        1 if len >= 8 => {
            f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
            let c = csum(&f[l4..], 0);
            f[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

/// Ethernet + IPv4 + (TCP|UDP|ICMP) with a payload, checksums right.
fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let payload = b"pier-fuzz-payload";
    let mut l4 = Vec::new();
    match proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        // ICMP echo: `flags` is the type (8 request, 0 reply), id = sport|dport.
        1 => {
            l4.extend_from_slice(&[flags, 0, 0, 0]);
            l4.extend_from_slice(&(sport | dport).to_be_bytes());
            l4.extend_from_slice(&[0, 1]);
        }
        _ => {}
    }
    l4.extend_from_slice(payload);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    fix_checksums(&mut f);
    f
}

/// An ICMP error (`ty`, `code`) from `src` to `dst` quoting `quoted`'s IPv4
/// header and 8 bytes.
fn icmp_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let q = &quoted[14..(14 + 28).min(quoted.len())];
    let mut l4 = vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc];
    l4.extend_from_slice(q);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x43, 0x21, 0, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    fix_checksums(&mut f);
    f
}

fn arp(eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], oper: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, oper]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&GW1);
    f
}

/// What the test reads of an IPv4 frame.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ip {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    ttl: u8,
    later_frag: bool,
    first_frag: bool,
    /// ICMP type, for ICMP.
    icmp_type: Option<u8>,
    ip_csum_ok: bool,
    /// The transport checksum verifies (whole datagrams only).
    l4_csum_ok: bool,
}

impl Ip {
    fn flow(&self) -> FlowKey {
        FlowKey {
            saddr_be: self.src,
            daddr_be: self.dst,
            sport_be: self.sport,
            dport_be: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

fn be(a: [u8; 4]) -> u32 {
    u32::from_ne_bytes(a)
}

fn parse(f: &[u8]) -> Option<Ip> {
    if f.len() < 34 || f[12..14] != [8, 0] || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return None;
    }
    let frag = u16::from_be_bytes([f[20], f[21]]);
    let mut ip = Ip {
        src: u32::from_ne_bytes(f[26..30].try_into().unwrap()),
        dst: u32::from_ne_bytes(f[30..34].try_into().unwrap()),
        sport: 0,
        dport: 0,
        proto: f[23],
        ttl: f[22],
        later_frag: frag & 0x1fff != 0,
        first_frag: frag & 0x1fff == 0 && frag & 0x2000 != 0,
        icmp_type: None,
        ip_csum_ok: csum(&f[14..14 + ihl], 0) == 0,
        l4_csum_ok: false,
    };
    if ip.later_frag {
        return Some(ip);
    }
    let l4 = &f[14 + ihl..];
    let whole = !ip.first_frag;
    let (src, dst) = (&f[26..30], &f[30..34]);
    match ip.proto {
        6 if l4.len() >= 20 => {
            ip.sport = u16::from_ne_bytes([l4[0], l4[1]]);
            ip.dport = u16::from_ne_bytes([l4[2], l4[3]]);
            ip.l4_csum_ok = whole && csum(l4, pseudo(src, dst, 6, l4.len())) == 0;
        }
        17 if l4.len() >= 8 => {
            ip.sport = u16::from_ne_bytes([l4[0], l4[1]]);
            ip.dport = u16::from_ne_bytes([l4[2], l4[3]]);
            ip.l4_csum_ok =
                whole && (l4[6..8] == [0, 0] || csum(l4, pseudo(src, dst, 17, l4.len())) == 0);
        }
        1 if l4.len() >= 8 => {
            let id = u16::from_ne_bytes([l4[4], l4[5]]);
            match l4[0] {
                8 => ip.sport = id,
                0 => ip.dport = id,
                _ => {}
            }
            ip.icmp_type = Some(l4[0]);
            ip.l4_csum_ok = whole && csum(l4, 0) == 0;
        }
        _ => {}
    }
    Some(ip)
}

/// The maps as the test reads them (pinned under the bpffs directory).
struct Maps {
    ports: AyaHash<MapData, PortKey, PortVal>,
    backends: AyaHash<MapData, PortKey, PortKey>,
    endpoints: AyaHash<MapData, u32, EndpointVal4>,
    ct: AyaHash<MapData, FlowKey, CtVal>,
    fwd: AyaHash<MapData, FlowKey, NatVal>,
    rev: AyaHash<MapData, FlowKey, NatVal>,
}

impl Maps {
    fn open(dir: &Path) -> Self {
        let pin = |n: &str| MapData::from_pin(dir.join(n)).expect(n);
        Maps {
            ports: AyaHash::try_from(Map::HashMap(pin(names::PORTS))).unwrap(),
            backends: AyaHash::try_from(Map::HashMap(pin(names::BACKENDS))).unwrap(),
            endpoints: AyaHash::try_from(Map::HashMap(pin(names::ENDPOINTS))).unwrap(),
            ct: AyaHash::try_from(Map::LruHashMap(pin(names::CT))).unwrap(),
            fwd: AyaHash::try_from(Map::LruHashMap(pin(names::SNAT_FWD))).unwrap(),
            rev: AyaHash::try_from(Map::LruHashMap(pin(names::SNAT_REV))).unwrap(),
        }
    }

    fn port(&self, addr: u32, port: u16, proto: u8) -> Option<PortVal> {
        let k = |addr_be| PortKey {
            addr_be,
            port_be: port,
            proto,
            _pad: 0,
        };
        self.ports
            .get(&k(addr), 0)
            .or_else(|_| self.ports.get(&k(0), 0))
            .ok()
    }
}

struct Ctx<'a> {
    maps: &'a Maps,
    /// ifindex → the endpoint address on it (veth_in).
    veth_addr: BTreeMap<u32, u32>,
    known: Vec<u32>,
}

/// Why a verdict is wrong, or `None` when it is one the maps allow.
fn check(
    c: &Ctx,
    prog: &str,
    ifindex: u32,
    input: &[u8],
    verdict: u32,
    out: &[u8],
    dropped: u64,
) -> Option<String> {
    let veth = prog == programs::VETH_IN;
    if verdict == TC_ACT_SHOT {
        return (dropped != 1).then(|| format!("SHOT with {dropped} drops counted"));
    }
    if dropped != 0 {
        return Some(format!("verdict {verdict} but {dropped} drops counted"));
    }
    // From a container: only its own address (IPv4) and sender (ARP).
    if veth && input.len() >= 14 {
        let own = c.veth_addr.get(&ifindex).copied();
        if let Some(ip) = parse(input) {
            if Some(ip.src) != own {
                return Some(format!("IPv4 from a foreign source passed ({verdict})"));
            }
            let ep = own.and_then(|a| c.maps.endpoints.get(&a, 0).ok().map(|v| v.ep));
            if ep.is_none_or(|ep| input[6..12] != ep.mac) {
                return Some(format!("IPv4 from a foreign MAC passed ({verdict})"));
            }
        } else if input[12..14] == [8, 6] && input.len() >= 42 {
            let spa = u32::from_ne_bytes(input[28..32].try_into().unwrap());
            let ep = own.and_then(|a| c.maps.endpoints.get(&a, 0).ok().map(|v| v.ep));
            let ok = ep.is_some_and(|ep| {
                input[22..28] == ep.mac && input[6..12] == ep.mac && (spa == 0 || Some(spa) == own)
            });
            if !ok {
                return Some("foreign ARP passed".into());
            }
        }
    }
    // From outside, a container subnet's source goes nowhere but the bin.
    if !veth
        && let Some(ip) = parse(input)
        && [C1, C3].iter().any(|a| a[..3] == ip.src.to_ne_bytes()[..3])
    {
        return Some(format!("from outside with a container's source: {verdict}"));
    }
    match verdict {
        TC_ACT_OK => (out != input).then(|| "TC_ACT_OK with a changed frame".into()),
        TC_ACT_REDIRECT => check_redirect(c, input, out),
        v => Some(format!("verdict {v}")),
    }
}

fn check_redirect(c: &Ctx, input: &[u8], out: &[u8]) -> Option<String> {
    let Some(o) = parse(out) else {
        return Some("redirected something that is not IPv4".into());
    };
    let Some(i) = parse(input) else {
        return Some("redirected a frame that was not IPv4".into());
    };
    // Into a container (`bpf_redirect_peer`): addressed to it from the
    // bridge. Out of the uplink (`bpf_redirect_neigh`, which fills the MACs
    // in) the MACs stay; an answer made here swaps them.
    let macs_kept = out[0..12] == input[0..12];
    let macs_swapped = out[0..6] == input[6..12] && out[6..12] == input[0..6];
    if let Ok(ep) = c.maps.endpoints.get(&o.dst, 0).map(|v| v.ep)
        && !macs_kept
        && !macs_swapped
        && (out[0..6] != ep.mac || out[6..12] != ep.bridge_mac)
    {
        return Some("into a container with the wrong MACs".into());
    }
    // An ICMP error: translated (or made for an expiring TTL). Checksums
    // must hold and the addressee be one the test knows.
    if o.proto == 1 && matches!(o.icmp_type, Some(3 | 11 | 12)) {
        // (Made anew for an expiring TTL: from the host, to the sender.)
        let made = out.len() != input.len();
        if !o.ip_csum_ok && (i.ip_csum_ok || made) {
            return Some("ICMP error with a bad IPv4 checksum".into());
        }
        if !o.l4_csum_ok && (i.l4_csum_ok || made) {
            return Some("ICMP error with a bad ICMP checksum".into());
        }
        if !c.known.contains(&o.dst) && o.dst != i.src {
            return Some("ICMP error to an unknown address".into());
        }
        return None;
    }
    if out.len() != input.len() {
        return Some(format!("length {} -> {}", input.len(), out.len()));
    }
    if o.ttl.wrapping_add(1) != i.ttl {
        return Some(format!("TTL {} -> {}", i.ttl, o.ttl));
    }
    if o.ip_csum_ok != i.ip_csum_ok {
        return Some("IPv4 checksum broken".into());
    }
    if i.l4_csum_ok && !o.l4_csum_ok {
        return Some("transport checksum broken".into());
    }
    if o.proto != i.proto {
        return Some("protocol changed".into());
    }
    let m = c.maps;
    let same = (o.src, o.dst, o.sport, o.dport) == (i.src, i.dst, i.sport, i.dport);
    if i.later_frag {
        // Follows its first fragment (`PIER_FRAGS`, not pinned): addresses
        // only, to addresses the maps know.
        let known = |a| c.known.contains(&a) || a == i.src || a == i.dst;
        return (!known(o.src) || !known(o.dst))
            .then(|| "later fragment rewritten to unknown addresses".into());
    }
    if same {
        return None;
    }
    // A published port's DNAT (hairpin to its own port: from the gateway).
    if let Some(p) = m.port(i.dst, i.dport, i.proto)
        && (o.dst, o.dport) == (p.backend_be, p.backend_port_be)
        && o.sport == i.sport
        && (o.src == i.src || [be(GW1), be(GW2)].contains(&o.src))
    {
        return None;
    }
    // The reply of a masqueraded or routed flow.
    if let Ok(r) = m.rev.get(&i.flow(), 0)
        && (o.dst, o.dport) == (r.addr_be, r.port_be)
        && (o.src, o.sport) == (i.src, i.sport)
    {
        return None;
    }
    // Masquerade.
    if let Ok(f) = m.fwd.get(&i.flow(), 0)
        && (o.src, o.sport) == (f.addr_be, f.port_be)
        && (o.dst, o.dport) == (i.dst, i.dport)
        && f.addr_be == be(HOST)
    {
        return None;
    }
    // A published connection's reply.
    if let Ok(ct) = m.ct.get(&i.flow(), 0)
        && (o.src, o.sport) == (ct.orig_daddr_be, ct.orig_dport_be)
        && o.dport == i.dport
        && (o.dst == i.dst || o.dst == ct.client_be)
    {
        return None;
    }
    // A published reply whose entry was gone (re-tracked from BACKENDS).
    let bk = PortKey {
        addr_be: i.src,
        port_be: i.sport,
        proto: i.proto,
        _pad: 0,
    };
    if let Ok(h) = m.backends.get(&bk, 0)
        && o.sport == h.port_be
        && (o.src == h.addr_be || h.addr_be == 0 && o.src == be(HOST))
        && (o.dst, o.dport) == (i.dst, i.dport)
    {
        return None;
    }
    Some(format!(
        "rewrite no map allows: {}:{} -> {}:{} became {}:{} -> {}:{} (proto {})",
        Ipv4Addr::from(i.src.to_ne_bytes()),
        u16::from_be(i.sport),
        Ipv4Addr::from(i.dst.to_ne_bytes()),
        u16::from_be(i.dport),
        Ipv4Addr::from(o.src.to_ne_bytes()),
        u16::from_be(o.sport),
        Ipv4Addr::from(o.dst.to_ne_bytes()),
        u16::from_be(o.dport),
        i.proto
    ))
}

/// One mutation of `seed`.
fn mutate(r: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    let n = 1 + r.below(3);
    let mut refix = false;
    for _ in 0..n {
        match r.below(12) {
            // Bit flips anywhere (checksums left as they fall).
            0..=2 => {
                let i = r.below(f.len());
                f[i] ^= 1 << r.below(8);
            }
            // An interesting byte anywhere in the headers.
            3 => {
                let i = r.below(f.len().min(64));
                f[i] = r.pick(&[0, 1, 5, 0x0f, 0x40, 0x45, 0x4f, 0x7f, 0x80, 0xff]);
            }
            // Addresses, ports (checksums fixed: a valid packet of another flow).
            4 if f.len() >= 34 => {
                let at = r.pick(&[26, 30]);
                f[at..at + 4].copy_from_slice(&r.pick(&ADDRS));
                refix = true;
            }
            5 if f.len() >= 38 => {
                let ihl = ((f[14] & 0x0f) as usize) * 4;
                let at = 14 + ihl.max(20) + r.pick(&[0, 2]);
                if at + 2 <= f.len() {
                    f[at..at + 2].copy_from_slice(&r.pick(&PORTS_).to_be_bytes());
                    refix = true;
                }
            }
            // TTL, fragment fields, protocol, IHL.
            6 if f.len() >= 34 => {
                f[22] = r.pick(&[0, 1, 2, 64, 255]);
                refix = true;
            }
            7 if f.len() >= 34 => {
                let v: u16 = r.pick(&[0, 0x2000, 0x0010, 0x2010, 0x4000, 0x1fff]);
                f[20..22].copy_from_slice(&v.to_be_bytes());
                refix = true;
            }
            8 if f.len() >= 34 => {
                f[23] = r.pick(&[1, 6, 17, 47, 0, 255]);
                refix = true;
            }
            9 if f.len() >= 34 => f[14] = r.pick(&[0x44, 0x45, 0x46, 0x4f, 0x55, 0x65]),
            // Truncate, extend.
            10 => {
                let keep = 14 + r.below(f.len().saturating_sub(13).max(1));
                f.truncate(keep.max(14));
            }
            _ => {
                let more = r.below(64);
                f.extend((0..more).map(|_| r.next() as u8));
            }
        }
    }
    if refix {
        fix_checksums(&mut f);
    }
    f
}

fn random_frame(r: &mut Rng) -> Vec<u8> {
    let len = 14 + r.below(120);
    let mut f: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
    // Mostly IPv4 or ARP, so the programs get past the ethertype.
    match r.below(4) {
        0 | 1 if f.len() >= 34 => {
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            if r.below(2) == 0 {
                fix_checksums(&mut f);
            }
        }
        2 => f[12..14].copy_from_slice(&[8, 6]),
        _ => {}
    }
    f
}

#[test]
fn fuzzed_frames_are_passed_unchanged_dropped_with_a_reason_or_translated_as_the_maps_say() {
    require_root!();
    let packets: usize = std::env::var("FUZZ_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("dataplane fuzz: FUZZ_SEED={seed} FUZZ_PACKETS={packets}");
    let mut w = World::new(false);
    let net = w.network(1, "10.109.0.0/24");
    let mut internal = w.network(2, "10.110.0.0/24");
    internal.internal = true;
    w.networks[1].internal = true;
    let c1 = w.container("c1", &net, "10.109.0.2");
    let c2 = w.container("c2", &net, "10.109.0.3");
    let c3 = w.container("c3", &internal, "10.110.0.2");
    let desired = w.desired(vec![
        tcp(8081, c1.ip, 8080),
        udp(8083, c1.ip, 9090),
        tcp(8082, c2.ip, 8080),
    ]);
    let cfg = w.config();
    let bpffs = cfg.bpffs_dir.clone();
    TestHost::in_netns(&w.host.host_ns.clone(), || {
        let mut dp = EbpfDataplane::new(cfg);
        dp.start().expect("start");
        dp.sync(&desired).expect("sync");
        let idx = |n: &str| nix::net::if_::if_nametoindex(n).unwrap();
        let (v1, v2, v3) = (idx("vc1"), idx("vc2"), idx("vc3"));
        let maps = Maps::open(&bpffs);
        let ctx = Ctx {
            maps: &maps,
            veth_addr: [(v1, be(C1)), (v2, be(C2)), (v3, be(C3))].into(),
            known: ADDRS.iter().map(|a| be(*a)).collect(),
        };
        let total_drops = |dp: &EbpfDataplane| -> u64 {
            dp.drop_counts()
                .unwrap()
                .iter()
                .map(|(_, c)| c.packets)
                .sum()
        };
        let run = |dp: &mut EbpfDataplane, prog: &str, f: &[u8], ifindex: u32| {
            dp.test_run(prog, f, ifindex)
                .unwrap_or_else(|e| panic!("test_run: {e}"))
        };

        // Valid flows first: they make the conntrack and NAT entries the
        // mutated seeds then hit.
        let up = programs::UPLINK_IN;
        let veth = programs::VETH_IN;
        let mut up_seeds = vec![
            frame(6, OUTSIDE, HOST, 5555, 8081, 0x02),
            frame(17, OUTSIDE, HOST, 5556, 8083, 0),
            frame(6, OUTSIDE, HOST, 5557, 8082, 0x02),
            frame(1, OUTSIDE, HOST, 77, 0, 8),
            frame(6, OUTSIDE, C1, 5555, 8080, 0x02),
            frame(47, OUTSIDE, HOST, 0, 0, 0),
        ];
        for s in up_seeds.clone() {
            run(&mut dp, up, &s, 0);
        }
        // A seed as its container sends it: from its own MAC (any other is
        // dropped, MacSpoofed); the mutations then change it too.
        let macs: BTreeMap<u32, [u8; 6]> = [(v1, c1.mac), (v2, c2.mac), (v3, c3.mac)].into();
        let own = |mut f: Vec<u8>, i: u32| {
            f[6..12].copy_from_slice(&macs[&i]);
            f
        };
        let veth_seeds: Vec<(Vec<u8>, u32)> = vec![
            (frame(6, C1, OUTSIDE, 8080, 5555, 0x12), v1),
            (frame(17, C1, OUTSIDE, 9090, 5556, 0), v1),
            (frame(6, C2, OUTSIDE, 8080, 5557, 0x12), v2),
            (frame(6, C1, HOST, 4000, 8082, 0x02), v1),
            (frame(6, C2, HOST, 4001, 8082, 0x02), v2),
            (frame(6, C1, C2, 4002, 8080, 0x02), v1),
            (frame(6, C3, C1, 4003, 8080, 0x02), v3),
            (frame(6, C3, OUTSIDE, 4004, 80, 0x02), v3),
            (frame(1, C1, OUTSIDE, 99, 0, 8), v1),
            (frame(17, C1, [224, 0, 0, 251], 5353, 5353, 0), v1),
            (arp(c1.mac, c1.mac, C1, 1), v1),
            (arp(c2.mac, c2.mac, C1, 2), v2),
        ];
        let mut veth_seeds: Vec<(Vec<u8>, u32)> = veth_seeds
            .into_iter()
            .map(|(f, i)| (own(f, i), i))
            .collect();
        // Masqueraded flows out, and their replies in (with the port the
        // dataplane chose).
        for (sport, proto, dport) in [(4100u16, 6u8, 80u16), (4101, 17, 53), (4102, 1, 0)] {
            let ty = if proto == 1 { 8 } else { 0x02 };
            let f = own(frame(proto, C1, OUTSIDE, sport, dport, ty), v1);
            let (v, out) = run(&mut dp, veth, &f, v1);
            assert_eq!(v, TC_ACT_REDIRECT, "masquerade seed");
            veth_seeds.push((f, v1));
            let o = parse(&out).unwrap();
            let reply = if proto == 1 {
                frame(1, OUTSIDE, HOST, 0, u16::from_be(o.sport), 0)
            } else {
                frame(proto, OUTSIDE, HOST, dport, u16::from_be(o.sport), 0x12)
            };
            assert_eq!(run(&mut dp, up, &reply, 0).0, TC_ACT_REDIRECT, "reply seed");
            up_seeds.push(icmp_error(OUTSIDE, HOST, 3, 4, &out));
            up_seeds.push(reply);
        }
        // ICMP errors about published connections, fragments.
        let pub_reply = frame(6, C1, OUTSIDE, 8080, 5555, 0x12);
        veth_seeds.push((own(icmp_error(C1, OUTSIDE, 3, 3, &up_seeds[0]), v1), v1));
        up_seeds.push(icmp_error(OUTSIDE, HOST, 3, 4, &{
            let mut f = pub_reply.clone();
            f[26..30].copy_from_slice(&HOST);
            f[34..36].copy_from_slice(&8081u16.to_be_bytes());
            f
        }));
        let mut first = frame(17, OUTSIDE, HOST, 5558, 8083, 0);
        first[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
        fix_checksums(&mut first);
        let mut later = first.clone();
        later[20..22].copy_from_slice(&0x0003u16.to_be_bytes());
        fix_checksums(&mut later);
        run(&mut dp, up, &first, 0);
        up_seeds.push(first);
        up_seeds.push(later);

        let mut r = Rng(seed);
        let mut failures: Vec<String> = Vec::new();
        for prog in [up, veth] {
            let t = Instant::now();
            let (mut ok, mut shot, mut redirect) = (0usize, 0usize, 0usize);
            let mut counted = total_drops(&dp);
            let mut refused = 0usize;
            for n in 0..packets {
                let (f, ifindex) = if prog == up {
                    let s = r.pick(&up_seeds);
                    let f = match r.below(10) {
                        0 => random_frame(&mut r),
                        1 => s,
                        _ => mutate(&mut r, &s),
                    };
                    (f, 0)
                } else {
                    let (s, i) = r.pick(&veth_seeds);
                    // Mostly its own veth, sometimes another's (spoofing).
                    let i = if r.below(4) == 0 {
                        r.pick(&[v1, v2, v3])
                    } else {
                        i
                    };
                    let f = match r.below(10) {
                        0 => random_frame(&mut r),
                        1 => s,
                        _ => mutate(&mut r, &s),
                    };
                    (f, i)
                };
                if f.len() < 14 {
                    continue;
                }
                // The kernel refuses some frames before any program runs
                // (shorter than the header their ethertype names).
                let Ok((v, out)) = dp.test_run(prog, &f, ifindex) else {
                    refused += 1;
                    continue;
                };
                let now = total_drops(&dp);
                let dropped = now - counted;
                counted = now;
                match v {
                    TC_ACT_OK => ok += 1,
                    TC_ACT_SHOT => shot += 1,
                    _ => redirect += 1,
                }
                if let Some(why) = check(&ctx, prog, ifindex, &f, v, &out, dropped)
                    && failures.len() < 20
                {
                    failures.push(format!(
                        "{prog} #{n} ifindex {ifindex}: {why}\n  in:  {}\n  out: {}",
                        hex(&f),
                        hex(&out)
                    ));
                }
            }
            println!(
                "dataplane fuzz: {prog}: {packets} frames in {:.1} s: {ok} passed, {shot} dropped, {redirect} redirected, {refused} refused by the kernel",
                t.elapsed().as_secs_f64()
            );
            assert!(refused < packets / 10, "{prog}: {refused} frames refused");
            assert!(
                ok > 0 && shot > 0 && redirect > 0,
                "{prog}: every verdict reached"
            );
        }
        dp.remove_all().unwrap();
        assert!(
            failures.is_empty(),
            "FUZZ_SEED={seed}: {} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    });
    w.assert_firewalls_untouched();
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}
