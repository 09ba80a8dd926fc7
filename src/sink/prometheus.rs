//! The Prometheus remote-write sink: each flush as remote-write 1.0 `WriteRequest`s (protobuf, snappy block
//! format), cut into requests of at most `max_samples_per_request` samples and POSTed concurrently through the
//! shared [`delivery`](super::delivery) layer (Prometheus answers 204; 5xx and 429 are retried, 400, an
//! out-of-order or duplicate sample, is not).
//!
//! The mapping (also in the README's Prometheus section):
//! - a counter becomes the cumulative counter `<name>_total`: the sink keeps each series' running total and
//!   adds every interval's sum to it (as statsd_exporter does); a series not received for `counter_expiry` is
//!   forgotten, and starts again from 0 (a counter reset to `rate()`);
//! - a gauge, a set's estimate, and a histogram's or timer's aggregates and percentiles (`.max`, `.count`,
//!   `.99percentile`, …) are gauges, named as the Datadog sink names them;
//! - names: every character outside `[a-zA-Z0-9_:]` becomes `_` (`api.latency.99percentile` →
//!   `api_latency_99percentile`), and a leading digit gets a `_` before it;
//! - tags: `key:value` becomes the label `key="value"` (the key sanitised like a name, without `:`); a tag
//!   without a value (or with an empty one) becomes `key="true"`; repeated keys join their values with `,` in
//!   sorted order (`env:a`, `env:b` → `env="a,b"`); a key that would start with `__` (reserved by Prometheus)
//!   gets a `tag` prefix; the series' host (its `host:` tag, else the configured hostname) is the `host` label;
//! - each sample carries the flush's timestamp (or the line's own `|T`) in milliseconds; two series of one flush
//!   that map to the same name and labels are sent once (the first), since Prometheus refuses the whole
//!   request on a duplicate sample.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::{HashMap, HashTable};
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::task::JoinSet;
use xxhash_rust::xxh3::xxh3_64;

use super::delivery::Delivery;
use super::wire::{ld_len, point_len, put_ld, put_point, put_str};
use super::{Flush, FullName, Series, SeriesKind, Sink, SinkFuture, SinkOutcome};
use crate::aggregate::TagSet;
use crate::config::PrometheusConfig;
use crate::telemetry::Telemetry;

/// The remote-write message types (`proto/prometheus/remote.proto`), for decoding what the sink sends.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// A metric name under Prometheus' rules (`[a-zA-Z_:][a-zA-Z0-9_:]*`), appended to `out`.
pub fn push_metric_name(out: &mut String, name: &str) {
    push_sanitized(out, name, "", true);
}

/// A label name under Prometheus' rules (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`), appended to `out`.
pub fn push_label_name(out: &mut String, name: &str) {
    let start = out.len();
    push_sanitized(out, name, "", false);
    if out[start..].starts_with("__") {
        out.insert_str(start, "tag");
    }
}

/// `s` followed by `more`, sanitised as one name.
fn push_sanitized(out: &mut String, s: &str, more: &str, colon: bool) {
    if s.bytes().chain(more.bytes()).next().is_none_or(|b| b.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().chain(more.chars()).map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
            c
        } else {
            '_'
        }
    }));
}

/// Builds one series' sorted label set (and its protobuf encoding), reusing its buffers between series. The
/// rules are the sink's (see the module documentation); `GET /metrics` uses them too.
#[derive(Default)]
pub struct LabelBuilder {
    /// Label names and values, back to back; `labels` holds (name, value) ranges into it.
    text: String,
    labels: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The encoded `labels` fields of a `TimeSeries`.
    encoded: Vec<u8>,
}

impl LabelBuilder {
    fn push(&mut self, name: impl FnOnce(&mut String), value: &str) {
        let a = self.text.len();
        name(&mut self.text);
        let b = self.text.len();
        self.text.push_str(value);
        self.labels.push((a..b, b..self.text.len()));
    }

    /// Starts a label set with `__name__` (with `_total` for a cumulative counter, unless it already ends so).
    pub fn start(&mut self, name: FullName<'_>, cumulative: bool) {
        self.text.clear();
        self.labels.clear();
        self.push(|t| t.push_str("__name__"), "");
        let name_start = self.text.len();
        push_sanitized(&mut self.text, name.0, name.1, true);
        if cumulative && !self.text[name_start..].ends_with("_total") {
            self.text.push_str("_total");
        }
        self.labels[0].1 = name_start..self.text.len();
    }

    /// The `host` label and one label per tag (a `host:` tag is left to the host label), then sorted by name with
    /// repeated names merged.
    pub fn finish(&mut self, host: Option<&str>, tags: &TagSet) {
        if let Some(host) = host {
            self.push(|t| t.push_str("host"), host);
        }
        for tag in tags.iter() {
            let (key, value) = match tag.split_once(':') {
                Some((k, v)) if !v.is_empty() => (k, v),
                Some((k, _)) => (k, "true"),
                None => (tag, "true"),
            };
            if key == "host" {
                continue;
            }
            self.push(|t| push_label_name(t, key), value);
        }
        let text = &self.text;
        self.labels.sort_by(|a, b| text[a.0.clone()].cmp(&text[b.0.clone()]));
        // Repeated names (two tags with one key, or a tag named like `host`): one label, values joined by ','.
        let mut i = 1;
        while i < self.labels.len() {
            if self.text[self.labels[i].0.clone()] == self.text[self.labels[i - 1].0.clone()] {
                let (prev, this) = (self.labels[i - 1].1.clone(), self.labels[i].1.clone());
                let joined = format!("{},{}", &self.text[prev], &self.text[this]);
                let a = self.text.len();
                self.text.push_str(&joined);
                self.labels[i - 1].1 = a..self.text.len();
                self.labels.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The labels as (name, value), sorted by name; `__name__` among them.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }

    /// Encodes the labels of `s` (with `_total` for a cumulative counter) into `self.encoded`.
    fn build(&mut self, s: &Series, default_host: &str, cumulative: bool) {
        self.start(s.full_name(), cumulative);
        self.finish(s.host(default_host), &s.tags);
        self.encoded.clear();
        for (name, value) in &self.labels {
            let (name, value) = (&self.text[name.clone()], &self.text[value.clone()]);
            put_ld(&mut self.encoded, 1, ld_len(name.len()) + ld_len(value.len()));
            put_str(&mut self.encoded, 1, &[name]);
            put_str(&mut self.encoded, 2, &[value]);
        }
    }
}

/// Appends one `TimeSeries` (the encoded labels and one sample) to a `WriteRequest` being built.
fn push_time_series(out: &mut Vec<u8>, labels: &[u8], value: f64, timestamp_ms: i64) {
    put_ld(out, 1, labels.len() + ld_len(point_len(timestamp_ms)));
    out.extend_from_slice(labels);
    put_point(out, 2, value, timestamp_ms);
}

/// A counter series' running total.
#[derive(Debug, Clone, Copy)]
struct Total {
    value: f64,
    /// When it was last received (the flush's timestamp, ms).
    seen_ms: i64,
}

/// Running totals of the counter series, by their encoded labels, and the last flush's timestamp.
#[derive(Debug, Default)]
pub struct Totals {
    totals: HashMap<Box<[u8]>, Total>,
    last_flush_ms: i64,
}

impl Totals {
    /// Series whose totals are kept.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}

/// Encodes a flush into uncompressed `WriteRequest`s of at most `max_samples` samples each, adding counters to
/// their running `totals` (and forgetting those idle for longer than `expiry`). Returns the requests and how
/// many series were left out as duplicates of another of the same flush.
pub fn encode_flush(flush: &Flush, totals: &mut Totals, max_samples: usize, expiry: Duration) -> (Vec<Vec<u8>>, usize) {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut in_current = 0;
    // The label sets sent so far in this flush, back to back in `sent`, found by hash in `seen`.
    let mut sent: Vec<u8> = Vec::new();
    let mut seen: HashTable<(u64, usize, usize)> =
        HashTable::with_capacity(flush.series.len() + flush.sketch_series.len());
    let mut duplicates = 0;
    let mut labels = LabelBuilder::default();
    // Flushes are stamped in whole seconds; a flush in the same second as the one before (the final flush at
    // shutdown, just after a regular one) goes 1 ms later, since Prometheus refuses a second sample of a series
    // at one timestamp.
    let flush_ms = flush.timestamp.saturating_mul(1000).max(totals.last_flush_ms + 1);
    totals.last_flush_ms = flush_ms;
    for s in flush.all_series() {
        if !s.value.is_finite() {
            continue;
        }
        let cumulative = s.kind == SeriesKind::Counter;
        labels.build(s, &flush.hostname, cumulative);
        let encoded = labels.encoded.as_slice();
        let hash = xxh3_64(encoded);
        if seen
            .find(hash, |&(h, a, b)| h == hash && &sent[a..b] == encoded)
            .is_some()
        {
            duplicates += 1;
            continue;
        }
        let start = sent.len();
        sent.extend_from_slice(encoded);
        seen.insert_unique(hash, (hash, start, sent.len()), |e| e.0);
        let value = if cumulative {
            let total = match totals.totals.get_mut(encoded) {
                Some(total) => total,
                None => totals.totals.entry(encoded.into()).or_insert(Total {
                    value: 0.0,
                    seen_ms: flush_ms,
                }),
            };
            total.value = (total.value + s.value).clamp(-f64::MAX, f64::MAX);
            total.seen_ms = flush_ms;
            total.value
        } else {
            s.value
        };
        let timestamp_ms = if s.timestamp == flush.timestamp {
            flush_ms
        } else {
            s.timestamp.saturating_mul(1000)
        };
        push_time_series(&mut current, &labels.encoded, value, timestamp_ms);
        in_current += 1;
        if in_current >= max_samples {
            requests.push(std::mem::take(&mut current));
            in_current = 0;
        }
    }
    if in_current > 0 {
        requests.push(current);
    }
    let oldest = flush_ms.saturating_sub(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX));
    totals.totals.retain(|_, t| t.seen_ms >= oldest);
    (requests, duplicates)
}

/// Snappy's block format, as remote write wants it.
pub fn compress(request: &[u8]) -> Vec<u8> {
    // Compressing into a Vec cannot fail (an input over 4 GiB would, and requests are far smaller).
    snap::raw::Encoder::new().compress_vec(request).unwrap_or_default()
}

/// The remote-write sink.
pub struct PrometheusSink {
    delivery: Delivery,
    cfg: PrometheusConfig,
    headers: HeaderMap,
    totals: Arc<Mutex<Totals>>,
}

impl PrometheusSink {
    pub fn new(name: &str, cfg: PrometheusConfig, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Encoding", HeaderValue::from_static("snappy"));
        headers.insert("Content-Type", HeaderValue::from_static("application/x-protobuf"));
        headers.insert("X-Prometheus-Remote-Write-Version", HeaderValue::from_static("0.1.0"));
        // Validated with the config; the value is never shown.
        let configured = cfg.header_map().map_err(|k| format!("bad header {k:?}"))?;
        headers.extend(configured);
        let (url, h) = (cfg.url.clone(), headers.clone());
        let resolve = move |endpoint: &str| (endpoint == "write").then(|| ("write", url.clone(), h.clone()));
        let delivery = Delivery::new(name, telemetry, &cfg.delivery(), &resolve)?;
        Ok(PrometheusSink {
            delivery,
            cfg,
            headers,
            totals: Arc::default(),
        })
    }
}

impl Sink for PrometheusSink {
    fn name(&self) -> &str {
        self.delivery.sink()
    }

    fn kind(&self) -> &'static str {
        "prometheus_remote_write"
    }

    fn request_timeout(&self) -> std::time::Duration {
        self.delivery.request_timeout()
    }

    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_> {
        Box::pin(async move {
            let deadline = Instant::now() + flush.interval;
            let (totals, max, expiry) = (
                self.totals.clone(),
                self.cfg.max_samples_per_request,
                self.cfg.counter_expiry,
            );
            let f = flush.clone();
            let built = tokio::task::spawn_blocking(move || {
                // A poisoned lock means an earlier encoding panicked; its totals are still usable.
                let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                let (requests, duplicates) = encode_flush(&f, &mut totals, max, expiry);
                let compressed: Vec<Bytes> = requests.iter().map(|r| Bytes::from(compress(r))).collect();
                (compressed, duplicates)
            })
            .await;
            let Ok((requests, duplicates)) = built else {
                return SinkOutcome::Failed {
                    reason: "panicked",
                    detail: "encoding the flush panicked".to_string(),
                };
            };
            if duplicates > 0 {
                self.delivery.count("write", "duplicate_series");
            }
            let mut tasks = JoinSet::new();
            for body in requests {
                let (delivery, headers, url) = (self.delivery.clone(), self.headers.clone(), self.cfg.url.clone());
                tasks.spawn(async move { delivery.post("write", &url, &headers, body, deadline).await });
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn series(name: &str, tags: &[&str], value: f64, kind: SeriesKind) -> Series {
        Series {
            name: name.into(),
            suffix: Default::default(),
            tags: TagSet::from_tags(tags.iter().copied()),
            value,
            kind,
            timestamp: 1_700_000_000,
        }
    }

    fn flush(series: Vec<Series>) -> Flush {
        Flush {
            timestamp: 1_700_000_000,
            interval: Duration::from_secs(10),
            hostname: "web-1".to_string(),
            series,
            ..Flush::default()
        }
    }

    fn decode(request: &[u8]) -> proto::WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&compress(request))
            .expect("snappy round trip");
        assert_eq!(raw, request);
        proto::WriteRequest::decode(raw.as_slice()).expect("a WriteRequest")
    }

    fn labels(ts: &proto::TimeSeries) -> Vec<(String, String)> {
        ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
    }

    #[test]
    fn names_and_label_names_follow_prometheus_rules() {
        let name = |s: &str| {
            let mut out = String::new();
            push_metric_name(&mut out, s);
            out
        };
        let label = |s: &str| {
            let mut out = String::new();
            push_label_name(&mut out, s);
            out
        };
        assert_eq!(name("api.latency.99percentile"), "api_latency_99percentile");
        assert_eq!(name("5xx-errors/s"), "_5xx_errors_s");
        assert_eq!(name("ünïcode"), "_n_code");
        assert_eq!(label("route.name"), "route_name");
        assert_eq!(label("9lives"), "_9lives");
        assert_eq!(label("__name__"), "tag__name__");
        assert_eq!(label("a:b"), "a_b");
    }

    #[test]
    fn a_flush_encodes_as_a_write_request_with_sorted_labels_and_millisecond_timestamps() {
        let f = flush(vec![
            series(
                "api.latency.max",
                &["route:charges", "env:b", "env:a", "canary"],
                12.5,
                SeriesKind::Gauge,
            ),
            series("deploys", &["host:web-2"], 3.0, SeriesKind::Counter),
            series("api.latency.count", &[], 7.0, SeriesKind::SampleCount),
        ]);
        let (requests, duplicates) = encode_flush(&f, &mut Totals::default(), 5000, Duration::from_secs(600));
        assert_eq!((requests.len(), duplicates), (1, 0));
        let req = decode(&requests[0]);
        assert_eq!(req.timeseries.len(), 3);
        let own = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            labels(&req.timeseries[0]),
            vec![
                own("__name__", "api_latency_max"),
                own("canary", "true"),
                own("env", "a,b"),
                own("host", "web-1"),
                own("route", "charges"),
            ]
        );
        assert_eq!(req.timeseries[0].samples[0].value, 12.5);
        assert_eq!(req.timeseries[0].samples[0].timestamp, 1_700_000_000_000);
        assert_eq!(
            labels(&req.timeseries[1]),
            vec![own("__name__", "deploys_total"), own("host", "web-2")]
        );
        assert_eq!(labels(&req.timeseries[2])[0], own("__name__", "api_latency_count"));
        assert_eq!(
            req.timeseries[2].samples[0].value, 7.0,
            "a histogram's count is the interval's"
        );
    }

    #[test]
    fn counters_are_cumulative_across_flushes_and_forgotten_after_the_expiry() {
        let mut totals = Totals::default();
        let expiry = Duration::from_secs(30);
        let mut value_at = |ts: i64, series: Vec<Series>| {
            let mut f = flush(series);
            f.timestamp = ts;
            f.series.iter_mut().for_each(|s| s.timestamp = ts);
            let (requests, _) = encode_flush(&f, &mut totals, 5000, expiry);
            requests.first().map(|r| decode(r).timeseries[0].samples[0].value)
        };
        assert_eq!(
            value_at(100, vec![series("c", &[], 2.0, SeriesKind::Counter)]),
            Some(2.0)
        );
        assert_eq!(
            value_at(110, vec![series("c", &[], 3.0, SeriesKind::Counter)]),
            Some(5.0)
        );
        assert_eq!(value_at(120, vec![series("g", &[], 1.0, SeriesKind::Gauge)]), Some(1.0));
        assert_eq!(
            value_at(130, vec![series("c", &[], 1.0, SeriesKind::Counter)]),
            Some(6.0)
        );
        // Idle from 130 to 200: forgotten, and starts again.
        assert_eq!(value_at(200, vec![series("g", &[], 1.0, SeriesKind::Gauge)]), Some(1.0));
        assert_eq!(
            value_at(210, vec![series("c", &[], 4.0, SeriesKind::Counter)]),
            Some(4.0)
        );
    }

    #[test]
    fn a_flush_in_the_same_second_as_the_last_is_stamped_one_millisecond_later() {
        let mut totals = Totals::default();
        let stamp = |totals: &mut Totals| {
            let (requests, _) = encode_flush(
                &flush(vec![series("g", &[], 1.0, SeriesKind::Gauge)]),
                totals,
                10,
                Duration::from_secs(600),
            );
            decode(&requests[0]).timeseries[0].samples[0].timestamp
        };
        assert_eq!(stamp(&mut totals), 1_700_000_000_000);
        assert_eq!(stamp(&mut totals), 1_700_000_000_001);
    }

    #[test]
    fn requests_hold_at_most_the_configured_samples_and_a_duplicate_series_is_sent_once() {
        let mut all: Vec<Series> = (0..25)
            .map(|i| series(&format!("g.{i}"), &[], f64::from(i), SeriesKind::Gauge))
            .collect();
        all.push(series("g-0", &[], 99.0, SeriesKind::Gauge)); // sanitises to g_0, like g.0
        let (requests, duplicates) = encode_flush(&flush(all), &mut Totals::default(), 10, Duration::from_secs(600));
        assert_eq!(duplicates, 1);
        let sizes: Vec<usize> = requests.iter().map(|r| decode(r).timeseries.len()).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
    }
}
