//! The DogStatsD wire format: packet → lines → borrowed [`Message`]s.
//!
//! Everything here borrows from the packet: parsing a metric line performs no heap allocation. The step that
//! allocates (a new series in an aggregation shard) lives in `aggregate`, and only runs for series it has not
//! seen in the current interval.
//!
//! The grammar follows the Go Datadog agent (see `shared/reference/dogstatsd-protocol.md`), with the choices of
//! DESIGN.md where they differ: non-finite values and sample rates outside (0, 1] are rejected, and a line that
//! is not valid UTF-8 is rejected (the intake only takes UTF-8 strings).

mod event;
mod metric;
mod number;
mod service_check;

use memchr::memchr;
use thiserror::Error;

pub use event::{AlertType, Event, Priority};
pub use metric::{parse_value, split_metric, LineView, Metric, MetricKind, MetricValue, Values, MIN_SAMPLE_RATE};
pub use number::{parse_f64, parse_i64};
pub use service_check::{CheckStatus, ServiceCheck};

/// One parsed line of a packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Metric(Metric<'a>),
    Event(Event<'a>),
    ServiceCheck(ServiceCheck<'a>),
}

/// Why a line was rejected. Each variant carries the offending piece of the line where there is one, so a log
/// line can show it; [`ParseError::reason`] gives the stable name used for the `reason` tag of the
/// `harrier.lines.rejected` self-metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError<'a> {
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("metric line has no '|' (expected name:value|type)")]
    NoPipe,
    #[error("metric line has no ':' before the first '|' (expected name:value|type)")]
    NoColon,
    #[error("metric name is empty")]
    EmptyName,
    #[error("metric value is empty")]
    EmptyValue,
    #[error("unknown metric type {0:?} (expected one of c, g, ms, h, s, d)")]
    BadType(&'a str),
    #[error("metric value {0:?} is not a number")]
    BadValue(&'a str),
    #[error("metric value {0:?} is not finite")]
    NonFiniteValue(&'a str),
    #[error("sample rate {0:?} is not a number")]
    BadSampleRate(&'a str),
    #[error("sample rate {0:?} is outside [1e-9, 1]")]
    SampleRateOutOfRange(&'a str),
    #[error("timestamp {0:?} is not a positive integer number of seconds")]
    BadTimestamp(&'a str),
    #[error("event header {0:?} is not _e{{title_length,text_length}}")]
    BadEventHeader(&'a str),
    #[error("event title is empty")]
    EmptyEventTitle,
    #[error("event is shorter than its header's lengths say, or they cut a UTF-8 character")]
    EventLengthMismatch,
    #[error("service check {0:?} is not _sc|name|status")]
    BadServiceCheck(&'a str),
    #[error("service check name is empty")]
    EmptyServiceCheckName,
    #[error("service check status {0:?} is not one of 0, 1, 2, 3")]
    BadServiceCheckStatus(&'a str),
}

impl ParseError<'_> {
    /// Every reason, in the order of [`ParseError::reason_index`]; used to size per-reason counters.
    pub const REASONS: [&'static str; 17] = [
        "invalid_utf8",
        "no_pipe",
        "no_colon",
        "empty_name",
        "empty_value",
        "bad_type",
        "bad_value",
        "non_finite_value",
        "bad_sample_rate",
        "sample_rate_out_of_range",
        "bad_timestamp",
        "bad_event_header",
        "empty_event_title",
        "event_length_mismatch",
        "bad_service_check",
        "empty_service_check_name",
        "bad_service_check_status",
    ];

    /// A dense index for per-reason counters, matching [`ParseError::REASONS`].
    pub fn reason_index(&self) -> usize {
        match self {
            ParseError::InvalidUtf8 => 0,
            ParseError::NoPipe => 1,
            ParseError::NoColon => 2,
            ParseError::EmptyName => 3,
            ParseError::EmptyValue => 4,
            ParseError::BadType(_) => 5,
            ParseError::BadValue(_) => 6,
            ParseError::NonFiniteValue(_) => 7,
            ParseError::BadSampleRate(_) => 8,
            ParseError::SampleRateOutOfRange(_) => 9,
            ParseError::BadTimestamp(_) => 10,
            ParseError::BadEventHeader(_) => 11,
            ParseError::EmptyEventTitle => 12,
            ParseError::EventLengthMismatch => 13,
            ParseError::BadServiceCheck(_) => 14,
            ParseError::EmptyServiceCheckName => 15,
            ParseError::BadServiceCheckStatus(_) => 16,
        }
    }

    /// The stable snake_case name of this reason.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.reason_index()]
    }
}

/// Splits a packet into lines: on `\n`, dropping one trailing `\r` per line and skipping empty lines.
pub fn lines(packet: &[u8]) -> Lines<'_> {
    Lines { rest: packet }
}

/// Iterator returned by [`lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (mut line, rest) = match memchr(b'\n', self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

/// Parses one line (without its newline) into a borrowed message.
#[inline]
pub fn parse_line(line: &[u8]) -> Result<Message<'_>, ParseError<'_>> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    parse_str(line)
}

/// The lines of a packet already validated as UTF-8 as a whole (one validation instead of one per line), split
/// like [`lines`].
pub fn str_lines(packet: &str) -> impl Iterator<Item = &str> {
    let base = packet.as_ptr() as usize;
    // Lines end at '\n' or '\r' (ASCII), so each is a valid sub-string.
    lines(packet.as_bytes()).map(move |l| {
        let start = l.as_ptr() as usize - base;
        &packet[start..start + l.len()]
    })
}

/// [`parse_line`] for a line already known to be UTF-8.
#[inline]
pub fn parse_str(line: &str) -> Result<Message<'_>, ParseError<'_>> {
    if line.starts_with("_e{") {
        event::parse(line).map(Message::Event)
    } else if line.starts_with("_sc") {
        service_check::parse(line).map(Message::ServiceCheck)
    } else {
        metric::parse(line).map(Message::Metric)
    }
}

/// Parses every line of a packet. Bad lines yield their error; the following lines still parse.
pub fn parse_packet(packet: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ParseError<'_>>> {
    lines(packet).map(parse_line)
}

/// The raw tag block of a line (`a:b,c` from `|#a:b,c`), split lazily on `,`.
///
/// As in the Go agent, nothing is trimmed and empty tags are kept (`#a,,b` gives `a`, ``, `b`); a bare `#`
/// gives no tags. Sorting and de-duplication happen when a series key is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tags<'a> {
    raw: &'a str,
}

impl<'a> Tags<'a> {
    pub fn new(raw: &'a str) -> Self {
        Tags { raw }
    }

    /// The tag block as written on the wire, without the `#`.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn iter(&self) -> TagIter<'a> {
        TagIter {
            rest: if self.raw.is_empty() { None } else { Some(self.raw) },
        }
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = &'a str;
    type IntoIter = TagIter<'a>;

    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

/// Iterator over the tags of a [`Tags`] block.
#[derive(Debug, Clone)]
pub struct TagIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr(b',', rest.as_bytes()) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Splits `s` at the first `delim`: `(before, Some(after))`, or `(s, None)` when absent.
#[inline]
pub(crate) fn split_once_byte(s: &str, delim: u8) -> (&str, Option<&str>) {
    match memchr(delim, s.as_bytes()) {
        // Splitting at an ASCII byte always lands on a char boundary.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// [`split_once_byte`] for pieces that are usually short (a name, a value, a type): a plain byte loop, which
/// beats a vectorised search for a few bytes.
#[inline]
pub(crate) fn split_short(s: &str, delim: u8) -> (&str, Option<&str>) {
    match s.bytes().position(|b| b == delim) {
        // Splitting at an ASCII byte always lands on a char boundary.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// The index of the first byte of `s` that is `a` or `b`, eight bytes at a time (a word-wide zero-byte test, in
/// safe code): for the few dozen bytes of a metric name and value this beats both a byte loop (one branch per
/// byte) and a vectorised search (its setup).
#[inline]
pub(crate) fn find_either(s: &[u8], a: u8, b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (wa, wb) = (LO * u64::from(a), LO * u64::from(b));
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let (xa, xb) = (w ^ wa, w ^ wb);
        // A byte of xa or xb is zero where the word holds `a` or `b`; the lowest flagged byte is always exact.
        let found = ((xa.wrapping_sub(LO) & !xa) | (xb.wrapping_sub(LO) & !xb)) & HI;
        if found != 0 {
            return Some(base + found.trailing_zeros() as usize / 8);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == a || c == b)
        .map(|i| base + i)
}

/// Iterates the `|`-separated fields of `s`.
#[inline]
pub(crate) fn fields(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        let (field, after) = match find_either(current.as_bytes(), b'|', b'|') {
            // Splitting at an ASCII byte always lands on a char boundary.
            Some(i) => (&current[..i], Some(&current[i + 1..])),
            None => (current, None),
        };
        rest = after;
        Some(field)
    })
}

#[cfg(test)]
mod tests;
