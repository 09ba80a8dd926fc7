//! A flush as OTLP `ExportMetricsServiceRequest`s: data points grouped by host (one `ResourceMetrics` per
//! `host.name`) and by metric, at most `max_points` data points per request. The mapping is in the module
//! documentation of [`super`] and in the README's OTLP sink section.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use hashbrown::hash_table::{Entry, HashTable};
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{HistogramFormat, Temporality};
use crate::model::{Flush, HistogramSeries, Series, SeriesKind, TagSet};
use crate::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::otlp::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets as OtlpBuckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use crate::otlp::proto::resource::v1::Resource;

/// How a sink encodes (from its configuration).
#[derive(Debug, Clone)]
pub struct Options {
    pub temporality: Temporality,
    pub histogram_format: HistogramFormat,
    pub max_buckets: usize,
    pub counter_expiry: Duration,
    pub max_points: usize,
}

/// A cumulative counter stream's running total.
#[derive(Debug, Clone)]
struct Total {
    name: Box<str>,
    tags: TagSet,
    value: f64,
    start_ns: u64,
    /// The last flush (Unix seconds) that had it.
    seen: i64,
}

/// The running totals of `temporality: cumulative`, by stream (name and tags), found by hash without allocating.
#[derive(Debug, Default)]
pub struct Totals {
    totals: HashTable<(u64, Total)>,
}

impl Totals {
    /// Streams whose totals are kept.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// The running total of stream (`name`, `tags`), created at 0 from `start_ns` the first time.
    fn get(&mut self, name: &str, tags: &TagSet, start_ns: u64, now: i64) -> &mut Total {
        let hash = xxh3_64(name.as_bytes()) ^ xxh3_64(tags.joined().as_bytes()).rotate_left(1);
        let same = |e: &(u64, Total)| e.0 == hash && &*e.1.name == name && e.1.tags == *tags;
        match self.totals.entry(hash, same, |e| e.0) {
            Entry::Occupied(o) => &mut o.into_mut().1,
            Entry::Vacant(v) => {
                let total = Total {
                    name: name.into(),
                    tags: tags.clone(),
                    value: 0.0,
                    start_ns,
                    seen: now,
                };
                &mut v.insert((hash, total)).into_mut().1
            }
        }
    }
}

/// Unix seconds as OTLP nanoseconds (0 before the epoch).
fn nanos(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0).saturating_mul(1_000_000_000)
}

/// The data-point attributes of a tag set: every tag but `host:` (the resource's), `key:value` as key = value, a
/// tag without `:` as its key with an empty value; tags of one key (sorted, so adjacent) as one attribute whose
/// value joins theirs with `,` (attribute keys must be distinct).
pub fn attributes(tags: &TagSet) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::with_capacity(tags.len());
    for tag in tags.iter().filter(|t| !t.starts_with("host:")) {
        let (key, value) = tag.split_once(':').unwrap_or((tag, ""));
        if let Some(last) = out.last_mut().filter(|kv| kv.key == key) {
            if let Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }) = &mut last.value
            {
                v.push(',');
                v.push_str(value);
            }
            continue;
        }
        out.push(string_attribute(key, value));
    }
    out
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// Never called: a metric always has its data.
fn data_placeholder() -> Data {
    Data::Gauge(Gauge::default())
}

/// Which of a metric's data kinds a point is (a name may be sent as several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sum,
    Gauge,
    Exponential,
    Summary,
}

/// One host's metrics of the request being built.
#[derive(Default)]
struct Host {
    name: Option<String>,
    metrics: Vec<Metric>,
    /// Index in `metrics` by name, one map per [`Kind`].
    by_name: [HashMap<String, usize>; 4],
}

/// The requests of one flush, being built.
struct Builder<'a> {
    opts: &'a Options,
    /// Few (a flush's hosts): found by a linear search.
    hosts: Vec<Host>,
    points: usize,
    done: Vec<ExportMetricsServiceRequest>,
    /// A series' full name, written here (not allocated per series).
    name: String,
}

impl<'a> Builder<'a> {
    fn new(opts: &'a Options) -> Self {
        Builder {
            opts,
            hosts: Vec::new(),
            points: 0,
            done: Vec::new(),
            name: String::new(),
        }
    }

    /// The data of metric `name` of `kind` for `host`, created by `data` the first time.
    fn metric(&mut self, host: Option<&str>, name: &str, kind: Kind, data: impl FnOnce() -> Data) -> &mut Data {
        let h = match self.hosts.iter().position(|h| h.name.as_deref() == host) {
            Some(h) => h,
            None => {
                self.hosts.push(Host {
                    name: host.map(str::to_string),
                    ..Host::default()
                });
                self.hosts.len() - 1
            }
        };
        let host = &mut self.hosts[h];
        let by_name = &mut host.by_name[kind as usize];
        let m = match by_name.get(name) {
            Some(&m) => m,
            None => {
                host.metrics.push(Metric {
                    name: name.to_string(),
                    data: Some(data()),
                    ..Metric::default()
                });
                by_name.insert(name.to_string(), host.metrics.len() - 1);
                host.metrics.len() - 1
            }
        };
        self.points += 1;
        // Every metric is created with its data just above.
        host.metrics[m].data.get_or_insert_with(data_placeholder)
    }

    /// Ends the request being built if it holds `max_points`.
    fn cut_if_full(&mut self) {
        if self.points >= self.opts.max_points.max(1) {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.points == 0 {
            return;
        }
        let scope = InstrumentationScope {
            name: "harrier".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..InstrumentationScope::default()
        };
        let resource_metrics = std::mem::take(&mut self.hosts)
            .into_iter()
            .map(|h| ResourceMetrics {
                resource: Some(Resource {
                    attributes: h.name.iter().map(|n| string_attribute("host.name", n)).collect(),
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics: h.metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            })
            .collect();
        self.points = 0;
        self.done.push(ExportMetricsServiceRequest { resource_metrics });
    }

    /// A counter or gauge series' data point.
    fn series(&mut self, s: &Series, default_host: &str, interval_ns: u64, totals: &mut Totals, now: i64) {
        let time = nanos(s.timestamp);
        let mut name = std::mem::take(&mut self.name);
        name.clear();
        let _ = write!(name, "{}", s.full_name());
        let attributes = attributes(&s.tags);
        let host = s.host(default_host);
        let point = |value: f64, start: u64| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..NumberDataPoint::default()
        };
        let (point, kind) = match (s.kind, self.opts.temporality) {
            (SeriesKind::Counter, Temporality::Delta) => (point(s.value, time.saturating_sub(interval_ns)), Kind::Sum),
            (SeriesKind::Counter, Temporality::Cumulative) => {
                let total = totals.get(&name, &s.tags, time.saturating_sub(interval_ns), now);
                total.value = (total.value + s.value).clamp(-f64::MAX, f64::MAX);
                total.seen = now;
                (point(total.value, total.start_ns), Kind::Sum)
            }
            // Gauges, set estimates, and a forwarded histogram's own aggregates (a local's).
            (SeriesKind::Gauge | SeriesKind::SampleCount, _) => (point(s.value, 0), Kind::Gauge),
        };
        let temporality = match self.opts.temporality {
            Temporality::Delta => AggregationTemporality::Delta,
            Temporality::Cumulative => AggregationTemporality::Cumulative,
        };
        let data = self.metric(host, &name, kind, || match kind {
            Kind::Sum => Data::Sum(Sum {
                aggregation_temporality: temporality as i32,
                is_monotonic: true,
                ..Sum::default()
            }),
            _ => Data::Gauge(Gauge::default()),
        });
        match data {
            Data::Sum(sum) => sum.data_points.push(point),
            Data::Gauge(gauge) => gauge.data_points.push(point),
            _ => {}
        }
        self.name = name;
        self.cut_if_full();
    }

    /// A histogram's data point: an exponential histogram, or a summary.
    fn histogram(&mut self, h: &HistogramSeries, default_host: &str, interval_ns: u64) {
        let d = &h.data;
        let time = nanos(h.timestamp);
        let start = time.saturating_sub(interval_ns);
        let attributes = attributes(&h.tags);
        let host = h.tags.host().or((!default_host.is_empty()).then_some(default_host));
        let count = d.count.round().max(0.0) as u64;
        match self.opts.histogram_format {
            HistogramFormat::Exponential => {
                let mut b = d.buckets.clone();
                b.downscale_to(self.opts.max_buckets);
                let side = |s: crate::model::Buckets| OtlpBuckets {
                    offset: s.offset,
                    bucket_counts: s.counts,
                };
                let point = ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum: d.sum.is_finite().then_some(d.sum),
                    scale: b.scale,
                    zero_count: b.zero_count,
                    positive: Some(side(b.positive)),
                    negative: Some(side(b.negative)),
                    min: d.min.is_finite().then_some(d.min),
                    max: d.max.is_finite().then_some(d.max),
                    zero_threshold: d.zero_threshold,
                    ..ExponentialHistogramDataPoint::default()
                };
                let data = self.metric(host, &h.name, Kind::Exponential, || {
                    Data::ExponentialHistogram(ExponentialHistogram {
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        ..ExponentialHistogram::default()
                    })
                });
                if let Data::ExponentialHistogram(e) = data {
                    e.data_points.push(point);
                }
            }
            HistogramFormat::Summary => {
                let point = SummaryDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum: if d.sum.is_finite() { d.sum } else { 0.0 },
                    quantile_values: d
                        .quantiles
                        .iter()
                        .map(|&(quantile, value)| ValueAtQuantile { quantile, value })
                        .collect(),
                    ..SummaryDataPoint::default()
                };
                let data = self.metric(host, &h.name, Kind::Summary, || Data::Summary(Summary::default()));
                if let Data::Summary(s) = data {
                    s.data_points.push(point);
                }
            }
        }
        self.cut_if_full();
    }
}

/// Encodes a flush as requests of at most `opts.max_points` data points, adding counters to their running
/// `totals` under `temporality: cumulative` (first forgetting those idle for longer than the expiry). A series
/// that is one of a whole histogram's aggregates or percentiles (`.max`, `.99percentile`) is left out: the
/// histogram's data point carries it.
pub fn encode(flush: &Flush, opts: &Options, totals: &mut Totals) -> Vec<ExportMetricsServiceRequest> {
    let interval_ns = u64::try_from(flush.interval.as_nanos()).unwrap_or(u64::MAX);
    let whole: HashSet<(&str, &TagSet)> = flush.histograms.iter().map(|h| (&*h.name, &h.tags)).collect();
    // A stream idle for longer than the expiry starts again (with a new start time).
    let expiry = i64::try_from(opts.counter_expiry.as_secs()).unwrap_or(i64::MAX);
    totals
        .totals
        .retain(|(_, t)| t.seen >= flush.timestamp.saturating_sub(expiry));
    let mut b = Builder::new(opts);
    for s in flush.all_series() {
        if !s.value.is_finite() || (!s.suffix.as_str().is_empty() && whole.contains(&(&*s.name, &s.tags))) {
            continue;
        }
        b.series(s, &flush.hostname, interval_ns, totals, flush.timestamp);
    }
    for h in &flush.histograms {
        b.histogram(h, &flush.hostname, interval_ns);
    }
    b.cut();
    b.done
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
