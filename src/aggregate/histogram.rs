//! Histograms, timers and distributions: a t-digest for quantiles, plus exact min, max, count (weighted by
//! 1/rate), sum and reciprocal sum.
//!
//! Samples are buffered as (value, weight) and folded into the digest in batches, so a known series costs no
//! allocation per sample; the digest is compressed every [`BUFFER`] samples and at flush.

use tdigest::{Centroid, TDigest};

/// Digest size (the t-digest's compression δ): the quadratic scale function is cut into this many units and a
/// centroid spans at most one, so a digest keeps between δ and 2δ centroids (about 1.25 δ in practice: 370
/// centroids, about 7.7 KB forwarded). 300 keeps the rank error of p50/p90/p99 merged from several hosts within
/// 0.0011 (`cargo run --release --example accuracy`; 200 with the earlier bound computation gave 0.0025).
pub const DIGEST_SIZE: usize = 300;
/// Most centroids a digest can hold (2δ by the scale function, up to twice that with runs of repeated values sent
/// as pairs), the cap given to `tdigest::TDigest` so that it never compresses our digests again with its own rule.
pub const MAX_DIGEST_CENTROIDS: usize = 4 * DIGEST_SIZE;
/// Samples buffered before they are folded into the digest.
const BUFFER: usize = 512;

/// One histogram series' state for an interval.
///
/// The digest is kept as its sorted centroids; samples are buffered and folded in with the t-digest's quadratic
/// scale function (the same as the `tdigest` crate's), into buffers that are reused, so a known series allocates
/// nothing per sample. A `tdigest::TDigest` is built only when quantiles or the wire form are needed (at flush).
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Sorted by mean, at most [`MAX_DIGEST_CENTROIDS`].
    centroids: Vec<Centroid>,
    /// Samples not yet merged into `centroids`: those of weight 1 (sample rate 1, the usual case) as bare values,
    /// half the room of a centroid each, the others as centroids.
    pending_unit: Vec<f64>,
    pending: Vec<Centroid>,
    /// Where a fold merges into, then swapped with `centroids`: within an interval, folds allocate nothing.
    scratch: Vec<Centroid>,
    /// Total weight, weighted sum, min and max of everything in `centroids` and `pending`.
    total: f64,
    sum: f64,
    min: f64,
    max: f64,
    /// Exact statistics of every sample this instance received directly.
    pub stats: Stats,
}

/// Exact statistics of the samples received (not of merged digests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    /// Sum of the weights (1/rate per sample).
    pub count: f64,
    /// Sum of value × weight.
    pub sum: f64,
    /// Sum of weight / value, for the harmonic mean. Saturates at ±`f64::MAX` and then stays there: a sample of 0
    /// (or one so small that its reciprocal overflows) adds `f64::MAX`, so the statistic stays finite on the wire
    /// and the harmonic mean of samples that include 0 is reported as 0 (its limit).
    pub reciprocal_sum: f64,
}

/// `a + b`, saturated at ±`f64::MAX` instead of overflowing to infinity (neither operand may be NaN). Sums of
/// accepted values (counters, a histogram's sum) use it, so that no sum a client can cause becomes infinite and
/// is refused later (by a sink, or by the global's validation).
#[inline]
pub fn saturating_add(a: f64, b: f64) -> f64 {
    let s = a + b;
    if s.is_finite() {
        s
    } else {
        s.clamp(-f64::MAX, f64::MAX)
    }
}

/// [`saturating_add`] for the reciprocal sum, whose saturation means "a sample was 0 (or its reciprocal
/// overflowed)": once either operand is at ±`f64::MAX` the sum stays there, so that a later sample of the other
/// sign (say -5e-324 after a 0) cannot cancel it back to a finite sum and an infinite harmonic mean.
#[inline]
fn sticky_add(a: f64, b: f64) -> f64 {
    if a.abs() == f64::MAX {
        a
    } else if b.abs() == f64::MAX {
        b
    } else {
        saturating_add(a, b)
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0.0,
            sum: 0.0,
            reciprocal_sum: 0.0,
        }
    }
}

impl Stats {
    #[inline]
    fn add(&mut self, value: f64, weight: f64) {
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.count += weight;
        self.sum = saturating_add(self.sum, value * weight);
        let reciprocal = weight / value;
        let reciprocal = if reciprocal.is_finite() {
            reciprocal
        } else if value == 0.0 {
            // 0 and -0 alike: the harmonic mean of samples that include 0 is 0.
            f64::MAX
        } else {
            reciprocal.clamp(-f64::MAX, f64::MAX)
        };
        self.reciprocal_sum = sticky_add(self.reciprocal_sum, reciprocal);
    }

    pub fn merge(&mut self, other: &Stats) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum = saturating_add(self.sum, other.sum);
        self.reciprocal_sum = sticky_add(self.reciprocal_sum, other.reciprocal_sum);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0.0
    }

    pub fn avg(&self) -> f64 {
        self.sum / self.count
    }

    /// The harmonic mean; 0 when a sample was 0 (the reciprocal sum saturated).
    pub fn hmean(&self) -> f64 {
        if self.reciprocal_sum.abs() == f64::MAX {
            return 0.0;
        }
        self.count / self.reciprocal_sum
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            centroids: Vec::new(),
            pending_unit: Vec::new(),
            pending: Vec::new(),
            scratch: Vec::new(),
            total: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            stats: Stats::default(),
        }
    }
}

/// The t-digest's quadratic scale: the quantile at scale position `k` of `d` (0 ≤ k ≤ d).
fn k_to_q(k: f64, d: f64) -> f64 {
    let r = (k / d).clamp(0.0, 1.0);
    if r >= 0.5 {
        let b = 1.0 - r;
        1.0 - 2.0 * b * b
    } else {
        2.0 * r * r
    }
}

/// The mean moved towards `m` by the fraction `f` (0 < f ≤ 1), staying finite for any finite means: `m - mean`
/// overflows when they are far apart (a digest holding both -1e308 and 1e308).
#[inline]
fn weighted_mean(mean: f64, m: f64, f: f64) -> f64 {
    let next = mean + (m - mean) * f;
    if next.is_finite() {
        next
    } else {
        (mean * (1.0 - f) + m * f).clamp(-f64::MAX, f64::MAX)
    }
}

/// Appends a centroid; a run of repeats of one value (`run`) goes as two halves with the same mean, which is how
/// a digest says "all of this weight is exactly this value": adjacent equal means stay together when the digest is
/// compressed again (here or at a global that merges it), and [`Histogram::quantile`] answers that value for every
/// rank the run holds. Data with few distinct values (integer milliseconds) is then reported exactly where it
/// repeats, instead of between two values, which holds none of the ranks asked for.
#[inline]
fn push_run(out: &mut Vec<Centroid>, mean: f64, weight: f64, run: bool) {
    if run {
        out.push(Centroid::new(mean, weight / 2.0));
        out.push(Centroid::new(mean, weight / 2.0));
    } else {
        out.push(Centroid::new(mean, weight));
    }
}

/// The value at `rank` on the line from (`r0`, `v0`) to (`r1`, `v1`), finite for any finite values.
#[inline]
fn interpolate(r0: f64, v0: f64, r1: f64, v1: f64, rank: f64) -> f64 {
    if r1 <= r0 {
        return v1;
    }
    weighted_mean(v0, v1, ((rank - r0) / (r1 - r0)).clamp(0.0, 1.0))
}

/// The inverse of [`k_to_q`]: the scale position of quantile `q`.
fn q_to_k(q: f64, d: f64) -> f64 {
    if q < 0.5 {
        d * (q / 2.0).sqrt()
    } else {
        d * (1.0 - ((1.0 - q).max(0.0) / 2.0).sqrt())
    }
}

impl Histogram {
    /// A histogram from a digest received from another instance, and the stats it should report (empty when
    /// the sender reported them itself).
    pub fn from_parts(digest: TDigest, stats: Stats) -> Self {
        let mut h = Histogram {
            stats,
            ..Histogram::default()
        };
        h.absorb(&digest);
        h
    }

    /// Takes this interval's state out (compressed: its centroids and statistics) and resets this one in place,
    /// keeping its sample buffer: a series that receives samples interval after interval reuses a buffer sized by
    /// what it received, instead of growing a new one. The centroids move out with the interval (no copy).
    pub fn take_interval(&mut self) -> Histogram {
        self.compress();
        let out = Histogram {
            centroids: std::mem::take(&mut self.centroids),
            pending_unit: Vec::new(),
            pending: Vec::new(),
            scratch: Vec::new(),
            total: self.total,
            sum: self.sum,
            min: self.min,
            max: self.max,
            stats: self.stats,
        };
        self.reset();
        out
    }

    /// Empties this histogram for the next interval, keeping its sample buffer (see [`Histogram::take_interval`]).
    /// The centroids' and the merge's buffers are freed, so that an idle histogram costs only its samples' room
    /// (the next interval's first fold allocates them again).
    pub fn reset(&mut self) {
        self.centroids = Vec::new();
        self.scratch = Vec::new();
        self.pending_unit.clear();
        self.pending.clear();
        self.total = 0.0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.stats = Stats::default();
    }

    /// Adds one sample received with `sample_rate` (weight 1/rate).
    #[inline]
    pub fn add(&mut self, value: f64, sample_rate: f64) {
        self.add_weighted(value, 1.0 / sample_rate);
    }

    /// Adds a sample of weight `weight` (1 / its sample rate).
    #[inline]
    pub fn add_weighted(&mut self, value: f64, weight: f64) {
        self.stats.add(value, weight);
        self.push(value, weight);
    }

    #[inline]
    fn push(&mut self, mean: f64, weight: f64) {
        self.total += weight;
        self.sum = saturating_add(self.sum, mean * weight);
        self.min = self.min.min(mean);
        self.max = self.max.max(mean);
        // The buffer grows with use (a series with few samples keeps a small one), up to BUFFER.
        if weight == 1.0 {
            self.pending_unit.push(mean);
        } else {
            self.pending.push(Centroid::new(mean, weight));
        }
        if self.pending_unit.len() + self.pending.len() >= BUFFER {
            self.compress();
        }
    }

    /// Folds buffered samples into the centroids: one merge pass over both sorted lists, into reused buffers.
    pub fn compress(&mut self) {
        if self.pending.is_empty() && self.pending_unit.is_empty() {
            return;
        }
        self.pending.sort_unstable_by(|a, b| a.mean().total_cmp(&b.mean()));
        self.pending_unit.sort_unstable_by(f64::total_cmp);
        let d = DIGEST_SIZE as f64;
        let total = self.total;
        // A centroid may grow while it spans at most one unit of the scale, counted from where it starts (the
        // merging t-digest's rule). Counting units by centroids emitted instead lags behind where large merged
        // centroids end, and squeezed everything past the last unit into one centroid.
        let bound = |before: f64| k_to_q(q_to_k(before / total, d) + 1.0, d) * total;
        let mut merged = std::mem::take(&mut self.scratch);
        merged.clear();
        // A merge of three sorted lists (centroids first among equal means, then weighted samples, then unit ones).
        let (mut i, mut j, mut k) = (0, 0, 0);
        let (centroids, pending, unit) = (&self.centroids, &self.pending, &self.pending_unit);
        let mut next = || {
            let a = centroids.get(i).map(|c| (c.mean(), c.weight()));
            let b = pending.get(j).map(|c| (c.mean(), c.weight()));
            let u = unit.get(k).map(|&v| (v, 1.0));
            let first = [a, b, u]
                .iter()
                .enumerate()
                .filter_map(|(n, x)| x.map(|x| (n, x)))
                .reduce(|best, x| if x.1 .0 < best.1 .0 { x } else { best })?;
            match first.0 {
                0 => i += 1,
                1 => j += 1,
                _ => k += 1,
            }
            Some(first.1)
        };
        if let Some((mut mean, mut weight)) = next() {
            let mut before = 0.0;
            let mut limit = bound(before);
            // Repeats of one value (`items` of them, nothing else merged in) are kept together: see `push_run`.
            let (mut pure, mut items) = (true, 1u32);
            while let Some((m, w)) = next() {
                if pure && m == mean {
                    weight += w;
                    items += 1;
                    continue;
                }
                let run = pure && items >= 2;
                // A run that fills half of its scale unit or more takes no other value, so that it stays exact.
                let keep_run = run && weight >= 0.5 * (limit - before);
                if !keep_run && before + weight + w <= limit {
                    weight += w;
                    mean = weighted_mean(mean, m, w / weight);
                    (pure, items) = (false, items + 1);
                } else {
                    push_run(&mut merged, mean, weight, run);
                    before += weight;
                    limit = bound(before);
                    (mean, weight, pure, items) = (m, w, true, 1);
                }
            }
            push_run(&mut merged, mean, weight, pure && items >= 2);
        }
        self.scratch = std::mem::replace(&mut self.centroids, merged);
        self.pending.clear();
        self.pending_unit.clear();
    }

    /// Adds every centroid of `digest` (as weighted samples, not to the exact stats).
    fn absorb(&mut self, digest: &TDigest) {
        for c in digest.centroids() {
            self.push(c.mean(), c.weight());
        }
        // The digest's own extremes may lie beyond its centroids' means.
        if let (Some(min), Some(max)) = (digest.min(), digest.max()) {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }

    /// Merges another digest (from a forwarding local) into this one. Exact stats are not touched: they describe
    /// only the samples this instance received itself (the importer merges forwarded stats where they apply).
    pub fn merge_digest(&mut self, other: TDigest) {
        self.absorb(&other);
    }

    /// The compressed digest as a `TDigest`, for forwarding or merging.
    pub fn digest(&mut self) -> TDigest {
        self.compress();
        if self.centroids.is_empty() {
            TDigest::new_with_size(DIGEST_SIZE)
        } else {
            TDigest::new(
                self.centroids.clone(),
                self.sum,
                self.total,
                Some(self.max),
                Some(self.min),
                MAX_DIGEST_CENTROIDS,
            )
        }
    }

    /// The knots `(rank, value)` of the quantile function [`Histogram::quantile`] interpolates: the minimum at
    /// rank 0, each centroid's mean at the middle of its weight (a run of one value flat over its whole weight),
    /// the maximum at the total. Empty when the digest is.
    pub fn knots(&mut self) -> Vec<(f64, f64)> {
        if self.total <= 0.0 {
            return Vec::new();
        }
        self.compress();
        let c = &self.centroids;
        let mut out = Vec::with_capacity(2 * c.len() + 2);
        out.push((0.0, self.min));
        let mut before = 0.0;
        for (i, centroid) in c.iter().enumerate() {
            let (mean, weight) = (centroid.mean().clamp(self.min, self.max), centroid.weight());
            let in_run = (i > 0 && c[i - 1].mean() == centroid.mean())
                || c.get(i + 1).is_some_and(|n| n.mean() == centroid.mean());
            if in_run {
                out.push((before, mean));
                out.push((before + weight, mean));
            } else {
                out.push((before + weight / 2.0, mean));
            }
            before += weight;
        }
        out.push((self.total.max(before), self.max));
        out
    }

    /// Count, sum, min and max of the whole interval: the exact [`Stats`] when they cover every sample of the
    /// digest (this instance received them all), else the digest's own (a global's histogram merged from its
    /// locals, whose stats the locals reported). `None` when empty.
    pub fn totals(&mut self) -> Option<(f64, f64, f64, f64)> {
        self.compress();
        if self.total <= 0.0 {
            return None;
        }
        let s = self.stats;
        Some(if !s.is_empty() && s.count == self.total {
            (s.count, s.sum, s.min, s.max)
        } else {
            (self.total, self.sum, self.min, self.max)
        })
    }

    /// The quantile `q` in [0, 1] from the digest.
    ///
    /// The inverse of the digest's CDF, linear between knots: the minimum at rank 0, each centroid's mean at the
    /// middle of its weight, the maximum at the total. Adjacent centroids with the same mean hold repeats of one
    /// value (integer milliseconds, say), so such a run is flat over its whole weight instead of only between its
    /// middles: a quantile that falls among repeats of a value is that value, not a value between it and the next
    /// (which would hold none of the ranks asked for). Data without repeats gives the usual interpolation.
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        if self.total <= 0.0 || q.is_nan() {
            return None;
        }
        self.compress();
        let c = &self.centroids;
        let rank = q.clamp(0.0, 1.0) * self.total;
        // The knot before `rank` as (rank, value), walked left to right.
        let (mut prev_rank, mut prev_value) = (0.0, self.min);
        let mut before = 0.0;
        for (i, centroid) in c.iter().enumerate() {
            let (mean, weight) = (centroid.mean(), centroid.weight());
            // A centroid in a run of one value is flat over its whole weight; any other has one knot, its middle.
            let in_run = (i > 0 && c[i - 1].mean() == mean) || c.get(i + 1).is_some_and(|n| n.mean() == mean);
            let (from, to) = if in_run {
                (before, before + weight)
            } else {
                (before + weight / 2.0, before + weight / 2.0)
            };
            let knots = [(from, mean), (to, mean)];
            for (r, v) in knots {
                if rank <= r {
                    return Some(interpolate(prev_rank, prev_value, r, v, rank).clamp(self.min, self.max));
                }
                (prev_rank, prev_value) = (r, v);
            }
            before += weight;
        }
        Some(interpolate(prev_rank, prev_value, self.total, self.max, rank).clamp(self.min, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_stats_weight_each_sample_by_its_rate() {
        let mut h = Histogram::default();
        for v in [1.0, 2.0, 3.0, 4.0, 5.0] {
            h.add(v, 0.5);
        }
        assert_eq!(h.stats.count, 10.0);
        assert_eq!(h.stats.sum, 30.0);
        assert_eq!((h.stats.min, h.stats.max), (1.0, 5.0));
        assert_eq!(h.stats.avg(), 3.0);
        let want_hmean = 5.0 / (1.0 + 0.5 + 1.0 / 3.0 + 0.25 + 0.2);
        assert!((h.stats.hmean() - want_hmean).abs() < 1e-12);
    }

    #[test]
    fn a_zero_sample_keeps_every_statistic_finite_and_makes_the_harmonic_mean_zero() {
        for zero in [0.0, -0.0, 1e-320, -1e-320] {
            let mut h = Histogram::default();
            for v in [2.0, zero, 4.0, zero] {
                h.add(v, 1.0);
            }
            let s = h.stats;
            assert!(
                s.reciprocal_sum.is_finite(),
                "{zero}: reciprocal sum {}",
                s.reciprocal_sum
            );
            assert_eq!(s.count, 4.0);
            assert_eq!(s.hmean(), 0.0, "{zero}");
            let mut merged = Stats::default();
            merged.merge(&s);
            merged.merge(&s);
            assert!(merged.reciprocal_sum.is_finite());
            assert_eq!(merged.hmean(), 0.0);
        }
        let mut huge = Histogram::default();
        huge.add(f64::MAX, 1.0);
        huge.add(f64::MAX, 1.0);
        assert_eq!(
            huge.stats.sum,
            f64::MAX,
            "an overflowing sum saturates instead of becoming infinite"
        );
    }

    #[test]
    fn a_quantile_among_repeats_of_one_value_is_that_value_after_merging() {
        // Integer milliseconds: 0..100, each value repeated 1,000 times, on two "hosts" merged into a third.
        let mut hosts = [Histogram::default(), Histogram::default()];
        for i in 0..100_000u32 {
            hosts[(i % 2) as usize].add(f64::from(i % 100), 1.0);
        }
        let mut merged = Histogram::default();
        for h in &mut hosts {
            merged.merge_digest(h.digest());
        }
        for q in [0.005, 0.255, 0.505, 0.905, 0.995, 0.999] {
            let want = (q * 100.0f64).floor();
            assert_eq!(merged.quantile(q), Some(want), "q{q}");
        }
    }

    #[test]
    fn totals_are_the_exact_stats_here_and_the_merged_digests_at_a_global() {
        let mut local = Histogram::default();
        for v in 1..=10 {
            local.add(f64::from(v), 1.0);
        }
        assert_eq!(local.totals(), Some((10.0, 55.0, 1.0, 10.0)));
        // A global merging two locals' digests (their stats reported by the locals): the digests' totals.
        let mut global = Histogram::from_parts(local.digest(), Stats::default());
        let mut other = Histogram::default();
        other.add(100.0, 1.0);
        global.merge_digest(other.digest());
        assert_eq!(global.totals(), Some((11.0, 155.0, 1.0, 100.0)));
        let knots = global.knots();
        assert_eq!((knots[0], *knots.last().unwrap()), ((0.0, 1.0), (11.0, 100.0)));
        assert_eq!(Histogram::default().totals(), None);
    }

    #[test]
    fn quantiles_of_a_uniform_sample_are_close_to_exact() {
        let mut h = Histogram::default();
        for i in 0..100_000 {
            h.add(f64::from(i % 1000), 1.0);
        }
        for q in [0.5, 0.9, 0.99] {
            let got = h.quantile(q).unwrap();
            let want = q * 1000.0;
            assert!((got - want).abs() < 5.0, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.digest().count(), 100_000.0);
    }
}
