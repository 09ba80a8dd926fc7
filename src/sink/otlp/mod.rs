//! The `otlp` sink: each flush as OTLP/HTTP protobuf `ExportMetricsServiceRequest`s, POSTed to
//! `{endpoint}/v1/metrics` (gzip by default) through the shared [`delivery`](super::delivery) layer with the
//! OTLP retry policy: 429, 502, 503 and 504 retried after `Retry-After` when given, every other failure status
//! dropped and counted; a 200 whose `partial_success` rejected data points is logged (rate-limited) and counted in
//! `harrier.sink.otlp_rejected_points{sink}`.
//!
//! The mapping (also in the README's OTLP sink section):
//! - a counter is a monotonic `Sum`, delta (from the interval's start to the flush) or, with `temporality:
//!   cumulative`, the running total since the stream's first interval (forgotten after `counter_expiry` idle);
//! - a gauge and a set's estimate are a `Gauge`;
//! - a histogram, timer or distribution reported here is one `ExponentialHistogram` data point (delta) with its
//!   exact count, sum, min and max, or a `Summary` with `histogram_format: summary`; its aggregate and percentile
//!   series (`.max`, `.99percentile`) are not also sent. A local's forwarded histograms have no data point here
//!   (the global sends the merged one): the local's own aggregates go as gauges, as other sinks get them;
//! - the `host:` tag, else the configured hostname, is the resource's `host.name`; the other tags are the data
//!   point's attributes. Service checks and events are not sent.

mod encode;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::task::JoinSet;

pub use self::encode::{attributes, encode, Options, Totals};
use super::delivery::{Delivery, RetryPolicy};
use super::{Flush, Sink, SinkFuture, SinkOutcome};
use crate::config::{OtlpCompression, OtlpConfig};
use crate::otlp::proto::collector::metrics::v1::ExportMetricsServiceResponse;
use crate::telemetry::catalog::SINK_OTLP_REJECTED;
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("otlp sink");

/// The endpoint's name in self-metrics.
const ENDPOINT: &str = "metrics";

/// The OTLP sink.
pub struct OtlpSink {
    delivery: Delivery,
    url: String,
    headers: HeaderMap,
    compression: OtlpCompression,
    opts: Options,
    totals: Arc<Mutex<Totals>>,
}

/// Reads a 2xx answer: a partial success's rejected data points are logged and counted.
fn partial_success(sink: &str, telemetry: &Telemetry, body: &[u8]) {
    let Ok(resp) = ExportMetricsServiceResponse::decode(body) else {
        return;
    };
    let Some(partial) = resp.partial_success else { return };
    if partial.rejected_data_points > 0 {
        let tag = format!("sink:{sink}");
        telemetry.add(&SINK_OTLP_REJECTED, &[&tag], partial.rejected_data_points as u64);
        let why: String = partial.error_message.chars().take(200).collect();
        LOG.log(|| {
            format!(
                "{sink}: the receiver rejected {} data point(s): {why}",
                partial.rejected_data_points
            )
        });
    }
}

/// Gzips a request body (writing into a Vec cannot fail).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

impl OtlpSink {
    pub fn new(name: &str, cfg: OtlpConfig, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", HeaderValue::from_static("application/x-protobuf"));
        if cfg.compression == OtlpCompression::Gzip {
            headers.insert("Content-Encoding", HeaderValue::from_static("gzip"));
        }
        // Validated with the config; the value is never shown.
        let configured = cfg.header_map().map_err(|k| format!("bad header {k:?}"))?;
        headers.extend(configured);
        let url = cfg.url();
        let (u, h) = (url.clone(), headers.clone());
        let resolve = move |endpoint: &str| (endpoint == ENDPOINT).then(|| (ENDPOINT, u.clone(), h.clone()));
        let (sink, t) = (name.to_string(), telemetry.clone());
        let on_ok = Arc::new(move |body: &[u8]| partial_success(&sink, &t, body));
        let delivery =
            Delivery::new(name, telemetry, &cfg.delivery(), &resolve)?.with_policy(RetryPolicy::Otlp { on_ok });
        Ok(OtlpSink {
            delivery,
            url,
            headers,
            compression: cfg.compression,
            opts: Options {
                temporality: cfg.temporality,
                histogram_format: cfg.histogram_format,
                max_buckets: cfg.max_buckets,
                counter_expiry: cfg.counter_expiry,
                max_points: cfg.max_data_points_per_request,
            },
            totals: Arc::default(),
        })
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        self.delivery.sink()
    }

    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn request_timeout(&self) -> std::time::Duration {
        self.delivery.request_timeout()
    }

    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + flush.interval;
            let (totals, opts, compression) = (self.totals.clone(), self.opts.clone(), self.compression);
            let built = tokio::task::spawn_blocking(move || {
                // A poisoned lock means an earlier encoding panicked; its totals are still usable.
                let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                encode(&flush, &opts, &mut totals)
                    .iter()
                    .map(|r| {
                        let raw = r.encode_to_vec();
                        Bytes::from(match compression {
                            OtlpCompression::Gzip => gzip(&raw),
                            OtlpCompression::None => raw,
                        })
                    })
                    .collect::<Vec<Bytes>>()
            })
            .await;
            let Ok(requests) = built else {
                return SinkOutcome::Failed {
                    reason: "panicked",
                    detail: "encoding the flush panicked".to_string(),
                };
            };
            let mut tasks = JoinSet::new();
            for body in requests {
                let (delivery, headers, url) = (self.delivery.clone(), self.headers.clone(), self.url.clone());
                tasks.spawn(async move { delivery.post(ENDPOINT, &url, &headers, body, deadline).await });
            }
            // Then what earlier intervals could not deliver, concurrently with this one's.
            let retry = self.delivery.clone();
            let retried = tokio::spawn(async move { retry.retry_queued(deadline).await });
            let mut failures: Vec<&'static str> = Vec::new();
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok(sent) => failures.extend(sent.failure()),
                    Err(_) => failures.push("panicked"),
                }
            }
            failures.extend(retried.await.unwrap_or_else(|_| vec!["panicked"]));
            SinkOutcome::from_failures(&failures)
        })
    }
}
