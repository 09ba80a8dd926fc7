//! OpenTelemetry exponential-histogram buckets from a distribution given as the knots of its quantile function
//! (a t-digest's, a DDSketch's, or exact samples'). A leaf: it imports nothing from the crate.
//!
//! At scale `s` the base is `2^(2^-s)` and bucket `i` holds the values whose magnitude is in
//! `(base^i, base^(i+1)]` (upper bound inclusive, as the OTLP data model says); negative values go to the negative
//! buckets by magnitude, exact zeros to the zero bucket. The scale is the largest at most [`MAX_SCALE`] at which the
//! positive and the negative magnitudes each fit in `max_buckets` buckets (what the collector's statsd receiver
//! does), [`MIN_SCALE`] when none does.
//!
//! Counts: the distribution's cumulative rank at every bucket boundary, scaled to the point's integer count and
//! rounded, so the counts sum exactly to the count and no bucket gets a rounding error of more than one. A rank
//! between two knots is interpolated linearly (a centroid's weight is spread over its span, not put at its mean);
//! a run of knots at one value is a point mass there (all of it in that value's bucket).

/// The largest scale used (about 7e5 buckets per doubling: finer than any data needs).
pub const MAX_SCALE: i32 = 20;
/// The smallest scale OTLP allows for `f64` values: one bucket spans a factor of 2^1024.
pub const MIN_SCALE: i32 = -10;

/// One side's buckets: `counts[j]` is bucket `offset + j`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Buckets {
    /// Sum of the counts.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// An exponential histogram's buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExponentialBuckets {
    pub scale: i32,
    pub zero_count: u64,
    pub positive: Buckets,
    pub negative: Buckets,
}

impl ExponentialBuckets {
    /// Sum of every count, the zero bucket's included.
    pub fn total(&self) -> u64 {
        self.zero_count + self.positive.total() + self.negative.total()
    }
}

impl ExponentialBuckets {
    /// Merges neighbouring buckets (one scale lower at a time) until each side has at most `max_buckets`.
    pub fn downscale_to(&mut self, max_buckets: usize) {
        let span = |b: &Buckets| b.counts.len();
        while self.scale > MIN_SCALE && (span(&self.positive) > max_buckets || span(&self.negative) > max_buckets) {
            self.scale -= 1;
            self.positive = halved(&self.positive);
            self.negative = halved(&self.negative);
        }
    }
}

/// `b` one scale lower: bucket `i` becomes `i >> 1` (floor), so pairs of buckets merge.
fn halved(b: &Buckets) -> Buckets {
    if b.counts.is_empty() {
        return Buckets::default();
    }
    let offset = b.offset >> 1;
    let mut counts = Vec::with_capacity(b.counts.len() / 2 + 1);
    for (j, &c) in b.counts.iter().enumerate() {
        let i = ((b.offset + j as i32) >> 1) - offset;
        if counts.len() <= i as usize {
            counts.resize(i as usize + 1, 0);
        }
        counts[i as usize] += c;
    }
    Buckets { offset, counts }
}

/// The lower boundary of bucket `index` at `scale`: `base^index`, i.e. `2^(index · 2^-scale)` (0 or infinity
/// beyond the range of `f64`).
pub fn lower_boundary(index: i32, scale: i32) -> f64 {
    let exponent = if scale >= 0 {
        f64::from(index) / f64::from(1u32 << scale)
    } else {
        f64::from(index) * f64::from(1u32 << -scale)
    };
    exponent.exp2()
}

/// The bucket of magnitude `v` (positive and finite) at `scale`: the `i` with `base^i < v <= base^(i+1)`.
pub fn index(v: f64, scale: i32) -> i32 {
    debug_assert!(v > 0.0 && v.is_finite(), "{v}");
    if scale <= 0 {
        return index_at_scale_0(v) >> -scale;
    }
    let factor = f64::from(1u32 << scale);
    let mut i = ((v.log2() * factor).ceil() - 1.0).clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX - 1)) as i32;
    // The logarithm may be off by an ulp next to a boundary: settle it against the boundaries themselves.
    while i > i32::MIN + 1 && v <= lower_boundary(i, scale) {
        i -= 1;
    }
    while i < i32::MAX - 1 && v > lower_boundary(i + 1, scale) {
        i += 1;
    }
    i
}

/// `ceil(log2 v) - 1`, exactly, from the bits of `v`.
fn index_at_scale_0(v: f64) -> i32 {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = bits & ((1u64 << 52) - 1);
    if biased == 0 {
        // Subnormal: v = mantissa · 2^-1074.
        let top = 63 - mantissa.leading_zeros() as i32;
        let power_of_two = mantissa.is_power_of_two();
        return top - 1074 - i32::from(power_of_two);
    }
    let exponent = biased - 1023;
    if mantissa == 0 {
        exponent - 1
    } else {
        exponent
    }
}

/// The largest scale at most [`MAX_SCALE`] at which magnitudes from `lo` to `hi` (positive, finite) take at most
/// `max_buckets` buckets; [`MIN_SCALE`] when none does.
pub fn fitting_scale(lo: f64, hi: f64, max_buckets: usize) -> i32 {
    (MIN_SCALE..=MAX_SCALE)
        .rev()
        .find(|&s| (i64::from(index(hi, s)) - i64::from(index(lo, s)) + 1) as u64 <= max_buckets as u64)
        .unwrap_or(MIN_SCALE)
}

/// A distribution as the knots `(rank, value)` of its quantile function: ranks from 0 to the total weight and
/// values both non-decreasing, the quantile linear between two knots (equal values: a point mass). All values
/// must be finite.
#[derive(Debug, Clone, Copy)]
pub struct Knots<'a>(pub &'a [(f64, f64)]);

impl Knots<'_> {
    fn total(&self) -> f64 {
        self.0.last().map_or(0.0, |k| k.0)
    }

    /// The weight of the values at most `x`.
    fn at_most(&self, x: f64) -> f64 {
        let k = self.0;
        let j = k.partition_point(|&(_, v)| v <= x);
        if j == 0 {
            return 0.0;
        }
        if j == k.len() {
            return self.total();
        }
        let ((r0, v0), (r1, v1)) = (k[j - 1], k[j]);
        r0 + (r1 - r0) * ((x - v0) / (v1 - v0)).clamp(0.0, 1.0)
    }

    /// The weight of the values below `x`.
    fn below(&self, x: f64) -> f64 {
        let k = self.0;
        let j = k.partition_point(|&(_, v)| v < x);
        if j == 0 {
            return 0.0;
        }
        if j == k.len() {
            return self.total();
        }
        let ((r0, v0), (r1, v1)) = (k[j - 1], k[j]);
        r0 + (r1 - r0) * ((x - v0) / (v1 - v0)).clamp(0.0, 1.0)
    }
}

/// The range of bucket indexes of the magnitudes from `lo` to `hi` at `scale` (none when `lo > hi`).
fn range(lo: f64, hi: f64, scale: i32) -> Option<(i32, i32)> {
    (lo <= hi).then(|| (index(lo, scale), index(hi, scale)))
}

/// The buckets of the distribution `knots`, with `count` (the point's integer count) spread over them; empty
/// when there is no weight or no count.
pub fn build(knots: Knots<'_>, count: u64, max_buckets: usize) -> ExponentialBuckets {
    let total = knots.total();
    if count == 0 || total.is_nan() || total <= 0.0 || knots.0.iter().any(|&(r, v)| !r.is_finite() || !v.is_finite()) {
        return ExponentialBuckets::default();
    }
    // The magnitudes each side must hold: from the knot values of that sign.
    let (mut pos_lo, mut pos_hi, mut neg_lo, mut neg_hi) = (f64::INFINITY, 0.0f64, f64::INFINITY, 0.0f64);
    for &(_, v) in knots.0 {
        if v > 0.0 {
            (pos_lo, pos_hi) = (pos_lo.min(v), pos_hi.max(v));
        } else if v < 0.0 {
            (neg_lo, neg_hi) = (neg_lo.min(-v), neg_hi.max(-v));
        }
    }
    let scale = [(pos_lo, pos_hi), (neg_lo, neg_hi)]
        .iter()
        .filter(|(lo, hi)| lo <= hi)
        .map(|&(lo, hi)| fitting_scale(lo, hi, max_buckets))
        .min()
        .unwrap_or(MAX_SCALE);
    // Cumulative ranks at every cut, in increasing value: the negative buckets (largest magnitude first), the
    // zero bucket, the positive buckets. Weight interpolated between a side's nearest bucket and zero is that
    // bucket's.
    let mut cuts = vec![0.0];
    let negative = range(neg_lo, neg_hi, scale);
    if let Some((lo, hi)) = negative {
        for i in (lo..hi).rev() {
            cuts.push(knots.below(-lower_boundary(i + 1, scale)));
        }
    }
    cuts.push(knots.below(0.0));
    cuts.push(knots.at_most(0.0));
    let positive = range(pos_lo, pos_hi, scale);
    if let Some((lo, hi)) = positive {
        for i in lo..hi {
            cuts.push(knots.at_most(lower_boundary(i + 1, scale)));
        }
    }
    cuts.push(total);
    // Scaled to the integer count and rounded; monotone whatever the floating point did.
    let mut rounded = Vec::with_capacity(cuts.len());
    let mut last = 0u64;
    for (j, c) in cuts.iter().enumerate() {
        let r = if j + 1 == cuts.len() {
            count
        } else {
            ((c / total * count as f64).round() as u64).clamp(last, count)
        };
        rounded.push(r);
        last = r;
    }
    let counts: Vec<u64> = rounded.windows(2).map(|w| w[1] - w[0]).collect();
    // The segments between cuts: the negative buckets (most negative first), the zero bucket, the positive
    // buckets; with no negative bucket, the first segment (0 to `below(0)`) is empty, as no knot is negative.
    let n_neg = negative.map_or(0, |(lo, hi)| (hi - lo + 1) as usize);
    let mut out = ExponentialBuckets {
        scale,
        ..ExponentialBuckets::default()
    };
    let (neg_counts, rest) = counts.split_at(n_neg);
    let (zero, pos_counts) = if n_neg == 0 {
        (rest[0] + rest[1], &rest[2..])
    } else {
        (rest[0], &rest[1..])
    };
    out.zero_count = zero;
    if let Some((lo, _)) = negative {
        out.negative = trimmed(lo, neg_counts.iter().rev().copied().collect());
    }
    if let Some((lo, _)) = positive {
        out.positive = trimmed(lo, pos_counts.to_vec());
    } else {
        // No positive bucket: the last segment is empty (no knot is positive); kept in the total anyway.
        out.zero_count += pos_counts.iter().sum::<u64>();
    }
    out
}

/// Buckets from `offset` without their leading and trailing zero counts.
fn trimmed(offset: i32, mut counts: Vec<u64>) -> Buckets {
    let lead = counts.iter().take_while(|&&c| c == 0).count();
    if lead == counts.len() {
        return Buckets::default();
    }
    let trail = counts.iter().rev().take_while(|&&c| c == 0).count();
    counts.truncate(counts.len() - trail);
    counts.drain(..lead);
    Buckets {
        offset: offset + lead as i32,
        counts,
    }
}

/// The knots of exact samples (each a point mass of weight 1), sorted: for tests and small inputs.
pub fn sample_knots(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mut knots = Vec::with_capacity(2 * sorted.len());
    for (i, v) in sorted.into_iter().enumerate() {
        knots.push((i as f64, v));
        knots.push((i as f64 + 1.0, v));
    }
    knots
}

#[cfg(test)]
#[path = "exponential_tests.rs"]
mod tests;
