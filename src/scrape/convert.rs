//! A target's samples into DogStatsD lines, keeping what a counter needs between scrapes.
//!
//! Per family type (the name of a sample is kept, `prefix` before it; characters DogStatsD cannot carry in a name,
//! `:` `|` `,` `#` `@` and whitespace, become `_`; labels become tags, an empty value none):
//! - counter (`foo` or `foo_total`): a counter of the difference since the last scrape; a value lower than the last
//!   is a reset and counts from zero. A target's first scrape only primes; a stream that appears later counts from
//!   zero (a client library creates a series at its first increment).
//! - gauge, untyped, unknown, info, stateset: a gauge of the value.
//! - histogram: `foo_bucket` → a counter `foo.bucket` tagged `le:<bound>` of each bucket's difference, `foo_sum`
//!   and `foo_count` → counters `foo.sum` and `foo.count` of their differences; with `histograms: distribution`,
//!   the samples are rebuilt instead: each bucket's new observations, spread evenly over the bucket (the lowest
//!   bucket starting at 0, the `+Inf` bucket at the highest finite bound), go into a distribution `foo` (type `d`,
//!   integer weights as sample rates), whose count is exact and whose sum is approximate.
//! - gauge histogram: `foo.bucket{le}`, `foo.sum`, `foo.count` as gauges.
//! - summary: `foo{quantile}` → a gauge `foo` tagged `quantile:<q>`; `foo_sum`, `foo_count` → counters of their
//!   differences.
//! - `_created` samples are skipped; NaN and infinite values are skipped (DogStatsD cannot carry them).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::exposition::{self, Kind, Line, Sample};
use crate::config::ScrapeHistograms;

/// How a target's samples are written.
#[derive(Debug, Clone)]
pub struct Options {
    pub prefix: String,
    /// Tags on every line, already joined (`a:b,c:d`), possibly empty.
    pub tags: String,
    /// Families kept (whole-name matches); none keeps every family.
    pub allow: Option<regex::RegexSet>,
    /// Families dropped.
    pub deny: Option<regex::RegexSet>,
    pub histograms: ScrapeHistograms,
}

impl Options {
    fn keeps(&self, family: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a.is_match(family)) && self.deny.as_ref().is_none_or(|d| !d.is_match(family))
    }
}

/// What one scrape gave.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Samples read.
    pub samples: u64,
    /// Lines written.
    pub lines: u64,
    /// Lines of the body that could not be read, by reason.
    pub bad: Vec<(&'static str, u64)>,
}

impl Outcome {
    fn bad_line(&mut self, reason: &'static str) {
        match self.bad.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.bad.push((reason, 1)),
        }
    }
}

/// A counter stream's last value.
#[derive(Debug)]
struct Stream {
    value: f64,
    /// The scrape that last saw it.
    seen: u64,
}

/// Scrapes a stream may be missing from before it is forgotten (and would count from zero again).
const FORGET_AFTER: u64 = 10;

/// What a sample is to its family.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Value,
    Bucket,
    Sum,
    Count,
    Created,
}

/// One target's state between scrapes.
#[derive(Debug)]
pub struct Converter {
    opts: Options,
    streams: HashMap<Box<str>, Stream>,
    /// Successful scrapes so far.
    scrapes: u64,
}

/// A histogram series' buckets, gathered for `histograms: distribution`.
struct Group {
    name: String,
    tags: String,
    /// (upper bound, new observations up to it).
    buckets: Vec<(f64, f64)>,
}

impl Converter {
    pub fn new(opts: Options) -> Self {
        Converter {
            opts,
            streams: HashMap::new(),
            scrapes: 0,
        }
    }

    /// Reads a body and appends its lines to `out`.
    pub fn convert(&mut self, body: &str, out: &mut Vec<u8>) -> Outcome {
        self.scrapes += 1;
        let mut outcome = Outcome::default();
        let mut family: Option<(&str, Kind)> = None;
        let mut group: Option<Group> = None;
        for line in exposition::lines(body) {
            match line {
                Err(e) => outcome.bad_line(e.reason()),
                Ok(Line::Eof) => break,
                Ok(Line::Type { family: f, kind }) => {
                    self.finish_group(group.take(), out, &mut outcome);
                    family = Some((f, kind));
                }
                Ok(Line::Sample(s)) => {
                    outcome.samples += 1;
                    self.sample(&s, family, &mut group, out, &mut outcome);
                }
            }
        }
        self.finish_group(group.take(), out, &mut outcome);
        let now = self.scrapes;
        self.streams.retain(|_, s| now - s.seen < FORGET_AFTER);
        outcome
    }

    fn sample(
        &mut self,
        s: &Sample<'_>,
        family: Option<(&str, Kind)>,
        group: &mut Option<Group>,
        out: &mut Vec<u8>,
        outcome: &mut Outcome,
    ) {
        let (fam, kind, role) = classify(s.name, family);
        if role == Role::Created || !s.value.is_finite() || !self.opts.keeps(fam) {
            return;
        }
        let distribution = self.opts.histograms == ScrapeHistograms::Distribution && kind == Kind::Histogram;
        if !(distribution && role == Role::Bucket) {
            self.finish_group(group.take(), out, outcome);
        }
        let line = |name: &str, suffix: &str, skip: Option<&str>, extra: Option<(&str, &str)>| {
            let mut l = LineText::new(&self.opts.prefix, name, suffix);
            l.tags(&self.opts.tags, s, skip, extra);
            l
        };
        match (kind, role) {
            (Kind::Counter, _) => {
                if let Some(d) = delta(&mut self.streams, self.scrapes, s.series, s.value) {
                    line(s.name, "", None, None).write(out, d, "c", outcome);
                }
            }
            (Kind::Histogram | Kind::Summary, Role::Sum | Role::Count) if distribution => {}
            (Kind::Histogram | Kind::Summary, Role::Sum | Role::Count) => {
                let suffix = if role == Role::Sum { ".sum" } else { ".count" };
                if let Some(d) = delta(&mut self.streams, self.scrapes, s.series, s.value) {
                    line(fam, suffix, None, None).write(out, d, "c", outcome);
                }
            }
            (Kind::Histogram, Role::Bucket) => {
                let le = s.labels.get("le").unwrap_or_default();
                let Some(d) = delta(&mut self.streams, self.scrapes, s.series, s.value) else {
                    return;
                };
                if distribution {
                    self.gather(group, fam, s, &le, d, out, outcome);
                } else {
                    line(fam, ".bucket", Some("le"), Some(("le", &le))).write(out, d, "c", outcome);
                }
            }
            (Kind::GaugeHistogram, Role::Bucket) => {
                let le = s.labels.get("le").unwrap_or_default();
                line(fam, ".bucket", Some("le"), Some(("le", &le))).write(out, s.value, "g", outcome);
            }
            (Kind::GaugeHistogram, Role::Sum) => line(fam, ".sum", None, None).write(out, s.value, "g", outcome),
            (Kind::GaugeHistogram, Role::Count) => line(fam, ".count", None, None).write(out, s.value, "g", outcome),
            _ => line(s.name, "", None, None).write(out, s.value, "g", outcome),
        }
    }

    /// Adds a bucket's difference to its series' group (a new series finishes the previous group).
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &self,
        group: &mut Option<Group>,
        fam: &str,
        s: &Sample<'_>,
        le: &str,
        d: f64,
        out: &mut Vec<u8>,
        outcome: &mut Outcome,
    ) {
        let Some(bound) = exposition::parse_value(le).filter(|b| !b.is_nan()) else {
            return;
        };
        let mut tags = LineText::new("", "", "");
        tags.tags(&self.opts.tags, s, Some("le"), None);
        let same = group.as_ref().is_some_and(|g| g.name == fam && g.tags == tags.tags);
        if !same {
            self.finish_group(group.take(), out, outcome);
            *group = Some(Group {
                name: fam.to_string(),
                tags: tags.tags.clone(),
                buckets: Vec::new(),
            });
        }
        if let Some(g) = group.as_mut() {
            g.buckets.push((bound, d));
        }
    }

    /// Writes a gathered histogram series as distribution samples.
    fn finish_group(&self, group: Option<Group>, out: &mut Vec<u8>, outcome: &mut Outcome) {
        let Some(mut g) = group else { return };
        g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut below = 0.0;
        let mut lo: Option<f64> = None;
        for &(hi, cumulative) in &g.buckets {
            let count = (cumulative - below).round().max(0.0) as u64;
            below = cumulative.max(below);
            let (from, to) = match (lo, hi.is_finite()) {
                (_, false) => (lo.unwrap_or(0.0), lo.unwrap_or(0.0)),
                (None, true) if hi > 0.0 => (0.0, hi),
                (None, true) => (hi, hi),
                (Some(l), true) => (l, hi),
            };
            if hi.is_finite() {
                lo = Some(hi);
            }
            if count > 0 {
                let mut l = LineText::new(&self.opts.prefix, &g.name, "");
                l.raw_tags(&g.tags);
                l.write_spread(out, from, to, count, outcome);
            }
        }
    }
}

/// The difference of a counter stream since the last scrape (`None` on the target's first scrape).
fn delta(streams: &mut HashMap<Box<str>, Stream>, now: u64, key: &str, value: f64) -> Option<f64> {
    match streams.get_mut(key) {
        Some(s) => {
            let d = if value < s.value { value } else { value - s.value };
            s.value = value;
            s.seen = now;
            Some(d)
        }
        None => {
            streams.insert(key.into(), Stream { value, seen: now });
            (now > 1).then_some(value)
        }
    }
}

/// A sample's family, the family's type and the sample's role in it.
fn classify<'a>(name: &'a str, family: Option<(&'a str, Kind)>) -> (&'a str, Kind, Role) {
    let Some((fam, kind)) = family else {
        return (name, Kind::Unknown, Role::Value);
    };
    if name == fam {
        return (fam, kind, Role::Value);
    }
    let role = match name.strip_prefix(fam) {
        Some("_total") if kind == Kind::Counter => Role::Value,
        Some("_bucket") if matches!(kind, Kind::Histogram | Kind::GaugeHistogram) => Role::Bucket,
        Some("_sum" | "_gsum") if kind != Kind::Counter => Role::Sum,
        Some("_count" | "_gcount") if kind != Kind::Counter => Role::Count,
        Some("_created") => Role::Created,
        _ => return (name, Kind::Unknown, Role::Value),
    };
    (fam, kind, role)
}

/// Most observations one line carries (one sample rate): within any `minimum_sample_rate`.
const MAX_WEIGHT: u64 = 1_000_000;
/// Points a bucket's observations are spread over.
const SPREAD: u64 = 4;

/// One DogStatsD line being written: the name, then the tags section.
struct LineText {
    name: String,
    tags: String,
}

impl LineText {
    fn new(prefix: &str, name: &str, suffix: &str) -> Self {
        let mut n = String::with_capacity(prefix.len() + name.len() + suffix.len());
        for c in prefix.chars().chain(name.chars()).chain(suffix.chars()) {
            n.push(if matches!(c, ':' | '|' | ',' | '#' | '@') || c.is_whitespace() {
                '_'
            } else {
                c
            });
        }
        LineText {
            name: n,
            tags: String::new(),
        }
    }

    fn raw_tags(&mut self, tags: &str) {
        self.tags.push_str(tags);
    }

    fn tag(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        if !self.tags.is_empty() {
            self.tags.push(',');
        }
        let clean = |c: char| if matches!(c, ',' | '|' | '\n' | '\r') { '_' } else { c };
        self.tags.extend(key.chars().map(clean));
        self.tags.push(':');
        self.tags.extend(value.chars().map(clean));
    }

    /// The configured tags, the sample's labels (but `skip`), then `extra`.
    fn tags(&mut self, base: &str, s: &Sample<'_>, skip: Option<&str>, extra: Option<(&str, &str)>) {
        self.tags.push_str(base);
        for (k, v) in s.labels.iter() {
            if Some(k) != skip {
                self.tag(k, &v);
            }
        }
        if let Some((k, v)) = extra {
            self.tag(k, v);
        }
    }

    fn finish(&self, out: &mut Vec<u8>, body: std::fmt::Arguments<'_>, outcome: &mut Outcome) {
        let mut line = String::with_capacity(self.name.len() + self.tags.len() + 32);
        let _ = write!(line, "{}:{body}", self.name);
        if !self.tags.is_empty() {
            line.push_str("|#");
            line.push_str(&self.tags);
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
        outcome.lines += 1;
    }

    fn write(&self, out: &mut Vec<u8>, value: f64, kind: &str, outcome: &mut Outcome) {
        self.finish(out, format_args!("{value:?}|{kind}"), outcome);
    }

    /// `count` observations between `from` and `to`, at up to [`SPREAD`] evenly spaced points, as distribution
    /// lines whose sample rates give each point its integer weight.
    fn write_spread(&self, out: &mut Vec<u8>, from: f64, to: f64, count: u64, outcome: &mut Outcome) {
        let points = count.min(SPREAD);
        let (each, extra) = (count / points, count % points);
        for k in 0..points {
            let v = from + (to - from) * (k as f64 + 0.5) / points as f64;
            let mut weight = each + u64::from(k < extra);
            while weight > 0 {
                let w = weight.min(MAX_WEIGHT);
                weight -= w;
                match w {
                    1 => self.finish(out, format_args!("{v:?}|d"), outcome),
                    _ => self.finish(out, format_args!("{v:?}|d|@{:?}", rate_for(w)), outcome),
                }
            }
        }
    }
}

/// A sample rate whose weight is `w`: `1/rate` is `w` exactly when an f64 allows it, else just above (so that a
/// truncating reader, as the agent's sketch is, still counts `w`).
fn rate_for(w: u64) -> f64 {
    let w = w as f64;
    let r = 1.0 / w;
    [r, r.next_down(), r.next_up()]
        .into_iter()
        .find(|r| 1.0 / r == w)
        .unwrap_or_else(|| if 1.0 / r >= w { r } else { r.next_down() })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
