//! Parser throughput on a fixed, realistic mix of DogStatsD lines.
//!
//! `cargo bench --bench parse`. The figure to read is `elem/s` (lines per second on one core).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harrier::protocol::{self, Message, MetricValue};

/// The mix: timers with rates and tags, counters, gauges, sets, packed values, an event and a service check.
const MIX: &[&str] = &[
    "svc.api.request.latency:12.5|ms|@0.5|#env:prod,route:/v1/charges,status:200",
    "svc.api.requests:1|c|#env:prod,route:/v1/charges,status:200",
    "svc.api.request.latency:48.25|ms|#env:prod,route:/v1/refunds,status:500",
    "svc.worker.queue.depth:1873|g|#env:prod,queue:emails",
    "svc.api.requests:1|c|@0.1|#env:prod,route:/v1/customers,status:201",
    "svc.users.active:user-38213|s|#env:prod",
    "svc.db.query.time:1.2:3.4:0.9:12.1|h|#env:prod,db:primary,table:charges",
    "deploys:1|c|#svc:api",
    "svc.cache.hit_ratio:0.9731|g|#env:prod,cache:sessions,region:us-east-1",
    "svc.payload.bytes:5231|d|#env:prod,route:/v1/charges",
    "svc.api.requests:3|c|#env:prod,route:/v1/charges,status:200|c:ci-1234abcd",
    "svc.gc.pause:0.35|ms|#env:prod,gen:young|T1700000000",
    "_e{21,36}:Deploy of api started|Build 1234 rolled out to 10% of hosts|t:info|#svc:api,env:prod",
    "_sc|svc.api.up|0|#env:prod,region:us-east-1|m:all good",
];

fn packet(lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(MIX[i % MIX.len()].as_bytes());
        out.push(b'\n');
    }
    out
}

/// Parses every line and touches what a consumer reads (values and tags), returning a checksum.
fn consume(packet: &[u8]) -> f64 {
    let mut acc = 0.0;
    for result in protocol::parse_packet(packet) {
        match result {
            Ok(Message::Metric(m)) => {
                match m.value {
                    MetricValue::Numbers(v) => acc += v.iter().sum::<f64>(),
                    MetricValue::SetMember(s) => acc += s.len() as f64,
                }
                acc += m.tags.iter().map(str::len).sum::<usize>() as f64;
            }
            Ok(Message::Event(e)) => acc += e.raw_text.len() as f64,
            Ok(Message::ServiceCheck(c)) => acc += f64::from(c.status.code()),
            Err(_) => acc -= 1.0,
        }
    }
    acc
}

fn parse_mix(c: &mut Criterion) {
    let lines = 1400;
    let data = packet(lines);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function("realistic_mix", |b| b.iter(|| consume(black_box(&data))));
    group.finish();
}

criterion_group!(benches, parse_mix);
criterion_main!(benches);
