//! The peer-to-peer signal payload (`peer/v1/peer.proto`) as domain types.

use alloc::string::String;

use bytes::Bytes;
use prost::Message;
use signal_mesh_proto::peer_wire as wire;
use signal_mesh_proto::peer_wire::peer_signal::Kind;

/// A trickled ICE candidate, as `RTCIceCandidateInit` has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// The `candidate:` line; empty for end-of-candidates.
    pub candidate: String,
    /// The media stream id.
    pub sdp_mid: String,
    /// The m-line index, when known.
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment.
    pub username_fragment: String,
}

/// One negotiation message between two peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// An SDP offer; `ice_restart` marks a renegotiation of an existing session.
    Offer {
        /// The SDP.
        sdp: String,
        /// The data channel label.
        label: String,
        /// Whether this restarts ICE on an established session.
        ice_restart: bool,
    },
    /// The SDP answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// An ICE candidate.
    Candidate(Candidate),
    /// The connection was refused.
    Reject {
        /// Why.
        reason: String,
    },
    /// The connection is closed.
    Bye {
        /// Why.
        reason: String,
    },
    /// The responder asks the initiator for an ICE-restart offer.
    RestartIce,
}

/// A [`PeerMessage`] of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSignal {
    /// The session id (non-zero), chosen by the initiator.
    pub session: u64,
    /// The message.
    pub message: PeerMessage,
}

/// Why a payload is not a valid [`PeerSignal`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalDecodeError {
    /// Not protobuf.
    #[error("malformed peer signal")]
    Malformed,
    /// Session zero or no known kind.
    #[error("peer signal has no session or no known kind")]
    Invalid,
}

impl PeerSignal {
    /// The payload bytes.
    pub fn encode(&self) -> Bytes {
        let kind = match &self.message {
            PeerMessage::Offer { sdp, label, ice_restart } => {
                Kind::Offer(wire::Offer { sdp: sdp.clone(), label: label.clone(), ice_restart: *ice_restart })
            }
            PeerMessage::Answer { sdp } => Kind::Answer(wire::Answer { sdp: sdp.clone() }),
            PeerMessage::Candidate(c) => Kind::Candidate(wire::Candidate {
                candidate: c.candidate.clone(),
                sdp_mid: c.sdp_mid.clone(),
                sdp_m_line_index: c.sdp_m_line_index.map(u32::from),
                username_fragment: c.username_fragment.clone(),
            }),
            PeerMessage::Reject { reason } => Kind::Reject(wire::Reject { reason: reason.clone() }),
            PeerMessage::Bye { reason } => Kind::Bye(wire::Bye { reason: reason.clone() }),
            PeerMessage::RestartIce => Kind::RestartIce(wire::RestartIce {}),
        };
        wire::PeerSignal { session: self.session, kind: Some(kind) }.encode_to_vec().into()
    }

    /// Parses a payload received from another peer.
    pub fn decode(payload: Bytes) -> Result<PeerSignal, SignalDecodeError> {
        let w = wire::PeerSignal::decode(payload).map_err(|_| SignalDecodeError::Malformed)?;
        if w.session == 0 {
            return Err(SignalDecodeError::Invalid);
        }
        let message = match w.kind.ok_or(SignalDecodeError::Invalid)? {
            Kind::Offer(o) => PeerMessage::Offer { sdp: o.sdp, label: o.label, ice_restart: o.ice_restart },
            Kind::Answer(a) => PeerMessage::Answer { sdp: a.sdp },
            Kind::Candidate(c) => PeerMessage::Candidate(Candidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_m_line_index: c.sdp_m_line_index.and_then(|i| u16::try_from(i).ok()),
                username_fragment: c.username_fragment,
            }),
            Kind::Reject(r) => PeerMessage::Reject { reason: r.reason },
            Kind::Bye(b) => PeerMessage::Bye { reason: b.reason },
            Kind::RestartIce(_) => PeerMessage::RestartIce,
        };
        Ok(PeerSignal { session: w.session, message })
    }
}

#[cfg(test)]
mod tests {
    use std::string::String;

    use super::*;

    #[test]
    fn every_peer_message_round_trips() {
        let cand = Candidate {
            candidate: "candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host".into(),
            sdp_mid: "0".into(),
            sdp_m_line_index: Some(0),
            username_fragment: "abcd".into(),
        };
        for message in [
            PeerMessage::Offer { sdp: "v=0".into(), label: "chat".into(), ice_restart: false },
            PeerMessage::Offer { sdp: "v=0".into(), label: String::new(), ice_restart: true },
            PeerMessage::Answer { sdp: "v=0 a".into() },
            PeerMessage::Candidate(cand),
            PeerMessage::Candidate(Candidate::default()),
            PeerMessage::Reject { reason: "no".into() },
            PeerMessage::Bye { reason: String::new() },
            PeerMessage::RestartIce,
        ] {
            let s = PeerSignal { session: 42, message };
            assert_eq!(PeerSignal::decode(s.encode()), Ok(s));
        }
    }

    #[test]
    fn garbage_session_zero_and_empty_payloads_are_rejected() {
        assert_eq!(
            PeerSignal::decode(Bytes::from_static(b"\xff\xff\xff")),
            Err(SignalDecodeError::Malformed)
        );
        assert_eq!(PeerSignal::decode(Bytes::new()), Err(SignalDecodeError::Invalid));
        let zero = PeerSignal { session: 0, message: PeerMessage::RestartIce }.encode();
        assert_eq!(PeerSignal::decode(zero), Err(SignalDecodeError::Invalid));
    }
}
