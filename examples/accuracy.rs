//! Accuracy of what the global tier reports: quantiles of t-digests and distinct counts of sets merged from
//! several hosts, through the same path as production (a local's aggregation, the forward encoding and its
//! protobuf bytes, the global's validation and merge), against the exact answer.
//!
//! `cargo run --release --example accuracy` prints the tables the README's global-tier section shows.
//! `SEEDS=n` sets the number of seeds (default 10).

use harrier::aggregate::{Entry, Histogram, Scope, SeriesKey, Set, ShardState, TagSet, Value};
use harrier::forward::{self, proto};
use harrier::protocol::MetricKind;
use prost::Message;

/// splitmix64: a small seeded generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

#[derive(Clone, Copy)]
pub enum Dist {
    Uniform,
    Lognormal,
    Bimodal,
    Pareto,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Lognormal => "lognormal",
            Dist::Bimodal => "bimodal",
            Dist::Pareto => "pareto",
        }
    }
    /// One sample, rounded to 1/`resolution` (1000: three decimals; 1: whole milliseconds, the way many clients
    /// send timers, with many repeats of each value); `scale` shifts hosts apart.
    fn sample(self, rng: &mut Rng, scale: f64, resolution: f64) -> f64 {
        let v = match self {
            Dist::Uniform => rng.unit() * 1000.0,
            Dist::Lognormal => (3.0 + rng.normal()).exp(),
            Dist::Bimodal => {
                if rng.unit() < 0.7 {
                    100.0 + 10.0 * rng.normal()
                } else {
                    500.0 + 50.0 * rng.normal()
                }
            }
            Dist::Pareto => 1.0 / rng.unit().powf(1.0 / 1.5),
        };
        (v * scale * resolution).round() / resolution
    }
}

fn series(kind: MetricKind) -> SeriesKey {
    SeriesKey::new("accuracy.test", kind, Scope::Mixed, TagSet::from_tags(["host:any"]))
}

/// A local's interval as the global receives it: encoded, sent as protobuf bytes, decoded and validated.
/// Returns the entry and the bytes it took on the wire.
fn forwarded(value: Value, kind: MetricKind) -> (Entry, usize) {
    let key = series(kind);
    let mut entry = Entry {
        hash: key.hash(),
        key,
        value,
    };
    let bytes = forward::encode(&mut entry).encode_to_vec();
    let decoded = proto::Metric::decode(bytes.as_slice()).expect("our own encoding decodes");
    (forward::decode(decoded).expect("the global accepts it"), bytes.len())
}

/// The global's merge of what the hosts forwarded, through a shard's import and interval.
fn merged(entries: Vec<Entry>) -> Value {
    let mut shard = ShardState::default();
    shard.import(entries);
    let mut interval = shard.take_interval();
    assert_eq!(interval.series.len(), 1);
    interval.series.remove(0).value
}

/// The rank error of `x` as the `q` quantile of the sorted `all`: how far `q` lies outside the ranks that `x`
/// holds (from the fraction of samples below it to the fraction at or below it, so ties are not errors).
fn rank_error(all: &[f64], x: f64, q: f64) -> f64 {
    let n = all.len() as f64;
    let below = all.partition_point(|&v| v < x) as f64 / n;
    let at_or_below = all.partition_point(|&v| v <= x) as f64 / n;
    (below - q).max(q - at_or_below).max(0.0)
}

pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
const SAMPLES_PER_HOST: usize = 100_000;

/// Rank errors of p50/p90/p99 for one merge of `hosts` (values at `resolution`, seeded by `seed`), and the mean bytes forwarded per host.
pub fn quantile_errors(hosts: &[(Dist, f64)], resolution: f64, seed: u64) -> ([f64; 3], f64) {
    let mut rng = Rng(seed);
    let mut all = Vec::with_capacity(hosts.len() * SAMPLES_PER_HOST);
    let mut entries = Vec::new();
    let mut bytes = 0;
    for &(dist, scale) in hosts {
        let mut h = Histogram::default();
        for _ in 0..SAMPLES_PER_HOST {
            let v = dist.sample(&mut rng, scale, resolution);
            h.add(v, 1.0);
            all.push(v);
        }
        let (entry, n) = forwarded(Value::Histogram(Box::new(h)), MetricKind::Timer);
        bytes += n;
        entries.push(entry);
    }
    all.sort_unstable_by(f64::total_cmp);
    let Value::Histogram(mut h) = merged(entries) else {
        unreachable!("a timer merges into a histogram")
    };
    assert_eq!(h.digest().count(), all.len() as f64, "every sample is counted");
    let mut errors = [0.0; 3];
    for (e, q) in errors.iter_mut().zip(QUANTILES) {
        let estimate = h.quantile(q).expect("non-empty");
        *e = rank_error(&all, estimate, q);
    }
    (errors, bytes as f64 / hosts.len() as f64)
}

/// The relative error of the global's distinct count of `n` members sent by three overlapping hosts.
pub fn set_error(n: u64, seed: u64) -> f64 {
    // Three hosts with overlap: [0, n/2), [n/4, 3n/4), [n/2, n); the union is [0, n).
    let ranges = [(0, n / 2), (n / 4, 3 * n / 4), (n / 2, n)];
    let entries = ranges
        .iter()
        .map(|&(from, to)| {
            let mut s = Set::default();
            for j in from..to {
                s.insert(format!("user-{seed}-{j}").as_bytes());
            }
            forwarded(Value::Set(Box::new(s)), MetricKind::Set).0
        })
        .collect();
    let Value::Set(s) = merged(entries) else {
        unreachable!("a set merges into a set")
    };
    (s.estimate() - n as f64) / n as f64
}

/// Each distribution on three hosts (scaled apart), and one host of each.
pub fn scenarios() -> Vec<(String, Vec<(Dist, f64)>)> {
    [Dist::Uniform, Dist::Lognormal, Dist::Bimodal, Dist::Pareto]
        .iter()
        .map(|&d| (format!("{} ×3 hosts", d.name()), vec![(d, 1.0), (d, 1.5), (d, 2.0)]))
        .chain(std::iter::once((
            "mixed: one of each ×4 hosts".to_string(),
            vec![
                (Dist::Uniform, 1.0),
                (Dist::Lognormal, 1.0),
                (Dist::Bimodal, 1.0),
                (Dist::Pareto, 1.0),
            ],
        )))
        .collect()
}

fn main() {
    let seeds: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let scenarios = scenarios();
    let mut overall_worst: f64 = 0.0;
    for (resolution, values) in [(1000.0, "three decimals"), (1.0, "whole milliseconds")] {
        println!(
            "Rank error of the global's quantiles, values in {values} ({SAMPLES_PER_HOST} samples per host, \
             {seeds} seeds): mean / worst"
        );
        println!("| hosts | p50 | p90 | p99 | bytes forwarded per host |");
        println!("|---|---|---|---|---|");
        for (name, hosts) in &scenarios {
            let mut sum = [0.0; 3];
            let mut worst = [0.0f64; 3];
            let mut bytes = 0.0;
            for seed in 0..seeds {
                let (e, b) = quantile_errors(hosts, resolution, seed);
                for i in 0..3 {
                    sum[i] += e[i];
                    worst[i] = worst[i].max(e[i]);
                }
                bytes += b;
            }
            overall_worst = worst.iter().fold(overall_worst, |a, &b| a.max(b));
            let cell = |i: usize| format!("{:.4} / {:.4}", sum[i] / seeds as f64, worst[i]);
            println!(
                "| {name} | {} | {} | {} | {:.0} |",
                cell(0),
                cell(1),
                cell(2),
                bytes / seeds as f64
            );
        }
        println!();
    }
    println!("worst rank error overall: {overall_worst:.4}");
    println!();
    println!("Error of the global's distinct count, three hosts with overlap ({seeds} seeds)");
    println!("| distinct members | mean error | mean absolute error | worst error |");
    println!("|---|---|---|---|");
    for n in [1_000u64, 10_000, 100_000, 1_000_000] {
        let errors: Vec<f64> = (0..seeds).map(|seed| set_error(n, seed)).collect();
        let mean = errors.iter().sum::<f64>() / seeds as f64;
        let mean_abs = errors.iter().map(|e| e.abs()).sum::<f64>() / seeds as f64;
        let worst = errors
            .iter()
            .fold(0.0f64, |a, &e| if e.abs() > a.abs() { e } else { a });
        println!(
            "| {n} | {:+.2}% | {:.2}% | {:+.2}% |",
            mean * 100.0,
            mean_abs * 100.0,
            worst * 100.0
        );
    }
}
