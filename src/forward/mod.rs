//! Forwarding between tiers over gRPC (`proto/harrier/forward/v1/forward.proto`), in the order data flows:
//!
//! - [`route`]: which global owns a series (rendezvous hashing of the series key over the members);
//! - [`discovery`]: who the members are (a fixed list, or DNS A/SRV records refreshed in the background);
//! - [`client`]: the sender (a local, or a proxy's router): encodes, routes, sends to every destination and keeps
//!   each batch until it is acknowledged, re-routing the share of a global that cannot be reached; its handle and
//!   task loop, with the rest of the sender in
//!   - [`outbox`]: the members in force, the destinations with their queues, and the routing of metrics into them;
//!   - [`outcome`]: the answers of sends and of acknowledgement polls, applied to the queues;
//!   - [`expiry`]: batches that waited too long, sent to the next members or dropped;
//!   - [`settle`]: a job tracked until every part of it is safe (a proxy's incoming batch);
//! - [`destination`]: one destination's channel, queue, backoff and acknowledgement poller;
//! - [`server`]: a global's receiver, which merges into its shards;
//! - [`proxy`]: a proxy's receiver, which hands each stream to its router (a [`client::Forwarder`]);
//! - [`wire`]: metrics kept as their encoded bytes (what senders queue and a proxy routes without decoding);
//! - [`ack`]: the receiver's acknowledgement state: batches admitted once, safe when flushed (or routed and
//!   acknowledged), and the watermark senders poll.
//!
//! This module holds the wire types and the conversion between entries and forwarded metrics.

pub mod ack;
pub mod client;
pub mod destination;
pub mod discovery;
pub mod expiry;
pub mod outbox;
pub mod outcome;
pub mod proxy;
pub mod route;
pub mod server;
pub mod settle;
pub mod wire;

use tdigest::{Centroid, TDigest};

use crate::aggregate::histogram::{DIGEST_SIZE, MAX_DIGEST_CENTROIDS};
use crate::aggregate::set::{self, Set};
use crate::aggregate::{Entry, Histogram, Scope, SeriesKey, Stats, TagSet, Value};
use crate::ddsketch::DdSketch;
use crate::protocol::MetricKind;
use crate::telemetry::LimitedLog;

/// The sender's warnings ([`client`] and the files it is split into): one limiter for all of them.
static LOG: LimitedLog = LimitedLog::new("forward");

/// Receives, at each flush of a local instance, the entries to forward to the global tier (the flusher calls it;
/// the forwarding client implements it).
pub trait Forward: Send + Sync + 'static {
    /// Takes this interval's forwardable entries. Must not block: the work runs in its own task, bounded by the
    /// forwarder's own interval.
    fn forward(&self, entries: Vec<Entry>) -> tokio::task::JoinHandle<()>;
}

/// The generated protobuf types and gRPC service.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("harrier.forward.v1");
}

/// The same protocol with a metric's sketch (`histogram`, `set`) kept as its undecoded bytes: what senders
/// (locals and proxies) send, and what a proxy receives and routes without decoding a sketch.
pub mod view {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/view/harrier.forward.v1.rs"));
}

/// A full metric as its view: the sketch is encoded once, into the bytes the wire carries.
pub fn to_view(m: proto::Metric) -> view::Metric {
    use prost::Message;
    let value = m.value.map(|v| match v {
        proto::metric::Value::Counter(c) => view::metric::Value::Counter(c),
        proto::metric::Value::Gauge(g) => view::metric::Value::Gauge(g),
        proto::metric::Value::Histogram(h) => view::metric::Value::Histogram(h.encode_to_vec().into()),
        proto::metric::Value::Set(s) => view::metric::Value::Set(s.encode_to_vec().into()),
        proto::metric::Value::Sketch(s) => view::metric::Value::Sketch(s.encode_to_vec().into()),
    });
    view::Metric {
        name: m.name,
        tags: m.tags,
        r#type: m.r#type,
        scope: m.scope,
        value,
    }
}

/// Longest metric name accepted from another instance (a local accepts no line longer than its
/// `metric_max_length`, at most 16 MiB, but no honest name comes near this).
pub const MAX_NAME_BYTES: usize = 8192;
/// Longest tag, and most tags, accepted on one forwarded metric.
pub const MAX_TAG_BYTES: usize = 8192;
pub const MAX_TAGS: usize = 1024;

/// Most centroids accepted in one forwarded digest.
const MAX_CENTROIDS: usize = 100_000;

/// Why an imported metric was refused (the `reason` tag of `harrier.import.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("empty metric name")]
    EmptyName,
    #[error("unknown metric type")]
    UnknownType,
    #[error("veneurlocalonly metrics are never forwarded")]
    LocalScope,
    #[error("the value does not match the metric type")]
    TypeMismatch,
    #[error("a counter or gauge value is not finite")]
    NonFinite,
    #[error("a digest is malformed (non-finite mean, weight not > 0, bad statistics, or too many centroids)")]
    BadDigest,
    #[error("a set has another precision than 14, or malformed registers")]
    BadSet,
    #[error("a tag contains a comma (tags are split on commas on the wire, so none can hold one)")]
    BadTag,
    #[error("a distribution sketch is malformed: {0}")]
    BadSketch(&'static str),
    #[error("the name, a tag or the number of tags is over its limit (MAX_NAME_BYTES, MAX_TAG_BYTES, MAX_TAGS)")]
    TooLong,
}

impl ImportError {
    pub fn reason(self) -> &'static str {
        match self {
            ImportError::EmptyName => "empty_name",
            ImportError::UnknownType => "unknown_type",
            ImportError::LocalScope => "local_scope",
            ImportError::TypeMismatch => "type_mismatch",
            ImportError::NonFinite => "non_finite",
            ImportError::BadDigest => "bad_digest",
            ImportError::BadSet => "bad_set",
            ImportError::BadTag => "bad_tag",
            ImportError::BadSketch(_) => "bad_sketch",
            ImportError::TooLong => "too_long",
        }
    }
}

fn kind_to_proto(kind: MetricKind) -> proto::MetricType {
    match kind {
        MetricKind::Counter => proto::MetricType::Counter,
        MetricKind::Gauge => proto::MetricType::Gauge,
        MetricKind::Timer => proto::MetricType::Timer,
        MetricKind::Histogram => proto::MetricType::Histogram,
        MetricKind::Distribution => proto::MetricType::Distribution,
        MetricKind::Set => proto::MetricType::Set,
    }
}

fn kind_from_proto(t: i32) -> Option<MetricKind> {
    Some(match proto::MetricType::try_from(t).ok()? {
        proto::MetricType::Counter => MetricKind::Counter,
        proto::MetricType::Gauge => MetricKind::Gauge,
        proto::MetricType::Timer => MetricKind::Timer,
        proto::MetricType::Histogram => MetricKind::Histogram,
        proto::MetricType::Distribution => MetricKind::Distribution,
        proto::MetricType::Set => MetricKind::Set,
        proto::MetricType::Unspecified => return None,
    })
}

/// An entry as a forwarded message.
pub fn encode(entry: &mut Entry) -> proto::Metric {
    use proto::metric::Value as V;
    let value = match &mut entry.value {
        Value::Counter(v) => V::Counter(*v),
        Value::Gauge(v) => V::Gauge(*v),
        Value::Histogram(h) => {
            let reciprocal_sum = h.stats.reciprocal_sum;
            let d = h.digest();
            V::Histogram(proto::Histogram {
                centroids: d
                    .centroids()
                    .iter()
                    .map(|c| proto::Centroid {
                        mean: c.mean(),
                        weight: c.weight(),
                    })
                    .collect(),
                compression: DIGEST_SIZE as u32,
                min: d.min().unwrap_or(0.0),
                max: d.max().unwrap_or(0.0),
                count: d.count(),
                sum: d.sum(),
                reciprocal_sum,
                report_stats: entry.key.scope == Scope::Global,
            })
        }
        Value::Sketch(s) => {
            let (k, n) = s.to_wire();
            V::Sketch(proto::Sketch {
                k,
                n,
                count: s.count(),
                min: s.min(),
                max: s.max(),
                sum: s.sum(),
            })
        }
        Value::Set(s) => V::Set(proto::Set {
            precision: u32::from(set::PRECISION),
            sketch: Some(match s.as_ref() {
                Set::Sparse(hashes) => proto::set::Sketch::Sparse(proto::SparseHashes {
                    hashes: hashes.iter().copied().collect(),
                }),
                Set::Dense(_) => proto::set::Sketch::Registers(s.registers().unwrap_or_default()),
            }),
        }),
    };
    proto::Metric {
        name: entry.key.name.to_string(),
        tags: entry.key.tags.iter().map(str::to_string).collect(),
        r#type: kind_to_proto(entry.key.kind) as i32,
        scope: match entry.key.scope {
            Scope::Mixed => proto::Scope::Mixed,
            Scope::Local => proto::Scope::Local,
            Scope::Global => proto::Scope::Global,
        } as i32,
        value: Some(value),
    }
}

/// A forwarded message as an entry, refusing anything malformed.
pub fn decode(m: proto::Metric) -> Result<Entry, ImportError> {
    use proto::metric::Value as V;
    if m.name.is_empty() {
        return Err(ImportError::EmptyName);
    }
    if m.name.len() > MAX_NAME_BYTES || m.tags.len() > MAX_TAGS || m.tags.iter().any(|t| t.len() > MAX_TAG_BYTES) {
        return Err(ImportError::TooLong);
    }
    let kind = kind_from_proto(m.r#type).ok_or(ImportError::UnknownType)?;
    let scope = match proto::Scope::try_from(m.scope) {
        Ok(proto::Scope::Mixed) => Scope::Mixed,
        Ok(proto::Scope::Global) => Scope::Global,
        Ok(proto::Scope::Local) => return Err(ImportError::LocalScope),
        Err(_) => return Err(ImportError::UnknownType),
    };
    let value = match (kind, m.value) {
        (MetricKind::Counter, Some(V::Counter(v))) if v.is_finite() => Value::Counter(v),
        (MetricKind::Gauge, Some(V::Gauge(v))) if v.is_finite() => Value::Gauge(v),
        (MetricKind::Counter, Some(V::Counter(_))) | (MetricKind::Gauge, Some(V::Gauge(_))) => {
            return Err(ImportError::NonFinite)
        }
        (k, Some(V::Histogram(h))) if k.is_histogram() => Value::Histogram(Box::new(decode_histogram(h)?)),
        (MetricKind::Set, Some(V::Set(s))) => Value::Set(Box::new(decode_set(s)?)),
        (MetricKind::Distribution, Some(V::Sketch(s))) => Value::Sketch(Box::new(
            DdSketch::from_wire(&s.k, &s.n, s.count, s.min, s.max, s.sum).map_err(ImportError::BadSketch)?,
        )),
        _ => return Err(ImportError::TypeMismatch),
    };
    if m.tags.iter().any(|t| t.contains(',')) {
        return Err(ImportError::BadTag);
    }
    let key = SeriesKey::new(&m.name, kind, scope, TagSet::from_tags(m.tags));
    Ok(Entry {
        hash: key.hash(),
        key,
        value,
    })
}

fn decode_histogram(h: proto::Histogram) -> Result<Histogram, ImportError> {
    if h.centroids.len() > MAX_CENTROIDS {
        return Err(ImportError::BadDigest);
    }
    let mut centroids = Vec::with_capacity(h.centroids.len());
    let mut weight = 0.0;
    for c in &h.centroids {
        if !c.mean.is_finite() || !c.weight.is_finite() || c.weight <= 0.0 {
            return Err(ImportError::BadDigest);
        }
        weight += c.weight;
        centroids.push(Centroid::new(c.mean, c.weight));
    }
    // The sum only matters for stats the receiver reports; an overflowed sum must not cost the quantiles.
    let sum = if h.sum.is_finite() { h.sum } else { 0.0 };
    let stats_ok = [h.min, h.max, h.count, h.reciprocal_sum].iter().all(|v| v.is_finite());
    let digest = if centroids.is_empty() {
        TDigest::new_with_size(DIGEST_SIZE)
    } else {
        let consistent = stats_ok
            && weight.is_finite()
            && h.count > 0.0
            && h.min <= h.max
            && (weight - h.count).abs() <= 1e-9 * weight.max(h.count);
        if !consistent {
            return Err(ImportError::BadDigest);
        }
        TDigest::new(centroids, sum, h.count, Some(h.max), Some(h.min), MAX_DIGEST_CENTROIDS)
    };
    let stats = if h.report_stats && h.count > 0.0 {
        if !(stats_ok && h.sum.is_finite()) {
            return Err(ImportError::BadDigest);
        }
        Stats {
            min: h.min,
            max: h.max,
            count: h.count,
            sum: h.sum,
            reciprocal_sum: h.reciprocal_sum,
        }
    } else {
        Stats::default()
    };
    Ok(Histogram::from_parts(digest, stats))
}

fn decode_set(s: proto::Set) -> Result<Set, ImportError> {
    if s.precision != u32::from(set::PRECISION) {
        return Err(ImportError::BadSet);
    }
    match s.sketch {
        Some(proto::set::Sketch::Sparse(sparse)) => {
            let mut out = Set::default();
            for h in sparse.hashes {
                out.insert_hash(h);
            }
            Ok(out)
        }
        Some(proto::set::Sketch::Registers(r)) => Set::from_registers(&r).map_err(|_| ImportError::BadSet),
        None => Ok(Set::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{ExtendTags, KeyView, ShardState};
    use crate::protocol::{parse_line, Message};

    fn entries(lines: &str) -> Vec<Entry> {
        let extend = ExtendTags::default();
        let mut state = ShardState::default();
        for line in crate::protocol::lines(lines.as_bytes()) {
            if let Ok(Message::Metric(m)) = parse_line(line) {
                state.add_metric(&m, None, &extend).unwrap();
            }
        }
        state.take_interval().series
    }

    #[test]
    fn a_distribution_sketch_round_trips_exactly_and_a_malformed_one_is_refused() {
        let mut sketch = DdSketch::default();
        for v in 1..=5000 {
            sketch.insert(v as f64 * 0.01, 1 + v % 3);
        }
        let key = SeriesKey::new("d", MetricKind::Distribution, Scope::Mixed, TagSet::from_tags(["a:b"]));
        let mut entry = Entry {
            hash: key.hash(),
            key,
            value: Value::Sketch(Box::new(sketch.clone())),
        };
        let wire = encode(&mut entry);
        match decode(wire.clone()).unwrap().value {
            Value::Sketch(back) => assert_eq!(*back, sketch),
            other => panic!("{other:?}"),
        }
        let mut bad = wire;
        if let Some(proto::metric::Value::Sketch(s)) = &mut bad.value {
            s.count += 1;
        }
        assert!(matches!(decode(bad), Err(ImportError::BadSketch(_))));
    }

    #[test]
    fn every_value_kind_round_trips_through_the_wire_format() {
        let mut original =
            entries("c:2.5|c|#a\ng:7|g\nh:1|h|#veneurglobalonly\nh:3|h|#veneurglobalonly\nt:5|ms\nsmall:a|s\n");
        let mut big = entries(&(0..5000).map(|i| format!("big:m{i}|s\n")).collect::<String>());
        original.append(&mut big);
        for e in original.iter_mut() {
            let wire = encode(e);
            let back = decode(wire).unwrap();
            assert_eq!(back.key, e.key);
            assert_eq!(back.hash, e.hash);
            match (&mut e.value, back.value) {
                (Value::Counter(a), Value::Counter(b)) | (Value::Gauge(a), Value::Gauge(b)) => assert_eq!(*a, b),
                (Value::Histogram(a), Value::Histogram(mut b)) => {
                    assert_eq!(a.quantile(0.5), b.quantile(0.5));
                    if e.key.scope == Scope::Global {
                        assert_eq!(a.stats, b.stats);
                    } else {
                        assert!(b.stats.is_empty(), "mixed stats were reported by the sender");
                    }
                }
                (Value::Set(a), Value::Set(b)) => assert_eq!(a.estimate(), b.estimate()),
                _ => panic!("value kind changed"),
            }
        }
    }

    #[test]
    fn the_view_a_sender_sends_is_the_full_metric_on_the_wire() {
        use prost::Message;
        let mut original = entries("c:2.5|c|#a\ng:7|g\nh:1|h|#veneurglobalonly\nh:3|h|#veneurglobalonly\nsmall:a|s\n");
        assert_eq!(original.len(), 4);
        for e in original.iter_mut() {
            let full = encode(e);
            let view = to_view(full.clone());
            let wire = view.encode_to_vec();
            assert_eq!(wire, full.encode_to_vec(), "{}: same bytes", full.name);
            assert_eq!(proto::Metric::decode(wire.as_slice()).unwrap(), full);
            // And a proxy's decode + encode of the view keeps the bytes.
            assert_eq!(view::Metric::decode(wire.as_slice()).unwrap().encode_to_vec(), wire);
        }
    }

    #[test]
    fn malformed_imports_are_refused_by_reason() {
        use proto::metric::Value as V;
        let base = proto::Metric {
            name: "x".into(),
            tags: vec![],
            r#type: proto::MetricType::Counter as i32,
            scope: proto::Scope::Mixed as i32,
            value: Some(V::Counter(1.0)),
        };
        let with = |f: &dyn Fn(&mut proto::Metric)| {
            let mut m = base.clone();
            f(&mut m);
            decode(m).unwrap_err()
        };
        assert_eq!(with(&|m| m.name.clear()), ImportError::EmptyName);
        assert_eq!(with(&|m| m.r#type = 99), ImportError::UnknownType);
        assert_eq!(with(&|m| m.scope = proto::Scope::Local as i32), ImportError::LocalScope);
        assert_eq!(with(&|m| m.value = Some(V::Gauge(1.0))), ImportError::TypeMismatch);
        assert_eq!(with(&|m| m.value = None), ImportError::TypeMismatch);
        assert_eq!(with(&|m| m.value = Some(V::Counter(f64::NAN))), ImportError::NonFinite);
        assert_eq!(with(&|m| m.name = "n".repeat(MAX_NAME_BYTES + 1)), ImportError::TooLong);
        assert_eq!(
            with(&|m| m.tags = vec!["t:v".into(); MAX_TAGS + 1]),
            ImportError::TooLong
        );
        assert_eq!(
            with(&|m| m.tags = vec!["t".repeat(MAX_TAG_BYTES + 1)]),
            ImportError::TooLong
        );
        assert!(decode(proto::Metric {
            name: "n".repeat(MAX_NAME_BYTES),
            tags: vec!["t:v".into(); MAX_TAGS],
            ..base.clone()
        })
        .is_ok());
        let hist = |c: Vec<(f64, f64)>, count: f64| {
            with(&|m| {
                m.r#type = proto::MetricType::Timer as i32;
                m.value = Some(V::Histogram(proto::Histogram {
                    centroids: c
                        .iter()
                        .map(|&(mean, weight)| proto::Centroid { mean, weight })
                        .collect(),
                    compression: 200,
                    min: 1.0,
                    max: 2.0,
                    count,
                    sum: 3.0,
                    reciprocal_sum: 1.5,
                    report_stats: true,
                }))
            })
        };
        assert_eq!(hist(vec![(1.0, 0.0)], 0.0), ImportError::BadDigest);
        assert_eq!(hist(vec![(f64::INFINITY, 1.0)], 1.0), ImportError::BadDigest);
        assert_eq!(hist(vec![(1.0, 1.0), (2.0, 1.0)], 5.0), ImportError::BadDigest);
        // Regression: many tiny weights with a zero count made the tdigest crate panic on rebuild.
        assert_eq!(hist(vec![(0.0, 1e-12); 201], 0.0), ImportError::BadDigest);
        let set = |precision: u32, regs: Vec<u8>| {
            with(&|m| {
                m.r#type = proto::MetricType::Set as i32;
                m.value = Some(V::Set(proto::Set {
                    precision,
                    sketch: Some(proto::set::Sketch::Registers(regs.clone())),
                }))
            })
        };
        assert_eq!(set(12, vec![0; 4096]), ImportError::BadSet);
        assert_eq!(set(14, vec![0; 100]), ImportError::BadSet);
        assert_eq!(set(14, vec![99; 16384]), ImportError::BadSet);
    }

    #[test]
    fn an_imported_series_has_the_hash_of_the_same_series_received_directly() {
        let extend = ExtendTags::default();
        let line = "lat:1|ms|#b,a";
        let Ok(Message::Metric(m)) = parse_line(line.as_bytes()) else {
            panic!()
        };
        let direct = KeyView::new(m.name, m.kind, m.tags, &extend).hash;
        let mut e = entries(line).pop().unwrap();
        assert_eq!(decode(encode(&mut e)).unwrap().hash, direct);
    }
}
