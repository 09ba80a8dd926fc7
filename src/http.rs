//! The HTTP endpoints (axum): `GET /healthcheck` (200 `ok`, or 503 when unhealthy), `GET /version` and
//! `GET /metrics` (the self-metrics in Prometheus' text format). Each answer closes its connection.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::telemetry::Telemetry;

/// Whether this instance can do its job (`/healthcheck` answers 503 when not; a proxy with no reachable global).
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    health: Health,
    telemetry: Arc<Telemetry>,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        body,
    )
        .into_response()
}

async fn healthcheck(State(e): State<Endpoints>) -> Response {
    if (e.health)() {
        text(StatusCode::OK, "text/plain", "ok\n".to_string())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no reachable global\n".to_string(),
        )
    }
}

async fn version() -> Response {
    text(StatusCode::OK, "text/plain", format!("{}\n", crate::VERSION))
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        e.telemetry.prometheus_text(),
    )
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string())
}

/// Serves until `stop` is raised.
pub async fn serve(listener: TcpListener, health: Health, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Endpoints { health, telemetry });
    let stopped = async move { crate::shutdown::stopped(&mut stop).await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!("HTTP server stopped: {e}");
    }
}
