//! The proxy's work per forwarded metric, on one core: the routing decision alone (the series key's routing hash
//! and the rendezvous choice over 3 globals), and the whole per-metric path of a proxy (take each metric of a
//! received batch as its bytes, read its series key in place, route it, write it into the owning global's batch).
//!
//! `cargo bench --bench route`; read `elem/s` (metrics per second).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harrier::forward::proto::{metric, Centroid, Histogram, Metric, MetricType, Scope};
use harrier::forward::route::{route_hash, Members};
use harrier::forward::wire::{route_key, RawBatch};
use harrier::forward::{to_view, view};
use prost::Message;

/// 10,000 forwarded metrics of the shapes a local sends: global-only counters, and t-digests of 20 centroids,
/// each with three tags.
fn metrics() -> Vec<Metric> {
    (0..10_000)
        .map(|i| {
            let tags = vec![
                "env:prod".to_string(),
                format!("route:/v{}", i % 17),
                format!("status:{}", 200 + i % 5),
            ];
            if i % 2 == 0 {
                Metric {
                    name: format!("svc.requests.{i}"),
                    tags,
                    r#type: MetricType::Counter as i32,
                    scope: Scope::Global as i32,
                    value: Some(metric::Value::Counter(i as f64)),
                }
            } else {
                Metric {
                    name: format!("svc.latency.{i}"),
                    tags,
                    r#type: MetricType::Timer as i32,
                    scope: Scope::Mixed as i32,
                    value: Some(metric::Value::Histogram(Histogram {
                        centroids: (0..20)
                            .map(|c| Centroid {
                                mean: f64::from(c) * 1.5,
                                weight: 1.0,
                            })
                            .collect(),
                        compression: 200,
                        min: 0.0,
                        max: 28.5,
                        count: 20.0,
                        sum: 285.0,
                        reciprocal_sum: 0.0,
                        report_stats: false,
                    })),
                }
            }
        })
        .collect()
}

fn route(c: &mut Criterion) {
    let full = metrics();
    let encoded: Vec<Vec<u8>> = full.iter().map(Message::encode_to_vec).collect();
    let ms: Vec<view::Metric> = full.into_iter().map(to_view).collect();
    let members = Members::new(["10.0.0.1:8128", "10.0.0.2:8128", "10.0.0.3:8128"]);
    let mut g = c.benchmark_group("proxy_route");
    g.throughput(Throughput::Elements(ms.len() as u64));
    g.bench_function("route_only", |b| {
        b.iter(|| {
            let mut load = [0u32; 3];
            for m in &ms {
                let owner = members.owner(route_hash(m), |_| true).unwrap_or(0);
                load[owner] += 1;
            }
            black_box(load)
        })
    });
    // What a proxy does per metric: take it from a received batch as its bytes, read its series key in place,
    // route it, and write it into the owning global's batch.
    let received = RawBatch {
        metrics: encoded.iter().map(|b| Bytes::from(b.clone())).collect(),
    }
    .encode_to_vec();
    let received = Bytes::from(received);
    g.bench_function("decode_route_encode", |b| {
        let mut out: Vec<Vec<u8>> = (0..3).map(|_| Vec::with_capacity(1 << 20)).collect();
        b.iter(|| {
            for o in out.iter_mut() {
                o.clear();
            }
            let Ok(batch) = RawBatch::decode(received.clone()) else {
                return 0;
            };
            let mut parts: Vec<RawBatch> = (0..3).map(|_| RawBatch::default()).collect();
            for m in batch.metrics {
                let Some(h) = route_key(&m) else { continue };
                let owner = members.owner(h, |_| true).unwrap_or(0);
                parts[owner].metrics.push(m);
            }
            for (p, o) in parts.iter().zip(out.iter_mut()) {
                let _ = p.encode(o);
            }
            black_box(out.iter().map(Vec::len).sum::<usize>())
        })
    });
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
