//! One global and three locals on 127.0.0.1: the locals forward t-digests, HyperLogLogs and global-only counters
//! over gRPC; the global merges them and reports fleet-wide percentiles and unique counts.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use harrier::server::RunningServer;

/// A seeded xorshift generator: the same samples on every run.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u1, u2) = (self.next_f64().max(1e-12), self.next_f64());
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Sends `name:v1:v2:…|suffix` lines packed into datagrams of at most ~1400 bytes.
fn send_packed(addr: SocketAddr, name: &str, values: &[String], suffix: &str) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lines = 0;
    let mut datagram = String::new();
    let mut line = String::new();
    let flush_line = |line: &mut String, datagram: &mut String, lines: &mut usize| {
        if !line.is_empty() {
            datagram.push_str(&format!("{name}:{line}|{suffix}\n"));
            line.clear();
            *lines += 1;
        }
    };
    for (i, v) in values.iter().enumerate() {
        if line.len() + v.len() + name.len() + suffix.len() > 1300 {
            flush_line(&mut line, &mut datagram, &mut lines);
            sock.send_to(datagram.as_bytes(), addr).unwrap();
            datagram.clear();
            if i % 20_000 < 200 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !line.is_empty() {
            line.push(':');
        }
        line.push_str(v);
    }
    flush_line(&mut line, &mut datagram, &mut lines);
    if !datagram.is_empty() {
        sock.send_to(datagram.as_bytes(), addr).unwrap();
    }
    lines
}

/// Sends one line per member (sets cannot pack values).
fn send_lines(addr: SocketAddr, lines: &[String]) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = String::new();
    for (i, l) in lines.iter().enumerate() {
        if datagram.len() + l.len() > 1400 {
            sock.send_to(datagram.as_bytes(), addr).unwrap();
            datagram.clear();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        datagram.push_str(l);
        datagram.push('\n');
    }
    if !datagram.is_empty() {
        sock.send_to(datagram.as_bytes(), addr).unwrap();
    }
    lines.len()
}

async fn wait_lines(server: &RunningServer, n: usize) {
    let stats = server.telemetry.listeners[0].clone();
    let ok = eventually(Duration::from_secs(30), || {
        stats.lines.load(Ordering::Relaxed) >= n as u64
    })
    .await;
    assert!(ok, "took in {} of {n} lines", stats.lines.load(Ordering::Relaxed));
}

fn global_yaml(grpc: &str, interval: &str) -> String {
    config(
        &["udp://127.0.0.1:0"],
        &format!("grpc_address: \"{grpc}\"\npercentiles: [0.5, 0.9, 0.99]\n"),
    )
    .replace("interval: 1h", &format!("interval: {interval}"))
}

fn local_yaml(forward: SocketAddr, interval: &str, extra: &str) -> String {
    config(
        &["udp://127.0.0.1:0"],
        &format!(
            "forward_address: \"{forward}\"\naggregates: [min, max, count]\npercentiles: [0.5, 0.9, 0.99]\n{extra}"
        ),
    )
    .replace("interval: 1h", &format!("interval: {interval}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_reports_fleet_percentiles_and_unique_counts_from_three_locals() {
    let (global, global_sink) = start(&global_yaml("127.0.0.1:0", "1h")).await;
    let grpc = global.grpc_address.unwrap();
    let mut locals = Vec::new();
    for _ in 0..3 {
        locals.push(start(&local_yaml(grpc, "30s", "")).await);
    }

    // Three different distributions, 100,000 timer samples each.
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut per_local: Vec<Vec<f64>> = Vec::new();
    per_local.push((0..100_000).map(|_| rng.next_f64() * 100.0).collect());
    per_local.push((0..100_000).map(|_| rng.normal(3.0, 0.5).exp()).collect());
    per_local.push(
        (0..100_000)
            .map(|i| {
                if i % 2 == 0 {
                    rng.normal(20.0, 2.0)
                } else {
                    rng.normal(80.0, 5.0)
                }
            })
            .collect(),
    );
    // What is sent is what is compared: values are rounded by their text form.
    let texts: Vec<Vec<String>> = per_local
        .iter()
        .map(|vs| vs.iter().map(|v| format!("{v:.4}")).collect())
        .collect();
    let sent: Vec<Vec<f64>> = texts
        .iter()
        .map(|ts| ts.iter().map(|t| t.parse().unwrap()).collect())
        .collect();

    for (i, (server, _)) in locals.iter().enumerate() {
        let addr = server.udp_address().unwrap();
        let mut lines = send_packed(addr, "fleet.latency", &texts[i], "ms|#svc:api");
        // Sets: 100,000 distinct members, overlapping across locals.
        let (from, to) = [(0, 40_000), (30_000, 70_000), (60_000, 100_000)][i];
        let members: Vec<String> = (from..to).map(|m| format!("fleet.users:user-{m}|s")).collect();
        lines += send_lines(addr, &members);
        let mut other = Vec::new();
        for _ in 0..(i + 1) * 100 {
            other.push("global.requests:5|c|#veneurglobalonly".to_string());
        }
        for _ in 0..100 {
            other.push("plain.requests:1|c".to_string());
        }
        if i == 0 {
            other.push("local.latency:1:2:3:4|ms|#veneurlocalonly".to_string());
            other.push("local.users:a|s|#veneurlocalonly".to_string());
            other.push("local.users:b|s|#veneurlocalonly".to_string());
        }
        lines += send_lines(addr, &other);
        wait_lines(server, lines).await;
    }
    // The locals' final flushes forward to the global; then the global's final flush reports.
    let local_sinks: Vec<_> = locals.iter().map(|(_, s)| s.clone()).collect();
    for (server, _) in locals {
        server.shutdown().await;
    }
    assert!(
        eventually(Duration::from_secs(10), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            > 0)
        .await
    );
    global.shutdown().await;

    let g = global_sink.values();
    // Percentiles of the union, by rank error.
    let mut union: Vec<f64> = sent.iter().flatten().copied().collect();
    union.sort_by(f64::total_cmp);
    let rank = |v: f64| union.partition_point(|&x| x <= v) as f64 / union.len() as f64;
    for (q, suffix) in [(0.5, "50percentile"), (0.9, "90percentile"), (0.99, "99percentile")] {
        let got = g[&format!("fleet.latency.{suffix}#svc:api")];
        let exact = union[((q * union.len() as f64) as usize).min(union.len() - 1)];
        let err = (rank(got) - q).abs();
        println!(
            "p{}: global {got:.4}, exact {exact:.4}, rank error {:.4}%",
            q * 100.0,
            err * 100.0
        );
        assert!(err <= 0.01, "p{q}: rank error {err}");
    }
    // The global has no samples of its own, so it reports no aggregates of a mixed timer: the locals did.
    assert!(!g.contains_key("fleet.latency.count#svc:api"), "{g:?}");
    for (i, sink) in local_sinks.iter().enumerate() {
        let v = sink.values();
        let min = sent[i].iter().copied().fold(f64::INFINITY, f64::min);
        let max = sent[i].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(v["fleet.latency.min#svc:api"], min, "local {i}");
        assert_eq!(v["fleet.latency.max#svc:api"], max, "local {i}");
        assert_eq!(v["fleet.latency.count#svc:api"], 100_000.0, "local {i}");
        assert!(
            !v.contains_key("fleet.latency.50percentile#svc:api"),
            "local {i} leaves percentiles to the global"
        );
        assert!(!v.contains_key("fleet.users"), "local {i} leaves sets to the global");
        assert!(
            !v.contains_key("global.requests"),
            "local {i} leaves global-only counters to the global"
        );
        assert_eq!(v["plain.requests"], 100.0, "local {i}");
    }
    let users = g["fleet.users"];
    let set_err = (users - 100_000.0).abs() / 100_000.0;
    println!(
        "set: global estimate {users}, true union 100000, error {:.3}%",
        set_err * 100.0
    );
    assert!(set_err < 0.02, "set estimate {users}");
    assert_eq!(g["global.requests"], 5.0 * (100.0 + 200.0 + 300.0));
    assert!(
        !g.contains_key("plain.requests"),
        "plain counters are flushed by the locals only"
    );
    // veneurlocalonly: computed and flushed by the local alone.
    let l0 = local_sinks[0].values();
    assert_eq!(l0["local.latency.count"], 4.0);
    assert!(l0.contains_key("local.latency.50percentile"));
    assert_eq!(l0["local.users"], 2.0);
    assert!(g.keys().all(|k| !k.starts_with("local.")), "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sketches_sent_while_the_global_is_down_arrive_when_it_returns() {
    let (global, _) = start(&global_yaml("127.0.0.1:0", "1h")).await;
    let grpc = global.grpc_address.unwrap();
    let (local, local_sink) = start(&local_yaml(grpc, "300ms", "")).await;
    let addr = local.udp_address().unwrap();
    // The global goes away; the local flushes (and fails to forward) for at least two intervals.
    global.shutdown().await;
    let values: Vec<String> = (1..=100).map(|v| v.to_string()).collect();
    let lines = send_packed(addr, "outage.latency", &values, "ms|#veneurglobalonly");
    let lines = lines + send_lines(addr, &["outage.users:a|s".to_string(), "outage.users:b|s".to_string()]);
    wait_lines(&local, lines).await;
    assert!(
        eventually(Duration::from_secs(10), || local
            .telemetry
            .peek("harrier.forward.errors", "")
            >= 2)
        .await,
        "forwarding fails while the global is down"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The global comes back on the same address.
    let (global, global_sink) = start(&global_yaml(&grpc.to_string(), "1h")).await;
    assert!(
        eventually(Duration::from_secs(10), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            >= 2)
        .await,
        "the kept sketches arrive"
    );
    local.shutdown().await;
    global.shutdown().await;
    let g = global_sink.values();
    assert_eq!(g["outage.latency.count"], 100.0, "every sample arrives once: {g:?}");
    assert_eq!(g["outage.latency.min"], 1.0);
    assert_eq!(g["outage.latency.max"], 100.0);
    assert!(g.contains_key("outage.latency.50percentile"), "{g:?}");
    assert_eq!(g["outage.users"], 2.0);
    assert_eq!(local_sink.self_metric("harrier.forward.dropped", ""), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sketches_older_than_forward_max_intervals_are_dropped_and_counted() {
    // A port with nothing behind it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (local, sink) = start(&local_yaml(closed, "200ms", "forward_max_intervals: 2\n")).await;
    let addr = local.udp_address().unwrap();
    send_lines(addr, &["lost.requests:1|c|#veneurglobalonly".to_string()]);
    wait_lines(&local, 1).await;
    assert!(
        eventually(Duration::from_secs(10), || sink
            .self_metric("harrier.forward.dropped", "cause:too_many_intervals")
            >= 1.0)
        .await,
        "the drop is counted in the local's self-metrics"
    );
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_lost_answer_is_merged_once() {
    use harrier::forward::proto::forward_client::ForwardClient;
    use harrier::forward::proto::{metric, Metric, MetricType, Scope};
    let (global, sink) = start(&global_yaml("127.0.0.1:0", "1h")).await;
    let grpc = global.grpc_address.unwrap();
    let mut client = ForwardClient::connect(format!("http://{grpc}")).await.unwrap();
    let metric = Metric {
        name: "resent.requests".into(),
        tags: vec!["a:b".into()],
        r#type: MetricType::Counter as i32,
        scope: Scope::Global as i32,
        value: Some(metric::Value::Counter(7.0)),
    };
    // Sender 0xaa's batches 1, 1 again (a retry), 2, then 1 once more (late); sender 0xbb's batch 1.
    for id in [
        "00000000000000aa-1",
        "00000000000000aa-1",
        "00000000000000aa-2",
        "00000000000000aa-1",
        "00000000000000bb-1",
    ] {
        let mut req = tonic::Request::new(tokio_stream::iter(vec![metric.clone()]));
        req.metadata_mut().insert("harrier-batch-id", id.parse().unwrap());
        client.send_metrics(req).await.unwrap();
    }
    global.shutdown().await;
    assert_eq!(
        sink.values()["resent.requests#a:b"],
        21.0,
        "three distinct batches, each merged once"
    );
    assert_eq!(sink.self_metric("harrier.import.duplicates", ""), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_tree_reports_at_the_root() {
    // local → middle (a global that itself forwards) → root.
    let (root, root_sink) = start(&global_yaml("127.0.0.1:0", "1h")).await;
    let root_grpc = root.grpc_address.unwrap();
    let middle_yaml = local_yaml(root_grpc, "1h", "grpc_address: \"127.0.0.1:0\"\n");
    let (middle, middle_sink) = start(&middle_yaml).await;
    let middle_grpc = middle.grpc_address.unwrap();
    let (local, local_sink) = start(&local_yaml(middle_grpc, "1h", "")).await;
    let addr = local.udp_address().unwrap();
    let values: Vec<String> = (1..=1000).map(|v| v.to_string()).collect();
    let mut lines = send_packed(addr, "tree.latency", &values, "ms");
    lines += send_lines(
        addr,
        &[
            "tree.users:a|s".to_string(),
            "tree.users:b|s".to_string(),
            "tree.total:3|c|#veneurglobalonly".to_string(),
        ],
    );
    wait_lines(&local, lines).await;
    local.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || middle
            .telemetry
            .peek("harrier.import.metrics", "")
            >= 3)
        .await
    );
    middle.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || root
            .telemetry
            .peek("harrier.import.metrics", "")
            >= 3)
        .await
    );
    root.shutdown().await;

    let r = root_sink.values();
    let p50 = r["tree.latency.50percentile"];
    assert!((p50 - 500.0).abs() <= 10.0, "root p50 {p50}");
    assert_eq!(r["tree.users"], 2.0);
    assert_eq!(r["tree.total"], 3.0);
    // The local reports its own aggregates; the middle tier reports neither percentiles nor sets.
    assert_eq!(local_sink.values()["tree.latency.count"], 1000.0);
    let m = middle_sink.values();
    assert!(m.keys().all(|k| !k.starts_with("tree.")), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_sample_of_zero_reaches_the_global_with_the_rest_of_its_digest() {
    // Regression: a 0 made the reciprocal sum infinite, and the global refused the whole digest as bad_digest.
    let (global, global_sink) = start(&global_yaml("127.0.0.1:0", "1h")).await;
    let grpc = global.grpc_address.unwrap();
    let (local, _) = start(&local_yaml(grpc, "1h", "")).await;
    let addr = local.udp_address().unwrap();
    let values: Vec<String> = ["0", "-0", "1", "2", "3", "0.000", "4"]
        .iter()
        .map(|v| v.to_string())
        .collect();
    let mut lines = send_packed(addr, "cache.lookup", &values, "ms");
    lines += send_packed(addr, "cache.all", &values, "ms|#veneurglobalonly");
    wait_lines(&local, lines).await;
    local.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            >= 2)
        .await
    );
    global.shutdown().await;
    assert_eq!(
        global_sink.self_metric("harrier.import.errors", ""),
        0.0,
        "nothing refused"
    );
    let g = global_sink.values();
    assert_eq!(g["cache.lookup.50percentile"], 1.0, "{g:?}");
    assert_eq!(g["cache.all.count"], 7.0, "every sample counted at the global: {g:?}");
    assert_eq!(g["cache.all.min"], 0.0);
    assert_eq!(g["cache.all.max"], 4.0);
}
