//! The OpenTelemetry Python SDK the OTLP tests run: a virtual environment that `.ci/run` creates at
//! `target/otel-venv` (or the interpreter named by `HARRIER_OTEL_PYTHON`), with `opentelemetry-sdk`,
//! `opentelemetry-exporter-otlp-proto-http`, `opentelemetry-exporter-otlp-proto-grpc` and `opentelemetry-proto`.
//! A test that needs it and finds it missing fails, saying how to install it; it never skips.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The modules every OTLP test imports.
const MODULES: &str = "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http.metric_exporter, \
                       opentelemetry.exporter.otlp.proto.grpc.metric_exporter, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2";

/// The interpreter of the OpenTelemetry virtual environment, checked once: panics with the way to install it when
/// it is missing or lacks a package.
pub fn python() -> PathBuf {
    let path = std::env::var_os("HARRIER_OTEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/otel-venv/bin/python"));
    let how = "run .ci/run, which creates it (python3 -m venv target/otel-venv && target/otel-venv/bin/pip install \
               opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc \
               opentelemetry-proto), or set HARRIER_OTEL_PYTHON to an interpreter that has them";
    assert!(
        path.exists(),
        "the OpenTelemetry Python SDK is missing: no {}; {how}",
        path.display()
    );
    let out = Command::new(&path)
        .args(["-c", MODULES])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {how}", path.display()));
    assert!(
        out.status.success(),
        "the OpenTelemetry Python SDK at {} lacks a package: {}; {how}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Runs a Python script with the SDK's interpreter, `stdin` as its input; panics with its output if it fails.
pub fn run(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin written");
    let out = child.wait_with_output().expect("python ends");
    assert!(
        out.status.success(),
        "the Python script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An OTLP export request of one gauge `name` with one data point per value (no attributes, no resource).
pub fn gauge_request(
    name: &str,
    values: &[f64],
) -> harrier::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest {
    use harrier::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use harrier::otlp::proto::metrics::v1::{metric::Data, number_data_point, Gauge, Metric, NumberDataPoint};
    use harrier::otlp::proto::metrics::v1::{ResourceMetrics, ScopeMetrics};
    let points = values
        .iter()
        .map(|&v| NumberDataPoint {
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge { data_points: points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
