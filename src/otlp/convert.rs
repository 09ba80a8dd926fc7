//! An OTLP export request as series entries for the shards, per data point type:
//! - `Sum`: delta → a counter of the value (signed when not monotonic); cumulative and monotonic → a counter of the
//!   difference since the stream's point before ([`super::cumulative`]: a reset starts a new total); cumulative and
//!   not monotonic (an up-down counter's level) → a gauge of the value.
//! - `Gauge` → a gauge (the last point of a request wins, as the last line does).
//! - `Histogram` and `ExponentialHistogram` (delta, or cumulative by difference) → merged into the series'
//!   distribution state (type `d`: a t-digest, or the DDSketch under `distributions: sketch`), so that a local
//!   forwards it to the global like any distribution. Count, sum, min and max are exact where the point carries
//!   them (a cumulative point's delta has min/max only when they moved); the digest is rebuilt from the buckets,
//!   each bucket's count spread evenly over its range (clamped to min/max).
//! - `Summary` → a gauge per quantile, tagged `quantile:<q>`.
//!
//! Points are aggregated into the interval they arrive in (their timestamps are not used). A point flagged "no
//! recorded value" is skipped. A point that cannot be taken (a NaN or infinite value, an unspecified temporality,
//! buckets that do not match their bounds or count, an empty name) is rejected and counted by reason; the rest of
//! the request is still taken, and the answer's `partial_success` says how many were rejected and why.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_128;

use super::attributes;
use super::cumulative::{Added, Hist, Shape, Span, Streams};
use super::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use super::proto::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint,
};
use crate::aggregate::{Entry, ExtendTags, Histogram, Scope, SeriesKey, Stats, TagSet, Value};
use crate::ddsketch::DdSketch;
use crate::protocol::MetricKind;

/// How points become series.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub extend: Arc<ExtendTags>,
    /// `otlp_resource_attributes_as_tags`.
    pub resource_tags: bool,
    /// `distributions: sketch`: histograms become DDSketches.
    pub sketches: bool,
}

/// Data point types, as counted.
pub const POINT_TYPES: [&str; 5] = ["sum", "gauge", "histogram", "exponential_histogram", "summary"];

/// What one request gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub entries: Vec<Entry>,
    /// Points taken, by [`POINT_TYPES`].
    pub points: [u64; 5],
    /// Points rejected, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// The first rejection, described.
    pub message: String,
}

impl Outcome {
    pub fn rejected_points(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// What a cumulative point adds: its difference, or `None` when it only primed its stream (a point taken, of
    /// type `type_index`) or its stream found no room (a point rejected).
    fn delta_of<T>(&mut self, added: Added<T>, type_index: usize, metric: &str) -> Option<T> {
        match added {
            Added::Delta(d) => Some(d),
            Added::Primed => {
                self.points[type_index] += 1;
                None
            }
            Added::Full => {
                self.reject("too_many_streams", metric);
                None
            }
        }
    }

    fn reject(&mut self, reason: &'static str, metric: &str) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
        if self.message.is_empty() {
            self.message = format!("metric {metric:?}: a data point was rejected: {reason}");
        }
    }
}

/// Turns requests into entries, keeping the cumulative streams between them.
#[derive(Debug, Default)]
pub struct Converter {
    opts: Options,
    streams: Mutex<Streams>,
}

/// A histogram point as the conversion takes it: start time, attributes, and its data (`Ok(None)`: no recorded
/// value; `Err`: the reason it is rejected).
type HistPoint<'p> = (
    u64,
    &'p [super::proto::common::v1::KeyValue],
    Result<Option<Hist>, &'static str>,
);

/// Where a metric's points come from: their tags and the identity of their streams, so far.
struct Context<'a> {
    tags: &'a [String],
    identity: &'a [u8],
}

impl Converter {
    pub fn new(opts: Options) -> Self {
        Converter {
            opts,
            streams: Mutex::new(Streams::default()),
        }
    }

    /// Cumulative streams held.
    pub fn streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Converts every point of a request.
    pub fn convert(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        let mut out = Outcome::default();
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for rm in &request.resource_metrics {
            let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let tags = attributes::resource_tags(attrs, self.opts.resource_tags);
            let mut identity = Vec::new();
            attributes::identity(attrs, &mut identity);
            for sm in &rm.scope_metrics {
                let mut identity = identity.clone();
                if let Some(scope) = &sm.scope {
                    identity.extend_from_slice(scope.name.as_bytes());
                    identity.push(0);
                    identity.extend_from_slice(scope.version.as_bytes());
                    identity.push(0);
                }
                let cx = Context {
                    tags: &tags,
                    identity: &identity,
                };
                for metric in &sm.metrics {
                    self.metric(metric, &cx, &mut streams, now, &mut out);
                }
            }
        }
        out
    }

    fn metric(&self, m: &Metric, cx: &Context<'_>, streams: &mut Streams, now: Instant, out: &mut Outcome) {
        if m.name.is_empty() {
            out.reject("empty_name", &m.name);
            return;
        }
        let Some(data) = &m.data else { return };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    if let Some(v) = self.number(m, p, out) {
                        out.points[1] += 1;
                        self.push(
                            out,
                            &m.name,
                            MetricKind::Gauge,
                            cx,
                            &p.attributes,
                            None,
                            Value::Gauge(v),
                        );
                    }
                }
            }
            Data::Sum(s) => {
                let temporality = AggregationTemporality::try_from(s.aggregation_temporality);
                for p in &s.data_points {
                    let Some(v) = self.number(m, p, out) else { continue };
                    let value = match temporality {
                        Ok(AggregationTemporality::Delta) => Value::Counter(v),
                        Ok(AggregationTemporality::Cumulative) if !s.is_monotonic => Value::Gauge(v),
                        Ok(AggregationTemporality::Cumulative) => {
                            let id = stream_id(cx, &m.name, &p.attributes);
                            let added = streams.number(id, p.start_time_unix_nano, v, now);
                            let Some(d) = out.delta_of(added, 0, &m.name) else {
                                continue;
                            };
                            Value::Counter(d)
                        }
                        _ => {
                            out.reject("temporality_unspecified", &m.name);
                            continue;
                        }
                    };
                    out.points[0] += 1;
                    let kind = match value {
                        Value::Gauge(_) => MetricKind::Gauge,
                        _ => MetricKind::Counter,
                    };
                    self.push(out, &m.name, kind, cx, &p.attributes, None, value);
                }
            }
            Data::Histogram(h) => {
                let points = h
                    .data_points
                    .iter()
                    .map(|p| (p.start_time_unix_nano, &p.attributes[..], explicit(p)));
                self.histograms(m, cx, h.aggregation_temporality, 2, points, streams, now, out);
            }
            Data::ExponentialHistogram(h) => {
                let points = h
                    .data_points
                    .iter()
                    .map(|p| (p.start_time_unix_nano, &p.attributes[..], exponential(p)));
                self.histograms(m, cx, h.aggregation_temporality, 3, points, streams, now, out);
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    if p.flags & 1 != 0 {
                        continue;
                    }
                    if p.quantile_values
                        .iter()
                        .any(|q| !q.value.is_finite() || !q.quantile.is_finite())
                    {
                        out.reject("not_finite", &m.name);
                        continue;
                    }
                    out.points[4] += 1;
                    for q in &p.quantile_values {
                        let tag = format!("quantile:{}", q.quantile);
                        self.push(
                            out,
                            &m.name,
                            MetricKind::Gauge,
                            cx,
                            &p.attributes,
                            Some(tag),
                            Value::Gauge(q.value),
                        );
                    }
                }
            }
        }
    }

    /// A number point's value; `None` (rejected, or skipped when it has no recorded value) otherwise.
    fn number(&self, m: &Metric, p: &NumberDataPoint, out: &mut Outcome) -> Option<f64> {
        if p.flags & 1 != 0 {
            return None;
        }
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => {
                out.reject("no_value", &m.name);
                return None;
            }
        };
        if !v.is_finite() {
            out.reject("not_finite", &m.name);
            return None;
        }
        Some(v)
    }

    /// A histogram metric's points, explicit or exponential (`type_index` into [`POINT_TYPES`]), each as its start
    /// time, attributes and data.
    #[allow(clippy::too_many_arguments)]
    fn histograms<'p>(
        &self,
        m: &Metric,
        cx: &Context<'_>,
        temporality: i32,
        type_index: usize,
        points: impl Iterator<Item = HistPoint<'p>>,
        streams: &mut Streams,
        now: Instant,
        out: &mut Outcome,
    ) {
        for (start, attrs, hist) in points {
            let hist = match hist {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(reason) => {
                    out.reject(reason, &m.name);
                    continue;
                }
            };
            let delta = match AggregationTemporality::try_from(temporality) {
                Ok(AggregationTemporality::Delta) => hist,
                Ok(AggregationTemporality::Cumulative) => {
                    let added = streams.hist(stream_id(cx, &m.name, attrs), start, &hist, now);
                    let Some(d) = out.delta_of(added, type_index, &m.name) else {
                        continue;
                    };
                    d
                }
                _ => {
                    out.reject("temporality_unspecified", &m.name);
                    continue;
                }
            };
            out.points[type_index] += 1;
            if delta.count > 0 {
                let value = distribution(&delta, self.opts.sketches);
                self.push(out, &m.name, MetricKind::Distribution, cx, attrs, None, value);
            }
        }
    }

    /// One entry: the context's and the point's tags, plus `extra`, with `extend_tags` applied as to a line.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        out: &mut Outcome,
        name: &str,
        kind: MetricKind,
        cx: &Context<'_>,
        attrs: &[super::proto::common::v1::KeyValue],
        extra: Option<String>,
        value: Value,
    ) {
        let mut tags = cx.tags.to_vec();
        attributes::point_tags(attrs, &mut tags);
        tags.extend(extra);
        let key = self.key(name, kind, tags);
        out.entries.push(Entry {
            hash: key.hash(),
            key,
            value,
        });
    }

    /// The key a DogStatsD line with these tags would have: `veneurlocalonly`/`veneurglobalonly` set the scope
    /// (the first wins) and are removed, and `extend_tags` replace the tags of the same key.
    fn key(&self, name: &str, kind: MetricKind, mut tags: Vec<String>) -> SeriesKey {
        let mut scope = None;
        tags.retain(|t| match t.as_str() {
            "veneurlocalonly" => {
                scope.get_or_insert(Scope::Local);
                false
            }
            "veneurglobalonly" => {
                scope.get_or_insert(Scope::Global);
                false
            }
            t => !self.opts.extend.overrides(t),
        });
        tags.extend(self.opts.extend.tags().iter().map(|t| t.to_string()));
        SeriesKey::new(name, kind, scope.unwrap_or(Scope::Mixed), TagSet::from_tags(tags))
    }
}

/// A stream's identity: resource, scope, metric name and the point's attributes.
fn stream_id(cx: &Context<'_>, name: &str, attrs: &[super::proto::common::v1::KeyValue]) -> u128 {
    let mut bytes = cx.identity.to_vec();
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    attributes::identity(attrs, &mut bytes);
    xxh3_128(&bytes)
}

fn finite(v: Option<f64>) -> Result<Option<f64>, &'static str> {
    match v {
        Some(v) if !v.is_finite() => Err("not_finite"),
        v => Ok(v),
    }
}

/// An explicit-bucket point as a [`Hist`]; `Ok(None)` for a point without a recorded value.
fn explicit(p: &HistogramDataPoint) -> Result<Option<Hist>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    let (sum, min, max) = (finite(p.sum)?, finite(p.min)?, finite(p.max)?);
    let bounds = &p.explicit_bounds;
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("bad_bounds");
    }
    if !p.bucket_counts.is_empty() {
        if p.bucket_counts.len() != bounds.len() + 1 {
            return Err("buckets_do_not_match_bounds");
        }
        if p.bucket_counts.iter().try_fold(0u64, |a, &c| a.checked_add(c)) != Some(p.count) {
            return Err("buckets_do_not_match_count");
        }
    }
    let counts = if p.bucket_counts.is_empty() {
        // Count and sum only: one bucket holding everything.
        vec![p.count]
    } else {
        p.bucket_counts.clone()
    };
    Ok(Some(Hist {
        count: p.count,
        sum,
        min,
        max,
        floor: None,
        ceiling: None,
        shape: Shape::Explicit {
            bounds: if p.bucket_counts.is_empty() {
                Vec::new()
            } else {
                bounds.clone()
            },
            counts,
        },
    }))
}

/// An exponential point as a [`Hist`]; `Ok(None)` for a point without a recorded value.
fn exponential(p: &ExponentialHistogramDataPoint) -> Result<Option<Hist>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    let (sum, min, max) = (finite(p.sum)?, finite(p.min)?, finite(p.max)?);
    if !(-10..=20).contains(&p.scale) {
        return Err("bad_scale");
    }
    let side = |b: &Option<super::proto::metrics::v1::exponential_histogram_data_point::Buckets>| {
        b.as_ref()
            .map_or((0, Vec::new()), |b| (b.offset, b.bucket_counts.clone()))
    };
    let (positive, negative) = (side(&p.positive), side(&p.negative));
    // Bucket indexes must stay in i32 at every scale (and base^index finite).
    for (offset, counts) in [&positive, &negative] {
        if (*offset as i64 + counts.len() as i64).abs() > (1i64 << 30) || offset.unsigned_abs() > 1 << 30 {
            return Err("bad_offset");
        }
    }
    let total = [&positive.1, &negative.1]
        .into_iter()
        .flatten()
        .try_fold(p.zero_count, |a, &c| a.checked_add(c));
    if total != Some(p.count) {
        return Err("buckets_do_not_match_count");
    }
    Ok(Some(Hist {
        count: p.count,
        sum,
        min,
        max,
        floor: None,
        ceiling: None,
        shape: Shape::Exponential {
            scale: p.scale,
            zero: p.zero_count,
            positive,
            negative,
        },
    }))
}

/// Points a bucket's count is spread over, at most.
const POINTS_PER_BUCKET: u64 = 8;

/// A span's count spread evenly over its range: (value, weight) pairs of integer weights summing to its count.
fn spread(span: &Span) -> impl Iterator<Item = (f64, u64)> + '_ {
    let k = span.count.clamp(1, POINTS_PER_BUCKET);
    let (base, extra) = (span.count / k, span.count % k);
    (0..k).map(move |j| {
        let v = span.lo + (span.hi - span.lo) * (j as f64 + 0.5) / k as f64;
        (v, base + u64::from(j < extra))
    })
}

/// A histogram delta as the distribution state of a series: its digest (or DDSketch) rebuilt from the buckets,
/// with the exact count, sum, min and max where known.
fn distribution(h: &Hist, sketches: bool) -> Value {
    let spans = h.spans();
    if sketches {
        let mut s = DdSketch::new();
        for span in &spans {
            for (v, w) in spread(span) {
                s.insert(v, u32::try_from(w).unwrap_or(u32::MAX));
            }
        }
        let (k, n) = s.to_wire();
        let exact = DdSketch::from_wire(
            &k,
            &n,
            s.count(),
            h.min.unwrap_or(s.min()),
            h.max.unwrap_or(s.max()),
            h.sum.unwrap_or(s.sum()),
        );
        return Value::Sketch(Box::new(exact.unwrap_or(s)));
    }
    let mut hist = Histogram::default();
    for span in &spans {
        for (v, w) in spread(span) {
            hist.add_weighted(v, w as f64);
        }
    }
    let rebuilt = hist.stats;
    hist.stats = Stats {
        min: h.min.unwrap_or(rebuilt.min),
        max: h.max.unwrap_or(rebuilt.max),
        count: h.count as f64,
        sum: h.sum.unwrap_or(rebuilt.sum),
        reciprocal_sum: rebuilt.reciprocal_sum,
    };
    Value::Histogram(Box::new(hist))
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
