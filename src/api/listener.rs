//! The accept loop: HTTP/1 connections with a header-read timeout, an idle keep-alive timeout and
//! a cap on open connections; each request learns its peer address (`ConnectInfo`).
//!
//! The timeouts apply only while no request is in flight on the connection, so a long stream or a
//! long tool loop is never cut: a connection is closed when it has sent part of a request head and
//! not finished it within `header_read_timeout`, when it was opened and sent nothing within
//! `header_read_timeout`, or when it sat idle after its last answer for `idle_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::Holding;

/// Connection limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for a request head, and for a new connection's first request.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between answers and the next request.
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their answers.
pub async fn serve(
    listener: TcpListener,
    app: super::Gateway,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(
            tcp,
            peer,
            app.clone(),
            limits,
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    Ok(())
}

/// Per-connection errors (the peer reset before we accepted) are nothing; running out of file
/// descriptors is waited out, as a busy server must.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection (raise the open-file limit or lower [server] max_connections)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One connection: hyper's HTTP/1 state machine, watched for the timeouts.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: super::Gateway,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        watch: watch.clone(),
    });
    let svc_watch = watch.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let guard = svc_watch.begin();
        let answer = app.clone().answer(req);
        async move {
            let resp = answer.await;
            // The request stays in flight until its answer's body ends.
            Ok::<_, Infallible>(resp.map(|inner| Holding::new(inner, guard)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    // The watchdog is lazy: requests never wake it (they only touch atomics); it wakes at the
    // deadline it last computed, at most `check` apart, and looks again. A timeout so fires between
    // its time and one `check` later.
    let check = limits.header_read_timeout.min(limits.idle_timeout);
    let timer = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut timer => {
                let now = Instant::now();
                match watch.deadline(&limits) {
                    Some(d) if d <= now => {
                        tracing::debug!(%peer, "closing a connection that timed out waiting for a request");
                        break;
                    }
                    Some(d) => timer.as_mut().reset(d.min(now + check)),
                    None => timer.as_mut().reset(now + check),
                }
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

// === impl Watch ===

/// `first_byte` when no byte of a new request has arrived.
const NONE: u64 = u64::MAX;

/// What the timeouts look at: requests in flight, when the connection went idle, and when the
/// first byte of the next request head arrived.
struct Watch {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last answer finished (0: the connection's start).
    idle_since: AtomicU64,
    /// Milliseconds after `epoch` of the first byte read while idle, or [`NONE`].
    first_byte: AtomicU64,
    /// Whether the connection has answered a request (a new one gets the header timeout).
    answered: AtomicBool,
}

impl Watch {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            answered: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request has been read whole: no timeout until its answer ends.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first_byte.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    /// Bytes arrived: if the connection was idle, the header timeout starts now.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.first_byte.load(Ordering::Acquire) == NONE
        {
            self.first_byte.store(self.now_ms(), Ordering::Release);
        }
    }

    /// When the connection is to be closed, if nothing changes.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let first = self.first_byte.load(Ordering::Acquire);
        let (from, limit) = if first != NONE {
            (first, limits.header_read_timeout)
        } else if self.answered.load(Ordering::Acquire) {
            (self.idle_since.load(Ordering::Acquire), limits.idle_timeout)
        } else {
            (0, limits.header_read_timeout)
        };
        Some(self.epoch + Duration::from_millis(from) + limit)
    }
}

/// Held by a request until its answer's body is finished or dropped.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let w = &self.0;
        w.idle_since.store(w.now_ms(), Ordering::Release);
        w.answered.store(true, Ordering::Release);
        w.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TCP stream, noting reads for the header timeout.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-file limit to the hard one and returns it (`None` where unknown).
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(1 << 20).ok()
}

/// The default connection cap for an open-file limit: half of what is left after a reserve
/// (each client connection may pair with an upstream one), between 64 and 16384.
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    fd_limit.map_or(4096, |n| {
        (n.saturating_sub(256) / 2).clamp(64, 16_384) as usize
    })
}
