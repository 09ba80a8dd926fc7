//! Self-metrics: counters kept by every stage, emitted each interval as `harrier.*` series through the same
//! sinks (and `GET /metrics`). The rate-limited log is [`crate::logging::LimitedLog`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aggregate::{EmitCounts, TagSet};
pub use crate::logging::LimitedLog;

pub mod catalog;
pub mod series_table;
use crate::model::{Series, SeriesKind, SharedStr};
use crate::protocol::ParseError;
use catalog::Metric;

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// The listener's URL, used as its `listener` tag.
    pub name: String,
    /// Datagrams, stream frames or TCP reads taken in.
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Lines found in what was taken in (counted by the parse stage), since the start: never reset, so that it
    /// can be watched (each flush reports the difference from the last one, see `lines_reported`).
    pub lines: AtomicU64,
    /// `lines` as of the last report.
    pub lines_reported: AtomicU64,
    /// Datagrams, frames or lines longer than `metric_max_length`, dropped whole.
    pub oversize: AtomicU64,
    /// Stream connections accepted.
    pub connections: AtomicU64,
    /// Stream connections closed at once because `max_connections` were open.
    pub refused: AtomicU64,
    /// Socket errors.
    pub errors: AtomicU64,
    /// TLS handshakes that failed (`tls://` listeners): a plaintext client, a refused client certificate, a
    /// timeout.
    pub tls_errors: AtomicU64,
}

impl ListenerStats {
    pub fn new(name: String) -> Self {
        ListenerStats {
            name,
            ..Default::default()
        }
    }
}

/// A self-metric's name and joined tags, the order of `GET /metrics`.
type ExposedKey = (SharedStr, String);
/// A self-metric's tags, kind, and running total (counters) or last value (gauges).
type Exposed = (TagSet, SeriesKind, f64);

/// Every self-metric of a server.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub listeners: Vec<Arc<ListenerStats>>,
    /// Lines rejected by the parser, indexed by [`ParseError::reason_index`].
    pub rejected: [AtomicU64; ParseError::REASONS.len()],
    /// Per-sink outcomes: (sink name, sink kind, result) → count.
    sink_results: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Per-sink flush durations of the last interval: sink name → milliseconds.
    sink_durations: Mutex<BTreeMap<String, f64>>,
    /// Series flushed in the last interval, by type.
    flushed: Mutex<EmitCounts>,
    /// Duration of the last flush (swap + build), in milliseconds, as f64 bits.
    flush_duration_ms: AtomicU64,
    /// Counters reported by the stages (sinks, forwarding, import, drops): metric and tags → value.
    extra: Mutex<BTreeMap<(&'static str, Vec<String>), u64>>,
    /// Gauges set by the stages (e.g. acknowledgements pending per destination): metric and tags → last value.
    gauges: Mutex<BTreeMap<(&'static str, Vec<String>), f64>>,
    /// What `GET /metrics` shows, as of the last collection: counters' running totals since the start and
    /// gauges' last values, by name and tags.
    exposed: Mutex<BTreeMap<ExposedKey, Exposed>>,
}

impl Telemetry {
    pub fn new(listeners: Vec<Arc<ListenerStats>>) -> Self {
        Telemetry {
            listeners,
            ..Default::default()
        }
    }

    pub fn reject(&self, e: &ParseError<'_>) {
        self.rejected[e.reason_index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_sink(&self, name: &str, kind: &'static str, result: &'static str, duration: Duration) {
        let mut results = self.sink_results.lock().unwrap_or_else(|e| e.into_inner());
        *results.entry((name.to_string(), kind, result)).or_default() += 1;
        drop(results);
        let mut durations = self.sink_durations.lock().unwrap_or_else(|e| e.into_inner());
        durations.insert(name.to_string(), duration.as_secs_f64() * 1000.0);
    }

    pub fn record_flush(&self, counts: EmitCounts, duration: Duration) {
        *self.flushed.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        self.flush_duration_ms
            .store((duration.as_secs_f64() * 1000.0).to_bits(), Ordering::Relaxed);
    }

    /// Adds `n` to a counter of the [`catalog`] (tags as `key:value`, with the keys it declares).
    pub fn add(&self, metric: &'static Metric, tags: &[&str], n: u64) {
        debug_assert!(metric.kind == SeriesKind::Counter, "{} is not a counter", metric.name);
        debug_assert!(
            metric.accepts(tags),
            "{} does not declare the tags {tags:?}",
            metric.name
        );
        let mut extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        *extra
            .entry((metric.name, tags.iter().map(|t| t.to_string()).collect()))
            .or_default() += n;
    }

    /// Sets a gauge of the [`catalog`] (reported at every flush with its last value until set again).
    pub fn set(&self, metric: &'static Metric, tags: &[&str], value: f64) {
        debug_assert!(metric.kind == SeriesKind::Gauge, "{} is not a gauge", metric.name);
        debug_assert!(
            metric.accepts(tags),
            "{} does not declare the tags {tags:?}",
            metric.name
        );
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        gauges.insert((metric.name, tags.iter().map(|t| t.to_string()).collect()), value);
    }

    /// The last value of a named gauge with exactly these tags.
    pub fn peek_gauge(&self, name: &str, tags: &[&str]) -> Option<f64> {
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        gauges
            .iter()
            .find(|((n, t), _)| *n == name && t.iter().map(String::as_str).eq(tags.iter().copied()))
            .map(|(_, v)| *v)
    }

    /// The current value of a named counter (summed over its tags, or only those carrying `tag`), without
    /// resetting it.
    pub fn peek(&self, name: &str, tag: &str) -> u64 {
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        extra
            .iter()
            .filter(|((n, tags), _)| *n == name && (tag.is_empty() || tags.iter().any(|t| t == tag)))
            .map(|(_, v)| *v)
            .sum()
    }

    /// The self-metrics since the last call, as series (counters are reset).
    pub fn collect(&self, timestamp: i64) -> Vec<Series> {
        let mut out = Collected {
            timestamp,
            series: Vec::new(),
        };
        self.collect_listeners(&mut out);
        self.collect_flush(&mut out);
        self.collect_reported(&mut out);
        self.expose(&out.series);
        out.series
    }

    fn collect_listeners(&self, out: &mut Collected) {
        use catalog::*;
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed) as f64;
        for l in &self.listeners {
            let tag = format!("listener:{}", l.name);
            let tags = [tag.as_str()];
            out.push(&LISTENER_PACKETS, &tags, take(&l.packets));
            out.push(&LISTENER_BYTES, &tags, take(&l.bytes));
            let lines = l.lines.load(Ordering::Relaxed);
            let before = l.lines_reported.swap(lines, Ordering::Relaxed);
            out.push(&LISTENER_LINES, &tags, lines.saturating_sub(before) as f64);
            out.push(&LISTENER_OVERSIZE, &tags, take(&l.oversize));
            for (metric, counter) in [
                (&LISTENER_CONNECTIONS, &l.connections),
                (&LISTENER_TLS_HANDSHAKE_ERRORS, &l.tls_errors),
                (&LISTENER_CONNECTIONS_REFUSED, &l.refused),
                (&LISTENER_ERRORS, &l.errors),
            ] {
                let n = take(counter);
                if n > 0.0 {
                    out.push(metric, &tags, n);
                }
            }
        }
        for (i, reason) in ParseError::REASONS.iter().enumerate() {
            let n = take(&self.rejected[i]);
            if n > 0.0 {
                let tag = format!("reason:{reason}");
                out.push(&LINES_REJECTED, &[tag.as_str()], n);
            }
        }
    }

    fn collect_flush(&self, out: &mut Collected) {
        use catalog::*;
        let counts = *self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        for (t, n) in [
            ("counter", counts.counters),
            ("gauge", counts.gauges),
            ("histogram", counts.histograms),
            ("distribution", counts.distributions),
            ("set", counts.sets),
            ("service_check", counts.checks),
            ("event", counts.events),
            ("timestamped", counts.timestamped),
            ("forwardable", counts.forwarded),
        ] {
            let tag = format!("type:{t}");
            out.push(&SERIES_FLUSHED, &[tag.as_str()], n as f64);
        }
        let ms = f64::from_bits(self.flush_duration_ms.load(Ordering::Relaxed));
        out.push(&FLUSH_DURATION_MS, &[], ms);
        let results = std::mem::take(&mut *self.sink_results.lock().unwrap_or_else(|e| e.into_inner()));
        for ((name, kind, result), n) in results {
            let tags = [
                format!("sink:{name}"),
                format!("sink_kind:{kind}"),
                format!("result:{result}"),
            ];
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            out.push(&SINK_FLUSHES, &tags, n as f64);
        }
        let durations = std::mem::take(&mut *self.sink_durations.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, ms) in durations {
            let tag = format!("sink:{name}");
            out.push(&SINK_DURATION_MS, &[tag.as_str()], ms);
        }
    }

    /// The counters and gauges the stages reported through [`Telemetry::add`] and [`Telemetry::set`].
    fn collect_reported(&self, out: &mut Collected) {
        let extra = std::mem::take(&mut *self.extra.lock().unwrap_or_else(|e| e.into_inner()));
        for ((name, tags), n) in extra {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            out.push_named(name, &tags, n as f64, SeriesKind::Counter);
        }
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((name, tags), v) in gauges {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            out.push_named(name, &tags, v, SeriesKind::Gauge);
        }
    }

    /// Keeps what `GET /metrics` shows: counters' running totals, gauges' last values.
    fn expose(&self, series: &[Series]) {
        let mut exposed = self.exposed.lock().unwrap_or_else(|e| e.into_inner());
        for s in series {
            let key = (s.name.clone(), s.tags.joined().to_string());
            let e = exposed.entry(key).or_insert((s.tags.clone(), s.kind, 0.0));
            e.2 = if s.kind == SeriesKind::Gauge {
                s.value
            } else {
                e.2 + s.value
            };
        }
    }

    /// Every self-metric as of the last flush, in name order: counters' running totals since the start and gauges'
    /// last values (what `GET /metrics` shows).
    pub fn exposed(&self) -> Vec<(SharedStr, TagSet, SeriesKind, f64)> {
        let exposed = self.exposed.lock().unwrap_or_else(|e| e.into_inner());
        exposed
            .iter()
            .map(|((name, _), (tags, kind, value))| (name.clone(), tags.clone(), *kind, *value))
            .collect()
    }
}

/// The series of one collection.
struct Collected {
    timestamp: i64,
    series: Vec<Series>,
}

impl Collected {
    fn push(&mut self, metric: &'static Metric, tags: &[&str], value: f64) {
        debug_assert!(
            metric.accepts(tags),
            "{} does not declare the tags {tags:?}",
            metric.name
        );
        self.push_named(metric.name, tags, value, metric.kind);
    }

    fn push_named(&mut self, name: &str, tags: &[&str], value: f64, kind: SeriesKind) {
        self.series.push(Series {
            name: name.into(),
            suffix: Default::default(),
            tags: TagSet::from_tags(tags),
            value,
            kind,
            timestamp: self.timestamp,
        });
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
