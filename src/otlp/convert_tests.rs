use super::*;
use crate::otlp::proto::common::v1::{any_value, AnyValue, KeyValue};
use crate::otlp::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, ExponentialHistogram, Gauge, Histogram as OtlpHistogram,
    ResourceMetrics, ScopeMetrics, Sum,
};
use crate::otlp::proto::resource::v1::Resource;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("host.name", "web-1"), kv("service.instance.id", "abc")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(v: f64, start: u64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(name: &str, temporality: AggregationTemporality, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn described(e: &Entry) -> String {
    let v = match &e.value {
        Value::Counter(v) => format!("c={v}"),
        Value::Gauge(v) => format!("g={v}"),
        Value::Histogram(h) => format!(
            "h count={} sum={} min={} max={}",
            h.stats.count, h.stats.sum, h.stats.min, h.stats.max
        ),
        Value::Sketch(s) => format!("d count={} sum={}", s.count(), s.sum()),
        Value::Set(_) => "set".into(),
    };
    format!("{}#{} {v}", e.key.name, e.key.tags.joined())
}

fn started_now() -> u64 {
    super::super::cumulative::unix_nanos(std::time::SystemTime::now()) + 1_000_000_000
}

#[test]
fn sums_gauges_and_up_down_counters_become_counters_and_gauges_with_host_and_attribute_tags() {
    let c = Converter::new(Options::default());
    let start = started_now();
    let out = c.convert(&request(vec![
        sum(
            "deltas",
            AggregationTemporality::Delta,
            true,
            vec![number(3.0, 0, vec![kv("route", "a")])],
        ),
        sum(
            "totals",
            AggregationTemporality::Cumulative,
            true,
            vec![number(10.0, start, vec![])],
        ),
        sum(
            "level",
            AggregationTemporality::Cumulative,
            false,
            vec![number(-4.0, start, vec![])],
        ),
        Metric {
            name: "temp".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![number(21.5, 0, vec![])],
            })),
            ..Default::default()
        },
    ]));
    let got: Vec<String> = out.entries.iter().map(described).collect();
    assert_eq!(
        got,
        [
            "deltas#host:web-1,route:a c=3",
            "totals#host:web-1 c=10",
            "level#host:web-1 g=-4",
            "temp#host:web-1 g=21.5",
        ]
    );
    assert_eq!(out.points, [3, 1, 0, 0, 0]);
    // The next cumulative point adds the difference.
    let out = c.convert(&request(vec![sum(
        "totals",
        AggregationTemporality::Cumulative,
        true,
        vec![number(25.0, start, vec![])],
    )]));
    assert_eq!(described(&out.entries[0]), "totals#host:web-1 c=15");
}

#[test]
fn a_bad_point_is_rejected_by_reason_and_the_rest_of_the_request_is_still_taken() {
    let c = Converter::new(Options::default());
    let out = c.convert(&request(vec![
        sum(
            "bad",
            AggregationTemporality::Delta,
            true,
            vec![number(f64::NAN, 0, vec![])],
        ),
        sum(
            "bad",
            AggregationTemporality::Unspecified,
            true,
            vec![number(1.0, 0, vec![])],
        ),
        sum(
            "good",
            AggregationTemporality::Delta,
            true,
            vec![number(1.0, 0, vec![])],
        ),
    ]));
    assert_eq!(out.entries.len(), 1);
    assert_eq!(out.rejected, [("not_finite", 1), ("temporality_unspecified", 1)]);
    assert_eq!(out.rejected_points(), 2);
    assert!(out.message.contains("not_finite"), "{}", out.message);
}

#[test]
fn an_explicit_histogram_keeps_exact_count_sum_min_max_and_a_digest_within_its_buckets() {
    let c = Converter::new(Options::default());
    let out = c.convert(&request(vec![Metric {
        name: "latency".into(),
        data: Some(Data::Histogram(OtlpHistogram {
            data_points: vec![HistogramDataPoint {
                count: 100,
                sum: Some(2_345.5),
                min: Some(1.0),
                max: Some(90.0),
                explicit_bounds: vec![10.0, 50.0],
                bucket_counts: vec![60, 30, 10],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }]));
    assert_eq!(out.entries.len(), 1);
    let e = &out.entries[0];
    assert_eq!(e.key.kind, MetricKind::Distribution);
    assert_eq!(described(e), "latency#host:web-1 h count=100 sum=2345.5 min=1 max=90");
    let Value::Histogram(mut h) = e.value.clone() else {
        panic!()
    };
    let p50 = h.quantile(0.5).unwrap();
    assert!((1.0..=10.0).contains(&p50), "p50 {p50} in the first bucket");
    let p95 = h.quantile(0.95).unwrap();
    assert!(
        (50.0..=90.0).contains(&p95),
        "p95 {p95} in the last bucket, clamped to max"
    );
}

#[test]
fn a_histogram_whose_buckets_do_not_add_up_is_rejected() {
    let c = Converter::new(Options::default());
    let out = c.convert(&request(vec![Metric {
        name: "h".into(),
        data: Some(Data::Histogram(OtlpHistogram {
            data_points: vec![HistogramDataPoint {
                count: 7,
                explicit_bounds: vec![1.0],
                bucket_counts: vec![1, 2],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }]));
    assert!(out.entries.is_empty());
    assert_eq!(out.rejected, [("buckets_do_not_match_count", 1)]);
}

#[test]
fn an_exponential_histogram_becomes_a_sketch_under_distributions_sketch() {
    let c = Converter::new(Options {
        sketches: true,
        ..Options::default()
    });
    let out = c.convert(&request(vec![Metric {
        name: "size".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                count: 6,
                sum: Some(20.0),
                scale: 0,
                zero_count: 1,
                positive: Some(Buckets {
                    offset: 1,
                    bucket_counts: vec![3, 2],
                }),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }]));
    assert_eq!(out.points, [0, 0, 0, 1, 0]);
    assert_eq!(described(&out.entries[0]), "size#host:web-1 d count=6 sum=20");
}

#[test]
fn extend_tags_and_scope_tags_apply_as_they_do_to_lines() {
    let c = Converter::new(Options {
        extend: Arc::new(ExtendTags::new(&["host:override".to_string(), "dc:x".to_string()])),
        ..Options::default()
    });
    let out = c.convert(&request(vec![sum(
        "n",
        AggregationTemporality::Delta,
        true,
        vec![number(1.0, 0, vec![kv("veneurglobalonly", "")])],
    )]));
    let e = &out.entries[0];
    assert_eq!(e.key.tags.joined(), "dc:x,host:override,veneurglobalonly:");
    // An attribute `veneurglobalonly` with a value is a tag `veneurglobalonly:`, not the scope tag.
    assert_eq!(e.key.scope, Scope::Mixed);
}
