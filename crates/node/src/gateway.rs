//! The edge WebSocket endpoint, `/signal`: one task per connection that moves bytes between the
//! socket, the connection's [`Session`] and the directory.
//!
//! The connection task selects over: node shutdown, the directory closing this connection
//! (replaced, slow consumer), the session's deadline (authentication / idle timeout), the
//! bounded outbound queue of pre-encoded frames (fed to the socket as a batch, then flushed once)
//! and the next frame from the client. Everything protocol-related is decided by the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::SinkExt;
use signal_mesh_proto::{ErrorCode, NodeId, PeerId, ServerMessage, encode_server};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use crate::directory::{Command, ConnId, DirectoryHandle, Outlet};
use crate::outbox::{OutboxReceiver, Received, outbox};
use crate::session::{Action, Session, SessionConfig};
use tokio::sync::mpsc::error::TrySendError;

/// How long the node tries to deliver its `Goodbye` and close frame, and waits for the client's
/// close reply, before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most queued frames written to the socket before one flush.
const MAX_BATCH: usize = 64;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub directory: DirectoryHandle,
    pub node_id: NodeId,
    pub session: SessionConfig,
    pub queue_frames: usize,
    pub connections: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub next_conn: AtomicU64,
    /// Connections refused with `OVERLOADED` so far.
    pub refused: AtomicU64,
    pub read_buffer: usize,
    pub write_buffer: usize,
}

/// `GET /signal`: upgrades to a WebSocket with buffers sized for many small connections.
pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let max_frame = shared.session.limits.max_frame_bytes as usize;
    // Frames a little over the limit are still read so they can be answered with TOO_LARGE;
    // far larger ones end the connection inside the WebSocket layer.
    let max_message = max_frame.saturating_mul(2).max(64 * 1024);
    let ws = ws
        .read_buffer_size(shared.read_buffer)
        .write_buffer_size(shared.write_buffer)
        .max_write_buffer_size(shared.write_buffer.saturating_add(max_message).saturating_mul(2))
        .max_message_size(max_message)
        .max_frame_size(max_message);
    let permit = shared.connections.clone().try_acquire_owned().ok();
    // The closure returns the connection's future itself (no wrapping async block), so the
    // socket is stored once in the task.
    ws.on_upgrade(move |socket| connection(socket, shared, permit))
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

async fn connection(mut ws: WebSocket, shared: Arc<Shared>, permit: Option<OwnedSemaphorePermit>) {
    if permit.is_none() {
        let refused = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at 1, 2, 4, 8, ... refusals: visible, but no flood under overload.
        if refused.is_power_of_two() {
            warn!(refused, "connection refused: at the connection limit (OVERLOADED)");
        }
        Box::pin(goodbye(&mut ws, ErrorCode::Overloaded, "the node is at its connection limit")).await;
        return;
    }
    let conn: ConnId = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut shutdown = shared.shutdown.clone();
    if *shutdown.borrow_and_update() {
        Box::pin(goodbye(&mut ws, ErrorCode::ShuttingDown, "the node is shutting down")).await;
        return;
    }
    let mut nonce = [0u8; signal_mesh_proto::auth::NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        Box::pin(goodbye(&mut ws, ErrorCode::Internal, "no randomness for the challenge")).await;
        return;
    }
    debug!(conn, "connection accepted");
    let mut session = Session::new(shared.session, shared.node_id.clone(), nonce, Instant::now().into_std());
    let mut link: Option<Link> = None;

    let end = if ws.send(Message::Binary(encode_server(session.challenge()))).await.is_err() {
        End::Gone("socket error")
    } else {
        serve(&mut ws, &shared, conn, &mut session, &mut link, &mut shutdown).await
    };

    if let Some(link) = &link {
        let command = Command::Unregister { peer: link.peer, conn };
        if let Err(TrySendError::Full(command)) = shared.directory.try_send(command) {
            let _ = Box::pin(shared.directory.send(command)).await;
        }
    }
    let peer = link.as_ref().map(|l| l.peer);
    match end {
        End::Gone(why) => debug!(conn, ?peer, reason = why, "connection closed by client"),
        End::Close(code, reason) => {
            // Routine closes stay at debug so that a busy node does not flood its log; closes
            // that point at a misbehaving client or a problem are worth an operator's attention.
            if matches!(code, ErrorCode::IdleTimeout | ErrorCode::SessionReplaced | ErrorCode::ShuttingDown) {
                debug!(conn, ?peer, %code, %reason, "connection closed by node");
            } else {
                info!(conn, ?peer, %code, %reason, "connection closed by node");
            }
            Box::pin(goodbye(&mut ws, code, &reason)).await;
        }
    }
    drop(permit);
}

async fn serve(
    ws: &mut WebSocket,
    shared: &Shared,
    conn: ConnId,
    session: &mut Session,
    link: &mut Option<Link>,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let sleep = tokio::time::sleep_until(session.deadline().into());
    tokio::pin!(sleep);
    loop {
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
            received = recv_queue(link) => {
                let frame = match received {
                    Received::Frame(frame) => frame,
                    Received::Close(close) => return End::Close(close.code, close.reason.into()),
                    Received::Gone => {
                        return End::Close(ErrorCode::Internal, "the directory dropped this connection".into());
                    }
                };
                let Some(queue) = link.as_ref().map(|l| &l.queue) else { continue };
                // A client that stops reading blocks the write; the directory's close (slow
                // consumer, replaced) still gets through.
                let written = tokio::select! {
                    biased;
                    close = queue.closed() => return End::Close(close.code, close.reason.into()),
                    r = write_batch(ws, frame, queue) => r,
                };
                if written.is_err() {
                    return End::Gone("socket error while writing");
                }
            }
            msg = ws.recv() => {
                let now = Instant::now().into_std();
                let action = match msg {
                    None => return End::Gone("socket closed"),
                    Some(Err(e)) => return read_error(e),
                    Some(Ok(Message::Binary(frame))) => session.handle_frame(frame, now),
                    Some(Ok(Message::Text(_))) => session.handle_text(now),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        session.touch(now);
                        Action::None
                    }
                    Some(Ok(Message::Close(_))) => return End::Gone("client sent close"),
                };
                // Deciding is synchronous; only the one write (or a wait for a full directory
                // inbox, boxed) is awaited, which keeps this future small.
                match act(shared, conn, session, link, action) {
                    Step::None => {}
                    Step::Write(frame) => {
                        // A client that sends but never reads must not pin this task: shutdown,
                        // the directory's close and the idle deadline (no reads happen while the
                        // write waits) still end it.
                        let send = ws.send(Message::Binary(frame));
                        tokio::pin!(send);
                        let written = loop {
                            tokio::select! {
                                biased;
                                _ = shutdown.changed() => {
                                    return End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into());
                                }
                                close = closed_of(link) => return End::Close(close.code, close.reason.into()),
                                () = &mut sleep => {
                                    let now = Instant::now().into_std();
                                    if let Action::Close { code, reason, .. } = session.handle_timeout(now) {
                                        return End::Close(code, reason);
                                    }
                                    sleep.as_mut().reset(session.deadline().into());
                                }
                                r = &mut send => break r,
                            }
                        };
                        if written.is_err() {
                            return End::Gone("socket error while writing");
                        }
                    }
                    Step::Directory(command) => {
                        if Box::pin(shared.directory.send(command)).await.is_err() {
                            return End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into());
                        }
                    }
                    Step::End(last, end) => {
                        if let Some(frame) = last {
                            let _ = ws.feed(Message::Binary(frame)).await;
                        }
                        return end;
                    }
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
        Action::Send(msg) => return Step::Write(encode_server(msg)),
        Action::Close { reply, code, reason } => {
            return Step::End(reply.map(encode_server), End::Close(code, reason));
        }
        Action::Authenticated(peer) => {
            let (queue_tx, queue_rx) = outbox(shared.queue_frames.max(2));
            let welcome = encode_server(session.welcome(peer));
            *link = Some(Link { peer, queue: queue_rx });
            debug!(conn, ?peer, "peer authenticated");
            Command::Register { peer, outlet: Outlet { conn, queue: queue_tx }, welcome }
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

fn read_error(e: axum::Error) -> End {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => {
            End::Close(ErrorCode::TooLarge, format!("frame far over the size limit: {e}"))
        }
        Ok(e) if matches!(*e, tungstenite::Error::Protocol(_)) => {
            End::Close(ErrorCode::BadRequest, format!("WebSocket protocol error: {e}"))
        }
        _ => End::Gone("socket error while reading"),
    }
}

async fn closed_of(link: &Option<Link>) -> crate::directory::Close {
    match link {
        Some(l) => l.queue.closed().await,
        None => std::future::pending().await,
    }
}

async fn recv_queue(link: &Option<Link>) -> Received {
    match link {
        Some(l) => l.queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Feeds `first` and whatever else is queued (up to [`MAX_BATCH`]), then flushes once.
async fn write_batch(ws: &mut WebSocket, first: Bytes, queue: &OutboxReceiver) -> Result<(), axum::Error> {
    ws.feed(Message::Binary(first)).await?;
    for _ in 1..MAX_BATCH {
        match queue.try_recv() {
            Some(frame) => ws.feed(Message::Binary(frame)).await?,
            None => break,
        }
    }
    ws.flush().await
}

/// Sends `Goodbye` and a close frame with `code.close_code()`, then waits (briefly) for the
/// client's close reply so the goodbye is not lost to a reset.
async fn goodbye(ws: &mut WebSocket, code: ErrorCode, reason: &str) {
    let frame = encode_server(ServerMessage::Goodbye { code, reason: reason.to_owned() });
    let close = CloseFrame { code: code.close_code(), reason: truncate(reason, 123).into() };
    let _ = timeout(CLOSE_TIMEOUT, async {
        ws.feed(Message::Binary(frame)).await?;
        ws.send(Message::Close(Some(close))).await?;
        while let Some(msg) = ws.recv().await {
            if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    })
    .await;
}

/// At most `max` bytes of `s`, cut at a character boundary (close reasons are limited to 123).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("abc", 123), "abc");
        let s = "é".repeat(100);
        let t = truncate(&s, 123);
        assert_eq!(t.len(), 122);
    }
}
