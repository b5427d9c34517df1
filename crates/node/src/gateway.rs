//! The edge WebSocket endpoint, `/signal`: one task per connection that moves bytes between the
//! socket, the connection's [`Session`] and the directory.
//!
//! axum routes the request; the upgrade headers are checked and answered here (101 with
//! `Sec-WebSocket-Accept`), then the connection runs the node's own WebSocket framing ([`crate::ws`])
//! over hyper's upgraded stream: a read buffer that exists only while bytes are pending (idle
//! clients hold none), up to [`READ_CHUNK`] bytes per read, frames split off without copying,
//! and every queued frame written in one `write` per wake-up.
//!
//! The connection task has one wait ([`serve`]'s `select!`, mini-redis style): node shutdown, the
//! directory closing this connection (replaced, slow consumer) and the session's deadline
//! (authentication / idle timeout) are always in it; writing, taking frames from the bounded
//! outbound queue, handing the directory a command and reading the client's next frame are in it
//! when the connection's state allows. Everything protocol-related is decided by the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use signal_mesh_proto::{ErrorCode, NodeId, PeerId, ServerMessage, encode_server};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use crate::directory::{Command, ConnId, DirectoryHandle, Outlet};
use crate::listener::ConnTicket;
use crate::outbox::{Bounds, OutboxReceiver, Received, outbox_with};
use crate::session::{Action, Session, SessionConfig};
/// Cuts a string at a character boundary (the mesh's status strings use it too).
pub(crate) use crate::ws::truncate;
use crate::ws::{self, Decoder, Event, FrameError};
use tokio::sync::mpsc::error::TrySendError;

/// How long the node tries to deliver its `Goodbye` and close frame, and waits for the client's
/// close reply, before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most queued frames written to the socket in one batch.
const MAX_BATCH: usize = 64;

/// Largest single read: a stack buffer, copied into the connection's read buffer.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub directory: DirectoryHandle,
    pub node_id: NodeId,
    pub session: SessionConfig,
    /// Bounds of each connection's outbound queue.
    pub queue: Bounds,
    pub connections: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub next_conn: AtomicU64,
    /// Connections refused with `OVERLOADED` so far.
    pub refused: AtomicU64,
    /// Most bytes read in one call (≤ [`READ_CHUNK`]).
    pub read_chunk: usize,
    /// A batch of outgoing frames stops growing at this many bytes.
    pub write_batch_bytes: usize,
    /// Prometheus counters.
    pub metrics: crate::metrics::Metrics,
}

/// `GET /signal`: checks the upgrade request, answers `101 Switching Protocols` and runs the
/// connection on the upgraded stream in its own task.
pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let accept = match ws::check_upgrade(request.headers()) {
        Ok(accept) => accept,
        Err(e) => {
            let status = match e {
                ws::HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut response = (status, e.to_string()).into_response();
            if status == StatusCode::UPGRADE_REQUIRED {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, header::HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "this connection cannot be upgraded").into_response();
    };
    // The listener's ticket: the connection's per-IP count stays with the WebSocket, and it no
    // longer counts as pending once upgraded.
    let ticket = request.extensions_mut().remove::<Arc<ConnTicket>>();
    let permit = shared.connections.clone().try_acquire_owned().ok();
    // This task owns the connection's state; `connection` borrows it. An `async fn` that takes
    // its arguments by value keeps them twice in its future (the arguments and the locals they
    // are moved to), and this future is most of an idle client's memory (BENCHMARKS.md, "Idle
    // memory"). The ticket and the permit are released when the task ends.
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        if let Some(ticket) = &ticket {
            ticket.upgraded();
        }
        let _open = shared.metrics.edge_open();
        let mut sock = Socket::new(TokioIo::new(upgraded), &shared);
        connection(&mut sock, &shared, permit.is_some()).await;
        drop((permit, ticket));
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// How reading the next event failed.
enum ReadEnd {
    /// End of stream or a socket error.
    Gone,
    /// Input that ends the connection.
    Frame(FrameError),
}

/// The upgraded stream with the node's framing: a read buffer holding only pending bytes (no
/// allocation while idle) and an output buffer holding only unwritten bytes (released once
/// written), so writes interrupted by a `select!` resume where they stopped.
struct Socket {
    io: TokioIo<Upgraded>,
    read: BytesMut,
    decoder: Decoder,
    out: Vec<u8>,
    written: usize,
    read_chunk: u16,
}

impl Socket {
    fn new(io: TokioIo<Upgraded>, shared: &Shared) -> Socket {
        let max = shared.session.limits.max_frame_bytes;
        // Messages a little over the limit are skipped and answered with TOO_LARGE; far larger
        // ones end the connection.
        let hard = max.saturating_mul(2).max(64 * 1024);
        let read_chunk = shared.read_chunk.clamp(256, READ_CHUNK) as u16;
        Socket {
            io,
            read: BytesMut::new(),
            decoder: Decoder::new(ws::Role::Server, max, hard),
            out: Vec::new(),
            written: 0,
            read_chunk,
        }
    }

    /// The next event from the client. Cancel safe: bytes read are kept in the read buffer.
    async fn next(&mut self) -> Result<Event, ReadEnd> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Event, ReadEnd>> {
        loop {
            match self.decoder.decode(&mut self.read) {
                Ok(Some(event)) => return Poll::Ready(Ok(event)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(ReadEnd::Frame(e))),
            }
            if self.read.is_empty() {
                // Release the (shared) buffer: an idle connection holds no read memory.
                self.read = BytesMut::new();
            }
            let chunk = usize::from(self.read_chunk);
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut stack[..chunk]);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Err(ReadEnd::Gone)),
                Poll::Ready(Ok(())) => self.read.extend_from_slice(buf.filled()),
                Poll::Ready(Err(_)) => return Poll::Ready(Err(ReadEnd::Gone)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Bytes queued for writing and not yet written.
    fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Queues a binary frame.
    fn push_binary(&mut self, payload: &[u8]) {
        ws::encode_frame(&mut self.out, ws::OP_BINARY, payload);
    }

    /// Writes everything queued. Cancel safe: progress is kept.
    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }

    fn poll_write_out(&mut self, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out = Vec::new();
        self.written = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Moves bytes: writes what is pending (if anything) and, if `read`, reads the next event;
    /// returns whichever finishes first. Cancel safe.
    async fn drive(&mut self, read: bool) -> Io {
        poll_fn(|cx| {
            if self.pending() > 0
                && let Poll::Ready(r) = self.poll_write_out(cx)
            {
                return Poll::Ready(Io::Written(r));
            }
            if read && let Poll::Ready(r) = self.poll_next(cx) {
                return Poll::Ready(Io::Read(r));
            }
            Poll::Pending
        })
        .await
    }
}

/// What [`Socket::drive`] did.
enum Io {
    /// Everything pending was written (or writing failed).
    Written(io::Result<()>),
    /// The next event from the client.
    Read(Result<Event, ReadEnd>),
}

/// Why a connection loop ended.
enum End {
    /// The client closed or the socket failed: nothing more to send.
    Gone(&'static str),
    /// The node closes: `Goodbye` and close frame.
    Close(ErrorCode, String),
}

/// The peer's link to the directory once authenticated.
struct Link {
    peer: PeerId,
    queue: OutboxReceiver,
}

/// Serves one upgraded connection; `admitted`: it holds one of the `--max-connections` permits.
async fn connection(sock: &mut Socket, shared: &Shared, admitted: bool) {
    if !admitted {
        let refused = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at 1, 2, 4, 8, ... refusals: visible, but no flood under overload.
        if refused.is_power_of_two() {
            warn!(refused, "connection refused: at the connection limit (OVERLOADED)");
        }
        shared.metrics.edge_closed(Some(ErrorCode::Overloaded));
        Box::pin(goodbye(sock, ErrorCode::Overloaded, "the node is at its connection limit")).await;
        return;
    }
    let conn: ConnId = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut shutdown = shared.shutdown.clone();
    if *shutdown.borrow_and_update() {
        shared.metrics.edge_closed(Some(ErrorCode::ShuttingDown));
        Box::pin(goodbye(sock, ErrorCode::ShuttingDown, "the node is shutting down")).await;
        return;
    }
    let mut nonce = [0u8; signal_mesh_proto::auth::NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        shared.metrics.edge_closed(Some(ErrorCode::Internal));
        Box::pin(goodbye(sock, ErrorCode::Internal, "no randomness for the challenge")).await;
        return;
    }
    debug!(conn, "connection accepted");
    let mut session = Session::new(shared.session, shared.node_id.clone(), nonce, Instant::now().into_std());
    let mut link: Option<Link> = None;

    sock.push_binary(&encode_server(session.challenge()));
    let end = if sock.flush().await.is_err() {
        End::Gone("socket error")
    } else {
        serve(sock, shared, conn, &mut session, &mut link, &mut shutdown).await
    };

    if let Some(link) = &link {
        let command = Command::Unregister { peer: link.peer, conn };
        if let Err(TrySendError::Full(command)) = shared.directory.try_send(command) {
            let _ = Box::pin(shared.directory.send(command)).await;
        }
    }
    let peer = link.as_ref().map(|l| l.peer);
    match end {
        End::Gone(why) => {
            shared.metrics.edge_closed(None);
            debug!(conn, ?peer, reason = why, "connection closed by client");
            if !sock.out.is_empty() {
                // The reply to the client's close frame.
                let _ = Box::pin(timeout(CLOSE_TIMEOUT, sock.flush())).await;
            }
        }
        End::Close(code, reason) => {
            shared.metrics.edge_closed(Some(code));
            // Routine closes stay at debug so that a busy node does not flood its log; closes
            // that point at a misbehaving client or a problem are worth an operator's attention.
            if matches!(code, ErrorCode::IdleTimeout | ErrorCode::SessionReplaced | ErrorCode::ShuttingDown) {
                debug!(conn, ?peer, %code, %reason, "connection closed by node");
            } else {
                info!(conn, ?peer, %code, %reason, "connection closed by node");
            }
            Box::pin(goodbye(sock, code, &reason)).await;
        }
    }
}

/// Bytes waiting to be written at which the connection stops reading from the client: replies
/// (pongs, errors) to a client that sends but does not read cannot pile up, and a client that
/// stops reading stops being read, so only its own frames count for its idle deadline.
const MAX_PENDING_OUT: usize = 64 * 1024;

/// The connection's one wait: every turn of this loop decides, in one `select!`, what the
/// connection waits for, from its state. Always: node shutdown, the session's deadline
/// (authentication / idle timeout) and the directory's close signal. Then, depending on the
/// state: writing what is pending (while bytes are pending), taking the next batch from the
/// outbound queue (only when nothing is pending: the queue is the bounded buffer, not the
/// socket's), handing the directory a command its full inbox did not take (instead of reading),
/// and reading the next frame (while fewer than [`MAX_PENDING_OUT`] bytes are pending and no
/// command waits).
async fn serve(
    sock: &mut Socket,
    shared: &Shared,
    conn: ConnId,
    session: &mut Session,
    link: &mut Option<Link>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let sleep = tokio::time::sleep_until(session.deadline().into());
    tokio::pin!(sleep);
    // A command for the directory that waits for room in its inbox. Boxed: this future is part
    // of every idle connection's task, and the rare full inbox should not make all of them
    // larger (the reservation future and the command are ~270 B inline).
    let mut handing: Option<Handing> = None;
    loop {
        let writing = sock.pending() > 0;
        let reading = handing.is_none() && sock.pending() < MAX_PENDING_OUT;
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                return End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into());
            }
            () = &mut sleep => {
                let now = Instant::now();
                if let Action::Close { code, reason, .. } = session.handle_timeout(now.into_std()) {
                    return End::Close(code, reason);
                }
                sleep.as_mut().reset(session.deadline().into());
            }
            delivered = hand_over(&mut handing), if handing.is_some() => {
                handing = None;
                if !delivered {
                    return End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into());
                }
            }
            // The queue's close signal always; its frames only when nothing is pending (the
            // queue is the bounded buffer, not the socket's).
            received = from_queue(link, !writing) => {
                let frame = match received {
                    Received::Frame(frame) => frame,
                    Received::Close(close) => return End::Close(close.code, close.reason.into()),
                    Received::Gone => {
                        return End::Close(ErrorCode::Internal, "the directory dropped this connection".into());
                    }
                };
                sock.push_binary(&frame);
                drop(frame);
                if let Some(queue) = link.as_ref().map(|l| &l.queue) {
                    for _ in 1..MAX_BATCH {
                        if sock.pending() >= shared.write_batch_bytes {
                            break;
                        }
                        match queue.try_recv() {
                            Some(frame) => sock.push_binary(&frame),
                            None => break,
                        }
                    }
                }
            }
            io = sock.drive(reading), if writing || reading => {
                let mut event = match io {
                    Io::Written(Ok(())) => continue,
                    Io::Written(Err(_)) => return End::Gone("socket error while writing"),
                    Io::Read(event) => event,
                };
                // Every complete frame already read is handled here, without going back to the
                // `select!` per frame (one wait per read, not per frame), until one needs waiting
                // for (the directory's inbox is full) or enough output is pending.
                loop {
                    let now = Instant::now().into_std();
                    let action = match event {
                        Err(ReadEnd::Gone) => return End::Gone("socket closed"),
                        Err(ReadEnd::Frame(e)) => return read_error(e),
                        Ok(Event::Binary(frame)) => session.handle_frame(frame, now),
                        Ok(Event::TooLarge(len)) => session.handle_oversize(len, now),
                        Ok(Event::Text) => session.handle_text(now),
                        Ok(Event::Ping(payload)) => {
                            session.touch(now);
                            ws::encode_frame(&mut sock.out, ws::OP_PONG, &payload);
                            Action::None
                        }
                        Ok(Event::Pong) => {
                            session.touch(now);
                            Action::None
                        }
                        Ok(Event::Close(code)) => {
                            // Echo the close (RFC 6455 §5.5.1); written before the socket is dropped.
                            match code {
                                Some(code) => ws::encode_close(&mut sock.out, code, ""),
                                None => ws::encode_frame(&mut sock.out, ws::OP_CLOSE, &[]),
                            }
                            return End::Gone("client sent close");
                        }
                        Ok(Event::BadClose(reply)) => {
                            // RFC 6455 §7.4: a code nobody may send is not echoed.
                            ws::encode_close(&mut sock.out, reply, "invalid close frame");
                            return End::Gone("client sent an invalid close frame");
                        }
                    };
                    // Deciding is synchronous; whatever must be awaited is awaited by this loop.
                    match act(shared, conn, session, link, action) {
                        Step::None => {}
                        Step::Write(frame) => sock.push_binary(&frame),
                        Step::Directory(command) => {
                            let directory = shared.directory.clone();
                            handing = Some(Box::pin(async move { directory.send(command).await.is_ok() }));
                            break;
                        }
                        Step::End(last, end) => {
                            if let Some(frame) = last {
                                sock.push_binary(&frame);
                            }
                            return end;
                        }
                    }
                    if sock.pending() >= MAX_PENDING_OUT {
                        break;
                    }
                    event = match sock.decoder.decode(&mut sock.read) {
                        Ok(Some(next)) => Ok(next),
                        Ok(None) => break,
                        Err(e) => Err(ReadEnd::Frame(e)),
                    };
                }
            }
        }
    }
}

/// What the connection task must await after an action.
enum Step {
    None,
    /// Write this frame.
    Write(Bytes),
    /// The directory's inbox is full: wait to hand it this command.
    Directory(Command),
    /// Write this last frame (if any), then close.
    End(Option<Bytes>, End),
}

/// Carries out the synchronous part of one session action.
fn act(shared: &Shared, conn: ConnId, session: &Session, link: &mut Option<Link>, action: Action) -> Step {
    let command = match action {
        Action::None => return Step::None,
        Action::Send(msg) => {
            shared.metrics.response(&msg);
            return Step::Write(encode_server(msg));
        }
        Action::Close { reply, code, reason } => {
            return Step::End(reply.map(encode_server), End::Close(code, reason));
        }
        Action::Authenticated(peer) => {
            let (queue_tx, queue_rx) = outbox_with(shared.queue);
            let ServerMessage::Welcome(welcome) = session.welcome(peer) else {
                return Step::End(None, End::Close(ErrorCode::Internal, "no welcome".into()));
            };
            *link = Some(Link { peer, queue: queue_rx });
            debug!(conn, ?peer, "peer authenticated");
            let since_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Command::Register {
                peer,
                outlet: Outlet { conn, queue: queue_tx },
                welcome: Box::new(welcome),
                since_ms,
            }
        }
        Action::Request { id, op } => {
            let Some(peer) = link.as_ref().map(|l| l.peer) else { return Step::None };
            Command::Request { peer, conn, id, op }
        }
    };
    match shared.directory.try_send(command) {
        Ok(()) => Step::None,
        Err(TrySendError::Full(command)) => Step::Directory(command),
        Err(TrySendError::Closed(_)) => {
            Step::End(None, End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into()))
        }
    }
}

fn read_error(e: FrameError) -> End {
    match e {
        FrameError::TooLarge(_) => {
            End::Close(ErrorCode::TooLarge, format!("frame far over the size limit: {e}"))
        }
        _ => End::Close(ErrorCode::BadRequest, e.to_string()),
    }
}

/// Handing a command to the directory once its inbox has room; `false` if it stopped.
type Handing = Pin<Box<dyn Future<Output = bool> + Send>>;

async fn hand_over(handing: &mut Option<Handing>) -> bool {
    match handing {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The next frame (if `frames`) or the close signal from the outbound queue (the close signal
/// goes first); nothing before authentication.
async fn from_queue(link: &Option<Link>, frames: bool) -> Received {
    match link {
        Some(l) if frames => l.queue.recv().await,
        Some(l) => Received::Close(l.queue.closed().await),
        None => std::future::pending().await,
    }
}

/// Sends `Goodbye` and a close frame with `code.close_code()` (after anything still queued),
/// then waits (briefly) for the client's close reply so the goodbye is not lost to a reset.
async fn goodbye(sock: &mut Socket, code: ErrorCode, reason: &str) {
    sock.push_binary(&encode_server(ServerMessage::Goodbye { code, reason: reason.to_owned() }));
    ws::encode_close(&mut sock.out, code.close_code(), reason);
    let _ = timeout(CLOSE_TIMEOUT, async {
        sock.flush().await?;
        loop {
            match sock.next().await {
                Ok(Event::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}
