//! Distributions as sketches: `POST /api/beta/sketches` with the agent's `SketchPayload` protobuf, zstd- or
//! zlib-compressed, so that Datadog merges them with the agent's and computes fleet-wide percentiles itself.
//!
//! Each distribution of a flush is one `Sketch` with one `Dogsketch` (the interval's): its count, min, max, avg and
//! sum, and its bins as keys `k` with counts `n` (each at most 65,535: a larger count repeats its key, as the agent
//! writes them). The `host:` tag (or the configured hostname) becomes the `host` field. Payloads stay within the
//! agent's serializer limits (2.5 MB compressed, 4 MiB uncompressed).

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

use super::{Body, Limits};
use crate::config::Compression;
use crate::sink::wire::{ld_len, put_ld, put_str};
use crate::sink::SketchSeries;

/// The agent's limit on a compressed sketch payload (`serializer_max_payload_size`).
pub const MAX_COMPRESSED_BYTES: usize = 2_621_440;
/// The agent's limit on an uncompressed sketch payload (`serializer_max_uncompressed_payload_size`).
pub const MAX_UNCOMPRESSED_BYTES: usize = 4_194_304;

fn zigzag(k: i32) -> u64 {
    u64::from(((k << 1) ^ (k >> 31)) as u32)
}

/// Appends one `SketchPayload.sketches` entry; false (writing nothing) for an empty sketch.
pub fn write_sketch(out: &mut Vec<u8>, s: &SketchSeries, default_host: &str) -> bool {
    let sk = &s.sketch;
    if sk.is_empty() {
        return false;
    }
    let host = s
        .tags
        .iter()
        .find_map(|t| t.strip_prefix("host:"))
        .unwrap_or(default_host);
    let (k, n) = sk.to_wire();
    let k_len: usize = k.iter().map(|&k| encoded_len_varint(zigzag(k))).sum();
    let n_len: usize = n.iter().map(|&n| encoded_len_varint(u64::from(n))).sum();
    let count = sk.count() as i64;
    // ts, cnt, min, max, avg, sum, k, n.
    let mut dog_len = 1 + encoded_len_varint(s.timestamp as u64) + 1 + encoded_len_varint(count as u64) + 4 * 9;
    if !k.is_empty() {
        dog_len += ld_len(k_len) + ld_len(n_len);
    }
    let mut len = ld_len(s.name.len()) + ld_len(dog_len);
    if !host.is_empty() {
        len += ld_len(host.len());
    }
    for t in s.tags.iter().filter(|t| !t.starts_with("host:")) {
        len += ld_len(t.len());
    }
    put_ld(out, 1, len);
    put_str(out, 1, &[&s.name]);
    if !host.is_empty() {
        put_str(out, 2, &[host]);
    }
    for t in s.tags.iter().filter(|t| !t.starts_with("host:")) {
        put_str(out, 4, &[t]);
    }
    put_ld(out, 7, dog_len);
    encode_key(1, WireType::Varint, out);
    encode_varint(s.timestamp as u64, out);
    encode_key(2, WireType::Varint, out);
    encode_varint(count as u64, out);
    for (field, v) in [(3, sk.min()), (4, sk.max()), (5, sk.avg()), (6, sk.sum())] {
        encode_key(field, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
    if !k.is_empty() {
        put_ld(out, 7, k_len);
        for &k in &k {
            encode_varint(zigzag(k), out);
        }
        put_ld(out, 8, n_len);
        for &n in &n {
            encode_varint(u64::from(n), out);
        }
    }
    true
}

/// Encodes sketches into one compressed `SketchPayload` (with the empty `metadata` the agent writes).
pub fn encode_sketches(sketches: &[SketchSeries], default_host: &str, compression: Compression) -> Body {
    super::v2::encode_body(sketches.len() * 256, compression, |buf| {
        let n = sketches
            .iter()
            .map(|s| usize::from(write_sketch(buf, s, default_host)))
            .sum();
        put_ld(buf, 2, 0);
        n
    })
}

/// Cuts sketches into payloads within the agent's limits, as [`super::split_bodies`] does.
pub fn build_payloads(
    sketches: &[SketchSeries],
    max_per_body: usize,
    default_host: &str,
    compression: Compression,
) -> (Vec<(Body, std::ops::Range<usize>)>, usize) {
    let limits = Limits {
        per_body: max_per_body,
        compressed: MAX_COMPRESSED_BYTES,
        uncompressed: MAX_UNCOMPRESSED_BYTES,
    };
    super::split_bodies(sketches, &limits, |s| encode_sketches(s, default_host, compression))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::TagSet;
    use crate::ddsketch::DdSketch;
    use crate::sink::datadog::payload::SketchPayload;
    use prost::Message;

    #[test]
    fn a_sketch_decodes_as_the_agents_sketch_payload_with_exact_statistics() {
        let mut sketch = DdSketch::default();
        for v in 1..=1000 {
            sketch.insert(v as f64, 1);
        }
        sketch.insert(-5.0, 70_000);
        let s = SketchSeries {
            name: "req.size".into(),
            tags: TagSet::from_tags(["env:prod", "host:web-2"]),
            timestamp: 1_700_000_000,
            sketch: Box::new(sketch.clone()),
        };
        let body = encode_sketches(&[s], "me", Compression::Zstd);
        let raw = zstd::bulk::decompress(&body.compressed, MAX_UNCOMPRESSED_BYTES).unwrap();
        let p = SketchPayload::decode(&raw[..]).unwrap();
        assert_eq!(p.sketches.len(), 1);
        let got = &p.sketches[0];
        assert_eq!((got.metric.as_str(), got.host.as_str()), ("req.size", "web-2"));
        assert_eq!(got.tags, ["env:prod"]);
        assert_eq!(got.dogsketches.len(), 1);
        let d = &got.dogsketches[0];
        assert_eq!(d.ts, 1_700_000_000);
        assert_eq!(d.cnt, 71_000);
        assert_eq!((d.min, d.max), (-5.0, 1000.0));
        assert_eq!(d.sum, 500_500.0 - 350_000.0);
        assert_eq!(d.avg, d.sum / 71_000.0);
        assert_eq!(d.k.len(), d.n.len());
        assert!(d.n.iter().all(|&n| n <= 65_535), "counts above 65535 repeat their key");
        assert_eq!(d.n.iter().map(|&n| u64::from(n)).sum::<u64>(), 71_000);
        assert!(d.k.windows(2).all(|w| w[0] <= w[1]), "keys sorted");
        let back = DdSketch::from_wire(&d.k, &d.n, d.cnt as u64, d.min, d.max, d.sum).unwrap();
        assert_eq!(back.bins().collect::<Vec<_>>(), sketch.bins().collect::<Vec<_>>());
    }
}
