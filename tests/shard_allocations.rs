//! A known series costs no heap allocation per line in a shard: only a new series allocates (its key).
//!
//! This binary installs a counting global allocator (`tests/support/counting_alloc.rs`).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use harrier::aggregate::{ExtendTags, ShardState};
use harrier::protocol::{self, Message};

/// As a worker does: a line whose text the shard knows is aggregated from its value alone; any other (here, a
/// known series written another way) is parsed in full and found by its canonical key. Both ways are measured.
fn feed(state: &mut ShardState, extend: &ExtendTags, packet: &str) -> usize {
    let mut n = 0;
    for line in protocol::str_lines(packet) {
        n += 1;
        if let Some(view) = protocol::split_metric(line) {
            if let Some(result) = state.add_known_line(&view) {
                result.unwrap();
                continue;
            }
        }
        let Ok(Message::Metric(m)) = protocol::parse_str(line) else {
            panic!("fixture lines are metrics")
        };
        state.add_metric(&m, None, extend).unwrap();
    }
    n
}

#[test]
fn known_counters_gauges_and_sets_allocate_nothing_per_line() {
    let extend = ExtendTags::new(&["env:prod".to_string()]);
    let mut state = ShardState::default();
    let lines = "req:1|c|@0.5|#route:/a,status:200\n\
                 req:1|c|#status:200,route:/a\n\
                 depth:12|g|#queue:emails\n\
                 users:u-1|s|#env:dev\n\
                 users:u-2|s\n\
                 multi:1:2:3|c|#a,b,a\n"
        .repeat(20);
    // Warm up: the first sight of each series allocates its key (and each new set member its slot).
    feed(&mut state, &extend, &lines);
    let series_before = state.len();
    let mut n = 0;
    let allocations = allocations_during(|| {
        for _ in 0..100 {
            n += feed(&mut state, &extend, &lines);
        }
    });
    assert_eq!(state.len(), series_before, "no new series");
    assert_eq!(n, 12_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {n} lines of known series"
    );
}

#[test]
fn known_histograms_allocate_nothing_per_sample_even_when_folding_into_the_digest() {
    let extend = ExtendTags::default();
    let mut state = ShardState::default();
    let line = "lat:12.5|ms|#route:/a\nlat:3.25:900:17|h|@0.5|#route:/b\n";
    // Warm up past a few folds and a drain of the shard's sample log (80,000 samples), so that every buffer has
    // reached its working size.
    feed(&mut state, &extend, &line.repeat(20_000));
    let packet = line.repeat(50_000);
    let mut n = 0;
    let allocations = allocations_during(|| {
        n = feed(&mut state, &extend, &packet);
    });
    assert_eq!(n, 100_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {n} lines (200,000 samples, ~390 folds)"
    );
}

#[test]
fn a_new_series_allocates_its_key() {
    let extend = ExtendTags::default();
    let mut state = ShardState::default();
    let allocations = allocations_during(|| {
        feed(&mut state, &extend, "fresh:1|c|#a:1,b:2\n");
    });
    assert!(allocations >= 1);
}
