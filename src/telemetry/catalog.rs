//! Every self-metric, declared once: its name, type, tag keys and meaning. Code reports a self-metric through its
//! declaration ([`Telemetry::count`](super::Telemetry::count) takes a [`&Metric`](Metric), not a name), so a typo
//! is a compile error instead of a silent new metric; the README's table of self-metrics is this catalog
//! ([`markdown_table`]), checked by a test.

use crate::model::SeriesKind;

/// A self-metric's declaration.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// The full name, `harrier.…`.
    pub name: &'static str,
    pub kind: SeriesKind,
    /// The tag keys it may carry (each report carries some of them).
    pub tags: &'static [&'static str],
    pub doc: &'static str,
}

macro_rules! metrics {
    ($($(#[$attr:meta])* $id:ident = $name:literal, $kind:ident, [$($tag:literal),*], $doc:literal;)*) => {
        $($(#[$attr])* #[doc = $doc] pub static $id: Metric = Metric {
            name: $name,
            kind: SeriesKind::$kind,
            tags: &[$($tag),*],
            doc: $doc,
        };)*
        /// Every declared self-metric, in the order of the README's table.
        pub static ALL: &[&Metric] = &[$(&$id),*];
    };
}

metrics! {
    LISTENER_PACKETS = "harrier.listener.packets", Counter, ["listener"],
        "Datagrams, stream frames or TCP reads taken in.";
    LISTENER_BYTES = "harrier.listener.bytes", Counter, ["listener"],
        "Bytes taken in.";
    LISTENER_LINES = "harrier.listener.lines", Counter, ["listener"],
        "Lines found in what was taken in.";
    LISTENER_OVERSIZE = "harrier.listener.oversize", Counter, ["listener"],
        "Datagrams, frames or lines longer than `metric_max_length`, dropped whole.";
    LISTENER_CONNECTIONS = "harrier.listener.connections", Counter, ["listener"],
        "Stream connections accepted (reported when non-zero).";
    LISTENER_CONNECTIONS_REFUSED = "harrier.listener.connections_refused", Counter, ["listener"],
        "Stream connections closed at once because `max_connections` were open.";
    LISTENER_TLS_HANDSHAKE_ERRORS = "harrier.listener.tls_handshake_errors", Counter, ["listener"],
        "TLS handshakes that failed on a `tls://` listener (plaintext client, refused certificate, timeout).";
    LISTENER_ERRORS = "harrier.listener.errors", Counter, ["listener"],
        "Socket errors.";
    LINES_REJECTED = "harrier.lines.rejected", Counter, ["reason"],
        "Lines the parser rejected, by reason.";
    LINES_DROPPED = "harrier.lines.dropped", Counter, ["reason"],
        "Parsed lines not aggregated: `timestamp_on_unsupported_type`, `too_many_timestamped`, `unparsable`.";
    LINES_BLOCKLISTED = "harrier.lines.blocklisted", Counter, ["entry"],
        "Lines dropped by `statsd_metric_blocklist`, by the entry that matched.";
    LINES_SAMPLE_RATE_CLAMPED = "harrier.lines.sample_rate_clamped", Counter, [],
        "Lines sent at a sample rate below `minimum_sample_rate`, aggregated at it instead.";
    SERIES_DROPPED = "harrier.series.dropped", Counter, ["reason"],
        "Lines of new series dropped by a limit: `series_limit`, `series_limit_per_metric`, `series_limit_per_tag`, `memory_limit`.";
    SERIES_LIMITED = "harrier.series.limited", Counter, ["metric", "limit"],
        "Lines of new series dropped by a limit, for the (at most 10) metric names with the most in the interval.";
    SERIES_ESTIMATED_BYTES = "harrier.series.estimated_bytes", Gauge, [],
        "Estimated bytes of the series held (what `memory_limit` counts), as of the last flush.";
    SERIES_FLUSHED = "harrier.series.flushed", Counter, ["type"],
        "Series in the last flush, by type (`forwardable`: handed to the forwarder).";
    FLUSH_DURATION_MS = "harrier.flush.duration_ms", Gauge, [],
        "Time to take the workers' intervals and build the last flush, in milliseconds.";
    SINK_FLUSHES = "harrier.sink.flushes", Counter, ["sink", "sink_kind", "result"],
        "Flushes handed to each sink, by outcome.";
    SINK_DURATION_MS = "harrier.sink.duration_ms", Gauge, ["sink"],
        "Time each sink took for the last flush, in milliseconds.";
    SINK_REQUESTS = "harrier.sink.requests", Counter, ["sink", "endpoint", "result"],
        "Requests to a sink's endpoint, by result (`ok`, an HTTP status, a transport error, a local reason).";
    SINK_RETRIES = "harrier.sink.retries", Counter, ["sink", "endpoint"],
        "Requests sent again after a retryable failure.";
    SINK_DROPPED = "harrier.sink.dropped", Counter, ["sink", "endpoint", "reason"],
        "Payloads given up, by reason: `retry_queue_full`, `retry_queue_unreadable`, or a failure not retried.";
    SINK_OTLP_REJECTED = "harrier.sink.otlp_rejected_points", Counter, ["sink"],
        "Data points an OTLP receiver accepted the request of but rejected (`partial_success`).";
    SINK_RETRY_QUEUE_BYTES = "harrier.sink.retry_queue_bytes", Gauge, ["sink", "endpoint"],
        "Bytes waiting in a sink's retry queue.";
    SINK_RETRY_QUEUE_PAYLOADS = "harrier.sink.retry_queue_payloads", Gauge, ["sink", "endpoint"],
        "Payloads waiting in a sink's retry queue.";
    SINK_RETRY_QUEUE_DISK_BYTES = "harrier.sink.retry_queue_disk_bytes", Gauge, ["sink"],
        "Bytes of a sink's retry queue kept in `retry_queue_dir`.";
    FORWARD_METRICS = "harrier.forward.metrics", Counter, ["destination", "result"],
        "Metrics forwarded to a global, by result (`sent`, `rejected`).";
    FORWARD_BYTES = "harrier.forward.bytes", Counter, ["destination"],
        "Bytes forwarded to a global.";
    FORWARD_REROUTES = "harrier.forward.reroutes", Counter, ["destination"],
        "Metrics routed past their first choice of global (it was down).";
    FORWARD_RESENDS = "harrier.forward.resends", Counter, ["destination"],
        "Batches sent again to a restarted global.";
    FORWARD_ACKNOWLEDGED = "harrier.forward.acknowledged", Counter, ["destination"],
        "Batches a global acknowledged as flushed.";
    FORWARD_ACKNOWLEDGEMENTS_PENDING = "harrier.forward.acknowledgements_pending", Gauge, ["destination"],
        "Batches merged by a global and not yet acknowledged as flushed.";
    FORWARD_BATCHES_UNSENT = "harrier.forward.batches_unsent", Gauge, ["destination"],
        "Batches waiting to be sent to a global.";
    FORWARD_REACHABLE = "harrier.forward.reachable", Gauge, ["destination"],
        "1 while a global is reachable, else 0.";
    FORWARD_ERRORS = "harrier.forward.errors", Counter, ["destination", "cause"],
        "Failed sends to a global, by cause.";
    FORWARD_DROPPED = "harrier.forward.dropped", Counter, ["destination", "cause"],
        "Metrics given up: `too_many_intervals`, `refused`, `queue_full`, `malformed`, `no_members`, `no_forwarder`.";
    DISCOVERY_REFRESHES = "harrier.discovery.refreshes", Counter, ["result"],
        "Refreshes of the global tier's membership, by result.";
    DISCOVERY_MEMBERS = "harrier.discovery.members", Gauge, [],
        "Globals in the current membership.";
    SCRAPES = "harrier.scrape.scrapes", Counter, ["target", "result"],
        "Reads of each `prometheus_scrape` target, by result: `ok`, `timeout`, `status`, `too_large`, `request`.";
    SCRAPE_UP = "harrier.scrape.up", Gauge, ["target"],
        "1 when the target's last read succeeded, 0 when it failed.";
    SCRAPE_DURATION_MS = "harrier.scrape.duration_ms", Gauge, ["target"],
        "How long the target's last read took, in milliseconds.";
    SCRAPE_SAMPLES = "harrier.scrape.samples", Gauge, ["target"],
        "Samples in the target's last body.";
    SCRAPE_BAD_LINES = "harrier.scrape.bad_lines", Counter, ["target", "reason"],
        "Lines of a target's bodies that could not be read (skipped), by reason.";
    SCRAPE_TARGETS = "harrier.scrape.targets", Gauge, ["scrape"],
        "Targets of each `prometheus_scrape` entry (`scrape:<index>`), discovered ones included.";
    OTLP_REQUESTS = "harrier.otlp.requests", Counter, ["transport", "result"],
        "OTLP export requests received (`transport:http` or `grpc`), by result: `ok`, `bad_protobuf`, `bad_gzip`, `too_large`, `unsupported_media_type`, `unsupported_encoding`, `stopping`.";
    OTLP_POINTS = "harrier.otlp.points", Counter, ["transport", "type"],
        "OTLP data points taken, by type: `sum`, `gauge`, `histogram`, `exponential_histogram`, `summary`.";
    OTLP_REJECTED_POINTS = "harrier.otlp.rejected_points", Counter, ["transport", "reason"],
        "OTLP data points rejected (answered in `partial_success`; the rest of the request is taken), by reason.";
    IMPORT_METRICS = "harrier.import.metrics", Counter, [],
        "Metrics imported from forwarding instances (a global or a proxy).";
    IMPORT_DUPLICATES = "harrier.import.duplicates", Counter, [],
        "Batches received again and not merged twice.";
    IMPORT_ERRORS = "harrier.import.errors", Counter, ["reason"],
        "Bad metrics in imported batches, by reason.";
    IMPORT_BATCHES_REFUSED = "harrier.import.batches_refused", Counter, ["reason"],
        "Imported batches refused whole (nothing of them merged), by reason.";
    TLS_HANDSHAKE_ERRORS = "harrier.tls.handshake_errors", Counter, ["listener", "reason"],
        "Failed TLS handshakes on the gRPC server, by reason.";
    TLS_RELOADS = "harrier.tls.reloads", Counter, ["listener", "result"],
        "Reloads of changed certificate files, by result.";
}

impl Metric {
    /// Whether `tags` (`key:value` each) use only this metric's tag keys: checked in debug builds at every report.
    pub fn accepts(&self, tags: &[&str]) -> bool {
        tags.iter().all(|t| {
            let key = t.split(':').next().unwrap_or(t);
            self.tags.contains(&key)
        })
    }
}

fn kind_name(kind: SeriesKind) -> &'static str {
    match kind {
        SeriesKind::Gauge => "gauge",
        _ => "counter",
    }
}

/// The README's table of self-metrics.
pub fn markdown_table() -> String {
    let mut out = String::from("| name | type | tags | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let tags: Vec<String> = m.tags.iter().map(|t| format!("`{t}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            kind_name(m.kind),
            tags.join(", "),
            m.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_self_metric_is_declared_once_and_the_readme_table_is_the_catalog() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a self-metric is declared twice");
        assert!(ALL.iter().all(|m| m.name.starts_with("harrier.") && !m.doc.is_empty()));
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let table = readme
            .split("<!-- self-metrics:begin -->\n")
            .nth(1)
            .and_then(|rest| rest.split("<!-- self-metrics:end -->").next())
            .expect("README.md has the self-metrics table between its markers");
        assert_eq!(
            table,
            markdown_table(),
            "README.md's self-metrics table differs from the catalog"
        );
    }

    #[test]
    fn no_self_metric_is_named_by_a_string_outside_the_catalog() {
        // Every report goes through a declaration: a `"harrier.…"` literal in the code would be a metric the
        // catalog (and the README) does not know.
        let mut offenders = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !name.ends_with(".rs") || name == "catalog.rs" || name.ends_with("tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Only the code before a file's own test module.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for (i, line) in code.lines().enumerate() {
                    if line.contains("\"harrier.")
                        && !line.contains("include_proto!")
                        && !line.trim_start().starts_with("//")
                    {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "self-metrics named outside the catalog:\n{}",
            offenders.join("\n")
        );
    }

    #[test]
    fn a_metric_accepts_only_its_declared_tag_keys() {
        assert!(SINK_REQUESTS.accepts(&["sink:dd", "endpoint:series", "result:ok"]));
        assert!(FORWARD_DROPPED.accepts(&["cause:no_forwarder"]));
        assert!(!SINK_REQUESTS.accepts(&["sink:dd", "destination:x"]));
    }
}
