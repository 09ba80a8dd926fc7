//! Tests of [`super`]: what a worker does with its lines (the [`Ingester`]), and the lanes batches travel on.

use super::*;
use crate::aggregate::admit::{Limit, Limits};

/// `n` bad lines of each of these reasons, interleaved with good ones.
const BAD: [(&str, &[u8]); 6] = [
    ("no_pipe", b"nopipe:1"),
    ("bad_type", b"x:1|zz"),
    ("non_finite_value", b"x:nan|g"),
    ("sample_rate_out_of_range", b"x:1|c|@7"),
    ("bad_timestamp", b"x:1|c|T-x"),
    ("invalid_utf8", b"x\xff:1|c"),
];

fn ingester(series_limit: usize) -> Ingester {
    let limits = (series_limit > 0).then(|| Arc::new(Limits::series_limit(series_limit)));
    Ingester::new(ShardState::with_limits(limits), Arc::default())
}

#[test]
fn a_flood_of_150k_bad_lines_among_good_ones_is_counted_by_reason_in_the_worker_and_joins_the_telemetry_at_the_flush() {
    let mut core = ingester(0);
    let per_reason = 25_000u64;
    let mut good = 0u64;
    // Packets of 50 lines, bad and good mixed in each, some packets not valid UTF-8 as a whole.
    let mut packet = Vec::new();
    let mut lines = 0u64;
    for i in 0..per_reason {
        for (_, bad) in BAD {
            packet.extend_from_slice(bad);
            packet.push(b'\n');
        }
        packet.extend_from_slice(format!("good.count:1|c|#k:{}\n", i % 100).as_bytes());
        good += 1;
        if packet.len() > 1400 || i + 1 == per_reason {
            lines += core.lines(&packet, 1_700_000_000);
            packet.clear();
        }
    }
    assert_eq!(lines, per_reason * BAD.len() as u64 + good);
    let drops = core.take_drops();
    for (reason, _) in BAD {
        assert_eq!(drops.rejected_for(reason), per_reason, "{reason}");
    }
    assert_eq!(drops.total(), 150_000);
    // The good lines were all aggregated, the rest of each packet notwithstanding.
    let interval = core.take_interval(1_700_000_000);
    let sum: f64 = interval
        .series
        .iter()
        .map(|e| match e.value {
            crate::aggregate::Value::Counter(v) => v,
            _ => panic!("only counters were sent"),
        })
        .sum();
    assert_eq!((interval.series.len(), sum), (100, good as f64));
    // Counted in the worker only: the shared telemetry sees them once they are added, at the flush.
    let telemetry = Telemetry::default();
    assert_eq!(
        telemetry
            .rejected
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum::<u64>(),
        0
    );
    drops.add_to(&telemetry, &[]);
    for (reason, _) in BAD {
        let i = ParseError::REASONS.iter().position(|r| *r == reason).unwrap();
        assert_eq!(telemetry.rejected[i].load(Ordering::Relaxed), per_reason, "{reason}");
    }
    assert_eq!(core.take_drops(), DropCounts::default(), "taken drops are reset");
}

#[test]
fn new_series_over_the_limit_and_timestamps_on_histograms_are_counted_per_reason() {
    let mut core = ingester(10);
    let mut packet = String::new();
    for i in 0..30 {
        packet.push_str(&format!("s{i}:1|c\n"));
    }
    packet.push_str("h:1|h|T1700000000\nh:2|ms|T1700000000\n");
    core.lines(packet.as_bytes(), 1);
    let drops = core.take_drops();
    assert_eq!(drops.limited_by(Limit::SeriesLimit), 20);
    assert_eq!(drops.timestamp_on_unsupported_type, 2);
    let telemetry = Telemetry::default();
    drops.add_to(&telemetry, &[]);
    assert_eq!(telemetry.peek("harrier.series.dropped", "reason:series_limit"), 20);
    assert_eq!(
        telemetry.peek("harrier.lines.dropped", "reason:timestamp_on_unsupported_type"),
        2
    );
}

fn senders(n: usize) -> (Ingest, Vec<mpsc::UnboundedReceiver<ShardMsg>>) {
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        workers.push(ShardSender {
            tx,
            raw_queued: Arc::default(),
            waker: Arc::new(Waker::new().unwrap()),
        });
        inboxes.push(rx);
    }
    let ingest = Ingest {
        workers,
        next: Arc::default(),
        lane: 0,
        pool: BufferPool::default(),
    };
    (ingest, inboxes)
}

#[test]
fn each_lane_sends_every_batch_to_one_worker_and_lanes_spread_over_the_workers() {
    let (ingest, mut inboxes) = senders(3);
    let lanes: Vec<Ingest> = (0..6).map(|_| ingest.lane()).collect();
    for (l, lane) in lanes.iter().enumerate() {
        for _ in 0..4 {
            let mut batch = lane.batch(0);
            batch.push_packet(format!("lane{l}:1|c").as_bytes());
            assert!(lane.send_blocking(batch));
        }
    }
    for inbox in &mut inboxes {
        let mut seen = Vec::new();
        while let Ok(ShardMsg::Raw(batch)) = inbox.try_recv() {
            seen.push(String::from_utf8(batch.data).unwrap());
        }
        // Two lanes per worker, four batches each, in the order sent.
        assert_eq!(seen.len(), 8, "{seen:?}");
        let mut names: Vec<&String> = seen.iter().collect();
        names.dedup();
        assert_eq!(names.len(), 2, "{seen:?}");
    }
}
