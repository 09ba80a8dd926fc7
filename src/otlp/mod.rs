//! OpenTelemetry metrics (OTLP): the protocol's types, generated at build time from the official
//! `proto/opentelemetry/` files (see `build.rs`), shared by the OTLP source and the `otlp` sink.

/// The OTLP metrics types and the `MetricsService` gRPC client and server, as generated from
/// `proto/opentelemetry/proto/` (v1.9.0 of the official repository, unmodified).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.common.v1");
        }
    }
    pub mod resource {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.resource.v1");
        }
    }
    pub mod metrics {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.metrics.v1");
        }
    }
    pub mod collector {
        pub mod metrics {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.collector.metrics.v1");
            }
        }
    }
}
