//! The sinks part of the configuration: `metric_sinks` entries and each kind's settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use yaml_serde::{Mapping, Value};

use super::otlp_sink::OtlpConfig;
use super::values::header_map;
use super::{deserialize_duration, ConfigError};

/// One entry of `metric_sinks`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `console`, `datadog`, `prometheus_remote_write` or `otlp`.
    pub kind: SinkKind,
    /// A name for logs and self-metrics. Default: the kind.
    #[serde(default)]
    pub name: String,
    /// Kind-specific settings (see [`DatadogConfig`], [`PrometheusConfig`], [`OtlpConfig`]). Default: none.
    #[serde(default)]
    pub config: Value,
}

impl fmt::Debug for SinkConfig {
    // The raw config may hold an API key or auth headers: show only the parsed, redacted form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SinkConfig");
        d.field("kind", &self.kind).field("name", &self.name);
        match self.kind {
            SinkKind::Datadog => d.field("config", &self.datadog().ok()),
            SinkKind::PrometheusRemoteWrite => d.field("config", &self.prometheus().ok()),
            SinkKind::Otlp => d.field("config", &self.otlp().ok()),
            SinkKind::Console => d.field("config", &"{}"),
        };
        d.finish()
    }
}

impl serde::Serialize for SinkConfig {
    /// With secrets redacted: a non-empty `api_key` and every value of `headers`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut config = self.config.clone();
        if let Value::Mapping(m) = &mut config {
            if m.get("api_key").and_then(Value::as_str).is_some_and(|k| !k.is_empty()) {
                m.insert(Value::String("api_key".into()), Value::String("<redacted>".into()));
            }
            if let Some(Value::Mapping(headers)) = m.get_mut("headers") {
                for (_, v) in headers.iter_mut() {
                    *v = Value::String("<redacted>".into());
                }
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("name", self.display_name())?;
        map.serialize_entry("config", &config)?;
        map.end()
    }
}

/// The kinds of metric sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Console,
    Datadog,
    PrometheusRemoteWrite,
    Otlp,
}

impl SinkConfig {
    /// The most bytes of payloads its retry queue holds in memory (`retry_queue_max_bytes`; 0 for a console sink,
    /// or a config that does not parse, which validation refuses anyway).
    pub fn retry_queue_memory_bytes(&self) -> u64 {
        match self.kind {
            SinkKind::Datadog => self.datadog().map_or(0, |d| d.retry_queue_max_bytes as u64),
            SinkKind::PrometheusRemoteWrite => self.prometheus().map_or(0, |p| p.retry_queue_max_bytes as u64),
            SinkKind::Otlp => self.otlp().map_or(0, |o| o.retry_queue_max_bytes as u64),
            SinkKind::Console => 0,
        }
    }

    /// The sink's name, defaulting to its kind.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            match self.kind {
                SinkKind::Console => "console",
                SinkKind::Datadog => "datadog",
                SinkKind::PrometheusRemoteWrite => "prometheus_remote_write",
                SinkKind::Otlp => "otlp",
            }
        } else {
            &self.name
        }
    }

    fn settings<T: Default + for<'de> Deserialize<'de>>(&self) -> Result<T, ConfigError> {
        if self.config.is_null() {
            return Ok(T::default());
        }
        yaml_serde::from_value(self.config.clone()).map_err(|e| {
            ConfigError::invalid(
                format!("metric_sinks[{}].config", self.display_name()),
                "…",
                e.to_string(),
            )
        })
    }

    /// The typed settings of a `datadog` sink, with `DD_API_KEY` filling an empty `api_key`.
    pub fn datadog(&self) -> Result<DatadogConfig, ConfigError> {
        let mut cfg: DatadogConfig = self.settings()?;
        if cfg.api_key.is_empty() {
            if let Ok(key) = std::env::var("DD_API_KEY") {
                cfg.api_key = key;
            }
        }
        Ok(cfg)
    }

    /// The typed settings of a `prometheus_remote_write` sink.
    pub fn prometheus(&self) -> Result<PrometheusConfig, ConfigError> {
        self.settings()
    }

    /// The typed settings of an `otlp` sink.
    pub fn otlp(&self) -> Result<OtlpConfig, ConfigError> {
        self.settings()
    }

    /// Checks this sink's settings; errors name the key under `metric_sinks[<name>].config`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.display_name();
        let key = |k: &str| format!("metric_sinks[{name}].config.{k}");
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        match self.kind {
            SinkKind::Console => {
                if !(self.config.is_null() || self.config.as_mapping().is_some_and(Mapping::is_empty)) {
                    return Err(ConfigError::invalid(
                        format!("metric_sinks[{name}].config"),
                        "…",
                        "the console sink takes no settings",
                    ));
                }
            }
            SinkKind::Datadog => {
                let dd = self.datadog()?;
                if !is_url(&dd.api_hostname) {
                    return Err(ConfigError::invalid(
                        key("api_hostname"),
                        &dd.api_hostname,
                        "expected an http:// or https:// URL",
                    ));
                }
                if dd.api_key.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        key("api_key"),
                        "",
                        "the Datadog API key is empty: set it here or in the DD_API_KEY environment variable",
                    ));
                }
                if dd.flush_max_per_body == 0 {
                    return Err(ConfigError::invalid(key("flush_max_per_body"), 0, "must be at least 1"));
                }
            }
            SinkKind::PrometheusRemoteWrite => {
                let p = self.prometheus()?;
                if !is_url(&p.url) {
                    return Err(ConfigError::invalid(
                        key("url"),
                        &p.url,
                        "expected the remote-write endpoint as an http:// or https:// URL, e.g. \
                         http://127.0.0.1:9090/api/v1/write",
                    ));
                }
                if p.max_samples_per_request == 0 {
                    return Err(ConfigError::invalid(
                        key("max_samples_per_request"),
                        0,
                        "must be at least 1",
                    ));
                }
                if let Err(header) = p.header_map() {
                    // The value may be a secret: name the header only.
                    return Err(ConfigError::invalid(
                        key("headers"),
                        header,
                        "not a valid HTTP header name, or its value holds characters a header cannot",
                    ));
                }
            }
            SinkKind::Otlp => self.otlp()?.validate(&key)?,
        }
        Ok(())
    }
}

/// Settings of a `datadog` sink (`metric_sinks[].config`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogConfig {
    /// The Datadog API key, sent only in the `DD-API-KEY` header and never logged. Default: empty, filled from
    /// the `DD_API_KEY` environment variable.
    pub api_key: String,
    /// Base URL of the intake. Default: `https://app.datadoghq.com`; `http://127.0.0.1:PORT` for tests.
    pub api_hostname: String,
    /// Most series per request body. Default: `25000`.
    pub flush_max_per_body: usize,
    /// Payloads still failing (5xx, 408, 429, timeouts, connection errors) at the end of their interval wait in
    /// memory and are sent again with later flushes, oldest first; beyond this many bytes the oldest are dropped
    /// (counted in `harrier.sink.dropped{reason:retry_queue_full}`). 0: no queue. Default: `67108864` (64 MiB).
    pub retry_queue_max_bytes: usize,
    /// A directory where queued payloads are also written (bodies only: the API key never reaches the disk), so
    /// that they survive a restart and are sent by the next run; beyond `retry_queue_max_bytes`, the oldest wait
    /// there only. Default: empty (memory only).
    pub retry_queue_dir: String,
    /// Most bytes of payloads kept in `retry_queue_dir`; beyond it the oldest are removed (and dropped, counted, if
    /// not also in memory). Default: `268435456` (256 MiB).
    pub retry_queue_max_disk_bytes: usize,
    /// How long one request may take, whatever the interval (a request under way at the end of its interval is
    /// not cut). Default: `20s` (the agent's `forwarder_timeout`).
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub request_timeout: Duration,
    /// `v2` (the default): series as the agent's `MetricPayload` protobuf to `/api/v2/series`; `v1`: JSON to
    /// `/api/v1/series`.
    pub series_api: SeriesApi,
    /// Compression of `/api/v2/series` and sketch bodies: `zstd` (the default, as today's agent) or `deflate`
    /// (zlib). v1 JSON bodies are always deflate.
    pub compression: Compression,
}

/// `series_api` of a Datadog sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SeriesApi {
    V1,
    #[default]
    V2,
}

/// `compression` of a Datadog sink's protobuf bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Deflate,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            api_key: String::new(),
            api_hostname: "https://app.datadoghq.com".to_string(),
            flush_max_per_body: 25_000,
            retry_queue_max_bytes: 64 << 20,
            retry_queue_dir: String::new(),
            retry_queue_max_disk_bytes: 256 << 20,
            request_timeout: Duration::from_secs(20),
            series_api: SeriesApi::V2,
            compression: Compression::Zstd,
        }
    }
}

impl DatadogConfig {
    /// The delivery layer's settings.
    pub fn delivery(&self) -> DeliverySettings {
        DeliverySettings {
            retry_queue_max_bytes: self.retry_queue_max_bytes,
            retry_queue_dir: self.retry_queue_dir.clone(),
            retry_queue_max_disk_bytes: self.retry_queue_max_disk_bytes,
            request_timeout: self.request_timeout,
        }
    }
}

impl fmt::Debug for DatadogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatadogConfig")
            .field("api_key", &if self.api_key.is_empty() { "" } else { "<redacted>" })
            .field("api_hostname", &self.api_hostname)
            .field("flush_max_per_body", &self.flush_max_per_body)
            .field("retry_queue_max_bytes", &self.retry_queue_max_bytes)
            .field("retry_queue_dir", &self.retry_queue_dir)
            .field("retry_queue_max_disk_bytes", &self.retry_queue_max_disk_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("series_api", &self.series_api)
            .field("compression", &self.compression)
            .finish()
    }
}

/// Settings of a `prometheus_remote_write` sink (`metric_sinks[].config`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// The remote-write endpoint, e.g. `http://127.0.0.1:9090/api/v1/write` (Prometheus with
    /// `--web.enable-remote-write-receiver`), Mimir's or Cortex's `/api/v1/push`, VictoriaMetrics'
    /// `/api/v1/write`. Required.
    pub url: String,
    /// Extra request headers, e.g. `Authorization: Bearer …` or `X-Scope-OrgID: tenant`. Their values are never
    /// logged. Default: none.
    pub headers: BTreeMap<String, String>,
    /// Most samples per request; a flush is cut into requests of at most this many, sent concurrently.
    /// Default: `5000`.
    pub max_samples_per_request: usize,
    /// A counter series not received for this long is forgotten (its running `_total` starts again from 0 if it
    /// comes back, which PromQL's `rate()` and `increase()` read as a counter reset). Default: `10m`.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub counter_expiry: Duration,
    /// As the Datadog sink's: requests still failing at the end of their interval wait in memory, up to this many
    /// bytes, and are sent again (Prometheus refuses samples older than a series' newest, so only what it has not
    /// seen newer of lands). 0: no queue. Default: `67108864` (64 MiB).
    pub retry_queue_max_bytes: usize,
    /// As the Datadog sink's: queued requests are also written there (bodies only, never the headers) and sent
    /// by the next run. Default: empty (memory only).
    pub retry_queue_dir: String,
    /// As the Datadog sink's. Default: `268435456` (256 MiB).
    pub retry_queue_max_disk_bytes: usize,
    /// As the Datadog sink's. Default: `20s`.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub request_timeout: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            max_samples_per_request: 5000,
            counter_expiry: Duration::from_secs(600),
            retry_queue_max_bytes: 64 << 20,
            retry_queue_dir: String::new(),
            retry_queue_max_disk_bytes: 256 << 20,
            request_timeout: Duration::from_secs(20),
        }
    }
}

impl PrometheusConfig {
    /// The delivery layer's settings.
    pub fn delivery(&self) -> DeliverySettings {
        DeliverySettings {
            retry_queue_max_bytes: self.retry_queue_max_bytes,
            retry_queue_dir: self.retry_queue_dir.clone(),
            retry_queue_max_disk_bytes: self.retry_queue_max_disk_bytes,
            request_timeout: self.request_timeout,
        }
    }

    /// `headers` as request headers, their values marked sensitive (never shown); `Err` names the first header
    /// whose name or value cannot be sent.
    pub fn header_map(&self) -> Result<reqwest::header::HeaderMap, &str> {
        header_map(&self.headers)
    }
}

impl fmt::Debug for PrometheusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.keys().map(|k| (k.as_str(), "<redacted>")).collect();
        f.debug_struct("PrometheusConfig")
            .field("url", &self.url)
            .field("headers", &headers)
            .field("max_samples_per_request", &self.max_samples_per_request)
            .field("counter_expiry", &self.counter_expiry)
            .field("retry_queue_max_bytes", &self.retry_queue_max_bytes)
            .field("retry_queue_dir", &self.retry_queue_dir)
            .field("retry_queue_max_disk_bytes", &self.retry_queue_max_disk_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// What every HTTP sink's delivery is configured with (each sink's config has these fields).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `retry_queue_max_bytes`: bodies kept in memory for a later attempt, requests in flight included; 0: none.
    pub retry_queue_max_bytes: usize,
    /// `retry_queue_dir`: where queued bodies are also written; empty: memory only.
    pub retry_queue_dir: String,
    /// `retry_queue_max_disk_bytes`: most bytes of bodies in `retry_queue_dir`.
    pub retry_queue_max_disk_bytes: usize,
    /// `request_timeout`: how long one attempt may take, whatever the interval.
    pub request_timeout: Duration,
}
