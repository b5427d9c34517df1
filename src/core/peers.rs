//! Per-peer WebRTC negotiation: [`Peers`] owns every peer session and decides what happens to
//! each `RTCPeerConnection`; the shell carries it out ([`RtcCommand`]s, run in order per handle) and
//! reports back (`rtc_*` inputs of the [`super::Client`]). `Peers` never touches the edge session:
//! what it wants sent to a peer, done by the shell or told to the application comes out of
//! [`Peers::poll`] as a [`PeerOutput`], and the client routes it.
//!
//! - A session is one connection, named on the wire by a random id chosen by the initiator;
//!   messages for another session are stale and dropped. At most one session per peer.
//! - Glare on the first offer: when both peers start at once, the offer of the lower peer id wins;
//!   the other side drops its own attempt, answers the winning offer and hands that connection to
//!   its waiting `connect()`.
//! - Renegotiation (a track or a data channel added by either side once the connection is up, an
//!   ICE restart) follows the *perfect negotiation* pattern: either side may offer; when two offers
//!   cross, the impolite side (the lower peer id) ignores the other's offer and the polite side
//!   rolls its own back, answers, and offers again once stable. So both sides changing at once
//!   never deadlocks.
//! - Candidates are held back until the description they belong to is sent (local) or applied
//!   (remote), so they never race ahead of it.
//! - ICE failure: one ICE restart (the initiator re-offers; a responder asks it to) before the
//!   connection is reported closed.

use alloc::{borrow::ToOwned, string::String, vec::Vec};

use signal_mesh_proto::{ErrorCode, PeerId};

use super::backoff::Rng;
use super::client::{Event, OpResult, RtcCommand};
use super::error::{ClientError, Code, msg};
use super::signal::{Candidate, PeerMessage, PeerSignal};
use super::vecmap::VecMap;
use super::{Millis, OpId};

/// Local name of one peer connection (never on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u32);

impl Handle {
    /// The handle's number, for JavaScript.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The handle JavaScript names by `n`.
    pub const fn from_raw(n: u32) -> Handle {
        Handle(n)
    }
}

/// Which description the browser made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpKind {
    /// An offer (`createOffer`).
    Offer,
    /// An answer (`createAnswer`).
    Answer,
}

/// Most remote or local candidates held back per session.
const MAX_HELD_CANDIDATES: usize = 64;
/// Most peer sessions at once; further incoming offers are rejected and `connect` fails.
pub const MAX_SESSIONS: usize = 256;
/// Longest data channel label accepted from the application.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most outputs waiting to be routed (drained after every input; a bound against bugs).
const MAX_OUTPUTS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Responder: waiting for the application to accept or reject.
    Deciding,
    /// The first offer/answer is in progress.
    Negotiating,
    /// The data channel is open.
    Open,
}

#[derive(Clone, Debug)]
struct PeerSession {
    id: u64,
    peer: PeerId,
    initiator: bool,
    /// Yields in offer collisions: the higher peer id.
    polite: bool,
    phase: Phase,
    waiters: Vec<OpId>,
    deadline: Option<Millis>,
    /// The responder's first offer while the application decides.
    offer: Option<String>,
    label: String,
    /// `createOffer` asked of the shell and not yet reported (or rolled back).
    making_offer: bool,
    /// Our offer is sent and its answer not yet applied (`have-local-offer`).
    offer_sent: bool,
    /// A remote offer is being answered.
    answering: bool,
    /// An offer to make once stable: `Some(ice_restart)`.
    want_offer: Option<bool>,
    /// Whether the offer being made (or sent) restarts ICE.
    offer_restart: bool,
    /// A local description has been sent: local candidates may be trickled.
    local_sent: bool,
    /// A remote description is applied (or queued before them): remote candidates may be added.
    remote_applied: bool,
    held_local: Vec<Candidate>,
    held_remote: Vec<Candidate>,
    restarted: bool,
}

impl PeerSession {
    fn new(id: u64, peer: PeerId, local: PeerId, initiator: bool, label: String) -> PeerSession {
        PeerSession {
            id,
            peer,
            initiator,
            polite: local > peer,
            phase: if initiator { Phase::Negotiating } else { Phase::Deciding },
            waiters: Vec::new(),
            deadline: None,
            offer: None,
            label,
            making_offer: false,
            offer_sent: false,
            answering: false,
            want_offer: None,
            offer_restart: false,
            local_sent: false,
            remote_applied: false,
            held_local: Vec::new(),
            held_remote: Vec::new(),
            restarted: false,
        }
    }

    fn stable(&self) -> bool {
        !self.making_offer && !self.offer_sent && !self.answering
    }
}

/// What [`Peers`] wants done; the client routes each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerOutput {
    /// Send `signal` to `to` (`handle`: the session a failure is reported to).
    Signal {
        /// The peer.
        to: PeerId,
        /// The message.
        signal: PeerSignal,
        /// The session it belongs to, if any.
        handle: Option<Handle>,
    },
    /// A WebRTC action for the shell.
    Rtc(RtcCommand),
    /// Tell the application.
    Event(Event),
}

/// Every peer session of one client.
#[derive(Debug)]
pub struct Peers {
    local: PeerId,
    connect_timeout_ms: u64,
    rng: Rng,
    /// At most one per peer ([`Peers::handle_of`] finds it).
    sessions: VecMap<Handle, PeerSession>,
    next_handle: u32,
    /// A `Vec` taken whole by [`Peers::take_outputs`] (one `VecDeque` instantiation less in the wasm).
    out: Vec<PeerOutput>,
}

impl Peers {
    /// No sessions yet. `local` is this client's peer id.
    pub fn new(local: PeerId, connect_timeout_ms: u64, seed: u64) -> Peers {
        Peers {
            local,
            connect_timeout_ms,
            rng: Rng::new(seed),
            sessions: VecMap::new(),
            next_handle: 1,
            out: Vec::new(),
        }
    }

    /// Every output to route, in order.
    pub fn take_outputs(&mut self) -> Vec<PeerOutput> {
        core::mem::take(&mut self.out)
    }

    fn push(&mut self, o: PeerOutput) {
        if self.out.len() < MAX_OUTPUTS {
            self.out.push(o);
        }
    }

    fn rtc(&mut self, c: RtcCommand) {
        self.push(PeerOutput::Rtc(c));
    }

    fn emit(&mut self, e: Event) {
        self.push(PeerOutput::Event(e));
    }

    fn send(&mut self, to: PeerId, session: u64, message: PeerMessage, handle: Option<Handle>) {
        self.push(PeerOutput::Signal { to, signal: PeerSignal { session, message }, handle });
    }

    /// The earliest session deadline.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut at = None;
        for s in self.sessions.values() {
            at = super::client::earliest(at, s.deadline);
        }
        at
    }

    /// How many sessions exist (open or not).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The handles of every session.
    pub fn handles(&self) -> Vec<Handle> {
        self.sessions.keys().copied().collect()
    }

    /// Whether `handle` has no offer or answer in progress (`None`: no such session).
    pub fn is_stable(&self, handle: Handle) -> Option<bool> {
        self.sessions.get(&handle).map(|s| s.stable() && s.want_offer.is_none())
    }

    /// The remote peer of `handle`, while the session lives.
    pub fn peer_of(&self, handle: Handle) -> Option<PeerId> {
        self.sessions.get(&handle).map(|s| s.peer)
    }

    /// Starts (or joins) a connection to `peer` for operation `op`. Completes with
    /// [`Event::OpDone`] carrying [`OpResult::Connection`] once the data channel is open.
    pub fn connect(&mut self, peer: PeerId, label: &str, op: OpId, now: Millis) -> Result<(), ClientError> {
        if peer == self.local {
            return Err(ClientError::invalid("cannot connect to this client's own peer id"));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(ClientError::invalid(msg::LABEL_TOO_LONG));
        }
        if let Some(h) = self.handle_of(&peer)
            && let Some(s) = self.sessions.get_mut(&h)
        {
            match s.phase {
                Phase::Open => self.emit(Event::OpDone { op, result: Ok(OpResult::Connection(h)) }),
                Phase::Negotiating => s.waiters.push(op),
                Phase::Deciding => {
                    s.waiters.push(op);
                    self.accept(h);
                }
            }
            return Ok(());
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(ClientError::new(Code::Node(ErrorCode::LimitExceeded), msg::TOO_MANY_SESSIONS));
        }
        let handle = self.alloc_handle();
        let id = self.rng.next_nonzero();
        let mut s = PeerSession::new(id, peer, self.local, true, label.to_owned());
        s.waiters.push(op);
        s.deadline = Some(now + self.connect_timeout_ms);
        s.making_offer = true;
        self.sessions.insert(handle, s);
        self.rtc(RtcCommand::Create { handle, initiator: true, label: label.to_owned() });
        self.rtc(RtcCommand::CreateOffer { handle, ice_restart: false });
        Ok(())
    }

    /// The session with `peer`. A scan rather than a second map: sessions are few, and one map
    /// type less is less wasm.
    fn handle_of(&self, peer: &PeerId) -> Option<Handle> {
        self.sessions.iter().find(|(_, s)| s.peer == *peer).map(|(h, _)| *h)
    }

    fn alloc_handle(&mut self) -> Handle {
        let h = Handle(self.next_handle);
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        h
    }

    /// Removes `op` from the waiters of its connection attempt; drops the attempt (saying bye)
    /// when nobody else waits for it and it is not open yet. Whether `op` was waiting.
    pub fn cancel(&mut self, op: OpId) -> bool {
        let Some((&h, s)) = self.sessions.iter().find(|(_, s)| s.waiters.contains(&op)) else {
            return false;
        };
        if s.waiters.len() == 1 && s.phase != Phase::Open {
            let bye = s.phase != Phase::Deciding;
            if let Some(s) = self.sessions.get_mut(&h) {
                s.waiters.clear();
            }
            self.drop_session(h, bye, ClientError::closed("connect() was aborted"));
        } else if let Some(s) = self.sessions.get_mut(&h) {
            s.waiters.retain(|w| *w != op);
        }
        true
    }

    /// The application accepted (`true`) or rejected an [`Event::IncomingOffer`].
    pub fn decide_incoming(&mut self, handle: Handle, accept: bool) {
        let Some(s) = self.sessions.get(&handle) else { return };
        if s.phase != Phase::Deciding {
            return;
        }
        if accept {
            self.accept(handle);
        } else {
            let (peer, id) = (s.peer, s.id);
            self.send(peer, id, PeerMessage::Reject { reason: "rejected".into() }, Some(handle));
            // Still deciding: the shell has no `RTCPeerConnection` for it.
            self.sessions.remove(&handle);
        }
    }

    fn accept(&mut self, handle: Handle) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        let Some(sdp) = s.offer.take() else { return };
        s.phase = Phase::Negotiating;
        s.remote_applied = true;
        s.answering = true;
        let label = s.label.clone();
        let held = core::mem::take(&mut s.held_remote);
        self.rtc(RtcCommand::Create { handle, initiator: false, label });
        self.rtc(RtcCommand::ApplyOffer { handle, sdp });
        for candidate in held {
            self.rtc(RtcCommand::AddCandidate { handle, candidate });
        }
    }

    /// Ends a session: optionally says bye, fails its waiters with `err`, reports an open one closed.
    pub fn drop_session(&mut self, handle: Handle, bye: bool, err: ClientError) {
        // Taken out (not cloned: a session clone is a lot of wasm for nothing).
        let Some(s) = self.sessions.remove(&handle) else { return };
        if bye {
            self.send(s.peer, s.id, PeerMessage::Bye { reason: err.message.clone() }, Some(handle));
        }
        if s.phase != Phase::Deciding {
            self.rtc(RtcCommand::Close { handle });
        }
        for op in s.waiters {
            self.emit(Event::OpDone { op, result: Err(err.clone()) });
        }
        if s.phase == Phase::Open {
            self.emit(Event::PeerClosed { handle, peer: s.peer });
        }
    }

    /// Ends every session with `err`; `bye` tells the peers of those past the decision.
    pub fn close_all(&mut self, bye: bool, err: &ClientError) {
        // Each dropped session leaves the map, so this ends.
        loop {
            let Some(&h) = self.sessions.keys().next() else { break };
            let deciding = self.sessions.get(&h).is_some_and(|s| s.phase == Phase::Deciding);
            self.drop_session(h, bye && !deciding, err.clone());
        }
    }

    /// The application closed the connection `handle`.
    pub fn close_connection(&mut self, handle: Handle) {
        if let Some(s) = self.sessions.get_mut(&handle) {
            // The application knows; do not report it back as a remote close.
            if s.phase == Phase::Open {
                s.phase = Phase::Negotiating;
            }
            self.drop_session(handle, true, ClientError::closed("the connection was closed"));
        }
    }

    /// Ends the sessions whose deadline passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        // Each dropped session leaves the map, so this ends.
        loop {
            let due = self.sessions.iter().find(|(_, s)| s.deadline.is_some_and(|d| d <= now));
            let Some(h) = due.map(|(h, _)| *h) else { break };
            let deciding = self.sessions.get(&h).is_some_and(|s| s.phase == Phase::Deciding);
            let err = ClientError::timeout("the peer connection did not open in time");
            self.drop_session(h, !deciding, err);
        }
    }

    /// A signal of `handle` could not be delivered.
    pub fn signal_failed(&mut self, handle: Handle, err: ClientError) {
        // The peer is gone (or unreachable): there is nobody to say bye to.
        let open = self.sessions.get(&handle).is_some_and(|s| s.phase == Phase::Open);
        if !open || err.code == Code::Node(ErrorCode::PeerNotFound) {
            self.drop_session(handle, false, err);
        }
    }

    fn session_of(&self, from: &PeerId, id: u64) -> Option<Handle> {
        let h = self.handle_of(from)?;
        (self.sessions.get(&h)?.id == id).then_some(h)
    }

    /// A signal from peer `from`.
    pub fn on_signal(&mut self, from: PeerId, signal: PeerSignal, now: Millis) {
        if from == self.local {
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
                // An answer to an offer we no longer have (rolled back) is stale.
                if s.offer_sent {
                    s.offer_sent = false;
                    s.remote_applied = true;
                    let held = core::mem::take(&mut s.held_remote);
                    self.rtc(RtcCommand::ApplyAnswer { handle: h, sdp });
                    for candidate in held {
                        self.rtc(RtcCommand::AddCandidate { handle: h, candidate });
                    }
                    self.offer_if_wanted(h);
                }
            }
            PeerMessage::Candidate(candidate) => {
                if s.remote_applied {
                    self.rtc(RtcCommand::AddCandidate { handle: h, candidate });
                } else if s.held_remote.len() < MAX_HELD_CANDIDATES {
                    s.held_remote.push(candidate);
                }
            }
            PeerMessage::Reject { reason } => {
                if s.initiator && s.phase != Phase::Open {
                    let msg =
                        if reason.is_empty() { "the peer rejected the connection".into() } else { reason };
                    self.drop_session(h, false, ClientError::new(Code::Rejected, msg));
                }
            }
            PeerMessage::Bye { .. } => {
                self.drop_session(h, false, ClientError::closed("the peer closed the connection"));
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
        if let Some(h) = self.handle_of(&from)
            && let Some(s) = self.sessions.get_mut(&h)
        {
            if s.id == id {
                self.on_renegotiation_offer(h, sdp, ice_restart, now);
                return;
            }
            if ice_restart {
                return; // a restart of a session we do not have
            }
            if s.initiator && s.phase != Phase::Open {
                // Glare: both sides offered. The lower peer id's offer wins.
                if self.local < from {
                    return;
                }
            }
            // Glare lost, or the peer started over (it lost the old connection): the new offer
            // replaces ours, and whoever waited for ours gets the new connection.
            waiters = core::mem::take(&mut s.waiters);
            self.drop_session(h, false, ClientError::closed("replaced by a new connection from the peer"));
        } else if ice_restart {
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS && waiters.is_empty() {
            self.send(from, id, PeerMessage::Reject { reason: "too many connections".into() }, None);
            return;
        }
        let handle = self.alloc_handle();
        let wanted = !waiters.is_empty();
        let mut s = PeerSession::new(id, from, self.local, false, label);
        s.waiters = waiters;
        s.deadline = Some(now + self.connect_timeout_ms);
        s.offer = Some(sdp);
        self.sessions.insert(handle, s);
        if wanted {
            self.accept(handle);
        } else {
            self.emit(Event::IncomingOffer { handle, peer: from });
        }
    }

    /// An offer within an established session: renegotiation or ICE restart, by either side.
    fn on_renegotiation_offer(&mut self, h: Handle, sdp: String, ice_restart: bool, now: Millis) {
        let Some(s) = self.sessions.get_mut(&h) else { return };
        // Before the application decided, the first offer is all there is (a repeat is dropped).
        if s.phase == Phase::Deciding {
            return;
        }
        let collision = s.making_offer || s.offer_sent;
        if collision && !s.polite {
            return; // the impolite side keeps its own offer; the polite side answers it
        }
        if collision {
            // Polite: roll our offer back (setRemoteDescription does it implicitly) and offer
            // again once stable; an offer still being made is discarded when it is reported.
            s.want_offer = Some(s.want_offer.unwrap_or(false) || s.offer_restart);
            s.making_offer = false;
            s.offer_sent = false;
        }
        if ice_restart {
            s.restarted = true;
            s.deadline = Some(now + self.connect_timeout_ms);
        }
        s.answering = true;
        s.local_sent = false;
        s.remote_applied = true;
        let held = core::mem::take(&mut s.held_remote);
        self.rtc(RtcCommand::ApplyOffer { handle: h, sdp });
        for candidate in held {
            self.rtc(RtcCommand::AddCandidate { handle: h, candidate });
        }
    }

    /// Makes the offer wanted while the session was busy, now that it is stable.
    fn offer_if_wanted(&mut self, h: Handle) {
        let Some(s) = self.sessions.get_mut(&h) else { return };
        if !s.stable() {
            return;
        }
        let Some(ice_restart) = s.want_offer.take() else { return };
        s.making_offer = true;
        s.offer_restart = ice_restart;
        self.rtc(RtcCommand::CreateOffer { handle: h, ice_restart });
    }

    fn restart_ice(&mut self, handle: Handle, now: Millis) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        s.restarted = true;
        s.deadline = Some(now + self.connect_timeout_ms);
        if s.initiator {
            s.want_offer = Some(true);
            self.offer_if_wanted(handle);
        } else {
            let (peer, id) = (s.peer, s.id);
            self.send(peer, id, PeerMessage::RestartIce, Some(handle));
        }
    }

    // ---- reports from the shell ----------------------------------------------------------------

    /// The browser wants to renegotiate `handle` (a track or a data channel was added or removed).
    pub fn rtc_negotiation_needed(&mut self, handle: Handle) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        // The first offer/answer covers whatever the browser wants until the channel opens.
        if s.phase != Phase::Open {
            return;
        }
        s.want_offer = Some(s.want_offer.unwrap_or(false));
        self.offer_if_wanted(handle);
    }

    /// The local description of `handle` is set: send it.
    pub fn rtc_local_description(&mut self, handle: Handle, kind: SdpKind, sdp: String) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        let message = match kind {
            SdpKind::Offer if s.making_offer => {
                s.making_offer = false;
                s.offer_sent = true;
                PeerMessage::Offer { sdp, label: s.label.clone(), ice_restart: s.offer_restart }
            }
            SdpKind::Answer if s.answering => {
                s.answering = false;
                PeerMessage::Answer { sdp }
            }
            // An offer rolled back before it was reported, or an answer nobody asked for.
            _ => return,
        };
        s.local_sent = true;
        let (peer, id) = (s.peer, s.id);
        let held = core::mem::take(&mut s.held_local);
        self.send(peer, id, message, Some(handle));
        for c in held {
            self.send(peer, id, PeerMessage::Candidate(c), Some(handle));
        }
        if kind == SdpKind::Answer {
            self.offer_if_wanted(handle);
        }
    }

    /// A local ICE candidate of `handle` was gathered: trickle it.
    pub fn rtc_local_candidate(&mut self, handle: Handle, candidate: Candidate) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        if !s.local_sent {
            if s.held_local.len() < MAX_HELD_CANDIDATES {
                s.held_local.push(candidate);
            }
            return;
        }
        let (peer, id) = (s.peer, s.id);
        self.send(peer, id, PeerMessage::Candidate(candidate), Some(handle));
    }

    /// The data channel of `handle` is open.
    pub fn rtc_channel_open(&mut self, handle: Handle) {
        let Some(s) = self.sessions.get_mut(&handle) else { return };
        if s.phase == Phase::Open {
            return;
        }
        s.phase = Phase::Open;
        s.deadline = None;
        let waiters = core::mem::take(&mut s.waiters);
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
            self.drop_session(handle, true, ClientError::closed("ICE failed"));
        } else {
            self.restart_ice(handle, now);
        }
    }

    /// ICE of `handle` is connected (again).
    pub fn rtc_ice_connected(&mut self, handle: Handle) {
        if let Some(s) = self.sessions.get_mut(&handle)
            && s.phase == Phase::Open
        {
            s.deadline = None;
        }
    }
}
