//! The OTLP source with the real OpenTelemetry Python SDK (`tests/common/otel.rs`): what its exporters send over
//! OTLP/HTTP and OTLP/gRPC joins the DogStatsD aggregation and comes out of a Datadog intake with exact counts and
//! sums; two locals' OTLP histograms give a global the percentiles of their union; bad requests are refused with
//! the status the specification names and never stop the server.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::intake::{Intake, Point};
use common::otel;
use harrier::config::otlp::{OtlpAddress, OtlpTransport};
use harrier::config::Config;
use harrier::ddsketch::DdSketch;
use harrier::server::{self, RunningServer};
use harrier::sink::datadog::payload::sketch_payload::sketch::Dogsketch;
use harrier::sink::datadog::payload::SketchPayload;
use prost::Message;

const KEY: &str = "test-api-key-otlp-0123456789";

/// Sends with the SDK: `transport` (`http` or `grpc`), `endpoint`, a metric name `prefix`, `temporality`
/// (`cumulative` or `delta`), and the histogram's samples as `values` (comma-separated). Two exports: everything
/// is recorded once, exported (force_flush), recorded again (the counter and histogram once more), and exported
/// at shutdown.
const SEND: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider, Counter, UpDownCounter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, AggregationTemporality
from opentelemetry.sdk.metrics.view import View, ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

transport, endpoint, prefix, temporality, values = sys.argv[1:6]
values = [float(v) for v in values.split(",")] if values else []
t = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
prefs = {Counter: t, UpDownCounter: AggregationTemporality.CUMULATIVE, Histogram: t}
if transport == "http":
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", preferred_temporality=prefs)
else:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True, preferred_temporality=prefs)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
# Fine buckets, so that percentiles from them are close to the samples'.
bounds = [float(b) for b in range(0, 1001, 5)]
view = View(instrument_name=prefix + ".latency", aggregation=ExplicitBucketHistogramAggregation(boundaries=bounds))
provider = MeterProvider(
    metric_readers=[reader],
    resource=Resource.create({"service.name": "checkout", "host.name": "web-7", "service.instance.id": "i-1"}),
    views=[view],
)
meter = provider.get_meter("harrier-test")
requests = meter.create_counter(prefix + ".requests")
queue = meter.create_up_down_counter(prefix + ".queue")
temperature = meter.create_gauge(prefix + ".temperature")
latency = meter.create_histogram(prefix + ".latency")

def record():
    requests.add(3, {"route": "/pay"})
    requests.add(4.5, {"route": "/pay"})
    requests.add(1, {"route": "/refund"})
    for v in values:
        latency.record(v, {"route": "/pay"})

record()
queue.add(10)
queue.add(-3)
temperature.set(21.5)
assert reader.force_flush(), "first export failed"
record()
queue.add(-2)
temperature.set(19.25)
provider.shutdown()
print("sent")
"#;

async fn start(yaml: &str) -> RunningServer {
    let config = Config::from_yaml_with_env(yaml, "t", |_| None).expect("config");
    server::start(config, vec![]).await.expect("server starts")
}

fn address(server: &RunningServer, transport: OtlpTransport) -> SocketAddr {
    server
        .otlp_addresses
        .iter()
        .find(|a: &&OtlpAddress| a.transport == transport)
        .expect("an OTLP listener of this transport")
        .addr
}

/// Runs the SDK script (off the runtime: it blocks until both exports are answered).
async fn send(transport: &str, endpoint: String, prefix: &str, temporality: &str, values: &[f64]) {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    let args = [
        transport.to_string(),
        endpoint,
        prefix.to_string(),
        temporality.to_string(),
        values.join(","),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        otel::run(SEND, &args, b"")
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
}

/// The intake's points by `name#sorted,tags` (the host as a `host:` tag), each summed over its interval
/// (counters are rates).
fn totals(intake: &Intake) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (_, p) in intake.points() {
        let Point {
            metric, mut tags, host, ..
        } = p.clone();
        if let Some(h) = host.filter(|h| !tags.iter().any(|t| t.starts_with("host:")) && !h.is_empty()) {
            tags.push(format!("host:{h}"));
        }
        tags.sort();
        let total = p.total();
        let key = format!("{metric}#{}", tags.join(","));
        if p.kind == "gauge" {
            out.insert(key, total);
        } else {
            *out.entry(key).or_insert(0.0) += total;
        }
    }
    out
}

fn datadog_yaml(intake: &Intake, extra: &str) -> String {
    format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\n\
         otlp_listen_addresses: [\"http://127.0.0.1:0\", \"grpc://127.0.0.1:0\"]\n\
         interval: 1h\nhostname: test-host\n\
         aggregates: [min, max, count, sum]\npercentiles: [0.5, 0.99]\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\"}}}}]\n{extra}",
        intake.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_over_http_and_grpc_arrives_at_the_datadog_intake_with_exact_counts_and_sums() {
    let intake = Intake::accepting().await;
    let server = start(&datadog_yaml(&intake, "")).await;
    let http = format!("http://{}", address(&server, OtlpTransport::Http));
    let grpc = address(&server, OtlpTransport::Grpc).to_string();
    let samples: Vec<f64> = (1..=200).map(|i| i as f64 * 2.5).collect();
    // Cumulative (the SDK's default) over HTTP, delta over gRPC.
    send("http", http, "viahttp", "cumulative", &samples).await;
    send("grpc", grpc, "viagrpc", "delta", &samples).await;
    // A DogStatsD line for one of the same series joins it.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"viahttp.requests:100|c|#route:/pay,host:web-7,service:checkout",
        server.udp_address().unwrap(),
    )
    .unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || server.telemetry.listeners[0]
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1)
        .await
    );
    server.shutdown().await;

    let got = totals(&intake);
    let sum: f64 = samples.iter().sum();
    for prefix in ["viahttp", "viagrpc"] {
        let tags = "host:web-7,route:/pay,service:checkout";
        let extra = if prefix == "viahttp" { 100.0 } else { 0.0 };
        let expect = [
            (format!("{prefix}.requests#{tags}"), 2.0 * 7.5 + extra),
            (
                format!("{prefix}.requests#host:web-7,route:/refund,service:checkout"),
                2.0,
            ),
            (format!("{prefix}.queue#host:web-7,service:checkout"), 5.0),
            (format!("{prefix}.temperature#host:web-7,service:checkout"), 19.25),
        ];
        for (key, want) in expect {
            let have = got.get(&key).copied();
            // Exact but for the per-second rate the intake receives counters as (value / interval * interval).
            let exact = have.is_some_and(|h| (h - want).abs() <= 1e-12 * want.abs().max(1.0));
            assert!(
                exact,
                "{key}: {have:?}, expected {want}; every point received: {got:#?}"
            );
        }
        // The histogram is a distribution: by default the agent's DDSketch, with count, sum, min and max exact.
        let sketches = dogsketches(&intake, &format!("{prefix}.latency"));
        assert_eq!(sketches.len(), 1, "{prefix}: one sketch");
        let (tags, host, d) = &sketches[0];
        assert_eq!(
            (tags.join(","), host.as_str()),
            ("route:/pay,service:checkout".into(), "web-7")
        );
        assert_eq!((d.cnt, d.sum, d.min, d.max), (400, 2.0 * sum, 2.5, 500.0), "{prefix}");
        // Percentiles: the SDK's buckets are 5 wide, the sketch's 1.6%: within both of the samples' own.
        let sketch = DdSketch::from_wire(&d.k, &d.n, d.cnt as u64, d.min, d.max, d.sum).unwrap();
        for (q, exact) in [(0.5, 250.0), (0.99, 495.0)] {
            let v = sketch.quantile(q);
            assert!(
                (v - exact).abs() <= 5.0 + exact * 0.016,
                "{prefix} p{q}: {v}, exact {exact}"
            );
        }
    }
}

/// Every Dogsketch received for `metric`, with its sketch's tags (sorted) and host.
fn dogsketches(intake: &Intake, metric: &str) -> Vec<(Vec<String>, String, Dogsketch)> {
    let mut out = Vec::new();
    for r in intake.requests_to("/api/beta/sketches") {
        let p = SketchPayload::decode(&r.body[..]).expect("a SketchPayload");
        for s in p.sketches.into_iter().filter(|s| s.metric == metric) {
            let mut tags = s.tags.clone();
            tags.sort();
            for d in s.dogsketches {
                out.push((tags.clone(), s.host.clone(), d));
            }
        }
    }
    out
}
