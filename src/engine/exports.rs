//! What the wasm module exports: functions over the engines, which live in one slab and are
//! named by their slot + 1 (never 0, so JavaScript can test the number). Measured against a `#[wasm_bindgen]` class (its `Rc<WasmRefCell<_>>`,
//! borrow checks, `free` and the glue's `FinalizationRegistry`): see BENCHMARKS.md, "Package
//! size, continued". An engine is freed only by [`free`] (the facade's `close()`, also after a
//! failed start); a client that is not closed is never garbage anyway: its socket or its timer
//! holds it.

use alloc::vec::Vec;

use spin::Mutex;
use wasm_bindgen::prelude::wasm_bindgen;

use super::{Engine, out};

/// Every engine, by slot; freed slots are reused.
static ENGINES: Mutex<Vec<Option<Engine>>> = Mutex::new(Vec::new());

fn with<R>(engine: u32, f: impl FnOnce(&mut Engine) -> R) -> Option<R> {
    ENGINES.lock().get_mut((engine as usize).wrapping_sub(1)).and_then(Option::as_mut).map(f)
}

/// Starts an engine (see [`Engine::new`]) and returns its number.
#[wasm_bindgen]
pub fn create(now: f64, config: &[u8], connect_timeout_ms: u32) -> u32 {
    let engine = Some(Engine::new(now, config, connect_timeout_ms));
    let mut slab = ENGINES.lock();
    match slab.iter().position(Option::is_none) {
        Some(i) => {
            slab[i] = engine;
            i as u32 + 1
        }
        None => {
            slab.push(engine);
            slab.len() as u32
        }
    }
}

/// The next output of `engine` (see [`Engine::poll`]); a freed engine has nothing to say.
#[wasm_bindgen]
pub fn poll(engine: u32) -> Vec<u8> {
    with(engine, Engine::poll).unwrap_or_else(|| out::put(out::IDLE, 0, 0, [b""; 3]))
}

/// One input to `engine` (see [`Engine::input`]); ignored after [`free`].
#[wasm_bindgen]
pub fn input(engine: u32, now: f64, kind: u32, a: f64, b: f64, bytes: &[u8]) -> f64 {
    with(engine, |e| e.input(now, kind, a, b, bytes)).unwrap_or(0.0)
}

/// Frees `engine`; its number may name a new engine later.
#[wasm_bindgen]
pub fn free(engine: u32) {
    let gone = ENGINES.lock().get_mut((engine as usize).wrapping_sub(1)).and_then(Option::take);
    drop(gone);
}

/// How many engines are alive: created and not yet freed (for tests).
#[wasm_bindgen(js_name = liveEngines)]
pub fn live_engines() -> u32 {
    Engine::live()
}
