//! One aggregation shard: the series whose key hashes to it, owned by one thread, with no lock.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;

use super::histogram::Histogram;
use super::key::{ExtendTags, KeyView, Scope, SeriesKey, TagSet};
use super::set::Set;
use crate::config::{percentile_suffix, Aggregate};
use crate::protocol::{Message, Metric, MetricKind, MetricValue, Tags};
use crate::sink::{self, CheckRun, Series, SeriesKind};

/// The aggregated value of a series.
#[derive(Debug, Clone)]
pub enum Value {
    /// Sum of value / rate.
    Counter(f64),
    /// Last value.
    Gauge(f64),
    Histogram(Box<Histogram>),
    Set(Box<Set>),
}

/// A series and its state.
#[derive(Debug, Clone)]
pub struct Entry {
    pub hash: u64,
    pub key: SeriesKey,
    pub value: Value,
}

/// Why a line reached a shard and was not aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `|T` on a type that cannot be sent unaggregated (histograms, timers, distributions, sets).
    TimestampOnUnsupportedType,
    /// More than [`MAX_TIMESTAMPED`] timestamped points in one interval on one shard.
    TooManyTimestamped,
    /// The line no longer parses (cannot happen for lines the parse stage accepted).
    Unparsable,
}

/// Everything a shard aggregated in one interval.
#[derive(Debug, Default)]
pub struct ShardState {
    pub series: HashTable<Entry>,
    pub checks: HashMap<(Box<str>, Arc<TagSet>), CheckRun>,
    pub events: Vec<sink::Event>,
    /// Counters and gauges with their own `|T` timestamp: passed through unaggregated.
    pub timestamped: Vec<Series>,
}

impl ShardState {
    /// Aggregates one parsed message.
    pub fn add_message(&mut self, msg: Message<'_>, extend: &ExtendTags, now: i64) -> Result<(), Dropped> {
        match msg {
            Message::Metric(m) => self.add_metric(&m, extend),
            Message::ServiceCheck(c) => {
                let tags = Arc::new(canonical_tags(c.tags, extend));
                let hostname = c.hostname.filter(|h| !h.is_empty()).or(tags.host()).map(str::to_string);
                let run = CheckRun {
                    name: c.name.to_string(),
                    status: c.status,
                    timestamp: c.timestamp.unwrap_or(now),
                    hostname,
                    tags: tags.clone(),
                    message: c.message.unwrap_or("").to_string(),
                };
                self.checks.insert((c.name.into(), tags), run);
                Ok(())
            }
            Message::Event(e) => {
                let tags = Arc::new(canonical_tags(e.tags, extend));
                let hostname = e.hostname.filter(|h| !h.is_empty()).or(tags.host()).map(str::to_string);
                self.events.push(sink::Event {
                    title: e.title().into_owned(),
                    text: e.text().into_owned(),
                    timestamp: e.timestamp.unwrap_or(now),
                    hostname,
                    priority: e.priority,
                    alert_type: e.alert_type,
                    aggregation_key: e.aggregation_key.map(str::to_string),
                    source_type: e.source_type.map(str::to_string),
                    tags,
                });
                Ok(())
            }
        }
    }

    /// Aggregates one metric. A known series allocates nothing.
    #[inline]
    pub fn add_metric(&mut self, m: &Metric<'_>, extend: &ExtendTags) -> Result<(), Dropped> {
        let view = KeyView::new(m.name, m.kind, m.tags, extend);
        self.add_metric_with(m, &view, extend)
    }

    /// Aggregates one metric whose key view the caller already computed.
    #[inline]
    pub fn add_metric_with(&mut self, m: &Metric<'_>, view: &KeyView<'_>, extend: &ExtendTags) -> Result<(), Dropped> {
        if let Some(ts) = m.timestamp {
            return self.add_timestamped(m, ts, view, extend);
        }
        let entry = self.entry(view, extend);
        match (&mut entry.value, m.value) {
            (Value::Counter(sum), MetricValue::Numbers(values)) => {
                if values.len() == 1 {
                    *sum += values.first() / m.sample_rate;
                } else {
                    for v in values.iter() {
                        *sum += v / m.sample_rate;
                    }
                }
            }
            (Value::Gauge(last), MetricValue::Numbers(values)) => {
                for v in values.iter() {
                    *last = v;
                }
            }
            (Value::Histogram(h), MetricValue::Numbers(values)) => {
                for v in values.iter() {
                    h.add(v, m.sample_rate);
                }
            }
            (Value::Set(s), MetricValue::SetMember(member)) => s.insert(member.as_bytes()),
            // The kind is part of the key, so the value always matches it.
            _ => return Err(Dropped::Unparsable),
        }
        Ok(())
    }

    /// The entry for a series, created empty if new.
    #[inline]
    pub fn entry(&mut self, view: &KeyView<'_>, extend: &ExtendTags) -> &mut Entry {
        let hash = view.hash;
        match self
            .series
            .entry(hash, |e| e.hash == hash && view.matches(&e.key, extend), |e| e.hash)
        {
            hashbrown::hash_table::Entry::Occupied(o) => o.into_mut(),
            hashbrown::hash_table::Entry::Vacant(v) => v
                .insert(Entry {
                    hash,
                    key: view.to_key(extend),
                    value: empty_value(view.kind),
                })
                .into_mut(),
        }
    }

    fn add_timestamped(
        &mut self,
        m: &Metric<'_>,
        ts: i64,
        view: &KeyView<'_>,
        extend: &ExtendTags,
    ) -> Result<(), Dropped> {
        let (kind, values) = match (m.kind, m.value) {
            (MetricKind::Counter, MetricValue::Numbers(v)) => (SeriesKind::Counter, v),
            (MetricKind::Gauge, MetricValue::Numbers(v)) => (SeriesKind::Gauge, v),
            _ => return Err(Dropped::TimestampOnUnsupportedType),
        };
        if self.timestamped.len() >= MAX_TIMESTAMPED {
            return Err(Dropped::TooManyTimestamped);
        }
        // As in the agent's no-aggregation pipeline: the sample rate does not re-inflate timestamped counts.
        let value = match kind {
            SeriesKind::Counter => values.iter().sum(),
            SeriesKind::Gauge => values.iter().last().unwrap_or(0.0),
        };
        let key = view.to_key(extend);
        self.timestamped.push(Series {
            name: m.name.to_string(),
            tags: key.tags,
            value,
            kind,
            timestamp: ts,
        });
        Ok(())
    }

    /// Merges entries imported from other instances: counters add, gauges are replaced, digests and sets merge.
    /// Histogram stats merge too; an importer sends empty stats where the sender already reported them.
    pub fn import(&mut self, entries: Vec<Entry>) {
        for incoming in entries {
            let hash = incoming.hash;
            let existing = self.series.find_mut(hash, |e| e.hash == hash && e.key == incoming.key);
            let Some(existing) = existing else {
                self.series.insert_unique(hash, incoming, |e| e.hash);
                continue;
            };
            match (&mut existing.value, incoming.value) {
                (Value::Counter(a), Value::Counter(b)) => *a += b,
                (Value::Gauge(a), Value::Gauge(b)) => *a = b,
                (Value::Histogram(a), Value::Histogram(mut b)) => {
                    a.stats.merge(&b.stats);
                    let digest = b.digest().clone();
                    a.merge_digest(digest);
                }
                (Value::Set(a), Value::Set(b)) => a.merge(&b),
                // Same key means same kind, so the values always match.
                _ => {}
            }
        }
    }
}

/// Most `|T` points passed through per shard and interval; more are dropped and counted.
pub const MAX_TIMESTAMPED: usize = 200_000;

fn empty_value(kind: MetricKind) -> Value {
    match kind {
        MetricKind::Counter => Value::Counter(0.0),
        MetricKind::Gauge => Value::Gauge(0.0),
        MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => Value::Histogram(Box::default()),
        MetricKind::Set => Value::Set(Box::default()),
    }
}

fn canonical_tags(tags: Tags<'_>, extend: &ExtendTags) -> TagSet {
    TagSet::from_tags(
        tags.iter()
            .filter(|t| !extend.tags().iter().any(|e| e.split(':').next() == t.split(':').next()))
            .chain(extend.tags().iter().map(|t| &**t)),
    )
}

/// How a flushed shard turns into output.
#[derive(Debug, Clone)]
pub struct EmitConfig {
    /// `forward_address` is set: sketches and global-only series are forwarded instead of emitted.
    pub is_local: bool,
    pub aggregates: Vec<Aggregate>,
    /// (quantile, name suffix)
    pub percentiles: Vec<(f64, String)>,
}

impl EmitConfig {
    pub fn new(is_local: bool, aggregates: &[Aggregate], percentiles: &[f64]) -> Self {
        EmitConfig {
            is_local,
            aggregates: aggregates.to_vec(),
            percentiles: percentiles.iter().map(|&p| (p, percentile_suffix(p))).collect(),
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
}

/// Turns a shard's interval into output series, checks and events; in local mode, the entries to forward are
/// pushed to `forward`.
pub fn emit(
    state: ShardState,
    cfg: &EmitConfig,
    timestamp: i64,
    out: &mut sink::Flush,
    forward: &mut Vec<Entry>,
) -> EmitCounts {
    let mut counts = EmitCounts::default();
    let ShardState {
        series,
        checks,
        events,
        timestamped,
    } = state;
    counts.timestamped = timestamped.len() as u64;
    out.series.extend(timestamped);
    counts.checks = checks.len() as u64;
    out.checks.extend(checks.into_values());
    counts.events = events.len() as u64;
    out.events.extend(events);

    for mut entry in series {
        let scope = entry.key.scope;
        let forward_this = cfg.is_local && scope != Scope::Local;
        let point = |name: String, value: f64, kind: SeriesKind, tags: &Arc<TagSet>| Series {
            name,
            tags: tags.clone(),
            value,
            kind,
            timestamp,
        };
        match &mut entry.value {
            Value::Counter(_) | Value::Gauge(_) if forward_this && scope == Scope::Global => {
                counts.forwarded += 1;
                forward.push(entry);
            }
            Value::Counter(v) => {
                counts.counters += 1;
                out.series.push(point(
                    entry.key.name.to_string(),
                    *v,
                    SeriesKind::Counter,
                    &entry.key.tags,
                ));
            }
            Value::Gauge(v) => {
                counts.gauges += 1;
                out.series.push(point(
                    entry.key.name.to_string(),
                    *v,
                    SeriesKind::Gauge,
                    &entry.key.tags,
                ));
            }
            Value::Histogram(h) => {
                counts.histograms += 1;
                let name = &entry.key.name;
                let tags = &entry.key.tags;
                // Aggregates: from this instance's own samples, except a global-only series, whose are reported
                // by the global (from the forwarded stats merged into these).
                let emit_aggregates = !(cfg.is_local && scope == Scope::Global);
                if emit_aggregates && !h.stats.is_empty() {
                    let stats = h.stats;
                    for agg in &cfg.aggregates {
                        let (value, kind) = match agg {
                            Aggregate::Min => (stats.min, SeriesKind::Gauge),
                            Aggregate::Max => (stats.max, SeriesKind::Gauge),
                            Aggregate::Count => (stats.count, SeriesKind::Counter),
                            Aggregate::Sum => (stats.sum, SeriesKind::Gauge),
                            Aggregate::Avg => (stats.avg(), SeriesKind::Gauge),
                            Aggregate::Hmean => (stats.hmean(), SeriesKind::Gauge),
                            Aggregate::Median => match h.quantile(0.5) {
                                Some(v) => (v, SeriesKind::Gauge),
                                None => continue,
                            },
                        };
                        if value.is_finite() {
                            out.series
                                .push(point(format!("{name}.{}", agg.suffix()), value, kind, tags));
                        }
                    }
                }
                if forward_this {
                    h.compress();
                    counts.forwarded += 1;
                    forward.push(entry);
                    continue;
                }
                for (q, suffix) in &cfg.percentiles {
                    if let Some(v) = h.quantile(*q) {
                        out.series
                            .push(point(format!("{name}.{suffix}"), v, SeriesKind::Gauge, tags));
                    }
                }
            }
            Value::Set(s) => {
                counts.sets += 1;
                if forward_this {
                    counts.forwarded += 1;
                    forward.push(entry);
                    continue;
                }
                out.series.push(point(
                    entry.key.name.to_string(),
                    s.estimate(),
                    SeriesKind::Gauge,
                    &entry.key.tags,
                ));
            }
        }
    }
    counts
}
