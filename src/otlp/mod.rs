//! OpenTelemetry metrics (OTLP): the protocol's types, generated at build time from the official
//! `proto/opentelemetry/` files (see `build.rs`), shared by the OTLP source and the `otlp` sink; and the source,
//! `otlp_listen_addresses`: OTLP/HTTP and OTLP/gRPC endpoints ([`server`]) whose requests are converted
//! ([`convert`]: data point types into counters, gauges and distributions; [`attributes`]: attributes into tags;
//! [`cumulative`]: cumulative streams into what each point adds) into series that join the same shards as the
//! DogStatsD lines.

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

pub mod attributes;
pub mod convert;
pub mod cumulative;
pub mod server;
