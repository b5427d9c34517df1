//! Plain HTTP endpoints next to the WebSocket. None of them changes state; other methods get
//! 405, other paths 404.
//! - `/health`: liveness, 200 while the node serves, 503 once it is shutting down.
//! - `/ready`: readiness, 200 once the first presence sync with the mesh is done (at once
//!   without bootstrap), 503 while starting or shutting down.
//! - `/status`: the whole mesh as JSON ([`crate::status::StatusDoc`]), bounded and cached.
//! - `/metrics`: Prometheus text exposition (OpenMetrics) of the node's one registry.
//! - `/dashboard/` (and `/` without `--static-dir`): the management dashboard, static files
//!   embedded in the binary (`crates/node/dashboard/`), polling `/status`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::gateway::Shared;
use crate::status::Management;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");

/// The HTTP routes; `dashboard_at_root` also serves the dashboard at `/`.
pub(crate) fn routes(management: Arc<Management>, dashboard_at_root: bool) -> Router<Arc<Shared>> {
    let mut mgmt = Router::new()
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css));
    if dashboard_at_root {
        mgmt = mgmt.route("/", get(index));
    }
    Router::new().route("/health", get(health)).merge(mgmt.with_state(management))
}

/// `GET /health`: 200 while the node serves, 503 once it is shutting down.
async fn health(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if *shared.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// `GET /ready`: 200 once synced with the mesh, 503 while starting or shutting down.
async fn ready(State(m): State<Arc<Management>>) -> (StatusCode, &'static str) {
    if m.stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if m.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting: presence not synced with the mesh yet\n")
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /status`: the whole mesh, JSON.
async fn status(State(m): State<Arc<Management>>) -> Response {
    match m.view().await {
        Ok(view) => no_store(
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], view.json.clone())
                .into_response(),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(m): State<Arc<Management>>) -> Response {
    // Refreshes the gauges read from the mesh view (cached, like /status). A stopping node
    // still reports its counters.
    let _ = m.view().await;
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, m.registry()).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response();
    }
    no_store(
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
