//! The Datadog agent's DDSketch variant (`pkg/quantile` in datadog-agent), used for DogStatsD
//! distributions (`d`) and sent to `/api/beta/sketches` as `Dogsketch` messages.
//!
//! # Why this exact variant
//!
//! Datadog merges the sketches we send with the sketches that real agents send for the same
//! metric. Merging is only meaningful if both sides use the same bins, so every parameter below
//! is the agent's and must not be changed:
//!
//! - relative accuracy `eps = 1/128`, so `gamma = 1 + 2·eps = 1.015625`, and
//!   `ln(gamma)` is computed as `ln_1p(2·eps)`, as the agent does;
//! - the smallest magnitude with its own bin is configured as `1e-9`:
//!   `emin = floor(ln(1e-9)/ln(gamma)) = -1337`, `bias = 1 - emin = 1338`, so key 1 is
//!   `gamma^-1337 ≈ 9.94e-10` and every `|v|` below that maps to key 0;
//! - `key(v) = round_half_even(ln(v)/ln(gamma)) + bias` for `v > 0`, negated for negative values;
//! - keys are `i16`: `±32767` stands for ±Inf and the largest finite key is 32766
//!   (`gamma^31428 ≈ 4.14e211`); larger finite values get the +Inf key, like in the agent;
//! - at most [`BIN_LIMIT`] = 4096 bins: beyond that the lowest keys are collapsed into the lowest
//!   key that is kept;
//! - on the wire a bin count is a `uint16`; a larger count is written as the same key repeated.
//!
//! # Storage and cost
//!
//! A sketch is a `Vec<(i16, u32)>` sorted by key with one entry per distinct key (8 bytes per
//! bin, nothing allocated until the first sample, no fixed-size arrays), plus count, min, max
//! and sum (56 bytes inline in total). [`DdSketch::insert`] computes the key (one logarithm),
//! binary searches the bins (about 12 steps) and increments in place; only a key never seen before
//! shifts the tail of the vector (at most 4096 × 8 bytes, and new keys become rare once a
//! series has warmed up). There is no insert buffer, so every reader (`bins`, `to_wire`,
//! `quantile`, `merge`) takes `&self` and sees every sample inserted so far.
//! [`DdSketch::clear`] keeps the allocation for the next interval.
//!
//! # Where this differs from the agent, on purpose
//!
//! The agent stores `uint16` counts and repeats a key whose count overflows; it flushes an insert
//! buffer every 512 samples. We keep one `u32` count per key instead. The two agree bin for bin
//! whenever no key holds more than 65535 samples and no collapse moves more than 65535 samples
//! (the common case by far: a collapse needs values spread over a ratio of about 1e27); beyond
//! that:
//!
//! - the agent counts each repeated `uint16` entry against the 4096 limit, we count distinct keys
//!   (so we keep a few more bins, never fewer);
//! - when the mass collapsed by the limit exceeds 65535, the agent's `trimLeft` leaves full
//!   65535-count entries at some of the removed keys, we move all of it to the lowest kept key;
//! - a key's count saturates at `u32::MAX` (4.29e9 samples of one key in one interval); the
//!   excess is dropped from the bin *and* from `count`, so `count == Σ bins` always holds
//!   (`sum` still includes it).
//!
//! Thanks to the one-entry-per-key model, collapsing commutes with merging: merging sketches of
//! any split of a sample set gives exactly the sketch of the whole set, bins included, which
//! the agent's buffer-timing-dependent layout cannot promise.
//!
//! The agent's `avg` field is an incremental mean; [`DdSketch::avg`] is `sum / count`, which
//! can differ from it in the last bits.
//!
//! # Non-finite values
//!
//! [`DdSketch::insert`] ignores NaN and ±Inf (and a weight of 0): no non-finite value may reach
//! the intake, and a single Inf would poison `sum`. [`key`] itself maps ±Inf to ±32767 and NaN
//! to 0. (The agent never inserts non-finite values either; its `key(+Inf)` would come out as 1
//! on amd64 because Go's `int(+Inf)` is undefined, which is why we do not mimic it.)
//!
//! # Floating-point fidelity
//!
//! [`lower_bound`] reproduces Go's `math.Pow` for an integral exponent (binary powering over
//! normalised mantissas, then `Ldexp`), not `f64::powf`, because the two differ in the last bits
//! for most keys and the value feeds straight into [`DdSketch::quantile`]. Likewise [`key`] uses
//! the fdlibm logarithm that Go's `math.Log` implements rather than `f64::ln`, whose last-bit
//! differences put some values at a bin edge into the neighbouring bin. Both were compared with
//! a Go harness over all 65535 keys and over 3.2 million values, bin edges included.

mod mapping;

pub use mapping::*;

/// A DDSketch in the agent's parameters. See the module documentation.
///
/// Invariants: `bins` is sorted by key with distinct keys and non-zero counts, has at most
/// [`BIN_LIMIT`] entries, and `count == Σ counts`; when `count == 0`, `min == max == sum == 0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DdSketch {
    bins: Vec<(i16, u32)>,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl DdSketch {
    /// An empty sketch (allocates nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `v` with the given weight: the bin of `key(v)` grows by `weight`, `count` by
    /// `weight`, `sum` by `v * weight`, and `min`/`max` take `v` into account.
    ///
    /// NaN and ±Inf values, and a weight of 0, are ignored. For a sample rate, the agent's weight
    /// is `uint(1/rate)` (truncated); see [`DdSketch::insert_sampled`], which also reproduces the
    /// agent's untruncated `sum`. A key's count saturates at `u32::MAX`; the excess is dropped
    /// from `count` as well (see the module documentation).
    ///
    /// Cost: one `ln`, a binary search over at most 4096 bins, an in-place increment; a new key
    /// also shifts the bins after it.
    pub fn insert(&mut self, v: f64, weight: u32) {
        if weight == 0 || !v.is_finite() {
            return;
        }
        self.insert_weighted(v, weight, v * f64::from(weight));
    }

    /// Adds `v` the way the agent's `Agent.Insert(v, sampleRate)` does: a rate outside `(0, 1]`
    /// (or NaN) counts as 1; otherwise the bin and `count` grow by `uint(1/rate)` (truncated,
    /// saturating at `u32::MAX`) while `sum` grows by `v * (1/rate)`, untruncated.
    /// NaN and ±Inf values are ignored.
    pub fn insert_sampled(&mut self, v: f64, sample_rate: f64) {
        if !v.is_finite() {
            return;
        }
        if sample_rate.is_nan() || sample_rate <= 0.0 || sample_rate >= 1.0 {
            self.insert_weighted(v, 1, v);
            return;
        }
        let n = 1.0 / sample_rate;
        // `as` truncates toward zero and saturates, n >= 1 so the weight is >= 1.
        self.insert_weighted(v, n as u32, v * n);
    }

    fn insert_weighted(&mut self, v: f64, weight: u32, sum_delta: f64) {
        let k = key(v);
        let lost = match self.bins.binary_search_by_key(&k, |&(bk, _)| bk) {
            Ok(i) => {
                let slot = &mut self.bins[i].1;
                let old = *slot;
                *slot = old.saturating_add(weight);
                u64::from(weight) - u64::from(*slot - old)
            }
            Err(i) => {
                self.bins.insert(i, (k, weight));
                self.collapse()
            }
        };
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            if v < self.min {
                self.min = v;
            }
            if v > self.max {
                self.max = v;
            }
        }
        // `lost` never exceeds the previous bins' total plus `weight`.
        self.count = self.count + u64::from(weight) - lost;
        self.sum += sum_delta;
    }

    /// Applies the bin limit the way the agent's `trimLeft` does: the lowest `len - BIN_LIMIT`
    /// bins are removed and their counts added to the lowest bin that is kept. Returns the count
    /// lost to `u32` saturation.
    fn collapse(&mut self) -> u64 {
        let len = self.bins.len();
        if len <= BIN_LIMIT {
            return 0;
        }
        let removed = len - BIN_LIMIT;
        let folded: u64 = self.bins[..removed].iter().map(|&(_, n)| u64::from(n)).sum();
        let total = u64::from(self.bins[removed].1) + folded;
        let kept = total.min(u64::from(u32::MAX));
        self.bins[removed].1 = kept as u32;
        self.bins.drain(..removed);
        total - kept
    }

    /// Merges `other` into `self` exactly: counts of equal keys are added, `count`, `sum`, `min`
    /// and `max` combined, then the bin limit is applied (lowest keys collapsed into the lowest
    /// kept key). The result equals the sketch of the union of both sample sets. In place: the
    /// bins vector grows by the number of new keys and is merged from the back, no temporary.
    pub fn merge(&mut self, other: &DdSketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.bins.clone_from(&other.bins);
            self.count = other.count;
            self.min = other.min;
            self.max = other.max;
            self.sum = other.sum;
            return;
        }
        let lost = self.merge_bins(&other.bins);
        self.count = self.count + other.count - lost;
        self.sum += other.sum;
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
    }

    /// Merges sorted `other` bins into `self.bins`; returns the count lost to saturation.
    fn merge_bins(&mut self, other: &[(i16, u32)]) -> u64 {
        // Pass 1: how many keys of `other` are new.
        let (mut i, mut j, mut new_keys) = (0, 0, 0);
        while i < self.bins.len() && j < other.len() {
            match self.bins[i].0.cmp(&other[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => {
                    new_keys += 1;
                    j += 1
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1
                }
            }
        }
        new_keys += other.len() - j;

        // Pass 2: merge from the back into the grown vector.
        let mut lost = 0u64;
        let mut i = self.bins.len();
        let mut j = other.len();
        self.bins.resize(i + new_keys, (0, 0));
        let mut w = self.bins.len();
        while j > 0 {
            w -= 1;
            let (ok, on) = other[j - 1];
            if i > 0 && self.bins[i - 1].0 > ok {
                self.bins[w] = self.bins[i - 1];
                i -= 1;
            } else if i > 0 && self.bins[i - 1].0 == ok {
                let total = u64::from(self.bins[i - 1].1) + u64::from(on);
                let kept = total.min(u64::from(u32::MAX));
                lost += total - kept;
                self.bins[w] = (ok, kept as u32);
                i -= 1;
                j -= 1;
            } else {
                self.bins[w] = (ok, on);
                j -= 1;
            }
        }
        // `self.bins[..i]` is already in place (w == i here).
        lost + self.collapse()
    }

    /// Total weight inserted (the `cnt` field).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value inserted (0 when empty).
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest value inserted (0 when empty).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Weighted sum of the values inserted (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `sum / count`, or 0 when empty. (The agent's `avg` is an incremental mean that can differ
    /// in the last bits.)
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// True when nothing has been inserted since creation or the last [`DdSketch::clear`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The agent's `Sketch.Quantile`, evaluated over the wire layout of the bins (each bin split
    /// into `uint16` entries as [`DdSketch::to_wire`] writes them, which is what the agent or the
    /// intake sees):
    ///
    /// - empty sketch: 0; `q <= 0`: `min`; `q >= 1`: `max`; NaN `q`: NaN;
    /// - otherwise `rank = round_half_even(q · (count - 1))`; find the first entry whose
    ///   cumulative count `n` exceeds `rank`; with `w = (n - rank) / n_entry`,
    ///   `lo = lower_bound(k)` (or `min` for the very first entry) and `hi = lower_bound(k) · gamma`,
    ///   return `lo · w + hi · (1 - w)`.
    ///
    /// The estimate of a positive sample of bin `k` lies in `[gamma^j, gamma^(j+1)]` (`j = k - BIAS`)
    /// while the sample lies in `[gamma^(j-1/2), gamma^(j+1/2)]`, so the relative error is at most
    /// `gamma^1.5 - 1 ≈ 0.02353` (about 3·eps, not 2·eps: the agent interpolates from the bin's
    /// centre up to the next centre). Symmetrically for negative values.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        if q.is_nan() {
            return f64::NAN;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        // Integral and in [0, count - 1]; all cumulative counts below are integers the agent sums
        // exactly in a float64 too (below 2^53).
        let rank = (q * (self.count - 1) as f64).round_ties_even() as u64;
        let wide = u64::from(MAX_WIRE_BIN_COUNT);
        let mut before = 0u64;
        for (idx, &(k, n)) in self.bins.iter().enumerate() {
            let n = u64::from(n);
            if before + n <= rank {
                before += n;
                continue;
            }
            // Entries of this bin on the wire: the remainder (if any) first, then full entries.
            let rem = n % wide;
            let (entry_end, entry_n, first_entry) = if rem != 0 && rank < before + rem {
                (before + rem, rem, true)
            } else {
                let full = (rank - before - rem) / wide;
                (before + rem + (full + 1) * wide, wide, rem == 0 && full == 0)
            };
            let weight = (entry_end - rank) as f64 / entry_n as f64;
            let mut v_low = lower_bound(k);
            let v_high = v_low * GAMMA;
            if idx == 0 && first_entry {
                v_low = self.min;
            }
            return v_low * weight + v_high * (1.0 - weight);
        }
        // Unreachable while count == Σ bins; stay total anyway.
        self.max
    }

    /// The bins, sorted by key, one entry per distinct key, with unbounded (`u32`) counts.
    pub fn bins(&self) -> impl Iterator<Item = (i16, u32)> + '_ {
        self.bins.iter().copied()
    }

    /// Number of bins (distinct keys) held.
    pub fn bin_count(&self) -> usize {
        self.bins.len()
    }

    /// The agent's wire form: keys and counts where each count is at most `u16::MAX` (a larger
    /// count is written as the same key repeated: the remainder first, then full 65535 entries,
    /// like the agent's `appendSafe`), as Dogsketch's `k` (sint32) and `n` (uint32) fields.
    pub fn to_wire(&self) -> (Vec<i32>, Vec<u32>) {
        let entries: usize = self
            .bins
            .iter()
            .map(|&(_, n)| n.div_ceil(MAX_WIRE_BIN_COUNT) as usize)
            .sum();
        let mut ks = Vec::with_capacity(entries);
        let mut ns = Vec::with_capacity(entries);
        for &(k, n) in &self.bins {
            let rem = n % MAX_WIRE_BIN_COUNT;
            if rem != 0 {
                ks.push(i32::from(k));
                ns.push(rem);
            }
            for _ in 0..n / MAX_WIRE_BIN_COUNT {
                ks.push(i32::from(k));
                ns.push(MAX_WIRE_BIN_COUNT);
            }
        }
        (ks, ns)
    }

    /// Rebuilds a sketch from the wire form plus the summary fields. Repeated keys (the agent's
    /// overflow layout) are summed. Rejects, naming the problem:
    ///
    /// - `k` and `n` of different lengths; a key outside `[-32767, 32767]`; keys not in
    ///   non-decreasing order; a zero count or one above `u16::MAX`; a key whose total exceeds
    ///   `u32::MAX`; more than [`BIN_LIMIT`] distinct keys;
    /// - `count` different from the sum of `n`;
    /// - non-finite `min`, `max` or `sum`; `min > max`; `max` not in the highest bin
    ///   (`key(max)` must equal the last key); `min` above the lowest bin (`key(min)` must not
    ///   exceed the first key: it is lower after a collapse);
    /// - an empty sketch (`count == 0`) with a non-zero `min`, `max` or `sum`.
    ///
    /// `sum` is not checked against the bins (only finite). Never panics; allocates at most
    /// [`BIN_LIMIT`] bins whatever the input length.
    pub fn from_wire(k: &[i32], n: &[u32], count: u64, min: f64, max: f64, sum: f64) -> Result<DdSketch, &'static str> {
        if k.len() != n.len() {
            return Err("k and n have different lengths");
        }
        if !min.is_finite() || !max.is_finite() || !sum.is_finite() {
            return Err("min, max or sum is not finite");
        }
        let mut bins: Vec<(i16, u32)> = Vec::with_capacity(k.len().min(BIN_LIMIT));
        let mut total = 0u64;
        for (&key_raw, &cnt) in k.iter().zip(n) {
            if !(-i32::from(INF_KEY)..=i32::from(INF_KEY)).contains(&key_raw) {
                return Err("key out of range");
            }
            if cnt == 0 {
                return Err("zero bin count");
            }
            if cnt > MAX_WIRE_BIN_COUNT {
                return Err("bin count above u16::MAX");
            }
            let key_val = key_raw as i16;
            total += u64::from(cnt);
            match bins.last_mut() {
                Some(last) if last.0 == key_val => {
                    last.1 = last.1.checked_add(cnt).ok_or("bin count overflows u32")?;
                }
                Some(last) if last.0 > key_val => return Err("keys not sorted"),
                _ => {
                    if bins.len() == BIN_LIMIT {
                        return Err("more than BIN_LIMIT distinct keys");
                    }
                    bins.push((key_val, cnt));
                }
            }
        }
        if total != count {
            return Err("count does not equal the sum of n");
        }
        if count == 0 {
            if min != 0.0 || max != 0.0 || sum != 0.0 {
                return Err("empty sketch with non-zero min, max or sum");
            }
            return Ok(DdSketch::default());
        }
        if min > max {
            return Err("min greater than max");
        }
        let (first, last) = (bins[0].0, bins[bins.len() - 1].0);
        if key(max) != last {
            return Err("max is not in the highest bin");
        }
        if key(min) > first {
            return Err("min is above the lowest bin");
        }
        Ok(DdSketch {
            bins,
            count,
            min,
            max,
            sum,
        })
    }

    /// Resets to the empty state for the next interval, keeping the bins' allocation.
    pub fn clear(&mut self) {
        self.bins.clear();
        self.count = 0;
        self.min = 0.0;
        self.max = 0.0;
        self.sum = 0.0;
    }
}

#[cfg(test)]
mod tests;
