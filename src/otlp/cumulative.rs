//! Cumulative OTLP streams turned into what each point adds since the one before, as the aggregation needs (it
//! sums counters over an interval and merges an interval's samples).
//!
//! A stream is one metric's points with the same resource, scope and attributes. For each, the last point is kept:
//! - the next point of the same start time, whose totals did not go down, adds the difference;
//! - a point with a new start time, or totals that went down, is a reset: it adds its whole value (the stream
//!   started again from zero);
//! - a stream's first point adds its whole value when the stream started (its `start_time_unix_nano`) after this
//!   server did, since every point of it was then seen here; otherwise (it started before, say before a restart of
//!   this server) it only primes, so that nothing is counted twice.
//!
//! A stream not seen for [`EXPIRY`] is forgotten. At most [`MAX_STREAMS`] are kept; a new one beyond is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A stream not seen for this long is forgotten (and primes again if it comes back).
pub const EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Streams kept at most.
pub const MAX_STREAMS: usize = 1_000_000;

/// A histogram point's data, explicit or exponential, as the cumulative state and the conversion need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub count: u64,
    pub sum: Option<f64>,
    /// The exact extremes, when known.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Bounds that hold every value when the extremes are not known (a cumulative stream's extremes so far hold
    /// those of its delta): the buckets' ranges are clamped to them.
    pub floor: Option<f64>,
    pub ceiling: Option<f64>,
    pub shape: Shape,
}

/// A histogram's buckets.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Bucket `i` holds the values in `(bounds[i-1], bounds[i]]` (the first from -∞, the last to +∞):
    /// `counts.len() == bounds.len() + 1`.
    Explicit { bounds: Vec<f64>, counts: Vec<u64> },
    /// Base `2^(2^-scale)`: positive bucket `offset + i` holds `(base^(offset+i), base^(offset+i+1)]`, negative
    /// ones the same of `-v`; `zero` the values at zero.
    Exponential {
        scale: i32,
        zero: u64,
        positive: (i32, Vec<u64>),
        negative: (i32, Vec<u64>),
    },
}

/// One range of values and how many fell in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

impl Hist {
    /// What this point adds since `earlier` (the stream's point before); `None` when it is not a continuation (a
    /// count went down, or the explicit bounds changed): a reset.
    pub fn since(&self, earlier: &Hist) -> Option<Hist> {
        if self.count < earlier.count {
            return None;
        }
        let shape = match (&self.shape, &earlier.shape) {
            (Shape::Explicit { bounds, counts }, Shape::Explicit { bounds: b0, counts: c0 }) => {
                if bounds != b0 || counts.len() != c0.len() {
                    return None;
                }
                Shape::Explicit {
                    bounds: bounds.clone(),
                    counts: subtract(counts, c0)?,
                }
            }
            (
                Shape::Exponential {
                    scale,
                    zero,
                    positive,
                    negative,
                },
                Shape::Exponential {
                    scale: s0,
                    zero: z0,
                    positive: p0,
                    negative: n0,
                },
            ) => {
                // An SDK lowers a stream's scale as its range grows; never raises it.
                if s0 < scale {
                    return None;
                }
                let down = (s0 - scale) as u32;
                Shape::Exponential {
                    scale: *scale,
                    zero: zero.checked_sub(*z0)?,
                    positive: subtract_indexed(positive, &downscale(p0, down))?,
                    negative: subtract_indexed(negative, &downscale(n0, down))?,
                }
            }
            _ => return None,
        };
        // A new extreme is the delta's own; otherwise the delta's is unknown (the spans bound it).
        let min = match (self.min, earlier.min) {
            (Some(m), Some(m0)) if m < m0 => Some(m),
            _ => None,
        };
        let max = match (self.max, earlier.max) {
            (Some(m), Some(m0)) if m > m0 => Some(m),
            _ => None,
        };
        Some(Hist {
            count: self.count - earlier.count,
            sum: self.sum.zip(earlier.sum).map(|(a, b)| a - b),
            min,
            max,
            floor: self.min,
            ceiling: self.max,
            shape,
        })
    }

    /// The point's non-empty buckets as value ranges, in increasing order; the unbounded ends of explicit buckets
    /// end at `min`/`max` when known, else at the finite bound (a point mass there).
    pub fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        match &self.shape {
            Shape::Explicit { bounds, counts } => {
                for (i, &count) in counts.iter().enumerate() {
                    if count == 0 {
                        continue;
                    }
                    let lo = if i == 0 { None } else { bounds.get(i - 1).copied() };
                    let hi = bounds.get(i).copied();
                    let (lo, hi) = match (lo, hi) {
                        (Some(lo), Some(hi)) => (lo, hi),
                        (None, Some(hi)) => (self.min.unwrap_or(hi).min(hi), hi),
                        (Some(lo), None) => (lo, self.max.unwrap_or(lo).max(lo)),
                        (None, None) => {
                            let v = self.sum.map_or(0.0, |s| s / self.count.max(1) as f64);
                            (self.min.unwrap_or(v), self.max.unwrap_or(v))
                        }
                    };
                    out.push(Span { lo, hi, count });
                }
            }
            Shape::Exponential {
                scale,
                zero,
                positive,
                negative,
            } => {
                let base = 2f64.powf(2f64.powi(-*scale));
                let (offset, counts) = negative;
                for (i, &count) in counts.iter().enumerate().rev() {
                    let index = *offset + i as i32;
                    if count > 0 {
                        out.push(Span {
                            lo: -base.powi(index + 1),
                            hi: -base.powi(index),
                            count,
                        });
                    }
                }
                if *zero > 0 {
                    out.push(Span {
                        lo: 0.0,
                        hi: 0.0,
                        count: *zero,
                    });
                }
                let (offset, counts) = positive;
                for (i, &count) in counts.iter().enumerate() {
                    let index = *offset + i as i32;
                    if count > 0 {
                        out.push(Span {
                            lo: base.powi(index),
                            hi: base.powi(index + 1),
                            count,
                        });
                    }
                }
            }
        }
        // Known extremes, or bounds, narrow every span.
        let lo = self.min.or(self.floor).unwrap_or(f64::NEG_INFINITY);
        let hi = self.max.or(self.ceiling).unwrap_or(f64::INFINITY);
        if lo <= hi {
            for span in &mut out {
                span.lo = span.lo.clamp(lo, hi);
                span.hi = span.hi.clamp(lo, hi);
            }
        }
        out
    }
}

fn subtract(now: &[u64], before: &[u64]) -> Option<Vec<u64>> {
    now.iter().zip(before).map(|(a, b)| a.checked_sub(*b)).collect()
}

/// Buckets at a scale `down` lower: index `i` becomes `i >> down`.
fn downscale((offset, counts): &(i32, Vec<u64>), down: u32) -> (i32, Vec<u64>) {
    if down == 0 || counts.is_empty() {
        return (*offset, counts.clone());
    }
    let down = down.min(31);
    let first = offset >> down;
    let last = (offset + counts.len() as i32 - 1) >> down;
    let mut out = vec![0u64; (last - first + 1) as usize];
    for (i, &c) in counts.iter().enumerate() {
        let index = (offset + i as i32) >> down;
        out[(index - first) as usize] += c;
    }
    (first, out)
}

/// `now - before`, bucket by bucket by index; `None` if a bucket of `before` is missing from `now` or larger.
fn subtract_indexed((offset, counts): &(i32, Vec<u64>), (o0, c0): &(i32, Vec<u64>)) -> Option<(i32, Vec<u64>)> {
    let mut out = counts.clone();
    for (i, &c) in c0.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let at = o0 + i as i32 - offset;
        let slot = out.get_mut(usize::try_from(at).ok()?)?;
        *slot = slot.checked_sub(c)?;
    }
    Some((*offset, out))
}

/// A stream's last point.
#[derive(Debug, Clone)]
enum Prior {
    Number(f64),
    Hist(Hist),
}

#[derive(Debug)]
struct Stream {
    start: u64,
    prior: Prior,
    seen: Instant,
}

/// What a cumulative point adds.
#[derive(Debug, Clone, PartialEq)]
pub enum Added<T> {
    /// The difference since the stream's point before, or the whole value of a stream seen from its start.
    Delta(T),
    /// The stream's first point, which started before this server: nothing is added.
    Primed,
    /// More than [`MAX_STREAMS`] streams: refused.
    Full,
}

/// Every cumulative stream's last point.
#[derive(Debug)]
pub struct Streams {
    map: HashMap<u128, Stream>,
    /// Unix nanoseconds when this server started.
    started: u64,
    last_sweep: Instant,
}

impl Default for Streams {
    fn default() -> Self {
        Streams::new(unix_nanos(SystemTime::now()))
    }
}

/// Nanoseconds since the epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Streams {
    /// Streams of a server started at `started` (unix nanoseconds).
    pub fn new(started: u64) -> Self {
        Streams {
            map: HashMap::new(),
            started,
            last_sweep: Instant::now(),
        }
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What a cumulative sum's point adds.
    pub fn number(&mut self, id: u128, start: u64, value: f64, now: Instant) -> Added<f64> {
        self.update(id, start, Prior::Number(value), now, |before| match before {
            Prior::Number(v) if value >= *v => Some(value - v),
            _ => None,
        })
        .map(|whole| match whole {
            Some(d) => d,
            None => value,
        })
    }

    /// What a cumulative histogram's point adds.
    pub fn hist(&mut self, id: u128, start: u64, point: &Hist, now: Instant) -> Added<Hist> {
        self.update(id, start, Prior::Hist(point.clone()), now, |before| match before {
            Prior::Hist(h) => point.since(h),
            Prior::Number(_) => None,
        })
        .map(|delta| delta.unwrap_or_else(|| point.clone()))
    }

    /// Keeps `prior` as the stream's last point; `since` gives the difference from the point before (`None`: a
    /// reset). `Delta(None)` means the whole point is added.
    fn update<T>(
        &mut self,
        id: u128,
        start: u64,
        prior: Prior,
        now: Instant,
        since: impl FnOnce(&Prior) -> Option<T>,
    ) -> Added<Option<T>> {
        self.sweep(now);
        if let Some(stream) = self.map.get_mut(&id) {
            let delta = if stream.start == start {
                since(&stream.prior)
            } else {
                None
            };
            stream.start = start;
            stream.prior = prior;
            stream.seen = now;
            return Added::Delta(delta);
        }
        if self.map.len() >= MAX_STREAMS {
            return Added::Full;
        }
        self.map.insert(
            id,
            Stream {
                start,
                prior,
                seen: now,
            },
        );
        if start != 0 && start >= self.started {
            Added::Delta(None)
        } else {
            Added::Primed
        }
    }

    /// Forgets the streams not seen for [`EXPIRY`], at most once a minute.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(60) {
            return;
        }
        self.last_sweep = now;
        self.map.retain(|_, s| now.saturating_duration_since(s.seen) < EXPIRY);
    }
}

impl<T> Added<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Added<U> {
        match self {
            Added::Delta(t) => Added::Delta(f(t)),
            Added::Primed => Added::Primed,
            Added::Full => Added::Full,
        }
    }
}

#[cfg(test)]
#[path = "cumulative_tests.rs"]
mod tests;
