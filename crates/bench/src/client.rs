//! An edge-protocol client session over [`WsConn`]: authentication, requests, events.

use std::net::IpAddr;

use signal_mesh_proto::auth::Identity;
use signal_mesh_proto::{
    ClientMessage, Limits, RequestBody, RequestId, ResponseBody, ServerMessage, TopicId, decode_server,
};

use crate::error::BenchError;
use crate::ws::{Incoming, WsConn, WsUrl};

/// Largest server frame the generator accepts (a full lookup page of 32-byte ids is far below).
pub const MAX_SERVER_FRAME: usize = 1 << 20;

/// An authenticated client connection.
#[derive(Debug)]
pub struct Client {
    ws: WsConn,
    next_id: RequestId,
    /// The limits the node announced in its Welcome.
    pub limits: Limits,
}

impl Client {
    /// Connects to `url`, answers the challenge with `identity` and waits for the Welcome.
    pub async fn connect(
        url: &WsUrl,
        source: Option<IpAddr>,
        identity: &Identity,
        seed: u64,
    ) -> Result<Client, BenchError> {
        let mut ws = WsConn::connect(url, source, seed).await?;
        let challenge = match next_message(&mut ws).await? {
            ServerMessage::Challenge(c) => c,
            other => return Err(unexpected("Challenge", &other)),
        };
        ws.queue_message(&ClientMessage::Authenticate(identity.authenticate(&challenge)).into_wire());
        match next_message(&mut ws).await? {
            ServerMessage::Welcome(w) => Ok(Client { ws, next_id: 1, limits: w.limits }),
            other => Err(unexpected("Welcome", &other)),
        }
    }

    /// Queues a request (sent at the next flush or wait) and returns its id.
    pub fn queue_request(&mut self, body: RequestBody) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.ws.queue_message(&ClientMessage::Request { id, body }.into_wire());
        id
    }

    /// Queues any client message.
    pub fn queue(&mut self, msg: ClientMessage) {
        self.ws.queue_message(&msg.into_wire());
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        self.ws.flush().await
    }

    /// The next message from the node (flushing queued output first if it has to wait).
    pub async fn next(&mut self) -> Result<ServerMessage, BenchError> {
        next_message(&mut self.ws).await
    }

    /// Sends a request and waits for its response, skipping events that arrive meanwhile.
    pub async fn request(&mut self, body: RequestBody) -> Result<ResponseBody, BenchError> {
        let id = self.queue_request(body);
        loop {
            match self.next().await? {
                ServerMessage::Response { id: rid, body } if rid == id => return Ok(body),
                ServerMessage::Response { id: rid, .. } => {
                    return Err(BenchError::Protocol(format!("response to unknown request {rid}")));
                }
                ServerMessage::Goodbye { code, reason } => {
                    return Err(BenchError::Node { code, message: reason });
                }
                _ => {}
            }
        }
    }

    /// Joins `topic` and fails unless the node says Ok.
    pub async fn join(&mut self, topic: TopicId, announce: bool) -> Result<(), BenchError> {
        expect_ok(self.request(RequestBody::Join { topic, announce }).await?)
    }

    /// Sends a close frame and flushes it (best effort).
    pub async fn close(mut self) {
        self.ws.queue_close();
        let _ = self.ws.flush().await;
    }
}

/// Turns an error response into an error.
pub fn expect_ok(body: ResponseBody) -> Result<(), BenchError> {
    match body {
        ResponseBody::Ok => Ok(()),
        ResponseBody::Error { code, message } => Err(BenchError::Node { code, message }),
        other => Err(BenchError::Protocol(format!("expected Ok, got {other:?}"))),
    }
}

fn unexpected(wanted: &str, got: &ServerMessage) -> BenchError {
    match got {
        ServerMessage::Goodbye { code, reason } => BenchError::Node { code: *code, message: reason.clone() },
        ServerMessage::Error { code, message } => BenchError::Node { code: *code, message: message.clone() },
        other => BenchError::Protocol(format!("expected {wanted}, got {other:?}")),
    }
}

async fn next_message(ws: &mut WsConn) -> Result<ServerMessage, BenchError> {
    match ws.recv().await? {
        Incoming::Binary(frame) => Ok(decode_server(frame, MAX_SERVER_FRAME)?),
        Incoming::Close(code, reason) => Err(BenchError::Closed { code, reason }),
    }
}
