//! Aggregation and flush costs, with fixed inputs: shard inserts (known and new series), t-digest insert and
//! merge, HyperLogLog insert and merge, and encoding + compressing a flush of 100,000 series for Datadog and for
//! Prometheus remote write.
//!
//! `cargo bench --bench aggregate`; read `elem/s`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use harrier::aggregate::{ExtendTags, Histogram, Set, ShardState, TagSet};
use harrier::pipeline::Ingester;
use harrier::protocol::{self, Message, Metric};
use harrier::sink::datadog::build_bodies;
use harrier::sink::prometheus::{self, encode_flush, Totals};
use harrier::sink::{Flush, Series, SeriesKind};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` metric lines over `series` distinct series (mixed types, three tags each).
fn packet(n: usize, series: usize) -> String {
    let mut rng = Rng(42);
    let mut out = String::new();
    for i in 0..n {
        let s = i % series;
        let tags = format!("env:prod,route:/v{},status:{}", s % 17, 200 + s % 5);
        match s % 10 {
            0..=5 => out.push_str(&format!("svc.requests.{s}:1|c|#{tags}\n")),
            6 => out.push_str(&format!("svc.depth.{s}:{}|g|#{tags}\n", rng.next() % 1000)),
            7 | 8 => out.push_str(&format!("svc.latency.{s}:{}.5|ms|#{tags}\n", rng.next() % 1000)),
            _ => out.push_str(&format!("svc.users.{s}:u{}|s|#{tags}\n", rng.next() % 5000)),
        }
    }
    out
}

fn parsed(packet: &str) -> Vec<Metric<'_>> {
    protocol::parse_packet(packet.as_bytes())
        .filter_map(|r| match r {
            Ok(Message::Metric(m)) => Some(m),
            _ => None,
        })
        .collect()
}

fn shard_insert(c: &mut Criterion) {
    let extend = ExtendTags::default();
    let text = packet(100_000, 10_000);
    let metrics = parsed(&text);
    let mut group = c.benchmark_group("shard_insert");
    group.throughput(Throughput::Elements(metrics.len() as u64));
    let mut warm = ShardState::default();
    for m in &metrics {
        let _ = warm.add_metric(m, None, &extend);
    }
    group.bench_function("known_series", |b| {
        b.iter(|| {
            for m in &metrics {
                let _ = warm.add_metric(black_box(m), None, &extend);
            }
        })
    });
    let fresh_text = packet(10_000, 10_000);
    let fresh = parsed(&fresh_text);
    group.throughput(Throughput::Elements(fresh.len() as u64));
    group.bench_function("new_series", |b| {
        b.iter_batched(
            ShardState::default,
            |mut state| {
                for m in &fresh {
                    let _ = state.add_metric(black_box(m), None, &extend);
                }
                state
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn tdigest(c: &mut Criterion) {
    let mut rng = Rng(7);
    let values: Vec<f64> = (0..100_000).map(|_| (rng.next() % 100_000) as f64 / 100.0).collect();
    let mut group = c.benchmark_group("tdigest");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("insert", |b| {
        b.iter(|| {
            let mut h = Histogram::default();
            for &v in &values {
                h.add(black_box(v), 1.0);
            }
            h.quantile(0.99)
        })
    });
    let digests: Vec<Histogram> = values
        .chunks(1000)
        .map(|chunk| {
            let mut h = Histogram::default();
            for &v in chunk {
                h.add(v, 1.0);
            }
            h.compress();
            h
        })
        .collect();
    group.throughput(Throughput::Elements(digests.len() as u64));
    group.bench_function("merge_100_digests", |b| {
        b.iter(|| {
            let mut total = Histogram::default();
            for d in &digests {
                let mut d = d.clone();
                total.merge_digest(d.digest().clone());
            }
            total.quantile(0.5)
        })
    });
    group.finish();
}

fn hll(c: &mut Criterion) {
    let members: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let mut group = c.benchmark_group("hll");
    group.throughput(Throughput::Elements(members.len() as u64));
    group.bench_function("insert", |b| {
        b.iter(|| {
            let mut s = Set::default();
            for m in &members {
                s.insert(black_box(m.as_bytes()));
            }
            s.estimate()
        })
    });
    let sets: Vec<Set> = members
        .chunks(10_000)
        .map(|chunk| {
            let mut s = Set::default();
            for m in chunk {
                s.insert(m.as_bytes());
            }
            s
        })
        .collect();
    group.throughput(Throughput::Elements(sets.len() as u64));
    group.bench_function("merge_10_dense", |b| {
        b.iter(|| {
            let mut total = Set::default();
            for s in &sets {
                total.merge(black_box(s));
            }
            total.estimate()
        })
    });
    group.finish();
}

fn flush_encode(c: &mut Criterion) {
    flush_encode_n(c, 100_000, "encode_compress_100k_series");
    flush_encode_n(c, 1_000_000, "encode_compress_1m_series");
    prometheus_encode(c, 100_000);
    otlp_encode(c, 100_000);
}

/// The OTLP sink's work for one flush: attributes, grouping by host and name, protobuf, gzip.
fn otlp_encode(c: &mut Criterion, n: usize) {
    use harrier::config::{HistogramFormat, Temporality};
    use harrier::sink::otlp;
    use prost::Message;
    let flush = Flush {
        timestamp: 1_700_000_000,
        interval: Duration::from_secs(10),
        hostname: "web-1".to_string(),
        series: bench_series(n),
        ..Flush::default()
    };
    let opts = otlp::Options {
        temporality: Temporality::Delta,
        histogram_format: HistogramFormat::Exponential,
        max_buckets: 160,
        counter_expiry: Duration::from_secs(600),
        max_points: 10_000,
    };
    let mut totals = otlp::Totals::default();
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("otlp_100k_series", |b| {
        b.iter(|| {
            let requests = otlp::encode(black_box(&flush), &opts, &mut totals);
            requests
                .iter()
                .map(|r| otlp::gzip(&r.encode_to_vec()).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The Prometheus remote-write sink's work for one flush: labels, running counter totals, protobuf, snappy.
fn prometheus_encode(c: &mut Criterion, n: usize) {
    let flush = Flush {
        timestamp: 1_700_000_000,
        interval: Duration::from_secs(10),
        hostname: "web-1".to_string(),
        series: bench_series(n),
        ..Flush::default()
    };
    let mut totals = Totals::default();
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("prometheus_remote_write_100k_series", |b| {
        b.iter(|| {
            let (requests, duplicates) = encode_flush(black_box(&flush), &mut totals, 5000, Duration::from_secs(600));
            assert_eq!(duplicates, 0);
            requests.iter().map(|r| prometheus::compress(r).len()).sum::<usize>()
        })
    });
    group.finish();
}

/// Series shaped like a service's: a name, three tags, counters and gauges alternating.
fn bench_series(n: usize) -> Vec<Series> {
    (0..n)
        .map(|i| Series {
            name: format!("svc.requests.count.{i}").into(),
            suffix: Default::default(),
            tags: TagSet::from_tags([
                "env:prod".to_string(),
                format!("route:/v1/r{}", i % 50),
                format!("status:{}", 200 + i % 5),
            ]),
            value: i as f64 * 1.5,
            kind: if i % 2 == 0 {
                SeriesKind::Counter
            } else {
                SeriesKind::Gauge
            },
            timestamp: 1_700_000_000,
        })
        .collect()
}

fn flush_encode_n(c: &mut Criterion, n: usize, name: &str) {
    let series = bench_series(n);
    let mut group = c.benchmark_group("flush");
    group.throughput(Throughput::Elements(series.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(name, |b| {
        b.iter(|| {
            let (bodies, dropped) = build_bodies(black_box(&series), 25_000, "web-1", 10.0);
            assert_eq!(dropped, 0);
            bodies.len()
        })
    });
    group.finish();
}

/// Lines shaped like `harrier-load`'s: `load.c.m17:3|c|#tag0:value17,tag1:value24,tag2:value31`.
fn load_lines(n: usize, series: usize, mixed: bool) -> String {
    let mut rng = Rng(9);
    let mut out = String::new();
    for i in 0..n {
        let s = (i * 7919) % series;
        let kind = if mixed { ["c", "g", "ms", "h", "s"][s % 5] } else { "c" };
        let value = match kind {
            "s" => format!("member{}", rng.next() % 100_000),
            "c" => (1 + rng.next() % 5).to_string(),
            _ => format!("{}.{}", rng.next() % 1000, rng.next() % 100),
        };
        out.push_str(&format!(
            "load.{kind}.m{s}:{value}|{kind}|#tag0:value{},tag1:value{},tag2:value{}\n",
            s % 97,
            (s + 7) % 97,
            (s + 14) % 97
        ));
    }
    out
}

/// The worker's whole per-line path for its own lines: split, parse, key, aggregate.
fn worker_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker_path");
    for (name, series, mixed) in [("counters_1k", 1_000, false), ("mixed_10k", 10_000, true)] {
        let text = load_lines(100_000, series, mixed);
        // The worker's own core: the batch validated as UTF-8 once, then each line aggregated from its value alone
        // if its text is known, else parsed in full.
        let mut core = Ingester::new(ShardState::default(), Arc::default());
        group.throughput(Throughput::Elements(100_000));
        group.bench_function(name, |b| {
            b.iter(|| core.lines(black_box(text.as_bytes()), 1_700_000_000))
        });
    }
    // 150,000 bad lines (six parse errors in turn, in 1,400-byte packets): what each costs the worker that
    // rejects and counts it (its own counter and rate-limited log; no lock, no allocation).
    let bad: [&[u8]; 6] = [
        b"nopipe:1",
        b"x:1|zz",
        b"x:nan|g",
        b"x:1|c|@7",
        b"x:1|c|T-x",
        b"x:1|c|#a:b|@",
    ];
    let mut packets = vec![Vec::new()];
    for i in 0..150_000 {
        let p = packets.last_mut().unwrap();
        p.extend_from_slice(bad[i % bad.len()]);
        p.push(b'\n');
        if p.len() > 1400 {
            packets.push(Vec::new());
        }
    }
    let mut core = Ingester::new(ShardState::default(), Arc::default());
    group.throughput(Throughput::Elements(150_000));
    group.bench_function("bad_lines_150k", |b| {
        b.iter(|| {
            for p in &packets {
                core.lines(black_box(p), 1_700_000_000);
            }
            core.take_drops()
        })
    });
    group.finish();
}

criterion_group!(benches, shard_insert, tdigest, hll, flush_encode, worker_path);
criterion_main!(benches);
