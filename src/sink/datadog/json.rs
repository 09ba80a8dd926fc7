//! Datadog v1 JSON: `/api/v1/series` bodies (zlib), the `/api/v1/check_run` array and `/api/v1/events` objects.

use std::fmt::Write as _;

use super::{compress as compress_deflate, split_bodies, Body, Limits};
use crate::sink::{CheckRun, Event, FullName, Series, SeriesKind};

/// The intake's limit on a compressed `/api/v1/series` body.
pub const MAX_COMPRESSED_BYTES: usize = 3_200_000;
/// The intake's limit on a decompressed `/api/v1/series` body.
pub const MAX_UNCOMPRESSED_BYTES: usize = 62_914_560;

/// Appends `s` as a JSON string.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escaped(out, s);
    out.push('"');
}

/// `s` escaped for a JSON string, without the quotes.
fn json_escaped(out: &mut String, s: &str) {
    // The usual case: nothing to escape, copied whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A series name (base and suffix) as one JSON string.
fn json_name(out: &mut String, name: FullName<'_>) {
    out.push('"');
    json_escaped(out, name.0);
    json_escaped(out, name.1);
    out.push('"');
}

/// Appends `tags` as a JSON array of strings.
pub fn json_tags<'a>(out: &mut String, tags: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, t) in tags.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, t);
    }
    out.push(']');
}

/// One series as Datadog v1 JSON. Counters become a per-second `rate` with the interval; everything else is a
/// `gauge`. Returns false (writing nothing) for a non-finite value, which the intake would refuse.
pub fn write_series(out: &mut String, s: &Series, default_host: &str, interval_secs: f64) -> bool {
    let (value, kind) = match s.kind {
        SeriesKind::Counter | SeriesKind::SampleCount => (s.value / interval_secs, "rate"),
        SeriesKind::Gauge => (s.value, "gauge"),
    };
    if !value.is_finite() {
        return false;
    }
    out.push_str("{\"metric\":");
    json_name(out, s.full_name());
    let _ = write!(out, ",\"points\":[[{},{}]],\"type\":\"{kind}\"", s.timestamp, value);
    if matches!(s.kind, SeriesKind::Counter | SeriesKind::SampleCount) {
        // The intake takes whole seconds; a sub-second interval is reported as 1.
        let _ = write!(out, ",\"interval\":{}", (interval_secs.round() as i64).max(1));
    }
    // One pass over the tags: `host:` and `device:` become fields, the rest the tag list.
    let (mut host, mut device) = (None, None);
    out.push_str(",\"tags\":[");
    let mut first = true;
    for t in s.tags.iter() {
        if let Some(h) = t.strip_prefix("host:") {
            host.get_or_insert(h);
        } else if let Some(d) = t.strip_prefix("device:") {
            device.get_or_insert(d);
        } else {
            if !first {
                out.push(',');
            }
            first = false;
            json_str(out, t);
        }
    }
    out.push(']');
    if let Some(host) = host.or((!default_host.is_empty()).then_some(default_host)) {
        out.push_str(",\"host\":");
        json_str(out, host);
    }
    if let Some(device) = device {
        out.push_str(",\"device\":");
        json_str(out, device);
    }
    out.push('}');
    true
}

/// Encodes series into one compressed `{"series":[…]}` body.
pub fn encode_series(series: &[Series], default_host: &str, interval_secs: f64) -> Body {
    let mut json = String::with_capacity(series.len() * 160 + 16);
    json.push_str("{\"series\":[");
    let mut n = 0;
    for s in series {
        let mark = json.len();
        if n > 0 {
            json.push(',');
        }
        if write_series(&mut json, s, default_host, interval_secs) {
            n += 1;
        } else {
            json.truncate(mark);
        }
    }
    json.push_str("]}");
    Body {
        compressed: compress_deflate(json.as_bytes()),
        uncompressed_len: json.len(),
        series: n,
    }
}

/// Cuts series into equal chunks of at most `max_per_body`, and encodes each, splitting again any body over the
/// intake's byte limits. A single series too large on its own is dropped (counted in the returned number).
pub fn build_bodies(
    series: &[Series],
    max_per_body: usize,
    default_host: &str,
    interval_secs: f64,
) -> (Vec<(Body, std::ops::Range<usize>)>, usize) {
    let limits = Limits {
        per_body: max_per_body,
        compressed: MAX_COMPRESSED_BYTES,
        uncompressed: MAX_UNCOMPRESSED_BYTES,
    };
    split_bodies(series, &limits, |s| encode_series(s, default_host, interval_secs))
}

/// Service checks as the `/api/v1/check_run` JSON array.
pub fn encode_checks(checks: &[CheckRun], default_host: &str) -> String {
    let mut out = String::from("[");
    for (i, c) in checks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"check\":");
        json_str(&mut out, &c.name);
        out.push_str(",\"host_name\":");
        json_str(&mut out, c.hostname.as_deref().unwrap_or(default_host));
        let _ = write!(
            out,
            ",\"timestamp\":{},\"status\":{},\"message\":",
            c.timestamp,
            c.status.code()
        );
        json_str(&mut out, &c.message);
        out.push_str(",\"tags\":");
        json_tags(&mut out, c.tags.output());
        out.push('}');
    }
    out.push(']');
    out
}

/// One event as the `/api/v1/events` JSON object.
pub fn encode_event(e: &Event, default_host: &str) -> String {
    let mut out = String::from("{\"title\":");
    json_str(&mut out, &e.title);
    out.push_str(",\"text\":");
    json_str(&mut out, &e.text);
    let _ = write!(
        out,
        ",\"date_happened\":{},\"priority\":\"{}\",\"alert_type\":\"{}\"",
        e.timestamp,
        e.priority.as_str(),
        e.alert_type.as_str()
    );
    let host = e.hostname.as_deref().unwrap_or(default_host);
    if !host.is_empty() {
        out.push_str(",\"host\":");
        json_str(&mut out, host);
    }
    if let Some(k) = &e.aggregation_key {
        out.push_str(",\"aggregation_key\":");
        json_str(&mut out, k);
    }
    if let Some(s) = &e.source_type {
        out.push_str(",\"source_type_name\":");
        json_str(&mut out, s);
    }
    out.push_str(",\"tags\":");
    json_tags(&mut out, e.tags.output());
    out.push('}');
    out
}
