//! One `RTCPeerConnection` and its data channel. Commands from the core run in order (each may
//! await a browser promise); what the browser reports goes back as [`RtcReport`]s. Dropping an
//! [`Rtc`] detaches every listener and closes the channel and the connection.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use js_sys::Reflect;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, EventTarget, RtcConfiguration, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelState,
    RtcIceCandidateInit, RtcIceConnectionState, RtcOfferOptions, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcSdpType, RtcSessionDescriptionInit,
};

use crate::core::{Candidate, ClientError, Code, RtcCommand, SdpKind};

/// What the browser reported about a connection.
#[derive(Debug)]
pub enum RtcReport {
    /// The local offer or answer is set.
    LocalDescription(SdpKind, String),
    /// The browser wants to renegotiate (`negotiationneeded`).
    NegotiationNeeded,
    /// A local ICE candidate.
    LocalCandidate(Candidate),
    /// The data channel is open.
    ChannelOpen,
    /// ICE failed.
    IceFailed,
    /// ICE is connected.
    IceConnected,
    /// The channel closed or a call failed.
    Closed(ClientError),
}

type Report = Rc<dyn Fn(RtcReport)>;
type Listener = (EventTarget, &'static str, Closure<dyn FnMut(Event)>);

struct Shared {
    pc: RtcPeerConnection,
    channel: RefCell<Option<RtcDataChannel>>,
    channel_listeners: RefCell<Vec<Listener>>,
    queue: RefCell<VecDeque<RtcCommand>>,
    busy: Cell<bool>,
    closed: Cell<bool>,
    report: Report,
}

/// A peer connection driven by the core.
pub struct Rtc {
    shared: Rc<Shared>,
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc").finish_non_exhaustive()
    }
}

fn listen(target: &EventTarget, kind: &'static str, f: impl FnMut(Event) + 'static) -> Listener {
    let c = Closure::<dyn FnMut(Event)>::new(f);
    let _ = target.add_event_listener_with_callback(kind, c.as_ref().unchecked_ref());
    (target.clone(), kind, c)
}

fn unlisten(l: &Listener) {
    let _ = l.0.remove_event_listener_with_callback(l.1, l.2.as_ref().unchecked_ref());
}

fn js_error(what: &str, e: &JsValue) -> ClientError {
    let detail =
        Reflect::get(e, &JsValue::from_str("message")).ok().and_then(|m| m.as_string()).unwrap_or_default();
    ClientError::new(Code::Browser, [what, " failed: ", &detail].concat())
}

fn attach_channel(shared: &Shared, channel: RtcDataChannel) {
    let target: &EventTarget = channel.as_ref();
    let r = shared.report.clone();
    let open = listen(target, "open", move |_| r(RtcReport::ChannelOpen));
    let r = shared.report.clone();
    let close = listen(target, "close", move |_| {
        r(RtcReport::Closed(ClientError::closed("the data channel closed")))
    });
    let already_open = channel.ready_state() == RtcDataChannelState::Open;
    shared.channel_listeners.borrow_mut().extend([open, close]);
    *shared.channel.borrow_mut() = Some(channel);
    if already_open {
        (shared.report)(RtcReport::ChannelOpen);
    }
}

impl Rtc {
    /// Creates the peer connection (and, for the initiator, the data channel `label`).
    pub fn new(
        ice_servers: &JsValue,
        initiator: bool,
        label: &str,
        report: impl Fn(RtcReport) + 'static,
    ) -> Result<Rtc, ClientError> {
        let config = RtcConfiguration::new();
        if !ice_servers.is_undefined() {
            config.set_ice_servers(ice_servers);
        }
        let pc = RtcPeerConnection::new_with_configuration(&config)
            .map_err(|e| js_error("new RTCPeerConnection", &e))?;
        let shared = Rc::new(Shared {
            pc: pc.clone(),
            channel: RefCell::new(None),
            channel_listeners: RefCell::new(Vec::new()),
            queue: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            closed: Cell::new(false),
            report: Rc::new(report),
        });
        let target: &EventTarget = pc.as_ref();
        let mut listeners = Vec::new();
        let r = shared.report.clone();
        listeners.push(listen(target, "icecandidate", move |e| {
            let Some(c) = e.dyn_ref::<RtcPeerConnectionIceEvent>().and_then(|e| e.candidate()) else {
                return;
            };
            if c.candidate().is_empty() {
                return;
            }
            let ufrag =
                Reflect::get(&c, &JsValue::from_str("usernameFragment")).ok().and_then(|u| u.as_string());
            r(RtcReport::LocalCandidate(Candidate {
                candidate: c.candidate(),
                sdp_mid: c.sdp_mid().unwrap_or_default(),
                sdp_m_line_index: c.sdp_m_line_index(),
                username_fragment: ufrag.unwrap_or_default(),
            }));
        }));
        let r = shared.report.clone();
        listeners.push(listen(target, "negotiationneeded", move |_| r(RtcReport::NegotiationNeeded)));
        let r = shared.report.clone();
        let p = pc.clone();
        listeners.push(listen(target, "iceconnectionstatechange", move |_| match p.ice_connection_state() {
            RtcIceConnectionState::Failed => r(RtcReport::IceFailed),
            RtcIceConnectionState::Connected | RtcIceConnectionState::Completed => r(RtcReport::IceConnected),
            _ => {}
        }));
        if initiator {
            let channel = pc.create_data_channel(label);
            attach_channel(&shared, channel);
        } else {
            let weak: Weak<Shared> = Rc::downgrade(&shared);
            listeners.push(listen(target, "datachannel", move |e| {
                let (Some(shared), Some(e)) = (weak.upgrade(), e.dyn_ref::<RtcDataChannelEvent>()) else {
                    return;
                };
                if shared.channel.borrow().is_none() && !shared.closed.get() {
                    attach_channel(&shared, e.channel());
                }
            }));
        }
        Ok(Rtc { shared, listeners })
    }

    /// The peer connection.
    pub fn pc(&self) -> &RtcPeerConnection {
        &self.shared.pc
    }

    /// The data channel, once there is one.
    pub fn channel(&self) -> Option<RtcDataChannel> {
        self.shared.channel.borrow().clone()
    }

    /// Queues a command; commands run one after the other.
    pub fn enqueue(&self, cmd: RtcCommand) {
        self.shared.queue.borrow_mut().push_back(cmd);
        if !self.shared.busy.replace(true) {
            wasm_bindgen_futures::spawn_local(run(self.shared.clone()));
        }
    }
}

async fn run(shared: Rc<Shared>) {
    loop {
        let next = shared.queue.borrow_mut().pop_front();
        let Some(cmd) = next else { break };
        if shared.closed.get() {
            break;
        }
        if let Err(e) = exec(&shared, cmd).await {
            if !shared.closed.get() {
                (shared.report)(RtcReport::Closed(e));
            }
            break;
        }
    }
    shared.busy.set(false);
}

async fn wait(what: &str, p: js_sys::Promise) -> Result<JsValue, ClientError> {
    JsFuture::from(p).await.map_err(|e| js_error(what, &e))
}

async fn set_local(shared: &Shared, desc: JsValue, kind: RtcSdpType) -> Result<(), ClientError> {
    let sdp =
        Reflect::get(&desc, &JsValue::from_str("sdp")).ok().and_then(|s| s.as_string()).unwrap_or_default();
    let init = RtcSessionDescriptionInit::new(kind);
    init.set_sdp(&sdp);
    wait("setLocalDescription", shared.pc.set_local_description(&init)).await?;
    let sdp = shared.pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
    if !shared.closed.get() {
        let kind = if kind == RtcSdpType::Offer { SdpKind::Offer } else { SdpKind::Answer };
        (shared.report)(RtcReport::LocalDescription(kind, sdp));
    }
    Ok(())
}

async fn set_remote(shared: &Shared, sdp: &str, kind: RtcSdpType) -> Result<(), ClientError> {
    let init = RtcSessionDescriptionInit::new(kind);
    init.set_sdp(sdp);
    wait("setRemoteDescription", shared.pc.set_remote_description(&init)).await?;
    Ok(())
}

/// After a renegotiation ICE may simply stay connected (the other side saw the failure), and then
/// no state change follows: report the current state so the core stops waiting for it.
fn report_if_connected(shared: &Shared) {
    let state = shared.pc.ice_connection_state();
    if matches!(state, RtcIceConnectionState::Connected | RtcIceConnectionState::Completed)
        && !shared.closed.get()
    {
        (shared.report)(RtcReport::IceConnected);
    }
}

async fn exec(shared: &Shared, cmd: RtcCommand) -> Result<(), ClientError> {
    match cmd {
        RtcCommand::Create { .. } | RtcCommand::Close { .. } => {}
        RtcCommand::CreateOffer { ice_restart, .. } => {
            let opts = RtcOfferOptions::new();
            if ice_restart {
                opts.set_ice_restart(true);
            }
            let offer = wait("createOffer", shared.pc.create_offer_with_rtc_offer_options(&opts)).await?;
            set_local(shared, offer, RtcSdpType::Offer).await?;
        }
        RtcCommand::ApplyOffer { sdp, .. } => {
            set_remote(shared, &sdp, RtcSdpType::Offer).await?;
            let answer = wait("createAnswer", shared.pc.create_answer()).await?;
            set_local(shared, answer, RtcSdpType::Answer).await?;
            report_if_connected(shared);
        }
        RtcCommand::ApplyAnswer { sdp, .. } => {
            set_remote(shared, &sdp, RtcSdpType::Answer).await?;
            report_if_connected(shared);
        }
        RtcCommand::AddCandidate { candidate, .. } => {
            let init = RtcIceCandidateInit::new(&candidate.candidate);
            init.set_sdp_mid(Some(&candidate.sdp_mid));
            init.set_sdp_m_line_index(candidate.sdp_m_line_index);
            if !candidate.username_fragment.is_empty() {
                let _ = Reflect::set(&init, &"usernameFragment".into(), &candidate.username_fragment.into());
            }
            // A candidate the browser cannot use is not fatal: others may work.
            let _ = JsFuture::from(shared.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)))
                .await;
        }
    }
    Ok(())
}

impl Drop for Rtc {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.queue.borrow_mut().clear();
        for l in &self.listeners {
            unlisten(l);
        }
        for l in self.shared.channel_listeners.borrow_mut().drain(..) {
            unlisten(&l);
        }
        if let Some(c) = self.shared.channel.borrow().as_ref() {
            c.close();
        }
        self.shared.pc.close();
    }
}
