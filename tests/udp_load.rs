//! 200,000 counter increments over UDP at a steady rate: the flushed total equals what was sent.
//! In its own test binary so that no other test competes for the CPU while it runs.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_counter_increments_over_udp_all_arrive() {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "")).await;
    let addr = server.udp_address().unwrap();
    const LINES_PER_DATAGRAM: usize = 10;
    const DATAGRAMS: usize = 20_000;
    // 10 series, 20,000 increments each, spread over every shard.
    let datagrams: Vec<String> = (0..DATAGRAMS)
        .map(|d| {
            (0..LINES_PER_DATAGRAM)
                .map(|i| format!("load.counter:1|c|#series:{},batch:{}\n", i, d % 2))
                .collect()
        })
        .collect();
    let sender = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A steady 50,000 lines per second: 50 datagrams every 10 ms.
        let start = Instant::now();
        for (i, d) in datagrams.iter().enumerate() {
            sock.send_to(d.as_bytes(), addr).unwrap();
            if i % 50 == 49 {
                let due = Duration::from_millis(10 * (i as u64 + 1) / 50);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    });
    sender.join().unwrap();
    let stats = server.telemetry.listeners[0].clone();
    let total = (LINES_PER_DATAGRAM * DATAGRAMS) as u64;
    eventually(Duration::from_secs(20), || stats.lines.load(Ordering::Relaxed) >= total).await;
    let received = stats.packets.load(Ordering::Relaxed);
    server.shutdown().await;
    let sum: f64 = sink
        .user_series()
        .iter()
        .filter(|s| &*s.name == "load.counter")
        .map(|s| s.value)
        .sum();
    assert_eq!(received, DATAGRAMS as u64, "datagrams taken in by the server");
    assert_eq!(sum, total as f64, "every increment is in the flushed total");
    assert_eq!(sink.user_series().len(), 20, "10 series × 2 batch tags");
}
