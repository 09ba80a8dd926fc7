//! The Datadog sink against a fake intake on 127.0.0.1 that checks the header, inflates and parses each body.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::intake::{Intake, Reply, Request};
use crate::common::*;
use harrier::aggregate::TagSet;
use harrier::config::{Config, DatadogConfig, SeriesApi};
use harrier::server;
use harrier::sink::datadog::DatadogSink;
use harrier::sink::{Flush, Series, SeriesKind, Sink, SinkOutcome};
use harrier::telemetry::Telemetry;

const KEY: &str = "test-api-key-0123456789";

fn dd_config(intake: &Intake, max_per_body: usize) -> DatadogConfig {
    DatadogConfig {
        api_key: KEY.to_string(),
        api_hostname: intake.url(),
        flush_max_per_body: max_per_body,
        // These tests pin v1 JSON ("series_api: v1 still gives today's output"); tests/datadog_v2.rs covers v2.
        series_api: SeriesApi::V1,
        ..DatadogConfig::default()
    }
}

fn flush_of(n: usize, interval: Duration) -> Arc<Flush> {
    let series = (0..n)
        .map(|i| Series {
            name: format!("bulk.metric.{i}").into(),
            suffix: Default::default(),
            tags: TagSet::from_tags([format!("shard:{}", i % 7)]),
            value: i as f64,
            kind: if i % 2 == 0 {
                SeriesKind::Counter
            } else {
                SeriesKind::Gauge
            },
            timestamp: 1_700_000_000,
        })
        .collect();
    Arc::new(Flush {
        timestamp: 1_700_000_000,
        interval,
        hostname: "h".to_string(),
        series,
        ..Flush::default()
    })
}

/// Series names in the accepted series bodies, with how often each arrived.
fn arrived(requests: &[Request], accepted: impl Fn(usize) -> bool) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        if r.path != "/api/v1/series" || !accepted(i) {
            continue;
        }
        for s in r.json()["series"].as_array().unwrap() {
            *out.entry(s["metric"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    out
}

fn sink(intake: &Intake, max_per_body: usize) -> (DatadogSink, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::default());
    (
        DatadogSink::new("dd", dd_config(intake, max_per_body), telemetry.clone()).unwrap(),
        telemetry,
    )
}

/// Requests counted by result, from one collection of the self-metrics (collecting resets them).
fn requests_counted(collected: &[Series], result: &str) -> f64 {
    collected
        .iter()
        .filter(|s| &*s.name == "harrier.sink.requests" && s.tags.contains(&format!("result:{result}")))
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_sends_the_documented_json_with_the_key_only_in_the_header() {
    let intake = Intake::accepting().await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 10s\nhostname: web-1\nnum_workers: 2\n\
         aggregates: [min, max, count]\npercentiles: [0.5, 0.99]\n\
         metric_sinks: [{{kind: datadog, name: dd, config: {{api_key: {KEY}, api_hostname: \"{}\", series_api: v1}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).unwrap();
    let server = server::start(config, vec![]).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.udp_address().unwrap();
    sock.send_to(
        b"page.views:5|c|@0.5|#env:prod\npage.views:10|c|#env:prod\nqueue.depth:42|g|#host:db-7,device:sda1\n\
          api.latency:10|ms|#route:/a\napi.latency:20|ms|#route:/a\napi.latency:30|ms|#route:/a\n\
          users:a|s\nusers:b|s\nusers:a|s\n_sc|db.up|1|#db:main|m:slow\n_e{6,5}:Deploy|v1.2.|t:success|#svc:api",
        addr,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || server.telemetry.listeners[0]
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 11)
        .await
    );
    server.shutdown().await;

    let reqs = intake.requests.lock().unwrap().clone();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers.get("dd-api-key").map(String::as_str), Some(KEY), "{}", r.path);
        assert!(
            !String::from_utf8_lossy(&r.body).contains(KEY),
            "the key is only in the header"
        );
        assert!(!r.path.contains(KEY));
    }
    let series_reqs = intake.requests_to("/api/v1/series");
    assert_eq!(
        series_reqs[0].headers.get("content-encoding").map(String::as_str),
        Some("deflate")
    );
    let mut by_name: HashMap<String, serde_json::Value> = HashMap::new();
    for r in &series_reqs {
        for s in r.json()["series"].as_array().unwrap() {
            by_name.insert(s["metric"].as_str().unwrap().to_string(), s.clone());
        }
    }
    let views = &by_name["page.views"];
    assert_eq!(views["type"], "rate");
    assert_eq!(views["interval"], 10);
    assert_eq!(views["points"][0][1], 2.0, "(5 / 0.5 + 10) / 10 s");
    assert_eq!(views["host"], "web-1");
    assert_eq!(views["tags"], serde_json::json!(["env:prod"]));
    let depth = &by_name["queue.depth"];
    assert_eq!(depth["type"], "gauge");
    assert_eq!(depth["points"][0][1], 42.0);
    assert_eq!(depth["host"], "db-7");
    assert_eq!(depth["device"], "sda1");
    assert_eq!(depth["tags"], serde_json::json!([]));
    assert_eq!(by_name["api.latency.min"]["points"][0][1], 10.0);
    assert_eq!(by_name["api.latency.max"]["points"][0][1], 30.0);
    assert_eq!(by_name["api.latency.count"]["type"], "rate");
    assert_eq!(by_name["api.latency.count"]["points"][0][1], 0.3);
    assert_eq!(by_name["api.latency.50percentile"]["type"], "gauge");
    assert_eq!(by_name["api.latency.50percentile"]["points"][0][1], 20.0);
    assert!(by_name.contains_key("api.latency.99percentile"));
    assert_eq!(by_name["users"]["type"], "gauge");
    assert_eq!(by_name["users"]["points"][0][1], 2.0);
    let ts = views["points"][0][0].as_i64().unwrap();
    assert!((ts - harrier::telemetry::unix_now()).abs() < 60);

    let checks = intake.requests_to("/api/v1/check_run");
    assert_eq!(checks.len(), 1);
    let check = &checks[0].json()[0];
    assert_eq!(check["check"], "db.up");
    assert_eq!(check["status"], 1);
    assert_eq!(check["host_name"], "web-1");
    assert_eq!(check["message"], "slow");
    assert_eq!(check["tags"], serde_json::json!(["db:main"]));

    let events = intake.requests_to("/api/v1/events");
    assert_eq!(events.len(), 1);
    let event = events[0].json();
    assert_eq!(event["title"], "Deploy");
    assert_eq!(event["text"], "v1.2.");
    assert_eq!(event["alert_type"], "success");
    assert_eq!(event["priority"], "normal");
    assert_eq!(event["host"], "web-1");
    assert_eq!(event["tags"], serde_json::json!(["svc:api"]));
    println!(
        "captured series body: {}",
        String::from_utf8_lossy(&series_reqs[0].body)
    );
    println!("captured check_run body: {}", String::from_utf8_lossy(&checks[0].body));
    println!("captured event body: {}", String::from_utf8_lossy(&events[0].body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_thousand_series_go_out_in_three_bodies_each_series_once() {
    let intake = Intake::accepting().await;
    let (sink, _) = sink(&intake, 25_000);
    let outcome = sink.flush(flush_of(60_000, Duration::from_secs(10))).await;
    assert_eq!(outcome, SinkOutcome::Ok);
    let reqs = intake.requests_to("/api/v1/series");
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.json()["series"].as_array().unwrap().len(), 20_000);
    }
    let got = arrived(&reqs, |_| true);
    assert_eq!(got.len(), 60_000);
    assert!(got.values().all(|&n| n == 1));
    // Bodies arrive in any order (they are sent concurrently). A counter is a per-second rate; a gauge is as is.
    let all: Vec<serde_json::Value> = reqs
        .iter()
        .flat_map(|r| r.json()["series"].as_array().unwrap().clone())
        .collect();
    let find = |name: &str| all.iter().find(|s| s["metric"] == name).unwrap().clone();
    assert_eq!(find("bulk.metric.4")["type"], "rate");
    assert_eq!(find("bulk.metric.4")["points"][0][1], 0.4);
    assert_eq!(find("bulk.metric.5")["type"], "gauge");
    assert_eq!(find("bulk.metric.5")["points"][0][1], 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_answering_500_twice_then_202_gets_everything_exactly_once() {
    let intake = Intake::start(|_, i| if i < 2 { Reply::Status(500) } else { Reply::Status(202) }).await;
    let (sink, telemetry) = sink(&intake, 25_000);
    let outcome = sink.flush(flush_of(100, Duration::from_secs(10))).await;
    assert_eq!(outcome, SinkOutcome::Ok);
    let reqs = intake.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "two failures, then one success");
    let got = arrived(&reqs, |i| i >= 2);
    assert_eq!(got.len(), 100);
    assert!(got.values().all(|&n| n == 1));
    let collected = telemetry.collect(0);
    assert_eq!(requests_counted(&collected, "http_5xx"), 2.0);
    assert_eq!(requests_counted(&collected, "ok"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_answering_400_is_not_retried_and_the_drop_is_counted() {
    let intake = Intake::start(|_, _| Reply::Status(400)).await;
    let (sink, telemetry) = sink(&intake, 25_000);
    let outcome = sink.flush(flush_of(10, Duration::from_secs(10))).await;
    match outcome {
        SinkOutcome::Failed { reason, detail } => {
            assert_eq!(reason, "http_400");
            assert!(!detail.contains(KEY));
        }
        SinkOutcome::Ok => panic!("a 400 is a failure"),
    }
    assert_eq!(intake.requests.lock().unwrap().len(), 1, "not retried");
    assert_eq!(requests_counted(&telemetry.collect(0), "http_400"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_body_until_it_fits() {
    // The intake refuses bodies of more than 30 series.
    let intake = Intake::start(|r, _| {
        let n = r.json()["series"].as_array().map_or(0, Vec::len);
        Reply::Status(if n > 30 { 413 } else { 202 })
    })
    .await;
    let (sink, _) = sink(&intake, 25_000);
    assert_eq!(
        sink.flush(flush_of(100, Duration::from_secs(10))).await,
        SinkOutcome::Ok
    );
    let reqs = intake.requests.lock().unwrap().clone();
    let accepted: Vec<bool> = reqs
        .iter()
        .map(|r| r.json()["series"].as_array().map_or(0, Vec::len) <= 30)
        .collect();
    let got = arrived(&reqs, |i| accepted[i]);
    assert_eq!(got.len(), 100);
    assert!(got.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_intake_does_not_delay_the_next_flush_or_ingest() {
    // The first request hangs forever; later ones are accepted.
    let intake = Intake::start(|_, i| if i == 0 { Reply::Hang } else { Reply::Status(202) }).await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nnum_workers: 2\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\", series_api: v1}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).unwrap();
    let server = server::start(config, vec![]).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.udp_address().unwrap();
    let started = Instant::now();
    sock.send_to(b"first:1|c", addr).unwrap();
    // The first flush (at ~1 s) hangs; the second (at ~2 s) must still arrive, and ingest keeps working.
    assert!(
        eventually(Duration::from_secs(10), || intake.requests_to("/api/v1/series").len()
            >= 2)
        .await
    );
    let second_at = started.elapsed();
    assert!(second_at < Duration::from_secs(4), "second flush after {second_at:?}");
    sock.send_to(b"later:1|c", addr).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            intake
                .requests_to("/api/v1/series")
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains("\"later\""))
        })
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_answering_400_leaves_the_server_healthy() {
    let intake = Intake::start(|_, _| Reply::Status(400)).await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 300ms\nnum_workers: 2\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\", series_api: v1}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).unwrap();
    let capture = Arc::new(CaptureSink::default());
    let server = server::start(config, vec![capture.clone() as Arc<dyn Sink>])
        .await
        .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.udp_address().unwrap();
    sock.send_to(b"x:1|c", addr).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || intake.requests_to("/api/v1/series").len()
            >= 2)
        .await
    );
    sock.send_to(b"y:1|c", addr).unwrap();
    assert!(eventually(Duration::from_secs(5), || capture.values().contains_key("y")).await);
    assert!(
        eventually(Duration::from_secs(5), || capture
            .self_metric("harrier.sink.requests", "result:http_400")
            >= 1.0)
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_down_longer_than_an_interval_gets_the_queued_payloads_when_it_is_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    let intake = Intake::start(move |_, _| {
        if d.load(Ordering::Relaxed) {
            Reply::Status(503)
        } else {
            Reply::Status(202)
        }
    })
    .await;
    let (sink, telemetry) = sink(&intake, 1000);
    let interval = Duration::from_millis(600);
    // Interval 1: the intake answers 503 past the deadline; the body waits in the retry queue.
    let first = flush_of(10, interval);
    let outcome = sink.flush(first).await;
    assert!(
        matches!(outcome, SinkOutcome::Failed { reason: "queued", .. }),
        "{outcome:?}"
    );
    assert!(
        telemetry
            .peek_gauge("harrier.sink.retry_queue_bytes", &["sink:dd", "endpoint:series"])
            .unwrap_or(0.0)
            > 0.0
    );
    // Interval 2: still down; both bodies wait, the older first.
    let second = Arc::new(Flush {
        series: vec![Series {
            name: "second.interval".into(),
            suffix: Default::default(),
            tags: TagSet::default(),
            value: 1.0,
            kind: SeriesKind::Gauge,
            timestamp: 1_700_000_010,
        }],
        ..(*flush_of(0, interval)).clone()
    });
    sink.flush(second).await;
    // Back: the third interval's flush sends its own body and both queued ones.
    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(interval * 2).await; // past the queue's wait after a round where nothing got through
    assert_eq!(sink.flush(flush_of(0, interval)).await, SinkOutcome::Ok);
    let reqs = intake.requests.lock().unwrap().clone();
    let accepted = |i: usize| reqs[i].path == "/api/v1/series" && i >= reqs.len() - 2;
    let names = arrived(&reqs, accepted);
    assert_eq!(
        names.len(),
        11,
        "ten series of interval 1 and one of interval 2: {names:?}"
    );
    assert!(names.values().all(|&n| n == 1));
    assert_eq!(
        telemetry.peek_gauge("harrier.sink.retry_queue_bytes", &["sink:dd", "endpoint:series"]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_retry_queue_drops_its_oldest_payload_and_counts_it() {
    let intake = Intake::start(|_, _| Reply::Status(503)).await;
    let interval = Duration::from_millis(300);
    // The size of one queued body, from a sink with room for it.
    let (probe, probe_telemetry) = sink(&intake, 1000);
    probe.flush(flush_of(10, interval)).await;
    let one = probe_telemetry
        .peek_gauge("harrier.sink.retry_queue_bytes", &["sink:dd", "endpoint:series"])
        .unwrap();
    assert!(one > 0.0);
    // Room for one and a half bodies.
    let telemetry = Arc::new(Telemetry::default());
    let cfg = DatadogConfig {
        retry_queue_max_bytes: (one * 1.5) as usize,
        ..dd_config(&intake, 1000)
    };
    let sink = DatadogSink::new("dd", cfg, telemetry.clone()).unwrap();
    sink.flush(flush_of(10, interval)).await;
    assert_eq!(telemetry.peek("harrier.sink.dropped", "reason:retry_queue_full"), 0);
    sink.flush(flush_of(10, interval)).await;
    assert_eq!(telemetry.peek("harrier.sink.dropped", "reason:retry_queue_full"), 1);
    let queued = telemetry
        .peek_gauge("harrier.sink.retry_queue_bytes", &["sink:dd", "endpoint:series"])
        .unwrap();
    assert_eq!(queued, one, "one body left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_payloads_in_retry_queue_dir_survive_a_restart_and_never_hold_the_key() {
    let dir = std::env::temp_dir().join(format!("harrier-retry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let interval = Duration::from_millis(300);
    let down = Intake::start(|_, _| Reply::Status(503)).await;
    let cfg = |intake: &Intake| DatadogConfig {
        retry_queue_dir: dir.display().to_string(),
        ..dd_config(intake, 1000)
    };
    let first = DatadogSink::new("dd", cfg(&down), Arc::new(Telemetry::default())).unwrap();
    let outcome = first.flush(flush_of(5, interval)).await;
    assert!(
        matches!(outcome, SinkOutcome::Failed { reason: "queued", .. }),
        "{outcome:?}"
    );
    drop(first);
    let files: Vec<_> = std::fs::read_dir(dir.join("dd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1, "one queued body on disk");
    let on_disk = std::fs::read(files[0].path()).unwrap();
    assert!(
        !on_disk.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "the key is not on disk"
    );

    // The next run, with the intake back, sends what the last one left.
    let up = Intake::accepting().await;
    let telemetry = Arc::new(Telemetry::default());
    let second = DatadogSink::new("dd", cfg(&up), telemetry.clone()).unwrap();
    // Found on disk, and read back when sent.
    assert_eq!(
        telemetry.peek_gauge("harrier.sink.retry_queue_payloads", &["sink:dd", "endpoint:series"]),
        Some(1.0)
    );
    assert!(
        telemetry
            .peek_gauge("harrier.sink.retry_queue_disk_bytes", &["sink:dd"])
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(second.flush(flush_of(0, interval)).await, SinkOutcome::Ok);
    let reqs = up.requests.lock().unwrap().clone();
    let names = arrived(&reqs, |_| true);
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(reqs[0].headers.get("dd-api-key").map(String::as_str), Some(KEY));
    assert_eq!(
        std::fs::read_dir(dir.join("dd")).unwrap().count(),
        0,
        "delivered: removed from disk"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
