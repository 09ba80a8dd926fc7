//! `--decode DIR`: prints each series of the `/api/v2/series` bodies (MetricPayload, zstd or zlib) that
//! `--intake` stored in DIR as one JSON object per line, in the shape of a v1 series: metric, tags, type,
//! interval and points `[[ts, v]]` (one line per point).

use std::fmt::Write as _;
use std::io::{Read, Write};

use harrier::sink::datadog::json::{json_str, json_tags};
use harrier::sink::datadog::payload::{metric_payload::MetricType, MetricPayload};
use prost::Message;

/// Prints the series of the stored `/api/v2/series` bodies as v1-shaped JSON lines.
pub(crate) fn run(dir: &str) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_name().to_string_lossy().ends_with("api_v2_series") {
            continue;
        }
        let raw = std::fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let body = decompress(&raw)?;
        let payload = MetricPayload::decode(&body[..]).map_err(|e| format!("MetricPayload: {e}"))?;
        write_series(&mut out, payload)?;
    }
    Ok(())
}

/// A stored body, uncompressed: zstd when it starts with zstd's magic number, else zlib.
fn decompress(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(raw).map_err(|e| format!("zstd: {e}"))
    } else {
        let mut body = Vec::new();
        flate2::read::ZlibDecoder::new(raw)
            .read_to_end(&mut body)
            .map_err(|e| format!("zlib: {e}"))?;
        Ok(body)
    }
}

/// Writes one JSON line per point of each series of `payload`.
fn write_series(out: &mut impl Write, payload: MetricPayload) -> Result<(), String> {
    for s in payload.series {
        let kind = match s.r#type() {
            MetricType::Rate => "rate",
            MetricType::Count => "count",
            _ => "gauge",
        };
        for p in &s.points {
            let mut line = String::from("{\"metric\":");
            json_str(&mut line, &s.metric);
            line.push_str(",\"tags\":");
            json_tags(&mut line, s.tags.iter().map(String::as_str));
            let _ = write!(
                line,
                ",\"type\":\"{kind}\",\"interval\":{},\"points\":[[{},{}]]}}",
                s.interval, p.timestamp, p.value
            );
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
