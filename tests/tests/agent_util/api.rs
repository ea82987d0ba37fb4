//! A raw HTTP/1.1 client for the agent's unix socket: one request per
//! connection (`Connection: close`), any bytes as the body, a deadline on
//! the whole exchange, so a test sees exactly what the agent answered (or
//! that it did not answer in time).
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

/// What came back.
#[derive(Debug)]
pub enum Reply {
    /// A complete answer: status and (de-chunked) body.
    Answer { status: u16, body: Vec<u8> },
    /// No complete answer within the deadline.
    Hung { got: Vec<u8> },
    /// The connection could not be made or was reset.
    Failed(String),
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn body_text(&self) -> String {
        match self {
            Reply::Answer { body, .. } => String::from_utf8_lossy(body).into_owned(),
            Reply::Hung { got } => format!("(hung after {} bytes)", got.len()),
            Reply::Failed(e) => format!("(failed: {e})"),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Reply::Answer { body, .. } => serde_json::from_slice(body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// `method path` with `body` (sent with a Content-Length) to the agent at
/// `socket`; the answer, or `Hung` after `deadline`.
pub fn call(socket: &Path, method: &str, path: &str, body: &[u8], deadline: Duration) -> Reply {
    let t0 = Instant::now();
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return Reply::Failed(format!("connect: {e}")),
    };
    let _ = s.set_write_timeout(Some(deadline));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: pier\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The agent may answer (and close) before reading all of a body it
    // refuses: then its answer is read all the same.
    let wrote = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Reply::Hung { got };
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if let Some(r) = parse(&got, false, method == "HEAD") {
                    return r;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Reply::Hung { got };
            }
            Err(e) if got.is_empty() && wrote.is_ok() => {
                return Reply::Failed(format!("read: {e}"));
            }
            Err(_) => break,
        }
    }
    parse(&got, true, method == "HEAD").unwrap_or_else(|| {
        if let Err(e) = &wrote {
            Reply::Failed(format!("write: {e}, then no answer"))
        } else if got.is_empty() {
            Reply::Failed("closed without an answer".into())
        } else {
            Reply::Failed(format!(
                "closed mid-answer: {:?}",
                String::from_utf8_lossy(&got)
            ))
        }
    })
}

/// A complete response in `got` (`eof`: the peer closed, so a body
/// without a length ends here), else `None`.
fn parse(got: &[u8], eof: bool, head_only: bool) -> Option<Reply> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let rest = &got[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let (mut len, mut chunked) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    if head_only || status == 204 || status == 304 {
        return Some(Reply::Answer {
            status,
            body: Vec::new(),
        });
    }
    if chunked {
        return dechunk(rest).map(|body| Reply::Answer { status, body });
    }
    match len {
        Some(n) if rest.len() >= n => Some(Reply::Answer {
            status,
            body: rest[..n].to_vec(),
        }),
        Some(_) => None,
        None if eof => Some(Reply::Answer {
            status,
            body: rest.to_vec(),
        }),
        None => None,
    }
}

/// A complete chunked body, else `None`.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl]).split(';').next()?.trim(),
            16,
        )
        .ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `GET path`, expecting a 2xx JSON answer.
pub fn get_json(socket: &Path, path: &str) -> Value {
    let r = call(socket, "GET", path, b"", Duration::from_secs(20));
    match r.status() {
        Some(s) if (200..300).contains(&s) => r.json(),
        _ => panic!("GET {path}: {r:?}"),
    }
}
