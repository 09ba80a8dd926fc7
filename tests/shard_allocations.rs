//! A known series costs no heap allocation per line in a shard: only a new series allocates (its key).
//!
//! This binary installs a counting global allocator (`tests/support/counting_alloc.rs`).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use harrier::aggregate::{ExtendTags, ShardState};
use harrier::protocol::{self, Message};

fn feed(state: &mut ShardState, extend: &ExtendTags, packet: &str) -> usize {
    let mut n = 0;
    for line in protocol::lines(packet.as_bytes()) {
        let Ok(Message::Metric(m)) = protocol::parse_line(line) else {
            panic!("fixture lines are metrics")
        };
        state.add_metric(&m, extend).unwrap();
        n += 1;
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
    let series_before = state.series.len();
    let mut n = 0;
    let allocations = allocations_during(|| {
        for _ in 0..100 {
            n += feed(&mut state, &extend, &lines);
        }
    });
    assert_eq!(state.series.len(), series_before, "no new series");
    assert_eq!(n, 12_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {n} lines of known series"
    );
}

#[test]
fn known_histograms_allocate_only_when_their_sample_buffer_is_folded_into_the_digest() {
    let extend = ExtendTags::default();
    let mut state = ShardState::default();
    let line = "lat:12.5|ms|#route:/a\n";
    // Warm up past one fold, so that the sample buffer has grown to its cap.
    feed(&mut state, &extend, &line.repeat(600));
    let samples = 51_200;
    let packet = line.repeat(samples);
    let allocations = allocations_during(|| {
        feed(&mut state, &extend, &packet);
    });
    // Each fold of 512 samples into the t-digest allocates six buffers (the merged centroids, the tdigest
    // crate's compression buffers, the refilled sample buffer): about 0.012 allocations per sample, amortized.
    let folds = samples / 512;
    assert!(
        allocations <= folds * 6,
        "{allocations} allocations for {samples} samples ({folds} folds)"
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
