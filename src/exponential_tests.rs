use super::*;

/// Counts by bucket index.
type ByIndex = Vec<(i32, u64)>;

/// The exact buckets of `samples` at `scale`, one by one: (zero count, positive and negative counts by index).
fn by_hand(samples: &[f64], scale: i32) -> (u64, ByIndex, ByIndex) {
    let mut zero = 0;
    let mut pos = std::collections::BTreeMap::new();
    let mut neg = std::collections::BTreeMap::new();
    for &v in samples {
        if v == 0.0 {
            zero += 1;
        } else if v > 0.0 {
            *pos.entry(index(v, scale)).or_insert(0u64) += 1;
        } else {
            *neg.entry(index(-v, scale)).or_insert(0u64) += 1;
        }
    }
    (zero, pos.into_iter().collect(), neg.into_iter().collect())
}

fn nonzero(b: &Buckets) -> Vec<(i32, u64)> {
    b.counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(j, &c)| (b.offset + j as i32, c))
        .collect()
}

/// A deterministic spread of values (a linear congruential generator), `n` of them in about [lo, hi).
fn spread(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

#[test]
fn exact_samples_land_in_the_buckets_their_values_index_and_the_counts_sum_to_the_count() {
    let mut samples = spread(1000, 0.5, 3000.0, 7);
    samples.extend(spread(300, -80.0, -0.01, 9));
    samples.extend([0.0; 17]);
    samples.extend([1.0, 2.0, 4.0, -8.0]); // exact powers of two: the bucket below them
    let b = build(Knots(&sample_knots(&samples)), samples.len() as u64, 160);
    assert_eq!(b.total(), samples.len() as u64);
    let (zero, pos, neg) = by_hand(&samples, b.scale);
    assert_eq!(b.zero_count, zero);
    assert_eq!(b.zero_count, 17);
    assert_eq!(nonzero(&b.positive), pos);
    assert_eq!(nonzero(&b.negative), neg);
}

#[test]
fn the_scale_is_the_largest_at_which_each_side_fits_in_max_buckets() {
    for max_buckets in [2usize, 10, 160, 1000] {
        let mut samples = spread(500, 1.0, 1e6, 3);
        samples.extend(spread(500, -50.0, -0.5, 4));
        let b = build(Knots(&sample_knots(&samples)), 1000, max_buckets);
        assert!(b.scale <= MAX_SCALE);
        assert!(b.positive.counts.len() <= max_buckets, "{max_buckets}: {b:?}");
        assert!(b.negative.counts.len() <= max_buckets, "{max_buckets}: {b:?}");
        let span = |lo: f64, hi: f64, s: i32| index(hi, s) - index(lo, s) + 1;
        let (plo, phi) = samples
            .iter()
            .filter(|v| **v > 0.0)
            .fold((f64::MAX, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
        let (nlo, nhi) = samples
            .iter()
            .filter(|v| **v < 0.0)
            .fold((f64::MAX, 0.0f64), |(a, b), &v| (a.min(-v), b.max(-v)));
        let finer = b.scale + 1;
        assert!(
            span(plo, phi, finer) as usize > max_buckets || span(nlo, nhi, finer) as usize > max_buckets,
            "scale {} is not the largest that fits {max_buckets}",
            b.scale
        );
    }
}

#[test]
fn a_narrow_distribution_gets_the_largest_scale() {
    let samples = spread(100, 1000.0, 1000.01, 5);
    let b = build(Knots(&sample_knots(&samples)), 100, 160);
    assert_eq!(b.scale, MAX_SCALE);
    assert_eq!(b.total(), 100);
}

#[test]
fn a_single_value_is_one_bucket_that_holds_it() {
    for v in [42.0, -0.003, 1e300, 5e-324] {
        let b = build(Knots(&sample_knots(&[v])), 1, 160);
        assert_eq!(b.scale, MAX_SCALE, "{v}");
        let side = if v > 0.0 { &b.positive } else { &b.negative };
        assert_eq!(side.counts, vec![1], "{v}: {b:?}");
        let (lo, hi) = (
            lower_boundary(side.offset, b.scale),
            lower_boundary(side.offset + 1, b.scale),
        );
        assert!(lo < v.abs() && v.abs() <= hi, "{v} not in ({lo}, {hi}]");
    }
    let zero = build(Knots(&sample_knots(&[0.0, 0.0])), 2, 160);
    assert_eq!(
        (zero.zero_count, zero.positive.counts.len(), zero.negative.counts.len()),
        (2, 0, 0)
    );
}

#[test]
fn a_spread_weight_rounds_to_counts_that_sum_exactly_to_the_count() {
    // A digest-like quantile function: linear from 1 to 1000 over a fractional weight, sent as 1000 samples.
    let knots = [(0.0, 1.0), (333.3, 10.0), (999.7, 1000.0)];
    let b = build(Knots(&knots), 1000, 160);
    assert_eq!(b.total(), 1000);
    assert_eq!(b.zero_count, 0);
    // Each bucket's share of the linear pieces, within one of rounding.
    let at_most = |x: f64| Knots(&knots).at_most(x) / 999.7 * 1000.0;
    for (j, &c) in b.positive.counts.iter().enumerate() {
        let i = b.positive.offset + j as i32;
        let want = at_most(lower_boundary(i + 1, b.scale)) - at_most(lower_boundary(i, b.scale));
        assert!((c as f64 - want).abs() <= 1.0, "bucket {i}: {c} against {want}");
    }
}

#[test]
fn indexes_follow_the_data_model_at_every_scale() {
    // 2^k is the upper bound of bucket k-1 at scale 0; at scale -1 buckets pair up; at scale 1 they halve.
    assert_eq!(index(1.0, 0), -1);
    assert_eq!(index(1.5, 0), 0);
    assert_eq!(index(2.0, 0), 0);
    assert_eq!(index(2.0001, 0), 1);
    assert_eq!(index(4.0, -1), 0);
    assert_eq!(index(5.0, -1), 1);
    assert_eq!(index(0.25, -1), -2);
    assert_eq!(index(2f64.sqrt() * 1.0001, 1), 1);
    assert_eq!(index(2.0, 1), 1);
    assert_eq!(index(f64::MAX, MAX_SCALE), (1024 << MAX_SCALE) - 1);
    assert_eq!(index(5e-324, 0), -1075);
    for s in MIN_SCALE..=MAX_SCALE {
        for v in [1e-300, 0.1, 1.0, 3.0, 1e10, 1e300] {
            let i = index(v, s);
            assert!(
                lower_boundary(i, s) < v && v <= lower_boundary(i + 1, s) || s <= 0,
                "{v} at {s}: {i}"
            );
        }
    }
    assert!(build(Knots(&[]), 5, 160).total() == 0);
}

#[test]
fn downscaling_merges_neighbours_into_the_buckets_of_the_lower_scale() {
    let samples = spread(2000, 0.001, 1e5, 11);
    let fine = build(Knots(&sample_knots(&samples)), 2000, 160);
    let mut coarse = fine.clone();
    coarse.downscale_to(40);
    assert!(coarse.positive.counts.len() <= 40 && coarse.scale < fine.scale);
    assert_eq!(coarse.total(), 2000);
    let (_, pos, _) = by_hand(&samples, coarse.scale);
    assert_eq!(nonzero(&coarse.positive), pos);
}
