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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use crate::directory::{Close, Command, ConnId, DirectoryHandle, Outlet};
use crate::session::{Action, Session, SessionConfig};

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
    ws.on_upgrade(move |socket| async move {
        match permit {
            Some(permit) => connection(socket, shared, permit).await,
            None => {
                let refused = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged at 1, 2, 4, 8, ... refusals: visible, but no flood under overload.
                if refused.is_power_of_two() {
                    warn!(refused, "connection refused: at the connection limit (OVERLOADED)");
                }
                let mut socket = socket;
                goodbye(&mut socket, ErrorCode::Overloaded, "the node is at its connection limit").await;
            }
        }
    })
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
    queue: mpsc::Receiver<Bytes>,
}

async fn connection(mut ws: WebSocket, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let conn: ConnId = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut shutdown = shared.shutdown.clone();
    if *shutdown.borrow_and_update() {
        goodbye(&mut ws, ErrorCode::ShuttingDown, "the node is shutting down").await;
        return;
    }
    let mut nonce = [0u8; signal_mesh_proto::auth::NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        goodbye(&mut ws, ErrorCode::Internal, "no randomness for the challenge").await;
        return;
    }
    debug!(conn, "connection accepted");
    let mut session = Session::new(shared.session, shared.node_id.clone(), nonce, Instant::now().into_std());
    let mut link: Option<Link> = None;
    let mut closed: Option<oneshot::Receiver<Close>> = None;

    let end = if ws.send(Message::Binary(encode_server(session.challenge()))).await.is_err() {
        End::Gone("socket error")
    } else {
        serve(&mut ws, &shared, conn, &mut session, &mut link, &mut closed, &mut shutdown).await
    };

    if let Some(link) = &link {
        let _ = shared.directory.send(Command::Unregister { peer: link.peer, conn }).await;
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
            goodbye(&mut ws, code, &reason).await;
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
    closed: &mut Option<oneshot::Receiver<Close>>,
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
            close = recv_close(closed) => {
                return End::Close(close.code, close.reason.into());
            }
            () = &mut sleep => {
                let now = Instant::now();
                if let Action::Close { code, reason, .. } = session.handle_timeout(now.into_std()) {
                    return End::Close(code, reason);
                }
                sleep.as_mut().reset(session.deadline().into());
            }
            frame = recv_queue(link) => {
                let Some(frame) = frame else {
                    return End::Close(ErrorCode::Internal, "the directory dropped this connection".into());
                };
                let written = tokio::select! {
                    biased;
                    close = recv_close(closed) => return End::Close(close.code, close.reason.into()),
                    r = write_batch(ws, frame, link) => r,
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
                if let Some(end) = act(ws, shared, conn, session, link, closed, action).await {
                    return end;
                }
            }
        }
    }
}

/// Carries out one session action; `Some` ends the connection.
async fn act(
    ws: &mut WebSocket,
    shared: &Shared,
    conn: ConnId,
    session: &Session,
    link: &mut Option<Link>,
    closed: &mut Option<oneshot::Receiver<Close>>,
    action: Action,
) -> Option<End> {
    match action {
        Action::None => None,
        Action::Send(msg) => {
            if ws.send(Message::Binary(encode_server(msg))).await.is_err() {
                return Some(End::Gone("socket error while writing"));
            }
            None
        }
        Action::Authenticated(peer) => {
            let (queue_tx, queue_rx) = mpsc::channel(shared.queue_frames.max(2));
            let (close_tx, close_rx) = oneshot::channel();
            let welcome = encode_server(session.welcome(peer));
            let outlet = Outlet { conn, queue: queue_tx, close: close_tx };
            *link = Some(Link { peer, queue: queue_rx });
            *closed = Some(close_rx);
            if shared.directory.send(Command::Register { peer, outlet, welcome }).await.is_err() {
                return Some(End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into()));
            }
            debug!(conn, ?peer, "peer authenticated");
            None
        }
        Action::Request { id, op } => {
            let peer = link.as_ref().map(|l| l.peer)?;
            if shared.directory.send(Command::Request { peer, conn, id, op }).await.is_err() {
                return Some(End::Close(ErrorCode::ShuttingDown, "the node is shutting down".into()));
            }
            None
        }
        Action::Close { reply, code, reason } => {
            if let Some(reply) = reply {
                let _ = ws.feed(Message::Binary(encode_server(reply))).await;
            }
            Some(End::Close(code, reason))
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

async fn recv_close(closed: &mut Option<oneshot::Receiver<Close>>) -> Close {
    match closed {
        Some(rx) => match rx.await {
            Ok(close) => close,
            // The directory dropped the sender without a reason: it is gone.
            Err(_) => {
                *closed = None;
                Close { code: ErrorCode::ShuttingDown, reason: "the node is shutting down" }
            }
        },
        None => std::future::pending().await,
    }
}

async fn recv_queue(link: &mut Option<Link>) -> Option<Bytes> {
    match link {
        Some(l) => l.queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Feeds `first` and whatever else is queued (up to [`MAX_BATCH`]), then flushes once.
async fn write_batch(ws: &mut WebSocket, first: Bytes, link: &mut Option<Link>) -> Result<(), axum::Error> {
    ws.feed(Message::Binary(first)).await?;
    if let Some(l) = link {
        for _ in 1..MAX_BATCH {
            match l.queue.try_recv() {
                Ok(frame) => ws.feed(Message::Binary(frame)).await?,
                Err(_) => break,
            }
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
