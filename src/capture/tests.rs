//! Tests of [`Capture`](super::Capture): idle cost, order and names, the three ends, one at a time; and of the
//! query of `GET /debug/capture`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use super::*;

fn capture() -> Capture {
    Capture::new(vec!["udp://127.0.0.1:8125".into(), "tcp://127.0.0.1:8125".into()])
}

/// Every chunk until the capture ends, as one file.
fn collect(mut rx: Receiver<Bytes>) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some(chunk) = rx.blocking_recv() {
        file.extend_from_slice(&chunk);
    }
    file
}

fn records(file: &[u8]) -> Vec<Record> {
    Reader::new(file).unwrap().collect::<Result<_, _>>().unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn records_while_idle_write_nothing_and_a_captures_records_come_back_in_order_with_their_listener_names() {
    let c = capture();
    c.record(0, b"before:1|c");
    let rx = c.start(Duration::from_millis(500), DEFAULT_MAX_BYTES).unwrap();
    assert!(c.recording() && c.running());
    let sent: Vec<(usize, Vec<u8>)> = (0..300).map(|i| (i % 2, format!("m{i}:1|c").into_bytes())).collect();
    for (listener, data) in &sent {
        c.record(*listener, data);
    }
    let file = collect(rx);
    c.record(1, b"after:1|c");
    let got = records(&file);
    assert_eq!(got.len(), sent.len());
    for (r, (listener, data)) in got.iter().zip(&sent) {
        assert_eq!(&r.payload, data);
        assert_eq!(r.listener, c.listeners()[*listener]);
    }
    assert!(got.windows(2).all(|w| w[0].received_ns <= w[1].received_ns));
    wait_until("the capture is over", || !c.running());
    assert!(!c.recording());
    assert_eq!(c.last_end(), Some(CaptureEnd::Duration));
    assert_eq!((c.records(), c.dropped()), (300, 0));
}

#[test]
fn a_listener_index_out_of_range_is_recorded_as_unknown() {
    let c = capture();
    let rx = c.start(Duration::from_millis(200), DEFAULT_MAX_BYTES).unwrap();
    c.record(7, b"x:1|c");
    let got = records(&collect(rx));
    assert_eq!(got[0].listener, "unknown");
}

#[test]
fn max_bytes_of_compressed_output_ends_the_capture() {
    let c = capture();
    let rx = c.start(Duration::from_secs(60), 4096).unwrap();
    let started = Instant::now();
    // Incompressible payloads: a few make more than 4 KiB of output.
    let seed = std::sync::atomic::AtomicU64::new(0x2545_f491_4f6c_dd1d);
    let noise = || {
        let mut x = seed.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>()
    };
    let file = std::thread::scope(|scope| {
        scope.spawn(|| {
            while c.recording() && started.elapsed() < Duration::from_secs(20) {
                c.record(0, &noise());
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        collect(rx)
    });
    assert_eq!(c.last_end(), Some(CaptureEnd::MaxBytes));
    assert!(started.elapsed() < Duration::from_secs(20));
    // Over by at most the last chunk and the end of the frame.
    assert!(file.len() >= 4096 && file.len() < 4096 + (300 << 10), "{}", file.len());
    assert!(!records(&file).is_empty());
}

#[test]
fn a_dropped_receiver_ends_the_capture_and_recording_stops() {
    let c = capture();
    let rx = c.start(Duration::from_secs(60), DEFAULT_MAX_BYTES).unwrap();
    c.record(0, b"x:1|c");
    drop(rx);
    wait_until("the capture is over", || !c.running());
    assert!(!c.recording());
    assert_eq!(c.last_end(), Some(CaptureEnd::ClientGone));
}

#[test]
fn one_capture_runs_at_a_time_and_the_next_can_start_once_it_ended() {
    let c = capture();
    let rx = c.start(Duration::from_millis(300), DEFAULT_MAX_BYTES).unwrap();
    assert!(matches!(c.start(Duration::from_secs(1), 1024), Err(CaptureError::Busy)));
    collect(rx);
    wait_until("the capture is over", || !c.running());
    let rx = c.start(Duration::from_millis(100), DEFAULT_MAX_BYTES).unwrap();
    c.record(1, b"second:1|c");
    assert_eq!(records(&collect(rx)).len(), 1);
}

#[test]
fn a_capture_needs_a_duration_and_bytes() {
    let c = capture();
    assert!(matches!(
        c.start(Duration::ZERO, 10),
        Err(CaptureError::Parameter { .. })
    ));
    assert!(matches!(
        c.start(Duration::from_secs(1), 0),
        Err(CaptureError::Parameter { .. })
    ));
    assert!(!c.running());
}

#[test]
fn the_query_takes_a_duration_and_max_bytes_and_names_a_bad_parameter() {
    assert_eq!(parse_query(None).unwrap(), (DEFAULT_DURATION, DEFAULT_MAX_BYTES));
    assert_eq!(
        parse_query(Some("duration=500ms&max_bytes=1000")).unwrap(),
        (Duration::from_millis(500), 1000)
    );
    assert_eq!(parse_query(Some("duration=2m")).unwrap().0, Duration::from_secs(120));
    for (query, name) in [
        ("duration=soon", "duration"),
        ("duration=0s", "duration"),
        ("duration=48h", "duration"),
        ("max_bytes=-1", "max_bytes"),
        ("max_bytes=0", "max_bytes"),
        ("max-bytes=10", "max-bytes"),
    ] {
        let e = parse_query(Some(query)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("invalid {name}=")), "{query}: {e}");
    }
}
