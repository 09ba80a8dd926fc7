//! The ends of a shard's interval: entries imported from other instances merged in, and the interval taken out.

use super::{find_key, Entry, Hot, Interval, Reduced, ReducedValue, ShardState, Slot, Value};
use crate::aggregate::admit::key_bytes;

impl ShardState {
    /// Merges entries imported from other instances: counters add, gauges are replaced, digests and sets merge.
    /// Histogram stats merge too; an importer sends empty stats where the sender already reported them.
    pub fn import(&mut self, entries: Vec<Entry>) {
        self.drain_log();
        for mut incoming in entries {
            // A global filters the tags of what locals that do not filter forward.
            if let Some(key) = self.controls.as_ref().and_then(|c| c.filter_key(&incoming.key)) {
                incoming.hash = key.hash();
                incoming.key = key;
            }
            let hash = incoming.hash;
            let Some(i) = find_key(&self.by_key, &self.slots, hash, |key| *key == incoming.key) else {
                if let Some(l) = &self.limits {
                    l.force(&incoming.key);
                }
                let (name, shared) = self.names.id(&incoming.key.name);
                if let Some(shared) = shared {
                    incoming.key.name = shared;
                }
                // Its tags shared with the other series that have them, as a series created from a line's are.
                incoming.key.tags = self.tag_cache.get(incoming.key.tags.joined());
                self.names.added(name, key_bytes(&incoming.key));
                self.insert(
                    Slot {
                        hash,
                        text_lo: 0,
                        text_hi: 0,
                        by_text: false,
                        clamped: false,
                        key: incoming.key,
                    },
                    Hot {
                        value: incoming.value,
                        rate: 1.0,
                        lines: 1,
                        name,
                    },
                );
                continue;
            };
            let hot = &mut self.hot[i as usize];
            hot.lines = hot.lines.saturating_add(1);
            hot.value.merge(incoming.value);
        }
    }

    /// Ends the interval at once: takes out the values of the series touched in it (resetting them in place),
    /// removes the series that were not, and takes the checks, events and timestamped points. A worker that must
    /// keep reading its sockets meanwhile takes it in steps instead ([`ShardState::begin_take`]).
    pub fn take_interval(&mut self) -> Interval {
        let mut taking = self.begin_take();
        while !self.take_step(&mut taking, usize::MAX) {}
        self.finish_take(taking)
    }

    /// Starts taking the interval out in steps, between which lines may still be aggregated: a series visited by
    /// an earlier step counts what comes after it in the next interval, one not yet visited in this one, so nothing
    /// is lost or counted twice; only the boundary moves, by the time the steps take.
    pub fn begin_take(&mut self) -> Taking {
        Taking {
            cursor: 0,
            interval: Interval {
                series: Vec::with_capacity(self.slots.len()),
                ..Interval::default()
            },
        }
    }

    /// Visits up to `max` more series of the interval being taken; true when every series has been visited (then
    /// [`ShardState::finish_take`]).
    pub fn take_step(&mut self, taking: &mut Taking, max: usize) -> bool {
        self.drain_log();
        let end = taking.cursor.saturating_add(max);
        let interval = &mut taking.interval;
        let mut i = taking.cursor;
        while i < self.slots.len() && i < end {
            let hot = &mut self.hot[i];
            if hot.lines == 0 {
                // The last slot takes this place: it is visited next (it was not visited yet).
                self.remove(i);
                continue;
            }
            let lines = std::mem::take(&mut hot.lines);
            self.names.lines(hot.name, lines, hot.rate);
            let slot = &self.slots[i];
            if slot.clamped {
                self.clamped += u64::from(lines);
            }
            let summarize = self.summarize.as_deref().filter(|e| !e.forwards(slot.key.scope));
            if matches!(hot.value, Value::Histogram(_)) {
                interval.histograms += 1;
            }
            let reduced = match (&mut hot.value, summarize) {
                (Value::Histogram(h), Some(e)) => Some(ReducedValue::Summary(Box::new(e.summarize(h)))),
                (Value::Set(s), Some(_)) => Some(ReducedValue::SetEstimate(s.take_estimate())),
                _ => None,
            };
            if let Some(value) = reduced {
                let key = slot.key.clone();
                interval.reduced.push(Reduced { key, value });
                i += 1;
                continue;
            }
            let value = match &mut hot.value {
                Value::Counter(v) => Value::Counter(std::mem::take(v)),
                Value::Gauge(v) => Value::Gauge(std::mem::take(v)),
                Value::Histogram(h) => Value::Histogram(Box::new(h.take_interval())),
                Value::Set(s) => Value::Set(Box::new(s.take_interval())),
                // Reported or forwarded whole: the sink sends the sketch itself. The live one keeps its room.
                Value::Sketch(s) => {
                    let taken = Value::Sketch(s.clone());
                    s.clear();
                    taken
                }
            };
            interval.series.push(Entry {
                hash: slot.hash,
                key: slot.key.clone(),
                value,
            });
            i += 1;
        }
        taking.cursor = i;
        i >= self.slots.len()
    }

    /// Ends a stepped take: gives memory back after a burst of series, and takes the checks, events and timestamped
    /// points.
    pub fn finish_take(&mut self, taking: Taking) -> Interval {
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
            self.hot.shrink_to(self.slots.len() * 2);
            self.by_key.shrink_to(self.slots.len());
            self.by_text.shrink();
        }
        self.log.shrink(self.slots.len());
        Interval {
            names: self.names.take(),
            clamped: std::mem::take(&mut self.clamped),
            checks: std::mem::take(&mut self.checks).into_values().collect(),
            events: std::mem::take(&mut self.events),
            timestamped: std::mem::take(&mut self.timestamped),
            ..taking.interval
        }
    }
}

/// An interval being taken out of a shard in steps (see [`ShardState::begin_take`]).
#[derive(Debug, Default)]
pub struct Taking {
    /// Slots before this one have been visited.
    cursor: usize,
    interval: Interval,
}
