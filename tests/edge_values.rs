//! Every value the parser accepts survives the whole path to the global: a local's aggregation (the real parser
//! and shard), its output and forward encoding (protobuf bytes), the global's validation and merge, and the
//! global's output. Property tests over the values that break arithmetic: 0 and -0, negatives, subnormals, the
//! extremes of f64, sample rates near 0 and 1, and mixes of them in one series.

use harrier::aggregate::{emit, EmitConfig, Entry, ExtendTags, ShardState, Value};
use harrier::config::Aggregate;
use harrier::forward::{self, proto};
use harrier::protocol::{parse_line, Message, MIN_SAMPLE_RATE};
use harrier::sink::{Flush, Series};
use proptest::prelude::*;
use prost::Message as _;

const AGGREGATES: [Aggregate; 6] = [
    Aggregate::Min,
    Aggregate::Max,
    Aggregate::Count,
    Aggregate::Sum,
    Aggregate::Avg,
    Aggregate::Hmean,
];
const PERCENTILES: [f64; 3] = [0.5, 0.9, 0.99];

fn edge_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(-f64::MAX),
        Just(1e308),
        Just(-1e308),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        Just(5e-324),
        Just(-5e-324),
        // Subnormals.
        (1u64..(1 << 52)).prop_map(f64::from_bits),
        (-1e6..1e6f64),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

fn sample_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(0.999_999),
        Just(MIN_SAMPLE_RATE),
        Just(1e-6),
        (MIN_SAMPLE_RATE..1.0),
    ]
}

/// Samples per host: (value, sample rate).
fn hosts() -> impl Strategy<Value = Vec<Vec<(f64, f64)>>> {
    prop::collection::vec(prop::collection::vec((edge_value(), sample_rate()), 1..40), 1..4)
}

/// A line as a client writes it: Rust's shortest round-trip formatting (`5e-324`, `-0`, `1.7976931348623157e308`).
fn line(name: &str, value: f64, kind: &str, rate: f64, tags: &str) -> String {
    if rate == 1.0 {
        format!("{name}:{value}|{kind}{tags}")
    } else {
        format!("{name}:{value}|{kind}|@{rate}{tags}")
    }
}

/// A local's interval: every line parsed and aggregated, then emitted as a local does (output and forwards).
fn local(lines: &[String]) -> (Vec<Series>, Vec<Entry>) {
    let mut shard = ShardState::default();
    let extend = ExtendTags::default();
    for l in lines {
        match parse_line(l.as_bytes()) {
            Ok(Message::Metric(m)) => shard.add_metric(&m, None, &extend).expect("aggregated"),
            other => panic!("the parser refused {l:?}: {other:?}"),
        }
    }
    let mut out = Flush::default();
    let mut forwards = Vec::new();
    let cfg = EmitConfig::new(true, &AGGREGATES, &PERCENTILES);
    emit(shard.take_interval(), &cfg, 1, &mut out, &mut forwards);
    (out.series, forwards)
}

/// The global's interval from what the locals forwarded, each entry through its protobuf bytes and the global's
/// validation (which must accept every one).
fn global(forwards: Vec<Vec<Entry>>) -> (Vec<Series>, Vec<Entry>) {
    let mut shard = ShardState::default();
    for host in forwards {
        let decoded = host
            .into_iter()
            .map(|mut e| {
                let bytes = forward::encode(&mut e).encode_to_vec();
                let m = proto::Metric::decode(bytes.as_slice()).expect("decodes");
                forward::decode(m).unwrap_or_else(|err| panic!("the global refused {}: {err}", e.key.name))
            })
            .collect();
        shard.import(decoded);
    }
    let interval = shard.take_interval();
    let merged = interval
        .series
        .iter()
        .map(|e| Entry {
            hash: e.hash,
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect();
    let mut out = Flush::default();
    let cfg = EmitConfig::new(false, &AGGREGATES, &PERCENTILES);
    emit(interval, &cfg, 1, &mut out, &mut Vec::new());
    (out.series, merged)
}

fn value_of(series: &[Series], name: &str) -> Option<f64> {
    series
        .iter()
        .find(|s| s.full_name().to_string() == name)
        .map(|s| s.value)
}

/// Equal up to the rounding of summing the same weights in another order.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// `a + b` saturated at ±f64::MAX, the documented rule for sums.
fn sat(a: f64, b: f64) -> f64 {
    (a + b).clamp(-f64::MAX, f64::MAX)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_timer_sample_the_parser_accepts_is_counted_at_the_global_with_exact_statistics(hosts in hosts()) {
        // veneurglobalonly: the global reports the statistics, from the locals' exact stats merged.
        let tags = "|#veneurglobalonly";
        let mut forwards = Vec::new();
        let (mut count, mut sum) = (0.0, 0.0);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut has_zero = false;
        for samples in &hosts {
            let lines: Vec<String> = samples.iter().map(|&(v, r)| line("edge.t", v, "ms", r, tags)).collect();
            let (out, fwd) = local(&lines);
            prop_assert!(out.is_empty(), "a global-only timer is all reported by the global: {out:?}");
            prop_assert_eq!(fwd.len(), 1);
            let (mut host_count, mut host_sum) = (0.0, 0.0);
            for &(v, r) in samples {
                let w = 1.0 / r;
                host_count += w;
                host_sum = sat(host_sum, v * w);
                min = min.min(v);
                max = max.max(v);
                has_zero |= v == 0.0 || (w / v).is_infinite();
            }
            count += host_count;
            sum = sat(sum, host_sum);
            forwards.push(fwd);
        }
        let (out, merged) = global(forwards);
        let Value::Histogram(h) = &merged[0].value else { panic!("a timer merges into a histogram") };
        let mut h = h.clone();
        // The digest sums its centroids' weights, grouped differently from the samples: equal up to rounding.
        let weight = h.digest().count();
        prop_assert!(close(weight, count), "the digest holds {weight} of {count}");
        prop_assert_eq!(value_of(&out, "edge.t.count"), Some(count));
        prop_assert_eq!(value_of(&out, "edge.t.min"), Some(min));
        prop_assert_eq!(value_of(&out, "edge.t.max"), Some(max));
        prop_assert_eq!(value_of(&out, "edge.t.sum"), Some(sum));
        if has_zero {
            prop_assert_eq!(value_of(&out, "edge.t.hmean"), Some(0.0));
        }
        for suffix in ["50percentile", "90percentile", "99percentile"] {
            let p = value_of(&out, &format!("edge.t.{suffix}"));
            let p = p.unwrap_or_else(|| panic!("{suffix} missing from {out:?}"));
            prop_assert!(p.is_finite() && p >= min && p <= max, "{suffix} {p} outside [{min}, {max}]");
        }
        for s in &out {
            prop_assert!(s.value.is_finite(), "{} is {}", s.full_name(), s.value);
        }
    }

    #[test]
    fn a_mixed_timer_keeps_its_local_statistics_and_its_whole_digest_reaches_the_global(hosts in hosts()) {
        let mut forwards = Vec::new();
        let mut total = 0.0;
        for samples in &hosts {
            let lines: Vec<String> = samples.iter().map(|&(v, r)| line("edge.m", v, "ms", r, "")).collect();
            let (out, fwd) = local(&lines);
            let count: f64 = samples.iter().map(|&(_, r)| 1.0 / r).sum();
            let min = samples.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            prop_assert_eq!(value_of(&out, "edge.m.count"), Some(count));
            prop_assert_eq!(value_of(&out, "edge.m.min"), Some(min));
            total += count;
            forwards.push(fwd);
        }
        let (out, merged) = global(forwards);
        let Value::Histogram(h) = &merged[0].value else { panic!("a timer merges into a histogram") };
        let weight = h.clone().digest().count();
        prop_assert!(close(weight, total), "the digest holds {weight} of {total}");
        prop_assert!(value_of(&out, "edge.m.99percentile").is_some_and(f64::is_finite));
    }

    #[test]
    fn counters_and_gauges_up_to_the_largest_double_stay_finite_through_the_global(
        hosts in prop::collection::vec(prop::collection::vec((edge_value(), sample_rate()), 1..20), 1..4)
    ) {
        let tags = "|#veneurglobalonly";
        let mut forwards = Vec::new();
        let mut counter = 0.0;
        let mut gauge = None;
        for samples in &hosts {
            let mut lines = Vec::new();
            let mut host_counter = 0.0;
            for &(v, r) in samples {
                lines.push(line("edge.c", v, "c", r, tags));
                lines.push(line("edge.g", v, "g", 1.0, tags));
                host_counter = sat(host_counter, v / r);
                gauge = Some(v);
            }
            counter = sat(counter, host_counter);
            let (out, fwd) = local(&lines);
            prop_assert!(out.is_empty());
            prop_assert_eq!(fwd.len(), 2, "both series are forwarded, however large their values");
            forwards.push(fwd);
        }
        let (out, _) = global(forwards);
        prop_assert_eq!(value_of(&out, "edge.c"), Some(counter));
        prop_assert_eq!(value_of(&out, "edge.g"), gauge);
    }
}

#[test]
fn a_counter_that_overflows_saturates_at_the_largest_double_and_still_reaches_the_global() {
    let lines = [
        line("big.c", 1e308, "c", 1.0, "|#veneurglobalonly"),
        line("big.c", 1e308, "c", 0.5, "|#veneurglobalonly"),
    ];
    let (_, fwd) = local(&lines);
    let (out, _) = global(vec![fwd]);
    assert_eq!(value_of(&out, "big.c"), Some(f64::MAX));
}
