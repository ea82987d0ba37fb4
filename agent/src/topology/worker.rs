//! The netlink worker: one dedicated thread with a current-thread tokio
//! runtime and an rtnetlink connection opened in the namespace the worker was
//! started from (the agent's "host" namespace). Blocking callers hand it async
//! jobs and wait for their result; jobs run one at a time.
//!
//! Work inside a container namespace uses a second netlink socket opened on a
//! short-lived thread that joined that namespace ([`super::netns::netlink_socket_in`])
//! and driven from this same runtime ([`ns_connection`]).
use std::{
    future::Future,
    os::fd::{IntoRawFd, OwnedFd},
    pin::Pin,
    sync::mpsc as std_mpsc,
    thread::JoinHandle,
};

use futures::FutureExt;
use rtnetlink::{Handle, sys::TokioSocket};
use tokio::sync::mpsc;

use super::{Result, TopologyError};

type Job = Box<dyn FnOnce(Handle) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub(crate) struct Worker {
    tx: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start the worker thread in the calling thread's network namespace.
    pub(crate) fn start() -> Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("pier-netlink".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(os("start netlink runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (conn, handle, _) = match rtnetlink::new_connection() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(os("open netlink socket", e)));
                            return;
                        }
                    };
                    let conn = tokio::spawn(conn);
                    let _ = ready_tx.send(Ok(()));
                    while let Some(job) = rx.recv().await {
                        job(handle.clone()).await;
                    }
                    conn.abort();
                });
            })
            .map_err(|e| os("spawn netlink thread", e))?;
        ready_rx
            .recv()
            .map_err(|_| TopologyError::Invalid("netlink worker died while starting".into()))??;
        Ok(Worker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Run `f` on the worker with a handle to the host namespace's netlink
    /// connection, and wait for its result.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let (rtx, rrx) = std_mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |h| {
            Box::pin(async move {
                // A panicking job fails its own call, not the worker.
                let r = std::panic::AssertUnwindSafe(f(h)).catch_unwind().await;
                let _ = rtx.send(r.unwrap_or_else(|_| {
                    Err(TopologyError::Invalid("netlink job panicked".into()))
                }));
            })
        });
        let dead = || TopologyError::Invalid("netlink worker is gone".into());
        self.tx
            .as_ref()
            .ok_or_else(dead)?
            .send(job)
            .map_err(|_| dead())?;
        rrx.recv().map_err(|_| dead())?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection over a netlink socket opened elsewhere (e.g. in a container
/// namespace), driven by the current runtime. Aborting the returned task (or
/// dropping the handle and the task) closes the socket.
pub(crate) fn ns_connection(sock: OwnedFd) -> (Handle, tokio::task::JoinHandle<()>) {
    // SAFETY: `sock` is an open netlink socket we own; ownership moves into
    // the TokioSocket, which closes it on drop.
    let sock = unsafe { <TokioSocket as std::os::fd::FromRawFd>::from_raw_fd(sock.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(sock);
    (handle, tokio::spawn(conn))
}

pub(crate) fn os(op: impl Into<String>, source: std::io::Error) -> TopologyError {
    TopologyError::Os {
        op: op.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_fails_its_call_and_the_worker_lives_on() {
        let w = Worker::start().expect("worker");
        let r: Result<()> = w.run(|_| async { panic!("boom") });
        assert_eq!(r.unwrap_err().to_string(), "netlink job panicked");
        let links = w
            .run(|h| async move {
                use futures::TryStreamExt;
                let l: Vec<_> = h.link().get().execute().try_collect().await.map_err(|e| {
                    TopologyError::Netlink {
                        op: "list".into(),
                        msg: e.to_string(),
                    }
                })?;
                Ok(l.len())
            })
            .expect("worker still serves");
        assert!(links >= 1, "at least lo");
    }
}
