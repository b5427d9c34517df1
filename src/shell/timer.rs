//! One `setTimeout`, owned: dropping it clears the timeout and frees the closure.

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

/// A pending `setTimeout`.
#[derive(Debug)]
pub struct Timeout {
    id: Option<i32>,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `f` once after `ms` milliseconds (unless dropped first).
    pub fn new(ms: u64, f: impl FnMut() + 'static) -> Timeout {
        let callback = Closure::<dyn FnMut()>::new(f);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = web_sys::window().and_then(|w| {
            w.set_timeout_with_callback_and_timeout_and_arguments_0(callback.as_ref().unchecked_ref(), ms)
                .ok()
        });
        Timeout { id, _callback: callback }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let (Some(id), Some(w)) = (self.id, web_sys::window()) {
            w.clear_timeout_with_handle(id);
        }
    }
}
