//! Per-peer WebRTC negotiation: sessions, glare, reject, ICE restart, bye.
//!
//! The core decides *what* happens to each `RTCPeerConnection` and the shell does it
//! ([`RtcCommand`]s, run in order per handle) and reports back (`rtc_*` inputs).
//!
//! - A session is one connection attempt, named on the wire by a random id chosen by the
//!   initiator; messages for another session are stale and dropped. At most one session per peer.
//! - Glare: when both peers start at once, the offer of the lower peer id wins; the other side drops
//!   its own attempt, answers the winning offer and hands that connection to its waiting `connect()`.
//! - Candidates are held back until the description they belong to is sent (local) or applied
//!   (remote), so they never race ahead of it.
//! - ICE failure: one ICE restart (the initiator re-offers; a responder asks it to) before the
//!   connection is reported closed.

use signal_mesh_proto::{ErrorCode, PeerId};

use super::client::{Client, ClientState, Event, OpResult, Output, RtcCommand};
use super::error::{ClientError, Code, decimal};
use super::signal::{Candidate, PeerMessage, PeerSignal};
use super::{Millis, OpId};

/// Local name of one peer connection (never on the wire).
pub type Handle = u32;

/// Most remote or local candidates held back per session.
const MAX_HELD_CANDIDATES: usize = 64;
/// Most peer sessions at once; further incoming offers are rejected and `connect` fails.
pub const MAX_SESSIONS: usize = 256;
/// Longest data channel label accepted from the application.
pub const MAX_LABEL_BYTES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Responder: waiting for the application to accept or reject.
    Deciding,
    /// Offer/answer in progress.
    Negotiating,
    /// The data channel is open.
    Open,
}

#[derive(Clone, Debug)]
pub(super) struct PeerSession {
    id: u64,
    peer: PeerId,
    initiator: bool,
    phase: Phase,
    waiters: Vec<OpId>,
    pub(super) deadline: Option<Millis>,
    /// The responder's pending offer while the application decides.
    offer: Option<String>,
    label: String,
    local_sent: bool,
    remote_applied: bool,
    held_local: Vec<Candidate>,
    held_remote: Vec<Candidate>,
    restarted: bool,
}

impl Client {
    /// Starts (or joins) a connection to `peer`. Completes with [`Event::OpDone`] carrying
    /// [`OpResult::Connection`] once the data channel is open.
    pub fn connect(&mut self, peer: PeerId, label: &str, now: Millis) -> Result<OpId, ClientError> {
        if peer == self.config.peer_id {
            return Err(ClientError::invalid("cannot connect to this client's own peer id"));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(ClientError::invalid(
                ["label longer than ", &decimal(MAX_LABEL_BYTES as u64), " bytes"].concat(),
            ));
        }
        if self.state() == ClientState::Closed {
            return Err(ClientError::closed("the client is closed"));
        }
        let op = self.new_op();
        if let Some(&h) = self.by_peer.get(&peer)
            && let Some(s) = self.sessions.get_mut(&h)
        {
            match s.phase {
                Phase::Open => self.emit(Event::OpDone { op, result: Ok(OpResult::Connection(h)) }),
                Phase::Negotiating => s.waiters.push(op),
                Phase::Deciding => {
                    s.waiters.push(op);
                    self.accept(h, now);
                }
            }
            return Ok(op);
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(ClientError::new(
                Code::Node(ErrorCode::LimitExceeded),
                ["at most ", &decimal(MAX_SESSIONS as u64), " peer connections at once"].concat(),
            ));
        }
        let handle = self.alloc_handle();
        let id = self.rng.next_nonzero();
        let session = PeerSession {
            id,
            peer,
            initiator: true,
            phase: Phase::Negotiating,
            waiters: vec![op],
            deadline: Some(now + self.config.connect_timeout_ms),
            offer: None,
            label: label.to_owned(),
            local_sent: false,
            remote_applied: false,
            held_local: Vec::new(),
            held_remote: Vec::new(),
            restarted: false,
        };
        self.sessions.insert(handle, session);
        self.by_peer.insert(peer, handle);
        self.push(Output::Rtc(RtcCommand::Create { handle, initiator: true, label: label.to_owned() }));
        self.push(Output::Rtc(RtcCommand::CreateOffer { handle, ice_restart: false }));
        Ok(op)
    }

    /// Removes `op` from the waiters of its connection attempt; drops the attempt (saying bye)
    /// when nobody else waits for it and it is not open yet. Whether `op` was waiting.
    pub(super) fn cancel_connect(&mut self, op: OpId, now: Millis) -> bool {
        let Some((&h, s)) = self.sessions.iter().find(|(_, s)| s.waiters.contains(&op)) else {
            return false;
        };
        let orphan = s.waiters.len() == 1 && s.phase != Phase::Open;
        if orphan {
            let deciding = s.phase == Phase::Deciding;
            if let Some(s) = self.sessions.get_mut(&h) {
                s.waiters.clear();
            }
            self.drop_session(h, (!deciding).then_some(now), ClientError::closed("connect() was aborted"));
        } else if let Some(s) = self.sessions.get_mut(&h) {
            s.waiters.retain(|w| *w != op);
        }
        true
    }

    fn alloc_handle(&mut self) -> Handle {
        let h = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        h
    }

    /// The application accepted (`true`) or rejected an [`Event::IncomingOffer`].
    pub fn decide_incoming(&mut self, handle: Handle, accept: bool, now: Millis) {
        let Some(s) = self.sessions.get(&handle) else { return };
        if s.phase != Phase::Deciding {
            return;
        }
        if accept {
            self.accept(handle, now);
        } else {
            let (peer, id) = (s.peer, s.id);
            let reject =
                PeerSignal { session: id, message: PeerMessage::Reject { reason: "rejected".into() } };
            self.signal(peer, reject, handle, now);
            self.forget(handle);
        }
    }

    fn accept(&mut self, handle: Handle, _now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        let Some(sdp) = s.offer.take() else { return };
        s.phase = Phase::Negotiating;
        s.remote_applied = true;
        let label = s.label.clone();
        let held = std::mem::take(&mut s.held_remote);
        self.push(Output::Rtc(RtcCommand::Create { handle, initiator: false, label }));
        self.push(Output::Rtc(RtcCommand::ApplyOffer { handle, sdp }));
        for candidate in held {
            self.push(Output::Rtc(RtcCommand::AddCandidate { handle, candidate }));
        }
    }

    /// Removes a session without telling anyone but the shell.
    fn forget(&mut self, handle: Handle) {
        if let Some(s) = self.sessions.remove(&handle) {
            if self.by_peer.get(&s.peer) == Some(&handle) {
                self.by_peer.remove(&s.peer);
            }
            if s.phase != Phase::Deciding {
                self.push(Output::Rtc(RtcCommand::Close { handle }));
            }
        }
    }

    /// Ends a session: optionally says bye, fails its waiters with `err`, reports an open one closed.
    pub(super) fn drop_session(&mut self, handle: Handle, bye_at: Option<Millis>, err: ClientError) {
        let Some(s) = self.sessions.get(&handle).cloned() else { return };
        if let Some(now) = bye_at {
            let bye = PeerSignal { session: s.id, message: PeerMessage::Bye { reason: err.message.clone() } };
            self.signal(s.peer, bye, handle, now);
        }
        self.forget(handle);
        for op in s.waiters {
            self.emit(Event::OpDone { op, result: Err(err.clone()) });
        }
        if s.phase == Phase::Open {
            self.emit(Event::PeerClosed { handle, peer: s.peer });
        }
    }

    pub(super) fn close_all_sessions(&mut self, now: Millis) {
        let handles: Vec<Handle> = self.sessions.keys().copied().collect();
        for h in handles {
            let deciding = self.sessions.get(&h).is_some_and(|s| s.phase == Phase::Deciding);
            self.drop_session(h, (!deciding).then_some(now), ClientError::closed("the client was closed"));
        }
    }

    /// The application closed the connection `handle`.
    pub fn close_connection(&mut self, handle: Handle, now: Millis) {
        if let Some(s) = self.sessions.get_mut(&handle) {
            // The application knows; do not report it back as a remote close.
            if s.phase == Phase::Open {
                s.phase = Phase::Negotiating;
            }
            self.drop_session(handle, Some(now), ClientError::closed("the connection was closed"));
        }
    }

    pub(super) fn expire_sessions(&mut self, now: Millis) {
        let due: Vec<Handle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let deciding = self.sessions.get(&h).is_some_and(|s| s.phase == Phase::Deciding);
            let err = ClientError::timeout("the peer connection did not open in time");
            self.drop_session(h, (!deciding).then_some(now), err);
        }
    }

    pub(super) fn signal_failed(&mut self, handle: Handle, err: ClientError, _now: Millis) {
        // The peer is gone (or unreachable): there is nobody to say bye to.
        let open = self.sessions.get(&handle).is_some_and(|s| s.phase == Phase::Open);
        if !open || err.code == Code::Node(ErrorCode::PeerNotFound) {
            self.drop_session(handle, None, err);
        }
    }

    fn session_of(&self, from: &PeerId, id: u64) -> Option<Handle> {
        let h = *self.by_peer.get(from)?;
        (self.sessions.get(&h)?.id == id).then_some(h)
    }

    pub(super) fn on_peer_signal(&mut self, from: PeerId, signal: PeerSignal, now: Millis) {
        if self.state() == ClientState::Closed || from == self.config.peer_id {
            return;
        }
        let id = signal.session;
        if let PeerMessage::Offer { sdp, label, ice_restart } = signal.message {
            self.on_offer(from, id, sdp, label, ice_restart, now);
            return;
        }
        // Everything else belongs to a known session; anything else is stale.
        let Some(h) = self.session_of(&from, id) else { return };
        let Some(s) = self.sessions.get_mut(&h) else { return };
        match signal.message {
            PeerMessage::Offer { .. } => {}
            PeerMessage::Answer { sdp } => {
                if s.initiator && !s.remote_applied && s.local_sent {
                    s.remote_applied = true;
                    let held = std::mem::take(&mut s.held_remote);
                    self.push(Output::Rtc(RtcCommand::ApplyAnswer { handle: h, sdp }));
                    for candidate in held {
                        self.push(Output::Rtc(RtcCommand::AddCandidate { handle: h, candidate }));
                    }
                }
            }
            PeerMessage::Candidate(candidate) => {
                if s.remote_applied {
                    self.push(Output::Rtc(RtcCommand::AddCandidate { handle: h, candidate }));
                } else if s.held_remote.len() < MAX_HELD_CANDIDATES {
                    s.held_remote.push(candidate);
                }
            }
            PeerMessage::Reject { reason } => {
                if s.initiator && s.phase != Phase::Open {
                    let msg =
                        if reason.is_empty() { "the peer rejected the connection".into() } else { reason };
                    self.drop_session(h, None, ClientError::new(Code::Rejected, msg));
                }
            }
            PeerMessage::Bye { .. } => {
                self.drop_session(h, None, ClientError::closed("the peer closed the connection"));
            }
            PeerMessage::RestartIce => {
                if s.initiator && s.phase == Phase::Open && !s.restarted {
                    self.restart_ice(h, now);
                }
            }
        }
    }

    fn on_offer(
        &mut self,
        from: PeerId,
        id: u64,
        sdp: String,
        label: String,
        ice_restart: bool,
        now: Millis,
    ) {
        let mut waiters = Vec::new();
        if let Some(&h) = self.by_peer.get(&from)
            && let Some(s) = self.sessions.get_mut(&h)
        {
            if s.id == id {
                // A renegotiation (ICE restart) of our incoming session; duplicates are ignored.
                if ice_restart && !s.initiator && s.phase != Phase::Deciding {
                    s.restarted = true;
                    s.local_sent = false;
                    s.remote_applied = true;
                    s.deadline = Some(now + self.config.connect_timeout_ms);
                    self.push(Output::Rtc(RtcCommand::ApplyOffer { handle: h, sdp }));
                }
                return;
            }
            if ice_restart {
                return; // a restart of a session we do not have
            }
            if s.initiator && s.phase != Phase::Open {
                // Glare: both sides offered. The lower peer id's offer wins.
                if self.config.peer_id < from {
                    return;
                }
                waiters = std::mem::take(&mut s.waiters);
            } else {
                // The peer started over (it lost the old connection): the new offer replaces it.
                waiters = std::mem::take(&mut s.waiters);
            }
            self.drop_session(h, None, ClientError::closed("replaced by a new connection from the peer"));
        } else if ice_restart {
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS && waiters.is_empty() {
            let reject = PeerSignal {
                session: id,
                message: PeerMessage::Reject { reason: "too many connections".into() },
            };
            self.signal(from, reject, 0, now);
            return;
        }
        let handle = self.alloc_handle();
        let wanted = !waiters.is_empty();
        self.sessions.insert(
            handle,
            PeerSession {
                id,
                peer: from,
                initiator: false,
                phase: Phase::Deciding,
                waiters,
                deadline: Some(now + self.config.connect_timeout_ms),
                offer: Some(sdp),
                label,
                local_sent: false,
                remote_applied: false,
                held_local: Vec::new(),
                held_remote: Vec::new(),
                restarted: false,
            },
        );
        self.by_peer.insert(from, handle);
        if wanted {
            self.accept(handle, now);
        } else {
            self.emit(Event::IncomingOffer { handle, peer: from });
        }
    }

    fn restart_ice(&mut self, handle: Handle, now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        s.restarted = true;
        s.deadline = Some(now + self.config.connect_timeout_ms);
        if s.initiator {
            s.local_sent = false;
            s.remote_applied = false;
            self.push(Output::Rtc(RtcCommand::CreateOffer { handle, ice_restart: true }));
        } else {
            let (peer, id) = (s.peer, s.id);
            self.signal(peer, PeerSignal { session: id, message: PeerMessage::RestartIce }, handle, now);
        }
    }

    // ---- reports from the shell ----------------------------------------------------------------

    /// The local description (offer or answer, by role) of `handle` is set: send it.
    pub fn rtc_local_description(&mut self, handle: Handle, sdp: String, now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        if s.local_sent {
            return;
        }
        s.local_sent = true;
        let message = if s.initiator {
            PeerMessage::Offer { sdp, label: s.label.clone(), ice_restart: s.restarted }
        } else {
            PeerMessage::Answer { sdp }
        };
        let (peer, id) = (s.peer, s.id);
        let held = std::mem::take(&mut s.held_local);
        self.signal(peer, PeerSignal { session: id, message }, handle, now);
        for c in held {
            self.signal(peer, PeerSignal { session: id, message: PeerMessage::Candidate(c) }, handle, now);
        }
    }

    /// A local ICE candidate of `handle` was gathered: trickle it.
    pub fn rtc_local_candidate(&mut self, handle: Handle, candidate: Candidate, now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        if !s.local_sent {
            if s.held_local.len() < MAX_HELD_CANDIDATES {
                s.held_local.push(candidate);
            }
            return;
        }
        let (peer, id) = (s.peer, s.id);
        self.signal(
            peer,
            PeerSignal { session: id, message: PeerMessage::Candidate(candidate) },
            handle,
            now,
        );
    }

    /// The data channel of `handle` is open.
    pub fn rtc_channel_open(&mut self, handle: Handle, _now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        if s.phase == Phase::Open {
            return;
        }
        s.phase = Phase::Open;
        s.deadline = None;
        let waiters = std::mem::take(&mut s.waiters);
        let peer = s.peer;
        if waiters.is_empty() {
            self.emit(Event::Incoming { handle, peer });
        }
        for op in waiters {
            self.emit(Event::OpDone { op, result: Ok(OpResult::Connection(handle)) });
        }
    }

    /// ICE of `handle` failed: restart once, then give up.
    pub fn rtc_ice_failed(&mut self, handle: Handle, now: Millis) {
        let Some(s) = self.sessions.get(&handle) else { return };
        if s.restarted || s.phase != Phase::Open {
            let err = ClientError::closed("ICE failed");
            self.drop_session(handle, Some(now), err);
        } else {
            self.restart_ice(handle, now);
        }
    }

    /// ICE of `handle` is connected (again).
    pub fn rtc_ice_connected(&mut self, handle: Handle, _now: Millis) {
        if let Some(s) = self.sessions.get_mut(&handle)
            && s.phase == Phase::Open
        {
            s.deadline = None;
        }
    }

    /// The data channel or peer connection of `handle` closed, or a WebRTC call failed.
    pub fn rtc_closed(&mut self, handle: Handle, err: ClientError, now: Millis) {
        self.drop_session(handle, Some(now), err);
    }

    /// The remote peer of `handle`, while the session lives.
    pub fn session_peer(&self, handle: Handle) -> Option<PeerId> {
        self.sessions.get(&handle).map(|s| s.peer)
    }
}
