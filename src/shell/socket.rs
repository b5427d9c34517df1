//! One WebSocket to a node, with owned listeners; dropping it detaches them and closes the socket.

use alloc::{string::String, vec::Vec};

use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// What happened on the socket.
#[derive(Debug)]
pub enum SocketEvent {
    /// Connected.
    Open,
    /// A binary frame.
    Frame(Vec<u8>),
    /// Closed, with the close code (1006 when it never opened).
    Closed(u16),
}

/// An open or opening WebSocket.
#[derive(Debug)]
pub struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Opens `url`; `on_event` hears about it. Fails when the URL is invalid.
    pub fn open(url: &str, on_event: impl Fn(SocketEvent) + 'static) -> Result<Socket, String> {
        let ws = WebSocket::new(url).map_err(|e| {
            js_sys::Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_default()
        })?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_event = alloc::rc::Rc::new(on_event);
        let f = on_event.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || f(SocketEvent::Open));
        let f = on_event.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            // Text frames are not part of the protocol; they are ignored.
            if let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() {
                f(SocketEvent::Frame(Uint8Array::new(&buf).to_vec()));
            }
        });
        let f = on_event;
        let on_close =
            Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| f(SocketEvent::Closed(e.code())));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close })
    }

    /// Sends a binary frame (dropped if the socket is not open; the core times out what it waits for).
    pub fn send(&self, frame: &[u8]) {
        let _ = self.ws.send_with_u8_array(frame);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}
