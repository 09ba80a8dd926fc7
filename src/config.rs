//! Configuration: YAML with Veneur's key names (Veneur's own files are read too, see [`veneur`]),
//! `VENEUR_<KEY>` and `HARRIER_<KEY>` environment overrides, and validation whose errors name the key to fix. Every field documents its default here and in `config.example.yaml`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use yaml_serde::{Mapping, Value};

use crate::logging::LogFormat;

/// Why a configuration was refused. Each message names the key (or variable) and the value to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("config key `{key}`: {value:?} is invalid: {reason}")]
    Invalid { key: String, value: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration. Every key is optional; with none, Harrier is a local server on
/// `udp://127.0.0.1:8125` printing each flush to stdout every 10 s.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where DogStatsD is received: `udp://host:port`, `tcp://host:port`, `unixgram:///path` (datagrams) or
    /// `unix:///path` (stream of 4-byte little-endian length-prefixed frames). Default: `[udp://127.0.0.1:8125]`.
    pub statsd_listen_addresses: Vec<String>,
    /// Flush interval. Default: `10s`. Accepts `500ms`, `10s`, `1m`, `1m30s`, or a number of seconds. Flushes
    /// happen at multiples of it on the wall clock (so every instance's intervals line up; the first interval
    /// after a start is shorter).
    #[serde(deserialize_with = "deserialize_duration", serialize_with = "serialize_duration")]
    pub interval: Duration,
    /// Host reported with every series that has no `host:` tag. Default: this machine's hostname. Empty means
    /// no host is attached.
    pub hostname: String,
    /// `host:port` of the global (or proxy) Harrier to forward sketches to. Setting it makes this a local
    /// instance. Default: empty (this instance is the root: it emits everything itself).
    pub forward_address: String,
    /// Several globals, `["host:port", ...]`: each forwarded series goes to one of them, chosen by rendezvous
    /// hashing of its series key, so every local picks the same global for the same series. Exclusive with
    /// `forward_address` and `forward_discovery`. Default: `[]`.
    pub forward_addresses: Vec<String>,
    /// The globals from DNS: `{kind: dns_a | dns_srv, name, port (dns_a only), refresh: 30s, nameserver}`; see
    /// [`DiscoveryConfig`]. Exclusive with `forward_address` and `forward_addresses`. Default: none.
    pub forward_discovery: Option<DiscoveryConfig>,
    /// Run as a proxy: receive the locals' forwarded streams on `grpc_address` and route each metric at once to
    /// its owning global (`forward_addresses` or `forward_discovery`), without merging. A proxy has no
    /// DogStatsD listeners (`statsd_listen_addresses` is ignored) and no default console sink: its self-metrics
    /// go to `metric_sinks` if any are configured. Default: `false`.
    pub proxy: bool,
    /// `host:port` on which to serve the gRPC import API (global and proxy tiers). Default: empty (no import
    /// server).
    pub grpc_address: String,
    /// `host:port` for `GET /healthcheck`, `GET /version` and `GET /metrics` (the self-metrics in Prometheus' text
    /// format). Default: empty (no HTTP server).
    pub http_address: String,
    /// Tags added to every metric, event and service check at parse time; a configured `key:value` replaces a
    /// packet tag with the same key. Default: `[]`.
    pub extend_tags: Vec<String>,
    /// Quantiles in (0, 1) emitted for histograms and timers where percentiles are computed (the global, a root
    /// instance, or `veneurlocalonly`). `0.99` is emitted as `<name>.99percentile`, `0.999` as
    /// `<name>.99_9percentile`. Default: `[0.5, 0.9, 0.99]`.
    pub percentiles: Vec<f64>,
    /// Histogram and timer aggregates emitted from each instance's own samples: any of `min`, `max`, `median`,
    /// `avg`, `count`, `sum`, `hmean` (the harmonic mean: 0 when a sample was 0; `sum` saturates at ±`f64::MAX`).
    /// Default: `[min, max, count]`.
    pub aggregates: Vec<Aggregate>,
    /// What a distribution (`d`) is: `sketch`, the Datadog agent's DDSketch (merged exactly across hosts by the
    /// global tier, sent to a Datadog sink as a sketch to `/api/beta/sketches`, and reported to other sinks as
    /// `aggregates` and `percentiles`); or `histogram`, a t-digest like `h`. Default: `sketch`.
    pub distributions: Distributions,
    /// Worker threads, each reading and aggregating on its own (a series received by several is merged at the
    /// flush). `0`: fitted to the work and to the cores the process may run on (`sched_getaffinity`): one per
    /// datagram socket read by a worker when that is all there is to read (one for the usual single UDP listener,
    /// leaving the other cores to the applications on the host), else one per core (reader threads, stream
    /// listeners, or a `grpc_address` taking imports). Default: `0`.
    pub num_workers: usize,
    /// Reader threads per UDP or unix datagram listener, each with its own socket (UDP sockets are bound with
    /// SO_REUSEPORT when more than one, which lets the kernel spread senders over them, but also lets another
    /// process of the same user bind the port). A reader only receives, and hands datagrams in batches to one
    /// worker (readers spread over the workers; UDP: the kernel keeps each sender on one socket). `0`: no reader
    /// thread; the listener's one socket is read by a worker, which parses what it receives on the spot (listeners
    /// are spread over the workers): the least CPU per line (no copy, no hand-over, no thread switch), with one
    /// worker receiving and parsing everything a listener gets (several million lines per second on one core).
    /// Default: `0`.
    pub num_readers: usize,
    /// SO_RCVBUF requested for UDP and unix datagram sockets, in bytes. Default: `16777216` (16 MiB: about
    /// 300 ms of 1M lines/s, more than a worker spends ending an interval of a million series). The kernel caps it
    /// at `net.core.rmem_max`; with CAP_NET_ADMIN the size is forced (SO_RCVBUFFORCE), otherwise a warning names
    /// the sysctl. The buffer absorbs bursts while workers are busy.
    pub read_buffer_size_bytes: usize,
    /// Longest datagram, stream frame or TCP line accepted, in bytes. Longer ones are counted and dropped whole,
    /// never truncated. Default: `8192`.
    pub metric_max_length: usize,
    /// Run a final flush (bounded by one interval) on SIGTERM or SIGINT. Default: `true`.
    pub flush_on_shutdown: bool,
    /// How many intervals a local keeps sketches it could not forward, merging them into the next forward,
    /// before dropping them (counted). Default: `6`.
    pub forward_max_intervals: u32,
    /// Idle TCP and unix stream connections are closed after this long without data. Default: `10m`.
    #[serde(deserialize_with = "deserialize_duration", serialize_with = "serialize_duration")]
    pub tcp_idle_timeout: Duration,
    /// Where flushed metrics go: a list of `{kind, name, config}` with kind `console`, `datadog` or
    /// `prometheus_remote_write` (see [`SinkConfig`]). Default:
    /// `[]`, which means one `console` sink printing to stdout.
    pub metric_sinks: Vec<SinkConfig>,
    /// Tags added to every series, service check and event at the sinks (not forwarded, not part of the series
    /// key: Veneur's v14.2 `tags`). Default: `[]`.
    pub tags: Vec<String>,
    /// `host:port` to send Harrier's own metrics to, as DogStatsD over UDP, instead of the sinks (Veneur's
    /// `stats_address`; pointing it at this server's own listener makes them ordinary metrics). Default: empty
    /// (self-metrics go to the sinks with each flush).
    pub stats_address: String,
    /// Most connections open at once on each TCP or unix stream listener (0: no limit). A connection beyond it is
    /// closed at once and counted (`harrier.listener.connections_refused{listener}`); the open ones go on.
    /// Default: `1024`.
    pub max_connections: usize,
    /// Most series kept at once, in total over the shards (0: no limit). Lines of a new series beyond it are
    /// dropped and counted (`harrier.series.dropped{reason:series_limit}`), and a log line (at most once a
    /// second) names the metrics that brought the most of them; series already kept go on being aggregated,
    /// and a series idle for an interval leaves room. Memory then stays bounded under a flood of distinct series
    /// (a request id in a tag). Series imported from other instances are never refused. Default: `0`.
    pub series_limit: usize,
    /// Most series of any one metric name held at once (the rest of `series_limit` stays for the others); new
    /// series beyond it are dropped and counted (`harrier.series.dropped{reason:series_limit_per_metric}`, and by
    /// name in `harrier.series.limited`). At least 1. Default: none (no limit).
    pub series_limit_per_metric: Option<usize>,
    /// Most distinct values of a tag key among the series held: `[{tag: pod_name, limit: 2000}]`. A new series
    /// with a value beyond the limit is dropped and counted (`reason:series_limit_per_tag`); series with values
    /// already held go on. Default: `[]`.
    pub series_limit_per_tag: Vec<TagLimit>,
    /// Metric names rewritten into a name and tags (the agent's `dogstatsd_mapper_profiles`, also accepted):
    /// `[{name, prefix, mappings: [{match, match_type: wildcard|regex, name, tags}]}]`; see [`MapperProfile`].
    /// Default: `[]`.
    #[serde(alias = "dogstatsd_mapper_profiles")]
    pub mapper_profiles: Vec<MapperProfile>,
    /// Distinct names whose mapping each worker remembers (the agent's `dogstatsd_mapper_cache_size`). A series
    /// already held costs no mapping at all; this saves the matching for new series of a known name. Default:
    /// `1000`.
    #[serde(alias = "dogstatsd_mapper_cache_size")]
    pub mapper_cache_size: usize,
    /// Tags removed from (`exclude`) or kept on (`include`) a metric's series before they are keyed:
    /// `[{metric_name, action, tags: [key, ...]}]`. Series that then have the same key are one series (counters
    /// summed, gauges last, histograms, sets and sketches merged), on a local, a global and before forwarding.
    /// Default: `[]`.
    pub metric_tag_filterlist: Vec<TagFilter>,
    /// Metric names (after `mapper_profiles`) whose lines are dropped and counted
    /// (`harrier.lines.blocklisted{entry}`). Default: `[]`.
    pub statsd_metric_blocklist: Vec<String>,
    /// `statsd_metric_blocklist` entries are name prefixes instead of whole names. Default: `false`.
    pub statsd_metric_blocklist_match_prefix: bool,
    /// Lowest sample rate honoured: a line sent with `@r` below it counts as sent at this rate (1/rate samples)
    /// and is counted (`harrier.lines.sample_rate_clamped`); between 1e-9 and 1 (the agent's
    /// `dogstatsd_minimum_sample_rate`, also accepted). Default: `0.000001`.
    #[serde(alias = "dogstatsd_minimum_sample_rate")]
    pub minimum_sample_rate: f64,
    /// A budget for the series' state, in bytes (`536870912`, or `512MiB`): new series are refused (counted,
    /// `reason:memory_limit`, and logged at most once a second) once the estimated state of the series held, with
    /// the process' fixed memory, would exceed it; known series go on. A config whose fixed bounds already exceed
    /// it is refused at start. Default: none (no budget).
    #[serde(deserialize_with = "controls::deserialize_bytes")]
    pub memory_limit: Option<u64>,
    /// TLS on the gRPC import server (`grpc_address`): `{cert_file, key_file, client_ca_file}`; with
    /// `client_ca_file`, mutual TLS. See [`tls::ServerTlsConfig`]. Default: none (plain HTTP/2).
    pub grpc_tls: Option<ServerTlsConfig>,
    /// TLS of the `tls://host:port` statsd listeners (newline-delimited lines, as `tcp://`):
    /// `{cert_file, key_file, client_ca_file}`. Default: none.
    pub statsd_tls: Option<ServerTlsConfig>,
    /// TLS to the global tier: `{ca_file, cert_file, key_file, server_name}`. See [`tls::ClientTlsConfig`].
    /// Default: none (plain HTTP/2).
    pub forward_tls: Option<ClientTlsConfig>,
    /// Prometheus and OpenMetrics endpoints to read on a schedule, their samples aggregated with the DogStatsD
    /// lines (see [`ScrapeConfig`]). Default: `[]`.
    pub prometheus_scrape: Vec<ScrapeConfig>,
    /// OpenTelemetry (OTLP) metrics to take in, aggregated with the DogStatsD lines: `http://host:4318` (OTLP/HTTP,
    /// protobuf), `grpc://host:4317` (OTLP/gRPC), `https://`/`grpcs://` with `otlp_tls`. See [`crate::otlp`].
    /// Default: `[]`.
    pub otlp_listen_addresses: Vec<String>,
    /// TLS of the `https://` and `grpcs://` OTLP listeners: `{cert_file, key_file, client_ca_file}`. Default: none.
    pub otlp_tls: Option<ServerTlsConfig>,
    /// The largest OTLP request taken, in bytes (after gzip): larger ones are refused (HTTP 413, gRPC
    /// `RESOURCE_EXHAUSTED`). Default: 4194304 (4 MiB, gRPC's usual limit).
    pub otlp_max_request_bytes: usize,
    /// Every resource attribute of an OTLP request as a `key:value` tag; otherwise only `host.name`,
    /// `service.name`, `service.version` and `deployment.environment(.name)` are (as `host`, `service`,
    /// `version`, `env`). Default: false.
    pub otlp_resource_attributes_as_tags: bool,
    /// Log lines as `text` or `json` (one object per line: timestamp, level, message, target and fields), on
    /// stderr. Default: `text`.
    pub log_format: LogFormat,
    /// Which logs are written: `error`, `warn`, `info`, `debug`, `trace`, or a filter such as
    /// `warn,harrier::forward=debug`. `RUST_LOG`, when set, replaces it. Default: `info`.
    pub log_level: String,
    /// Warnings from reading the file: Veneur keys that were accepted but are ignored. Not a key.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            statsd_listen_addresses: vec!["udp://127.0.0.1:8125".to_string()],
            interval: Duration::from_secs(10),
            hostname: system_hostname(),
            forward_address: String::new(),
            forward_addresses: Vec::new(),
            forward_discovery: None,
            proxy: false,
            grpc_address: String::new(),
            http_address: String::new(),
            extend_tags: Vec::new(),
            percentiles: vec![0.5, 0.9, 0.99],
            aggregates: vec![Aggregate::Min, Aggregate::Max, Aggregate::Count],
            distributions: Distributions::Sketch,
            num_workers: 0,
            num_readers: 0,
            read_buffer_size_bytes: 16 * 1024 * 1024,
            metric_max_length: 8192,
            flush_on_shutdown: true,
            forward_max_intervals: 6,
            tcp_idle_timeout: Duration::from_secs(600),
            metric_sinks: Vec::new(),
            tags: Vec::new(),
            stats_address: String::new(),
            max_connections: 1024,
            series_limit: 0,
            series_limit_per_metric: None,
            series_limit_per_tag: Vec::new(),
            mapper_profiles: Vec::new(),
            mapper_cache_size: 1000,
            metric_tag_filterlist: Vec::new(),
            statsd_metric_blocklist: Vec::new(),
            statsd_metric_blocklist_match_prefix: false,
            minimum_sample_rate: 1e-6,
            memory_limit: None,
            grpc_tls: None,
            statsd_tls: None,
            forward_tls: None,
            prometheus_scrape: Vec::new(),
            otlp_listen_addresses: Vec::new(),
            otlp_tls: None,
            otlp_max_request_bytes: 4 * 1024 * 1024,
            otlp_resource_attributes_as_tags: false,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            warnings: Vec::new(),
        }
    }
}

/// How a top-level key's environment value is read.
#[derive(Clone, Copy, PartialEq)]
enum EnvKind {
    /// Taken verbatim as a string.
    Text,
    /// Comma-separated list (or a YAML flow sequence `[a, b]`).
    List,
    /// Any YAML value: numbers, booleans, durations, flow mappings.
    Yaml,
}

/// Every top-level key, with how its `HARRIER_<KEY>` environment override is read.
const KEYS: &[(&str, EnvKind)] = &[
    ("statsd_listen_addresses", EnvKind::List),
    ("interval", EnvKind::Text),
    ("hostname", EnvKind::Text),
    ("forward_address", EnvKind::Text),
    ("forward_addresses", EnvKind::List),
    ("forward_discovery", EnvKind::Yaml),
    ("grpc_tls", EnvKind::Yaml),
    ("statsd_tls", EnvKind::Yaml),
    ("forward_tls", EnvKind::Yaml),
    ("proxy", EnvKind::Yaml),
    ("grpc_address", EnvKind::Text),
    ("http_address", EnvKind::Text),
    ("extend_tags", EnvKind::List),
    ("percentiles", EnvKind::List),
    ("aggregates", EnvKind::List),
    ("distributions", EnvKind::Text),
    ("num_workers", EnvKind::Yaml),
    ("num_readers", EnvKind::Yaml),
    ("read_buffer_size_bytes", EnvKind::Yaml),
    ("metric_max_length", EnvKind::Yaml),
    ("flush_on_shutdown", EnvKind::Yaml),
    ("forward_max_intervals", EnvKind::Yaml),
    ("tcp_idle_timeout", EnvKind::Text),
    ("metric_sinks", EnvKind::Yaml),
    ("tags", EnvKind::List),
    ("stats_address", EnvKind::Text),
    ("max_connections", EnvKind::Yaml),
    ("series_limit", EnvKind::Yaml),
    ("series_limit_per_metric", EnvKind::Yaml),
    ("series_limit_per_tag", EnvKind::Yaml),
    ("mapper_profiles", EnvKind::Yaml),
    ("mapper_cache_size", EnvKind::Yaml),
    ("metric_tag_filterlist", EnvKind::Yaml),
    ("statsd_metric_blocklist", EnvKind::List),
    ("statsd_metric_blocklist_match_prefix", EnvKind::Yaml),
    ("minimum_sample_rate", EnvKind::Yaml),
    ("memory_limit", EnvKind::Yaml),
    ("prometheus_scrape", EnvKind::Yaml),
    ("otlp_listen_addresses", EnvKind::List),
    ("otlp_tls", EnvKind::Yaml),
    ("otlp_max_request_bytes", EnvKind::Yaml),
    ("otlp_resource_attributes_as_tags", EnvKind::Yaml),
    ("log_format", EnvKind::Text),
    ("log_level", EnvKind::Text),
];

impl Config {
    /// The effective configuration as YAML, with secrets (API keys, sink header values) redacted: what
    /// `--print-config` shows.
    pub fn to_redacted_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Reads a YAML file, applies `HARRIER_<KEY>` overrides from the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let name = path.map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string());
        Config::from_yaml_with_env(&text, &name, |k| std::env::var(k).ok())
    }

    /// Parses YAML text, applies environment overrides looked up through `env`, and validates.
    pub fn from_yaml_with_env(
        text: &str,
        source_name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: source_name.to_string(),
            message,
        };
        let mut root = if text.trim().is_empty() {
            Mapping::new()
        } else {
            match yaml_serde::from_str::<Value>(text).map_err(|e| parse_err(e.to_string()))? {
                Value::Mapping(m) => m,
                Value::Null => Mapping::new(),
                _ => {
                    return Err(parse_err(
                        "the top level must be a mapping of keys to values".to_string(),
                    ))
                }
            }
        };
        // Veneur's variables first, then Harrier's, which win; then Veneur's keys become Harrier's.
        let veneur_keys = veneur::VENEUR_ONLY_ENV
            .iter()
            .map(|&(k, kind)| (veneur::env_var(k), k, kind));
        let harrier_keys = KEYS
            .iter()
            .map(|&(k, kind)| (format!("HARRIER_{}", k.to_ascii_uppercase()), k, kind));
        let overrides = KEYS
            .iter()
            .map(|&(k, kind)| (veneur::env_var(k), k, kind))
            .chain(veneur_keys)
            .chain(harrier_keys);
        for (var, key, kind) in overrides {
            let Some(raw) = env(&var) else { continue };
            let env_err = |message: String| ConfigError::Env {
                var: var.clone(),
                value: raw.clone(),
                message,
            };
            let yaml = |s: &str| yaml_serde::from_str::<Value>(s).map_err(|e| env_err(e.to_string()));
            let value = match kind {
                EnvKind::Text => Value::String(raw.clone()),
                EnvKind::Yaml => yaml(&raw)?,
                EnvKind::List if raw.trim_start().starts_with('[') => yaml(&raw)?,
                EnvKind::List => Value::Sequence(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| match key {
                            // Numbers stay numbers; tags and addresses stay text even when they look numeric.
                            "percentiles" => yaml(s),
                            _ => Ok(Value::String(s.to_string())),
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            root.insert(Value::String(key.to_string()), value);
        }
        let warnings = veneur::translate(&mut root);
        let mut config: Config = yaml_serde::from_value(Value::Mapping(root)).map_err(|e| parse_err(e.to_string()))?;
        config.warnings = warnings;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the key and the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sources = !self.grpc_address.is_empty()
            || !self.prometheus_scrape.is_empty()
            || !self.otlp_listen_addresses.is_empty();
        if self.statsd_listen_addresses.is_empty() && !sources {
            return Err(ConfigError::invalid(
                "statsd_listen_addresses",
                "[]",
                "nothing to listen on: give at least one address (e.g. udp://127.0.0.1:8125), a grpc_address, \
                 prometheus_scrape or otlp_listen_addresses",
            ));
        }
        self.listen_addresses()?;
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid(
                "interval",
                format!("{:?}", self.interval),
                "must be between 10ms and 24h",
            ));
        }
        if self.tcp_idle_timeout.is_zero() || self.tcp_idle_timeout > Duration::from_secs(7 * 86_400) {
            return Err(ConfigError::invalid(
                "tcp_idle_timeout",
                format!("{:?}", self.tcp_idle_timeout),
                "must be between 1ns and 7 days",
            ));
        }
        if self.num_workers > 1024 || self.num_readers > 1024 {
            return Err(ConfigError::invalid(
                "num_workers",
                format!("{}/{}", self.num_workers, self.num_readers),
                "num_workers and num_readers are at most 1024",
            ));
        }
        if self.forward_max_intervals == 0 || self.forward_max_intervals > 1000 {
            return Err(ConfigError::invalid(
                "forward_max_intervals",
                self.forward_max_intervals,
                "must be between 1 and 1000",
            ));
        }
        self.validate_outputs()?;
        for (key, v) in [("metric_max_length", self.metric_max_length)] {
            if v == 0 {
                return Err(ConfigError::invalid(key, 0, "must be at least 1"));
            }
        }
        if self.metric_max_length > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "metric_max_length",
                self.metric_max_length,
                "must be at most 16 MiB",
            ));
        }
        for (key, v) in [
            ("grpc_address", &self.grpc_address),
            ("http_address", &self.http_address),
            ("stats_address", &self.stats_address),
        ] {
            if !v.is_empty() {
                parse_socket_addr(v).map_err(|reason| ConfigError::invalid(key, v, reason))?;
            }
        }
        forward::validate(self)?;
        tls::validate(self)?;
        scrape::validate(&self.prometheus_scrape)?;
        otlp::validate(self)?;
        controls::validate(self)?;
        crate::logging::parse_filter(&self.log_level)
            .map_err(|reason| ConfigError::invalid("log_level", &self.log_level, reason))?;
        for (key, tags) in [("extend_tags", &self.extend_tags), ("tags", &self.tags)] {
            for tag in tags {
                if tag.is_empty() || tag.contains(',') {
                    return Err(ConfigError::invalid(key, tag, "a tag is non-empty and has no comma"));
                }
            }
        }
        self.validate_sinks()?;
        Ok(())
    }

    /// `aggregates` and `percentiles`: each output name once.
    fn validate_outputs(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for a in &self.aggregates {
            if !names.insert(a.suffix().to_string()) {
                return Err(ConfigError::invalid("aggregates", a.suffix(), "listed twice"));
            }
        }
        for &p in &self.percentiles {
            if !(p > 0.0 && p < 1.0) {
                return Err(ConfigError::invalid(
                    "percentiles",
                    p,
                    "a percentile is a quantile in (0, 1), e.g. 0.99",
                ));
            }
            let suffix = percentile_suffix(p);
            if !names.insert(suffix.clone()) {
                return Err(ConfigError::invalid(
                    "percentiles",
                    p,
                    format!("its output name .{suffix} collides with another percentile"),
                ));
            }
        }
        Ok(())
    }

    /// `metric_sinks`: distinct names, each sink's own settings.
    fn validate_sinks(&self) -> Result<(), ConfigError> {
        let mut sink_names = HashSet::new();
        for sink in &self.metric_sinks {
            let name = sink.display_name().to_string();
            if !sink_names.insert(name.clone()) {
                return Err(ConfigError::invalid(
                    "metric_sinks",
                    &name,
                    "two sinks have this name; give each a distinct `name`",
                ));
            }
            sink.validate()?;
        }
        Ok(())
    }

    /// The parsed `statsd_listen_addresses`.
    pub fn listen_addresses(&self) -> Result<Vec<ListenAddress>, ConfigError> {
        self.statsd_listen_addresses
            .iter()
            .map(|a| {
                ListenAddress::parse(a).map_err(|reason| ConfigError::invalid("statsd_listen_addresses", a, reason))
            })
            .collect()
    }

    /// True when this instance forwards sketches to a global tier (`forward_address`, `forward_addresses` or
    /// `forward_discovery`) instead of emitting percentiles, and is not a proxy.
    pub fn is_local(&self) -> bool {
        !self.proxy && self.forwards()
    }

    /// `Some(max_buckets)` (the largest of them) when an `otlp` sink sends histograms whole: the flush then builds
    /// them (see `EmitConfig::exponential`); `None` otherwise.
    pub fn histogram_buckets(&self) -> Option<usize> {
        self.metric_sinks
            .iter()
            .filter(|s| s.kind == SinkKind::Otlp)
            .map(|s| s.otlp().map_or(OtlpConfig::default().max_buckets, |o| o.max_buckets))
            .max()
    }

    /// True when any forwarding target is configured.
    pub fn forwards(&self) -> bool {
        !self.forward_address.is_empty() || !self.forward_addresses.is_empty() || self.forward_discovery.is_some()
    }
}

pub mod aggregation;
mod values;
pub(crate) use values::{deserialize_duration, serialize_duration};
pub use values::{parse_duration, parse_socket_addr, strip_http_scheme, system_hostname};
pub mod controls;
mod forward;
mod listen;
pub mod otlp;
mod otlp_sink;
mod scrape;
mod sinks;
pub mod tls;
pub mod veneur;
mod veneur_proxy;
pub use aggregation::{percentile_suffix, Aggregate, Distributions};
pub use controls::{FilterAction, MapperProfile, MatchType, MetricMapping, TagFilter, TagLimit};
pub use forward::{DiscoveryConfig, DiscoveryKind};
pub use listen::{unix_name, ListenAddress};
pub use otlp_sink::{HistogramFormat, OtlpCompression, OtlpConfig, Temporality};
pub use scrape::{pattern_set, ScrapeConfig, ScrapeHistograms};
pub use sinks::{Compression, DatadogConfig, DeliverySettings, PrometheusConfig, SeriesApi, SinkConfig, SinkKind};
pub use tls::{ClientTlsConfig, ServerTlsConfig};

#[cfg(test)]
mod tests;
