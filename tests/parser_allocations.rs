//! Parsing a metric line performs no heap allocation: the parser only borrows from the packet.
//!
//! This binary installs a counting global allocator (`tests/support/counting_alloc.rs`).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use harrier::protocol::{self, Message, MetricValue};

const METRIC_LINES: &[&str] = &[
    "svc.api.request.latency:12.5|ms|@0.5|#env:prod,route:/v1/charges,status:200",
    "deploys:1|c|#svc:api",
    "queue.depth:1873|g",
    "users.active:user-38213|s|#env:prod",
    "db.query.time:1.2:3.4:0.9:12.1|h|#env:prod,db:primary",
    "payload.bytes:5231|d|#a,,b|c:ci-1234|card:high|e:it-false",
    "gc.pause:0.35|ms|#gen:young|T1700000000",
    "big:1_000|c|@0.25",
    "hex:0x1p4|g",
];

#[test]
fn parsing_metric_lines_allocates_nothing() {
    let packet = (METRIC_LINES.join("\n") + "\n").repeat(50);
    let mut checksum = 0.0;
    let mut lines = 0;
    let allocations = allocations_during(|| {
        for result in protocol::parse_packet(packet.as_bytes()) {
            let Ok(Message::Metric(m)) = result else {
                panic!("every line of the fixture is a valid metric");
            };
            lines += 1;
            match m.value {
                MetricValue::Numbers(v) => checksum += v.iter().sum::<f64>(),
                MetricValue::SetMember(s) => checksum += s.len() as f64,
            }
            checksum += m.tags.iter().map(str::len).sum::<usize>() as f64 + m.sample_rate;
            checksum += m.name.len() as f64 + m.timestamp.unwrap_or(0) as f64;
        }
    });
    assert_eq!(lines, METRIC_LINES.len() * 50);
    assert!(checksum > 0.0);
    assert_eq!(
        allocations, 0,
        "parsing {lines} metric lines allocated {allocations} times"
    );
}

#[test]
fn rejecting_bad_metric_lines_allocates_nothing() {
    let packet = "nopipe\nx:abc|c\nx:1|gauge\nx:nan|g\nx:1|c|@2\nx:1|c|Tsoon\n:1|c\nx:|c\n";
    let mut rejected = 0;
    let allocations = allocations_during(|| {
        for result in protocol::parse_packet(packet.as_bytes()) {
            if let Err(e) = result {
                rejected += 1;
                assert!(!e.reason().is_empty());
            }
        }
    });
    assert_eq!(rejected, 8);
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_sees_allocations_so_a_zero_is_meaningful() {
    let allocations = allocations_during(|| {
        let v: Vec<u64> = std::hint::black_box((0..64).collect());
        assert_eq!(v.len(), 64);
    });
    assert!(allocations >= 1);
}
