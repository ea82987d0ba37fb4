//! The query handler: wire format in (hickory-proto), local answer or
//! forwarding decision, wire format out. Never panics on any input.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, PTR},
    },
};

use super::{
    MAX_UPSTREAMS, TTL,
    forward::{self, Transport},
    table::{Lookup, NameSnapshot, Reverse},
};

/// Largest UDP payload pier advertises and answers with (EDNS).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Plain DNS over UDP without EDNS.
const CLASSIC_UDP: usize = 512;

/// Settings of a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Default upstreams (`pier agent --dns-upstream`, else the host's
    /// resolv.conf); at most three are tried, in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// The embedded resolver: one per agent, shared by every container's server.
pub struct Resolver {
    snapshot: RwLock<Arc<NameSnapshot>>,
    upstreams: RwLock<Arc<Vec<SocketAddr>>>,
    upstream_timeout: Duration,
}

/// What to do with one query, decided without I/O.
pub(crate) enum Step {
    Reply(Vec<u8>),
    Drop,
    Forward(ForwardJob),
}

pub(crate) struct ForwardJob {
    raw: Vec<u8>,
    request: Message,
    upstreams: Vec<SocketAddr>,
    transport: Transport,
    timeout: Duration,
}

impl Resolver {
    pub fn new(config: ResolverConfig) -> Self {
        Resolver {
            snapshot: RwLock::new(Arc::new(NameSnapshot::default())),
            upstreams: RwLock::new(Arc::new(config.upstreams)),
            upstream_timeout: config.upstream_timeout,
        }
    }

    /// Replace the name table; the next query sees the new one.
    pub fn publish(&self, snapshot: NameSnapshot) {
        let new = Arc::new(snapshot);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// The table in force.
    pub fn snapshot(&self) -> Arc<NameSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the default upstreams.
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(upstreams);
    }

    pub fn upstreams(&self) -> Arc<Vec<SocketAddr>> {
        self.upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answer one query that came over UDP from container `asker`: the reply
    /// to send, or `None` to drop it (too short to answer, or not a query).
    /// Replies larger than the client's UDP size come back truncated (TC).
    pub async fn handle(&self, asker: &str, query: &[u8]) -> Option<Vec<u8>> {
        self.handle_on(asker, query, Transport::Udp).await
    }

    /// Like [`Resolver::handle`] for a query that came over TCP (no size
    /// limit; forwarded over TCP).
    pub async fn handle_tcp(&self, asker: &str, query: &[u8]) -> Option<Vec<u8>> {
        self.handle_on(asker, query, Transport::Tcp).await
    }

    async fn handle_on(&self, asker: &str, query: &[u8], t: Transport) -> Option<Vec<u8>> {
        match self.decide(asker, query, t) {
            Step::Reply(r) => Some(r),
            Step::Drop => None,
            Step::Forward(job) => Some(job.run().await),
        }
    }

    /// Everything but the forwarding I/O.
    pub(crate) fn decide(&self, asker: &str, raw: &[u8], transport: Transport) -> Step {
        // Fewer than 12 bytes is no header: nothing to answer to. A message
        // with QR set is a response: never answer those (no loops).
        if raw.len() < 12 || raw[2] & 0x80 != 0 {
            return Step::Drop;
        }
        let id = u16::from_be_bytes([raw[0], raw[1]]);
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(_) => return bare_error(id, raw, ResponseCode::FormErr),
        };
        let mut resp = Message::response(id, request.metadata.op_code);
        resp.metadata.recursion_desired = request.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        let max_udp = match &request.edns {
            Some(e) => {
                resp.set_edns(edns_reply());
                usize::from(e.max_payload().clamp(CLASSIC_UDP as u16, MAX_UDP_PAYLOAD))
            }
            None => CLASSIC_UDP,
        };
        let limit = match transport {
            Transport::Udp => max_udp,
            Transport::Tcp => usize::from(u16::MAX),
        };
        if request.metadata.op_code != OpCode::Query {
            return reply(resp, ResponseCode::NotImp, limit);
        }
        if request.queries.len() != 1 {
            return reply(resp, ResponseCode::FormErr, limit);
        }
        let q = request.queries[0].clone();
        resp.add_query(q.clone());

        let snap = self.snapshot();
        if q.query_class() == DNSClass::IN {
            match self.local(&snap, asker, &q) {
                Outcome::Answers(records) => {
                    resp.metadata.authoritative = true;
                    resp.add_answers(records);
                    return reply(resp, ResponseCode::NoError, limit);
                }
                Outcome::NxDomain => {
                    resp.metadata.authoritative = true;
                    return reply(resp, ResponseCode::NXDomain, limit);
                }
                Outcome::ServFail => return reply(resp, ResponseCode::ServFail, limit),
                Outcome::NotLocal => {}
            }
        }
        if !snap.knows(asker) {
            return reply(resp, ResponseCode::Refused, limit);
        }
        // Containers on internal networks only get local names (Docker
        // answers the rest with SERVFAIL).
        if !snap.may_forward(asker) {
            return reply(resp, ResponseCode::ServFail, limit);
        }
        let upstreams: Vec<SocketAddr> = match snap.upstreams_of(asker) {
            Some(u) => u.iter().take(MAX_UPSTREAMS).copied().collect(),
            None => self
                .upstreams()
                .iter()
                .take(MAX_UPSTREAMS)
                .copied()
                .collect(),
        };
        if upstreams.is_empty() {
            return reply(resp, ResponseCode::ServFail, limit);
        }
        Step::Forward(ForwardJob {
            raw: raw.to_vec(),
            request,
            upstreams,
            transport,
            timeout: self.upstream_timeout,
        })
    }

    fn local(&self, snap: &NameSnapshot, asker: &str, q: &Query) -> Outcome {
        let name = q.name();
        let qtype = q.query_type();
        if qtype == RecordType::PTR
            && let Ok(net) = name.parse_arpa_name()
            && net.prefix_len() == net.max_prefix_len()
        {
            return match snap.reverse(asker, net.addr()) {
                Reverse::Found(target) => match Name::from_ascii(format!("{target}.")) {
                    Ok(t) => Outcome::Answers(vec![Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::PTR(PTR(t)),
                    )]),
                    Err(_) => Outcome::ServFail,
                },
                Reverse::NxDomain => Outcome::NxDomain,
                Reverse::NotLocal => Outcome::NotLocal,
            };
        }
        let ascii = name.to_ascii();
        match snap.lookup(asker, &ascii) {
            Lookup::Found { v4, v6, .. } => {
                let a = v4
                    .into_iter()
                    .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
                let aaaa = v6
                    .into_iter()
                    .map(|ip| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(ip))));
                // Other types of a local name: NOERROR, no answers.
                Outcome::Answers(match qtype {
                    RecordType::A => a.collect(),
                    RecordType::AAAA => aaaa.collect(),
                    RecordType::ANY => a.chain(aaaa).collect(),
                    _ => Vec::new(),
                })
            }
            Lookup::NxDomain => Outcome::NxDomain,
            Lookup::NotLocal => Outcome::NotLocal,
        }
    }
}

enum Outcome {
    Answers(Vec<Record>),
    NxDomain,
    ServFail,
    NotLocal,
}

fn edns_reply() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e
}

/// Encode `resp` with `rcode`; if it does not fit in `limit`, send the
/// question only with TC set (the client retries over TCP).
fn reply(mut resp: Message, rcode: ResponseCode, limit: usize) -> Step {
    resp.metadata.response_code = rcode;
    encode(&resp, limit).map_or(Step::Drop, Step::Reply)
}

pub(crate) fn encode(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let t = resp.truncate().to_vec().ok()?;
    (t.len() <= limit).then_some(t)
}

/// An error reply for a message we could not parse: header only, same ID and
/// opcode bits, RD copied.
fn bare_error(id: u16, raw: &[u8], rcode: ResponseCode) -> Step {
    let op = OpCode::from_u8((raw[2] >> 3) & 0x0f);
    let mut m = Message::new(id, MessageType::Response, op);
    m.metadata.recursion_desired = raw[2] & 0x01 != 0;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.to_vec().map_or(Step::Drop, Step::Reply)
}

impl ForwardJob {
    /// Try the upstreams in order; the first usable answer wins, else SERVFAIL.
    pub(crate) async fn run(self) -> Vec<u8> {
        let id = self.request.metadata.id;
        let limit = match (&self.request.edns, self.transport) {
            (_, Transport::Tcp) => usize::from(u16::MAX),
            (Some(e), Transport::Udp) => {
                usize::from(e.max_payload().clamp(CLASSIC_UDP as u16, MAX_UDP_PAYLOAD))
            }
            (None, Transport::Udp) => CLASSIC_UDP,
        };
        let q = &self.request.queries[0];
        if let Some(answer) =
            forward::exchange_all(&self.raw, q, &self.upstreams, self.transport, self.timeout).await
        {
            let mut answer = answer;
            answer[0..2].copy_from_slice(&id.to_be_bytes());
            if answer.len() <= limit {
                return answer;
            }
            // Too big for the client's UDP: hand it a truncated reply so it
            // asks again over TCP.
            if let Ok(mut m) = Message::from_vec(&answer) {
                m.metadata.id = id;
                if let Some(t) = encode(&m, limit) {
                    return t;
                }
            }
        }
        let mut resp = Message::response(id, self.request.metadata.op_code);
        resp.metadata.recursion_desired = self.request.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.response_code = ResponseCode::ServFail;
        resp.add_query(q.clone());
        if self.request.edns.is_some() {
            resp.set_edns(edns_reply());
        }
        // A SERVFAIL with one question always fits in 512 bytes.
        resp.to_vec().unwrap_or_default()
    }
}

/// The address to reverse-resolve, if `name` is a full in-addr/ip6 arpa name.
pub fn arpa_addr(name: &str) -> Option<IpAddr> {
    let n = Name::from_ascii(name).ok()?;
    let n = if n.is_fqdn() {
        n
    } else {
        Name::from_ascii(format!("{name}.")).ok()?
    };
    let net = n.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}
