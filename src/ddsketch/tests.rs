use super::mapping::go_log;
use super::*;
use proptest::prelude::*;

/// Builds a sketch by inserting every `(value, weight)` in order.
fn sketch_of(samples: &[(f64, u32)]) -> DdSketch {
    let mut s = DdSketch::new();
    for &(v, w) in samples {
        s.insert(v, w);
    }
    s
}

fn sketch_of_values(values: &[f64]) -> DdSketch {
    let mut s = DdSketch::new();
    for &v in values {
        s.insert(v, 1);
    }
    s
}

/// Asserts equality of everything but `sum`, which is compared within float rounding.
fn assert_same_sketch(a: &DdSketch, b: &DdSketch, abs_sum: f64) {
    assert_eq!(a.bins, b.bins);
    assert_eq!(a.count, b.count);
    assert_eq!(a.min.to_bits(), b.min.to_bits());
    assert_eq!(a.max.to_bits(), b.max.to_bits());
    let tol = 1e-12 * abs_sum + 1e-300;
    assert!((a.sum - b.sum).abs() <= tol, "sum {} vs {} (tol {tol})", a.sum, b.sum);
}

fn check_invariants(s: &DdSketch) {
    assert!(s.bins.len() <= BIN_LIMIT);
    assert!(s.bins.windows(2).all(|w| w[0].0 < w[1].0), "bins sorted and distinct");
    assert!(s.bins.iter().all(|&(_, n)| n > 0));
    assert_eq!(s.count, s.bins.iter().map(|&(_, n)| u64::from(n)).sum::<u64>());
    if s.count == 0 {
        assert_eq!((s.min, s.max, s.sum), (0.0, 0.0, 0.0));
    } else {
        assert_eq!(key(s.max), s.bins.last().unwrap().0);
        assert!(key(s.min) <= s.bins[0].0);
    }
}

// ---------------------------------------------------------------- constants and keys

#[test]
fn constants_are_the_agents() {
    assert_eq!(GAMMA, 1.015625);
    assert_eq!(GAMMA_LN.to_bits(), 0x3f8f_c0a8_b0fc_03e4, "Go's math.Log1p(0.015625)");
    assert_eq!(GAMMA_LN.to_bits(), (2.0 * RELATIVE_ACCURACY).ln_1p().to_bits());
    assert_eq!(EMIN, (MIN_VALUE.ln() / GAMMA_LN).floor() as i32);
    assert_eq!(BIAS, 1338);
    assert_eq!(NORM_MIN.to_bits(), lower_bound(1).to_bits());
    const { assert!(NORM_MIN <= MIN_VALUE) };
}

#[test]
fn key_matches_the_documented_examples() {
    assert_eq!(key(1.0), 1338);
    assert_eq!(key(2.0), 1383);
    assert_eq!(key(10.0), 1487);
    assert_eq!(key(0.5), 1293);
}

#[test]
fn key_matches_values_computed_by_go_for_the_agent_formula() {
    // From a Go 1.19 harness evaluating the agent's key() with Go's math package.
    let cases: [(f64, i16); 12] = [
        (1e-9, 1),
        (9.941854089121368e-10, 1),
        (1.0, 1338),
        (2.0, 1383),
        (10.0, 1487),
        (0.5, 1293),
        (100.0, 1635),
        (1e6, 2229),
        (4.137616223466919e211, 32766),
        (4.2e211, 32767),
        (0.1, 1189),
        (3.0, 1409),
    ];
    for (v, k) in cases {
        assert_eq!(key(v), k, "key({v:e})");
    }
}

#[test]
fn key_matches_go_on_bin_edges_where_the_system_log_differs_by_one_ulp() {
    // (value bits, Go's key, Go's math.Log bits): for each of these f64::ln is one ulp off
    // Go's result and the rounded quotient lands in the neighbouring bin.
    let cases: [(u64, i16, u64); 6] = [
        (0x3e85_12b1_34a4_dcf6, 327, 0xc02f_557e_77a6_b158),
        (0x3e91_4e03_1e8e_1c1a, 360, 0xc02e_5779_321e_d138),
        (0x3ffe_ec6a_fa1f_3e44, 1381, 0x3fe5_15f0_0587_5a96),
        (0x4004_7062_493e_ac69, 1398, 0x3fee_041f_774e_3bae),
        (0x4006_1623_b3de_bd20, 1404, 0x3ff0_3f96_5290_f5fe),
        (0x4008_3d5b_8a46_4f4a, 1410, 0x3ff1_bc9e_3adc_c62c),
    ];
    for (vb, k, lb) in cases {
        let v = f64::from_bits(vb);
        assert_eq!(go_log(v).to_bits(), lb, "log({v:e})");
        assert_eq!(key(v), k, "key({v:e})");
        assert_eq!(key(-v), -k, "key({:e})", -v);
    }
}

#[test]
fn go_log_agrees_with_the_system_log_within_one_ulp() {
    let mut x = NORM_MIN;
    while x < 1e300 {
        let (a, b) = (go_log(x), x.ln());
        assert!(a.to_bits().abs_diff(b.to_bits()) <= 1, "{x:e}: {a} vs {b}");
        x *= 1.37;
    }
}

#[test]
fn key_negates_for_negative_values() {
    assert_eq!(key(-1.0), -1338);
    assert_eq!(key(-10.0), -1487);
    assert_eq!(key(-0.5), -1293);
    assert_eq!(key(-1e300), -INF_KEY);
}

#[test]
fn key_is_zero_for_zero_and_magnitudes_below_the_minimum() {
    assert_eq!(key(0.0), 0);
    assert_eq!(key(-0.0), 0);
    assert_eq!(key(1e-10), 0);
    assert_eq!(key(-1e-10), 0);
    assert_eq!(key(f64::MIN_POSITIVE), 0);
    assert_eq!(key(5e-324), 0);
    let just_below = f64::from_bits(NORM_MIN.to_bits() - 1);
    assert_eq!(key(just_below), 0);
    assert_eq!(key(-just_below), 0);
    assert_eq!(key(NORM_MIN), 1);
    assert_eq!(key(-NORM_MIN), -1);
    assert_eq!(key(1e-9), 1);
}

#[test]
fn key_maps_infinities_and_huge_values_to_the_inf_keys() {
    assert_eq!(key(f64::INFINITY), INF_KEY);
    assert_eq!(key(f64::NEG_INFINITY), -INF_KEY);
    assert_eq!(key(f64::MAX), INF_KEY);
    assert_eq!(key(f64::MIN), -INF_KEY);
    assert_eq!(key(1e212), INF_KEY);
    assert_eq!(key(lower_bound(MAX_KEY)), MAX_KEY);
}

#[test]
fn key_of_nan_is_zero() {
    assert_eq!(key(f64::NAN), 0);
    assert_eq!(key(-f64::NAN), 0);
}

#[test]
fn key_of_lower_bound_is_the_key_itself_for_every_key() {
    for k in -INF_KEY..=INF_KEY {
        assert_eq!(key(lower_bound(k)), k, "key {k}");
    }
}

#[test]
fn lower_bound_matches_go_math_pow_bit_for_bit() {
    // Bits of the agent's f64(k) = math.Pow(1.015625, k-1338), from a Go 1.19 harness.
    let cases: [(i16, u64); 10] = [
        (1, 0x3e11_1479_4260_12e9),
        (2, 0x3e11_58cb_2769_9334),
        (1337, 0x3fef_81f8_1f81_f820),
        (1338, 0x3ff0_0000_0000_0000),
        (1339, 0x3ff0_4000_0000_0000),
        (1383, 0x4000_12a4_a2d9_2b35),
        (1487, 0x4024_26be_7717_0095),
        (2000, 0x40dc_00ae_a5de_1551),
        (10000, 0x4c0a_e89b_4340_a259),
        (32766, 0x6bdf_76c5_6069_3f41),
    ];
    for (k, bits) in cases {
        assert_eq!(lower_bound(k).to_bits(), bits, "lower_bound({k})");
        assert_eq!((-lower_bound(k)).to_bits(), lower_bound(-k).to_bits());
    }
}

#[test]
fn lower_bound_handles_zero_infinities_and_the_invalid_key() {
    assert_eq!(lower_bound(0), 0.0);
    assert_eq!(lower_bound(INF_KEY), f64::INFINITY);
    assert_eq!(lower_bound(-INF_KEY), f64::NEG_INFINITY);
    assert_eq!(lower_bound(i16::MIN), f64::NEG_INFINITY);
    assert_eq!(lower_bound(-1338), -1.0);
}

#[test]
fn lower_bound_grows_by_gamma_per_key() {
    for k in 1..MAX_KEY {
        let ratio = lower_bound(k + 1) / lower_bound(k);
        assert!((ratio - GAMMA).abs() < 1e-12, "key {k}: ratio {ratio}");
    }
}

// ---------------------------------------------------------------- insert

#[test]
fn insert_updates_count_min_max_sum_and_bins() {
    let s = sketch_of(&[(3.0, 1), (-2.0, 2), (10.0, 1)]);
    assert_eq!(s.count(), 4);
    assert_eq!(s.min(), -2.0);
    assert_eq!(s.max(), 10.0);
    assert_eq!(s.sum(), 9.0);
    assert_eq!(s.avg(), 2.25);
    assert_eq!(
        s.bins().collect::<Vec<_>>(),
        vec![(key(-2.0), 2), (key(3.0), 1), (key(10.0), 1)]
    );
    check_invariants(&s);
}

#[test]
fn insert_ignores_nan_infinities_and_zero_weight() {
    let mut s = DdSketch::new();
    s.insert(f64::NAN, 1);
    s.insert(f64::INFINITY, 1);
    s.insert(f64::NEG_INFINITY, 3);
    s.insert(1.0, 0);
    assert!(s.is_empty());
    assert_eq!(s, DdSketch::default());
    s.insert_sampled(f64::NAN, 0.5);
    assert!(s.is_empty());
}

#[test]
fn an_empty_sketch_reports_zeroes() {
    let s = DdSketch::new();
    assert!(s.is_empty());
    assert_eq!((s.count(), s.min(), s.max(), s.sum(), s.avg()), (0, 0.0, 0.0, 0.0, 0.0));
    assert_eq!(s.quantile(0.5), 0.0);
    assert_eq!(s.to_wire(), (vec![], vec![]));
    assert_eq!(s.bins().count(), 0);
}

#[test]
fn zero_and_tiny_values_share_the_zero_bin() {
    let s = sketch_of_values(&[0.0, 1e-12, -1e-15]);
    assert_eq!(s.bins().collect::<Vec<_>>(), vec![(0, 3)]);
    assert_eq!(s.min(), -1e-15);
    assert_eq!(s.max(), 1e-12);
}

#[test]
fn huge_finite_values_go_to_the_inf_bin_and_keep_a_finite_max() {
    let s = sketch_of_values(&[1e300, -1e300, 1.0]);
    assert_eq!(
        s.bins().collect::<Vec<_>>(),
        vec![(-INF_KEY, 1), (1338, 1), (INF_KEY, 1)]
    );
    assert_eq!(s.max(), 1e300);
    assert_eq!(s.quantile(1.0), 1e300);
    check_invariants(&s);
}

#[test]
fn insert_with_weight_ten_equals_ten_inserts_of_weight_one() {
    for v in [0.1, 1.0, -3.7, 12345.678, 0.0, 1e-12] {
        let weighted = sketch_of(&[(v, 10)]);
        let repeated = sketch_of(&[(v, 1); 10]);
        assert_same_sketch(&weighted, &repeated, 10.0 * v.abs());
    }
}

#[test]
fn insert_sampled_follows_the_agents_rate_rules() {
    let mut s = DdSketch::new();
    s.insert_sampled(2.0, 0.3); // 1/0.3 = 3.33...: weight 3, sum += 2 * 3.33...
    assert_eq!(s.count(), 3);
    assert_eq!(s.bins().collect::<Vec<_>>(), vec![(key(2.0), 3)]);
    assert_eq!(s.sum(), 2.0 * (1.0 / 0.3));
    for bad_rate in [0.0, -1.0, 2.0, f64::NAN, f64::INFINITY, 1.0] {
        let mut t = DdSketch::new();
        t.insert_sampled(5.0, bad_rate);
        assert_eq!(t, sketch_of(&[(5.0, 1)]), "rate {bad_rate}");
    }
    let mut tiny = DdSketch::new();
    tiny.insert_sampled(1.0, 1e-300);
    assert_eq!(tiny.count(), u64::from(u32::MAX));
}

#[test]
fn a_saturated_bin_keeps_count_equal_to_the_sum_of_bins() {
    let mut s = sketch_of(&[(1.0, u32::MAX), (1.0, 5)]);
    assert_eq!(s.bins().collect::<Vec<_>>(), vec![(1338, u32::MAX)]);
    check_invariants(&s);
    let other = s.clone();
    s.merge(&other);
    assert_eq!(s.count(), u64::from(u32::MAX));
    check_invariants(&s);
}

#[test]
fn clear_resets_and_keeps_the_allocation() {
    let mut s = sketch_of_values(&[1.0, 2.0, 3.0, 1e6]);
    let cap = s.bins.capacity();
    s.clear();
    assert!(s.is_empty());
    assert_eq!(s, DdSketch::default());
    assert_eq!(s.bins.capacity(), cap);
    s.insert(7.0, 1);
    assert_eq!((s.min(), s.max(), s.count()), (7.0, 7.0, 1));
}

// ---------------------------------------------------------------- bin limit

/// Values whose keys are `from, from+1, ...` (`n` distinct keys).
fn consecutive_key_values(from: i16, n: usize) -> Vec<f64> {
    (0..n).map(|i| lower_bound(from + i as i16)).collect()
}

#[test]
fn more_than_bin_limit_keys_collapse_into_the_lowest_kept_key() {
    let values = consecutive_key_values(100, 5000);
    let s = sketch_of_values(&values);
    assert_eq!(s.bin_count(), BIN_LIMIT);
    let bins: Vec<_> = s.bins().collect();
    // The 904 lowest keys (100..=1003) fold into key 1004.
    assert_eq!(bins[0], (1004, 905));
    assert!(bins[1..].iter().all(|&(_, n)| n == 1));
    assert_eq!(bins.last().unwrap().0, 5099);
    assert_eq!(s.count(), 5000);
    assert_eq!(s.min(), values[0]);
    check_invariants(&s);
}

#[test]
fn collapse_does_not_depend_on_insertion_order() {
    let mut values = consecutive_key_values(-3000, 6000);
    let ascending = sketch_of_values(&values);
    values.reverse();
    let descending = sketch_of_values(&values);
    assert_same_sketch(&ascending, &descending, values.iter().map(|v| v.abs()).sum());
}

#[test]
fn negative_values_are_the_lowest_keys_and_collapse_first() {
    let mut values = consecutive_key_values(1, 4096);
    values.push(-1.0);
    let s = sketch_of_values(&values);
    assert_eq!(s.bin_count(), BIN_LIMIT);
    assert_eq!(s.bins().next(), Some((1, 2)));
    assert_eq!(s.min(), -1.0);
    check_invariants(&s);
}

// ---------------------------------------------------------------- merge

#[test]
fn merging_evens_and_odds_equals_inserting_all_like_the_agents_test() {
    // After the agent's TestMerge: -50..=50 split by parity.
    let values: Vec<f64> = (-50..=50).map(f64::from).collect();
    let all = sketch_of_values(&values);
    let mut evens = sketch_of_values(
        &values
            .iter()
            .copied()
            .filter(|v| *v as i64 % 2 == 0)
            .collect::<Vec<_>>(),
    );
    let odds = sketch_of_values(
        &values
            .iter()
            .copied()
            .filter(|v| *v as i64 % 2 != 0)
            .collect::<Vec<_>>(),
    );
    evens.merge(&odds);
    assert_eq!(evens, all);
    assert_eq!(all.bin_count(), 101);
    assert_eq!(all.quantile(0.5), 0.0);
    assert_eq!(all.quantile(0.99), -all.quantile(0.01));
    for p in 0..50 {
        let q = f64::from(p) / 100.0;
        let (pos, neg) = (all.quantile(0.5 + q), -all.quantile(0.5 - q));
        assert!((pos - neg).abs() <= 1e-6, "q={q}: {pos} vs {neg}");
    }
}

#[test]
fn merging_with_an_empty_sketch_changes_nothing() {
    let s = sketch_of_values(&[1.0, -5.0, 300.0]);
    let mut a = s.clone();
    a.merge(&DdSketch::new());
    assert_eq!(a, s);
    let mut b = DdSketch::new();
    b.merge(&s);
    assert_eq!(b, s);
}

fn sample() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 1e-3f64..1e6,
        2 => -1e6f64..-1e-3,
        1 => Just(0.0),
        1 => -1e-8f64..1e-8,
        1 => (1u32..100).prop_map(f64::from),
    ]
}

/// Spans far more than 4096 keys on each side of zero: `±10^x` for `x` in [-9, 211].
fn wide_sample() -> impl Strategy<Value = f64> {
    (-9.0f64..211.0, any::<bool>()).prop_map(|(x, neg)| if neg { -(10f64.powf(x)) } else { 10f64.powf(x) })
}

fn merge_equals_union(samples: &[(f64, u32, usize)], parts: usize) {
    let whole = sketch_of(&samples.iter().map(|&(v, w, _)| (v, w)).collect::<Vec<_>>());
    let mut pieces = vec![DdSketch::new(); parts];
    for &(v, w, p) in samples {
        pieces[p % parts].insert(v, w);
    }
    for p in &pieces {
        check_invariants(p);
    }
    // Merge in a tree-ish order to exercise merging already-merged sketches.
    let mut merged = DdSketch::new();
    let mut right = DdSketch::new();
    for (i, p) in pieces.iter().enumerate() {
        if i % 2 == 0 {
            merged.merge(p);
        } else {
            right.merge(p);
        }
    }
    merged.merge(&right);
    check_invariants(&merged);
    let abs_sum: f64 = samples.iter().map(|&(v, w, _)| v.abs() * f64::from(w)).sum();
    assert_same_sketch(&merged, &whole, abs_sum);
}

proptest! {
    #[test]
    fn merge_of_any_split_equals_the_sketch_of_the_union(
        samples in prop::collection::vec((sample(), 1u32..1000, 0usize..8), 0..400),
        parts in 1usize..6,
    ) {
        merge_equals_union(&samples, parts);
    }


    #[test]
    fn insert_with_weight_equals_repeated_unit_inserts(v in sample(), w in 1u32..50) {
        let weighted = sketch_of(&[(v, w)]);
        let repeated = sketch_of(&vec![(v, 1); w as usize]);
        assert_same_sketch(&weighted, &repeated, v.abs() * f64::from(w));
    }
}

proptest! {
    // Thousands of samples per case: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn merge_of_any_split_equals_the_union_beyond_the_bin_limit(
        samples in prop::collection::vec((wide_sample(), 1u32..5, 0usize..8), 6000..12000),
        parts in 1usize..5,
    ) {
        let distinct: std::collections::BTreeSet<i16> = samples.iter().map(|&(v, _, _)| key(v)).collect();
        prop_assert!(distinct.len() > BIN_LIMIT, "the case must overflow the bin limit");
        merge_equals_union(&samples, parts);
    }

    #[test]
    fn to_wire_then_from_wire_round_trips_beyond_the_bin_limit(
        values in prop::collection::vec(wide_sample(), 6000..9000),
    ) {
        let s = sketch_of_values(&values);
        prop_assert_eq!(s.bin_count(), BIN_LIMIT);
        let (k, n) = s.to_wire();
        prop_assert_eq!(DdSketch::from_wire(&k, &n, s.count(), s.min(), s.max(), s.sum()), Ok(s));
    }
}

// ---------------------------------------------------------------- quantile

/// `gamma^1.5 - 1`: the agent's worst-case relative error (see `DdSketch::quantile`).
fn agent_error_bound() -> f64 {
    GAMMA.powf(1.5) - 1.0
}

/// The sample of rank `round_half_even(q * (n - 1))` in sorted order.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).round_ties_even() as usize]
}

#[test]
fn quantile_returns_min_and_max_at_the_ends() {
    let s = sketch_of_values(&[3.0, 1.5, 700.0, -2.0]);
    assert_eq!(s.quantile(0.0), -2.0);
    assert_eq!(s.quantile(-1.0), -2.0);
    assert_eq!(s.quantile(1.0), 700.0);
    assert_eq!(s.quantile(2.0), 700.0);
    assert!(s.quantile(f64::NAN).is_nan());
}

#[test]
fn quantile_of_a_single_sample_is_that_sample() {
    for v in [1.0, 3.3, -42.0, 1e-12, 5e100] {
        let s = sketch_of_values(&[v]);
        for q in [0.01, 0.5, 0.99] {
            assert_eq!(s.quantile(q), v);
        }
    }
}

#[test]
fn quantile_matches_the_agents_own_test_cases() {
    // After the agent's TestQuantile. 101 bins of one sample each, from key(1) up:
    let one_per_bin: Vec<f64> = (0..101).map(|i| lower_bound(key(1.0) + i)).collect();
    let s = sketch_of_values(&one_per_bin);
    assert_eq!(s.bin_count(), 101);
    assert_eq!(s.quantile(0.99), lower_bound(s.bins[99].0));
    // 0, 1, ..., 100:
    let incr = sketch_of_values(&(0..101).map(f64::from).collect::<Vec<_>>());
    assert_eq!(incr.quantile(0.0), 0.0);
    assert_eq!(incr.quantile(0.01), lower_bound(key(1.0)));
    assert_eq!(incr.quantile(0.98), lower_bound(key(98.0)));
}

#[test]
fn quantile_interpolates_inside_a_bin_from_its_value_up_to_the_next() {
    // Four equal samples of 2.0: rank 0..3 map to weights 4/4, 3/4, 2/4, 1/4 between
    // min (2.0, first entry) and lower_bound(key(2)) * gamma.
    let s = sketch_of(&[(2.0, 4)]);
    let hi = lower_bound(key(2.0)) * GAMMA;
    assert_eq!(s.quantile(0.34), 2.0 * 0.75 + hi * 0.25); // rank round(0.34*3)=1
                                                          // Second bin (not the first entry) starts from lower_bound, not from min.
    let t = sketch_of(&[(1.0, 1), (2.0, 4)]);
    let lo = lower_bound(key(2.0));
    assert_eq!(t.quantile(0.5), lo * 0.75 + hi * 0.25); // rank 2 -> second of four
}

#[test]
fn quantile_walks_counts_above_u16_max_as_the_repeated_wire_entries() {
    // 70000 samples at one key are entries of 4465 then 65535 on the wire; the agent
    // interpolates within the entry holding the rank.
    let s = sketch_of(&[(1.0, 1), (2.0, 70000)]);
    let (lo, hi) = (lower_bound(key(2.0)), lower_bound(key(2.0)) * GAMMA);
    let at_rank = |rank: u64| {
        let q = rank as f64 / 70000.0;
        assert_eq!((q * 70000.0).round_ties_even() as u64, rank);
        s.quantile(q)
    };
    // rank 1: first entry (4465), cumulative end 1 + 4465.
    assert_eq!(at_rank(1), lo * (4465.0 / 4465.0) + hi * (1.0 - 4465.0 / 4465.0));
    // rank 10000: second entry, which ends at 1 + 4465 + 65535 = 70001.
    let w = (70001.0 - 10000.0) / 65535.0;
    assert_eq!(at_rank(10000), lo * w + hi * (1.0 - w));
}

#[test]
fn the_agents_interpolation_can_err_by_more_than_two_eps() {
    // Many samples just above a bin's lower edge: the top rank interpolates almost up to
    // the next bin's value, about gamma^1.5 away. This is why the tests assert
    // gamma^1.5 - 1 (≈ 3.01 eps) rather than 2 eps.
    let v = GAMMA.powf(-0.49);
    let s = sketch_of(&[(0.5, 1), (v, 1000), (10.0, 1)]);
    let est = s.quantile(1000.0 / 1001.0); // rank 1000: the last sample at v
    let err = (est - v).abs() / v;
    assert!(err > 2.0 * RELATIVE_ACCURACY, "err {err}");
    assert!(err <= agent_error_bound(), "err {err}");
}

proptest! {
    #[test]
    fn quantiles_are_within_the_agents_relative_error(
        exps in prop::collection::vec(-3.0f64..6.0, 1..2000),
    ) {
        // Positive samples spanning nine orders of magnitude (fewer than 4096 keys).
        let mut values: Vec<f64> = exps.iter().map(|x| 10f64.powf(*x)).collect();
        let s = sketch_of_values(&values);
        values.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.99] {
            let exact = exact_quantile(&values, q);
            let est = s.quantile(q);
            let bound = agent_error_bound() * exact * (1.0 + 1e-12);
            prop_assert!((est - exact).abs() <= bound, "q={} est={} exact={}", q, est, exact);
        }
    }

    #[test]
    fn quantiles_of_negative_samples_are_within_the_agents_relative_error(
        exps in prop::collection::vec(-3.0f64..6.0, 1..500),
    ) {
        let mut values: Vec<f64> = exps.iter().map(|x| -(10f64.powf(*x))).collect();
        let s = sketch_of_values(&values);
        values.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.99] {
            let exact = exact_quantile(&values, q);
            let est = s.quantile(q);
            let bound = agent_error_bound() * exact.abs() * (1.0 + 1e-12);
            prop_assert!((est - exact).abs() <= bound, "q={} est={} exact={}", q, est, exact);
        }
    }

    #[test]
    fn quantile_is_monotonic_in_q(values in prop::collection::vec(sample(), 1..300)) {
        let s = sketch_of_values(&values);
        let mut last = f64::NEG_INFINITY;
        for p in 0..=100 {
            let v = s.quantile(f64::from(p) / 100.0);
            // Within one negative bin the agent interpolates away from zero as rank grows,
            // so allow that bin-local reversal (at most one bin width).
            prop_assert!(v >= last - last.abs() * 2.0 * (GAMMA - 1.0) - 1e-300, "p={} {} < {}", p, v, last);
            last = last.max(v);
        }
    }
}

// ---------------------------------------------------------------- wire form

#[test]
fn to_wire_splits_counts_above_u16_max_into_repeated_keys() {
    let s = sketch_of(&[(1.0, 70000), (2.0, 131070), (3.0, 65535), (4.0, 7)]);
    let (k, n) = s.to_wire();
    assert_eq!(k, vec![1338, 1338, 1383, 1383, 1409, 1427]);
    assert_eq!(n, vec![4465, 65535, 65535, 65535, 65535, 7]);
    let back = DdSketch::from_wire(&k, &n, s.count(), s.min(), s.max(), s.sum()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn from_wire_accepts_the_agents_other_repeated_layouts() {
    // The agent may write a full entry before a partial one for the same key.
    let s = DdSketch::from_wire(&[1338, 1338, 1383], &[65535, 10, 1], 65546, 1.0, 2.0, 65547.0).unwrap();
    assert_eq!(s.bins().collect::<Vec<_>>(), vec![(1338, 65545), (1383, 1)]);
}

#[test]
fn from_wire_accepts_a_collapsed_sketch_whose_min_is_below_the_lowest_bin() {
    let s = sketch_of_values(&consecutive_key_values(100, 5000));
    let (k, n) = s.to_wire();
    assert!(key(s.min()) < s.bins[0].0);
    assert_eq!(DdSketch::from_wire(&k, &n, s.count(), s.min(), s.max(), s.sum()), Ok(s));
}

#[test]
fn from_wire_rejects_each_kind_of_bad_input() {
    let ok = |k: &[i32], n: &[u32], c: u64, min: f64, max: f64, sum: f64| DdSketch::from_wire(k, n, c, min, max, sum);
    assert!(ok(&[1338], &[1], 1, 1.0, 1.0, 1.0).is_ok());
    assert!(ok(&[], &[], 0, 0.0, 0.0, 0.0).is_ok());
    let cases: Vec<(Result<DdSketch, &str>, &str)> = vec![
        (
            ok(&[1338, 1338], &[1], 1, 1.0, 1.0, 1.0),
            "k and n have different lengths",
        ),
        (ok(&[1383, 1338], &[1, 1], 2, 1.0, 2.0, 3.0), "keys not sorted"),
        (ok(&[32768], &[1], 1, 1.0, 1.0, 1.0), "key out of range"),
        (ok(&[-32768], &[1], 1, -1.0, -1.0, -1.0), "key out of range"),
        (ok(&[i32::MAX], &[1], 1, 1.0, 1.0, 1.0), "key out of range"),
        (ok(&[1338], &[0], 0, 0.0, 0.0, 0.0), "zero bin count"),
        (
            ok(&[1338], &[65536], 65536, 1.0, 1.0, 65536.0),
            "bin count above u16::MAX",
        ),
        (ok(&[1338], &[2], 3, 1.0, 1.0, 3.0), "count does not equal the sum of n"),
        (
            ok(&[1338], &[1], 1, f64::NAN, 1.0, 1.0),
            "min, max or sum is not finite",
        ),
        (
            ok(&[1338], &[1], 1, 1.0, f64::INFINITY, 1.0),
            "min, max or sum is not finite",
        ),
        (
            ok(&[1338], &[1], 1, 1.0, 1.0, f64::NEG_INFINITY),
            "min, max or sum is not finite",
        ),
        (ok(&[1338, 1383], &[1, 1], 2, 2.0, 1.0, 3.0), "min greater than max"),
        (ok(&[1338], &[1], 1, 1.0, 2.0, 3.0), "max is not in the highest bin"),
        (
            ok(&[1338, 1383], &[1, 1], 2, 2.0, 2.0, 4.0),
            "min is above the lowest bin",
        ),
        (
            ok(&[], &[], 0, 0.0, 1.0, 0.0),
            "empty sketch with non-zero min, max or sum",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want));
    }
    let too_many: Vec<i32> = (1..=BIN_LIMIT as i32 + 1).collect();
    let ones = vec![1u32; too_many.len()];
    let max = lower_bound(BIN_LIMIT as i16 + 1);
    assert_eq!(
        ok(&too_many, &ones, ones.len() as u64, NORM_MIN, max, 1.0),
        Err("more than BIN_LIMIT distinct keys")
    );
    let overflow: Vec<i32> = vec![1338; 65538];
    let full = vec![65535u32; 65538];
    let count = 65535u64 * 65538;
    assert_eq!(
        ok(&overflow, &full, count, 1.0, 1.0, 1.0),
        Err("bin count overflows u32")
    );
}

proptest! {
    #[test]
    fn to_wire_then_from_wire_gives_back_the_same_sketch(
        samples in prop::collection::vec((sample(), prop_oneof![1u32..10, 60000u32..200000]), 0..200),
    ) {
        let s = sketch_of(&samples);
        let (k, n) = s.to_wire();
        prop_assert!(n.iter().all(|&c| (1..=MAX_WIRE_BIN_COUNT).contains(&c)));
        prop_assert!(k.windows(2).all(|w| w[0] <= w[1]));
        prop_assert_eq!(n.iter().map(|&c| u64::from(c)).sum::<u64>(), s.count());
        let back = DdSketch::from_wire(&k, &n, s.count(), s.min(), s.max(), s.sum());
        prop_assert_eq!(back, Ok(s));
    }


    #[test]
    fn from_wire_never_panics_and_what_it_accepts_is_valid(
        k in prop::collection::vec(prop_oneof![-40000i32..40000, 1330i32..1400, Just(32767), Just(-32767)], 0..40),
        n in prop::collection::vec(prop_oneof![0u32..5, Just(65535), any::<u32>()], 0..40),
        count in prop_oneof![0u64..200, any::<u64>()],
        min in prop_oneof![any::<f64>(), -2.0f64..2.0],
        max in prop_oneof![any::<f64>(), 0.5f64..200.0],
        sum in any::<f64>(),
    ) {
        if let Ok(s) = DdSketch::from_wire(&k, &n, count, min, max, sum) {
            check_invariants(&s);
            let _ = s.quantile(0.5);
        }
    }

    #[test]
    fn from_wire_accepts_sorted_consistent_input(
        mut keys in prop::collection::vec(-32767i32..=32767, 1..50),
        n in prop::collection::vec(1u32..=65535, 50),
    ) {
        keys.sort_unstable();
        let n = &n[..keys.len()];
        let count = n.iter().map(|&c| u64::from(c)).sum();
        let (min, max) = (lower_bound(keys[0] as i16), lower_bound(*keys.last().unwrap() as i16));
        prop_assume!(min.is_finite() && max.is_finite());
        let s = DdSketch::from_wire(&keys, n, count, min, max, 0.0);
        prop_assert!(s.is_ok(), "{:?}", s);
        check_invariants(&s.unwrap());
    }
}
