//! One shard at production cardinality, in-process: the `million-mixed` shape of `benches/e2e.sh` (1,000,000 series
//! named as `harrier-load --series` names them, of types c=70, g=10, ms=10, h=5, s=5 %, each series receiving 20
//! lines per interval, in the load tool's order) through the worker's path (cut the line, find its series by
//! text, else parse it in full) and the flush's (`take_interval`, then `emit` with the default aggregates and
//! percentiles). Small enough to run under valgrind, so that its figures do not depend on the VM's noise.
//!
//! ```text
//! cargo run --release --example cardinality -- memory [SERIES]
//!     bytes held per series after an interval's traffic, the peak during each flush, and after it
//! valgrind --tool=cachegrind --cache-sim=yes target/release/examples/cardinality lines PASSES [SERIES]
//!     PASSES passes of one line per series (the first creates them); the difference between two runs with
//!     different PASSES, divided by the lines between them, is the cost of a line of a known series
//! ```
//!
//! Cachegrind simulates the caches without a hardware prefetcher and ignores prefetch instructions: its misses per
//! line measure how many distinct cache lines a line touches (the layout), not the latency the worker's prefetching
//! hides.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use harrier::aggregate::{emit, EmitConfig, ExtendTags, ShardState};
use harrier::config::Aggregate;
use harrier::protocol::{self, Message};
use harrier::sink::Flush;

/// Counts the bytes allocated and not yet freed, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNTERS_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// SAFETY: every call is passed to the system allocator unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc`, with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `System::realloc`, with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The load tool's type of series `i` under --mix c=70,g=10,ms=10,h=5,s=5 (or `--mix c=1` with `MIX=c` in the
/// environment: the `series300k` shape).
fn series_type(i: usize) -> &'static str {
    if COUNTERS_ONLY.load(Ordering::Relaxed) {
        return "c";
    }
    let slot = (i as u64 * 2_654_435_761 % 100) as u32;
    match slot {
        0..70 => "c",
        70..80 => "g",
        80..90 => "ms",
        90..95 => "h",
        _ => "s",
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The shard and what a worker needs beside it.
struct Shard {
    state: ShardState,
    extend: ExtendTags,
    rng: Rng,
    line: String,
}

impl Shard {
    /// One pass: one line for each series, in order (as `harrier-load --series` sends them).
    fn pass(&mut self, series: usize) {
        use std::fmt::Write as _;
        for i in 0..series {
            let kind = series_type(i);
            self.line.clear();
            let _ = write!(self.line, "load.{kind}.m{i}:");
            let r = self.rng.next();
            let _ = match kind {
                "c" => write!(self.line, "{}", 1 + r % 5),
                "g" => write!(self.line, "{}", r % 10_000),
                "s" => write!(self.line, "member{}", r % 100_000),
                _ => write!(self.line, "{}.{}", r % 1000, (r >> 20) % 100),
            };
            let _ = write!(self.line, "|{kind}");
            let line = self.line.as_str();
            if let Some(view) = protocol::split_metric(line) {
                if self.state.add_known_line(&view).is_some() {
                    continue;
                }
            }
            if let Ok(Message::Metric(m)) = protocol::parse_str(line) {
                let _ = self.state.add_metric(&m, None, &self.extend);
            }
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("memory");
    COUNTERS_ONLY.store(std::env::var("MIX").as_deref() == Ok("c"), Ordering::Relaxed);
    let mut shard = Shard {
        state: ShardState::default(),
        extend: ExtendTags::default(),
        rng: Rng(0x9E37_79B9_7F4A_7C15),
        line: String::new(),
    };
    match mode {
        "lines" => {
            let passes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
            let series: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
            for _ in 0..passes {
                shard.pass(series);
            }
            // The interval taken out, so that work a shard defers to it (applying its sample log) is counted.
            let taken = shard.state.take_interval();
            drop(taken);
            println!(
                "{} series, {passes} passes: {} lines",
                shard.state.len(),
                passes * series
            );
        }
        "memory" => {
            let series: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
            let cfg = EmitConfig::new(
                false,
                &[Aggregate::Min, Aggregate::Max, Aggregate::Count],
                &[0.5, 0.9, 0.99],
            );
            if std::env::var_os("FULL_INTERVAL").is_none() {
                // As the server's shards do: what is reported here is reduced when the interval is taken.
                shard.state = std::mem::take(&mut shard.state).summarizing(std::sync::Arc::new(cfg.clone()));
            }
            for interval in 1..=3 {
                for _ in 0..20 {
                    shard.pass(series);
                }
                let state = LIVE.load(Ordering::Relaxed);
                PEAK.store(state, Ordering::Relaxed);
                let taken = shard.state.take_interval();
                let taken_bytes = LIVE.load(Ordering::Relaxed) - state;
                let taken_peak = PEAK.load(Ordering::Relaxed) - state;
                let mut out = Flush::default();
                out.series.reserve_exact(taken.series.len() + taken.histograms * 5);
                emit(taken, &cfg, 1_700_000_000, &mut out, &mut Vec::new());
                let with_output = LIVE.load(Ordering::Relaxed);
                let outputs = out.series.len();
                drop(out);
                let after = LIVE.load(Ordering::Relaxed);
                println!(
                    "interval {interval}: {series} series: held {:.1} MiB ({} B/series); the interval taken out \
                     +{:.1} MiB (peak +{:.1}); flush peak +{:.1} MiB, output of {outputs} series {:.1} MiB; after \
                     the flush {:.1} MiB",
                    mib(state),
                    state / series,
                    mib(taken_bytes),
                    mib(taken_peak),
                    mib(PEAK.load(Ordering::Relaxed) - state),
                    mib(with_output.saturating_sub(state)),
                    mib(after),
                );
            }
        }
        other => eprintln!("unknown mode {other:?}: memory [SERIES] | lines PASSES [SERIES]"),
    }
}
