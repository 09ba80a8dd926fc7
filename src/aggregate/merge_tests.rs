//! Tests of [`super`]: the workers' intervals merged into one.

use super::*;
use crate::aggregate::{ExtendTags, ShardState};
use crate::protocol::{parse_line, Message};

fn feed(state: &mut ShardState, lines: &[String]) {
    let extend = ExtendTags::default();
    for line in lines {
        match parse_line(line.as_bytes()) {
            Ok(Message::Metric(m)) => state.add_metric(&m, None, &extend).unwrap(),
            Ok(other) => state.add_message(other, &extend, 1).unwrap(),
            Err(e) => panic!("bad test line {line}: {e}"),
        }
    }
}

/// The series of an interval by name and tags, with their values as numbers (histograms: count, min, max, sum,
/// median; sets: the estimate; sketches: count and sum).
fn by_key(mut interval: Interval) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = interval
        .series
        .iter_mut()
        .map(|e| {
            let v = match &mut e.value {
                Value::Counter(v) | Value::Gauge(v) => vec![*v],
                Value::Histogram(h) => {
                    let s = h.stats;
                    vec![s.count, s.min, s.max, s.sum, h.quantile(0.5).unwrap_or(f64::NAN)]
                }
                Value::Set(s) => vec![s.estimate()],
                Value::Sketch(s) => vec![s.count() as f64, s.sum()],
            };
            (format!("{}|{}", e.key.name, e.key.tags.joined()), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn lines() -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..3000u32 {
        let route = i % 7;
        v.push(format!("req:1|c|#route:{route}"));
        v.push(format!("lat:{}|ms|#route:{route}", i % 101));
        v.push(format!("users:u{}|s|#route:{route}", i % 500));
        v.push(format!("size:{}|d|#route:{route}", i % 37));
        if route == 0 {
            v.push(format!("only.some:{i}|c|@0.5|#w:{}", i % 3));
        }
    }
    v
}

#[test]
fn intervals_of_workers_that_split_the_lines_merge_into_the_interval_of_one_worker_that_got_them_all() {
    let all = lines();
    let mut one = ShardState::default().sketching(true);
    feed(&mut one, &all);
    let mut parts: Vec<ShardState> = (0..3).map(|_| ShardState::default().sketching(true)).collect();
    for (i, chunk) in all.chunks(97).enumerate() {
        feed(&mut parts[i % 3], chunk);
    }
    let expected = one.take_interval();
    let expected_histograms = expected.histograms;
    let merged = merge_intervals(parts.iter_mut().map(|p| p.take_interval()).collect()).unwrap();
    assert_eq!(merged.histograms, expected_histograms);
    let (got, want) = (by_key(merged), by_key(expected));
    assert_eq!(got.len(), want.len(), "one series per key after the merge");
    for ((gk, gv), (wk, wv)) in got.iter().zip(&want) {
        assert_eq!(gk, wk);
        if gk.starts_with("lat|") {
            // Exact statistics add up exactly; the merged digest's median stays within a sample of the truth.
            assert_eq!(gv[..4], wv[..4], "{gk}");
            assert!((gv[4] - wv[4]).abs() <= 2.0, "{gk}: median {} vs {}", gv[4], wv[4]);
        } else {
            assert_eq!(gv, wv, "{gk}");
        }
    }
}

#[test]
fn a_gauge_sent_to_two_workers_is_one_series_with_one_of_their_values_and_a_check_keeps_its_latest_run() {
    let mut a = ShardState::default();
    let mut b = ShardState::default();
    feed(&mut a, &["temp:20|g|#room:1".into(), "other:1|c".into()]);
    feed(&mut b, &["temp:30|g|#room:1".into()]);
    let extend = ExtendTags::default();
    for (state, ts) in [(&mut a, 100), (&mut b, 200)] {
        let line = format!("_sc|db|1|d:{ts}|#room:1|m:run {ts}");
        let Ok(msg) = parse_line(line.as_bytes()) else {
            panic!("bad check line")
        };
        state.add_message(msg, &extend, ts).unwrap();
    }
    let merged = merge_intervals(vec![a.take_interval(), b.take_interval()]).unwrap();
    assert_eq!(merged.checks.len(), 1);
    assert_eq!(merged.checks[0].timestamp, 200);
    let series = by_key(merged);
    assert_eq!(series.len(), 2);
    let temp = &series.iter().find(|(k, _)| k.starts_with("temp|")).unwrap().1;
    assert!(temp == &vec![20.0] || temp == &vec![30.0], "{temp:?}");
}

#[test]
fn one_interval_with_anything_in_it_is_returned_as_it_is_and_none_means_nothing_to_report() {
    assert!(merge_intervals(vec![Interval::default(), Interval::default()]).is_none());
    let mut a = ShardState::default();
    feed(&mut a, &["x:1|c".into()]);
    let merged = merge_intervals(vec![Interval::default(), a.take_interval()]).unwrap();
    assert_eq!(by_key(merged), vec![("x|".to_string(), vec![1.0])]);
}
