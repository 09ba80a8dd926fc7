//! Logs: `tracing` events written to stderr as text or as one JSON object per line (`log_format`), filtered by
//! `log_level` or `RUST_LOG`; and [`LimitedLog`], which keeps bad input from flooding them.
//!
//! Nothing secret is ever logged: API keys and sink headers stay in the requests, and config dumps redact them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-02T04:40:00.123Z  INFO harrier::server: message key=value`.
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","message":"…","target":"…", …fields}` per line.
    Json,
}

/// Checks a `log_level` (or `RUST_LOG`-style) filter, e.g. `info` or `warn,harrier::forward=debug`.
pub fn parse_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("not a log filter: {e}"))
}

/// Installs the process' logger: `RUST_LOG` when set, else `level`. Call once, from the binary.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => parse_filter(&env).map_err(|e| format!("RUST_LOG={env:?}: {e}"))?,
        _ => parse_filter(level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Logs a warning at most once per second per `what`: bad input must never flood the log. The line names how
/// many more were suppressed since the last one.
pub struct LimitedLog {
    what: &'static str,
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl LimitedLog {
    pub const fn new(what: &'static str) -> Self {
        LimitedLog {
            what,
            last_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn log(&self, message: impl FnOnce() -> String) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(what = self.what, suppressed, "{}: {}", self.what, message());
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A [`LimitedLog`] owned by one thread (a worker's): at most one line per second, naming how many were suppressed
/// since the last, with no atomics and no clock read of its own (the caller passes the time it already has).
#[derive(Debug)]
pub struct LocalLog {
    what: &'static str,
    last_second: i64,
    suppressed: u64,
}

impl LocalLog {
    pub const fn new(what: &'static str) -> Self {
        LocalLog {
            what,
            last_second: i64::MIN,
            suppressed: 0,
        }
    }

    /// Logs `message()` unless a line was logged in the second `now` (Unix seconds) or later.
    pub fn log(&mut self, now: i64, message: impl FnOnce() -> String) {
        if now > self.last_second {
            self.last_second = now;
            let suppressed = std::mem::take(&mut self.suppressed);
            tracing::warn!(what = self.what, suppressed, "{}: {}", self.what, message());
        } else {
            self.suppressed += 1;
        }
    }
}
