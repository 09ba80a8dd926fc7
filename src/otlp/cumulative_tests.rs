use super::*;

fn explicit(counts: &[u64], min: f64, max: f64, sum: f64) -> Hist {
    Hist {
        count: counts.iter().sum(),
        sum: Some(sum),
        min: Some(min),
        max: Some(max),
        floor: None,
        ceiling: None,
        shape: Shape::Explicit {
            bounds: vec![10.0, 100.0],
            counts: counts.to_vec(),
        },
    }
}

#[test]
fn a_stream_started_after_the_server_counts_its_first_point_whole_then_differences() {
    let mut s = Streams::new(1_000);
    let now = Instant::now();
    assert_eq!(s.number(1, 2_000, 5.0, now), Added::Delta(5.0));
    assert_eq!(s.number(1, 2_000, 12.0, now), Added::Delta(7.0));
    assert_eq!(s.number(1, 2_000, 12.0, now), Added::Delta(0.0));
}

#[test]
fn a_stream_started_before_the_server_only_primes() {
    let mut s = Streams::new(1_000);
    let now = Instant::now();
    assert_eq!(s.number(1, 500, 40.0, now), Added::Primed);
    assert_eq!(s.number(1, 500, 43.0, now), Added::Delta(3.0));
    // No start time at all: the same.
    assert_eq!(s.number(2, 0, 9.0, now), Added::Primed);
}

#[test]
fn a_lower_value_or_a_new_start_time_is_a_reset_that_counts_from_zero() {
    let mut s = Streams::new(1_000);
    let now = Instant::now();
    s.number(1, 2_000, 50.0, now);
    assert_eq!(s.number(1, 2_000, 4.0, now), Added::Delta(4.0));
    assert_eq!(s.number(1, 9_000, 6.0, now), Added::Delta(6.0));
}

#[test]
fn streams_not_seen_for_the_expiry_are_forgotten() {
    let mut s = Streams::new(1_000);
    let now = Instant::now();
    s.number(1, 500, 1.0, now);
    s.number(2, 500, 1.0, now);
    let later = now + EXPIRY + Duration::from_secs(61);
    assert_eq!(
        s.number(2, 500, 3.0, later),
        Added::Primed,
        "forgotten, so it primes again"
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn explicit_histograms_subtract_bucket_by_bucket_and_keep_only_new_extremes() {
    let mut s = Streams::new(1_000);
    let now = Instant::now();
    let first = explicit(&[1, 2, 0], 5.0, 50.0, 105.0);
    assert_eq!(s.hist(7, 2_000, &first, now), Added::Delta(first.clone()));
    let second = explicit(&[1, 5, 1], 5.0, 300.0, 105.0 + 3.0 * 20.0 + 300.0);
    let Added::Delta(d) = s.hist(7, 2_000, &second, now) else {
        panic!("a delta")
    };
    assert_eq!(d.count, 4);
    assert_eq!(d.sum, Some(360.0));
    assert_eq!(
        d.min, None,
        "the cumulative minimum did not move: the delta's is unknown"
    );
    assert_eq!(d.max, Some(300.0));
    assert_eq!(
        d.shape,
        Shape::Explicit {
            bounds: vec![10.0, 100.0],
            counts: vec![0, 3, 1]
        }
    );
    // Spans: the unbounded last bucket ends at the known maximum.
    let spans = d.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!((spans[1].lo, spans[1].hi, spans[1].count), (100.0, 300.0, 1));
}

#[test]
fn exponential_histograms_subtract_across_a_lowered_scale() {
    let before = Hist {
        count: 3,
        sum: Some(7.0),
        min: Some(1.5),
        max: Some(3.0),
        floor: None,
        ceiling: None,
        shape: Shape::Exponential {
            scale: 1,
            zero: 0,
            positive: (1, vec![1, 1, 1]),
            negative: (0, vec![]),
        },
    };
    // The scale went from 1 to 0: indexes 1, 2, 3 at scale 1 are 0, 1, 1 at scale 0.
    let after = Hist {
        count: 5,
        sum: Some(15.0),
        min: Some(1.5),
        max: Some(5.0),
        floor: None,
        ceiling: None,
        shape: Shape::Exponential {
            scale: 0,
            zero: 1,
            positive: (0, vec![1, 3]),
            negative: (0, vec![]),
        },
    };
    let d = after.since(&before).expect("a continuation");
    assert_eq!(d.count, 2);
    assert_eq!(
        d.shape,
        Shape::Exponential {
            scale: 0,
            zero: 1,
            positive: (0, vec![0, 1]),
            negative: (0, vec![])
        }
    );
    // A raised scale is not a continuation.
    assert_eq!(before.since(&after), None);
}

#[test]
fn exponential_spans_cover_base_powers_and_zero() {
    let h = Hist {
        count: 4,
        sum: None,
        min: None,
        max: None,
        floor: None,
        ceiling: None,
        shape: Shape::Exponential {
            scale: 0,
            zero: 1,
            positive: (1, vec![2]),
            negative: (0, vec![1]),
        },
    };
    let spans: Vec<(f64, f64, u64)> = h.spans().iter().map(|s| (s.lo, s.hi, s.count)).collect();
    assert_eq!(spans, vec![(-2.0, -1.0, 1), (0.0, 0.0, 1), (2.0, 4.0, 2)]);
}
