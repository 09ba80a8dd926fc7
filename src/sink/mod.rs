//! Sinks: where each flush goes. A sink gets the whole flush (series, service checks, events) behind an `Arc`
//! and reports how it went; the flusher runs every sink concurrently and never waits on one before the next
//! interval.

pub mod console;
pub mod datadog;
pub mod delivery;
pub mod prometheus;
pub mod retry_queue;
pub(crate) mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::aggregate::ddsketch::DdSketch;
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
    /// The name, without [`Series::suffix`]: write [`Series::full_name`].
    pub name: Arc<str>,
    /// What follows `name` (a histogram's `.max` or `.99percentile`): shared by every histogram of a flush
    /// instead of a name allocated per series.
    pub suffix: Suffix,
    pub tags: TagSet,
    pub value: f64,
    pub kind: SeriesKind,
    /// Unix seconds: the flush time, or the line's own `|T` timestamp.
    pub timestamp: i64,
}

impl Series {
    /// The name as reported: `name` followed by `suffix`.
    pub fn full_name(&self) -> FullName<'_> {
        FullName(&self.name, self.suffix.as_str())
    }

    /// The host to report: the `host:` tag, else the configured hostname (none if that is empty).
    pub fn host<'a>(&'a self, default: &'a str) -> Option<&'a str> {
        self.tags.host().or((!default.is_empty()).then_some(default))
    }
}

/// A series name as its two parts (a base and a suffix), written one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullName<'a>(pub &'a str, pub &'static str);

impl std::fmt::Display for FullName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

/// Number of distinct suffixes the process can intern (beyond it, names are allocated whole).
const SUFFIXES: usize = 256;

/// Interned suffixes; index 0 is the empty suffix. Each is leaked once: suffixes come from the configuration
/// (aggregates and percentiles), a few dozen at most, and the table is bounded.
static SUFFIX_TABLE: [OnceLock<&'static str>; SUFFIXES] = [const { OnceLock::new() }; SUFFIXES];
static SUFFIX_INTERN: Mutex<()> = Mutex::new(());

/// A name suffix from a process-wide table, one byte in a [`Series`]. `Suffix::default()` is the empty one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Suffix(u8);

impl Suffix {
    /// The suffix `s`, interned (once per distinct text); `None` when the table is full.
    pub fn intern(s: &str) -> Option<Suffix> {
        if s.is_empty() {
            return Some(Suffix(0));
        }
        let _guard = SUFFIX_INTERN.lock().unwrap_or_else(|e| e.into_inner());
        for (i, slot) in SUFFIX_TABLE.iter().enumerate().skip(1) {
            match slot.get() {
                Some(&t) if t == s => return Some(Suffix(i as u8)),
                Some(_) => {}
                None => {
                    let _ = slot.set(Box::leak(s.to_string().into_boxed_str()));
                    return Some(Suffix(i as u8));
                }
            }
        }
        None
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            0 => "",
            i => SUFFIX_TABLE[i as usize].get().copied().unwrap_or(""),
        }
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
    /// Distributions as sketches (`distributions: sketch`), for sinks that send sketches (Datadog).
    pub sketches: Vec<SketchSeries>,
    /// The same distributions as their configured aggregates and percentiles, for every other sink.
    pub sketch_series: Vec<Series>,
    pub checks: Vec<CheckRun>,
    pub events: Vec<Event>,
}

/// A distribution's interval as the agent's DDSketch.
#[derive(Debug, Clone, Default)]
pub struct SketchSeries {
    pub name: Arc<str>,
    pub tags: TagSet,
    /// Unix seconds of the flush.
    pub timestamp: i64,
    pub sketch: Box<DdSketch>,
}

impl Flush {
    /// The series for a sink that takes no sketches: `series`, then `sketch_series`.
    pub fn all_series(&self) -> impl Iterator<Item = &Series> {
        self.series.iter().chain(&self.sketch_series)
    }
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
    /// Delivers one flush. Called concurrently with other sinks; the flusher bounds it by one interval plus
    /// [`Sink::request_timeout`].
    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_>;
    /// How long a request started within the interval may still run after it (HTTP sinks: `request_timeout`).
    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
