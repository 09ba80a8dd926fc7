//! The OTLP source with the real OpenTelemetry Python SDK (`tests/common/otel.rs`): what its exporters send over
//! OTLP/HTTP and OTLP/gRPC joins the DogStatsD aggregation and comes out of a Datadog intake with exact counts and
//! sums; two locals' OTLP histograms give a global the percentiles of their union; bad requests are refused with
//! the status the specification names and never stop the server.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::intake::{Intake, Point};
use crate::common::otel;
use harrier::config::otlp::{OtlpAddress, OtlpTransport};
use harrier::config::Config;
use harrier::ddsketch::DdSketch;
use harrier::server::{self, RunningServer};
use prost::Message;

const KEY: &str = "test-api-key-otlp-0123456789";

/// Sends with the SDK: `transport` (`http` or `grpc`), `endpoint`, a metric name `prefix`, `temporality`
/// (`cumulative` or `delta`), the histogram's samples as `values` (comma-separated), and its `aggregation`
/// (`explicit`: buckets 5 wide from 0 to 1000; `exponential`: the SDK's exponential histogram, 160 buckets).
/// Two exports: everything
/// is recorded once, exported (force_flush), recorded again (the counter and histogram once more), and exported
/// at shutdown.
const SEND: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider, Counter, UpDownCounter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, AggregationTemporality
from opentelemetry.sdk.metrics.view import View, ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

transport, endpoint, prefix, temporality, values, aggregation = sys.argv[1:7]
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
if aggregation == "exponential":
    histograms = ExponentialBucketHistogramAggregation(max_size=160)
else:
    histograms = ExplicitBucketHistogramAggregation(boundaries=[float(b) for b in range(0, 1001, 5)])
view = View(instrument_name=prefix + ".latency", aggregation=histograms)
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
async fn send(transport: &str, endpoint: String, prefix: &str, temporality: &str, values: &[f64], aggregation: &str) {
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    let args = [
        transport.to_string(),
        endpoint,
        prefix.to_string(),
        temporality.to_string(),
        values.join(","),
        aggregation.to_string(),
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
    // Cumulative (the SDK's default) explicit buckets over HTTP, delta exponential histograms over gRPC.
    send("http", http, "viahttp", "cumulative", &samples, "explicit").await;
    send("grpc", grpc, "viagrpc", "delta", &samples, "exponential").await;
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
        let mut sketches = intake.dogsketches(&format!("{prefix}.latency"));
        sketches.iter_mut().for_each(|(tags, _, _)| tags.sort());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_histograms_sent_to_two_locals_give_the_global_the_percentiles_of_their_union() {
    let (global, global_sink) = common::start(&common::config(
        &["udp://127.0.0.1:0"],
        "grpc_address: \"127.0.0.1:0\"\naggregates: [min, max, count, sum]\npercentiles: [0.5, 0.9, 0.99]\n",
    ))
    .await;
    let grpc = global.grpc_address.unwrap();
    let local_yaml = common::config(
        &["udp://127.0.0.1:0"],
        &format!(
            "forward_address: \"{grpc}\"\notlp_listen_addresses: [\"http://127.0.0.1:0\"]\n\
             aggregates: [min, max, count, sum]\npercentiles: [0.5, 0.9, 0.99]\n"
        ),
    );
    let mut locals = Vec::new();
    for _ in 0..2 {
        locals.push(common::start(&local_yaml).await);
    }
    // Two different distributions: uniform over (0, 500] and over (250, 1000].
    let a: Vec<f64> = (1..=1000).map(|i| i as f64 * 0.5).collect();
    let b: Vec<f64> = (1..=1000).map(|i| 250.0 + i as f64 * 0.75).collect();
    for ((server, _), samples) in locals.iter().zip([&a, &b]) {
        let http = format!("http://{}", address(server, OtlpTransport::Http));
        send("http", http, "fleet", "cumulative", samples, "explicit").await;
    }
    let local_sinks: Vec<_> = locals.iter().map(|(_, s)| s.clone()).collect();
    for (server, _) in locals {
        server.shutdown().await;
    }
    assert!(
        common::eventually(Duration::from_secs(10), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            > 0)
        .await
    );
    global.shutdown().await;

    let g = global_sink.values();
    // (The host, web-7, is the series' host, not among its output tags.)
    let tags = "route:/pay,service:checkout";
    // Each sample was recorded twice (two exports).
    let mut union: Vec<f64> = a.iter().chain(&b).flat_map(|&v| [v, v]).collect();
    union.sort_by(f64::total_cmp);
    for (q, suffix) in [(0.5, "50percentile"), (0.9, "90percentile"), (0.99, "99percentile")] {
        let key = format!("fleet.latency.{suffix}#{tags}");
        let got = *g.get(&key).unwrap_or_else(|| panic!("{key} in {g:#?}"));
        let exact = union[((q * union.len() as f64) as usize).min(union.len() - 1)];
        // Within a bucket of the SDK's (5 wide) and the sketch's relative accuracy (1.6%).
        assert!(
            (got - exact).abs() <= 5.0 + exact * 0.016,
            "p{q}: global {got}, union {exact}"
        );
    }
    // The count and sum of the union, exact, from the locals' own aggregates (a distribution's are the global's).
    let count = g.get(&format!("fleet.latency.count#{tags}")).copied();
    let locals_count: f64 = local_sinks
        .iter()
        .map(|s| {
            s.values()
                .get(&format!("fleet.latency.count#{tags}"))
                .copied()
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(count.unwrap_or(0.0) + locals_count, 4000.0, "{g:?}");
    let sum: f64 = union.iter().sum();
    assert_eq!(g.get(&format!("fleet.latency.sum#{tags}")), Some(&sum), "{g:?}");
}

/// POSTs a body to an OTLP/HTTP endpoint.
async fn post(addr: SocketAddr, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("http://{addr}/v1/metrics"))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_requests_are_refused_with_the_specified_status_counted_and_good_ones_still_taken() {
    use harrier::otlp::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use std::io::Write;
    let (server, sink) = common::start(&common::config(
        &["udp://127.0.0.1:0"],
        "otlp_listen_addresses: [\"http://127.0.0.1:0\", \"grpc://127.0.0.1:0\"]\notlp_max_request_bytes: 4096\n",
    ))
    .await;
    let http = address(&server, OtlpTransport::Http);
    let grpc = address(&server, OtlpTransport::Grpc);
    let proto = "application/x-protobuf";

    assert_eq!(
        post(http, proto, None, b"\xff\xff\xff not protobuf".to_vec()).await.0,
        400
    );
    assert_eq!(post(http, "application/json", None, b"{}".to_vec()).await.0, 415);
    assert_eq!(post(http, proto, None, vec![0u8; 8192]).await.0, 413);
    // A gzip bomb: 2 KiB compressed, 2 MiB once decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 2 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4096, "{}", bomb.len());
    assert_eq!(post(http, proto, Some("gzip"), bomb).await.0, 413);
    assert_eq!(post(http, proto, Some("gzip"), b"not gzip".to_vec()).await.0, 400);

    // A NaN point is rejected, the good one beside it taken; the answer says so.
    let (status, body) = post(
        http,
        proto,
        None,
        otel::gauge_request("ok.gauge", &[f64::NAN, 7.0]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let answer = harrier::otlp::proto::collector::metrics::v1::ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("not_finite"),
        "{}",
        partial.error_message
    );

    // gRPC: over the limit is RESOURCE_EXHAUSTED; a good request is taken, compressed or not.
    let mut client = MetricsServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let big = otel::gauge_request(&"x".repeat(8000), &[1.0]);
    let err = client.export(big).await.unwrap_err();
    // tonic's code for a message over the limit (grpc-go answers RESOURCE_EXHAUSTED).
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    client.export(otel::gauge_request("grpc.gauge", &[3.0])).await.unwrap();
    let mut gzipped = MetricsServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    gzipped
        .export(otel::gauge_request("grpc.gzip.gauge", &[4.0]))
        .await
        .unwrap();
    server.shutdown().await;

    let t = &sink.values();
    assert_eq!(t.get("ok.gauge"), Some(&7.0));
    assert_eq!(t.get("grpc.gauge"), Some(&3.0));
    assert_eq!(t.get("grpc.gzip.gauge"), Some(&4.0));
    for (result, n) in [
        ("bad_protobuf", 1.0),
        ("unsupported_media_type", 1.0),
        ("too_large", 2.0),
        ("bad_gzip", 1.0),
    ] {
        let got = sink.self_metric("harrier.otlp.requests", &format!("result:{result}"));
        assert_eq!(got, n, "{result}");
    }
    assert_eq!(
        sink.self_metric("harrier.otlp.rejected_points", "reason:not_finite"),
        1.0
    );
}
