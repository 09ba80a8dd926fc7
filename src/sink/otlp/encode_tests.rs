use std::time::Duration;

use super::*;
use crate::exponential::{self, Knots};
use crate::model::{HistogramData, Suffix};
use crate::otlp::proto::metrics::v1::metric::Data;

fn series(name: &str, suffix: &str, tags: &[&str], value: f64, kind: SeriesKind) -> Series {
    Series {
        name: name.into(),
        suffix: Suffix::intern(suffix).unwrap(),
        tags: TagSet::from_tags(tags.iter().copied()),
        value,
        kind,
        timestamp: 1_700_000_010,
    }
}

fn flush(series: Vec<Series>, histograms: Vec<HistogramSeries>) -> Flush {
    Flush {
        timestamp: 1_700_000_010,
        interval: Duration::from_secs(10),
        hostname: "web-1".to_string(),
        series,
        histograms,
        ..Flush::default()
    }
}

fn opts(temporality: Temporality) -> Options {
    Options {
        temporality,
        histogram_format: HistogramFormat::Exponential,
        max_buckets: 160,
        counter_expiry: Duration::from_secs(30),
        max_points: 10_000,
    }
}

fn histogram(name: &str, samples: &[f64]) -> HistogramSeries {
    let knots = exponential::sample_knots(samples);
    HistogramSeries {
        name: name.into(),
        tags: TagSet::from_tags(["route:/a"]),
        timestamp: 1_700_000_010,
        data: HistogramData {
            count: samples.len() as f64,
            sum: samples.iter().sum(),
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            quantiles: vec![(0.5, 2.0)],
            buckets: exponential::build(Knots(&knots), samples.len() as u64, 160),
            zero_threshold: 0.0,
        },
    }
}

/// (host, metric name, data) of every metric of the requests.
fn metrics(requests: &[ExportMetricsServiceRequest]) -> Vec<(String, String, Data)> {
    let mut out = Vec::new();
    for r in requests {
        for rm in &r.resource_metrics {
            let host = rm
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|a| a.key == "host.name");
            let host = match host.and_then(|a| a.value.clone()).and_then(|v| v.value) {
                Some(any_value::Value::StringValue(h)) => h,
                _ => String::new(),
            };
            for m in &rm.scope_metrics[0].metrics {
                out.push((host.clone(), m.name.clone(), m.data.clone().unwrap()));
            }
        }
    }
    out
}

#[test]
fn tags_become_attributes_with_repeated_keys_joined_and_no_host() {
    let kv = attributes(&TagSet::from_tags([
        "env:b",
        "env:a",
        "canary",
        "host:x",
        "url:http://a:1",
    ]));
    let pairs: Vec<(String, String)> = kv
        .iter()
        .map(|kv| match kv.value.clone().and_then(|v| v.value) {
            Some(any_value::Value::StringValue(v)) => (kv.key.clone(), v),
            other => panic!("{other:?}"),
        })
        .collect();
    let own = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        pairs,
        vec![own("canary", ""), own("env", "a,b"), own("url", "http://a:1")]
    );
}

#[test]
fn points_are_grouped_by_host_and_a_whole_histograms_own_series_are_left_out() {
    let f = flush(
        vec![
            series("deploys", "", &["host:web-2"], 3.0, SeriesKind::Counter),
            series("queue", "", &[], 5.0, SeriesKind::Gauge),
            series("lat", ".max", &["route:/a"], 3.0, SeriesKind::Gauge),
            series("lat", ".count", &["route:/a"], 3.0, SeriesKind::SampleCount),
            // Another series of the same name but other tags has no whole histogram: it is sent.
            series("lat", ".max", &["route:/b"], 9.0, SeriesKind::Gauge),
        ],
        vec![histogram("lat", &[1.0, 2.0, 3.0])],
    );
    let requests = encode(&f, &opts(Temporality::Delta), &mut Totals::default());
    let got: Vec<(String, String, &'static str)> = metrics(&requests)
        .into_iter()
        .map(|(h, n, d)| {
            let kind = match d {
                Data::Sum(s) => {
                    assert!(s.is_monotonic);
                    assert_eq!(s.aggregation_temporality, AggregationTemporality::Delta as i32);
                    assert_eq!(s.data_points[0].start_time_unix_nano, 1_700_000_000 * 1_000_000_000);
                    assert_eq!(s.data_points[0].time_unix_nano, 1_700_000_010 * 1_000_000_000);
                    "sum"
                }
                Data::Gauge(_) => "gauge",
                Data::ExponentialHistogram(e) => {
                    let p = &e.data_points[0];
                    assert_eq!((p.count, p.sum, p.min, p.max), (3, Some(6.0), Some(1.0), Some(3.0)));
                    "exponential"
                }
                other => panic!("{other:?}"),
            };
            (h, n, kind)
        })
        .collect();
    let own = |h: &str, n: &str, k| (h.to_string(), n.to_string(), k);
    assert_eq!(
        got,
        vec![
            own("web-2", "deploys", "sum"),
            own("web-1", "queue", "gauge"),
            own("web-1", "lat.max", "gauge"),
            own("web-1", "lat", "exponential"),
        ]
    );
}

#[test]
fn cumulative_counters_keep_running_totals_from_a_fixed_start_and_expire_when_idle() {
    let mut totals = Totals::default();
    let o = opts(Temporality::Cumulative);
    let mut at = |ts: i64, value: f64| {
        let mut s = series("c", "", &[], value, SeriesKind::Counter);
        s.timestamp = ts;
        let mut f = flush(vec![s], vec![]);
        f.timestamp = ts;
        let requests = encode(&f, &o, &mut totals);
        match metrics(&requests).remove(0).2 {
            Data::Sum(s) => {
                assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                let p = &s.data_points[0];
                let value = match p.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    other => panic!("{other:?}"),
                };
                (value, p.start_time_unix_nano / 1_000_000_000)
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(at(100, 2.0), (2.0, 90));
    assert_eq!(at(110, 3.0), (5.0, 90));
    // Idle for longer than the 30 s expiry: it starts again, with a new start time.
    assert_eq!(at(200, 4.0), (4.0, 190));
}

#[test]
fn a_flush_is_cut_into_requests_of_at_most_max_points() {
    let all: Vec<Series> = (0..25)
        .map(|i| series(&format!("g.{i}"), "", &[], f64::from(i), SeriesKind::Gauge))
        .collect();
    let mut o = opts(Temporality::Delta);
    o.max_points = 10;
    let requests = encode(&flush(all, vec![]), &o, &mut Totals::default());
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| metrics(std::slice::from_ref(r)).len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
}

#[test]
fn the_summary_format_sends_count_sum_and_the_configured_quantiles() {
    let mut o = opts(Temporality::Delta);
    o.histogram_format = HistogramFormat::Summary;
    let requests = encode(
        &flush(vec![], vec![histogram("lat", &[1.0, 2.0, 3.0])]),
        &o,
        &mut Totals::default(),
    );
    match metrics(&requests).remove(0).2 {
        Data::Summary(s) => {
            let p = &s.data_points[0];
            assert_eq!((p.count, p.sum), (3, 6.0));
            let q: Vec<(f64, f64)> = p.quantile_values.iter().map(|v| (v.quantile, v.value)).collect();
            assert_eq!(q, vec![(0.5, 2.0)]);
        }
        other => panic!("{other:?}"),
    }
}
