//! What operators control about what enters the pipeline, under the Datadog agent's key names where it has one:
//! `mapper_profiles`, `metric_tag_filterlist`, `statsd_metric_blocklist`, the per-metric and per-tag series
//! limits, `minimum_sample_rate` and `memory_limit`. The compiled forms are in [`crate::aggregate::admit`].

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Config, ConfigError};

/// One `mapper_profiles` entry (the agent's `dogstatsd_mapper_profiles`): the mappings tried, in order, on names
/// that start with `prefix`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MapperProfile {
    /// The profile's name, for errors and logs. Required.
    pub name: String,
    /// Only names starting with it are tried against the mappings (`*` or empty: every name). Required.
    pub prefix: String,
    /// Tried in order; the first that matches maps the name. Default: `[]`.
    #[serde(default)]
    pub mappings: Vec<MetricMapping>,
}

/// One mapping: a pattern matched against the whole metric name, the new name and the tags added.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricMapping {
    /// The pattern, matched against the whole name. `wildcard`: letters, digits, `_`, `-`, `.` and `*`, where `*`
    /// matches one dot-free part of the name (`airflow.job.duration.*.*`); `regex`: a regular expression. Required.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `wildcard` or `regex`. Default: `wildcard`.
    #[serde(default)]
    pub match_type: MatchType,
    /// The new name; `$1` or `${1}` is the first `*` or capture group. Required.
    pub name: String,
    /// Tags added, `key: value template` (`dag: "$1"`). Default: `{}`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// How a mapping's `match` is read.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Wildcard,
    Regex,
}

/// One `metric_tag_filterlist` entry: which tags a metric keeps.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TagFilter {
    /// The metric's name (after `mapper_profiles`), exactly. Required.
    pub metric_name: String,
    /// `exclude`: the listed tag keys are removed; `include`: only they are kept. Default: `exclude`.
    #[serde(default)]
    pub action: FilterAction,
    /// Tag keys (`request_id`, not `request_id:abc`). Required, non-empty.
    pub tags: Vec<String>,
}

/// What a [`TagFilter`] does with its tags.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    Include,
    #[default]
    Exclude,
}

/// One `series_limit_per_tag` entry: at most `limit` distinct values of tag key `tag` among the series held.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TagLimit {
    /// A tag key (`pod_name`). Required.
    pub tag: String,
    /// Distinct values held at once, at least 1. Required.
    pub limit: usize,
}

/// A `match` as a regular expression anchored at both ends: a wildcard's `*` is one dot-free part of the name.
pub fn compile_pattern(pattern: &str, kind: MatchType) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("an empty pattern".to_string());
    }
    let expr = match kind {
        MatchType::Wildcard => {
            if let Some(c) = pattern
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*')))
            {
                return Err(format!(
                    "{c:?} is not allowed in a wildcard pattern (letters, digits, `_`, `-`, `.` and `*`; use \
                     match_type: regex for more)"
                ));
            }
            if pattern.contains("**") {
                return Err("`**` is not allowed in a wildcard pattern".to_string());
            }
            format!("^{}$", regex::escape(pattern).replace("\\*", "([^.]*)"))
        }
        MatchType::Regex => format!("^(?:{pattern})$"),
    };
    Regex::new(&expr).map_err(|e| format!("does not compile: {e}"))
}

/// `memory_limit` as written: a number of bytes, or a string with a unit (`512MiB`, `2GB`, `100000KiB`).
pub fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(s)) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `512MiB` → 536870912. Units: B, KB, MB, GB (powers of 1000), KiB, MiB, GiB (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes (e.g. 536870912 or 512MiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?} is too large"))
}

/// The controls' part of [`Config::validate`]: every key named in its error.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    for (p, profile) in c.mapper_profiles.iter().enumerate() {
        let at = format!("mapper_profiles[{p}]");
        if profile.name.is_empty() {
            return Err(ConfigError::invalid(format!("{at}.name"), "", "a profile needs a name"));
        }
        for (m, mapping) in profile.mappings.iter().enumerate() {
            let at = format!("{at}.mappings[{m}]");
            if mapping.name.is_empty() {
                return Err(ConfigError::invalid(format!("{at}.name"), "", "a mapping needs a name"));
            }
            compile_pattern(&mapping.pattern, mapping.match_type)
                .map_err(|reason| ConfigError::invalid(format!("{at}.match"), &mapping.pattern, reason))?;
            for (key, value) in &mapping.tags {
                if key.is_empty() || key.contains([',', ':']) || value.contains(',') {
                    return Err(ConfigError::invalid(
                        format!("{at}.tags"),
                        format!("{key}: {value}"),
                        "a tag key is non-empty without `,` or `:`, and a value has no `,`",
                    ));
                }
            }
        }
    }
    let mut filtered = HashSet::new();
    for (i, f) in c.metric_tag_filterlist.iter().enumerate() {
        let at = format!("metric_tag_filterlist[{i}]");
        if f.metric_name.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.metric_name"),
                "",
                "a filter needs a metric name",
            ));
        }
        if !filtered.insert(f.metric_name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{at}.metric_name"),
                &f.metric_name,
                "listed twice: give each metric one filter",
            ));
        }
        if f.tags.is_empty() || f.tags.iter().any(|t| t.is_empty() || t.contains(',')) {
            return Err(ConfigError::invalid(
                format!("{at}.tags"),
                f.tags.join(","),
                "list the tag keys to include or exclude (non-empty, no `,`)",
            ));
        }
    }
    if c.statsd_metric_blocklist.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            "statsd_metric_blocklist",
            "\"\"",
            "an empty entry would block every metric",
        ));
    }
    if c.series_limit_per_metric == Some(0) {
        return Err(ConfigError::invalid(
            "series_limit_per_metric",
            0,
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    for (i, t) in c.series_limit_per_tag.iter().enumerate() {
        if t.tag.is_empty() || t.tag.contains([',', ':']) {
            return Err(ConfigError::invalid(
                format!("series_limit_per_tag[{i}].tag"),
                &t.tag,
                "a tag key, non-empty, without `,` or `:`",
            ));
        }
        if t.limit == 0 {
            return Err(ConfigError::invalid(
                format!("series_limit_per_tag[{i}].limit"),
                0,
                "must be at least 1",
            ));
        }
    }
    let rate = c.minimum_sample_rate;
    if !(crate::protocol::MIN_SAMPLE_RATE..=1.0).contains(&rate) {
        return Err(ConfigError::invalid(
            "minimum_sample_rate",
            rate,
            format!("must be between {} and 1", crate::protocol::MIN_SAMPLE_RATE),
        ));
    }
    if let Some(limit) = c.memory_limit {
        validate_memory(c, limit)?;
    }
    Ok(())
}

/// Memory the process holds whatever the series: the binary, the runtime's threads, the buffers.
pub const BASE_MEMORY: u64 = 24 << 20;

/// The least a series is estimated to take (a counter with a short name and no tags; see
/// `aggregate::admit::series_bytes`), for `memory_limit`'s check of `series_limit` at start.
pub const SMALLEST_SERIES_BYTES: u64 = 480;

/// What the process holds whatever the series, as `(total, receive buffers, retry queues)`: [`BASE_MEMORY`], each
/// listener socket's (or reader's) batch of RECV_BATCH (32) buffers of `metric_max_length` bytes, the workers' batch
/// queues when there are stream listeners, reader threads or scrapes, and the sinks' retry queues in memory. `memory_limit` less this is what the series may take.
pub fn fixed_memory(c: &Config) -> (u64, u64, u64) {
    let queues: u64 = c.metric_sinks.iter().map(|s| s.retry_queue_memory_bytes()).sum();
    let sockets = c.statsd_listen_addresses.len() as u64 * c.num_readers.max(1) as u64;
    let mut buffers = sockets * 32 * c.metric_max_length as u64;
    // Stream connections, reader threads and scrapes hand the workers batches: each worker's queue holds at most
    // QUEUE_DEPTH (256) batches of BATCH_BYTES (64 KiB, with 8 KiB of slack), and as many are kept for reuse.
    let streams = c.statsd_listen_addresses.iter().any(|a| {
        let scheme = a.split("://").next().unwrap_or("");
        matches!(scheme, "tcp" | "tcp4" | "tcp6" | "tls" | "unix") || a.starts_with("unix:@")
    });
    if streams || c.num_readers > 0 || !c.prometheus_scrape.is_empty() {
        let workers = match c.num_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        } as u64;
        buffers += workers * 2 * 256 * (72 << 10);
    }
    (BASE_MEMORY + buffers + queues, buffers, queues)
}

/// `memory_limit`: refused when what is bound to be held (the fixed part and `series_limit` series of the
/// smallest kind) does not fit in it.
fn validate_memory(c: &Config, limit: u64) -> Result<(), ConfigError> {
    let (fixed, buffers, queues) = fixed_memory(c);
    let series = c.series_limit as u64 * SMALLEST_SERIES_BYTES;
    if limit <= fixed + series {
        return Err(ConfigError::invalid(
            "memory_limit",
            limit,
            format!(
                "below what is held whatever comes in: {} bytes ({BASE_MEMORY} for the process, {buffers} for the \
                 receive buffers (32 × metric_max_length per socket, and 36 MiB per worker with stream listeners), \
                 {queues} for the sinks' retry queues in \
                 memory, {series} for series_limit × {SMALLEST_SERIES_BYTES} bytes); raise memory_limit or lower \
                 those",
                fixed + series
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_with_their_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_bytes("MiB").is_err());
    }
}
