//! Protobuf wire-format pieces the sinks write directly, without building messages (Prometheus remote write,
//! Datadog v2 series and sketches): length-delimited fields, strings, and the `{double value = 1; int64 timestamp
//! = 2}` point both Prometheus' `Sample` and Datadog's `MetricPoint` are. Field numbers are below 16 (one-byte
//! keys).

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// Bytes of a length-delimited field whose content is `len` bytes.
#[inline]
pub fn ld_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field; its `len` bytes of content follow.
#[inline]
pub fn put_ld(out: &mut Vec<u8>, field: u32, len: usize) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// A string field whose text is `parts` one after the other (a name and its suffix, say).
#[inline]
pub fn put_str(out: &mut Vec<u8>, field: u32, parts: &[&str]) {
    put_ld(out, field, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// Content bytes of a point at `timestamp`.
#[inline]
pub fn point_len(timestamp: i64) -> usize {
    9 + 1 + encoded_len_varint(timestamp as u64)
}

/// A point as field `field`: `value` (field 1, double) and `timestamp` (field 2, int64).
#[inline]
pub fn put_point(out: &mut Vec<u8>, field: u32, value: f64, timestamp: i64) {
    put_ld(out, field, point_len(timestamp));
    encode_key(1, WireType::SixtyFourBit, out);
    out.extend_from_slice(&value.to_le_bytes());
    encode_key(2, WireType::Varint, out);
    encode_varint(timestamp as u64, out);
}
