//! Any bytes, as a forwarded `MetricBatch` reaching a global: decoding and validation never panic, and whatever is
//! accepted merges into a shard and flushes with finite values only (as the global's import and flush do).
#![no_main]

use harrier::aggregate::{emit, EmitConfig, ShardState};
use harrier::config::Aggregate;
use harrier::forward::{self, proto};
use harrier::sink::Flush;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = proto::MetricBatch::decode(data) else {
        return;
    };
    let mut entries = Vec::new();
    for m in batch.metrics {
        if let Ok(entry) = forward::decode(m) {
            entries.push(entry);
        }
    }
    let mut state = ShardState::default();
    state.import(entries.clone());
    state.import(entries);
    let cfg = EmitConfig::new(
        false,
        &[
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Avg,
            Aggregate::Hmean,
            Aggregate::Median,
        ],
        &[0.5, 0.99],
    );
    let mut out = Flush::default();
    emit(state.take_interval(), &cfg, 1_700_000_000, &mut out, &mut Vec::new());
    for s in out.all_series() {
        // Non-finite values never leave emit except where a sink drops them (it checks too): none may be NaN.
        assert!(!s.value.is_nan(), "{} is NaN", s.full_name());
    }
    for s in &out.sketches {
        // A merged distribution sketch stays consistent: its bins hold its count.
        let held: u64 = s.sketch.bins().map(|(_, n)| u64::from(n)).sum();
        assert_eq!(held, s.sketch.count(), "{}", s.name);
    }
});
