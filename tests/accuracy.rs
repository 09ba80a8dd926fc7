//! The global's merged estimates against the exact answers, through the forward path (the harness is
//! `examples/accuracy.rs`, which prints the README's tables with more seeds).

#[allow(dead_code)]
#[path = "../examples/accuracy.rs"]
mod harness;

#[test]
fn quantiles_merged_from_hosts_with_different_distributions_stay_within_0_003_of_rank() {
    for ((name, hosts), resolution) in harness::scenarios()
        .into_iter()
        .flat_map(|s| [(s.clone(), 1000.0), (s, 1.0)])
    {
        for seed in 0..2 {
            let (errors, bytes) = harness::quantile_errors(&hosts, resolution, seed);
            for (q, e) in harness::QUANTILES.iter().zip(errors) {
                assert!(
                    e <= 0.003,
                    "{name} at 1/{resolution}, seed {seed}: p{} is {e:.4} off in rank",
                    q * 100.0
                );
            }
            // Twice the 4.1 KB a digest took before the bound computation was fixed, at most.
            assert!(bytes <= 8_200.0, "{name}: {bytes} bytes forwarded per host");
        }
    }
}

#[test]
fn distinct_counts_merged_from_overlapping_hosts_are_within_one_percent_on_average() {
    for n in [1_000u64, 10_000, 100_000] {
        let seeds = 8;
        let mean_abs = (0..seeds).map(|seed| harness::set_error(n, seed).abs()).sum::<f64>() / seeds as f64;
        assert!(mean_abs < 0.01, "{n} members: {:.2}% off on average", mean_abs * 100.0);
    }
    assert_eq!(harness::set_error(1_000, 0), 0.0, "a small union stays exact");
}
