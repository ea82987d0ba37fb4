//! The exec side channel: the CLI connects to a second unix socket next to the
//! API one, sends one [`ExecRequest`] with its stdin/stdout/stderr attached as
//! SCM_RIGHTS, and reads one [`ExecResult`] line once the process has exited.
//! The process writes to the CLI's own fds; the CLI never touches a namespace.
use std::{
    io::{IoSlice, IoSliceMut, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::Path,
};

use anyhow::{Context, anyhow, bail};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::types::{CannotStart, ExecRequest, ExecResult};

const MAX_REQUEST: usize = 256 * 1024;

/// Client: run the request with this process's fds 0, 1, 2; the exit code.
pub fn exec(socket: &Path, req: &ExecRequest) -> anyhow::Result<i32> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        anyhow!(
            "cannot connect to the pier agent at {}: {e} (is `pier agent` running?)",
            socket.display()
        )
    })?;
    let body = serde_json::to_vec(req)?;
    if body.len() > MAX_REQUEST {
        bail!("the command line is too long");
    }
    let fds: [RawFd; 3] = [0, 1, 2];
    let len = (body.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .context("sending the request to the agent")?;
    if sent != 4 + body.len() {
        bail!("short write to the agent");
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .context("reading the agent's answer")?;
    let r: ExecResult = serde_json::from_str(answer.trim())
        .map_err(|_| anyhow!("the agent closed the exec connection without an answer"))?;
    match (r.exit_code, r.error) {
        (Some(exit_code), Some(message)) => Err(CannotStart { message, exit_code }.into()),
        (None, Some(e)) => bail!("{e}"),
        (Some(c), None) => Ok(c),
        (None, None) => bail!("the agent returned no exit code"),
    }
}

/// Server: read one request and its three fds from a connected stream.
pub fn read_request(s: &UnixStream) -> anyhow::Result<(ExecRequest, [OwnedFd; 3])> {
    let mut buf = vec![0u8; 4 + MAX_REQUEST];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 3]);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut got = 0usize;
    // The fds come with the first bytes; the rest may follow in pieces.
    loop {
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("receiving the exec request")?;
        for c in msg.cmsgs().context("reading control messages")? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: the kernel just installed these fds in this process.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        if n == 0 {
            bail!("the client hung up");
        }
        got += n;
        if got >= 4 {
            let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            if len > MAX_REQUEST {
                bail!("exec request too large");
            }
            if got >= 4 + len {
                let req: ExecRequest = serde_json::from_slice(&buf[4..4 + len])
                    .context("decoding the exec request")?;
                let fds: [OwnedFd; 3] = fds
                    .try_into()
                    .map_err(|_| anyhow!("the exec request needs exactly three fds"))?;
                return Ok((req, fds));
            }
        }
    }
}

/// Server: send the result line.
pub fn write_result(mut s: &UnixStream, r: &ExecResult) {
    use std::io::Write;
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let _ = s.write_all(&line);
}
