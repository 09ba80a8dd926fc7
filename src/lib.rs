//! Harrier: a DogStatsD-compatible metrics aggregation server, in the line of Stripe's Veneur.
//!
//! # Architecture
//!
//! Services send DogStatsD lines over UDP (or TCP, TLS, or unix sockets) to a **local** Harrier on their host.
//! By default a worker thread reads a datagram listener's socket itself; with reader threads, and for stream
//! connections, whole batches of raw packets are handed to one worker per reader or connection. A worker parses
//! each packet into borrowed [`protocol::Message`]s and aggregates every line it receives into the shard it owns
//! (no lock is shared on the hot path, nothing is handed from worker to worker, and a series it already knows
//! costs no allocation); the lines it drops are counted in its own counters.
//!
//! Every `interval`, each worker takes its shard's interval out (the values of the series touched, reset in place;
//! with one worker, the histograms and sets this instance reports already reduced to the values reported), the
//! flusher merges the workers' intervals into one series per key, and turns it into output.
//! What combines safely across hosts (counters, gauges, a histogram's min/max/count) goes straight to the
//! sinks. What does not (t-digests of histograms and timers, HyperLogLogs of sets) is forwarded over gRPC to a
//! **global** Harrier (with DDSketches of distributions, and the counters and gauges of `veneurglobalonly` series),
//! which merges the sketches of every host and emits true fleet-wide percentiles and unique counts.
//!
//! The global tier scales out: with several globals (a list, or DNS discovery), each forwarded series goes to one
//! of them by rendezvous hashing of its series key, the same in every local, or a **proxy** routes the locals'
//! streams the same way. Flushes are aligned to the wall clock, and a local keeps each forwarded batch until the
//! global that merged it acknowledges it flushed, sending it again to a restarted global or to the next one.
//!
//! # Modules, in the order of the data flow
//!
//! - [`config`]: the YAML configuration (and Veneur's), environment overrides and validation.
//! - [`listen`]: binding sockets (UDP, TCP, TLS, unix), reader threads and stream connections that hand batches of
//!   raw packets on; `listen::framing` cuts stream connections (TCP and TLS lines, unix length-prefixed frames).
//! - [`scrape`]: `prometheus_scrape`, Prometheus and OpenMetrics endpoints read on a schedule (`scrape::fetch`),
//!   their samples converted into DogStatsD lines (`scrape::exposition`, `scrape::convert`) that are handed to the
//!   workers as a listener's are.
//! - [`otlp`]: OpenTelemetry metrics: the protocol's types (generated from the official `.proto` files) and the
//!   OTLP/HTTP and OTLP/gRPC source (`otlp::server`), whose requests are converted (`otlp::convert`,
//!   `otlp::attributes`, `otlp::cumulative`) into series handed to the shards by key, as a global's imports are.
//! - [`pipeline`]: the worker threads: each reads its own datagram sockets (`pipeline::source`) or takes batches,
//!   parses and aggregates into its own shard (`pipeline::Ingester`), counts its drops, and takes its interval out
//!   in steps at each flush; their inboxes, lanes and the worker count fitted to the cores.
//! - [`protocol`]: the DogStatsD wire format: packets into borrowed messages.
//! - [`aggregate`]: what becomes a new series (`aggregate::admit`: the limits, `metric_tag_filterlist`, the
//!   blocklist, and `aggregate::mapper`'s `mapper_profiles`, all applied only where a shard meets a line whose text it
//!   does not know), the shards' figures per metric name (`aggregate::names`), series keys and their indexes,
//!   the tag sets new series share (`aggregate::tag_cache`), t-digest histograms, HyperLogLog sets, shard state, the
//!   reporting policy (`aggregate::report`), the workers' intervals merged at the flush (`aggregate::merge`) and
//!   turned into output (`aggregate::emit`); the hot tables in huge pages (`aggregate::huge_pages`) and the log
//!   that applies histogram samples and set members in batches (`aggregate::sample_log`).
//! - [`ddsketch`]: the agent's DDSketch, for distributions under `distributions: sketch`.
//! - [`model`]: the output model every stage after aggregation shares (series, flushes, checks, events, tag sets):
//!   a leaf that imports none of them.
//! - [`flush`]: the interval loop on wall-clock boundaries that takes each worker's interval, merges and builds the
//!   output, and fans out to sinks and the forwarder.
//! - [`forward`]: the global tier over gRPC: routing (rendezvous hashing), discovery (DNS), the sender (a local or
//!   a proxy's router) and its destinations, outcomes, expiry and settlement, the import server (a global or a
//!   proxy), and acknowledgements.
//! - [`sink`]: where flushes go: per-backend encoders (console; Datadog v2 protobuf series, sketches and v1 JSON;
//!   Prometheus remote write) over one HTTP delivery layer (client, retries with backoff, request timeout,
//!   accounting) and its retry queue (bounded in memory, optionally spilled to disk).
//! - [`telemetry`]: self-metrics, each declared once in `telemetry::catalog` (to the sinks, `stats_address` and
//!   `GET /metrics`), and the workers' figures per metric name merged at each flush (`telemetry::series_table`).
//! - [`http`]: `/metrics`, `/debug/series`, health (503 on a proxy with no reachable global) and version endpoints,
//!   and [`capture`]'s `/debug/capture`: what the workers read, recorded for a while on request (one relaxed load per
//!   read when no capture runs) into a zstd file that `harrier replay` sends again.
//! - [`tls`]: the process's rustls provider, server identities reloaded without a restart (gRPC import server,
//!   `tls://` listeners) and the forwarding client's TLS.
//! - [`logging`]: text or JSON logs with level filters, and the rate-limited logs for bad input.
//! - [`client`]: `harrier emit`: one metric, event or service check from a script, over UDP, TCP or a unix socket.
//! - [`capture`]: `GET /debug/capture` records what the workers read into a zstd file, `harrier capture` saves
//!   it and `harrier replay` sends it again.
//! - [`top`]: `harrier top`: the metric names with the most series, lines, bytes or refused series, from a server's
//!   `GET /debug/series` (whose answer is `top::table`); [`http_get`]: the tools' blocking HTTP/1.1 GET.
//! - [`server`]: wiring for a configuration in named phases, and the stop order (`server::stop_order`);
//!   [`shutdown`]: the stop signal; [`allocator`]: glibc's malloc set to give what a flush frees back to the system.

pub mod aggregate;
pub mod allocator;
pub mod capture;
pub mod client;
pub mod config;
pub mod ddsketch;
pub mod exponential;
pub mod flush;
pub mod forward;
pub mod http;
pub mod http_get;
pub mod listen;
pub mod logging;
pub mod model;
pub mod otlp;
pub mod pipeline;
pub mod protocol;
pub mod scrape;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod telemetry;
pub mod tls;
pub mod top;

/// The version of this build, as printed by `harrier --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
