//! One aggregation shard: the series whose key hashes to it, owned by one thread, with no lock.

use std::collections::HashMap;

use super::histogram::{saturating_add, Histogram};
use super::huge_pages::HugeTable;
use super::key::{text_hash, Canon, ExtendTags, KeyView, SeriesKey, TagSet};
use super::key_index::KeyIndex;
use super::report::{EmitConfig, Summary};
use super::sample_log::SampleLog;
use super::set::{member_hash, Set};
use super::text_index::{self, TextIndex};
use crate::ddsketch::DdSketch;
use crate::model::{self as sink, CheckRun, Series, SeriesKind};
use crate::protocol::{parse_value, LineView, Message, Metric, MetricKind, MetricValue, Tags};

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
    /// A new series while `series_limit` series are kept.
    SeriesLimit,
}

/// `series_limit`, shared by every shard: the series kept in total, and the bound.
#[derive(Debug)]
pub struct SeriesLimit {
    limit: usize,
    kept: std::sync::atomic::AtomicUsize,
}

impl SeriesLimit {
    pub fn new(limit: usize) -> Self {
        SeriesLimit {
            limit,
            kept: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Takes room for one more series, if there is any.
    fn admit(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.kept
            .fetch_update(Relaxed, Relaxed, |k| (k < self.limit).then_some(k + 1))
            .is_ok()
    }

    /// Counts a series that is kept whatever the limit (imported from other instances, which are not refused).
    fn force(&self) {
        self.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn release(&self) {
        self.kept.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Most names remembered per shard and interval for the series-limit log.
const LIMITED_NAMES: usize = 1024;

/// A series kept by a shard: what identifies it (cold: touched by new series, imports and flushes).
#[derive(Debug, Clone)]
struct Slot {
    hash: u64,
    /// [`text_hash`] of the line text this slot is found by, if `by_text` holds it, as
    /// [`text_index::key_parts`] (the fields side by side keep a slot at 64 bytes).
    text_lo: u64,
    text_hi: u32,
    by_text: bool,
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
    /// Whether the series received anything this interval (only those are flushed).
    touched: bool,
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
    checks: HashMap<(Box<str>, TagSet), CheckRun>,
    events: Vec<sink::Event>,
    /// Counters and gauges with their own `|T` timestamp: passed through unaggregated.
    timestamped: Vec<Series>,
    /// `series_limit`, when set.
    limit: Option<std::sync::Arc<SeriesLimit>>,
    /// Lines dropped by the limit this interval, by metric name (at most [`LIMITED_NAMES`] names).
    limited: HashMap<Box<str>, u64>,
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
}

impl ShardState {
    /// A shard whose new series count against `limit`.
    pub fn with_limit(limit: Option<std::sync::Arc<SeriesLimit>>) -> Self {
        ShardState {
            limit,
            ..ShardState::default()
        }
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

    /// Series currently kept (touched this interval or the one before).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Aggregates one parsed message.
    pub fn add_message(&mut self, msg: Message<'_>, extend: &ExtendTags, now: i64) -> Result<(), Dropped> {
        match msg {
            Message::Metric(m) => self.add_metric(&m, None, extend),
            Message::ServiceCheck(c) => {
                let tags = canonical_tags(c.tags, extend);
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
                let tags = canonical_tags(e.tags, extend);
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

    /// Aggregates one metric. `view` is the line's key view if the caller already computed it (to route the
    /// line); it is computed here only if the series is not found by its text. A known series allocates nothing.
    #[inline]
    pub fn add_metric(
        &mut self,
        m: &Metric<'_>,
        view: Option<&KeyView<'_>>,
        extend: &ExtendTags,
    ) -> Result<(), Dropped> {
        if let Some(ts) = m.timestamp {
            let own;
            let view = match view {
                Some(v) => v,
                None => {
                    own = KeyView::new(m.name, m.kind, m.tags, extend);
                    &own
                }
            };
            return self.add_timestamped(m, ts, view, extend);
        }
        let th = text_hash(m.name, m.suffix);
        let i = match self.find_text(th) {
            Some(i) => Some(i),
            None => match view {
                Some(v) => self.slot_for(v, th, m.sample_rate, extend),
                None => {
                    let v = KeyView::new(m.name, m.kind, m.tags, extend);
                    self.slot_for(&v, th, m.sample_rate, extend)
                }
            },
        };
        let Some(i) = i else {
            if self.limited.len() < LIMITED_NAMES || self.limited.contains_key(m.name) {
                *self.limited.entry(m.name.into()).or_insert(0) += 1;
            }
            return Err(Dropped::SeriesLimit);
        };
        self.add_to(i, m.value, m.sample_rate)
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
            hot.touched = true;
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
        hot.touched = true;
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
    /// text if it has none), or created; `None` when it is new and `series_limit` series are kept.
    fn slot_for(&mut self, view: &KeyView<'_>, th: u128, rate: f64, extend: &ExtendTags) -> Option<usize> {
        let canonical = self.canon.build(view, extend);
        let hash = view.hash;
        if let Some(i) = find_key(&self.by_key, &self.slots, hash, |key| view.matches(key, canonical)) {
            let slot = &mut self.slots[i as usize];
            if !slot.by_text {
                slot.by_text = true;
                slot.set_text_hash(th);
                self.hot[i as usize].rate = rate;
                self.by_text.insert(th, i);
            }
            return Some(i as usize);
        }
        if self.limit.as_ref().is_some_and(|l| !l.admit()) {
            return None;
        }
        let key = view.to_key(canonical, extend);
        let value = empty_value(key.kind, self.sketches);
        let (text_lo, text_hi) = text_index::key_parts(th);
        Some(self.insert(
            Slot {
                hash,
                text_lo,
                text_hi,
                by_text: true,
                key,
            },
            Hot {
                value,
                rate,
                touched: false,
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
        self.slots.swap_remove(i);
        self.hot.swap_remove(i);
        if let Some(l) = &self.limit {
            l.release();
        }
    }

    /// The metric names whose new series the limit dropped this interval, most lines first, and the total
    /// number of lines dropped; cleared.
    pub fn take_limited(&mut self) -> (Vec<(Box<str>, u64)>, u64) {
        let mut names: Vec<(Box<str>, u64)> = self.limited.drain().collect();
        let total = names.iter().map(|(_, n)| n).sum();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (names, total)
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
            SeriesKind::Counter | SeriesKind::SampleCount => values.iter().sum(),
            SeriesKind::Gauge => values.iter().last().unwrap_or(0.0),
        };
        let key = view.to_key(self.canon.build(view, extend), extend);
        self.timestamped.push(Series {
            name: key.name,
            suffix: Default::default(),
            tags: key.tags,
            value,
            kind,
            timestamp: ts,
        });
        Ok(())
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

fn canonical_tags(tags: Tags<'_>, extend: &ExtendTags) -> TagSet {
    // Service checks and events: tags are not part of a series key, so no scratch space is kept for them.
    TagSet::from_tags(
        tags.iter()
            .filter(|t| !extend.tags().iter().any(|e| e.split(':').next() == t.split(':').next()))
            .chain(extend.tags().iter().map(|t| &**t)),
    )
}

mod interval;
pub use interval::Taking;

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
