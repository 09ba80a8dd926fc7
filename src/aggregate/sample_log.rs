//! The samples a shard takes in now and applies later: the values of histograms and timers (with their weight,
//! 1 / sample rate) and the member hashes of sets, logged in arrival order and applied to their series in batches.
//!
//! At production cardinality a histogram's or a set's state is a few cache lines and a buffer somewhere in the
//! heap, in small pages: adding one sample to it as its line arrives costs a TLB miss and a cache miss or two,
//! the largest cost left on the hot path once the text index and the per-series values were in huge pages. A line
//! of these types now only appends (series, 8 bytes, weight code) to this log, a sequential write into memory that
//! stays in the cache. When the log is full, and before anything reads the state (the flush, an import),
//! [`SampleLog::drain`] groups the log by series with a counting sort that keeps arrival order within a series, and
//! hands each series its samples at once: its state is then touched once per batch instead of once per sample.
//! Each series sees the same samples in the same order as if they had been added one by one, so the results are
//! the same.

use super::huge_pages::HugeTable;

/// One logged sample: the series (its index in the shard), its weight (0 for 1, else 1 + its index in
/// `SampleLog::weights`) and the sample (a value's bits, or a member's hash).
#[derive(Debug, Clone, Copy)]
struct Logged {
    series: u32,
    weight: u32,
    bits: u64,
}

/// A sample handed to its series by [`SampleLog::drain`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// A value's bits (`f64::from_bits`), or a set member's hash.
    pub bits: u64,
    /// 1 / the sample rate (1 for set members).
    pub weight: f64,
}

/// Entries from which a log is drained whatever the number of series (16 bytes each: 512 KiB, so that the log
/// of a shard with few series stays in small pages and in the cache).
const DRAIN_FROM: usize = 1 << 15;

/// Entries at which a log is drained whatever the number of series: 4 MiB, and as much again for the drain's
/// grouping. Beyond a quarter of a million series, a drain's pass over every series (a few milliseconds at a
/// million) then comes at most once per quarter of a million samples. (Draining at one entry per series would hold
/// 32 MiB at a million series, which measured 48 MiB more peak RSS on `benches/e2e.sh million-mixed`.)
const DRAIN_AT_MOST: usize = 1 << 17;

/// Samples logged since the last drain, and the drain's scratch space (kept, so that draining allocates nothing
/// in steady state).
#[derive(Debug, Default)]
pub struct SampleLog {
    entries: HugeTable<Logged>,
    /// The weights other than 1 of the entries, in the order they were logged (a weight repeated back to back is
    /// stored once): cleared at each drain, so never longer than the log.
    weights: Vec<f64>,
    /// The drain's per-series offsets into `grouped` (see [`SampleLog::drain`]).
    starts: Vec<u32>,
    /// The samples grouped by series.
    grouped: HugeTable<Sample>,
}

impl SampleLog {
    /// Logs sample `bits` of weight `weight` for series `series`.
    #[inline]
    pub fn push(&mut self, series: usize, bits: u64, weight: f64) {
        if self.entries.capacity() == 0 {
            self.reserve();
        }
        let weight = if weight == 1.0 {
            0
        } else {
            if self.weights.last().map(|w| w.to_bits()) != Some(weight.to_bits()) {
                self.weights.push(weight);
            }
            self.weights.len() as u32
        };
        self.entries.push(Logged {
            series: series as u32,
            weight,
            bits,
        });
    }

    /// Room for the smallest full log, taken at once at the first sample, so that the log does not grow sample
    /// by sample (it grows further only with the number of series).
    #[cold]
    fn reserve(&mut self) {
        self.entries.reserve(DRAIN_FROM);
        self.grouped.reserve(DRAIN_FROM);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the log should be drained, for a shard of `series` series: once it holds as many entries as there
    /// are series (so that the drain's pass over every series costs at most one step per entry), but at least
    /// [`DRAIN_FROM`] and at most [`DRAIN_AT_MOST`].
    #[inline]
    pub fn is_full(&self, series: usize) -> bool {
        self.entries.len() >= series.clamp(DRAIN_FROM, DRAIN_AT_MOST)
    }

    /// Empties the log into `apply(series, Some(samples))`: once per series that has samples, in the order of the
    /// series, with its samples in the order they were logged. Shortly before, `apply(series, None)` announces
    /// the series, for the caller to start loading its state. Every logged series must be below `series`.
    pub fn drain(&mut self, series: usize, mut apply: impl FnMut(usize, Option<&[Sample]>)) {
        if self.entries.is_empty() {
            return;
        }
        // Counting sort: count per series, turn the counts into start offsets, then place each entry in order.
        let starts = &mut self.starts;
        starts.clear();
        starts.resize(series + 1, 0);
        for e in self.entries.iter() {
            starts[e.series as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let grouped = &mut self.grouped;
        grouped.clear();
        grouped.resize(self.entries.len(), Sample { bits: 0, weight: 0.0 });
        // `starts[s]` is advanced past each entry of series s placed, so afterwards it is where s + 1 starts; the
        // series' own start is then `starts[s - 1]` (0 for the first).
        for e in self.entries.iter() {
            let at = &mut starts[e.series as usize];
            let weight = match e.weight {
                0 => 1.0,
                w => self.weights[w as usize - 1],
            };
            grouped[*at as usize] = Sample { bits: e.bits, weight };
            *at += 1;
        }
        // Each series is announced (`None`) AHEAD series before it is applied, so that the loads of its state
        // overlap with the work on the series before it.
        const AHEAD: usize = 8;
        let mut ring = [(0usize, 0usize, 0usize); AHEAD];
        let mut queued = 0usize;
        let mut from = 0usize;
        for (s, &end) in starts[..series].iter().enumerate() {
            let end = end as usize;
            if end > from {
                apply(s, None);
                let slot = &mut ring[queued % AHEAD];
                if queued >= AHEAD {
                    let (t, a, b) = *slot;
                    apply(t, Some(&grouped[a..b]));
                }
                *slot = (s, from, end);
                queued += 1;
            }
            from = end;
        }
        for k in queued.saturating_sub(AHEAD)..queued {
            let (t, a, b) = ring[k % AHEAD];
            apply(t, Some(&grouped[a..b]));
        }
        self.entries.clear();
        self.weights.clear();
    }

    /// Gives memory back when the log's buffers are far larger than a drain of `series` series needs.
    pub fn shrink(&mut self, series: usize) {
        let want = series.clamp(DRAIN_FROM, DRAIN_AT_MOST) * 2;
        if self.entries.capacity() > want * 2 {
            self.entries.shrink_to(want);
            self.grouped.shrink_to(want);
        }
        if self.weights.capacity() > want * 2 {
            self.weights.shrink_to(want);
        }
        if self.starts.capacity() > (series + 1) * 4 {
            self.starts.shrink_to((series + 1) * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_drain_hands_each_series_its_samples_in_the_order_they_were_logged(
            logged in proptest::collection::vec(
                (0usize..50, any::<u64>(), prop_oneof![Just(1.0), Just(10.0), 1.0f64..100.0]),
                0..3000,
            ),
        ) {
            let mut log = SampleLog::default();
            for &(s, bits, weight) in &logged {
                log.push(s, bits, weight);
            }
            prop_assert_eq!(log.len(), logged.len());
            let mut got: Vec<(usize, Vec<Sample>)> = Vec::new();
            let mut announced = Vec::new();
            log.drain(50, |s, samples| match samples {
                None => announced.push(s),
                Some(samples) => {
                    assert!(announced.contains(&s), "series {s} applied before it was announced");
                    got.push((s, samples.to_vec()));
                }
            });
            prop_assert!(log.is_empty());
            let mut want: Vec<(usize, Vec<Sample>)> = Vec::new();
            for s in 0..50 {
                let samples: Vec<Sample> = logged
                    .iter()
                    .filter(|(t, _, _)| *t == s)
                    .map(|&(_, bits, weight)| Sample { bits, weight })
                    .collect();
                if !samples.is_empty() {
                    want.push((s, samples));
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_log_is_full_at_as_many_entries_as_series_and_never_below_the_minimum() {
        let mut log = SampleLog::default();
        for i in 0..DRAIN_FROM - 1 {
            log.push(i % 7, 0, 1.0);
        }
        assert!(!log.is_full(10));
        log.push(0, 0, 0.5);
        assert!(log.is_full(10));
        assert!(!log.is_full(DRAIN_FROM + 1));
    }
}
