//! `prometheus_scrape`: Prometheus and OpenMetrics endpoints read on a schedule, their samples turned into
//! DogStatsD metrics (see [`crate::scrape`] for the semantics per type).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ClientTlsConfig, ConfigError, DiscoveryConfig};

/// What a scraped histogram becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapeHistograms {
    /// A counter per bucket (`<name>.bucket`, tagged `le:<bound>`), plus `<name>.sum` and `<name>.count`: the
    /// differences since the last scrape.
    #[default]
    Buckets,
    /// The interval's samples, rebuilt from the bucket differences into the series' distribution (`<name>`,
    /// type `d`), so a local forwards them to the global and percentiles cover every host.
    Distribution,
}

/// One `prometheus_scrape` entry: a set of targets read every `interval`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// `host:port` (read as `http://host:port` + `path`) or full URLs (`https://host:port/path`). Default: `[]`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Targets from DNS instead (or as well): `{kind: dns_a|dns_srv, name, port, refresh, nameserver}`, as
    /// `forward_discovery`; each address found is scraped as `host:port`. Default: none.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// The URL scheme of `host:port` targets: `http` or `https`. Default: `http`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The path of `host:port` targets. Default: `/metrics`.
    #[serde(default = "default_path")]
    pub path: String,
    /// How often each target is read. Default: `10s`.
    #[serde(
        default = "default_interval",
        deserialize_with = "super::deserialize_duration",
        serialize_with = "super::serialize_duration"
    )]
    pub interval: Duration,
    /// How long one read may take, connection included; a target that takes longer counts as down for that
    /// scrape. At most `interval`. Default: `10s`, or `interval` when shorter.
    #[serde(
        default,
        deserialize_with = "deserialize_opt_duration",
        serialize_with = "serialize_opt_duration"
    )]
    pub timeout: Option<Duration>,
    /// Request headers (e.g. `Authorization`); their values are never printed. Default: none.
    #[serde(default)]
    pub headers: Headers,
    /// TLS for `https` targets: `{ca_file, cert_file, key_file}` (a private CA, a client certificate).
    /// Default: none (the system's roots, no client certificate).
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// Tags added to every metric of these targets. Default: `[]`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Add `instance:<host:port>` to every metric, as Prometheus adds its `instance` label. Default: `true`.
    #[serde(default = "yes")]
    pub instance_tag: bool,
    /// Regular expressions (whole-name matches) of the metric families to keep; empty keeps every family.
    /// Default: `[]`.
    #[serde(default)]
    pub metrics_allow: Vec<String>,
    /// Regular expressions (whole-name matches) of the families to drop, after `metrics_allow`. Default: `[]`.
    #[serde(default)]
    pub metrics_deny: Vec<String>,
    /// Prepended to every metric name (e.g. `kube.`). Default: empty.
    #[serde(default)]
    pub prefix: String,
    /// `buckets` or `distribution` (see [`ScrapeHistograms`]). Default: `buckets`.
    #[serde(default)]
    pub histograms: ScrapeHistograms,
    /// A body longer than this is abandoned (the scrape counts as failed, `reason:too_large`). Default: 32 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

/// Request headers, whose values (credentials, often) `--print-config` and debug output show as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl Headers {
    /// As request headers, values marked sensitive; `Err` names the first header that cannot be sent.
    pub fn header_map(&self) -> Result<reqwest::header::HeaderMap, &str> {
        super::values::header_map(&self.0)
    }

    fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0.keys().map(|k| (k.as_str(), "<redacted>")).collect()
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.redacted().fmt(f)
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(s)
    }
}

fn default_scheme() -> String {
    "http".to_string()
}
fn default_path() -> String {
    "/metrics".to_string()
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_body() -> usize {
    32 * 1024 * 1024
}
fn yes() -> bool {
    true
}

fn deserialize_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::deserialize_duration(d).map(Some)
}

fn serialize_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => super::serialize_duration(d, s),
        None => s.serialize_none(),
    }
}

impl ScrapeConfig {
    /// The timeout of one read.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10)).min(self.interval)
    }

    /// The URL of a target as configured (`host:port` or a URL).
    pub fn url(&self, target: &str) -> String {
        if target.contains("://") {
            target.to_string()
        } else {
            format!("{}://{}{}", self.scheme, target, self.path)
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        if self.targets.is_empty() && self.discovery.is_none() {
            return Err(ConfigError::invalid(k("targets"), "[]", "give targets or discovery"));
        }
        for t in &self.targets {
            let url = self.url(t);
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        k("targets"),
                        t,
                        "expected host:port or an http(s):// URL, e.g. 127.0.0.1:9100",
                    ))
                }
            }
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(ConfigError::invalid(k("scheme"), &self.scheme, "http or https"));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::invalid(k("path"), &self.path, "starts with /"));
        }
        if self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                k("interval"),
                format!("{:?}", self.interval),
                "at least 100ms",
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero() || t > self.interval) {
            return Err(ConfigError::invalid(
                k("timeout"),
                format!("{:?}", self.timeout.unwrap_or_default()),
                "more than 0 and at most interval",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid(k("max_body_bytes"), 0, "must be at least 1"));
        }
        if let Some(d) = &self.discovery {
            d.validate(&k("discovery"), "the targets' port")?;
        }
        pattern_set(&k("metrics_allow"), &self.metrics_allow)?;
        pattern_set(&k("metrics_deny"), &self.metrics_deny)?;
        if let Err(name) = self.headers.header_map() {
            return Err(ConfigError::invalid(k("headers"), name, "not a valid HTTP header"));
        }
        for tag in &self.tags {
            if tag.is_empty() || tag.contains([',', '|', '\n']) {
                return Err(ConfigError::invalid(
                    k("tags"),
                    tag,
                    "a tag is non-empty, without , | or newline",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.ca_file.trim().is_empty() {
                return Err(ConfigError::invalid(
                    k("tls.ca_file"),
                    "",
                    "required: the path of a PEM file",
                ));
            }
            if tls.cert_file.is_empty() != tls.key_file.is_empty() {
                return Err(ConfigError::invalid(
                    k("tls.key_file"),
                    &tls.key_file,
                    "give cert_file and key_file together",
                ));
            }
        }
        Ok(())
    }
}

/// Whole-name regular expressions (`metrics_allow`, `metrics_deny`) as one set, `None` when there are none; an
/// error names `key` and the pattern that does not compile.
pub fn pattern_set(key: &str, patterns: &[String]) -> Result<Option<regex::RegexSet>, ConfigError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let anchored = |p: &String| format!("^(?:{p})$");
    regex::RegexSet::new(patterns.iter().map(anchored))
        .map(Some)
        .map_err(|e| {
            let bad = patterns.iter().find(|p| regex::Regex::new(&anchored(p)).is_err());
            ConfigError::invalid(
                key,
                bad.unwrap_or(&patterns[0]),
                format!("not a regular expression: {e}"),
            )
        })
}

/// Checks every `prometheus_scrape` entry; errors name `prometheus_scrape[i].field`.
pub(super) fn validate(entries: &[ScrapeConfig]) -> Result<(), ConfigError> {
    for (i, e) in entries.iter().enumerate() {
        e.validate(&format!("prometheus_scrape[{i}]"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> ScrapeConfig {
        yaml_serde::from_str(yaml).unwrap()
    }

    fn refused(yaml: &str) -> String {
        validate(&[entry(yaml)]).unwrap_err().to_string()
    }

    #[test]
    fn a_host_port_target_takes_the_scheme_and_path_and_a_url_is_kept() {
        let e = entry("targets: [\"127.0.0.1:9100\", \"https://h:1/x\"]\npath: /m\n");
        assert_eq!(e.url("127.0.0.1:9100"), "http://127.0.0.1:9100/m");
        assert_eq!(e.url("https://h:1/x"), "https://h:1/x");
        assert_eq!(e.interval, Duration::from_secs(10));
        assert_eq!(e.timeout(), Duration::from_secs(10));
        assert!(e.instance_tag);
        validate(&[e]).unwrap();
        assert_eq!(
            entry("targets: [a:1]\ninterval: 2s\n").timeout(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key() {
        assert!(refused("targets: []\n").contains("prometheus_scrape[0].targets"));
        assert!(refused("targets: [\"ftp://x:1\"]\n").contains("targets"));
        assert!(refused("targets: [a:1]\nmetrics_allow: [\"(\"]\n").contains("prometheus_scrape[0].metrics_allow"));
        assert!(refused("targets: [a:1]\ninterval: 1s\ntimeout: 2s\n").contains("timeout"));
        assert!(refused("targets: [a:1]\nmax_body_bytes: 0\n").contains("max_body_bytes"));
        assert!(refused("discovery: {kind: dns_a, name: x.test}\n").contains("discovery.port"));
        // The same checks as forward_discovery's (one DiscoveryConfig::validate).
        assert!(refused("discovery: {kind: dns_srv, name: x.test, port: 1}\n")
            .contains("prometheus_scrape[0].discovery.port"));
        assert!(
            refused("discovery: {kind: dns_srv, name: x.test, nameserver: nope}\n").contains("discovery.nameserver")
        );
        assert!(refused("discovery: {kind: dns_srv, name: \" \"}\n").contains("discovery.name"));
        assert!(refused("targets: [a:1]\nheaders: {\"bad header\": x}\n").contains("headers"));
        assert!(refused("targets: [a:1]\ntags: [\"a,b\"]\n").contains("tags"));
    }

    #[test]
    fn header_values_are_never_printed() {
        let e = entry("targets: [a:1]\nheaders: {Authorization: \"Bearer s3cret\"}\n");
        assert_eq!(e.headers.0["Authorization"], "Bearer s3cret");
        let printed = format!("{e:?} {}", yaml_serde::to_string(&e).unwrap());
        assert!(
            !printed.contains("s3cret") && printed.contains("Authorization"),
            "{printed}"
        );
    }
}
