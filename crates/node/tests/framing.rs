//! The node's own WebSocket framing over a real socket: fragmented messages, WebSocket pings,
//! a client's close. (Malformed, text and oversize frames are in `limits.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use signal_mesh_proto::{ClientMessage, RequestBody, encode_client};
use support::{Client, config, ok, start};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

#[tokio::test]
async fn a_fragmented_request_is_reassembled_around_a_ping() {
    let node = start(config()).await;
    let mut c = Client::connect(node.local_addr()).await;
    let id = c.take_id();
    let body = RequestBody::Signal {
        to: c.peer(),
        payload: Bytes::from_static(b"in three fragments"),
        ack: signal_mesh_proto::AckMode::Always,
    };
    let frame = encode_client(ClientMessage::Request { id, body });
    let (first, rest) = frame.split_at(3);
    let (second, third) = rest.split_at(rest.len() / 2);
    c.send_ws(Message::Frame(Frame::message(first.to_vec(), OpCode::Data(Data::Binary), false))).await;
    // Control frames may come between the fragments of a message.
    c.send_ws(Message::Ping(Bytes::from_static(b"between"))).await;
    c.send_ws(Message::Frame(Frame::message(second.to_vec(), OpCode::Data(Data::Continue), false))).await;
    c.send_ws(Message::Frame(Frame::message(third.to_vec(), OpCode::Data(Data::Continue), true))).await;
    assert_eq!(c.pong().await, Bytes::from_static(b"between"));
    assert_eq!(c.response(id).await, ok());

    // The connection still works afterwards.
    let other = Client::connect(node.local_addr()).await;
    assert_eq!(c.signal(other.peer(), b"whole").await, ok());
    c.close().await;
    other.close().await;
    node.shutdown().await.unwrap();
}
