//! Signal forwarding between nodes: one ordered libp2p stream per direction of a node link.
//!
//! The directory hands a signal for a peer on another node to [`Links::forward`], which never
//! waits: it puts the signal in the bounded queue of that node's link task (started on first
//! use). The link task opens a stream (`/signal-mesh/<network>/signal/1`, dialing through the
//! swarm if needed), writes every queued signal as one batch of length-prefixed frames, numbered
//! in order, and reads the results the other node writes back on the same stream. Each result
//! becomes the sender's `Response` (`Ack`, `PEER_NOT_FOUND`, `PEER_BUSY`); a signal without a
//! result within the forwarding timeout, or on a stream that failed, gets `PEER_UNREACHABLE`.
//! Nothing is re-sent, so nothing is delivered twice; one stream and one writer keep the order.
//!
//! On the receiving node, [`serve_inbound`] reads each stream in order and hands every signal to
//! the directory with a reserved slot for its result, so the directory answers without waiting.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId as NodeKey, Stream, StreamProtocol};
use signal_mesh_proto::{AckMode, ErrorCode, PeerId, RequestId, ResponseBody, ServerMessage, encode_server};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::wire::{ForwardFrame, LinkFrame, ResultFrame};
use crate::directory::{Close, Command, DirectoryHandle};
use crate::metrics::Metrics;
use crate::outbox::{OutboxReplier, PushError};

/// Signals queued for one link before [`Links::forward`] refuses more.
const LINK_QUEUE: usize = 4096;
/// Signals written but not yet answered on one link.
const MAX_IN_FLIGHT: usize = 8192;
/// Bytes of signals written but not yet answered on one link (the last signal written may pass
/// it). Why a byte window: Yamux 0.13 stops reading a connection while a `Pong` it owes cannot
/// be written (rust-yamux #227), so two nodes whose TCP send buffers are both full stop reading
/// each other for good. Bounded this far below what the kernel buffers of a TCP connection hold,
/// signal traffic cannot fill a send buffer, and the link kept flowing at P = 1,000 where it
/// used to stall (BENCHMARKS.md, "The signal link stall").
const MAX_IN_FLIGHT_BYTES: usize = 128 * 1024;
/// What a forwarded signal adds to the window besides its payload (two peer ids, framing).
const FORWARD_OVERHEAD: usize = 80;

/// What `fwd` counts against [`MAX_IN_FLIGHT_BYTES`] while it waits for its result.
fn window_bytes(fwd: &Forward) -> usize {
    fwd.payload.len() + FORWARD_OVERHEAD
}
/// Most signals written in one batch.
const WRITE_BATCH: usize = 256;
/// A link task with nothing to do for this long ends (it is started again on demand).
const LINK_IDLE: Duration = Duration::from_secs(120);
/// Most inbound signal streams served at once (over all nodes).
const MAX_INBOUND_STREAMS: usize = 1024;
/// Results queued for writing on one inbound stream: bounds what one stream has in flight.
const RESULT_QUEUE: usize = 1024;

/// Where the result of a forwarded signal goes: the sender's connection and request id.
#[derive(Debug)]
pub struct ReplyTo {
    /// The sender's outbound queue.
    pub queue: OutboxReplier,
    /// The sender's request.
    pub id: RequestId,
    /// Whether the sender wants the `Ok` of a delivered signal, or failures only.
    pub ack: AckMode,
}

impl ReplyTo {
    /// Queues the `Response` for the sender (`None`: delivered; not answered when the sender
    /// asked for failures only).
    pub fn answer(self, error: Option<ErrorCode>) {
        let body = match error {
            None if !self.ack.acks_success() => return,
            None => ResponseBody::Ok,
            Some(code) => ResponseBody::Error { code, message: forward_error_message(code).into() },
        };
        if let Err(PushError::Full) =
            self.queue.try_send(encode_server(ServerMessage::Response { id: self.id, body }))
        {
            self.queue.close(Close {
                code: ErrorCode::SlowConsumer,
                reason: "outbound queue overflowed: the client does not read fast enough",
            });
        }
    }
}

fn forward_error_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::PeerUnreachable => "the target peer's node could not be reached in time",
        ErrorCode::PeerNotFound => "the target peer is not connected",
        ErrorCode::PeerBusy => "the target peer is not reading fast enough; retry later",
        _ => "the target peer's node could not deliver the signal",
    }
}

/// A signal for a peer on another node.
#[derive(Debug)]
pub struct Forward {
    /// The sender.
    pub from: PeerId,
    /// The target.
    pub to: PeerId,
    /// The opaque payload.
    pub payload: Bytes,
    /// Where the result goes.
    pub reply: ReplyTo,
}

/// The slot for one forwarded signal's result, reserved before the directory sees the signal.
#[derive(Debug)]
pub struct RemoteReply {
    permit: mpsc::OwnedPermit<ResultFrame>,
    seq: u64,
}

impl RemoteReply {
    /// Sends the result back to the forwarding node (`None`: queued for the peer).
    pub fn send(self, error: Option<ErrorCode>) {
        self.permit.send(ResultFrame { seq: self.seq, error });
    }
}

/// How the directory reaches other nodes. A trait so the directory can be tested without
/// libp2p.
pub trait Forwarder: Send + std::fmt::Debug {
    /// Queues `fwd` for `node` without waiting; hands it back when it cannot be queued.
    fn forward(&mut self, node: NodeKey, fwd: Forward) -> Result<(), Forward>;
}

/// The forwarder of a node without a mesh: every remote target is unreachable.
#[derive(Debug, Default)]
pub struct NoMesh;

impl Forwarder for NoMesh {
    fn forward(&mut self, _node: NodeKey, fwd: Forward) -> Result<(), Forward> {
        Err(fwd)
    }
}

/// The link tasks, one per node signals were sent to.
pub struct Links {
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    timeout: Duration,
    links: HashMap<NodeKey, mpsc::Sender<Forward>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("links", &self.links.len()).finish()
    }
}

impl Links {
    /// Links opening streams for `protocol` through `control`; `timeout` bounds a signal's
    /// time from hand-over to result.
    pub fn new(control: libp2p_stream::Control, protocol: StreamProtocol, timeout: Duration) -> Links {
        Links { control, protocol, timeout, links: HashMap::new(), metrics: Metrics::default() }
    }

    /// Records relay latency and forwarding errors in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Links {
        self.metrics = metrics;
        self
    }
}

impl Forwarder for Links {
    fn forward(&mut self, node: NodeKey, fwd: Forward) -> Result<(), Forward> {
        let fwd = match self.links.get(&node) {
            Some(tx) => match tx.try_send(fwd) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(fwd)) => return Err(fwd),
                // The link task ended (idle): start a new one.
                Err(TrySendError::Closed(fwd)) => fwd,
            },
            None => fwd,
        };
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        // A fresh queue has room.
        let fwd = match tx.try_send(fwd) {
            Ok(()) => None,
            Err(e) => Some(e.into_inner()),
        };
        let metrics = self.metrics.clone();
        tokio::spawn(run_link(node, self.control.clone(), self.protocol.clone(), rx, self.timeout, metrics));
        self.links.insert(node, tx);
        match fwd {
            None => Ok(()),
            Some(fwd) => Err(fwd),
        }
    }
}

/// One outbound link: opens a stream when there is something to send, and again after a failure.
async fn run_link(
    node: NodeKey,
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    mut rx: mpsc::Receiver<Forward>,
    timeout: Duration,
    metrics: Metrics,
) {
    loop {
        let first = match tokio::time::timeout(LINK_IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            // Idle, or the directory is gone.
            Ok(None) | Err(_) => return,
        };
        match tokio::time::timeout(timeout, control.open_stream(node, protocol.clone())).await {
            Ok(Ok(stream)) => {
                debug!(%node, "signal link open");
                run_stream(node, stream, first, &mut rx, timeout, &metrics).await;
            }
            Ok(Err(e)) => {
                debug!(%node, error = %e, "cannot open a signal link");
                fail_queued(first, &mut rx);
            }
            Err(_) => {
                debug!(%node, "opening a signal link timed out");
                fail_queued(first, &mut rx);
            }
        }
    }
}

/// Answers `first` and everything queued behind it with `PEER_UNREACHABLE`.
fn fail_queued(first: Forward, rx: &mut mpsc::Receiver<Forward>) {
    first.reply.answer(Some(ErrorCode::PeerUnreachable));
    while let Ok(fwd) = rx.try_recv() {
        fwd.reply.answer(Some(ErrorCode::PeerUnreachable));
    }
}

/// Writes signals on `stream` until it fails; every signal without a result by then, or
/// within the timeout, is answered `PEER_UNREACHABLE`.
async fn run_stream(
    node: NodeKey,
    stream: Stream,
    first: Forward,
    rx: &mut mpsc::Receiver<Forward>,
    timeout: Duration,
    metrics: &Metrics,
) {
    // Answers a signal and records how long it took (its deadline is its send time + timeout).
    let settle = |sent: Sent, error: Option<ErrorCode>| {
        let took = timeout.saturating_sub(sent.deadline.saturating_duration_since(Instant::now()));
        metrics.relayed(took, error);
        sent.reply.answer(error);
    };
    let (read, mut write) = stream.split();
    let (results_tx, mut results) = mpsc::channel::<ResultFrame>(RESULT_QUEUE);
    let reader = tokio::spawn(read_results(node, read, results_tx));
    let mut pending: BTreeMap<u64, Sent> = BTreeMap::new();
    let mut in_flight_bytes = 0usize;
    let mut next_seq = 1u64;
    let mut batch: Vec<Forward> = vec![first];
    let mut out = BytesMut::new();
    let mut rx_open = true;
    loop {
        if !batch.is_empty() {
            let deadline = Instant::now() + timeout;
            for fwd in batch.drain(..) {
                let seq = next_seq;
                next_seq += 1;
                let bytes = window_bytes(&fwd);
                in_flight_bytes += bytes;
                LinkFrame::Forward(ForwardFrame { seq, from: fwd.from, to: fwd.to, payload: fwd.payload })
                    .encode_into(&mut out);
                pending.insert(seq, Sent { reply: fwd.reply, deadline, bytes });
            }
            let written = tokio::time::timeout(timeout, async {
                write.write_all(&out).await?;
                write.flush().await
            })
            .await;
            out.clear();
            if !matches!(written, Ok(Ok(()))) {
                debug!(%node, "signal link write failed");
                break;
            }
        }
        if !rx_open && pending.is_empty() {
            break;
        }
        // Signals are sent in order, so the first pending one has the earliest deadline.
        let next_deadline = pending.values().next().map(|s| s.deadline);
        let room = pending.len() < MAX_IN_FLIGHT && in_flight_bytes < MAX_IN_FLIGHT_BYTES;
        tokio::select! {
            first = rx.recv(), if rx_open && room => match first {
                Some(first) => {
                    // Take what else is queued, as far as the window allows.
                    let mut bytes = in_flight_bytes + window_bytes(&first);
                    batch.push(first);
                    while batch.len() < WRITE_BATCH && bytes < MAX_IN_FLIGHT_BYTES {
                        let Ok(fwd) = rx.try_recv() else { break };
                        bytes += window_bytes(&fwd);
                        batch.push(fwd);
                    }
                }
                None => {
                    // The directory is gone: nothing more will be sent; wait for the results.
                    rx_open = false;
                    if pending.is_empty() {
                        break;
                    }
                }
            },
            result = results.recv() => match result {
                Some(r) => {
                    let mut settle_one = |r: ResultFrame| {
                        if let Some(sent) = pending.remove(&r.seq) {
                            in_flight_bytes -= sent.bytes;
                            settle(sent, r.error);
                        }
                    };
                    settle_one(r);
                    while let Ok(r) = results.try_recv() {
                        settle_one(r);
                    }
                }
                // The stream ended or broke the protocol.
                None => break,
            },
            () = sleep_until(next_deadline) => {
                // Deadlines grow with the sequence number: the late ones are a prefix.
                let now = Instant::now();
                let mut late = 0usize;
                while let Some(entry) = pending.first_entry()
                    && entry.get().deadline <= now
                {
                    let sent = entry.remove();
                    in_flight_bytes -= sent.bytes;
                    settle(sent, Some(ErrorCode::PeerUnreachable));
                    late += 1;
                }
                if late > 0 {
                    warn!(%node, signals = late, "signals not confirmed in time: PEER_UNREACHABLE");
                }
            }
        }
    }
    reader.abort();
    for (_, sent) in std::mem::take(&mut pending) {
        settle(sent, Some(ErrorCode::PeerUnreachable));
    }
    for fwd in batch {
        fwd.reply.answer(Some(ErrorCode::PeerUnreachable));
    }
}

/// A signal written on a link, waiting for its result.
struct Sent {
    reply: ReplyTo,
    /// When it is answered `PEER_UNREACHABLE` without a result.
    deadline: Instant,
    /// What it counts against [`MAX_IN_FLIGHT_BYTES`].
    bytes: usize,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Reads result frames from an outbound stream until it ends or breaks the protocol.
async fn read_results(
    node: NodeKey,
    mut read: futures::io::ReadHalf<Stream>,
    results: mpsc::Sender<ResultFrame>,
) {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match LinkFrame::decode_from(&mut buf) {
                Ok(Some(LinkFrame::Result(r))) => {
                    if results.send(r).await.is_err() {
                        return;
                    }
                }
                Ok(Some(LinkFrame::Forward(_))) => {
                    warn!(%node, "protocol violation: a signal on our own outbound link");
                    return;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%node, error = %e, "malformed frame on a signal link");
                    return;
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves the signal streams other nodes open to this one.
pub async fn serve_inbound(mut incoming: libp2p_stream::IncomingStreams, directory: DirectoryHandle) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_INBOUND_STREAMS));
    while let Some((node, stream)) = incoming.next().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%node, "too many inbound signal links: refused");
            continue;
        };
        let directory = directory.clone();
        tokio::spawn(async move {
            serve_stream(node, stream, directory).await;
            drop(slot);
        });
    }
}

/// Reads forwarded signals in order and hands them to the directory; writes the results back.
async fn serve_stream(node: NodeKey, stream: Stream, directory: DirectoryHandle) {
    let (mut read, mut write) = stream.split();
    let (results_tx, mut results) = mpsc::channel::<ResultFrame>(RESULT_QUEUE);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while results.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            for r in batch.drain(..) {
                LinkFrame::Result(r).encode_into(&mut out);
            }
            if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
                return;
            }
            out.clear();
        }
        let _ = write.close().await;
    });
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        loop {
            match LinkFrame::decode_from(&mut buf) {
                Ok(Some(LinkFrame::Forward(f))) => {
                    let Ok(permit) = results_tx.clone().reserve_owned().await else { break 'read };
                    let reply = RemoteReply { permit, seq: f.seq };
                    let command = Command::RemoteSignal { from: f.from, to: f.to, payload: f.payload, reply };
                    if directory.send(command).await.is_err() {
                        break 'read;
                    }
                }
                Ok(Some(LinkFrame::Result(_))) => {
                    warn!(%node, "protocol violation: a result on an inbound signal link");
                    break 'read;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%node, error = %e, "malformed frame on a signal link: closed");
                    break 'read;
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    drop(results_tx);
    let _ = writer.await;
}
