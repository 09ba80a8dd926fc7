//! One aggregation shard: the series whose key hashes to it, owned by one thread, with no lock.

use std::collections::HashMap;

use super::admit::{self, Controls, Limit, Limits};
use super::histogram::{saturating_add, Histogram};
use super::huge_pages::HugeTable;
use super::key::{text_hash, Canon, ExtendTags, KeyView, SeriesKey, TagSet};
use super::key_index::KeyIndex;
use super::mapper::MapperCache;
use super::names::{NameRow, Names};
use super::report::{EmitConfig, Summary};
use super::sample_log::SampleLog;
use super::set::{member_hash, Set};
use super::tag_cache::TagCache;
use super::text_index::{self, TextIndex};
use crate::ddsketch::DdSketch;
use crate::model::{self as sink, CheckRun, Series};
use crate::protocol::{parse_value, LineView, Metric, MetricKind, MetricValue, Tags};

/// The state of a series: what its lines aggregate into, what a flush merges across workers, and what is forwarded
/// and imported. (A series this instance reports, reduced to its values when the interval is taken, is a
/// [`Reduced`] instead.)
#[derive(Debug, Clone)]
pub enum Value {
    /// Sum of value / rate, saturated at ±`f64::MAX` (an overflowing sum stays at the largest finite value).
    Counter(f64),
    /// Last value.
    Gauge(f64),
    Histogram(Box<Histogram>),
    /// A distribution under `distributions: sketch`: the agent's DDSketch.
    Sketch(Box<DdSketch>),
    Set(Box<Set>),
}

/// A series of a taken [`Interval`] already reduced to what this instance reports: a summarizing shard (one worker,
/// see [`ShardState::summarizing`]) reduces the histograms and sets it does not forward as it takes the interval,
/// so that a million series' digests and registers are not held until the flush builds its output.
#[derive(Debug, Clone)]
pub struct Reduced {
    pub key: SeriesKey,
    pub value: ReducedValue,
}

/// The reported values of a [`Reduced`] series.
#[derive(Debug, Clone)]
pub enum ReducedValue {
    /// A histogram's interval reduced to its aggregates and percentiles (see [`Summary`]).
    Summary(Box<Summary>),
    /// A set's interval reduced to its estimated distinct count.
    SetEstimate(f64),
}

impl Value {
    /// Merges another state of the same series into this one: counters add (saturating), a gauge takes the other's
    /// value, histograms merge their exact statistics and digests, sets and DDSketches merge. Used by imports from
    /// other instances and by the flush's merge of the workers' intervals. Same key means same kind, so no other
    /// pair occurs.
    pub fn merge(&mut self, other: Value) {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a = saturating_add(*a, b),
            (Value::Gauge(a), Value::Gauge(b)) => *a = b,
            (Value::Histogram(a), Value::Histogram(mut b)) => {
                a.stats.merge(&b.stats);
                a.merge_digest(b.digest());
            }
            (Value::Set(a), Value::Set(b)) => a.merge(&b),
            (Value::Sketch(a), Value::Sketch(b)) => a.merge(&b),
            _ => {}
        }
    }
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
    /// A new series refused by a limit (`series_limit`, `memory_limit`, per metric or per tag).
    Limited(Limit),
    /// Dropped by entry N of `statsd_metric_blocklist`.
    Blocklisted(u32),
}

/// A series kept by a shard: what identifies it (cold: touched by new series, imports and flushes).
#[derive(Debug, Clone)]
struct Slot {
    hash: u64,
    /// [`text_hash`] of the line text this slot is found by, if `by_text` holds it, as
    /// [`text_index::key_parts`] (the fields side by side keep a slot at 48 bytes).
    text_lo: u64,
    text_hi: u32,
    by_text: bool,
    /// Its text's sample rate is below `minimum_sample_rate` (its lines are counted as clamped).
    clamped: bool,
    key: SeriesKey,
}

impl Slot {
    fn text_hash(&self) -> u128 {
        text_index::from_key_parts(self.text_lo, self.text_hi)
    }

    fn set_text_hash(&mut self, th: u128) {
        (self.text_lo, self.text_hi) = text_index::key_parts(th);
    }
}

/// What a line of a known series touches: its value for the current interval, kept apart from its key (same
/// index as its [`Slot`]) so that the series a shard aggregates per line fit in as few cache lines as possible.
#[derive(Debug)]
struct Hot {
    value: Value,
    /// The sample rate written in the text this series is found by.
    rate: f64,
    /// Lines received this interval, saturating (imports count one each); only series with some are flushed.
    lines: u32,
    /// Its row in the shard's [`Names`].
    name: u32,
}

/// One shard's series and this interval's checks, events and timestamped points.
///
/// Series are kept across intervals in a dense vector of slots, found through two indexes of slot numbers: by
/// key hash (the canonical identity: name, type, scope and sorted tags, compared in full) and by the 128-bit hash
/// of the text of the line that created the series (name, type and tag block exactly as written, see
/// [`text_hash`]). A known series is found from its line's text hash alone, without walking, sorting or comparing
/// its tags; only a new series, or a known one written differently, takes the
/// canonical path. At each flush the values of the series touched in the interval are taken out and reset in
/// place, and series idle for a whole interval are removed, so a steady set of series allocates nothing, interval
/// after interval.
#[derive(Debug, Default)]
pub struct ShardState {
    slots: Vec<Slot>,
    /// Mapped in huge pages once large (see [`super::huge_pages`]).
    hot: HugeTable<Hot>,
    /// Histogram samples (with their weight) and set members not yet applied to their series (see
    /// [`super::sample_log`]): drained when full, and before anything reads the state.
    log: SampleLog,
    /// See [`ShardState::summarizing`].
    summarize: Option<std::sync::Arc<EmitConfig>>,
    /// `distributions: sketch`: a distribution's series is a [`DdSketch`] (else a histogram).
    sketches: bool,
    by_key: KeyIndex,
    by_text: TextIndex,
    canon: Canon,
    /// New series' tag sets, shared between series with the same tags.
    tag_cache: TagCache,
    checks: HashMap<(Box<str>, TagSet), CheckRun>,
    events: Vec<sink::Event>,
    /// Counters and gauges with their own `|T` timestamp: passed through unaggregated.
    timestamped: Vec<Series>,
    /// The limits on series held, when any is set.
    limits: Option<std::sync::Arc<Limits>>,
    /// The rewriting controls (mapper, tag filters, blocklist), when any is set.
    controls: Option<std::sync::Arc<Controls>>,
    mapper_cache: MapperCache,
    /// Per metric name: series, bytes, lines, refusals.
    names: Names,
    /// Other texts of series found by their key this interval (a text whose series `by_text` knows by another:
    /// written differently, or made one by a tag filter), so that their lines skip the key's canonical form.
    /// Cleared whenever a series is removed (slot numbers move).
    aliases: HashMap<u128, u32>,
    /// `minimum_sample_rate`.
    min_rate: f64,
    /// Lines counted at a clamped rate, since last taken.
    clamped: u64,
}

/// What a shard aggregated in one interval, taken out at flush.
#[derive(Debug, Default)]
pub struct Interval {
    pub series: Vec<Entry>,
    /// The series reduced as they were taken (a summarizing shard's; empty otherwise).
    pub reduced: Vec<Reduced>,
    /// How many of `series` and `reduced` are histograms (each becomes several output series).
    pub histograms: usize,
    pub checks: Vec<CheckRun>,
    pub events: Vec<sink::Event>,
    pub timestamped: Vec<Series>,
    /// The shard's figures per metric name in this interval (see [`Names::take`]).
    pub names: Vec<NameRow>,
    /// Lines counted at `minimum_sample_rate` instead of their own.
    pub clamped: u64,
}

/// Most aliases a shard keeps (see `ShardState::aliases`).
const MAX_ALIASES: usize = 1 << 16;

impl ShardState {
    /// A shard whose new series count against `limits`.
    pub fn with_limits(limits: Option<std::sync::Arc<Limits>>) -> Self {
        ShardState {
            limits,
            ..ShardState::default()
        }
    }

    /// The rewriting controls, and `minimum_sample_rate`.
    pub fn controlled(mut self, controls: Option<std::sync::Arc<Controls>>, min_rate: f64) -> Self {
        self.mapper_cache = MapperCache::new(controls.as_ref().map_or(0, |c| c.mapper_cache_size));
        self.controls = controls;
        self.min_rate = min_rate;
        self
    }

    /// Reduce, when an interval is taken, the histograms and sets this instance reports itself (those `emit`
    /// does not forward) to the values reported: the interval then carries a few numbers per histogram instead of
    /// its digest, which is most of what a flush holds at a million series.
    pub fn summarizing(mut self, emit: std::sync::Arc<EmitConfig>) -> Self {
        self.summarize = Some(emit);
        self
    }

    /// `distributions: sketch`: keep each distribution as the agent's DDSketch (else as a histogram).
    pub fn sketching(mut self, on: bool) -> Self {
        self.sketches = on;
        self
    }

    /// The rewriting controls, if any.
    pub fn controls(&self) -> Option<&std::sync::Arc<Controls>> {
        self.controls.as_ref()
    }

    /// Series currently kept (touched this interval or the one before).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Aggregates one metric. `view` is the line's key view if the caller already computed it (to route the
    /// line); it is computed here only if the series is not found by its text. A known series allocates nothing.
    #[inline]
    pub fn add_metric(
        &mut self,
        m: &Metric<'_>,
        view: Option<&KeyView<'_>>,
        extend: &ExtendTags,
    ) -> Result<(), Dropped> {
        let rate = if m.sample_rate < self.min_rate {
            self.min_rate
        } else {
            m.sample_rate
        };
        // A timestamped point is passed through, never found by its text: its text is not hashed.
        let th = match m.timestamp {
            Some(_) => 0,
            None => {
                let th = text_hash(m.name, m.suffix);
                if let Some(i) = self.find_text(th) {
                    return self.add_to(i, m.value, rate);
                }
                th
            }
        };
        self.add_new_text(m, view, th, rate, extend)
    }

    /// A metric whose text `by_text` does not know (of text hash `th`, 0 for a timestamped point): an alias of a
    /// known series, or the controls applied and the series found by its key or created.
    fn add_new_text(
        &mut self,
        m: &Metric<'_>,
        view: Option<&KeyView<'_>>,
        th: u128,
        rate: f64,
        extend: &ExtendTags,
    ) -> Result<(), Dropped> {
        let clamped = m.sample_rate < self.min_rate;
        if m.timestamp.is_none() && !self.aliases.is_empty() {
            if let Some(&i) = self.aliases.get(&th) {
                self.count_clamped(clamped, i as usize);
                return self.add_to(i as usize, m.value, rate);
            }
        }
        let rewritten = match &self.controls {
            Some(c) => c
                .rewrite(m.name, m.tags, &mut self.mapper_cache)
                .map_err(|b| Dropped::Blocklisted(b.0))?,
            None => admit::Rewritten::default(),
        };
        let own;
        let view = match view {
            Some(v) if rewritten.name.is_none() && rewritten.tags.is_none() => v,
            _ => {
                let name = rewritten.name.as_deref().unwrap_or(m.name);
                let tags = rewritten.tags.as_deref().map_or(m.tags, Tags::new);
                own = KeyView::new(name, m.kind, tags, extend);
                &own
            }
        };
        if let Some(ts) = m.timestamp {
            return self.add_timestamped(m, ts, view, extend);
        }
        let i = self.slot_for(view, th, rate, clamped, extend)?;
        self.count_clamped(clamped, i);
        self.add_to(i, m.value, rate)
    }

    /// A line at a clamped rate aggregated into series `i` by another text than the series' own (the lines of its
    /// own text are counted when the interval is taken, if that text's rate was clamped).
    #[inline]
    fn count_clamped(&mut self, clamped: bool, i: usize) {
        if clamped && !self.slots[i].clamped {
            self.clamped += 1;
        }
    }

    /// Aggregates a line cut at its value if this shard knows its series by the line's text (name and suffix, see
    /// [`LineView`]): the type and sample rate are those of that text, and only the value is parsed. `None` if the
    /// text is not known, or the value does not parse (the full parse then reports why).
    #[inline]
    pub fn add_known_line(&mut self, line: &LineView<'_>) -> Option<Result<(), Dropped>> {
        let i = self.find_text(text_hash(line.name, line.suffix))?;
        self.add_known_at(i, line)
    }

    /// Starts loading what a lookup of text hash `th` reads first (see [`ShardState::find_known`]).
    #[inline(always)]
    pub fn prefetch_text(&self, th: u128) {
        self.by_text.prefetch(th);
    }

    /// The series of text hash `th`, if known, and starts loading its per-line state: a worker looks up a batch of
    /// lines first, then aggregates them, so that their memory loads overlap.
    #[inline]
    pub fn find_known(&self, th: u128) -> Option<usize> {
        let i = self.find_text(th)?;
        text_index::prefetch(&self.hot[i]);
        Some(i)
    }

    /// Starts loading the state behind series `i`'s value once its per-line state has arrived: a DDSketch's. (A
    /// histogram's samples and a set's members go to the log, which does not touch their state.)
    #[inline(always)]
    pub fn prefetch_value(&self, i: usize) {
        if let Value::Sketch(s) = &self.hot[i].value {
            text_index::prefetch(&**s as *const DdSketch);
        }
    }

    /// Aggregates a line cut at its value into series `i` (found by [`ShardState::find_known`] for this line's
    /// text): only the value is parsed. `None` if it does not parse (the full parse then reports why).
    #[inline]
    pub fn add_known_at(&mut self, i: usize, line: &LineView<'_>) -> Option<Result<(), Dropped>> {
        let hot = &mut self.hot[i];
        let rate = hot.rate;
        // The common case inline: one short number for a counter or a gauge. (A set's member, a short number or
        // not, is never read as one.)
        if let (Value::Counter(_) | Value::Gauge(_), Some(v)) = (&hot.value, line.short_number()) {
            hot.lines = hot.lines.saturating_add(1);
            // A short number over a rate ≥ MIN_SAMPLE_RATE is below 1e30, far below half an ulp of f64::MAX, so
            // this sum cannot overflow (the full path saturates).
            match &mut hot.value {
                Value::Counter(sum) if rate == 1.0 => *sum += v,
                Value::Counter(sum) => *sum += v / rate,
                Value::Gauge(last) => *last = v,
                _ => {}
            }
            return Some(Ok(()));
        }
        let kind = match &hot.value {
            Value::Counter(_) => MetricKind::Counter,
            Value::Gauge(_) => MetricKind::Gauge,
            Value::Set(_) => MetricKind::Set,
            // Timers, histograms and distributions parse their values alike.
            Value::Histogram(_) | Value::Sketch(_) => MetricKind::Histogram,
        };
        let value = parse_value(kind, line.value).ok()?;
        Some(self.add_to(i, value, rate))
    }

    #[inline]
    fn find_text(&self, th: u128) -> Option<usize> {
        self.by_text.get(th).map(|i| i as usize)
    }

    #[inline]
    fn add_to(&mut self, i: usize, value: MetricValue<'_>, sample_rate: f64) -> Result<(), Dropped> {
        let hot = &mut self.hot[i];
        hot.lines = hot.lines.saturating_add(1);
        match (&mut hot.value, value) {
            (Value::Counter(sum), MetricValue::Numbers(values)) => {
                // Saturating: a sum that overflows stays at ±f64::MAX (see `saturating_add`).
                if values.len() == 1 {
                    *sum = saturating_add(*sum, values.first() / sample_rate);
                } else {
                    for v in values.iter() {
                        *sum = saturating_add(*sum, v / sample_rate);
                    }
                }
            }
            (Value::Gauge(last), MetricValue::Numbers(values)) => {
                for v in values.iter() {
                    *last = v;
                }
            }
            (Value::Histogram(_), MetricValue::Numbers(values)) => {
                let weight = 1.0 / sample_rate;
                for v in values.iter() {
                    self.log.push(i, v.to_bits(), weight);
                }
                self.drain_if_full();
            }
            (Value::Sketch(s), MetricValue::Numbers(values)) => {
                // As the agent: weight 1/rate truncated, the sum by 1/rate itself.
                for v in values.iter() {
                    s.insert_sampled(v, sample_rate);
                }
            }
            (Value::Set(_), MetricValue::SetMember(member)) => {
                self.log.push(i, member_hash(member.as_bytes()), 1.0);
                self.drain_if_full();
            }
            // The kind is part of the key, so the value always matches it.
            _ => return Err(Dropped::Unparsable),
        }
        Ok(())
    }

    #[inline]
    fn drain_if_full(&mut self) {
        if self.log.is_full(self.hot.len()) {
            self.drain_log();
        }
    }

    /// Applies the logged samples to their series (before anything reads a histogram's or a set's state).
    fn drain_log(&mut self) {
        let hot = &mut self.hot;
        self.log
            .drain(hot.len(), |i, samples| match (&mut hot[i].value, samples) {
                (Value::Histogram(h), None) => {
                    let p = &**h as *const Histogram as *const u8;
                    text_index::prefetch(p);
                    text_index::prefetch(p.wrapping_add(64));
                    text_index::prefetch(p.wrapping_add(128));
                }
                (Value::Set(s), None) => text_index::prefetch(&**s as *const Set),
                (Value::Histogram(h), Some(samples)) => {
                    for sample in samples {
                        h.add_weighted(f64::from_bits(sample.bits), sample.weight);
                    }
                }
                (Value::Set(s), Some(samples)) => {
                    for sample in samples {
                        s.insert_hash(sample.bits);
                    }
                }
                // Only histograms and sets log samples, and a series keeps its kind.
                _ => {}
            });
    }

    /// The slot of a series not found by its text: found by its canonical key (and then also registered by this
    /// text if it has none, or as an alias), or created if the limits let it.
    fn slot_for(
        &mut self,
        view: &KeyView<'_>,
        th: u128,
        rate: f64,
        clamped: bool,
        extend: &ExtendTags,
    ) -> Result<usize, Dropped> {
        let canonical = self.canon.build(view, extend);
        let hash = view.hash;
        if let Some(i) = find_key(&self.by_key, &self.slots, hash, |key| view.matches(key, canonical)) {
            let slot = &mut self.slots[i as usize];
            if !slot.by_text {
                slot.by_text = true;
                slot.clamped = clamped;
                slot.set_text_hash(th);
                self.hot[i as usize].rate = rate;
                self.by_text.insert(th, i);
            } else if self.aliases.len() < MAX_ALIASES {
                self.aliases.insert(th, i);
            }
            return Ok(i as usize);
        }
        if let Some(limits) = &self.limits {
            if let Err(limit) = limits.admit(view.name, view.kind, canonical) {
                self.names.refused(view.name, limit);
                return Err(Dropped::Limited(limit));
            }
        }
        let (name, shared) = self.names.id(view.name);
        let key = view.to_key_named(self.tag_cache.get(canonical), extend, shared);
        self.names.added(name, admit::key_bytes(&key));
        let value = empty_value(key.kind, self.sketches);
        let (text_lo, text_hi) = text_index::key_parts(th);
        Ok(self.insert(
            Slot {
                hash,
                text_lo,
                text_hi,
                by_text: true,
                clamped,
                key,
            },
            Hot {
                value,
                rate,
                lines: 0,
                name,
            },
        ))
    }

    /// Adds a new series to the vectors and their indexes.
    fn insert(&mut self, slot: Slot, hot: Hot) -> usize {
        let i = self.slots.len();
        let (hash, th, by_text) = (slot.hash, slot.text_hash(), slot.by_text);
        self.slots.push(slot);
        self.hot.push(hot);
        self.by_key.insert(hash, i as u32);
        if by_text {
            self.by_text.insert(th, i as u32);
        }
        i
    }

    /// Removes slot `i`: the last slot takes its place.
    fn remove(&mut self, i: usize) {
        let last = self.slots.len() - 1;
        let slot = &self.slots[i];
        self.by_key.remove(slot.hash, i as u32);
        if slot.by_text {
            self.by_text.remove(slot.text_hash());
        }
        if i != last {
            let moved = &self.slots[last];
            self.by_key.move_slot(moved.hash, last as u32, i as u32);
            if moved.by_text {
                self.by_text.set_slot(moved.text_hash(), i as u32);
            }
        }
        let key = &self.slots[i].key;
        if let Some(l) = &self.limits {
            l.release(key);
        }
        self.names.removed(self.hot[i].name, admit::key_bytes(key));
        if !self.aliases.is_empty() {
            self.aliases.clear();
        }
        self.slots.swap_remove(i);
        self.hot.swap_remove(i);
    }
}

/// Most `|T` points passed through per shard and interval; more are dropped and counted.
pub const MAX_TIMESTAMPED: usize = 200_000;

/// The slot, in `by_key`, of the series of key hash `hash` whose key `is_key` accepts (a free function, so that
/// callers may hold other fields of the shard, such as a key built in its `canon`).
fn find_key(by_key: &KeyIndex, slots: &[Slot], hash: u64, is_key: impl Fn(&SeriesKey) -> bool) -> Option<u32> {
    by_key.find(hash, |i| {
        let s = &slots[i as usize];
        s.hash == hash && is_key(&s.key)
    })
}

fn empty_value(kind: MetricKind, sketches: bool) -> Value {
    match kind {
        MetricKind::Distribution if sketches => Value::Sketch(Box::default()),
        MetricKind::Counter => Value::Counter(0.0),
        MetricKind::Gauge => Value::Gauge(0.0),
        MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => Value::Histogram(Box::default()),
        MetricKind::Set => Value::Set(Box::default()),
    }
}

mod interval;
mod messages;
pub use interval::Taking;

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
