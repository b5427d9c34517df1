//! A connection's outbound queue: a bounded queue of encoded frames plus a close signal, written
//! by the directory task and read by the connection task.
//!
//! Purpose-built instead of a `tokio::sync::mpsc` channel plus a `oneshot`, because it is held by
//! every idle connection: it allocates nothing for frames until the first one is queued (an mpsc
//! channel allocates a 32-slot block up front), gives its buffer back after a burst, and carries
//! the close reason in the same allocation. There is one producer (the directory task), so the
//! lock is uncontended except against the one consumer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::directory::Close;

/// Frames kept allocated in an empty queue; a larger buffer left over from a burst is shrunk.
const KEEP_CAPACITY: usize = 8;

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    close: Option<Close>,
    sender_gone: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one ever did, the state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let inner = Arc::new(Inner { capacity: capacity.max(1), state: Mutex::new(State::default()) });
    (OutboxSender { inner: inner.clone() }, OutboxReceiver { inner })
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds `capacity` frames: the reader is too slow.
    Full,
    /// The connection is gone or closing.
    Closed,
}

/// The directory's end.
#[derive(Debug)]
pub struct OutboxSender {
    inner: Arc<Inner>,
}

impl OutboxSender {
    /// Queues a frame without waiting.
    pub fn try_send(&self, frame: Bytes) -> Result<(), PushError> {
        OutboxSender::push(&self.inner, frame)
    }

    fn push(inner: &Inner, frame: Bytes) -> Result<(), PushError> {
        let mut s = inner.lock();
        if s.receiver_gone || s.close.is_some() {
            return Err(PushError::Closed);
        }
        if s.frames.len() >= inner.capacity {
            return Err(PushError::Full);
        }
        s.frames.push_back(frame);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
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
        s.frames = VecDeque::new();
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
        let frame = s.frames.pop_front();
        Self::shrink(&mut s);
        frame
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
        if let Some(frame) = s.frames.pop_front() {
            Self::shrink(s);
            return Some(Received::Frame(frame));
        }
        if s.sender_gone {
            return Some(Received::Gone);
        }
        None
    }

    fn shrink(s: &mut State) {
        if s.frames.is_empty() && s.frames.capacity() > KEEP_CAPACITY {
            s.frames.shrink_to(KEEP_CAPACITY);
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.receiver_gone = true;
        s.frames = VecDeque::new();
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
