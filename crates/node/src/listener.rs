//! The accept loop: connection-level limits before any work, HTTP/1.1 per connection (hyper),
//! and a bounded shutdown.
//!
//! Per accepted connection, in this order:
//! 1. a *pending* permit is taken **before** `accept()` (at most `max_pending` connections that
//!    have not finished their request or WebSocket upgrade; at the limit new connections wait in
//!    the kernel's backlog, mini-redis style);
//! 2. `accept()`; a failure is logged (rate-limited: one line per second with the count of
//!    the ones not logged) and, when descriptors are exhausted (`EMFILE`/`ENFILE`), accepting
//!    pauses briefly instead of spinning;
//! 3. the per-IP count (`max_per_ip` TCP connections per address, upgraded ones included): over
//!    it the socket is closed at once;
//! 4. the TLS handshake if TLS is on, then HTTP/1.1 with a header-read timeout (hyper's, so a
//!    silent connection or a header trickled byte by byte is closed after `header_timeout`).
//!
//! A WebSocket upgrade hands the connection to the gateway: the pending permit is released
//! ([`ConnTicket::upgraded`]) and the per-IP count stays with the WebSocket until it closes.
//!
//! Shutdown: when `shutdown` resolves, `on_shutdown` runs (the node's flag: WebSockets say
//! goodbye, `/health` answers 503), open HTTP connections are told to finish (keep-alive off),
//! and the listener keeps answering (one request per connection) until every connection is gone
//! or `grace` has passed; then whatever is left is dropped. Shutdown always ends within `grace`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::tls::TlsAcceptor;

/// How long accepting pauses after the process ran out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(100);

/// At most one accept-error line per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How often a draining node checks whether its WebSockets are gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The listener's limits.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Time for the TLS handshake and each request header.
    pub header_timeout: Duration,
    /// Connections not yet done with their request or upgrade.
    pub max_pending: usize,
    /// TCP connections per IP address (0: no limit).
    pub max_per_ip: u32,
    /// How long a shutdown may take.
    pub grace: Duration,
}

/// Counts TCP connections per IP address.
#[derive(Debug)]
struct PerIp {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// Counts one more connection from `ip`, or `None` if `ip` is at the limit.
    fn try_add(self: &Arc<Self>, ip: IpAddr) -> Option<IpGuard> {
        if self.max == 0 {
            return Some(IpGuard { per_ip: None, ip });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpGuard { per_ip: Some(self.clone()), ip })
    }
}

/// One counted connection from an IP address; the count drops with it.
#[derive(Debug)]
struct IpGuard {
    per_ip: Option<Arc<PerIp>>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        if let Some(per_ip) = &self.per_ip {
            let mut counts = per_ip.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// What a request knows about its connection (a request extension): the connection's per-IP
/// count and its pending permit. The gateway keeps it for the WebSocket's lifetime.
#[derive(Debug)]
pub(crate) struct ConnTicket {
    _ip: IpGuard,
    pending: Mutex<Option<OwnedSemaphorePermit>>,
}

impl ConnTicket {
    /// The connection finished its upgrade: it no longer counts as pending.
    pub(crate) fn upgraded(&self) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Logs accept failures at most once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
struct AcceptErrors {
    last: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            self.unlogged += 1;
            return;
        }
        let hint = if out_of_descriptors(e) {
            "; out of file descriptors: raise the limit (ulimit -n / LimitNOFILE) or lower --max-connections"
        } else {
            ""
        };
        warn!(error = %e, not_logged = self.unlogged, "accepting a connection failed{hint}");
        self.last = Some(now);
        self.unlogged = 0;
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE and ENFILE (the same numbers on Linux, the BSDs and macOS).
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains (see the module docs).
/// `websockets_done` says whether every upgraded connection has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future + Send,
    on_shutdown: impl FnOnce(),
    websockets_done: impl Fn() -> bool,
) {
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    let per_ip = Arc::new(PerIp { max: limits.max_per_ip, counts: Mutex::new(HashMap::new()) });
    let (draining_tx, draining) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let accept = |permit: OwnedSemaphorePermit,
                  accepted: io::Result<(TcpStream, SocketAddr)>,
                  tasks: &mut JoinSet<()>,
                  errors: &mut AcceptErrors| {
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                errors.failed(&e);
                return out_of_descriptors(&e);
            }
        };
        let Some(ip) = per_ip.try_add(addr.ip()) else {
            debug!(%addr, "connection refused: at the per-IP connection limit");
            return false;
        };
        // Signaling is small frames both ways: without TCP_NODELAY, Nagle holds a second small
        // write (the challenge after the 101, an event after a response) for the delayed ACK.
        let _ = tcp.set_nodelay(true);
        let ticket = Arc::new(ConnTicket { _ip: ip, pending: Mutex::new(Some(permit)) });
        let conn = connection(tcp, app.clone(), ticket, limits.header_timeout, tls.clone(), draining.clone());
        tasks.spawn(conn);
        false
    };

    tokio::pin!(shutdown);
    // Finished connection tasks are reaped while waiting (a finished task's memory stays in the
    // set until joined: one per upgraded client if the loop only reaped between accepts).
    'serving: loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next() => continue,
            permit = pending.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let accepted = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'serving,
                Some(_) = tasks.join_next() => {}
                accepted = listener.accept() => break accepted,
            }
        };
        if accept(permit, accepted, &mut tasks, &mut errors) {
            tokio::time::sleep(FD_BACKOFF).await;
        }
    }

    info!("shutting down: closing client connections");
    on_shutdown();
    let _ = draining_tx.send(true);
    let deadline = Instant::now() + limits.grace;
    let mut poll = tokio::time::interval(DRAIN_POLL);
    loop {
        if tasks.is_empty() && websockets_done() {
            info!("all connections closed");
            return;
        }
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => break,
            Some(_) = tasks.join_next() => {}
            _ = poll.tick() => {}
            accepted = async {
                let permit = pending.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => {
                // Still answering while draining: /health says 503, /signal says SHUTTING_DOWN.
                if let (Ok(permit), accepted) = accepted
                    && accept(permit, accepted, &mut tasks, &mut errors)
                {
                    tokio::time::sleep(FD_BACKOFF).await;
                }
            }
        }
    }
    warn!(
        open = tasks.len(),
        "shutdown grace of {:?} over: dropping the connections still open", limits.grace
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// One HTTP/1.1 connection: the TLS handshake (if any) and the request header within
/// `header_timeout`; on `draining`, keep-alive ends after the current request.
async fn connection(
    tcp: TcpStream,
    app: Router,
    ticket: Arc<ConnTicket>,
    header_timeout: Duration,
    tls: Option<TlsAcceptor>,
    draining: watch::Receiver<bool>,
) {
    match tls {
        None => http(tcp, app, ticket, header_timeout, draining).await,
        Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
            Ok(Ok(stream)) => http(stream, app, ticket, header_timeout, draining).await,
            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
            Err(_) => debug!("TLS handshake timed out"),
        },
    }
}

async fn http<I>(
    io: I,
    app: Router,
    ticket: Arc<ConnTicket>,
    header_timeout: Duration,
    mut draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ticket.clone());
        let mut app = app.clone();
        async move { app.call(request.map(axum::body::Body::new)).await }
    });
    let already_draining = *draining.borrow_and_update();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(!already_draining);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "HTTP connection ended with an error");
            }
            return;
        }
        _ = draining.wait_for(|d| *d), if !already_draining => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
