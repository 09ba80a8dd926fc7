//! The default sink: one readable line per series, check and event on stdout.
//!
//! ```text
//! 1700000010 counter deploys 1 host=web-1 tags=svc:api
//! 1700000010 gauge api.latency.max 12 host=web-1 tags=route:charges
//! 1700000010 check db.up OK host=web-1 tags= message=all good
//! 1700000010 event "Deploy" host=web-1 tags=svc:api alert=info priority=normal text=Build 1234
//! ```

use std::io::Write;
use std::sync::Arc;

use super::{Flush, Sink, SinkFuture, SinkOutcome};
use crate::aggregate::TagSet;

/// Prints each flush to stdout.
pub struct ConsoleSink {
    name: String,
}

impl ConsoleSink {
    pub fn new(name: impl Into<String>) -> Self {
        ConsoleSink { name: name.into() }
    }
}

fn tags(set: &TagSet) -> String {
    set.output().collect::<Vec<_>>().join(",")
}

/// Writes a flush as text, one line per item, without building it in memory first.
pub fn render_to(flush: &Flush, out: &mut impl Write) -> std::io::Result<()> {
    let default_host = flush.hostname.as_str();
    for s in flush.all_series() {
        write!(
            out,
            "{} {} {} {} host={}",
            s.timestamp,
            s.kind.as_str(),
            s.full_name(),
            s.value,
            s.host(default_host).unwrap_or("")
        )?;
        if let Some(device) = s.tags.device() {
            write!(out, " device={device}")?;
        }
        writeln!(out, " tags={}", tags(&s.tags))?;
    }
    for c in &flush.checks {
        let status = match c.status.code() {
            0 => "OK",
            1 => "WARNING",
            2 => "CRITICAL",
            _ => "UNKNOWN",
        };
        writeln!(
            out,
            "{} check {} {} host={} tags={} message={}",
            c.timestamp,
            c.name,
            status,
            c.hostname.as_deref().unwrap_or(default_host),
            tags(&c.tags),
            c.message
        )?;
    }
    for e in &flush.events {
        writeln!(
            out,
            "{} event {:?} host={} tags={} alert={} priority={} text={:?}",
            e.timestamp,
            e.title,
            e.hostname.as_deref().unwrap_or(default_host),
            tags(&e.tags),
            e.alert_type.as_str(),
            e.priority.as_str(),
            e.text
        )?;
    }
    Ok(())
}

impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "console"
    }

    fn flush(&self, flush: Arc<Flush>) -> SinkFuture<'_> {
        Box::pin(async move {
            // Rendering and writing block (stdout may be a slow pipe): keep them off the runtime's threads, so that
            // the flusher's deadline still applies and nothing else waits.
            let written = tokio::task::spawn_blocking(move || {
                let mut stdout = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
                render_to(&flush, &mut stdout).and_then(|()| stdout.flush())
            })
            .await;
            match written {
                Ok(Ok(())) => SinkOutcome::Ok,
                Ok(Err(e)) => SinkOutcome::Failed {
                    reason: "stdout",
                    detail: e.to_string(),
                },
                Err(e) => SinkOutcome::Failed {
                    reason: "panicked",
                    detail: e.to_string(),
                },
            }
        })
    }
}
