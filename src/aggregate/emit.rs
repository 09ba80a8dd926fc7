//! How a flushed shard's interval turns into output: series for the sinks (by type and mode: aggregates,
//! percentiles, set estimates) and entries to forward to the global tier.

use super::histogram::Histogram;
use super::key::{Scope, SeriesKey};
use super::report::aggregate_value;
pub use super::report::{EmitConfig, NameSuffix, Summary};
use super::shard::{Entry, Interval, ReducedValue, Value};
use crate::config::Aggregate;
use crate::ddsketch::{lower_bound, DdSketch, GAMMA, NORM_MIN};
use crate::exponential::{self, Knots};
use crate::model::{self as sink, HistogramData, HistogramSeries, Series, SeriesKind, SketchSeries, Suffix};

/// A sketch's values as [`EmitConfig::summarize`] orders a histogram's: aggregates, then percentiles (NaN for the
/// harmonic mean, which a sketch cannot give, and for an empty sketch).
fn sketch_values(cfg: &EmitConfig, s: &DdSketch) -> Vec<f64> {
    if s.is_empty() {
        return vec![f64::NAN; cfg.aggregates.len() + cfg.percentiles.len()];
    }
    let aggregates = cfg.aggregates.iter().map(|(agg, _)| match agg {
        Aggregate::Min => s.min(),
        Aggregate::Max => s.max(),
        Aggregate::Count => s.count() as f64,
        Aggregate::Sum => s.sum(),
        Aggregate::Avg => s.avg(),
        Aggregate::Median => s.quantile(0.5),
        Aggregate::Hmean => f64::NAN,
    });
    let percentiles = cfg.percentiles.iter().map(|(q, _)| s.quantile(*q));
    aggregates.chain(percentiles).collect()
}

/// A histogram reported whole (when [`EmitConfig::exponential`] asked for it) as the flush's
/// [`HistogramSeries`].
fn push_whole(out: &mut sink::Flush, whole: Option<Box<HistogramData>>, key: &SeriesKey, timestamp: i64) {
    if let Some(data) = whole {
        out.histograms.push(HistogramSeries {
            name: key.name.clone(),
            tags: key.tags.clone(),
            timestamp,
            data: *data,
        });
    }
}

/// A DDSketch whole: its exact count, sum, min and max, the percentiles among `values` (see [`sketch_values`]),
/// and buckets from its bins, each bin's weight spread over the values it stands for (key 0, magnitudes below
/// 1e-9, is a point mass at 0). `None` when it is empty.
fn sketch_whole(cfg: &EmitConfig, s: &DdSketch, values: &[f64], max_buckets: usize) -> Option<Box<HistogramData>> {
    if s.is_empty() {
        return None;
    }
    let (min, max) = (s.min(), s.max());
    let half = GAMMA.sqrt();
    let mut knots = Vec::with_capacity(2 * s.bin_count());
    let mut rank = 0.0;
    for (k, n) in s.bins() {
        let centre = lower_bound(k);
        let (lo, hi) = match k {
            0 => (0.0, 0.0),
            k if k > 0 => (centre / half, centre * half),
            _ => (centre * half, centre / half),
        };
        knots.push((rank, lo.clamp(min, max)));
        rank += f64::from(n);
        knots.push((rank, hi.clamp(min, max)));
    }
    let buckets = exponential::build(Knots(&knots), s.count(), max_buckets);
    Some(Box::new(HistogramData {
        count: s.count() as f64,
        sum: s.sum(),
        min,
        max,
        quantiles: cfg.quantiles(&values[cfg.aggregates.len()..]),
        buckets,
        zero_threshold: NORM_MIN,
    }))
}

/// How aggregate `agg` is reported: a count sums like a counter, the others are gauges.
fn aggregate_kind(agg: Aggregate) -> SeriesKind {
    match agg {
        Aggregate::Count => SeriesKind::SampleCount,
        _ => SeriesKind::Gauge,
    }
}

/// One of a histogram's output series: its name with an aggregate's or percentile's suffix.
fn suffixed(key: &SeriesKey, suffix: &NameSuffix, value: f64, kind: SeriesKind, timestamp: i64) -> Series {
    let (name, suffix) = suffix.apply(&key.name);
    Series {
        name,
        suffix,
        tags: key.tags.clone(),
        value,
        kind,
        timestamp,
    }
}

/// A histogram's reported values (see [`Summary`]) as output series; non-finite ones are left out.
fn push_summary(out: &mut Vec<Series>, cfg: &EmitConfig, values: &[f64], key: &SeriesKey, timestamp: i64) {
    let aggregates = cfg
        .aggregates
        .iter()
        .map(|(agg, suffix)| (suffix, aggregate_kind(*agg)));
    let percentiles = cfg.percentiles.iter().map(|(_, suffix)| (suffix, SeriesKind::Gauge));
    for ((suffix, kind), &value) in aggregates.chain(percentiles).zip(values) {
        if value.is_finite() {
            out.push(suffixed(key, suffix, value, kind, timestamp));
        }
    }
}

/// Counts of what one emission produced, for self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmitCounts {
    pub counters: u64,
    pub gauges: u64,
    pub histograms: u64,
    pub sets: u64,
    pub checks: u64,
    pub events: u64,
    pub timestamped: u64,
    pub forwarded: u64,
    /// Distributions kept as sketches (`distributions: sketch`).
    pub distributions: u64,
}

/// Entries an interval's vector is shrunk by at a time while [`emit`] empties it.
const SHRINK_STEP: usize = 32 * 1024;

/// Turns a shard's interval into output series, checks and events; in local mode, the entries to forward are
/// pushed to `forward`.
pub fn emit(
    state: Interval,
    cfg: &EmitConfig,
    timestamp: i64,
    out: &mut sink::Flush,
    forward: &mut Vec<Entry>,
) -> EmitCounts {
    let mut counts = EmitCounts::default();
    let Interval {
        mut series,
        reduced,
        checks,
        events,
        timestamped,
        histograms: _,
        names: _,
        clamped: _,
    } = state;
    counts.timestamped = timestamped.len() as u64;
    out.series.extend(timestamped);
    counts.checks = checks.len() as u64;
    out.checks.extend(checks);
    counts.events = events.len() as u64;
    out.events.extend(events);

    // Taken from the back, and the vector shrunk as it empties, so that the interval's memory is given back while
    // its series become output (at a million series it is 70 MiB: held to the end, it added that to the peak).
    while let Some(entry) = series.pop() {
        if series.capacity() - series.len() >= SHRINK_STEP {
            series.shrink_to_fit();
        }
        emit_entry(entry, cfg, timestamp, out, forward, &mut counts);
    }
    for r in reduced {
        match r.value {
            ReducedValue::Summary(summary) => {
                counts.histograms += 1;
                push_summary(&mut out.series, cfg, &summary.values, &r.key, timestamp);
                push_whole(out, summary.whole, &r.key, timestamp);
            }
            ReducedValue::SetEstimate(v) => {
                counts.sets += 1;
                out.series.push(plain(&r.key, v, SeriesKind::Gauge, timestamp));
            }
        }
    }
    counts
}

/// A series' one output series under its own name (no suffix).
fn plain(key: &SeriesKey, value: f64, kind: SeriesKind, timestamp: i64) -> Series {
    Series {
        name: key.name.clone(),
        suffix: Suffix::default(),
        tags: key.tags.clone(),
        value,
        kind,
        timestamp,
    }
}

/// One series of the interval: reported (as one or several output series), forwarded, or both.
fn emit_entry(
    mut entry: Entry,
    cfg: &EmitConfig,
    timestamp: i64,
    out: &mut sink::Flush,
    forward: &mut Vec<Entry>,
    counts: &mut EmitCounts,
) {
    let scope = entry.key.scope;
    let forward_this = cfg.forwards(scope);
    match &mut entry.value {
        Value::Counter(_) | Value::Gauge(_) if forward_this && scope == Scope::Global => {
            counts.forwarded += 1;
            forward.push(entry);
        }
        Value::Counter(v) => {
            counts.counters += 1;
            out.series.push(plain(&entry.key, *v, SeriesKind::Counter, timestamp));
        }
        Value::Gauge(v) => {
            counts.gauges += 1;
            out.series.push(plain(&entry.key, *v, SeriesKind::Gauge, timestamp));
        }
        Value::Histogram(h) if !forward_this => {
            // Reported here: reduced as a summarizing shard reduces it.
            counts.histograms += 1;
            let summary = cfg.summarize(h);
            push_summary(&mut out.series, cfg, &summary.values, &entry.key, timestamp);
            push_whole(out, summary.whole, &entry.key, timestamp);
        }
        Value::Histogram(h) => {
            counts.histograms += 1;
            // Aggregates: from this instance's own samples, except a global-only series, whose are reported by
            // the global (from the forwarded stats merged into these). The sketch is forwarded.
            if scope != Scope::Global {
                push_aggregates(&mut out.series, cfg, h, &entry.key, timestamp);
            }
            h.compress();
            counts.forwarded += 1;
            forward.push(entry);
        }
        Value::Sketch(_) if forward_this => {
            counts.distributions += 1;
            counts.forwarded += 1;
            forward.push(entry);
        }
        Value::Sketch(sketch) => {
            counts.distributions += 1;
            // For sinks that take no sketches: the configured aggregates and percentiles of the sketch.
            let values = sketch_values(cfg, sketch);
            push_summary(&mut out.sketch_series, cfg, &values, &entry.key, timestamp);
            if let Some(max_buckets) = cfg.exponential {
                let whole = sketch_whole(cfg, sketch, &values, max_buckets);
                push_whole(out, whole, &entry.key, timestamp);
            }
            out.sketches.push(SketchSeries {
                name: entry.key.name.clone(),
                tags: entry.key.tags.clone(),
                timestamp,
                sketch: std::mem::take(sketch),
            });
        }
        Value::Set(_) if forward_this => {
            counts.sets += 1;
            counts.forwarded += 1;
            forward.push(entry);
        }
        Value::Set(s) => {
            counts.sets += 1;
            out.series
                .push(plain(&entry.key, s.estimate(), SeriesKind::Gauge, timestamp));
        }
    }
}

/// A forwarded histogram's aggregates from this instance's own samples (the global reports its percentiles).
fn push_aggregates(out: &mut Vec<Series>, cfg: &EmitConfig, h: &mut Histogram, key: &SeriesKey, timestamp: i64) {
    for (agg, suffix) in &cfg.aggregates {
        let value = aggregate_value(*agg, h);
        if value.is_finite() {
            out.push(suffixed(key, suffix, value, aggregate_kind(*agg), timestamp));
        }
    }
}
