//! The CLI's side of the API: one HTTP/1.1 request per call over the unix socket.
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use super::types::{CannotStart, ErrorBody};

pub struct Client {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(socket: &Path) -> anyhow::Result<Self> {
        Ok(Client {
            socket: socket.to_path_buf(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// Send a request; the body of a 2xx answer, else the API's message as the error.
    pub fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Bytes> {
        self.rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot connect to the pier agent at {}: {e} (is `pier agent` running?)",
                        self.socket.display()
                    )
                })?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("talking to the agent")?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "pier")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let resp = tx.send_request(req).await.context("talking to the agent")?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .context("reading the agent's answer")?
                .to_bytes();
            if !status.is_success() {
                let (msg, code) = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| (e.message, e.exit_code))
                    .unwrap_or_else(|_| (String::from_utf8_lossy(&bytes).trim().to_string(), None));
                if msg.is_empty() {
                    bail!("the agent answered {status} to {path}");
                }
                // One line, whatever the server sent.
                let message = msg.lines().collect::<Vec<_>>().join(" ");
                if let Some(exit_code) = code {
                    return Err(CannotStart { message, exit_code }.into());
                }
                bail!("{message}");
            }
            Ok(bytes)
        })
    }

    /// GET a stream of lines (`/monitor`): `opened` once the agent
    /// answered, then `line` for each line until it returns false or the
    /// agent ends the stream.
    pub fn stream_lines(
        &self,
        path: &str,
        opened: impl FnOnce(),
        mut line: impl FnMut(&[u8]) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot connect to the pier agent at {}: {e} (is `pier agent` running?)",
                        self.socket.display()
                    )
                })?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("talking to the agent")?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header("host", "pier")
                .body(Full::new(Bytes::new()))?;
            let resp = tx.send_request(req).await.context("talking to the agent")?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = body.collect().await?.to_bytes();
                let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                bail!("{msg}");
            }
            opened();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.context("reading the agent's stream")?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let rest = buf.split_off(i + 1);
                    let l = std::mem::replace(&mut buf, rest);
                    if !line(&l[..i])? {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let b = self.raw(Method::GET, path, None)?;
        serde_json::from_slice(&b).context("decoding the agent's answer")
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let b = self.raw(Method::POST, path, Some(serde_json::to_vec(body)?))?;
        serde_json::from_slice(&b).context("decoding the agent's answer")
    }

    /// POST with a body, ignoring the answer's body.
    pub fn post_unit<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        self.raw(Method::POST, path, Some(serde_json::to_vec(body)?))
            .map(|_| ())
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.raw(Method::DELETE, path, None).map(|_| ())
    }
}

/// Percent-encode a path segment (names are restricted, but be safe).
pub fn seg(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:".contains(&b) {
            o.push(b as char);
        } else {
            o += &format!("%{b:02X}");
        }
    }
    o
}
