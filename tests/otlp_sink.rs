//! The `otlp` sink end to end: the real server (UDP in, one-second flushes) posts to a fake OTLP/HTTP receiver on
//! 127.0.0.1, and each captured body is decoded by the official `opentelemetry-proto` Python package (into JSON
//! with `google.protobuf.json_format`), so the assertions read what a collector would read.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::intake::{Intake, Reply, Request};
use crate::common::otel;
use harrier::config::Config;
use harrier::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use harrier::server::{self, RunningServer};
use prost::Message;
use serde_json::Value;

/// Parses an `ExportMetricsServiceRequest` from stdin with the official package and prints it as JSON.
const DECODE: &str = r#"
import sys, json
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
req = metrics_service_pb2.ExportMetricsServiceRequest()
req.ParseFromString(sys.stdin.buffer.read())
print(json.dumps(json_format.MessageToDict(req, preserving_proto_field_name=True)))
"#;

async fn harrier_sending_to(intake: &Intake, interval: &str, sink_config: &str) -> RunningServer {
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: {interval}\nhostname: web-1\n\
         aggregates: [min, max, count]\npercentiles: [0.5, 0.99]\n\
         metric_sinks: [{{kind: otlp, name: otel, config: {{endpoint: \"{}\", {sink_config}}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).expect("config");
    server::start(config, vec![]).await.expect("server starts")
}

/// Waits until a little after the next multiple of `interval` (when flushes happen), so that lines sent now all
/// land in one interval.
async fn just_after_a_flush(interval: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let period = interval.as_millis();
    let into = now.as_millis() % period;
    tokio::time::sleep(Duration::from_millis((period - into + 150) as u64)).await;
}

/// Sends lines over UDP, several to a datagram.
fn send(server: &RunningServer, lines: &[String]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.udp_address().unwrap();
    for chunk in lines.chunks(40) {
        sock.send_to(chunk.join("\n").as_bytes(), addr).unwrap();
    }
}

/// The metric names (not self-metrics) of a request body.
fn names(body: &[u8]) -> Vec<String> {
    let req = ExportMetricsServiceRequest::decode(body).expect("an ExportMetricsServiceRequest");
    req.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect()
}

/// The requests so far whose body has a metric named `name`.
fn requests_with(intake: &Intake, name: &str) -> Vec<Request> {
    let all = intake.requests.lock().unwrap().clone();
    all.into_iter()
        .filter(|r| names(&r.body).iter().any(|n| n == name))
        .collect()
}

/// Waits for `n` requests with a metric named `name`.
async fn until_requests_with(intake: &Intake, name: &str, n: usize) -> Vec<Request> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = requests_with(intake, name);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} request(s) with {name}, expected {n}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One data point as the Python package decoded it.
#[derive(Debug, Clone)]
struct Point {
    host: Option<String>,
    name: String,
    /// `sum`, `gauge`, `exponential_histogram`, `summary`.
    kind: String,
    /// The metric's data (temporality, monotonicity).
    data: Value,
    point: Value,
}

impl Point {
    fn attributes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.point["attributes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|kv| {
                        let v = kv["value"]["string_value"].as_str().unwrap_or_default();
                        (kv["key"].as_str().unwrap().to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn value(&self) -> f64 {
        self.point["as_double"].as_f64().expect("a double value")
    }

    /// A 64-bit integer field, which JSON carries as a string; 0 when absent (the protobuf default).
    fn int(&self, field: &str) -> u64 {
        match &self.point[field] {
            Value::String(s) => s.parse().unwrap(),
            Value::Number(n) => n.as_u64().unwrap(),
            Value::Null => 0,
            other => panic!("{field}: {other}"),
        }
    }
}

/// Every data point of a body, decoded by the official package.
fn decode(body: &[u8]) -> Vec<Point> {
    let out = otel::run(DECODE, &[], body);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON from the decoder");
    let mut points = Vec::new();
    for rm in json["resource_metrics"].as_array().expect("resource_metrics") {
        let host = rm["resource"]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == "host.name"))
            .map(|kv| kv["value"]["string_value"].as_str().unwrap().to_string());
        for sm in rm["scope_metrics"].as_array().unwrap() {
            for m in sm["metrics"].as_array().unwrap() {
                for kind in ["sum", "gauge", "exponential_histogram", "summary", "histogram"] {
                    let Some(data) = m.get(kind) else { continue };
                    for p in data["data_points"].as_array().unwrap() {
                        points.push(Point {
                            host: host.clone(),
                            name: m["name"].as_str().unwrap().to_string(),
                            kind: kind.to_string(),
                            data: data.clone(),
                            point: p.clone(),
                        });
                    }
                }
            }
        }
    }
    points
}

fn find<'a>(points: &'a [Point], name: &str) -> &'a Point {
    let found: Vec<&Point> = points.iter().filter(|p| p.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0]
}

/// 1000 known timer samples (0.25 to 1498.75 ms), in a scrambled order.
fn samples() -> Vec<f64> {
    (0..1000u64).map(|i| (i * 337 % 1000) as f64 * 1.5 + 0.25).collect()
}

/// The exact `q` quantile of `samples`: the sample of rank ceil(q·n).
fn exact_quantile(samples: &[f64], q: f64) -> (u64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as u64;
    (rank, sorted[rank as usize - 1])
}

/// The (lower, upper] boundaries of the positive bucket that holds `rank` (1-based, counted from the zero
/// bucket up, no negative values being sent).
fn bucket_of_rank(p: &Point, rank: u64) -> (f64, f64) {
    let scale = p.point["scale"].as_i64().unwrap_or(0) as i32;
    let positive = &p.point["positive"];
    let offset = positive["offset"].as_i64().unwrap_or(0) as i32;
    let counts: Vec<u64> = positive["bucket_counts"]
        .as_array()
        .expect("positive buckets")
        .iter()
        .map(|c| c.as_str().map_or_else(|| c.as_u64().unwrap(), |s| s.parse().unwrap()))
        .collect();
    let base = 2f64.powf(2f64.powi(-scale));
    let mut cumulative = p.int("zero_count");
    for (j, c) in counts.iter().enumerate() {
        cumulative += c;
        if cumulative >= rank {
            let i = offset + j as i32;
            return (base.powi(i), base.powi(i + 1));
        }
    }
    panic!("rank {rank} beyond the buckets' {cumulative}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_delta_sums_gauges_and_an_exponential_histogram_with_exact_stats_and_quantile_buckets() {
    let intake = Intake::start(|_, _| Reply::Status(200)).await;
    let server = harrier_sending_to(&intake, "1s", "max_buckets: 160").await;
    let samples = samples();
    let mut lines: Vec<String> = vec![
        "deploys:3|c|#env:prod,canary".into(),
        "deploys:2|c|#env:prod,canary".into(),
        "hits:1|c|#host:web-9,zone:a".into(),
        "queue.depth:42|g".into(),
        "users:a|s".into(),
        "users:b|s".into(),
        "users:a|s".into(),
    ];
    lines.extend(samples.iter().map(|v| format!("api.latency:{v}|ms|#route:/a")));
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &lines);
    let request = until_requests_with(&intake, "api.latency", 1).await.remove(0);
    assert_eq!(
        request.headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    assert_eq!(
        request.headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );
    assert_eq!(request.path, "/v1/metrics");
    let points = decode(&request.body);

    let deploys = find(&points, "deploys");
    assert_eq!((deploys.kind.as_str(), deploys.value()), ("sum", 5.0));
    assert_eq!(deploys.data["is_monotonic"], true);
    assert_eq!(deploys.data["aggregation_temporality"], "AGGREGATION_TEMPORALITY_DELTA");
    assert_eq!(
        deploys.int("time_unix_nano") - deploys.int("start_time_unix_nano"),
        1_000_000_000,
        "a delta sum starts at its interval's start"
    );
    assert_eq!(deploys.host.as_deref(), Some("web-1"));
    let own = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(deploys.attributes(), vec![own("canary", ""), own("env", "prod")]);
    let hits = find(&points, "hits");
    assert_eq!(
        hits.host.as_deref(),
        Some("web-9"),
        "the host: tag is the resource's host.name"
    );
    assert_eq!(hits.attributes(), vec![own("zone", "a")]);
    let queue = find(&points, "queue.depth");
    assert_eq!((queue.kind.as_str(), queue.value()), ("gauge", 42.0));
    let users = find(&points, "users");
    assert_eq!((users.kind.as_str(), users.value()), ("gauge", 2.0));

    let h = find(&points, "api.latency");
    assert_eq!(h.kind, "exponential_histogram");
    assert_eq!(h.data["aggregation_temporality"], "AGGREGATION_TEMPORALITY_DELTA");
    assert_eq!(h.attributes(), vec![own("route", "/a")]);
    assert_eq!(h.int("count"), 1000);
    assert_eq!(h.point["sum"].as_f64(), Some(samples.iter().sum::<f64>()));
    assert_eq!(h.point["min"].as_f64(), Some(0.25));
    assert_eq!(h.point["max"].as_f64(), Some(1498.75));
    let scale = h.point["scale"].as_i64().unwrap_or(0);
    assert!(scale <= 20, "scale {scale}");
    let buckets = h.point["positive"]["bucket_counts"].as_array().unwrap();
    assert!(buckets.len() <= 160, "{} buckets", buckets.len());
    for q in [0.5, 0.99] {
        let (rank, exact) = exact_quantile(&samples, q);
        let (lo, hi) = bucket_of_rank(h, rank);
        assert!(
            lo < exact && exact <= hi,
            "p{q}: the bucket of rank {rank} is ({lo}, {hi}], the exact value {exact}"
        );
    }
    // Its aggregates and percentiles are in the histogram, not sent again as gauges.
    let suffixed: Vec<&str> = points
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| n.starts_with("api.latency."))
        .collect();
    assert!(suffixed.is_empty(), "{suffixed:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulative_temporality_sends_running_totals_from_one_start_time_across_flushes() {
    let intake = Intake::start(|_, _| Reply::Status(200)).await;
    let server = harrier_sending_to(&intake, "1s", "temporality: cumulative, compression: none").await;
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &["orders:3|c|#shop:eu".to_string()]);
    until_requests_with(&intake, "orders", 1).await;
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &["orders:4|c|#shop:eu".to_string()]);
    let requests = until_requests_with(&intake, "orders", 2).await;
    assert_eq!(requests[0].headers.get("content-encoding"), None);
    let first = decode(&requests[0].body);
    let second = decode(&requests[1].body);
    let (a, b) = (find(&first, "orders"), find(&second, "orders"));
    assert_eq!((a.value(), b.value()), (3.0, 7.0));
    for p in [a, b] {
        assert_eq!(p.data["aggregation_temporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE");
        assert_eq!(p.data["is_monotonic"], true);
    }
    assert_eq!(a.int("start_time_unix_nano"), b.int("start_time_unix_nano"));
    assert!(b.int("time_unix_nano") > a.int("time_unix_nano"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_format_sends_count_sum_and_the_configured_quantiles() {
    let intake = Intake::start(|_, _| Reply::Status(200)).await;
    let server = harrier_sending_to(&intake, "1s", "histogram_format: summary").await;
    let samples = samples();
    let lines: Vec<String> = samples.iter().map(|v| format!("api.latency:{v}|h")).collect();
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &lines);
    let request = until_requests_with(&intake, "api.latency", 1).await.remove(0);
    let points = decode(&request.body);
    let s = find(&points, "api.latency");
    assert_eq!(s.kind, "summary");
    assert_eq!(s.int("count"), 1000);
    assert_eq!(s.point["sum"].as_f64(), Some(samples.iter().sum::<f64>()));
    let quantiles = s.point["quantile_values"].as_array().expect("quantile values");
    let got: Vec<f64> = quantiles.iter().map(|v| v["quantile"].as_f64().unwrap()).collect();
    assert_eq!(got, vec![0.5, 0.99]);
    for v in quantiles {
        let (_, exact) = exact_quantile(&samples, v["quantile"].as_f64().unwrap());
        let value = v["value"].as_f64().unwrap();
        // The digest's estimate: within a sample's spacing (1.5 ms) of the exact quantile.
        assert!((value - exact).abs() <= 1.5, "{v}: exact {exact}");
    }
    assert!(points.iter().all(|p| !p.name.starts_with("api.latency.")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_sent_again_after_the_wait_and_delivered_once() {
    let refused = Arc::new(AtomicUsize::new(0));
    let r = refused.clone();
    let intake = Intake::start(move |req, _| {
        if names(&req.body).iter().any(|n| n == "retry.me") && r.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::RetryAfter(503, 1)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    // A 3 s interval: the 1 s wait fits in it, so the attempt is the delivery's, not the retry queue's.
    let server = harrier_sending_to(&intake, "3s", "request_timeout: 2s").await;
    just_after_a_flush(Duration::from_secs(3)).await;
    send(&server, &["retry.me:1|c".to_string()]);
    let requests = until_requests_with(&intake, "retry.me", 2).await;
    assert_eq!(requests[0].body, requests[1].body, "the same payload, sent again");
    let gap = requests[1].at - requests[0].at;
    // At least the second Retry-After asked for, and well before the next flush (3 s) would have retried it.
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(2500),
        "the second attempt came {gap:?} after the first"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        requests_with(&intake, "retry.me").len(),
        2,
        "delivered once, on the second attempt"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried_and_is_counted_as_dropped() {
    let intake = Intake::start(|req, _| {
        if names(&req.body).iter().any(|n| n == "drop.me") {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let server = harrier_sending_to(&intake, "1s", "compression: none").await;
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &["drop.me:1|c".to_string()]);
    until_requests_with(&intake, "drop.me", 1).await;
    // The drop is counted in the next flushes' self-metrics, which reach the receiver.
    let dropped = until_requests_with(&intake, "harrier.sink.dropped", 1).await.remove(0);
    let points = decode(&dropped.body);
    let d = find(&points, "harrier.sink.dropped");
    assert!(
        d.attributes().contains(&("reason".to_string(), "http_400".to_string())),
        "{d:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(requests_with(&intake, "drop.me").len(), 1, "a 400 is not retried");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_is_counted_in_a_self_metric() {
    use harrier::otlp::proto::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
    let answer = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "3 points had no name".to_string(),
        }),
    };
    let body: &'static [u8] = Box::leak(answer.encode_to_vec().into_boxed_slice());
    let intake = Intake::start(move |req, _| {
        if names(&req.body).iter().any(|n| n == "partly.me") {
            Reply::Body(200, body)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let server = harrier_sending_to(&intake, "1s", "compression: gzip").await;
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &["partly.me:1|c".to_string()]);
    until_requests_with(&intake, "partly.me", 1).await;
    let counted = until_requests_with(&intake, "harrier.sink.otlp_rejected_points", 1)
        .await
        .remove(0);
    let points = decode(&counted.body);
    let p = find(&points, "harrier.sink.otlp_rejected_points");
    assert_eq!(p.value(), 3.0);
    assert_eq!(p.attributes(), vec![("sink".to_string(), "otel".to_string())]);
    server.shutdown().await;
}

/// A server with an `otlp` sink to `intake` and a one-hour interval (only the final flush reports): a global
/// (`forward` empty: it listens for gRPC imports) or a local forwarding to `forward`.
async fn tier_member(intake: &Intake, hostname: &str, forward: &str) -> RunningServer {
    let role = if forward.is_empty() {
        "grpc_address: \"127.0.0.1:0\"\n".to_string()
    } else {
        format!("forward_address: \"{forward}\"\n")
    };
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1h\nhostname: {hostname}\n{role}\
         aggregates: [min, max, count]\npercentiles: [0.5, 0.99]\n\
         metric_sinks: [{{kind: otlp, config: {{endpoint: \"{}\"}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).expect("config");
    server::start(config, vec![]).await.expect("server starts")
}

/// Every data point (not self-metrics) of every request, decoded by the official package.
fn all_points(intake: &Intake) -> Vec<Point> {
    let requests = intake.requests.lock().unwrap().clone();
    requests
        .iter()
        .flat_map(|r| decode(&r.body))
        .filter(|p| !p.name.starts_with("harrier."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locals_send_their_own_aggregates_and_the_global_the_merged_exponential_histogram() {
    let intake = Intake::start(|_, _| Reply::Status(200)).await;
    let global = tier_member(&intake, "global-1", "").await;
    let grpc = global.grpc_address.expect("a gRPC address").to_string();
    let samples = samples();
    let halves = [&samples[..500], &samples[500..]];
    let mut locals = Vec::new();
    for (i, half) in halves.iter().enumerate() {
        let local = tier_member(&intake, &format!("local-{i}"), &grpc).await;
        let lines: Vec<String> = half.iter().map(|v| format!("api.latency:{v}|ms")).collect();
        send(&local, &lines);
        let took = || -> u64 {
            local
                .telemetry
                .listeners
                .iter()
                .map(|l| l.lines.load(Ordering::Relaxed))
                .sum()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while took() < 500 {
            assert!(Instant::now() < deadline, "local-{i} took in {} of 500 lines", took());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        locals.push(local);
    }
    // The locals' final flushes forward to the global, whose final flush then reports.
    for local in locals {
        local.shutdown().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while global.telemetry.peek("harrier.import.metrics", "") < 2 {
        assert!(Instant::now() < deadline, "the global imported nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    global.shutdown().await;

    let points = all_points(&intake);
    let on = |host: &str| -> Vec<&Point> { points.iter().filter(|p| p.host.as_deref() == Some(host)).collect() };
    for (i, half) in halves.iter().enumerate() {
        let local = on(&format!("local-{i}"));
        let mut names: Vec<&str> = local.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["api.latency.count", "api.latency.max", "api.latency.min"],
            "local-{i}"
        );
        let value = |n: &str| local.iter().find(|p| p.name == n).map(|p| (p.kind.as_str(), p.value()));
        let max = half.iter().copied().fold(f64::MIN, f64::max);
        assert_eq!(value("api.latency.max"), Some(("gauge", max)));
        assert_eq!(value("api.latency.count"), Some(("gauge", 500.0)));
    }
    let g = on("global-1");
    assert_eq!(g.len(), 1, "the global sends the histogram only: {g:?}");
    let h = g[0];
    assert_eq!(
        (h.name.as_str(), h.kind.as_str()),
        ("api.latency", "exponential_histogram")
    );
    assert_eq!(h.int("count"), 1000);
    assert_eq!(h.point["min"].as_f64(), Some(0.25));
    assert_eq!(h.point["max"].as_f64(), Some(1498.75));
    let sum = h.point["sum"].as_f64().unwrap();
    let exact: f64 = samples.iter().sum();
    assert!((sum - exact).abs() <= exact * 1e-12, "sum {sum}, exact {exact}");
    for q in [0.5, 0.99] {
        let (rank, exact) = exact_quantile(&samples, q);
        let (lo, hi) = bucket_of_rank(h, rank);
        assert!(lo < exact && exact <= hi, "p{q}: ({lo}, {hi}] against {exact}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddsketch_distribution_is_an_exponential_histogram_with_its_exact_stats() {
    let intake = Intake::start(|_, _| Reply::Status(200)).await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nhostname: web-1\ndistributions: sketch\n\
         percentiles: [0.5, 0.99]\nmetric_sinks: [{{kind: otlp, config: {{endpoint: \"{}\"}}}}]\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).expect("config");
    let server = server::start(config, vec![]).await.expect("server starts");
    let samples = samples();
    let lines: Vec<String> = samples.iter().map(|v| format!("payload.size:{v}|d")).collect();
    just_after_a_flush(Duration::from_secs(1)).await;
    send(&server, &lines);
    let request = until_requests_with(&intake, "payload.size", 1).await.remove(0);
    let points = decode(&request.body);
    let h = find(&points, "payload.size");
    assert_eq!(h.kind, "exponential_histogram");
    assert_eq!(h.int("count"), 1000);
    assert_eq!(h.point["sum"].as_f64(), Some(samples.iter().sum::<f64>()));
    assert_eq!(
        (h.point["min"].as_f64(), h.point["max"].as_f64()),
        (Some(0.25), Some(1498.75))
    );
    // The sketch's key 0 (magnitudes below about 1e-9) is its zero bucket, and says so.
    let zero_threshold = h.point["zero_threshold"].as_f64().unwrap_or(0.0);
    assert!(zero_threshold > 0.0 && zero_threshold < 1e-8, "{zero_threshold}");
    for q in [0.5, 0.99] {
        let (rank, exact) = exact_quantile(&samples, q);
        let (lo, hi) = bucket_of_rank(h, rank);
        assert!(lo < exact && exact <= hi, "p{q}: ({lo}, {hi}] against {exact}");
    }
    assert!(points.iter().all(|p| !p.name.starts_with("payload.size.")));
    server.shutdown().await;
}
