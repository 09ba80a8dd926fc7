//! Generates the forwarding protocol's Rust types and gRPC service from `proto/` with a pure-Rust protobuf
//! compiler (protox): no system `protoc` is needed.
//!
//! Two generations of the same file, the same package and service:
//! - `$OUT_DIR/harrier.forward.v1.rs`: the full types, which a global decodes and validates;
//! - `$OUT_DIR/view/harrier.forward.v1.rs`: the same wire format with a metric's `histogram` and `set` kept as
//!   undecoded bytes (a length-delimited submessage and a `bytes` field are the same on the wire), which the
//!   senders use: a proxy routes a metric by its name, type and tags without decoding (or re-encoding) its sketch.
//!   Its `MetricBatch` is `crate::forward::wire::RawBatch`: each metric kept as its encoded bytes.
//!
//! And `proto/prometheus/remote.proto` (remote write's `WriteRequest`) and
//! `proto/datadog/agentpayload/agent_payload.proto` (the Datadog agent's `MetricPayload` and `SketchPayload`),
//! message types only.
//!
//! And the official OpenTelemetry protocol files (`proto/opentelemetry/`, v1.9.0 of
//! github.com/open-telemetry/opentelemetry-proto, Apache-2.0, unmodified): the metrics types and the
//! `MetricsService` gRPC service, client and server, for the OTLP source and sink (`crate::otlp`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/harrier/forward/v1/forward.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors.clone())?;

    let mut view = descriptors;
    const TYPE_BYTES: i32 = 12;
    let mut changed = 0;
    for file in view.file.iter_mut() {
        for message in file.message_type.iter_mut() {
            if message.name.as_deref() != Some("Metric") {
                continue;
            }
            for field in message.field.iter_mut() {
                if matches!(field.name.as_deref(), Some("histogram" | "set" | "sketch")) {
                    field.r#type = Some(TYPE_BYTES);
                    field.type_name = None;
                    changed += 1;
                }
            }
        }
    }
    assert_eq!(
        changed, 3,
        "forward.proto's Metric must have `histogram`, `set` and `sketch` fields"
    );
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("view");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .extern_path(".harrier.forward.v1.MetricBatch", "crate::forward::wire::RawBatch")
        .out_dir(&out)
        .compile_fds(view)?;

    // Prometheus remote write: message types only (`$OUT_DIR/prometheus.rs`), for the sink's tests and tools; the
    // sink itself writes the same wire format directly.
    let remote = "proto/prometheus/remote.proto";
    println!("cargo:rerun-if-changed={remote}");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(protox::compile([remote], ["proto"])?)?;

    // The Datadog agent's payloads (`$OUT_DIR/datadog.agentpayload.rs`), message types only: the sink writes the
    // wire format directly; tests and tools decode with these.
    let agent = "proto/datadog/agentpayload/agent_payload.proto";
    println!("cargo:rerun-if-changed={agent}");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(protox::compile([agent], ["proto"])?)?;

    let otlp = "proto/opentelemetry/proto/collector/metrics/v1/metrics_service.proto";
    println!("cargo:rerun-if-changed=proto/opentelemetry");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(protox::compile([otlp], ["proto"])?)?;
    Ok(())
}
