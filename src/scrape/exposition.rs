//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, read into borrowed views of the body.
//!
//! One parser for both: `# TYPE` lines give a family's type, `# EOF` ends an OpenMetrics body, other comments
//! (`# HELP`, `# UNIT`) are skipped; a sample is `name{label="value",…} value [timestamp] [# exemplar]`, the
//! name also in Prometheus 3's quoted form (`{"my.metric",label="value"} 1`). Label values keep their escapes
//! until a caller asks for them ([`Labels`] unescapes `\\`, `\"` and `\n`). Timestamps and exemplars are
//! ignored (a scrape reports what it reads when it reads it). A bad line is an error for that line only: the
//! caller counts it and goes on with the next.

use std::borrow::Cow;

/// A family's type, from its `# TYPE` line (a sample without one is `Unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Unknown,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            // untyped (0.0.4), unknown, info and stateset (OpenMetrics): values read as they are.
            _ => Kind::Unknown,
        }
    }
}

/// One line of a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// `# TYPE name kind`.
    Type {
        family: &'a str,
        kind: Kind,
    },
    Sample(Sample<'a>),
    /// `# EOF`: nothing after it is read.
    Eof,
}

/// A sample, borrowed from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The label pairs as written between the braces (escapes kept), without a quoted name.
    pub labels: Labels<'a>,
    pub value: f64,
    /// The text that identifies the sample's stream in this body: the name and the braces, as written.
    pub series: &'a str,
}

/// Why a line was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no metric name")]
    NoName,
    #[error("a label set that does not close")]
    Labels,
    #[error("no value")]
    NoValue,
    #[error("a value that is not a number")]
    Value,
}

impl LineError {
    /// The reason, as a tag value.
    pub fn reason(&self) -> &'static str {
        match self {
            LineError::NoName => "no_name",
            LineError::Labels => "bad_labels",
            LineError::NoValue => "no_value",
            LineError::Value => "bad_value",
        }
    }
}

/// The lines of a body, in order, up to `# EOF`; blank lines and comments other than `# TYPE` are skipped.
pub fn lines(body: &str) -> impl Iterator<Item = Result<Line<'_>, LineError>> {
    let mut ended = false;
    body.split('\n')
        .map_while(move |raw| {
            if ended {
                return None;
            }
            let line = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
            if line.is_empty() {
                return Some(None);
            }
            if let Some(comment) = line.strip_prefix('#') {
                let parsed = comment_line(comment);
                ended = parsed == Some(Line::Eof);
                return Some(parsed.map(Ok));
            }
            Some(Some(sample(line).map(Line::Sample)))
        })
        .flatten()
}

fn comment_line(comment: &str) -> Option<Line<'_>> {
    let mut words = comment.split_ascii_whitespace();
    match words.next()? {
        "EOF" => Some(Line::Eof),
        "TYPE" => {
            let family = words.next()?;
            let family = family
                .strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(family);
            Some(Line::Type {
                family,
                kind: Kind::parse(words.next().unwrap_or("")),
            })
        }
        _ => None,
    }
}

fn sample(line: &str) -> Result<Sample<'_>, LineError> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let mut name = &line[..name_end];
    let rest = &line[name_end..];
    let (labels, after) = match rest.strip_prefix('{') {
        Some(inner) => {
            let close = closing_brace(inner).ok_or(LineError::Labels)?;
            (&inner[..close], &inner[close + 1..])
        }
        None => ("", rest),
    };
    let series = &line[..line.len() - after.len()];
    let mut labels = Labels { raw: labels };
    if name.is_empty() {
        // Prometheus 3: the name is the first, quoted and without `=`, item of the braces.
        name = labels.take_quoted_name().ok_or(LineError::NoName)?;
    }
    labels.check()?;
    let value = after.split_ascii_whitespace().next().ok_or(LineError::NoValue)?;
    Ok(Sample {
        name,
        labels,
        value: parse_value(value).ok_or(LineError::Value)?,
        series,
    })
}

/// A sample value: a float as Go's `ParseFloat` reads it, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The index of the `}` that closes a label set, skipping quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The label pairs of a sample, read on demand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labels<'a> {
    raw: &'a str,
}

impl<'a> Labels<'a> {
    /// Each `(name, value)`, values unescaped (borrowed when they have no escape).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
        let mut rest = self.raw;
        std::iter::from_fn(move || {
            let (pair, tail) = next_pair(rest)?;
            rest = tail;
            Some(pair)
        })
    }

    /// The value of label `name`, if the sample has it.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Whether every pair is well formed.
    fn check(&self) -> Result<(), LineError> {
        let mut rest = self.raw;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return Ok(());
            }
            rest = next_pair(rest).ok_or(LineError::Labels)?.1;
        }
    }

    /// Removes and returns a leading quoted item without `=` (Prometheus 3's quoted metric name).
    fn take_quoted_name(&mut self) -> Option<&'a str> {
        let s = self.raw.trim_start();
        let inner = s.strip_prefix('"')?;
        let end = inner.find('"')?;
        let after = inner[end + 1..].trim_start();
        if after.starts_with('=') {
            return None;
        }
        self.raw = after.strip_prefix(',').unwrap_or(after);
        Some(&inner[..end])
    }
}

/// The first pair of `s` (`name="value"`, the name possibly quoted) and what follows it.
fn next_pair(s: &str) -> Option<((&str, Cow<'_, str>), &str)> {
    let s = s.trim_start_matches([' ', '\t', ',']);
    if s.is_empty() {
        return None;
    }
    let eq = s.find('=')?;
    let name = s[..eq].trim();
    let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')).unwrap_or(name);
    let value = s[eq + 1..].trim_start().strip_prefix('"')?;
    let bytes = value.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while i < bytes.len() && bytes[i] != b'"' {
        if bytes[i] == b'\\' {
            escaped = true;
            i += 1;
        }
        i += 1;
    }
    if i >= bytes.len() || name.is_empty() {
        return None;
    }
    let raw = &value[..i];
    let value_text = if escaped {
        Cow::Owned(unescape(raw))
    } else {
        Cow::Borrowed(raw)
    };
    Some(((name, value_text), &value[i + 1..]))
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
mod tests;
