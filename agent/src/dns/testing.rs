//! A fake upstream DNS server for tests and the benchmark (never a real
//! resolver). Plain std threads, so it can be started on a thread that has
//! joined another namespace and keeps serving there.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};

use super::Transport;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One A record, `answer`, TTL 60, for any name.
    Answer(Ipv4Addr),
    /// Over UDP: an empty answer with TC set. Over TCP: `n` A records
    /// 198.51.100.1..=n.
    TruncateUdp(u8),
    /// SERVFAIL for everything.
    ServFail,
    /// Never answers.
    Silent,
}

/// One query the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub transport: Transport,
    pub name: String,
    pub qtype: RecordType,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Bind UDP and TCP on `addr` (in the calling thread's namespace) and
    /// serve in `mode` until dropped.
    pub fn start(addr: SocketAddr, mode: Mode) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr)?;
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr)?;
        udp.set_read_timeout(Some(Duration::from_millis(20)))?;
        tcp.set_nonblocking(true)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(r) = answer(&buf[..n], mode, Transport::Udp, &seen) {
                        let _ = udp.send_to(&r, peer);
                    }
                }
            }));
        }
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    if let Some(r) = answer(&q, mode, Transport::Tcp, &seen) {
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&r);
                        let _ = s.write_all(&out);
                    }
                }
            }));
        }
        Ok(FakeUpstream {
            addr,
            seen,
            stop,
            threads,
        })
    }

    /// Queries received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn answer(q: &[u8], mode: Mode, t: Transport, seen: &Mutex<Vec<Seen>>) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    let query = req.queries.first()?.clone();
    seen.lock().unwrap().push(Seen {
        transport: t,
        name: query.name().to_ascii(),
        qtype: query.query_type(),
    });
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(query.clone());
    let rec = |ip: Ipv4Addr| Record::from_rdata(query.name().clone(), 60, RData::A(A(ip)));
    match (mode, t) {
        (Mode::Silent, _) => return None,
        (Mode::ServFail, _) => resp.metadata.response_code = ResponseCode::ServFail,
        (Mode::Answer(ip), _) => {
            resp.add_answer(rec(ip));
        }
        (Mode::TruncateUdp(_), Transport::Udp) => resp.metadata.truncation = true,
        (Mode::TruncateUdp(n), Transport::Tcp) => {
            for i in 1..=n {
                resp.add_answer(rec(Ipv4Addr::new(198, 51, 100, i)));
            }
        }
    }
    resp.to_vec().ok()
}
