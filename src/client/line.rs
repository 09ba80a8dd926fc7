//! The wire lines `harrier emit` sends (metrics, events, service checks) and the checks of each value that goes
//! into them.

use super::error::{invalid, UsageError};
use crate::protocol::{parse_f64, AlertType, CheckStatus, MetricKind, Priority, MIN_SAMPLE_RATE};

/// A metric's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A finite number (counters, gauges, timers, histograms, distributions).
    Number(f64),
    /// A set's member.
    Member(String),
}

/// One metric line's content.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub kind: MetricKind,
    pub value: Value,
    /// `None`: no `|@` field (a rate of 1).
    pub sample_rate: Option<f64>,
    pub tags: Vec<String>,
}

/// One event's content: title and text as they should read, newlines included.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub title: String,
    pub text: String,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub priority: Option<Priority>,
    pub alert_type: Option<AlertType>,
    pub aggregation_key: Option<String>,
    pub source_type: Option<String>,
    pub tags: Vec<String>,
}

/// One service check's content.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub status: CheckStatus,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub tags: Vec<String>,
    /// Newlines are sent as the two characters `\n` (the agent does not unescape them).
    pub message: Option<String>,
}

/// What one `harrier emit` sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Metric(MetricSpec),
    Event(EventSpec),
    ServiceCheck(CheckSpec),
}

impl Message {
    /// The wire line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Message::Metric(m) => metric_line(m),
            Message::Event(e) => event_line(e),
            Message::ServiceCheck(c) => check_line(c),
        }
    }
}

/// A number as the wire writes it: the shortest text that parses back to the same `f64`, with an exponent for
/// very large or very small magnitudes (Rust's `Display` never uses one).
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else if v == 0.0 {
        // No `-0`: the same value for every aggregation.
        "0".to_string()
    } else {
        format!("{v}")
    }
}

pub(super) fn push_tags(out: &mut String, tags: &[String]) {
    if !tags.is_empty() {
        out.push_str("|#");
        out.push_str(&tags.join(","));
    }
}

/// `name:value|type[|@rate][|#tags]`.
pub fn metric_line(m: &MetricSpec) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(&m.name);
    out.push(':');
    match &m.value {
        Value::Number(v) => out.push_str(&format_number(*v)),
        Value::Member(s) => out.push_str(s),
    }
    out.push('|');
    out.push_str(m.kind.wire());
    if let Some(rate) = m.sample_rate {
        out.push_str("|@");
        out.push_str(&format_number(rate));
    }
    push_tags(&mut out, &m.tags);
    out
}

/// Newlines (and CRLF pairs) as the two characters `\n`.
pub(super) fn escape_newlines(s: &str) -> String {
    s.replace("\r\n", "\\n").replace('\n', "\\n")
}

/// `_e{title_len,text_len}:title|text[|d:ts][|h:host][|k:key][|p:priority][|s:source][|t:alert][|#tags]`, the
/// lengths in bytes of the escaped title and text; the optional fields in datadog-go's order.
pub fn event_line(e: &EventSpec) -> String {
    let title = escape_newlines(&e.title);
    let text = escape_newlines(&e.text);
    let mut out = format!("_e{{{},{}}}:{title}|{text}", title.len(), text.len());
    if let Some(ts) = e.timestamp {
        out.push_str(&format!("|d:{ts}"));
    }
    for (prefix, field) in [("|h:", &e.hostname), ("|k:", &e.aggregation_key)] {
        if let Some(v) = field {
            out.push_str(prefix);
            out.push_str(v);
        }
    }
    if let Some(p) = e.priority {
        out.push_str("|p:");
        out.push_str(p.as_str());
    }
    if let Some(s) = &e.source_type {
        out.push_str("|s:");
        out.push_str(s);
    }
    if let Some(t) = e.alert_type {
        out.push_str("|t:");
        out.push_str(t.as_str());
    }
    push_tags(&mut out, &e.tags);
    out
}

/// `_sc|name|status[|d:ts][|h:host][|#tags][|m:message]`, the message last as the docs ask.
pub fn check_line(c: &CheckSpec) -> String {
    let mut out = format!("_sc|{}|{}", c.name, c.status.code());
    if let Some(ts) = c.timestamp {
        out.push_str(&format!("|d:{ts}"));
    }
    if let Some(h) = &c.hostname {
        out.push_str("|h:");
        out.push_str(h);
    }
    push_tags(&mut out, &c.tags);
    if let Some(m) = &c.message {
        out.push_str("|m:");
        out.push_str(&escape_newlines(m));
    }
    out
}

/// The characters that would end or cut a line or a field, named for an error.
pub(super) fn cutting_char(s: &str, forbidden: &[char]) -> Option<String> {
    s.chars().find(|c| forbidden.contains(c)).map(|c| match c {
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        c => format!("'{c}'"),
    })
}

/// A text field: not empty, none of `forbidden`.
pub(super) fn check_text(flag: &'static str, value: &str, forbidden: &[char], why: &str) -> Result<(), UsageError> {
    if value.is_empty() {
        return Err(invalid(flag, value, "it is empty"));
    }
    match cutting_char(value, forbidden) {
        Some(c) => Err(invalid(flag, value, format!("it contains {c}, {why}"))),
        None => Ok(()),
    }
}

/// A metric name: not empty, no `:` (it ends the name), `|`, `#` or newline, and not starting as an event or a
/// service check does.
pub fn check_metric_name(name: &str) -> Result<(), UsageError> {
    if name.starts_with("_e{") || name.starts_with("_sc") {
        return Err(invalid(
            "--name",
            name,
            "a line starting with _e{ or _sc is read as an event or a service check",
        ));
    }
    check_text(
        "--name",
        name,
        &[':', '|', '#', '\n', '\r'],
        "which the DogStatsD line cannot carry in a metric name",
    )
}

/// A tag: not empty, and no `,` (it separates tags; repeat --tag instead), `|`, `#`, newline.
pub fn check_tag(tag: &str) -> Result<(), UsageError> {
    if tag.contains(',') {
        return Err(invalid(
            "--tag",
            tag,
            "it contains ',', which separates tags: repeat --tag for each tag",
        ));
    }
    check_text(
        "--tag",
        tag,
        &['|', '#', '\n', '\r'],
        "which the DogStatsD line cannot carry in a tag",
    )
}

/// A finite number in the wire's syntax (Go's `ParseFloat`, as the server reads it).
pub fn parse_number(flag: &'static str, raw: &str) -> Result<f64, UsageError> {
    match parse_f64(raw) {
        Some(v) if v.is_finite() => Ok(v),
        Some(_) => Err(invalid(flag, raw, "not a finite number")),
        None => Err(invalid(flag, raw, "not a number")),
    }
}

/// A timer's value in milliseconds: a bare number is milliseconds; a number with a unit (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`) is converted, as veneur-emit takes a Go duration.
pub fn parse_timing(raw: &str) -> Result<f64, UsageError> {
    const UNITS: [(&str, f64); 8] = [
        ("ns", 1e-6),
        ("us", 1e-3),
        ("µs", 1e-3),
        ("μs", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3600e3),
    ];
    // Longest suffixes first: "ms" before "s" and "m".
    for (unit, scale) in UNITS {
        if let Some(number) = raw.strip_suffix(unit) {
            if let Some(v) = parse_f64(number).filter(|v| v.is_finite()) {
                return Ok(v * scale);
            }
        }
    }
    parse_number("--timing", raw).map_err(|_| {
        invalid(
            "--timing",
            raw,
            "not a number of milliseconds nor a duration such as 250ms, 1.5s or 2m",
        )
    })
}

/// A sample rate in [1e-9, 1], as the server accepts.
pub fn parse_sample_rate(raw: &str) -> Result<f64, UsageError> {
    let v = parse_number("--sample-rate", raw)?;
    if (MIN_SAMPLE_RATE..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            "--sample-rate",
            raw,
            "a sample rate is in (0, 1] (at least 1e-9)",
        ))
    }
}

/// `ok`, `warning`, `critical`, `unknown` (any case) or `0`..`3`.
pub fn parse_status(raw: &str) -> Result<CheckStatus, UsageError> {
    Ok(match raw.to_ascii_lowercase().as_str() {
        "0" | "ok" => CheckStatus::Ok,
        "1" | "warning" | "warn" => CheckStatus::Warning,
        "2" | "critical" | "crit" => CheckStatus::Critical,
        "3" | "unknown" => CheckStatus::Unknown,
        _ => {
            return Err(invalid(
                "--status",
                raw,
                "expected ok, warning, critical, unknown, or 0 to 3",
            ))
        }
    })
}

pub(super) fn parse_alert_type(raw: &str) -> Result<AlertType, UsageError> {
    Ok(match raw {
        "error" => AlertType::Error,
        "warning" => AlertType::Warning,
        "info" => AlertType::Info,
        "success" => AlertType::Success,
        _ => return Err(invalid("--alert-type", raw, "expected error, warning, info or success")),
    })
}

pub(super) fn parse_priority(raw: &str) -> Result<Priority, UsageError> {
    match raw {
        "normal" => Ok(Priority::Normal),
        "low" => Ok(Priority::Low),
        _ => Err(invalid("--priority", raw, "expected normal or low")),
    }
}

pub(super) fn parse_timestamp(raw: &str) -> Result<i64, UsageError> {
    match raw.parse::<i64>() {
        Ok(ts) if ts > 0 => Ok(ts),
        _ => Err(invalid(
            "--timestamp",
            raw,
            "expected a positive integer number of unix seconds",
        )),
    }
}

/// An optional one-field text of an event or check: no `|` (it ends the field) nor a newline.
pub(super) fn optional_field(flag: &'static str, value: &Option<String>) -> Result<Option<String>, UsageError> {
    match value {
        None => Ok(None),
        Some(v) => {
            check_text(flag, v, &['|', '\n', '\r'], "which would end the field")?;
            Ok(Some(v.clone()))
        }
    }
}
