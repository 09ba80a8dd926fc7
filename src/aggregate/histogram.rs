//! Histograms, timers and distributions: a t-digest for quantiles, plus exact min, max, count (weighted by
//! 1/rate), sum and reciprocal sum.
//!
//! Samples are buffered as (value, weight) and folded into the digest in batches, so a known series costs no
//! allocation per sample; the digest is compressed every [`BUFFER`] samples and at flush.

use tdigest::{Centroid, TDigest};

/// Digest size (the t-digest's compression): at most this many centroids are kept. 200 keeps p99 within about
/// 0.2% of rank after merging a hundred digests.
pub const DIGEST_SIZE: usize = 200;
/// Samples buffered before they are folded into the digest.
const BUFFER: usize = 512;

/// One histogram series' state for an interval.
#[derive(Debug, Clone)]
pub struct Histogram {
    digest: TDigest,
    pending: Vec<Centroid>,
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
    /// Sum of weight / value, for the harmonic mean.
    pub reciprocal_sum: f64,
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
        self.sum += value * weight;
        self.reciprocal_sum += weight / value;
    }

    pub fn merge(&mut self, other: &Stats) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
        self.reciprocal_sum += other.reciprocal_sum;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0.0
    }

    pub fn avg(&self) -> f64 {
        self.sum / self.count
    }

    pub fn hmean(&self) -> f64 {
        self.count / self.reciprocal_sum
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            digest: TDigest::new_with_size(DIGEST_SIZE),
            pending: Vec::new(),
            stats: Stats::default(),
        }
    }
}

impl Histogram {
    /// A histogram from a digest received from another instance, and the stats it should report (empty when
    /// the sender reported them itself).
    pub fn from_parts(digest: TDigest, stats: Stats) -> Self {
        Histogram {
            digest,
            pending: Vec::new(),
            stats,
        }
    }

    /// Adds one sample received with `sample_rate` (weight 1/rate).
    #[inline]
    pub fn add(&mut self, value: f64, sample_rate: f64) {
        let weight = 1.0 / sample_rate;
        self.stats.add(value, weight);
        // The buffer grows with use (a series with few samples keeps a small one), up to BUFFER.
        self.pending.push(Centroid::new(value, weight));
        if self.pending.len() >= BUFFER {
            self.compress();
        }
    }

    /// Folds buffered samples into the digest: one compression of the digest's centroids with the buffered
    /// samples (each a centroid of its own weight).
    pub fn compress(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let d = &self.digest;
        let (mut sum, mut count) = (d.sum(), d.count());
        let (mut min, mut max) = (d.min().unwrap_or(f64::INFINITY), d.max().unwrap_or(f64::NEG_INFINITY));
        for c in &self.pending {
            sum += c.mean() * c.weight();
            count += c.weight();
            min = min.min(c.mean());
            max = max.max(c.mean());
        }
        let mut centroids = Vec::with_capacity(d.centroids().len() + self.pending.len());
        centroids.extend_from_slice(d.centroids());
        centroids.append(&mut self.pending);
        self.digest = TDigest::new(centroids, sum, count, Some(max), Some(min), DIGEST_SIZE);
    }

    /// Merges another digest (from a forwarding local) into this one. Exact stats are not touched: they describe
    /// only the samples this instance received itself.
    pub fn merge_digest(&mut self, other: TDigest) {
        if other.is_empty() {
            return;
        }
        let mine = std::mem::replace(&mut self.digest, TDigest::new_with_size(DIGEST_SIZE));
        self.digest = if mine.is_empty() {
            other
        } else {
            TDigest::merge_digests(vec![mine, other])
        };
    }

    /// The compressed digest, for quantiles or forwarding.
    pub fn digest(&mut self) -> &TDigest {
        self.compress();
        &self.digest
    }

    /// The quantile `q` in [0, 1] from the digest.
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        self.compress();
        self.digest.estimate_quantile(q)
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
