//! The output model: what a flush hands to the sinks (series, sketches, service checks, events) and the tag sets
//! they carry. Produced by the aggregation and the self-metrics, read by the flusher and every sink; it imports
//! none of them (only the wire's enums from [`crate::protocol`], the sketch type from [`crate::ddsketch`] and the
//! bucket type from the leaf [`crate::exponential`]).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::ddsketch::DdSketch;
pub use crate::exponential::{Buckets, ExponentialBuckets};
use crate::protocol::{AlertType, CheckStatus, Priority};
/// A shared immutable string behind one pointer, its length in the allocation: what series names and tag sets are
/// held as (a fat `Arc<str>` is 16 bytes; a series holds a name and a tag set in its slot and in each output).
pub use arcstr::ArcStr as SharedStr;

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
    pub name: SharedStr,
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
    /// Histograms, timers and distributions reported here, whole (exact statistics, percentiles and exponential
    /// buckets), for sinks that send histograms (OTLP). Only filled when a sink asks for it
    /// ([`HistogramSeries`]); their aggregates and percentiles are also in `series` / `sketch_series`.
    pub histograms: Vec<HistogramSeries>,
    pub checks: Vec<CheckRun>,
    pub events: Vec<Event>,
}

/// A distribution's interval as the agent's DDSketch.
#[derive(Debug, Clone, Default)]
pub struct SketchSeries {
    pub name: SharedStr,
    pub tags: TagSet,
    /// Unix seconds of the flush.
    pub timestamp: i64,
    pub sketch: Box<DdSketch>,
}

/// A histogram's, timer's or distribution's interval, whole.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    pub name: SharedStr,
    pub tags: TagSet,
    /// Unix seconds of the flush.
    pub timestamp: i64,
    pub data: HistogramData,
}

/// What a histogram's interval is: exact count (weighted by 1/rate), sum, min and max, the configured percentiles,
/// and the distribution as exponential buckets whose counts sum to `count` rounded.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramData {
    pub count: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// (quantile, value) for each configured percentile, in order.
    pub quantiles: Vec<(f64, f64)>,
    pub buckets: ExponentialBuckets,
    /// The magnitude at or below which a value is in the zero bucket: 0 for a t-digest (exact zeros only), the
    /// DDSketch's smallest bin for a sketch (its key 0 holds every magnitude below about 1e-9).
    pub zero_threshold: f64,
}

impl Flush {
    /// The series for a sink that takes no sketches: `series`, then `sketch_series`.
    pub fn all_series(&self) -> impl Iterator<Item = &Series> {
        self.series.iter().chain(&self.sketch_series)
    }
}

/// A canonical tag set: sorted and distinct, stored as one `,`-joined string behind a reference count (one
/// allocation; none when empty), so that cloning it is cheap. A tag never contains `,`: the wire splits tags on
/// it, the configuration refuses it in `extend_tags`, and imports refuse it. `host:` and `device:` tags stay in
/// the set (they are part of the series' identity) and are exposed separately for sinks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TagSet {
    joined: Option<SharedStr>,
}

impl TagSet {
    /// Builds a canonical set from any tags (sorted, de-duplicated, empty tags dropped). Tags must not contain `,`.
    pub fn from_tags<S: AsRef<str>>(tags: impl IntoIterator<Item = S>) -> Self {
        let tags: Vec<S> = tags.into_iter().filter(|t| !t.as_ref().is_empty()).collect();
        let mut refs: Vec<&str> = tags.iter().map(|t| t.as_ref()).collect();
        debug_assert!(refs.iter().all(|t| !t.contains(',')), "a tag with a comma: {refs:?}");
        refs.sort_unstable();
        refs.dedup();
        Self::from_canonical(&refs.join(","))
    }

    /// A set from text that is already canonical (sorted, distinct, non-empty tags joined by `,`).
    pub(crate) fn from_canonical(joined: &str) -> Self {
        TagSet {
            joined: (!joined.is_empty()).then(|| joined.into()),
        }
    }

    /// The tags joined by `,`, in order.
    pub fn joined(&self) -> &str {
        self.joined.as_deref().unwrap_or("")
    }

    /// Every tag, in order, including `host:` and `device:`.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let joined = self.joined();
        let mut rest = (!joined.is_empty()).then_some(joined);
        std::iter::from_fn(move || {
            let r = rest?;
            match memchr::memchr(b',', r.as_bytes()) {
                Some(i) => {
                    rest = Some(&r[i + 1..]);
                    Some(&r[..i])
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        })
    }

    pub fn len(&self) -> usize {
        match &self.joined {
            None => 0,
            Some(j) => memchr::memchr_iter(b',', j.as_bytes()).count() + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.joined.is_none()
    }

    #[inline]
    pub fn contains(&self, tag: &str) -> bool {
        self.iter().any(|t| t == tag)
    }

    /// The value of the `host:` tag, which sets the series' host.
    pub fn host(&self) -> Option<&str> {
        self.iter().find_map(|t| t.strip_prefix("host:"))
    }

    /// The value of the `device:` tag, which becomes the series' device.
    pub fn device(&self) -> Option<&str> {
        self.iter().find_map(|t| t.strip_prefix("device:"))
    }

    /// The tags a sink reports: all but `host:` and `device:`.
    pub fn output(&self) -> impl Iterator<Item = &str> {
        self.iter()
            .filter(|t| !t.starts_with("host:") && !t.starts_with("device:"))
    }
}
