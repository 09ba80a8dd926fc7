//! Shared helpers for tests that start the real server on 127.0.0.1 ports chosen by the OS.
#![allow(dead_code)]

pub mod cluster;
pub mod intake;
pub mod otel;
pub mod tsdb;

/// A directory of one test's own files, removed with everything in it when dropped (declare it before the processes
/// that use it, so that they stop first).
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// `name` under the system's temporary directory, emptied if a run before left it.
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harrier::config::Config;
use harrier::server::{self, RunningServer};
use harrier::sink::{Flush, Series, SeriesKind, Sink, SinkFuture, SinkOutcome};
use tokio::sync::Notify;

/// A sink that keeps every flush, for assertions.
#[derive(Default)]
pub struct CaptureSink {
    pub flushes: Mutex<Vec<Arc<Flush>>>,
    pub notify: Notify,
}

impl Sink for CaptureSink {
    fn name(&self) -> &str {
        "capture"
    }

    fn kind(&self) -> &'static str {
        "capture"
    }

    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_> {
        Box::pin(async move {
            self.flushes.lock().unwrap().push(flush);
            self.notify.notify_waiters();
            SinkOutcome::Ok
        })
    }
}

impl CaptureSink {
    /// Every series of every flush so far.
    pub fn series(&self) -> Vec<Series> {
        self.flushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|f| f.all_series().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Every flush's series that are not self-metrics.
    pub fn user_series(&self) -> Vec<Series> {
        self.series()
            .into_iter()
            .filter(|s| !s.name.starts_with("harrier."))
            .collect()
    }

    /// Sum of a series' values across flushes, keyed by name + sorted output tags.
    pub fn values(&self) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for s in self.user_series() {
            *out.entry(series_id(&s)).or_insert(0.0) += s.value;
        }
        out
    }

    /// The value of one self-metric (summed over flushes and over the given tag).
    pub fn self_metric(&self, name: &str, tag: &str) -> f64 {
        self.series()
            .iter()
            .filter(|s| *s.name == *name && (tag.is_empty() || s.tags.contains(tag)))
            .map(|s| s.value)
            .sum()
    }

    pub fn flush_count(&self) -> usize {
        self.flushes.lock().unwrap().len()
    }

    pub fn kind_of(&self, id: &str) -> Option<SeriesKind> {
        self.user_series()
            .into_iter()
            .find(|s| series_id(s) == id)
            .map(|s| s.kind)
    }
}

/// `name` or `name#tag1,tag2` (output tags, sorted).
pub fn series_id(s: &Series) -> String {
    let tags: Vec<&str> = s.tags.output().collect();
    if tags.is_empty() {
        s.full_name().to_string()
    } else {
        format!("{}#{}", s.full_name(), tags.join(","))
    }
}

/// Starts a server from YAML (with a capture sink and, by default, a long interval so that only the final flush
/// runs).
pub async fn start(yaml: &str) -> (RunningServer, Arc<CaptureSink>) {
    let config = Config::from_yaml_with_env(yaml, "test", |_| None).expect("test config");
    let sink = Arc::new(CaptureSink::default());
    let server = server::start(config, vec![sink.clone() as Arc<dyn Sink>])
        .await
        .expect("server starts");
    (server, sink)
}

/// The YAML for a server listening on the given addresses with a capture sink only.
pub fn config(listen: &[&str], extra: &str) -> String {
    let list: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    // Two workers unless `extra` says otherwise.
    let workers = if extra.contains("num_workers") {
        ""
    } else {
        "num_workers: 2\n"
    };
    format!(
        "statsd_listen_addresses: [{}]\ninterval: 1h\nhostname: test-host\n{workers}metric_sinks: []\n{extra}",
        list.join(", ")
    )
}

/// Waits until `cond` holds or the timeout passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A unique path for a unix socket in the temp dir.
pub fn socket_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "harrier-test-{}-{tag}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A child process's peak RSS so far (VmHWM), in KiB.
pub fn peak_rss_kib(child: &std::process::Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
