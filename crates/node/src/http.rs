//! Plain HTTP endpoints next to the WebSocket: `/health` now; `/metrics` and `/status` slot in
//! here as more routes on the same state.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::gateway::Shared;

/// The HTTP routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/health", get(health))
}

/// `GET /health`: 200 while the node serves, 503 once it is shutting down.
async fn health(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if *shared.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
