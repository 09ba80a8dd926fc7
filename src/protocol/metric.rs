//! Metric lines: `name:value[:value…]|type[|@rate][|#tags][|T ts][|c:…][|e:…][|card:…]`.

use std::fmt;

use super::number::{parse_f64, parse_i64, parse_short_decimal};
use super::{fields, find_either, split_short, ParseError, Tags};

/// The smallest sample rate accepted: one sample standing for a billion.
pub const MIN_SAMPLE_RATE: f64 = 1e-9;

/// The metric type of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    /// `c`
    Counter,
    /// `g`
    Gauge,
    /// `ms`
    Timer,
    /// `h`
    Histogram,
    /// `d`
    Distribution,
    /// `s`
    Set,
}

impl MetricKind {
    pub const ALL: [MetricKind; 6] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Timer,
        MetricKind::Histogram,
        MetricKind::Distribution,
        MetricKind::Set,
    ];

    /// The type as written on the wire.
    pub fn wire(self) -> &'static str {
        match self {
            MetricKind::Counter => "c",
            MetricKind::Gauge => "g",
            MetricKind::Timer => "ms",
            MetricKind::Histogram => "h",
            MetricKind::Distribution => "d",
            MetricKind::Set => "s",
        }
    }

    #[inline]
    fn from_wire(s: &str) -> Option<Self> {
        Some(match s.as_bytes() {
            b"c" => MetricKind::Counter,
            b"g" => MetricKind::Gauge,
            b"ms" => MetricKind::Timer,
            b"h" => MetricKind::Histogram,
            b"d" => MetricKind::Distribution,
            b"s" => MetricKind::Set,
            _ => return None,
        })
    }

    /// Timers, histograms and distributions are all aggregated into a t-digest.
    pub fn is_histogram(self) -> bool {
        matches!(
            self,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution
        )
    }
}

/// A parsed metric line, borrowing from the packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub kind: MetricKind,
    pub value: MetricValue<'a>,
    /// Sample rate in (0, 1]; 1.0 when absent.
    pub sample_rate: f64,
    pub tags: Tags<'a>,
    /// `|T<unix seconds>`: the point is not aggregated into the interval.
    pub timestamp: Option<i64>,
    /// Everything after the value's `|`: the type and the optional fields exactly as written (`c|@0.5|#a:b`).
    /// With the name, the line's identity as text (see [`LineView`]).
    pub suffix: &'a str,
}

/// A metric line cut at its value, and nothing more: the name, the raw value and the text after the value's `|`.
///
/// Lines of a series are usually written the same way every time, so `name` and `suffix` identify the series of
/// a line that was once fully parsed: an aggregation shard that already knows this exact text knows its type,
/// sample rate and series, and needs only the value (see `ShardState::add_known_line`). Nothing but the value is
/// looked at or validated here; a line whose text is not known takes the full [`parse`](super::parse_str).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineView<'a> {
    pub name: &'a str,
    /// The raw value (`12`, `1:2:3`, a set member).
    pub value: &'a str,
    /// As [`Metric::suffix`].
    pub suffix: &'a str,
}

impl LineView<'_> {
    /// The value as a number if it is one short decimal (`[-]digits[.digits]`, at most 15 digits: the common
    /// case), parsed exactly as the full parse would; `None` for anything else, including a set's member.
    #[inline(always)]
    pub fn short_number(&self) -> Option<f64> {
        parse_short_decimal(self.value)
    }
}

/// Cuts a line into a [`LineView`]: `None` if it has no `name:value|` prefix (an event or a service check has
/// none, or a name that no metric line can have, so their text is never known).
#[inline]
pub fn split_metric(line: &str) -> Option<LineView<'_>> {
    cut(line).ok()
}

/// The cut shared by [`split_metric`] and the full parse: the name ends at the first ':', which must come before
/// the first '|'; the value runs to the next '|'.
#[inline(always)]
fn cut(line: &str) -> Result<LineView<'_>, ParseError<'_>> {
    let bytes = line.as_bytes();
    let colon = match find_either(bytes, b':', b'|') {
        None => return Err(ParseError::NoPipe),
        Some(i) if bytes[i] == b'|' => return Err(ParseError::NoColon),
        Some(i) => i,
    };
    let pipe = colon + 1 + find_either(&bytes[colon + 1..], b'|', b'|').ok_or(ParseError::NoPipe)?;
    // Both cuts are at ASCII bytes, so on char boundaries.
    Ok(LineView {
        name: &line[..colon],
        value: &line[colon + 1..pipe],
        suffix: &line[pipe + 1..],
    })
}

/// Parses the raw value of a metric of type `kind`: a set's member as it is, numbers validated.
#[inline]
pub fn parse_value(kind: MetricKind, raw: &str) -> Result<MetricValue<'_>, ParseError<'_>> {
    if raw.is_empty() {
        return Err(ParseError::EmptyValue);
    }
    Ok(if kind == MetricKind::Set {
        MetricValue::SetMember(raw)
    } else {
        MetricValue::Numbers(Values::parse(raw)?)
    })
}

/// The value part of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue<'a> {
    /// One or more finite numbers (DogStatsD 1.1 packs several as `name:1:2:3|ms`).
    Numbers(Values<'a>),
    /// A set member: every byte of the value, colons included.
    SetMember(&'a str),
}

/// One or more finite values, all validated at parse time. The first is kept parsed; packed values after it are
/// re-read from the line when iterated, so a line costs no allocation however many values it packs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Values<'a> {
    first: f64,
    /// The raw text after the first value's `:` (empty for a single value).
    rest: &'a str,
    len: u32,
}

impl<'a> Values<'a> {
    /// A single value, for building metrics outside the parser.
    pub fn single(v: f64) -> Self {
        Values {
            first: v,
            rest: "",
            len: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn first(&self) -> f64 {
        self.first
    }

    pub fn iter(&self) -> impl Iterator<Item = f64> + 'a {
        let rest = self.rest;
        std::iter::once(self.first).chain(
            rest.split(':')
                .filter(|p| !p.is_empty())
                // Validated at parse time; the fallback is unreachable but keeps this panic-free.
                .map(|p| parse_f64(p).unwrap_or(0.0)),
        )
    }

    /// Parses a non-set raw value: one number, or `:`-packed numbers with empty pieces skipped.
    #[inline]
    fn parse(raw: &'a str) -> Result<Self, ParseError<'a>> {
        let one = |p: &'a str| match parse_f64(p) {
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(ParseError::NonFiniteValue(p)),
            None => Err(ParseError::BadValue(p)),
        };
        // The common case, a short decimal, needs no search for packed values: it has no ':' by definition.
        if let Some(first) = parse_short_decimal(raw) {
            return Ok(Values {
                first,
                rest: "",
                len: 1,
            });
        }
        if !raw.as_bytes().contains(&b':') {
            return Ok(Values {
                first: one(raw)?,
                rest: "",
                len: 1,
            });
        }
        let mut pieces = raw.split(':').filter(|p| !p.is_empty());
        let Some(first_piece) = pieces.next() else {
            return Err(ParseError::EmptyValue);
        };
        let first = one(first_piece)?;
        let offset = first_piece.as_ptr() as usize - raw.as_ptr() as usize + first_piece.len();
        let mut len = 1u32;
        for p in pieces {
            one(p)?;
            len = len.saturating_add(1);
        }
        Ok(Values {
            first,
            rest: &raw[offset..],
            len,
        })
    }
}

#[inline]
pub(super) fn parse(line: &str) -> Result<Metric<'_>, ParseError<'_>> {
    let LineView {
        name,
        value: raw_value,
        suffix: rest,
    } = cut(line)?;
    if name.is_empty() {
        return Err(ParseError::EmptyName);
    }
    if raw_value.is_empty() {
        return Err(ParseError::EmptyValue);
    }
    let (kind, optional) = split_short(rest, b'|');
    let kind = MetricKind::from_wire(kind).ok_or(ParseError::BadType(kind))?;
    let value = parse_value(kind, raw_value)?;
    let mut metric = Metric {
        name,
        kind,
        value,
        sample_rate: 1.0,
        tags: Tags::default(),
        timestamp: None,
        suffix: rest,
    };
    if let Some(optional) = optional {
        for field in fields(optional) {
            match field.as_bytes().first() {
                Some(b'@') => {
                    let raw = &field[1..];
                    let rate = parse_f64(raw).ok_or(ParseError::BadSampleRate(raw))?;
                    // `!(rate >= …)` also catches NaN. Below MIN_SAMPLE_RATE a sample's weight (1/rate) would be
                    // absurd or infinite and would poison the series.
                    if !(MIN_SAMPLE_RATE..=1.0).contains(&rate) {
                        return Err(ParseError::SampleRateOutOfRange(raw));
                    }
                    metric.sample_rate = rate;
                }
                Some(b'#') => metric.tags = Tags::new(&field[1..]),
                Some(b'T') => {
                    let raw = &field[1..];
                    match parse_i64(raw) {
                        Some(ts) if ts >= 1 => metric.timestamp = Some(ts),
                        _ => return Err(ParseError::BadTimestamp(raw)),
                    }
                }
                // Origin detection fields (`c:`, `e:`, `card:`), empty fields and unknown fields are ignored.
                _ => {}
            }
        }
    }
    Ok(metric)
}

impl fmt::Display for Metric<'_> {
    /// Formats the metric back into the wire syntax (the documented field order), so that parsing the output
    /// gives back the same metric.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        match &self.value {
            MetricValue::SetMember(m) => f.write_str(m)?,
            MetricValue::Numbers(values) => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{v}")?;
                }
            }
        }
        write!(f, "|{}", self.kind.wire())?;
        if self.sample_rate != 1.0 {
            write!(f, "|@{}", self.sample_rate)?;
        }
        if !self.tags.is_empty() {
            write!(f, "|#{}", self.tags.raw())?;
        }
        if let Some(ts) = self.timestamp {
            write!(f, "|T{ts}")?;
        }
        Ok(())
    }
}
