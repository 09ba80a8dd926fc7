//! Sinks: where each flush goes. A sink gets the whole flush (series, service checks, events) behind an `Arc`
//! and reports how it went; the flusher runs every sink concurrently and never waits on one before the next
//! interval.

pub mod console;
pub mod datadog;
pub mod delivery;
pub mod prometheus;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregate::TagSet;
use crate::protocol::{AlertType, CheckStatus, Priority};

/// How a series is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    /// A sum over the interval (counters, histogram `.count`). Datadog receives it as a per-second rate.
    Counter,
    /// A value at flush time.
    Gauge,
    /// A histogram's, timer's or distribution's `.count`: the interval's (weighted) number of samples. Summed
    /// like a counter wherever a counter is (Datadog receives it as a rate); a sink that keeps counters
    /// cumulative (Prometheus) reports it as the interval's value, like the histogram's other aggregates.
    SampleCount,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Counter | SeriesKind::SampleCount => "counter",
            SeriesKind::Gauge => "gauge",
        }
    }
}

/// One output point.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: Arc<str>,
    pub tags: TagSet,
    pub value: f64,
    pub kind: SeriesKind,
    /// Unix seconds: the flush time, or the line's own `|T` timestamp.
    pub timestamp: i64,
}

impl Series {
    /// The host to report: the `host:` tag, else the configured hostname (none if that is empty).
    pub fn host<'a>(&'a self, default: &'a str) -> Option<&'a str> {
        self.tags.host().or((!default.is_empty()).then_some(default))
    }
}

/// The last status of a service check in the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    pub name: String,
    pub status: CheckStatus,
    pub timestamp: i64,
    /// `h:`, else the `host:` tag; `None` means the configured hostname.
    pub hostname: Option<String>,
    pub tags: TagSet,
    pub message: String,
}

/// An event, unescaped and owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub title: String,
    pub text: String,
    pub timestamp: i64,
    /// `h:`, else the `host:` tag; `None` means the configured hostname.
    pub hostname: Option<String>,
    pub priority: Priority,
    pub alert_type: AlertType,
    pub aggregation_key: Option<String>,
    pub source_type: Option<String>,
    pub tags: TagSet,
}

/// Everything one flush produced.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    /// Unix seconds of the flush.
    pub timestamp: i64,
    pub interval: Duration,
    /// Host for series, checks and events that name none; empty means none.
    pub hostname: String,
    pub series: Vec<Series>,
    pub checks: Vec<CheckRun>,
    pub events: Vec<Event>,
}

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
    /// Delivers one flush. Called concurrently with other sinks; the flusher bounds it by one interval.
    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_>;
}
