//! One aggregation shard: the series whose key hashes to it, owned by one thread, with no lock.

use std::collections::HashMap;

use hashbrown::HashTable;

use super::histogram::{saturating_add, Histogram};
use super::key::{text_hash, Canon, ExtendTags, KeyView, SeriesKey, TagSet};
use super::set::Set;
use super::text_index::{self, TextIndex};
use crate::protocol::{parse_value, LineView, Message, Metric, MetricKind, MetricValue, Tags};
use crate::sink::{self, CheckRun, Series, SeriesKind};

/// The aggregated value of a series.
#[derive(Debug, Clone)]
pub enum Value {
    /// Sum of value / rate, saturated at ±`f64::MAX` (an overflowing sum stays at the largest finite value).
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
    /// [`text_hash`] of the line text this slot is found by, if `by_text` holds it.
    text_hash: u128,
    by_text: bool,
    key: SeriesKey,
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
    hot: Vec<Hot>,
    by_key: HashTable<u32>,
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

    /// Starts loading the state behind series `i`'s value (a histogram's buffers and statistics, a set's table),
    /// once its per-line state has arrived.
    #[inline(always)]
    pub fn prefetch_value(&self, i: usize) {
        match &self.hot[i].value {
            Value::Histogram(h) => {
                let p = &**h as *const Histogram as *const u8;
                text_index::prefetch(p);
                text_index::prefetch(p.wrapping_add(64));
                text_index::prefetch(p.wrapping_add(128));
                text_index::prefetch(p.wrapping_add(192));
            }
            Value::Set(s) => text_index::prefetch(&**s as *const Set),
            _ => {}
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
            Value::Histogram(_) => MetricKind::Histogram,
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
            (Value::Histogram(h), MetricValue::Numbers(values)) => {
                for v in values.iter() {
                    h.add(v, sample_rate);
                }
            }
            (Value::Set(s), MetricValue::SetMember(member)) => s.insert(member.as_bytes()),
            // The kind is part of the key, so the value always matches it.
            _ => return Err(Dropped::Unparsable),
        }
        Ok(())
    }

    /// The slot of a series not found by its text: found by its canonical key (and then also registered by this
    /// text if it has none), or created; `None` when it is new and `series_limit` series are kept.
    fn slot_for(&mut self, view: &KeyView<'_>, th: u128, rate: f64, extend: &ExtendTags) -> Option<usize> {
        let canonical = self.canon.build(view, extend);
        let hash = view.hash;
        let slots = &self.slots;
        let found = self
            .by_key
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && view.matches(&s.key, canonical)
            })
            .copied();
        if let Some(i) = found {
            let slot = &mut self.slots[i as usize];
            if !slot.by_text {
                slot.by_text = true;
                slot.text_hash = th;
                self.hot[i as usize].rate = rate;
                self.by_text.insert(th, i);
            }
            return Some(i as usize);
        }
        if self.limit.as_ref().is_some_and(|l| !l.admit()) {
            return None;
        }
        let key = view.to_key(canonical, extend);
        let value = empty_value(key.kind);
        Some(self.insert(
            Slot {
                hash,
                text_hash: th,
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
        let (hash, th, by_text) = (slot.hash, slot.text_hash, slot.by_text);
        self.slots.push(slot);
        self.hot.push(hot);
        let slots = &self.slots;
        self.by_key.insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
        if by_text {
            self.by_text.insert(th, i as u32);
        }
        i
    }

    /// Removes slot `i`: the last slot takes its place.
    fn remove(&mut self, i: usize) {
        let last = self.slots.len() - 1;
        let slot = &self.slots[i];
        if let Ok(e) = self.by_key.find_entry(slot.hash, |&j| j as usize == i) {
            e.remove();
        }
        if slot.by_text {
            self.by_text.remove(slot.text_hash);
        }
        if i != last {
            let moved = &self.slots[last];
            if let Some(j) = self.by_key.find_mut(moved.hash, |&j| j as usize == last) {
                *j = i as u32;
            }
            if moved.by_text {
                self.by_text.set_slot(moved.text_hash, i as u32);
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
            let slots = &self.slots;
            let found = self
                .by_key
                .find(hash, |&i| {
                    let s = &slots[i as usize];
                    s.hash == hash && s.key == incoming.key
                })
                .copied();
            let Some(i) = found else {
                if let Some(l) = &self.limit {
                    l.force();
                }
                self.insert(
                    Slot {
                        hash,
                        text_hash: 0,
                        by_text: false,
                        key: incoming.key,
                    },
                    Hot {
                        value: incoming.value,
                        rate: 1.0,
                        touched: true,
                    },
                );
                continue;
            };
            let hot = &mut self.hot[i as usize];
            hot.touched = true;
            match (&mut hot.value, incoming.value) {
                (Value::Counter(a), Value::Counter(b)) => *a = saturating_add(*a, b),
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

    /// Ends the interval: takes out the values of the series touched in it (resetting them in place), removes the
    /// series that were not, and takes the checks, events and timestamped points.
    pub fn take_interval(&mut self) -> Interval {
        let mut series = Vec::with_capacity(self.slots.len());
        let mut i = 0;
        while i < self.slots.len() {
            let hot = &mut self.hot[i];
            if !hot.touched {
                self.remove(i);
                continue;
            }
            hot.touched = false;
            let slot = &self.slots[i];
            let value = match &mut hot.value {
                Value::Counter(v) => Value::Counter(std::mem::take(v)),
                Value::Gauge(v) => Value::Gauge(std::mem::take(v)),
                Value::Histogram(h) => Value::Histogram(Box::new(h.take_interval())),
                Value::Set(s) => Value::Set(Box::new(s.take_interval())),
            };
            series.push(Entry {
                hash: slot.hash,
                key: slot.key.clone(),
                value,
            });
            i += 1;
        }
        // Give memory back after a burst of series.
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
            self.hot.shrink_to(self.slots.len() * 2);
            let slots = &self.slots;
            self.by_key.shrink_to(slots.len(), |&j| slots[j as usize].hash);
            self.by_text.shrink();
        }
        Interval {
            series,
            checks: std::mem::take(&mut self.checks).into_values().collect(),
            events: std::mem::take(&mut self.events),
            timestamped: std::mem::take(&mut self.timestamped),
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
    // Service checks and events: tags are not part of a series key, so no scratch space is kept for them.
    TagSet::from_tags(
        tags.iter()
            .filter(|t| !extend.tags().iter().any(|e| e.split(':').next() == t.split(':').next()))
            .chain(extend.tags().iter().map(|t| &**t)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scope;
    use crate::protocol::parse_line;

    fn feed(state: &mut ShardState, extend: &ExtendTags, lines: &str) {
        for line in crate::protocol::lines(lines.as_bytes()) {
            match parse_line(line) {
                Ok(Message::Metric(m)) => state.add_metric(&m, None, extend).unwrap(),
                other => panic!("not a metric: {other:?}"),
            }
        }
    }

    /// As a worker does: a line whose text the shard knows is aggregated from its value alone, any other is parsed
    /// in full. Returns how many lines took the first way.
    fn feed_known_first(state: &mut ShardState, extend: &ExtendTags, lines: &str) -> usize {
        let mut known = 0;
        for line in crate::protocol::str_lines(lines) {
            if let Some(view) = crate::protocol::split_metric(line) {
                if let Some(result) = state.add_known_line(&view) {
                    result.unwrap();
                    known += 1;
                    continue;
                }
            }
            match parse_line(line.as_bytes()) {
                Ok(Message::Metric(m)) => state.add_metric(&m, None, extend).unwrap(),
                other => panic!("not a metric: {other:?}"),
            }
        }
        known
    }

    fn values(interval: &Interval) -> Vec<(String, String, f64)> {
        let mut v: Vec<_> = interval
            .series
            .iter()
            .map(|e| {
                let value = match &e.value {
                    Value::Counter(v) | Value::Gauge(v) => *v,
                    Value::Histogram(h) => h.stats.count,
                    Value::Set(s) => s.estimate(),
                };
                (e.key.name.to_string(), e.key.tags.joined().to_string(), value)
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    #[test]
    fn values_restart_each_interval_and_a_series_idle_for_an_interval_is_not_flushed_then_forgotten() {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        feed(&mut state, &e, "a:2|c|#x:1\nb:5|g\nh:1|ms\nh:2|ms\ns:u1|s\n");
        let first = state.take_interval();
        assert_eq!(
            values(&first),
            vec![
                ("a".into(), "x:1".into(), 2.0),
                ("b".into(), "".into(), 5.0),
                ("h".into(), "".into(), 2.0),
                ("s".into(), "".into(), 1.0),
            ]
        );
        // Only `a` and `h` get lines in the second interval: they start again from zero and empty.
        feed(&mut state, &e, "a:3|c|#x:1\nh:7|ms\n");
        assert_eq!(state.len(), 4, "idle series are kept for one interval");
        let second = state.take_interval();
        assert_eq!(
            values(&second),
            vec![("a".into(), "x:1".into(), 3.0), ("h".into(), "".into(), 1.0)]
        );
        assert_eq!(state.len(), 2, "series idle for a whole interval are removed");
        // Nothing at all: nothing is flushed, and every series is gone.
        assert!(state.take_interval().series.is_empty());
        assert!(state.take_interval().series.is_empty());
        assert_eq!(state.len(), 0);
        // A removed series comes back as new.
        feed(&mut state, &e, "b:9|g\n");
        assert_eq!(values(&state.take_interval()), vec![("b".into(), "".into(), 9.0)]);
    }

    #[test]
    fn new_series_beyond_the_limit_are_dropped_known_ones_go_on_and_idle_ones_make_room() {
        let e = ExtendTags::default();
        let limit = std::sync::Arc::new(SeriesLimit::new(3));
        let mut a = ShardState::with_limit(Some(limit.clone()));
        let mut b = ShardState::with_limit(Some(limit.clone()));
        let add = |state: &mut ShardState, line: &str| match parse_line(line.as_bytes()) {
            Ok(Message::Metric(m)) => state.add_metric(&m, None, &e),
            other => panic!("{other:?}"),
        };
        // The limit is shared: two series here, one there, then nothing new anywhere.
        assert_eq!(add(&mut a, "x:1|c"), Ok(()));
        assert_eq!(add(&mut a, "y:1|c"), Ok(()));
        assert_eq!(add(&mut b, "z:1|c"), Ok(()));
        assert_eq!(add(&mut b, "flood.1:1|c"), Err(Dropped::SeriesLimit));
        assert_eq!(add(&mut a, "flood.2:1|c|#id:9"), Err(Dropped::SeriesLimit));
        assert_eq!(add(&mut a, "flood.2:1|c|#id:10"), Err(Dropped::SeriesLimit));
        assert_eq!(add(&mut a, "x:5|c"), Ok(()), "a kept series goes on");
        assert_eq!(
            values(&a.take_interval()),
            vec![("x".into(), "".into(), 6.0), ("y".into(), "".into(), 1.0)]
        );
        let (names, lines) = a.take_limited();
        assert_eq!((names, lines), (vec![("flood.2".into(), 2)], 2));
        // y goes idle for an interval and is removed: room for one new series.
        assert_eq!(add(&mut a, "x:1|c"), Ok(()));
        a.take_interval();
        assert_eq!(a.len(), 1);
        assert_eq!(add(&mut b, "w:1|c"), Ok(()));
        assert_eq!(add(&mut b, "v:1|c"), Err(Dropped::SeriesLimit));
    }

    #[test]
    fn one_series_written_with_its_tags_in_different_orders_and_repeats_is_aggregated_once() {
        let e = ExtendTags::new(&["env:prod".to_string()]);
        let mut state = ShardState::default();
        for _ in 0..3 {
            feed(
                &mut state,
                &e,
                "r:1|c|#b:2,a:1\nr:1|c|#a:1,b:2\nr:1|c|#a:1,b:2,a:1,env:dev\nr:1|c|#env:prod,a:1,b:2\n",
            );
        }
        assert_eq!(state.len(), 1);
        assert_eq!(
            values(&state.take_interval()),
            vec![("r".into(), "a:1,b:2,env:prod".into(), 12.0)]
        );
    }

    #[test]
    fn removing_series_keeps_every_other_series_findable() {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        let all: String = (0..500).map(|i| format!("m{i}:1|c|#t:{}\n", i % 7)).collect();
        feed(&mut state, &e, &all);
        state.take_interval();
        // Every third series stays active; the others are removed at the next flush, moving slots around.
        let some: String = (0..500)
            .step_by(3)
            .map(|i| format!("m{i}:1|c|#t:{}\n", i % 7))
            .collect();
        feed(&mut state, &e, &some);
        state.take_interval();
        assert_eq!(state.len(), 167);
        feed(&mut state, &e, &some);
        feed(&mut state, &e, &some);
        assert_eq!(state.len(), 167, "no series was duplicated after the removals");
        let third = state.take_interval();
        assert_eq!(third.series.len(), 167);
        assert!(values(&third).iter().all(|(_, _, v)| *v == 2.0));
    }

    #[test]
    fn an_imported_series_is_the_same_series_as_lines_that_come_later() {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        let key = SeriesKey::new(
            "g",
            MetricKind::Counter,
            Scope::Global,
            TagSet::from_tags(["b:2", "a:1"]),
        );
        state.import(vec![Entry {
            hash: key.hash(),
            key,
            value: Value::Counter(10.0),
        }]);
        feed(
            &mut state,
            &e,
            "g:1|c|#a:1,b:2,veneurglobalonly\ng:1|c|#a:1,b:2,veneurglobalonly\n",
        );
        assert_eq!(state.len(), 1);
        assert_eq!(
            values(&state.take_interval()),
            vec![("g".into(), "a:1,b:2".into(), 12.0)]
        );
    }

    #[test]
    fn a_line_known_by_its_text_is_aggregated_with_the_type_and_sample_rate_of_that_text() {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        let lines = "x:1|c|@0.5|#a:1\nx:1|c|#a:1\nx:4|g|#a:1\nu:5|s\nt:1:2:3|ms\n";
        assert_eq!(feed_known_first(&mut state, &e, lines), 0, "every text is new");
        assert_eq!(
            feed_known_first(&mut state, &e, lines),
            4,
            "the first line of a series text is known again"
        );
        // `x:1|c|#a:1` is the counter `x{a:1}` written another way (its rate): the same series, found by its key.
        assert_eq!(
            feed_known_first(&mut state, &e, "x:3|c|@0.5|#a:1\nx:7|g|#a:1\nu:6|s\nu:5|s\nt:4|ms\n"),
            5
        );
        assert_eq!(state.len(), 4);
        assert_eq!(
            values(&state.take_interval()),
            vec![
                // Counter: 1/0.5 + 1 + 1/0.5 + 1 + 3/0.5 = 12; gauge: the last value; set members 5 and 6 (a
                // member that looks like a number is still a member); timer: 3 + 3 + 1 samples.
                ("t".into(), "".into(), 7.0),
                ("u".into(), "".into(), 2.0),
                ("x".into(), "a:1".into(), 7.0),
                ("x".into(), "a:1".into(), 12.0),
            ]
        );
    }

    #[test]
    fn a_known_text_with_a_bad_value_is_left_to_the_full_parse_and_a_timestamped_line_is_never_known() {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        feed(&mut state, &e, "x:1|c|#a:1\n");
        let bad = crate::protocol::split_metric("x:abc|c|#a:1").unwrap();
        assert!(state.add_known_line(&bad).is_none());
        assert!(matches!(
            parse_line(b"x:abc|c|#a:1"),
            Err(crate::protocol::ParseError::BadValue("abc"))
        ));
        let stamped = "x:1|c|#a:1|T1700000000";
        feed(&mut state, &e, stamped);
        let view = crate::protocol::split_metric(stamped).unwrap();
        assert!(state.add_known_line(&view).is_none(), "its text is not registered");
        feed(&mut state, &e, stamped);
        let interval = state.take_interval();
        assert_eq!(interval.timestamped.len(), 2);
        assert_eq!(values(&interval), vec![("x".into(), "a:1".into(), 1.0)]);
    }

    proptest::proptest! {
        #[test]
        fn property_test_lines_found_by_their_text_aggregate_exactly_as_fully_parsed_lines(
            lines in proptest::collection::vec(
                (
                    0usize..3,
                    0usize..4,
                    proptest::collection::vec(0u32..50, 1..3),
                    0usize..3,
                    0usize..4,
                ),
                1..60,
            ),
        ) {
            let tag_blocks = ["", "|#a:1,b:2", "|#b:2,a:1", "|#a:1|c:container"];
            let text: String = lines
                .iter()
                .map(|(name, kind, values, rate, tags)| {
                    let kind = ["c", "g", "ms", "s"][*kind];
                    let value = if kind == "s" {
                        values[0].to_string()
                    } else {
                        values.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
                    };
                    let rate = ["", "|@0.5", "|@0.25"][*rate];
                    format!("m{name}:{value}|{kind}{rate}{}\n", tag_blocks[*tags])
                })
                .collect();
            let e = ExtendTags::default();
            let (mut full, mut fast) = (ShardState::default(), ShardState::default());
            for _ in 0..2 {
                feed(&mut full, &e, &text);
                feed_known_first(&mut fast, &e, &text);
            }
            proptest::prop_assert_eq!(values(&full.take_interval()), values(&fast.take_interval()));
        }
    }
}
