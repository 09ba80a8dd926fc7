//! Datadog v2 series: `POST /api/v2/series` with the agent's `MetricPayload` protobuf
//! (`proto/datadog/agentpayload/agent_payload.proto`), zstd- or zlib-compressed.
//!
//! The wire format is written directly from the flush's series (no intermediate message per series): a
//! `MetricPayload` is its `series` entries one after the other, so a payload can be cut anywhere between series.
//!
//! Mapping, as the agent's for DogStatsD: a counter (and a histogram's `.count`) is a `RATE`, its value per second
//! over the interval, with `interval` in whole seconds; everything else is a `GAUGE`. The `host:` tag (or the
//! configured hostname) becomes the `host` resource and a `device:` tag the `device` resource, as v1 moves them
//! into fields. Non-finite values are left out (the intake refuses them).

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

use super::{Body, Limits};
use crate::config::Compression;
use crate::sink::wire::{ld_len, point_len, put_ld, put_point, put_str};
use crate::sink::{Series, SeriesKind};

/// The intake's limit on a compressed `/api/v2/series` body.
pub const MAX_COMPRESSED_BYTES: usize = 512_000;
/// The intake's limit on a decompressed `/api/v2/series` body.
pub const MAX_UNCOMPRESSED_BYTES: usize = 5_242_880;
/// The agent's most points per v2 payload (`serializer_max_series_points_per_payload`).
pub const MAX_POINTS: usize = 10_000;

/// `MetricPayload.MetricType`.
const RATE: u64 = 2;
const GAUGE: u64 = 3;

/// What a series is sent as: its value, type and interval (0: none).
fn typed(s: &Series, interval_secs: f64) -> (f64, u64, i64) {
    match s.kind {
        SeriesKind::Counter | SeriesKind::SampleCount => {
            // The intake takes whole seconds; a sub-second interval is reported as 1.
            (s.value / interval_secs, RATE, (interval_secs.round() as i64).max(1))
        }
        SeriesKind::Gauge => (s.value, GAUGE, 0),
    }
}

/// The host and device of a series, and whether a tag is one of them (moved to a resource).
fn resources<'a>(s: &'a Series, default_host: &'a str) -> (Option<&'a str>, Option<&'a str>) {
    let (mut host, mut device) = (None, None);
    for t in s.tags.iter() {
        if let Some(h) = t.strip_prefix("host:") {
            host.get_or_insert(h);
        } else if let Some(d) = t.strip_prefix("device:") {
            device.get_or_insert(d);
        }
    }
    (host.or((!default_host.is_empty()).then_some(default_host)), device)
}

fn is_resource_tag(t: &str) -> bool {
    t.starts_with("host:") || t.starts_with("device:")
}

fn resource_len(kind: &str, name: &str) -> usize {
    ld_len(kind.len()) + ld_len(name.len())
}

/// Appends one `MetricPayload.series` entry; false (writing nothing) for a non-finite value.
pub fn write_series(out: &mut Vec<u8>, s: &Series, default_host: &str, interval_secs: f64) -> bool {
    let (value, kind, interval) = typed(s, interval_secs);
    if !value.is_finite() {
        return false;
    }
    let (host, device) = resources(s, default_host);
    let name = s.full_name();
    let mut len = ld_len(name.0.len() + name.1.len()) + ld_len(point_len(s.timestamp)) + 2;
    if let Some(h) = host {
        len += ld_len(resource_len("host", h));
    }
    if let Some(d) = device {
        len += ld_len(resource_len("device", d));
    }
    for t in s.tags.iter().filter(|t| !is_resource_tag(t)) {
        len += ld_len(t.len());
    }
    if interval > 0 {
        len += 1 + encoded_len_varint(interval as u64);
    }
    put_ld(out, 1, len);
    for (kind, name) in [("host", host), ("device", device)] {
        if let Some(name) = name {
            put_ld(out, 1, resource_len(kind, name));
            put_str(out, 1, &[kind]);
            put_str(out, 2, &[name]);
        }
    }
    put_str(out, 2, &[name.0, name.1]);
    for t in s.tags.iter().filter(|t| !is_resource_tag(t)) {
        put_str(out, 3, &[t]);
    }
    put_point(out, 4, value, s.timestamp);
    encode_key(5, WireType::Varint, out);
    encode_varint(kind, out);
    if interval > 0 {
        encode_key(8, WireType::Varint, out);
        encode_varint(interval as u64, out);
    }
    true
}

/// Encodes series into one compressed `MetricPayload`.
pub fn encode_series(series: &[Series], default_host: &str, interval_secs: f64, compression: Compression) -> Body {
    encode_body(series.len() * 96, compression, |buf| {
        series
            .iter()
            .map(|s| usize::from(write_series(buf, s, default_host, interval_secs)))
            .sum()
    })
}

/// One compressed body: `write` appends its items to this thread's reused buffer (see [`RAW`], reserved to
/// `capacity` bytes) and returns how many it wrote; the buffer is then compressed as `compression` says. Used for
/// series and sketch payloads.
pub fn encode_body(capacity: usize, compression: Compression, write: impl FnOnce(&mut Vec<u8>) -> usize) -> Body {
    let encode = |buf: &mut Vec<u8>| {
        buf.clear();
        buf.reserve(capacity);
        let series = write(buf);
        let body = Body {
            compressed: compress(buf, compression),
            uncompressed_len: buf.len(),
            series,
        };
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        body
    };
    RAW.with(|raw| match raw.try_borrow_mut() {
        Ok(mut buf) => encode(&mut buf),
        Err(_) => encode(&mut Vec::new()),
    })
}

thread_local! {
    /// A thread's buffer for a body before compression, reused from body to body: allocated for each, it was a
    /// megabyte (10,000 series) mapped, faulted in page by page and unmapped per body (glibc maps blocks that
    /// large on their own, see [`crate::allocator`]): half of the page faults of `mixed50k`. Kept only up to
    /// [`SCRATCH_KEEP`] bytes.
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest buffer a thread keeps between bodies (a body of 10,000 series is about a megabyte before
/// compression and a few hundred kilobytes after).
const SCRATCH_KEEP: usize = 2 << 20;

/// `bytes` compressed as `compression` says.
pub fn compress(bytes: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Zstd => ZSTD.with(|z| match z.try_borrow_mut() {
            Ok(mut z) => z.compress(bytes),
            Err(_) => ZstdScratch::default().compress(bytes),
        }),
        Compression::Deflate => super::compress(bytes),
    }
}

/// Level 1, the agent's default (`serializer_zstd_compressor_level`).
const ZSTD_LEVEL: i32 = 1;

/// A thread's zstd context and output buffer, reused from body to body (made anew for each, they were allocated,
/// zeroed and faulted in per body, as [`RAW`] was). The output buffer is kept only up to [`SCRATCH_KEEP`] bytes.
#[derive(Default)]
struct ZstdScratch {
    context: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

thread_local! {
    static ZSTD: std::cell::RefCell<ZstdScratch> = std::cell::RefCell::default();
}

impl ZstdScratch {
    /// `bytes` as one zstd frame, in a vector of its own size. Compressing into memory fails only on an
    /// allocation failure; the body is then empty, and the intake refuses it (counted).
    fn compress(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.context.is_none() {
            self.context = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let Some(context) = self.context.as_mut() else {
            return Vec::new();
        };
        self.out.clear();
        self.out.reserve(zstd::zstd_safe::compress_bound(bytes.len()));
        let body = match context.compress_to_buffer(bytes, &mut self.out) {
            Ok(_) => self.out.as_slice().to_vec(),
            Err(_) => Vec::new(),
        };
        if self.out.capacity() > SCRATCH_KEEP {
            self.out = Vec::new();
        }
        body
    }
}

/// Cuts series into payloads of at most `max_per_body` (and the agent's 10,000 points) series under the v2 byte
/// limits, as [`super::split_bodies`] does.
pub fn build_payloads(
    series: &[Series],
    max_per_body: usize,
    default_host: &str,
    interval_secs: f64,
    compression: Compression,
) -> (Vec<(Body, std::ops::Range<usize>)>, usize) {
    let limits = Limits {
        per_body: max_per_body.min(MAX_POINTS),
        compressed: MAX_COMPRESSED_BYTES,
        uncompressed: MAX_UNCOMPRESSED_BYTES,
    };
    super::split_bodies(series, &limits, |s| {
        encode_series(s, default_host, interval_secs, compression)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::TagSet;
    use crate::sink::datadog::payload::metric_payload::MetricType;
    use crate::sink::datadog::payload::MetricPayload;
    use prost::Message;

    fn series(name: &str, tags: &[&str], value: f64, kind: SeriesKind) -> Series {
        Series {
            name: name.into(),
            suffix: Default::default(),
            tags: TagSet::from_tags(tags.iter().copied()),
            value,
            kind,
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn the_written_payload_decodes_as_the_agents_metric_payload() {
        let input = [
            series(
                "hits",
                &["env:dev", "host:web1", "device:sda"],
                20.0,
                SeriesKind::Counter,
            ),
            series("temp", &["b:2", "a:1"], 21.5, SeriesKind::Gauge),
            series("bad", &[], f64::NAN, SeriesKind::Gauge),
            series("lat.count", &[], 4.0, SeriesKind::SampleCount),
        ];
        let mut buf = Vec::new();
        let written: Vec<bool> = input.iter().map(|s| write_series(&mut buf, s, "me", 10.0)).collect();
        assert_eq!(written, [true, true, false, true]);
        let p = MetricPayload::decode(&buf[..]).unwrap();
        assert_eq!(p.series.len(), 3);
        let hits = &p.series[0];
        assert_eq!(hits.metric, "hits");
        assert_eq!(hits.r#type(), MetricType::Rate);
        assert_eq!(hits.interval, 10);
        assert_eq!(hits.points.len(), 1);
        assert_eq!(hits.points[0].value, 2.0);
        assert_eq!(hits.points[0].timestamp, 1_700_000_000);
        assert_eq!(hits.tags, ["env:dev"]);
        let res: Vec<(&str, &str)> = hits.resources.iter().map(|r| (&*r.r#type, &*r.name)).collect();
        assert_eq!(res, [("host", "web1"), ("device", "sda")]);
        let temp = &p.series[1];
        assert_eq!(temp.r#type(), MetricType::Gauge);
        assert_eq!(temp.interval, 0);
        assert_eq!(temp.tags, ["a:1", "b:2"]);
        assert_eq!(temp.resources[0].name, "me");
        assert_eq!(p.series[2].r#type(), MetricType::Rate);
        assert_eq!(p.series[2].points[0].value, 0.4);
    }

    #[test]
    fn payloads_hold_at_most_ten_thousand_series_and_decompress_to_every_series_once() {
        let input: Vec<Series> = (0..25_000)
            .map(|i| series(&format!("m{i}"), &["env:prod"], i as f64, SeriesKind::Gauge))
            .collect();
        for compression in [Compression::Zstd, Compression::Deflate] {
            let (bodies, dropped) = build_payloads(&input, 25_000, "h", 10.0, compression);
            assert_eq!(dropped, 0);
            assert_eq!(bodies.len(), 3);
            let mut seen = 0;
            for (body, range) in &bodies {
                assert!(range.len() <= MAX_POINTS);
                assert!(body.compressed.len() <= MAX_COMPRESSED_BYTES);
                let raw = match compression {
                    Compression::Zstd => zstd::bulk::decompress(&body.compressed, MAX_UNCOMPRESSED_BYTES).unwrap(),
                    Compression::Deflate => {
                        use std::io::Read;
                        let mut out = Vec::new();
                        flate2::read::ZlibDecoder::new(&body.compressed[..])
                            .read_to_end(&mut out)
                            .unwrap();
                        out
                    }
                };
                let p = MetricPayload::decode(&raw[..]).unwrap();
                for (s, want) in p.series.iter().zip(&input[range.clone()]) {
                    assert_eq!(s.metric, &*want.name);
                    assert_eq!(s.points[0].value, want.value);
                }
                seen += p.series.len();
            }
            assert_eq!(seen, input.len());
        }
    }
}
