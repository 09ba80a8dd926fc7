//! The ends of a shard's interval: entries imported from other instances merged in, and the interval taken out.

use super::{find_key, Entry, Hot, Interval, ShardState, Slot, Value};

impl ShardState {
    /// Merges entries imported from other instances: counters add, gauges are replaced, digests and sets merge.
    /// Histogram stats merge too; an importer sends empty stats where the sender already reported them.
    pub fn import(&mut self, entries: Vec<Entry>) {
        self.drain_log();
        for incoming in entries {
            let hash = incoming.hash;
            let Some(i) = find_key(&self.by_key, &self.slots, hash, |key| *key == incoming.key) else {
                if let Some(l) = &self.limit {
                    l.force();
                }
                self.insert(
                    Slot {
                        hash,
                        text_lo: 0,
                        text_hi: 0,
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
            hot.value.merge(incoming.value);
        }
    }

    /// Ends the interval: takes out the values of the series touched in it (resetting them in place), removes the
    /// series that were not, and takes the checks, events and timestamped points.
    pub fn take_interval(&mut self) -> Interval {
        self.drain_log();
        let mut series = Vec::with_capacity(self.slots.len());
        let mut histograms = 0;
        let mut i = 0;
        while i < self.slots.len() {
            let hot = &mut self.hot[i];
            if !hot.touched {
                self.remove(i);
                continue;
            }
            hot.touched = false;
            let slot = &self.slots[i];
            let summarize = self.summarize.as_deref().filter(|e| !e.forwards(slot.key.scope));
            let value = match &mut hot.value {
                Value::Counter(v) => Value::Counter(std::mem::take(v)),
                Value::Gauge(v) => Value::Gauge(std::mem::take(v)),
                Value::Histogram(h) => {
                    histograms += 1;
                    match summarize {
                        Some(e) => Value::Summary(Box::new(e.summarize(h))),
                        None => Value::Histogram(Box::new(h.take_interval())),
                    }
                }
                Value::Set(s) => match summarize {
                    Some(_) => Value::SetEstimate(s.take_estimate()),
                    None => Value::Set(Box::new(s.take_interval())),
                },
                // Reported or forwarded whole: the sink sends the sketch itself. The live one keeps its room.
                Value::Sketch(s) => {
                    let taken = Value::Sketch(s.clone());
                    s.clear();
                    taken
                }
                // Never in the live state; taken like the others all the same.
                Value::Summary(s) => Value::Summary(s.clone()),
                Value::SetEstimate(v) => Value::SetEstimate(std::mem::take(v)),
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
        self.log.shrink(self.slots.len());
        Interval {
            series,
            histograms,
            checks: std::mem::take(&mut self.checks).into_values().collect(),
            events: std::mem::take(&mut self.events),
            timestamped: std::mem::take(&mut self.timestamped),
        }
    }
}
