//! `GET /debug/capture?duration=30s&max_bytes=N`: starts a capture and streams the file as the answer's body
//! (chunked), 409 when one is under way, 400 naming a bad parameter.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use super::{Capture, CaptureError};

/// A capture's duration without `duration=`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// A capture's compressed size at most, without `max_bytes=`.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// The longest capture asked for.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The router of `GET /debug/capture`, to merge into the server's.
pub fn routes(capture: Arc<Capture>) -> Router {
    Router::new()
        .route("/debug/capture", get(capture_handler))
        .with_state(capture)
}

/// `duration` (`500ms`, `30s`, `2m`; at most a day) and `max_bytes` of a query; absent ones take their default,
/// any other parameter is an error.
pub fn parse_query(query: Option<&str>) -> Result<(Duration, u64), CaptureError> {
    let bad = |name: &str, value: &str, reason: String| CaptureError::Parameter {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    let (mut duration, mut max_bytes) = (DEFAULT_DURATION, DEFAULT_MAX_BYTES);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "duration" => {
                duration = crate::config::parse_duration(value).map_err(|e| bad(name, value, e))?;
                if duration.is_zero() || duration > MAX_DURATION {
                    return Err(bad(name, value, "a capture lasts more than 0s and at most 24h".into()));
                }
            }
            "max_bytes" => {
                max_bytes = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(name, value, "expected a number of bytes above 0".into()))?;
            }
            _ => {
                return Err(bad(
                    name,
                    value,
                    "unknown parameter (expected duration or max_bytes)".into(),
                ))
            }
        }
    }
    Ok((duration, max_bytes))
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        body,
    )
        .into_response()
}

async fn capture_handler(State(capture): State<Arc<Capture>>, RawQuery(query): RawQuery) -> Response {
    let (duration, max_bytes) = match parse_query(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let chunks = match capture.start(duration, max_bytes) {
        Ok(rx) => rx,
        Err(CaptureError::Busy) => {
            return text(
                StatusCode::CONFLICT,
                "a capture is already running (one at a time)\n".to_string(),
            )
        }
        Err(e @ CaptureError::Parameter { .. }) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    tracing::info!("capture started: {duration:?}, at most {max_bytes} bytes");
    let body = Body::from_stream(ReceiverStream::new(chunks).map(Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/zstd")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"capture.harrier.zst\""),
            ),
            (header::CONNECTION, HeaderValue::from_static("close")),
        ],
        body,
    )
        .into_response()
}
