//! The HTTP endpoints (axum): `GET /healthcheck` (200 `ok`, or 503 when unhealthy), `GET /version` and
//! `GET /metrics` (the self-metrics in Prometheus' text format) and `GET /debug/series` (the figures per metric
//! name, for `harrier top`), `GET /debug/capture` (what the server receives, for `harrier capture`). Each answer closes its connection.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::capture::Capture;
use crate::model::{FullName, SeriesKind};
use crate::sink::prometheus::LabelBuilder;
use crate::telemetry::series_table::{SeriesStats, SortBy};
use crate::telemetry::Telemetry;

/// Whether this instance can do its job (`/healthcheck` answers 503 when not; a proxy with no reachable global).
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Endpoints {
    health: Health,
    telemetry: Arc<Telemetry>,
    series: Arc<SeriesStats>,
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
        prometheus_text(&e.telemetry),
    )
}

/// `GET /debug/series?top=N&sort=series|lines|bytes|dropped`: the figures per metric name as of the last flush
/// (JSON, see [`crate::telemetry::series_table::SeriesTable`]); `top` defaults to 20, `sort` to `series`.
async fn debug_series(State(e): State<Endpoints>, uri: Uri) -> Response {
    let (mut top, mut sort) = (20usize, SortBy::Series);
    for pair in uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let ok = match key {
            "top" => value.parse().map(|n| top = n).is_ok(),
            "sort" => value.parse::<SortBy>().map(|s| sort = s).is_ok(),
            _ => false,
        };
        if !ok {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("bad parameter {pair:?}: use top=N and sort=series|lines|bytes|dropped\n"),
            );
        }
    }
    let table = e.series.snapshot(top, sort);
    match serde_json::to_string(&table) {
        Ok(body) => text(StatusCode::OK, "application/json", body),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{err}\n")),
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string())
}

/// Serves until `stop` is raised.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    telemetry: Arc<Telemetry>,
    series: Arc<SeriesStats>,
    capture: Arc<Capture>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/debug/series", get(debug_series))
        .fallback(not_found)
        .with_state(Endpoints {
            health,
            telemetry,
            series,
        })
        .merge(crate::capture::routes(capture));
    let stopped = async move { crate::shutdown::stopped(&mut stop).await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!("HTTP server stopped: {e}");
    }
}

/// Every self-metric in Prometheus' text exposition format (version 0.0.4), as of the last flush: counters as
/// `harrier_…_total` running totals since the start, gauges as their last values; tags become labels by the
/// remote-write sink's rules.
pub fn prometheus_text(telemetry: &Telemetry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut labels = LabelBuilder::default();
    let mut last_name = String::new();
    for (name, tags, kind, value) in telemetry.exposed() {
        let counter = kind != SeriesKind::Gauge;
        labels.start(FullName(&name, ""), counter);
        labels.finish(None, &tags);
        let mut pairs = labels.pairs();
        let Some((_, metric)) = pairs.next() else { continue };
        if metric != last_name {
            let kind = if counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            last_name = metric.to_string();
        }
        out.push_str(metric);
        let mut first = true;
        for (k, v) in pairs {
            out.push(if first { '{' } else { ',' });
            first = false;
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::catalog::IMPORT_ERRORS;

    #[test]
    fn the_exposition_keeps_running_totals_and_escapes_label_values() {
        let t = Telemetry::default();
        t.add(&IMPORT_ERRORS, &["reason:bad \"digest\"\\x"], 2);
        t.collect(1);
        t.add(&IMPORT_ERRORS, &["reason:bad \"digest\"\\x"], 3);
        t.collect(2);
        let text = prometheus_text(&t);
        assert!(text.contains("# TYPE harrier_import_errors_total counter\n"), "{text}");
        assert!(
            text.contains("harrier_import_errors_total{reason=\"bad \\\"digest\\\"\\\\x\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE harrier_flush_duration_ms gauge\n"), "{text}");
    }
}
