//! Forwarded metrics as their encoded bytes: what senders keep, send and send again, and what a proxy routes
//! without decoding.
//!
//! A [`RawBatch`] is the `MetricBatch` message of the forward protocol with each `Metric` kept as the bytes of its
//! encoding (a `Bytes` slice of the received buffer: no copy, no allocation per metric). [`route_key`] reads the
//! series key (name, type, tags) of an encoded metric in place, for routing.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, skip_field, DecodeContext, WireType};
use prost::DecodeError;

use super::route::RouteHasher;

/// A `MetricBatch` whose metrics stay encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawBatch {
    /// Each one the encoding of a `Metric`.
    pub metrics: Vec<Bytes>,
}

impl prost::Message for RawBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for m in &self.metrics {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(m.len() as u64, buf);
            buf.put_slice(m);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 {
            return skip_field(wire_type, tag, buf, ctx);
        }
        // Checks the wire type and the length, and takes the bytes without copying where the buffer allows.
        let mut metric = Bytes::new();
        prost::encoding::bytes::merge(wire_type, &mut metric, buf, ctx)?;
        self.metrics.push(metric);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.metrics
            .iter()
            .map(|m| 1 + encoded_len_varint(m.len() as u64) + m.len())
            .sum()
    }

    fn clear(&mut self) {
        self.metrics.clear();
    }
}

/// Reads one field's key at `pos`: (field number, wire type, position after the key).
fn key(b: &[u8], pos: usize) -> Option<(u32, u8, usize)> {
    let (k, next) = varint(b, pos)?;
    Some(((k >> 3) as u32, (k & 7) as u8, next))
}

fn varint(b: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(pos)?;
        pos += 1;
        out |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some((out, pos));
        }
    }
    None
}

/// Walks the fields of an encoded message: (field number, payload of a length-delimited field or the varint's
/// value), or `None` for malformed bytes.
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u32, &'a [u8], u64)) -> Option<()> {
    let mut pos = 0;
    while pos < b.len() {
        let (field, wire, next) = key(b, pos)?;
        pos = next;
        match wire {
            0 => {
                let (v, next) = varint(b, pos)?;
                f(field, &[], v);
                pos = next;
            }
            1 => pos = pos.checked_add(8).filter(|&p| p <= b.len())?,
            2 => {
                let (len, next) = varint(b, pos)?;
                let end = next.checked_add(usize::try_from(len).ok()?).filter(|&e| e <= b.len())?;
                f(field, &b[next..end], 0);
                pos = end;
            }
            5 => pos = pos.checked_add(4).filter(|&p| p <= b.len())?,
            _ => return None,
        }
    }
    Some(())
}

/// The routing hash of an encoded `Metric` (the same as [`super::route::route_hash`] of it decoded), or `None`
/// if the bytes are not a well-formed message.
pub fn route_key(b: &[u8]) -> Option<u64> {
    let mut name: &[u8] = &[];
    let mut ty = 0u64;
    fields(b, |field, payload, v| match field {
        1 => name = payload,
        3 => ty = v,
        _ => {}
    })?;
    let mut h = RouteHasher::new(name, ty as i32);
    fields(b, |field, payload, _| {
        if field == 2 {
            h.tag(payload);
        }
    })?;
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::route::route_hash;
    use crate::forward::view;
    use proptest::prelude::*;
    use prost::Message;

    fn metric(name: &str, tags: &[&str], ty: i32) -> view::Metric {
        view::Metric {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            r#type: ty,
            scope: 2,
            value: Some(view::metric::Value::Histogram(Bytes::from_static(&[
                0x19, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
            ]))),
        }
    }

    #[test]
    fn an_encoded_metric_routes_like_the_decoded_one() {
        for m in [
            metric("api.latency", &["route:charges", "env:prod"], 3),
            metric("x", &[], 1),
            metric("", &["a"], 0),
        ] {
            let bytes = m.encode_to_vec();
            assert_eq!(route_key(&bytes), Some(route_hash(&m)), "{m:?}");
        }
    }

    #[test]
    fn a_raw_batch_is_a_metric_batch_on_the_wire() {
        let ms = [metric("a", &["t:1"], 3), metric("b", &[], 6)];
        let raw = RawBatch {
            metrics: ms.iter().map(|m| Bytes::from(m.encode_to_vec())).collect(),
        };
        let wire = raw.encode_to_vec();
        assert_eq!(wire.len(), raw.encoded_len());
        let full = crate::forward::proto::MetricBatch::decode(wire.as_slice()).unwrap();
        assert_eq!(full.metrics.len(), 2);
        assert_eq!(full.metrics[0].name, "a");
        assert_eq!(RawBatch::decode(Bytes::from(wire)).unwrap(), raw);
    }

    proptest! {
        #[test]
        fn any_bytes_route_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = route_key(&bytes);
            let _ = RawBatch::decode(bytes.as_slice());
        }
    }
}
