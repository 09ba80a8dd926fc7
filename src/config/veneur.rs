//! Veneur configuration files (v14.2's flat keys and HEAD's), read as Veneur reads them: a pass over the YAML
//! before it becomes a [`Config`](super::Config).
//!
//! - Keys Harrier shares keep their meaning and pass through.
//! - Veneur's flat Datadog keys (`datadog_api_key`, `datadog_api_hostname`, `datadog_flush_max_per_body`, the
//!   alias `flush_max_per_body`) become a `datadog` entry of `metric_sinks` (when the key is set and no `datadog`
//!   sink is configured), as Veneur's sink migration does.
//! - `metric_sinks` of kind `debug` become `console`; Veneur-only settings of a `datadog` sink and the generic
//!   per-sink settings (`max_name_length`, `strip_tags`, …) are dropped with a warning; sinks of kinds Harrier
//!   does not have are dropped with a warning.
//! - Empty strings in `tags` and `extend_tags` are skipped with a warning (Veneur skips empty `extend_tags`).
//! - `omit_empty_hostname: true` with no `hostname` means no host; `synchronize_with_interval` is what Harrier
//!   always does; `forward_use_grpc` is accepted (Harrier forwards over gRPC only).
//! - Keys of features Harrier does not have (SSF and spans, trace and other sinks, TLS until Harrier has it,
//!   profiling, Sentry, …) are removed and named in one warning.
//! - `VENEUR_<KEY>` environment variables (Veneur's envconfig names: the key upper-cased without underscores,
//!   e.g. `VENEUR_DATADOGAPIHOSTNAME`; lists comma-separated) override the file; `HARRIER_<KEY>` ones are applied
//!   after them and win.
//!
//! - `veneur-proxy` files (`example_proxy.yaml`) become a Harrier proxy (`config::veneur_proxy`).
//!
//! A key neither Harrier nor Veneur knows is left alone, so that the typed parse refuses it by name.

use yaml_serde::{Mapping, Value};

use super::EnvKind;

/// Veneur keys for features Harrier does not have: accepted, named in a warning, and ignored.
const UNSUPPORTED: &[&str] = &[
    // SSF, spans and their listeners.
    "ssf_listen_addresses",
    "grpc_listen_addresses",
    "indicator_span_timer_name",
    "objective_span_timer_name",
    "num_span_workers",
    "span_channel_capacity",
    "trace_max_length_bytes",
    "ssf_buffer_size",
    "span_sinks",
    "debug_ingested_spans",
    // TLS on listeners and the forward connection (not in Harrier yet).
    "tls_key",
    "tls_certificate",
    "tls_authority_certificate",
    "tls",
    // Operations.
    "flush_watchdog_missed_flushes",
    "http_quit",
    "http",
    "debug",
    "debug_flushed_metrics",
    "mutex_profile_fraction",
    "block_profile_rate",
    "sentry_dsn",
    "enable_profiling",
    "features",
    "metric_sink_routing",
    "sources",
    "tags_exclude",
    "veneur_metrics_scopes",
    "veneur_metrics_additional_tags",
    "count_unique_timeseries",
    // Datadog settings for what Harrier does not send (traces, spans) or does not filter.
    "datadog_trace_api_address",
    "datadog_metric_name_prefix_drops",
    "datadog_exclude_tags_prefix_by_prefix_metric",
    "datadog_span_buffer_size",
    // Sinks Harrier does not have (v14.2 flat keys).
    "falconer_address",
    "prometheus_repeater_address",
    "prometheus_network_type",
    "flush_file",
    "xray_address",
    "xray_sample_percentage",
    "xray_annotation_tags",
];

/// Families of Veneur keys for sinks Harrier does not have.
const UNSUPPORTED_PREFIXES: &[&str] = &[
    "trace_lightstep_",
    "lightstep_",
    "newrelic_",
    "signalfx_",
    "kafka_",
    "splunk_",
    "aws_",
];

/// Settings of Veneur's `datadog` metric sink that Harrier's does not take.
const DATADOG_SINK_UNSUPPORTED: &[&str] = &[
    "buffer_size",
    "metric_name_prefix_drops",
    "exclude_tags_prefix_by_prefix_metric",
    "span_buffer_size",
    "trace_api_address",
];

/// Per-sink settings of Veneur's `metric_sinks` entries that Harrier does not take.
const SINK_ENTRY_UNSUPPORTED: &[&str] = &[
    "max_name_length",
    "max_tag_length",
    "max_tags",
    "strip_tags",
    "add_tags",
];

/// Kinds of Veneur metric sink Harrier does not have: such entries are dropped with a warning (a kind neither
/// knows is left for the typed parse to refuse).
const VENEUR_SINK_KINDS: &[&str] = &[
    "attribution",
    "blackhole",
    "cortex",
    "falconer",
    "grpsink",
    "kafka",
    "lightstep",
    "localfile",
    "newrelic",
    "prometheus",
    "s3",
    "signalfx",
    "splunk",
    "ssfmetrics",
    "xray",
];

/// Veneur keys read from `VENEUR_<KEY>` (besides Harrier's own keys), with how the value is read.
pub(super) const VENEUR_ONLY_ENV: &[(&str, EnvKind)] = &[
    // Text: a key or URL stays a string even when it looks like a number.
    ("datadog_api_key", EnvKind::Text),
    ("datadog_api_hostname", EnvKind::Text),
    ("datadog_flush_max_per_body", EnvKind::Yaml),
    ("omit_empty_hostname", EnvKind::Yaml),
    ("synchronize_with_interval", EnvKind::Yaml),
    ("forward_use_grpc", EnvKind::Yaml),
];

/// Veneur's environment variable for `key`: `VENEUR_` and the key upper-cased without underscores.
pub fn env_var(key: &str) -> String {
    format!("VENEUR_{}", key.replace('_', "").to_ascii_uppercase())
}

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

fn is_unsupported(k: &str) -> bool {
    UNSUPPORTED.contains(&k) || UNSUPPORTED_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Rewrites a Veneur configuration's keys into Harrier's, in place; returns the warnings (one per ignored key or
/// setting, naming it).
pub fn translate(root: &mut Mapping) -> Vec<String> {
    let mut ignored: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    if super::veneur_proxy::is_proxy_file(root) {
        super::veneur_proxy::translate(root, &mut ignored, &mut notes);
    }
    let top: Vec<String> = root.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
    for k in &top {
        if is_unsupported(k) {
            root.remove(k.as_str());
            ignored.push(k.clone());
        }
    }

    flat_datadog_sink(root);
    translate_sinks(root, &mut ignored);

    if root.remove("omit_empty_hostname").and_then(|v| v.as_bool()) == Some(true) {
        let empty = root.get("hostname").and_then(Value::as_str).is_none_or(str::is_empty);
        if empty {
            root.insert(key("hostname"), key(""));
        }
    }
    // Veneur's example.yaml has `tags: [""]` and `extend_tags: [""]`: Veneur skips empty `extend_tags`, and an
    // empty sink tag carries nothing (Datadog drops it), so neither is an error here.
    for k in ["tags", "extend_tags"] {
        if let Some(Value::Sequence(list)) = root.get_mut(k) {
            let before = list.len();
            list.retain(|t| t.as_str() != Some(""));
            if list.len() < before {
                notes.push(format!("{k}: ignoring the empty tag \"\""));
            }
        }
    }
    // Harrier always aligns flushes to the wall clock.
    root.remove("synchronize_with_interval");
    let forwards = root
        .get("forward_address")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.is_empty());
    if root.remove("forward_use_grpc").and_then(|v| v.as_bool()) == Some(false) && forwards {
        notes.push(
            "forward_use_grpc: false: Harrier forwards over gRPC only; the forward_address must be a Harrier \
             (or a Veneur grpc_address)"
                .to_string(),
        );
    }

    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings.push(format!(
            "ignoring Veneur settings for features Harrier does not have: {}",
            ignored.join(", ")
        ));
    }
    warnings.extend(notes);
    warnings
}

/// Veneur's flat Datadog keys (`datadog_api_key`, …) become a `datadog` sink, as Veneur's sink migration makes one.
fn flat_datadog_sink(root: &mut Mapping) {
    let api_key = root.remove("datadog_api_key");
    let hostname = root.remove("datadog_api_hostname");
    let per_body = root
        .remove("datadog_flush_max_per_body")
        .or(root.remove("flush_max_per_body"));
    let has_key = api_key.as_ref().and_then(Value::as_str).is_some_and(|k| !k.is_empty());
    if has_key {
        let sinks = root
            .entry(key("metric_sinks"))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if let Value::Sequence(list) = sinks {
            let has_datadog = list
                .iter()
                .any(|s| s.get("kind").and_then(Value::as_str) == Some("datadog"));
            if !has_datadog {
                let mut config = Mapping::new();
                config.insert(key("api_key"), api_key.unwrap_or(Value::Null));
                if let Some(h) = hostname {
                    config.insert(key("api_hostname"), h);
                }
                if let Some(n) = per_body {
                    config.insert(key("flush_max_per_body"), n);
                }
                let mut sink = Mapping::new();
                sink.insert(key("kind"), key("datadog"));
                sink.insert(key("name"), key("datadog"));
                sink.insert(key("config"), Value::Mapping(config));
                list.push(Value::Mapping(sink));
            }
        }
    }
}

/// Veneur's `metric_sinks` entries: the kinds Harrier has are kept (`debug` becomes `console`), their settings
/// Harrier does not have removed and listed in `ignored`, and sinks of other kinds dropped and listed.
fn translate_sinks(root: &mut Mapping, ignored: &mut Vec<String>) {
    if let Some(Value::Sequence(list)) = root.get_mut("metric_sinks") {
        list.retain_mut(|entry| {
            let Value::Mapping(sink) = entry else { return true };
            let name = sink
                .get("name")
                .and_then(Value::as_str)
                .or(sink.get("kind").and_then(Value::as_str))
                .unwrap_or("?")
                .to_string();
            for k in SINK_ENTRY_UNSUPPORTED {
                if sink.remove(*k).is_some() {
                    ignored.push(format!("metric_sinks[{name}].{k}"));
                }
            }
            match sink.get("kind").and_then(Value::as_str) {
                Some("console" | "prometheus_remote_write") => true,
                Some("debug") => {
                    sink.insert(key("kind"), key("console"));
                    sink.remove("config");
                    true
                }
                Some("datadog") => {
                    if let Some(Value::Mapping(config)) = sink.get_mut("config") {
                        for k in DATADOG_SINK_UNSUPPORTED {
                            if config.remove(*k).is_some() {
                                ignored.push(format!("metric_sinks[{name}].config.{k}"));
                            }
                        }
                    }
                    true
                }
                Some(kind) if VENEUR_SINK_KINDS.contains(&kind) => {
                    ignored.push(format!("metric_sinks[{name}] (kind {kind})"));
                    false
                }
                _ => true,
            }
        });
    }
}
