//! The Datadog sink: series as v2 protobuf (the default, [`v2`]) or v1 JSON ([`json`]), compressed, cut into
//! bodies of at most `flush_max_per_body` series (and under the intake's limits), POSTed concurrently over one
//! keep-alive client; service checks to `/api/v1/check_run`; events to `/api/v1/events`, one per request.
//!
//! Requests go through the shared [`delivery`](super::delivery) layer (retries, backoff, accounting); a 413
//! splits the body in two and sends the halves (a single series that is still too large is dropped). The API key
//! is sent only in the `DD-API-KEY` header and never logged.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flate2::write::ZlibEncoder;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::task::JoinSet;

use super::delivery::{Delivery, Sent};
use super::{Flush, Series, Sink, SinkFuture, SinkOutcome};
use crate::config::{Compression, DatadogConfig, SeriesApi};
use crate::telemetry::Telemetry;

pub mod json;
pub mod sketches;
pub mod v2;

pub use json::{
    build_bodies, encode_checks, encode_event, encode_series, write_series, MAX_COMPRESSED_BYTES,
    MAX_UNCOMPRESSED_BYTES,
};

/// The Datadog agent's payload messages (`proto/datadog/agentpayload/agent_payload.proto`), for decoding: the sink
/// writes their wire format directly.
#[allow(clippy::all, missing_docs)]
pub mod payload {
    include!(concat!(env!("OUT_DIR"), "/datadog.agentpayload.rs"));
}

/// A compressed series body and how many series it holds.
#[derive(Debug, Clone)]
pub struct Body {
    pub compressed: Vec<u8>,
    pub uncompressed_len: usize,
    pub series: usize,
}

/// A payload's limits: most series, and bytes compressed and not.
pub struct Limits {
    pub per_body: usize,
    pub compressed: usize,
    pub uncompressed: usize,
}

/// Cuts series into equal chunks of at most `limits.per_body`, and encodes each with `encode`, splitting again
/// any body over the byte limits. A single series too large on its own is dropped (counted in the returned number).
pub fn split_bodies<T>(
    series: &[T],
    limits: &Limits,
    encode: impl Fn(&[T]) -> Body,
) -> (Vec<(Body, std::ops::Range<usize>)>, usize) {
    let n = series.len();
    let mut out = Vec::new();
    let mut dropped = 0;
    if n == 0 {
        return (out, 0);
    }
    let bodies = n.div_ceil(limits.per_body.max(1));
    let chunk = n.div_ceil(bodies);
    let mut stack: Vec<std::ops::Range<usize>> = (0..bodies)
        .map(|i| i * chunk..((i + 1) * chunk).min(n))
        .filter(|r| !r.is_empty())
        .rev()
        .collect();
    while let Some(range) = stack.pop() {
        let body = encode(&series[range.clone()]);
        if body.compressed.len() <= limits.compressed && body.uncompressed_len <= limits.uncompressed {
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

/// Events are sent one per request; this many at a time.
const EVENT_CONCURRENCY: usize = 8;
/// zlib level: fast, still about 10× on metric JSON.
const DEFLATE_LEVEL: u32 = 1;

/// `bytes` as a zlib stream (`Content-Encoding: deflate`).
pub(crate) fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 6 + 64),
        flate2::Compression::new(DEFLATE_LEVEL),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Where one kind of payload goes: its name (self-metrics' `endpoint` tag, and the name of its files in
/// `retry_queue_dir`), URL and headers.
struct Route {
    name: &'static str,
    url: String,
    headers: HeaderMap,
}

/// Every route, by name (files an earlier run queued with other settings still find theirs).
fn routes(cfg: &DatadogConfig) -> Result<Vec<Route>, String> {
    let mut plain = HeaderMap::new();
    let key = HeaderValue::from_str(&cfg.api_key).map_err(|_| "the API key holds characters a header cannot")?;
    plain.insert("DD-API-KEY", key);
    plain.insert("Content-Type", HeaderValue::from_static("application/json"));
    let with = |base: &HeaderMap, content_type: &'static str, encoding: &'static str| {
        let mut h = base.clone();
        h.insert("Content-Type", HeaderValue::from_static(content_type));
        h.insert("Content-Encoding", HeaderValue::from_static(encoding));
        h
    };
    let json_deflate = with(&plain, "application/json", "deflate");
    let proto_zstd = with(&plain, "application/x-protobuf", "zstd");
    let proto_deflate = with(&plain, "application/x-protobuf", "deflate");
    let base = cfg.api_hostname.trim_end_matches('/');
    let route = |name, path: &str, headers: &HeaderMap| Route {
        name,
        url: format!("{base}{path}"),
        headers: headers.clone(),
    };
    Ok(vec![
        route("series", "/api/v1/series", &json_deflate),
        route("series_v2", "/api/v2/series", &proto_zstd),
        route("series_v2_deflate", "/api/v2/series", &proto_deflate),
        route("sketches", "/api/beta/sketches", &proto_zstd),
        route("sketches_deflate", "/api/beta/sketches", &proto_deflate),
        route("check_run", "/api/v1/check_run", &plain),
        route("events", "/api/v1/events", &plain),
    ])
}

/// The Datadog sink.
#[derive(Clone)]
pub struct DatadogSink {
    delivery: Delivery,
    cfg: DatadogConfig,
    routes: Arc<[Route]>,
}

impl DatadogSink {
    pub fn new(name: impl Into<String>, cfg: DatadogConfig, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let routes: Arc<[Route]> = routes(&cfg)?.into();
        let table = routes.clone();
        let resolve = move |endpoint: &str| {
            let r = table.iter().find(|r| r.name == endpoint)?;
            Some((r.name, r.url.clone(), r.headers.clone()))
        };
        let delivery = Delivery::new(&name.into(), telemetry, &cfg.delivery(), &resolve)?;
        Ok(DatadogSink { delivery, cfg, routes })
    }

    /// The route of series payloads, per `series_api` and `compression`.
    fn series_route(&self) -> &'static str {
        match (self.cfg.series_api, self.cfg.compression) {
            (SeriesApi::V1, _) => "series",
            (SeriesApi::V2, Compression::Zstd) => "series_v2",
            (SeriesApi::V2, Compression::Deflate) => "series_v2_deflate",
        }
    }

    /// The route of sketch payloads, per `compression`.
    fn sketch_route(&self) -> &'static str {
        match self.cfg.compression {
            Compression::Zstd => "sketches",
            Compression::Deflate => "sketches_deflate",
        }
    }

    async fn post(&self, route: &'static str, body: Vec<u8>, deadline: Instant) -> Sent {
        let Some(r) = self.routes.iter().find(|r| r.name == route) else {
            return Sent::Dropped("no_route");
        };
        self.delivery
            .post(r.name, &r.url, &r.headers, Bytes::from(body), deadline)
            .await
    }

    /// The series of `flush` as payloads for this sink's series API.
    fn encode(&self, series: &[Series], flush: &Flush) -> Body {
        let interval = flush.interval.as_secs_f64().max(1e-3);
        match self.cfg.series_api {
            SeriesApi::V1 => json::encode_series(series, &flush.hostname, interval),
            SeriesApi::V2 => v2::encode_series(series, &flush.hostname, interval, self.cfg.compression),
        }
    }

    /// Sends the payload of a range of a flush's items (series or sketches) to `route`; on a 413, splits the
    /// range in two and sends each half as `encode` encodes it.
    async fn send_split(
        &self,
        route: &'static str,
        body: Body,
        range: std::ops::Range<usize>,
        deadline: Instant,
        encode: impl Fn(std::ops::Range<usize>) -> Body,
    ) -> Vec<&'static str> {
        let mut failures = Vec::new();
        let mut pending = vec![(body, range)];
        while let Some((body, range)) = pending.pop() {
            match self.post(route, body.compressed, deadline).await {
                Sent::Ok => {}
                Sent::TooLarge if range.len() > 1 => {
                    let mid = range.start + range.len() / 2;
                    for r in [range.start..mid, mid..range.end] {
                        pending.push((encode(r.clone()), r));
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

    fn request_timeout(&self) -> std::time::Duration {
        self.delivery.request_timeout()
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
            let (f, api, compression) = (flush.clone(), self.cfg.series_api, self.cfg.compression);
            let built = tokio::task::spawn_blocking(move || match api {
                SeriesApi::V1 => json::build_bodies(&f.series, max, &f.hostname, interval),
                SeriesApi::V2 => v2::build_payloads(&f.series, max, &f.hostname, interval, compression),
            })
            .await;
            let (bodies, too_large) = built.unwrap_or_default();
            if too_large > 0 {
                self.delivery.count(self.series_route(), "series_too_large");
            }
            for (body, range) in bodies {
                let (me, flush) = (me.clone(), flush.clone());
                tasks.spawn(async move {
                    let encode = |r| me.encode(&flush.series[r], &flush);
                    me.send_split(me.series_route(), body, range, deadline, encode).await
                });
            }
            if !flush.sketches.is_empty() {
                let (f, compression) = (flush.clone(), self.cfg.compression);
                let built = tokio::task::spawn_blocking(move || {
                    sketches::build_payloads(&f.sketches, max, &f.hostname, compression)
                })
                .await;
                let (bodies, too_large) = built.unwrap_or_default();
                if too_large > 0 {
                    self.delivery.count(self.sketch_route(), "sketch_too_large");
                }
                for (body, range) in bodies {
                    let (me, flush) = (me.clone(), flush.clone());
                    tasks.spawn(async move {
                        let compression = me.cfg.compression;
                        let encode = |r| sketches::encode_sketches(&flush.sketches[r], &flush.hostname, compression);
                        me.send_split(me.sketch_route(), body, range, deadline, encode).await
                    });
                }
            }
            // Then what earlier intervals could not deliver, concurrently with this one's.
            let retry = me.clone();
            tasks.spawn(async move { retry.delivery.retry_queued(deadline).await });
            if !flush.checks.is_empty() {
                let body = encode_checks(&flush.checks, &flush.hostname).into_bytes();
                let me = me.clone();
                tasks.spawn(async move {
                    let sent = me.post("check_run", body, deadline).await;
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
                        in_flight.spawn(async move { me.post("events", body, deadline).await.failure() });
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
