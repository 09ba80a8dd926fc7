//! How histograms, timers and distributions are reported: `aggregates`, `percentiles`' names, `distributions`.

use serde::{Deserialize, Serialize};

/// A histogram aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Min,
    Max,
    Median,
    Avg,
    Count,
    Sum,
    Hmean,
}

impl Aggregate {
    /// The suffix appended to the metric name.
    pub fn suffix(self) -> &'static str {
        match self {
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Median => "median",
            Aggregate::Avg => "avg",
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Hmean => "hmean",
        }
    }
}

/// The name suffix of a percentile: `0.99` → `99percentile`, `0.999` → `99_9percentile`.
pub fn percentile_suffix(p: f64) -> String {
    let percent = format!("{:.6}", p * 100.0);
    let percent = percent.trim_end_matches('0').trim_end_matches('.');
    format!("{}percentile", percent.replace('.', "_"))
}

/// `distributions`: what a `d` series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distributions {
    /// The Datadog agent's DDSketch.
    #[default]
    Sketch,
    /// A t-digest, as `h`.
    Histogram,
}
