//! Sinks: where each flush goes. A sink gets the whole flush (series, service checks, events) behind an `Arc`
//! and reports how it went; the flusher runs every sink concurrently and never waits on one before the next
//! interval.

pub mod console;
pub mod datadog;
pub mod delivery;
pub mod otlp;
pub mod prometheus;
pub mod retry_queue;
pub(crate) mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The output model, at its old paths: sinks name it `sink::Series` and so on.
pub use crate::model::{
    CheckRun, Event, Flush, FullName, HistogramData, HistogramSeries, Series, SeriesKind, SketchSeries, Suffix,
};

/// What a sink reports for one flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkOutcome {
    Ok,
    /// Some or all data could not be delivered; `reason` is a short stable word for self-metrics.
    Failed {
        reason: &'static str,
        detail: String,
    },
}

impl SinkOutcome {
    /// The outcome of a flush whose failed requests gave these reasons: `Ok` if none, else the first reason.
    pub fn from_failures(failures: &[&'static str]) -> Self {
        match failures.first() {
            None => SinkOutcome::Ok,
            Some(&reason) => SinkOutcome::Failed {
                reason,
                detail: format!("{} request(s) failed: {}", failures.len(), failures.join(", ")),
            },
        }
    }
}

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = SinkOutcome> + Send + 'a>>;

/// A destination for flushed data.
pub trait Sink: Send + Sync + 'static {
    /// The configured name, for logs and self-metrics.
    fn name(&self) -> &str;
    /// The kind (`console`, `datadog`, …), for self-metrics.
    fn kind(&self) -> &'static str;
    /// Delivers one flush. Called concurrently with other sinks; the flusher bounds it by one interval plus
    /// [`Sink::request_timeout`].
    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_>;
    /// How long a request started within the interval may still run after it (HTTP sinks: `request_timeout`).
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
