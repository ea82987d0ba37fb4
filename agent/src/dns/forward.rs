//! Forwarding to upstream resolvers: UDP first (TCP if the client came over
//! TCP), the same upstream again over TCP when the UDP answer is truncated,
//! upstreams tried in order, each with its own timeout.
//!
//! Sockets are opened by the calling task's thread, i.e. in the namespace the
//! agent's runtime runs in (the host's, which has the uplink), never in the
//! container's.
use std::{net::SocketAddr, time::Duration};

use hickory_proto::op::{Message, Query, ResponseCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::{Instant, timeout_at},
};

/// How a query reached the resolver (and so how it is forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Largest UDP answer accepted from an upstream.
const UPSTREAM_UDP_BUF: usize = 4096;

/// Ask `upstreams` in order; return the first answer that is neither SERVFAIL
/// nor REFUSED (with the ID as the upstream sent it), or `None`.
pub(crate) async fn exchange_all(
    raw: &[u8],
    question: &Query,
    upstreams: &[SocketAddr],
    transport: Transport,
    per_upstream: Duration,
) -> Option<Vec<u8>> {
    for &up in upstreams {
        let deadline = Instant::now() + per_upstream;
        let got = match transport {
            Transport::Udp => match udp_exchange(raw, question, up, deadline).await {
                Some((_, true)) => tcp_exchange(raw, question, up, deadline).await,
                Some((bytes, false)) => Some(bytes),
                None => None,
            },
            Transport::Tcp => tcp_exchange(raw, question, up, deadline).await,
        };
        let Some(bytes) = got else { continue };
        let rcode = ResponseCode::from_low(bytes[3] & 0x0f);
        if rcode == ResponseCode::ServFail || rcode == ResponseCode::Refused {
            tracing::debug!(%up, ?rcode, "upstream failed, trying the next");
            continue;
        }
        return Some(bytes);
    }
    None
}

/// A copy of the query with a fresh random ID.
fn with_new_id(raw: &[u8]) -> (Vec<u8>, u16) {
    let id: u16 = rand::random();
    let mut q = raw.to_vec();
    q[0..2].copy_from_slice(&id.to_be_bytes());
    (q, id)
}

/// Whether `bytes` answers `question` with ID `id`.
fn matches(bytes: &[u8], id: u16, question: &Query) -> bool {
    if bytes.len() < 12 || u16::from_be_bytes([bytes[0], bytes[1]]) != id || bytes[2] & 0x80 == 0 {
        return false;
    }
    let Ok(m) = Message::from_vec(bytes) else {
        return false;
    };
    // An answer must echo the question (a truncated one may leave it out).
    match m.queries.first() {
        // (Name equality ignores case.)
        Some(q) => {
            q.name() == question.name()
                && q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
        }
        None => m.metadata.truncation,
    }
}

/// One UDP exchange; `Some((answer, truncated))`.
async fn udp_exchange(
    raw: &[u8],
    question: &Query,
    up: SocketAddr,
    deadline: Instant,
) -> Option<(Vec<u8>, bool)> {
    let bind: SocketAddr = if up.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(up).await.ok()?;
    let (q, id) = with_new_id(raw);
    sock.send(&q).await.ok()?;
    let mut buf = vec![0u8; UPSTREAM_UDP_BUF];
    loop {
        // Anything that is not the answer (stray or forged) is ignored.
        let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(%up, error = %e, "upstream UDP error");
                return None;
            }
            Err(_) => {
                tracing::debug!(%up, "upstream UDP timeout");
                return None;
            }
        };
        let bytes = &buf[..n];
        if matches(bytes, id, question) {
            let truncated = bytes[2] & 0x02 != 0;
            return Some((bytes.to_vec(), truncated));
        }
    }
}

/// One TCP exchange (RFC 1035 two-byte length prefix).
async fn tcp_exchange(
    raw: &[u8],
    question: &Query,
    up: SocketAddr,
    deadline: Instant,
) -> Option<Vec<u8>> {
    let io = async {
        let mut s = TcpStream::connect(up).await.ok()?;
        let (q, id) = with_new_id(raw);
        let len = u16::try_from(q.len()).ok()?;
        let mut out = Vec::with_capacity(q.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&q);
        s.write_all(&out).await.ok()?;
        let n = s.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await.ok()?;
        matches(&buf, id, question).then_some(buf)
    };
    match timeout_at(deadline, io).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!(%up, "upstream TCP timeout");
            None
        }
    }
}
