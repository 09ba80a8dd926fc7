//! The settings of an `otlp` sink (`metric_sinks[].config` of `kind: otlp`): OTLP/HTTP protobuf to a collector.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::values::header_map;
use super::{deserialize_duration, ConfigError, DeliverySettings};

/// Settings of an `otlp` sink.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The OTLP/HTTP endpoint's base URL; requests go to `{endpoint}/v1/metrics`. Default:
    /// `http://127.0.0.1:4318` (a collector's OTLP/HTTP receiver on this host).
    pub endpoint: String,
    /// Extra request headers, e.g. `Authorization: Bearer …` or a vendor's API key header. Their values are never
    /// logged nor shown. Default: none.
    pub headers: BTreeMap<String, String>,
    /// `gzip` (the default) or `none`. Gzip because every OTLP/HTTP receiver must accept it, metric protobufs shrink
    /// about tenfold with it (names, attribute keys and values repeat across data points), and the cost is a few
    /// milliseconds per megabyte, once per flush.
    pub compression: OtlpCompression,
    /// `delta` (the default): each counter's data point is the interval's sum, from the interval's start to the
    /// flush; `cumulative`: the running total since the stream was first seen (kept per stream, forgotten after
    /// `counter_expiry` idle, then started again with a new start time).
    pub temporality: Temporality,
    /// `exponential` (the default): a histogram, timer or distribution is one `ExponentialHistogram` data point;
    /// `summary`: one `Summary` data point with its count, sum and the configured `percentiles`.
    pub histogram_format: HistogramFormat,
    /// Most buckets of each sign of an exponential histogram; the scale is the largest (at most 20) at which the
    /// interval's values fit. Default: `160` (the OpenTelemetry SDK's and the collector's statsd receiver's).
    pub max_buckets: usize,
    /// Most data points per request; a larger flush is cut into several requests, sent concurrently (a
    /// collector's OTLP/HTTP receiver refuses bodies over 20 MiB by default). Default: `10000`.
    pub max_data_points_per_request: usize,
    /// With `temporality: cumulative`, a counter stream not received for this long is forgotten. Default: `10m`.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub counter_expiry: Duration,
    /// As the Datadog sink's: requests still failing (429, 502, 503, 504, timeouts, connection errors) at the end
    /// of their interval wait in memory, up to this many bytes, and are sent again. 0: no queue. Default:
    /// `67108864` (64 MiB).
    pub retry_queue_max_bytes: usize,
    /// As the Datadog sink's: queued requests are also written there (bodies only, never the headers) and sent by
    /// the next run. Default: empty (memory only).
    pub retry_queue_dir: String,
    /// As the Datadog sink's. Default: `268435456` (256 MiB).
    pub retry_queue_max_disk_bytes: usize,
    /// As the Datadog sink's: how long one request may take. Default: `20s`.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub request_timeout: Duration,
}

/// `compression` of an `otlp` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    #[default]
    Gzip,
    None,
}

/// `temporality` of an `otlp` sink's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    #[default]
    Delta,
    Cumulative,
}

/// `histogram_format` of an `otlp` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HistogramFormat {
    #[default]
    Exponential,
    Summary,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4318".to_string(),
            headers: BTreeMap::new(),
            compression: OtlpCompression::Gzip,
            temporality: Temporality::Delta,
            histogram_format: HistogramFormat::Exponential,
            max_buckets: 160,
            max_data_points_per_request: 10_000,
            counter_expiry: Duration::from_secs(600),
            retry_queue_max_bytes: 64 << 20,
            retry_queue_dir: String::new(),
            retry_queue_max_disk_bytes: 256 << 20,
            request_timeout: Duration::from_secs(20),
        }
    }
}

impl OtlpConfig {
    /// The delivery layer's settings.
    pub fn delivery(&self) -> DeliverySettings {
        DeliverySettings {
            retry_queue_max_bytes: self.retry_queue_max_bytes,
            retry_queue_dir: self.retry_queue_dir.clone(),
            retry_queue_max_disk_bytes: self.retry_queue_max_disk_bytes,
            request_timeout: self.request_timeout,
        }
    }

    /// `{endpoint}/v1/metrics`.
    pub fn url(&self) -> String {
        format!("{}/v1/metrics", self.endpoint.trim_end_matches('/'))
    }

    /// `headers` as request headers, their values marked sensitive; `Err` names the first that cannot be sent.
    pub fn header_map(&self) -> Result<reqwest::header::HeaderMap, &str> {
        header_map(&self.headers)
    }

    /// Checks the settings; `key` names a key under the sink's `config`.
    pub(super) fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(ConfigError::invalid(
                key("endpoint"),
                &self.endpoint,
                "expected the OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (requests go to {endpoint}/v1/metrics)",
            ));
        }
        if self.max_buckets < 2 {
            return Err(ConfigError::invalid(
                key("max_buckets"),
                self.max_buckets,
                "must be at least 2",
            ));
        }
        if self.max_data_points_per_request == 0 {
            return Err(ConfigError::invalid(
                key("max_data_points_per_request"),
                0,
                "must be at least 1",
            ));
        }
        if let Err(header) = self.header_map() {
            // The value may be a secret: name the header only.
            return Err(ConfigError::invalid(
                key("headers"),
                header,
                "not a valid HTTP header name, or its value holds characters a header cannot",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.keys().map(|k| (k.as_str(), "<redacted>")).collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .field("temporality", &self.temporality)
            .field("histogram_format", &self.histogram_format)
            .field("max_buckets", &self.max_buckets)
            .field("max_data_points_per_request", &self.max_data_points_per_request)
            .field("counter_expiry", &self.counter_expiry)
            .field("retry_queue_max_bytes", &self.retry_queue_max_bytes)
            .field("retry_queue_dir", &self.retry_queue_dir)
            .field("retry_queue_max_disk_bytes", &self.retry_queue_max_disk_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn an_otlp_sink_has_documented_defaults_and_its_headers_are_redacted() {
        let yaml = "metric_sinks: [{kind: otlp, config: {headers: {Authorization: Bearer s3cret}}}]\n";
        let config = Config::from_yaml_with_env(yaml, "t", |_| None).expect("config");
        let o = config.metric_sinks[0].otlp().expect("otlp settings");
        assert_eq!(o.url(), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(
            (o.compression, o.temporality, o.histogram_format, o.max_buckets),
            (
                OtlpCompression::Gzip,
                Temporality::Delta,
                HistogramFormat::Exponential,
                160
            )
        );
        let shown = format!("{:?}", config.metric_sinks[0]);
        assert!(!shown.contains("s3cret") && shown.contains("OtlpConfig"), "{shown}");
        let serialized = yaml_serde::to_string(&config.metric_sinks[0]).expect("serializes");
        assert!(!serialized.contains("s3cret"), "{serialized}");
    }

    #[test]
    fn a_bad_otlp_setting_is_refused_naming_its_key() {
        for (config, key) in [
            ("{endpoint: 127.0.0.1:4318}", "endpoint"),
            ("{max_buckets: 1}", "max_buckets"),
            ("{temporality: sometimes}", "config"),
        ] {
            let yaml = format!("metric_sinks: [{{kind: otlp, name: o, config: {config}}}]\n");
            let err = Config::from_yaml_with_env(&yaml, "t", |_| None)
                .and_then(|c| c.validate().map(|_| c))
                .expect_err(config);
            assert!(err.to_string().contains(key), "{config}: {err}");
        }
    }
}
