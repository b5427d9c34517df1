//! A connection's outbound queue: a bounded queue of encoded frames plus a close signal, written
//! by the directory task and read by the connection task.
//!
//! Bounded in frames and in bytes ([`Bounds`]). Two kinds of frames go in:
//! - the connection's own traffic (replies to its requests, presence events, the welcome):
//!   [`OutboxSender::try_send`] fails only when the queue is full, and a full queue means the
//!   client cannot keep up with its own traffic (`SLOW_CONSUMER`);
//! - signals from other peers: [`OutboxSender::try_send_signal`] refuses one with
//!   [`PushError::Busy`] once the queue is past its watermark (half of either bound) or the
//!   sending peer already has its share (an eighth of the byte bound) queued. The sender gets
//!   `PEER_BUSY`; the receiver is never disconnected because of what others send it.
//!
//! Purpose-built instead of a `tokio::sync::mpsc` channel plus a `oneshot`, because it is held by
//! every idle connection: it allocates nothing for frames until the first one is queued (an mpsc
//! channel allocates a 32-slot block up front), gives its buffer back after a burst, and carries
//! the close reason in the same allocation. There is one producer (the directory task), so the
//! lock is uncontended except against the one consumer.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use bytes::Bytes;
use signal_mesh_proto::PeerId;

use crate::directory::Close;

/// Frames kept allocated in an empty queue; a larger buffer left over from a burst is shrunk.
const KEEP_CAPACITY: usize = 8;

/// How much one queue may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most frames.
    pub frames: usize,
    /// Most bytes of frames. A single frame larger than this is still queued into an empty queue.
    pub bytes: usize,
}

impl Bounds {
    /// Default [`Bounds::bytes`]: 32 signals of the largest payload.
    pub const DEFAULT_BYTES: usize = 1 << 20;

    /// Signals are refused once the queue holds this many frames (half the bound).
    fn signal_frames(&self) -> usize {
        (self.frames / 2).max(1)
    }

    /// Signals are refused once the queue holds this many bytes (half the bound).
    fn signal_bytes(&self) -> usize {
        self.bytes / 2
    }

    /// Bytes of signals one sender may have queued (an eighth of the bound).
    fn share(&self) -> usize {
        self.bytes / 8
    }
}

/// A queued frame and, for a signal, the peer it is from.
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    from: Option<PeerId>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes in `frames`.
    bytes: usize,
    /// Bytes of queued signals per sending peer (no entry: none queued). At most one entry
    /// per queued frame.
    by_sender: HashMap<PeerId, usize>,
    close: Option<Close>,
    sender_gone: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
}

impl State {
    fn push(&mut self, frame: Bytes, from: Option<PeerId>) {
        self.bytes += frame.len();
        if let Some(from) = from {
            *self.by_sender.entry(from).or_insert(0) += frame.len();
        }
        self.frames.push_back(Queued { frame, from });
    }

    fn pop(&mut self) -> Option<Bytes> {
        let Queued { frame, from } = self.frames.pop_front()?;
        self.bytes -= frame.len();
        if let Some(from) = from
            && let Some(queued) = self.by_sender.get_mut(&from)
        {
            *queued -= frame.len();
            if *queued == 0 {
                self.by_sender.remove(&from);
            }
        }
        if self.frames.is_empty() {
            if self.frames.capacity() > KEEP_CAPACITY {
                self.frames.shrink_to(KEEP_CAPACITY);
            }
            if self.by_sender.capacity() > KEEP_CAPACITY {
                self.by_sender = HashMap::new();
            }
        }
        Some(frame)
    }

    fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.by_sender = HashMap::new();
        self.bytes = 0;
    }

    /// Whether `len` more bytes fit within `max_frames` and `max_bytes` (an empty queue takes
    /// any one frame).
    fn fits(&self, len: usize, max_frames: usize, max_bytes: usize) -> bool {
        self.frames.is_empty() || (self.frames.len() < max_frames && self.bytes + len <= max_bytes)
    }
}

#[derive(Debug)]
struct Inner {
    bounds: Bounds,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one ever did, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a queue holding at most `capacity` frames and [`Bounds::DEFAULT_BYTES`] bytes.
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    outbox_with(Bounds { frames: capacity, bytes: Bounds::DEFAULT_BYTES })
}

/// Creates a queue holding at most `bounds`.
pub fn outbox_with(bounds: Bounds) -> (OutboxSender, OutboxReceiver) {
    let bounds = Bounds { frames: bounds.frames.max(1), bytes: bounds.bytes.max(1) };
    let inner = Arc::new(Inner { bounds, state: Mutex::new(State::default()) });
    (OutboxSender { inner: inner.clone() }, OutboxReceiver { inner })
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full: the reader is too slow for its own traffic.
    Full,
    /// A signal was refused: the queue is past its watermark for signals, or the sender has
    /// its share queued. The receiver stays connected.
    Busy,
    /// The connection is gone or closing.
    Closed,
}

/// The directory's end.
#[derive(Debug)]
pub struct OutboxSender {
    inner: Arc<Inner>,
}

impl OutboxSender {
    /// Queues a frame of the connection's own traffic without waiting.
    pub fn try_send(&self, frame: Bytes) -> Result<(), PushError> {
        OutboxSender::push(&self.inner, frame)
    }

    fn push(inner: &Inner, frame: Bytes) -> Result<(), PushError> {
        let mut s = inner.lock();
        if s.receiver_gone || s.close.is_some() {
            return Err(PushError::Closed);
        }
        let b = inner.bounds;
        if !s.fits(frame.len(), b.frames, b.bytes) {
            return Err(PushError::Full);
        }
        s.push(frame, None);
        Self::wake(s);
        Ok(())
    }

    /// Queues a signal from `from` without waiting, within the signal watermark and `from`'s
    /// share (see the module docs).
    pub fn try_send_signal(&self, frame: Bytes, from: PeerId) -> Result<(), PushError> {
        OutboxSender::push_signal(&self.inner, frame, from)
    }

    fn push_signal(inner: &Inner, frame: Bytes, from: PeerId) -> Result<(), PushError> {
        let mut s = inner.lock();
        if s.receiver_gone || s.close.is_some() {
            return Err(PushError::Closed);
        }
        let b = inner.bounds;
        let queued = s.by_sender.get(&from).copied().unwrap_or(0);
        // A sender with nothing queued may always have one frame within the watermark.
        let within_share = queued == 0 || queued + frame.len() <= b.share();
        if !within_share || !s.fits(frame.len(), b.signal_frames(), b.signal_bytes()) {
            return Err(PushError::Busy);
        }
        s.push(frame, Some(from));
        Self::wake(s);
        Ok(())
    }

    /// Frames and bytes queued now.
    pub fn queued(&self) -> (usize, usize) {
        let s = self.inner.lock();
        (s.frames.len(), s.bytes)
    }

    fn wake(mut s: MutexGuard<'_, State>) {
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Tells the connection to close; queued frames are dropped.
    pub fn close(&self, close: Close) {
        OutboxSender::close_inner(&self.inner, close)
    }

    fn close_inner(inner: &Inner, close: Close) {
        let mut s = inner.lock();
        if s.close.is_none() {
            s.close = Some(close);
        }
        s.clear();
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl OutboxSender {
    /// A second way to queue frames, for answers that arrive later from elsewhere (a signal
    /// forwarded to another node). Unlike the sender, dropping it does not end the queue.
    pub fn replier(&self) -> OutboxReplier {
        OutboxReplier { inner: self.inner.clone() }
    }
}

/// See [`OutboxSender::replier`].
#[derive(Debug)]
pub struct OutboxReplier {
    inner: Arc<Inner>,
}

impl OutboxReplier {
    /// Queues a frame without waiting (the same rules as [`OutboxSender::try_send`]).
    pub fn try_send(&self, frame: Bytes) -> Result<(), PushError> {
        OutboxSender::push(&self.inner, frame)
    }

    /// Queues a signal from `from` (the same rules as [`OutboxSender::try_send_signal`]).
    pub fn try_send_signal(&self, frame: Bytes, from: PeerId) -> Result<(), PushError> {
        OutboxSender::push_signal(&self.inner, frame, from)
    }

    /// Tells the connection to close (as [`OutboxSender::close`]).
    pub fn close(&self, close: Close) {
        OutboxSender::close_inner(&self.inner, close)
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.sender_gone = true;
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What the connection gets from its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A frame to write.
    Frame(Bytes),
    /// The directory closes the connection.
    Close(Close),
    /// The directory dropped the queue without a reason (it stopped).
    Gone,
}

/// The connection's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    inner: Arc<Inner>,
}

impl OutboxReceiver {
    /// Waits for the next frame or the close signal (which goes first).
    pub async fn recv(&self) -> Received {
        poll_fn(|cx| {
            let mut s = self.inner.lock();
            match Self::take(&mut s) {
                Some(r) => Poll::Ready(r),
                None => {
                    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next frame if one is queued (no close signal: that is for [`OutboxReceiver::recv`]).
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut s = self.inner.lock();
        if s.close.is_some() {
            return None;
        }
        s.pop()
    }

    /// Waits for the close signal only (frames stay queued); a dropped sender reads as
    /// [`ErrorCode::Internal`](signal_mesh_proto::ErrorCode::Internal).
    pub async fn closed(&self) -> Close {
        poll_fn(|cx| {
            let mut s = self.inner.lock();
            if let Some(close) = s.close {
                return Poll::Ready(close);
            }
            if s.sender_gone {
                return Poll::Ready(Close {
                    code: signal_mesh_proto::ErrorCode::Internal,
                    reason: "the directory dropped this connection",
                });
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The close signal, if it was given.
    pub fn close_reason(&self) -> Option<Close> {
        self.inner.lock().close
    }

    fn take(s: &mut State) -> Option<Received> {
        if let Some(close) = s.close {
            return Some(Received::Close(close));
        }
        if let Some(frame) = s.pop() {
            return Some(Received::Frame(frame));
        }
        if s.sender_gone {
            return Some(Received::Gone);
        }
        None
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.receiver_gone = true;
        s.clear();
    }
}

#[cfg(test)]
mod tests {
    use signal_mesh_proto::ErrorCode;

    use super::*;

    #[tokio::test]
    async fn frames_come_in_order_up_to_the_capacity() {
        let (tx, rx) = outbox(2);
        tx.try_send(Bytes::from_static(b"1")).unwrap();
        tx.try_send(Bytes::from_static(b"2")).unwrap();
        assert_eq!(tx.try_send(Bytes::from_static(b"3")), Err(PushError::Full));
        assert_eq!(rx.recv().await, Received::Frame(Bytes::from_static(b"1")));
        assert_eq!(rx.try_recv(), Some(Bytes::from_static(b"2")));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn close_wakes_the_reader_and_goes_first() {
        let (tx, rx) = outbox(4);
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(Bytes::from_static(b"x")).unwrap();
        let close = Close { code: ErrorCode::SlowConsumer, reason: "slow" };
        tx.close(close);
        let got = reader.await.unwrap();
        assert!(got == Received::Close(close) || got == Received::Frame(Bytes::from_static(b"x")));
        assert_eq!(tx.try_send(Bytes::from_static(b"y")), Err(PushError::Closed));
    }

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    fn peer(n: u8) -> PeerId {
        PeerId::from_array([n; 32])
    }

    #[test]
    fn given_the_byte_bound_then_own_traffic_is_full_before_the_frame_bound() {
        let (tx, rx) = outbox_with(Bounds { frames: 1000, bytes: 100 });
        tx.try_send(frame(60)).unwrap();
        tx.try_send(frame(40)).unwrap();
        assert_eq!(tx.try_send(frame(1)), Err(PushError::Full));
        assert_eq!(tx.queued(), (2, 100));
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(60));
        tx.try_send(frame(60)).unwrap();
        // An empty queue takes one frame larger than the bound (frames are at most the limit).
        while rx.try_recv().is_some() {}
        tx.try_send(frame(500)).unwrap();
        assert_eq!(tx.try_send(frame(1)), Err(PushError::Full));
    }

    #[test]
    fn given_one_sender_at_its_share_then_busy_while_others_and_own_traffic_still_fit() {
        let (tx, rx) = outbox_with(Bounds { frames: 1000, bytes: 800 });
        // Share: 100 bytes per sender; watermark: 400 bytes of queue.
        tx.try_send_signal(frame(60), peer(1)).unwrap();
        tx.try_send_signal(frame(40), peer(1)).unwrap();
        assert_eq!(tx.try_send_signal(frame(1), peer(1)), Err(PushError::Busy));
        tx.try_send_signal(frame(100), peer(2)).unwrap();
        tx.try_send_signal(frame(100), peer(3)).unwrap();
        tx.try_send_signal(frame(100), peer(4)).unwrap();
        // 400 bytes queued: the watermark refuses even a sender with nothing queued.
        assert_eq!(tx.try_send_signal(frame(1), peer(5)), Err(PushError::Busy));
        // Own traffic uses the rest.
        tx.try_send(frame(400)).unwrap();
        assert_eq!(tx.try_send(frame(1)), Err(PushError::Full));
        // Reading frees the first sender's share.
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(60));
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(40));
        for _ in 0..4 {
            rx.try_recv().unwrap();
        }
        tx.try_send_signal(frame(100), peer(1)).unwrap();
        assert_eq!(tx.queued(), (1, 100));
    }

    #[test]
    fn given_the_frame_bound_then_signals_stop_at_half_of_it() {
        let (tx, _rx) = outbox_with(Bounds { frames: 8, bytes: 1 << 20 });
        for n in 0..4 {
            tx.try_send_signal(frame(1), peer(n)).unwrap();
        }
        assert_eq!(tx.try_send_signal(frame(1), peer(9)), Err(PushError::Busy));
        for _ in 0..4 {
            tx.try_send(frame(1)).unwrap();
        }
        assert_eq!(tx.try_send(frame(1)), Err(PushError::Full));
    }

    #[tokio::test]
    async fn dropped_ends_are_seen() {
        let (tx, rx) = outbox(4);
        drop(tx);
        assert_eq!(rx.recv().await, Received::Gone);
        let (tx, rx) = outbox(4);
        drop(rx);
        assert_eq!(tx.try_send(Bytes::new()), Err(PushError::Closed));
    }
}
