//! The reporting policy: which series this instance reports and which it forwards, and how a histogram reported
//! here is reduced to its values (aggregates, then percentiles). Used by the shard (to reduce an interval as it is
//! taken) and by [`super::emit`] (to turn an interval into output); it knows neither.

use super::histogram::Histogram;
use super::key::Scope;
use crate::config::{percentile_suffix, Aggregate};
use crate::exponential::{self, Knots};
use crate::model::{HistogramData, SharedStr, Suffix};

/// How a flushed shard turns into output.
#[derive(Debug, Clone)]
pub struct EmitConfig {
    /// `forward_address` is set: sketches and global-only series are forwarded instead of emitted.
    pub is_local: bool,
    /// (aggregate, its name suffix, e.g. `.max`)
    pub aggregates: Vec<(Aggregate, NameSuffix)>,
    /// (quantile, its name suffix, e.g. `.99percentile`)
    pub percentiles: Vec<(f64, NameSuffix)>,
    /// `distributions: sketch`: distributions are DDSketches (see [`ShardState::sketching`]).
    ///
    /// [`ShardState::sketching`]: super::ShardState::sketching
    pub sketches: bool,
    /// `Some(max_buckets)` when a sink sends histograms whole (OTLP): each histogram and distribution reported
    /// here also becomes a [`HistogramSeries`](crate::model::HistogramSeries) with exponential buckets of at
    /// most this many buckets a side. `None` (every other configuration): nothing more is computed.
    pub exponential: Option<usize>,
}

impl EmitConfig {
    /// Whether a series of `scope` is forwarded (its sketch, or its value for a global-only counter or gauge)
    /// rather than reported here.
    pub fn forwards(&self, scope: Scope) -> bool {
        self.is_local && scope != Scope::Local
    }

    /// Takes the interval of a histogram that is reported here (not forwarded) as the values reported: its
    /// aggregates, then its percentiles, in this configuration's order. The histogram is reset in place.
    pub fn summarize(&self, h: &mut Histogram) -> Summary {
        let mut values = Vec::with_capacity(self.aggregates.len() + self.percentiles.len());
        for (agg, _) in &self.aggregates {
            values.push(aggregate_value(*agg, h));
        }
        for (q, _) in &self.percentiles {
            values.push(h.quantile(*q).unwrap_or(f64::NAN));
        }
        let whole = self
            .exponential
            .and_then(|max_buckets| self.whole(h, &values, max_buckets));
        h.reset();
        Summary {
            values: values.into_boxed_slice(),
            whole,
        }
    }

    /// The histogram whole (for [`EmitConfig::exponential`]), from its digest and the percentiles among `values`.
    fn whole(&self, h: &mut Histogram, values: &[f64], max_buckets: usize) -> Option<Box<HistogramData>> {
        let (count, sum, min, max) = h.totals()?;
        let knots = h.knots();
        let buckets = exponential::build(Knots(&knots), count.round().max(0.0) as u64, max_buckets);
        Some(Box::new(HistogramData {
            count,
            sum,
            min,
            max,
            quantiles: self.quantiles(&values[self.aggregates.len()..]),
            buckets,
            zero_threshold: 0.0,
        }))
    }

    /// The configured percentiles paired with their values (those that are finite).
    pub fn quantiles(&self, values: &[f64]) -> Vec<(f64, f64)> {
        self.percentiles
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|((q, _), &v)| (*q, v))
            .collect()
    }
}

/// Aggregate `agg` of a histogram's own samples; NaN when it has none (or no median).
pub(super) fn aggregate_value(agg: Aggregate, h: &mut Histogram) -> f64 {
    let stats = h.stats;
    if stats.is_empty() {
        return f64::NAN;
    }
    match agg {
        Aggregate::Min => stats.min,
        Aggregate::Max => stats.max,
        Aggregate::Count => stats.count,
        Aggregate::Sum => stats.sum,
        Aggregate::Avg => stats.avg(),
        Aggregate::Hmean => stats.hmean(),
        Aggregate::Median => h.quantile(0.5).unwrap_or(f64::NAN),
    }
}

/// A histogram's interval as the values an instance reports of it: [`EmitConfig::summarize`]'s aggregates then
/// percentiles, NaN where there is nothing to report (no samples, or a non-finite statistic).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub values: Box<[f64]>,
    /// The histogram whole, when [`EmitConfig::exponential`] asks for it.
    pub whole: Option<Box<HistogramData>>,
}

/// A histogram output's name suffix: interned (shared by every histogram), or as text when the process-wide
/// table is full and each name is allocated whole.
#[derive(Debug, Clone)]
pub enum NameSuffix {
    Interned(Suffix),
    Text(String),
}

impl NameSuffix {
    fn new(text: String) -> Self {
        match Suffix::intern(&text) {
            Some(s) => NameSuffix::Interned(s),
            None => NameSuffix::Text(text),
        }
    }

    /// The name and suffix of series `name` + this suffix.
    pub(super) fn apply(&self, name: &SharedStr) -> (SharedStr, Suffix) {
        match self {
            NameSuffix::Interned(s) => (name.clone(), *s),
            NameSuffix::Text(t) => (format!("{name}{t}").into(), Suffix::default()),
        }
    }
}

impl EmitConfig {
    pub fn new(is_local: bool, aggregates: &[Aggregate], percentiles: &[f64]) -> Self {
        EmitConfig {
            is_local,
            aggregates: aggregates
                .iter()
                .map(|&a| (a, NameSuffix::new(format!(".{}", a.suffix()))))
                .collect(),
            percentiles: percentiles
                .iter()
                .map(|&p| (p, NameSuffix::new(format!(".{}", percentile_suffix(p)))))
                .collect(),
            sketches: false,
            exponential: None,
        }
    }
}
