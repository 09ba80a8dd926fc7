//! The Datadog sink: v1 JSON series, zlib-compressed, cut into bodies of at most `flush_max_per_body` series
//! (and under the intake's byte limits), POSTed concurrently over one keep-alive client; service checks to
//! `/api/v1/check_run`; events to `/api/v1/events`, one per request.
//!
//! Requests go through the shared [`delivery`](super::delivery) layer (retries, backoff, accounting); a 413
//! splits the body in two and sends the halves (a single series that is still too large is dropped). The API key
//! is sent only in the `DD-API-KEY` header and never logged.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::task::JoinSet;

use super::delivery::{Delivery, Sent};
use super::{CheckRun, Event, Flush, FullName, Series, SeriesKind, Sink, SinkFuture, SinkOutcome};
use crate::config::DatadogConfig;
use crate::telemetry::Telemetry;

/// The intake's limit on a compressed `/api/v1/series` body.
pub const MAX_COMPRESSED_BYTES: usize = 3_200_000;
/// The intake's limit on a decompressed `/api/v1/series` body.
pub const MAX_UNCOMPRESSED_BYTES: usize = 62_914_560;
/// Events are sent one per request; this many at a time.
const EVENT_CONCURRENCY: usize = 8;
/// zlib level: fast, still about 10× on metric JSON.
const COMPRESSION_LEVEL: u32 = 1;

/// A zlib-compressed series body and how many series it holds.
#[derive(Debug, Clone)]
pub struct Body {
    pub compressed: Vec<u8>,
    pub uncompressed_len: usize,
    pub series: usize,
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escaped(out, s);
    out.push('"');
}

/// `s` escaped for a JSON string, without the quotes.
fn json_escaped(out: &mut String, s: &str) {
    // The usual case: nothing to escape, copied whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A series name (base and suffix) as one JSON string.
fn json_name(out: &mut String, name: FullName<'_>) {
    out.push('"');
    json_escaped(out, name.0);
    json_escaped(out, name.1);
    out.push('"');
}

fn json_tags<'a>(out: &mut String, tags: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, t) in tags.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, t);
    }
    out.push(']');
}

/// One series as Datadog v1 JSON. Counters become a per-second `rate` with the interval; everything else is a
/// `gauge`. Returns false (writing nothing) for a non-finite value, which the intake would refuse.
pub fn write_series(out: &mut String, s: &Series, default_host: &str, interval_secs: f64) -> bool {
    let (value, kind) = match s.kind {
        SeriesKind::Counter | SeriesKind::SampleCount => (s.value / interval_secs, "rate"),
        SeriesKind::Gauge => (s.value, "gauge"),
    };
    if !value.is_finite() {
        return false;
    }
    out.push_str("{\"metric\":");
    json_name(out, s.full_name());
    let _ = write!(out, ",\"points\":[[{},{}]],\"type\":\"{kind}\"", s.timestamp, value);
    if matches!(s.kind, SeriesKind::Counter | SeriesKind::SampleCount) {
        // The intake takes whole seconds; a sub-second interval is reported as 1.
        let _ = write!(out, ",\"interval\":{}", (interval_secs.round() as i64).max(1));
    }
    // One pass over the tags: `host:` and `device:` become fields, the rest the tag list.
    let (mut host, mut device) = (None, None);
    out.push_str(",\"tags\":[");
    let mut first = true;
    for t in s.tags.iter() {
        if let Some(h) = t.strip_prefix("host:") {
            host.get_or_insert(h);
        } else if let Some(d) = t.strip_prefix("device:") {
            device.get_or_insert(d);
        } else {
            if !first {
                out.push(',');
            }
            first = false;
            json_str(out, t);
        }
    }
    out.push(']');
    if let Some(host) = host.or((!default_host.is_empty()).then_some(default_host)) {
        out.push_str(",\"host\":");
        json_str(out, host);
    }
    if let Some(device) = device {
        out.push_str(",\"device\":");
        json_str(out, device);
    }
    out.push('}');
    true
}

/// Encodes series into one compressed `{"series":[…]}` body.
pub fn encode_series(series: &[Series], default_host: &str, interval_secs: f64) -> Body {
    let mut json = String::with_capacity(series.len() * 160 + 16);
    json.push_str("{\"series\":[");
    let mut n = 0;
    for s in series {
        let mark = json.len();
        if n > 0 {
            json.push(',');
        }
        if write_series(&mut json, s, default_host, interval_secs) {
            n += 1;
        } else {
            json.truncate(mark);
        }
    }
    json.push_str("]}");
    Body {
        compressed: compress(json.as_bytes()),
        uncompressed_len: json.len(),
        series: n,
    }
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 6 + 64),
        Compression::new(COMPRESSION_LEVEL),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Cuts series into equal chunks of at most `max_per_body`, and encodes each, splitting again any body over the
/// intake's byte limits. A single series too large on its own is dropped (counted in the returned number).
pub fn build_bodies(
    series: &[Series],
    max_per_body: usize,
    default_host: &str,
    interval_secs: f64,
) -> (Vec<(Body, std::ops::Range<usize>)>, usize) {
    let n = series.len();
    let mut out = Vec::new();
    let mut dropped = 0;
    if n == 0 {
        return (out, 0);
    }
    let bodies = n.div_ceil(max_per_body.max(1));
    let chunk = n.div_ceil(bodies);
    let mut stack: Vec<std::ops::Range<usize>> = (0..bodies)
        .map(|i| i * chunk..((i + 1) * chunk).min(n))
        .filter(|r| !r.is_empty())
        .rev()
        .collect();
    while let Some(range) = stack.pop() {
        let body = encode_series(&series[range.clone()], default_host, interval_secs);
        if body.compressed.len() <= MAX_COMPRESSED_BYTES && body.uncompressed_len <= MAX_UNCOMPRESSED_BYTES {
            out.push((body, range));
        } else if range.len() > 1 {
            let mid = range.start + range.len() / 2;
            stack.push(mid..range.end);
            stack.push(range.start..mid);
        } else {
            dropped += 1;
        }
    }
    (out, dropped)
}

/// Service checks as the `/api/v1/check_run` JSON array.
pub fn encode_checks(checks: &[CheckRun], default_host: &str) -> String {
    let mut out = String::from("[");
    for (i, c) in checks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"check\":");
        json_str(&mut out, &c.name);
        out.push_str(",\"host_name\":");
        json_str(&mut out, c.hostname.as_deref().unwrap_or(default_host));
        let _ = write!(
            out,
            ",\"timestamp\":{},\"status\":{},\"message\":",
            c.timestamp,
            c.status.code()
        );
        json_str(&mut out, &c.message);
        out.push_str(",\"tags\":");
        json_tags(&mut out, c.tags.output());
        out.push('}');
    }
    out.push(']');
    out
}

/// One event as the `/api/v1/events` JSON object.
pub fn encode_event(e: &Event, default_host: &str) -> String {
    let mut out = String::from("{\"title\":");
    json_str(&mut out, &e.title);
    out.push_str(",\"text\":");
    json_str(&mut out, &e.text);
    let _ = write!(
        out,
        ",\"date_happened\":{},\"priority\":\"{}\",\"alert_type\":\"{}\"",
        e.timestamp,
        e.priority.as_str(),
        e.alert_type.as_str()
    );
    let host = e.hostname.as_deref().unwrap_or(default_host);
    if !host.is_empty() {
        out.push_str(",\"host\":");
        json_str(&mut out, host);
    }
    if let Some(k) = &e.aggregation_key {
        out.push_str(",\"aggregation_key\":");
        json_str(&mut out, k);
    }
    if let Some(s) = &e.source_type {
        out.push_str(",\"source_type_name\":");
        json_str(&mut out, s);
    }
    out.push_str(",\"tags\":");
    json_tags(&mut out, e.tags.output());
    out.push('}');
    out
}

/// What became of one request.
/// The Datadog sink.
#[derive(Clone)]
pub struct DatadogSink {
    delivery: Delivery,
    cfg: DatadogConfig,
    /// Headers of series bodies (zlib) and of the JSON checks and events.
    compressed: HeaderMap,
    plain: HeaderMap,
}

impl DatadogSink {
    pub fn new(name: impl Into<String>, cfg: DatadogConfig, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let delivery = Delivery::new(&name.into(), telemetry, cfg.retry_queue_max_bytes)?;
        let mut plain = HeaderMap::new();
        let key = HeaderValue::from_str(&cfg.api_key).map_err(|_| "the API key holds characters a header cannot")?;
        plain.insert("DD-API-KEY", key);
        plain.insert("Content-Type", HeaderValue::from_static("application/json"));
        let mut compressed = plain.clone();
        compressed.insert("Content-Encoding", HeaderValue::from_static("deflate"));
        let delivery = if cfg.retry_queue_dir.is_empty() {
            delivery
        } else {
            let base = cfg.api_hostname.trim_end_matches('/').to_string();
            let (z, p) = (compressed.clone(), plain.clone());
            let resolve = move |endpoint: &str| {
                let (name, path, headers) = match endpoint {
                    "series" => ("series", "/api/v1/series", &z),
                    "check_run" => ("check_run", "/api/v1/check_run", &p),
                    "events" => ("events", "/api/v1/events", &p),
                    _ => return None,
                };
                Some((name, format!("{base}{path}"), headers.clone()))
            };
            delivery.with_disk(std::path::Path::new(&cfg.retry_queue_dir), &resolve)?
        };
        Ok(DatadogSink {
            delivery,
            cfg,
            compressed,
            plain,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.cfg.api_hostname.trim_end_matches('/'), path)
    }

    async fn post(&self, endpoint: &'static str, path: &str, body: Vec<u8>, deflate: bool, deadline: Instant) -> Sent {
        let headers = if deflate { &self.compressed } else { &self.plain };
        self.delivery
            .post(endpoint, &self.url(path), headers, Bytes::from(body), deadline)
            .await
    }

    /// Sends a range of series, splitting on 413.
    async fn send_series(
        self: Arc<Self>,
        flush: Arc<Flush>,
        body: Body,
        range: std::ops::Range<usize>,
        deadline: Instant,
    ) -> Vec<&'static str> {
        let mut failures = Vec::new();
        let mut pending = vec![(body, range)];
        let interval = flush.interval.as_secs_f64().max(1e-3);
        while let Some((body, range)) = pending.pop() {
            match self
                .post("series", "/api/v1/series", body.compressed, true, deadline)
                .await
            {
                Sent::Ok => {}
                Sent::TooLarge if range.len() > 1 => {
                    let mid = range.start + range.len() / 2;
                    for r in [range.start..mid, mid..range.end] {
                        let b = encode_series(&flush.series[r.clone()], &flush.hostname, interval);
                        pending.push((b, r));
                    }
                }
                other => failures.extend(other.failure()),
            }
        }
        failures
    }
}

impl Sink for DatadogSink {
    fn name(&self) -> &str {
        self.delivery.sink()
    }

    fn kind(&self) -> &'static str {
        "datadog"
    }

    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + flush.interval;
            // Cloning the sink's handles is cheap (the client is reference-counted) and lets each request run in
            // its own task.
            let me = Arc::new(self.clone());
            let mut tasks: JoinSet<Vec<&'static str>> = JoinSet::new();

            let interval = flush.interval.as_secs_f64().max(1e-3);
            let max = self.cfg.flush_max_per_body;
            let f = flush.clone();
            let built = tokio::task::spawn_blocking(move || build_bodies(&f.series, max, &f.hostname, interval)).await;
            let (bodies, too_large) = built.unwrap_or_default();
            if too_large > 0 {
                self.delivery.count("series", "series_too_large");
            }
            for (body, range) in bodies {
                tasks.spawn(me.clone().send_series(flush.clone(), body, range, deadline));
            }
            // Then what earlier intervals could not deliver, concurrently with this one's.
            let retry = me.clone();
            tasks.spawn(async move { retry.delivery.retry_queued(deadline).await });
            if !flush.checks.is_empty() {
                let body = encode_checks(&flush.checks, &flush.hostname).into_bytes();
                let me = me.clone();
                tasks.spawn(async move {
                    let sent = me.post("check_run", "/api/v1/check_run", body, false, deadline).await;
                    sent.failure().into_iter().collect()
                });
            }
            if !flush.events.is_empty() {
                let me = me.clone();
                let flush = flush.clone();
                tasks.spawn(async move {
                    let mut failures = Vec::new();
                    let mut in_flight = JoinSet::new();
                    for e in &flush.events {
                        if in_flight.len() >= EVENT_CONCURRENCY {
                            if let Some(Ok(r)) = in_flight.join_next().await {
                                failures.extend(r);
                            }
                        }
                        let body = encode_event(e, &flush.hostname).into_bytes();
                        let me = me.clone();
                        in_flight.spawn(async move {
                            me.post("events", "/api/v1/events", body, false, deadline)
                                .await
                                .failure()
                        });
                    }
                    while let Some(r) = in_flight.join_next().await {
                        if let Ok(r) = r {
                            failures.extend(r);
                        }
                    }
                    failures
                });
            }
            let mut failures: Vec<&'static str> = Vec::new();
            while let Some(r) = tasks.join_next().await {
                failures.extend(r.unwrap_or_else(|_| vec!["panicked"]));
            }
            if too_large > 0 {
                failures.push("series_too_large");
            }
            SinkOutcome::from_failures(&failures)
        })
    }
}
