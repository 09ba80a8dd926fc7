//! A sink's retry queue: payloads that ran out of retries in their own interval, oldest first, sent again by later
//! flushes (see [`Delivery`](super::delivery::Delivery)).
//!
//! Bounds:
//! - **memory**: `retry_queue_max_bytes` of bodies, counting the requests in flight. Beyond it, the oldest
//!   payloads leave memory: to the disk only, when `retry_queue_dir` is set and has room; otherwise they are
//!   dropped and counted (`harrier.sink.dropped{sink,endpoint,reason:retry_queue_full}`).
//! - **disk** (`retry_queue_dir`): every queued payload is written there as it is queued (its body only, named by
//!   sequence and endpoint: no header, so no API key, ever reaches the disk), so that it survives a restart, up to
//!   `retry_queue_max_disk_bytes`; beyond it the oldest files are removed (and payloads held nowhere else are
//!   dropped and counted). A payload held only on disk is read back when its turn comes.
//!
//! Gauges per endpoint: `harrier.sink.retry_queue_bytes` (in memory), `harrier.sink.retry_queue_payloads`, and
//! per sink `harrier.sink.retry_queue_disk_bytes`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::telemetry::catalog::{
    SINK_DROPPED, SINK_RETRY_QUEUE_BYTES, SINK_RETRY_QUEUE_DISK_BYTES, SINK_RETRY_QUEUE_PAYLOADS,
};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("sink retry queue");

/// A payload waiting to be sent again.
pub(super) struct Queued {
    pub endpoint: &'static str,
    pub url: String,
    pub headers: HeaderMap,
    /// The body; `None` while it is held on disk only.
    pub body: Option<Bytes>,
    pub len: usize,
    /// Its copy in `retry_queue_dir`, if any.
    pub file: Option<PathBuf>,
}

/// Which endpoint, URL and headers a payload found on disk goes to (the sink's current ones).
pub type Resolve = dyn Fn(&str) -> Option<(&'static str, String, HeaderMap)> + Send + Sync;

struct Disk {
    dir: PathBuf,
    next: AtomicU64,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    items: VecDeque<Queued>,
    /// Bodies held in memory.
    mem_bytes: usize,
    /// Bodies written to disk.
    disk_bytes: usize,
    /// Bodies of requests in flight (they count against the memory bound).
    in_flight: usize,
    /// While the intake keeps failing: no new attempt before this, and how many intervals the last wait was.
    pub skip_until: Option<Instant>,
    pub wait_intervals: u32,
    /// Endpoints seen, so that their gauges go back to 0 once emptied.
    endpoints: Vec<&'static str>,
}

/// A sink's retry queue.
pub(super) struct RetryQueue {
    sink: Arc<str>,
    max_bytes: usize,
    state: Mutex<State>,
    disk: Option<Disk>,
    telemetry: Arc<Telemetry>,
}

impl RetryQueue {
    pub fn new(sink: Arc<str>, max_bytes: usize, telemetry: Arc<Telemetry>) -> Self {
        RetryQueue {
            sink,
            max_bytes,
            state: Mutex::default(),
            disk: None,
            telemetry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update; the queue is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a payload of `len` bytes may wait here.
    pub fn takes(&self, len: usize) -> bool {
        self.max_bytes > 0 && len <= self.max_bytes
    }

    /// Keeps queued payloads in `dir/<sink>/` too, at most `max_disk_bytes`, and loads the names of what an earlier
    /// run left there (oldest first; bodies are read when sent), for the endpoint `resolve` names.
    pub fn attach_disk(&mut self, dir: &Path, max_disk_bytes: usize, resolve: &Resolve) -> Result<(), String> {
        let name: String = self
            .sink
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("retry_queue_dir {}: {e}", dir.display()))?;
        let mut found: Vec<(u64, String, PathBuf, usize)> = std::fs::read_dir(&dir)
            .map_err(|e| format!("retry_queue_dir {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let (seq, endpoint) = file.strip_suffix(".payload")?.split_once('-')?;
                let len = e.metadata().ok()?.len() as usize;
                Some((seq.parse().ok()?, endpoint.to_string(), e.path(), len))
            })
            .collect();
        found.sort();
        let next = found.last().map_or(0, |f| f.0 + 1);
        self.disk = Some(Disk {
            dir,
            next: AtomicU64::new(next),
            max_bytes: max_disk_bytes,
        });
        let mut items = Vec::new();
        for (_, endpoint, path, len) in found {
            match resolve(&endpoint) {
                Some((endpoint, url, headers)) => items.push(Queued {
                    endpoint,
                    url,
                    headers,
                    body: None,
                    len,
                    file: Some(path),
                }),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        {
            let mut s = self.lock();
            s.disk_bytes = items.iter().map(|i| i.len).sum();
            for item in &items {
                if !s.endpoints.contains(&item.endpoint) {
                    s.endpoints.push(item.endpoint);
                }
            }
            s.items.extend(items);
        }
        self.bound();
        Ok(())
    }

    /// Puts payloads at the back (new failures) or, in their order, at the front (queued ones that failed again),
    /// writing new ones to disk, then applies the bounds.
    pub fn push(&self, mut items: Vec<Queued>, front: bool) {
        if let Some(disk) = &self.disk {
            for item in items.iter_mut().filter(|i| i.file.is_none()) {
                let Some(body) = &item.body else { continue };
                let seq = disk.next.fetch_add(1, Ordering::Relaxed);
                let path = disk.dir.join(format!("{seq:020}-{}.payload", item.endpoint));
                let tmp = path.with_extension("tmp");
                match std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path)) {
                    Ok(()) => item.file = Some(path),
                    Err(e) => LOG.log(|| format!("{}: cannot write {}: {e}", self.sink, path.display())),
                }
            }
        }
        {
            let mut s = self.lock();
            for item in &items {
                s.mem_bytes += item.body.as_ref().map_or(0, |_| item.len);
                s.disk_bytes += item.file.as_ref().map_or(0, |_| item.len);
                if !s.endpoints.contains(&item.endpoint) {
                    s.endpoints.push(item.endpoint);
                }
            }
            if front {
                // Pushed to the front last to first, so that they keep their order there.
                for item in items.into_iter().rev() {
                    s.items.push_front(item);
                }
            } else {
                s.items.extend(items);
            }
        }
        self.bound();
    }

    /// Applies the memory and disk bounds (oldest first), counts what is dropped and updates the gauges.
    fn bound(&self) {
        let mut dropped: Vec<&'static str> = Vec::new();
        {
            let mut s = self.lock();
            let s = &mut *s;
            let disk_max = self.disk.as_ref().map_or(0, |d| d.max_bytes);
            // Disk first: the oldest files go; a payload held nowhere else goes with its file.
            let mut i = 0;
            while s.disk_bytes > disk_max && i < s.items.len() {
                let item = &mut s.items[i];
                if let Some(path) = item.file.take() {
                    let _ = std::fs::remove_file(path);
                    s.disk_bytes -= item.len;
                    if item.body.is_none() {
                        dropped.push(item.endpoint);
                        s.items.remove(i);
                        continue;
                    }
                }
                i += 1;
            }
            // Memory: the oldest bodies leave memory, kept on disk when they are there.
            let mut i = 0;
            while s.mem_bytes + s.in_flight > self.max_bytes && i < s.items.len() {
                let item = &mut s.items[i];
                if item.body.is_some() {
                    item.body = None;
                    s.mem_bytes -= item.len;
                    if item.file.is_none() {
                        dropped.push(item.endpoint);
                        s.items.remove(i);
                        continue;
                    }
                }
                i += 1;
            }
            self.gauges(s);
        }
        for endpoint in &dropped {
            self.count_dropped(endpoint, "retry_queue_full", 1);
        }
        if !dropped.is_empty() {
            LOG.log(|| {
                format!(
                    "{}: retry queue full: dropped its {} oldest payload(s)",
                    self.sink,
                    dropped.len()
                )
            });
        }
    }

    fn gauges(&self, s: &State) {
        let sink = format!("sink:{}", self.sink);
        for &endpoint in &s.endpoints {
            let (mut bytes, mut payloads) = (0usize, 0usize);
            for item in s.items.iter().filter(|i| i.endpoint == endpoint) {
                bytes += item.body.as_ref().map_or(0, |_| item.len);
                payloads += 1;
            }
            let ep = format!("endpoint:{endpoint}");
            let tags = [sink.as_str(), ep.as_str()];
            self.telemetry.set(&SINK_RETRY_QUEUE_BYTES, &tags, bytes as f64);
            self.telemetry.set(&SINK_RETRY_QUEUE_PAYLOADS, &tags, payloads as f64);
        }
        if self.disk.is_some() {
            self.telemetry
                .set(&SINK_RETRY_QUEUE_DISK_BYTES, &[&sink], s.disk_bytes as f64);
        }
    }

    /// Counts payloads given up in `harrier.sink.dropped{sink,endpoint,reason}`.
    pub fn count_dropped(&self, endpoint: &str, reason: &str, n: u64) {
        let sink = format!("sink:{}", self.sink);
        let endpoint = format!("endpoint:{endpoint}");
        let reason = format!("reason:{reason}");
        self.telemetry.add(&SINK_DROPPED, &[&sink, &endpoint, &reason], n);
    }

    /// Takes every queued payload for a new attempt, unless the queue is waiting out a failing intake; bodies held
    /// on disk only are read back (one that cannot be read is dropped and counted).
    pub fn take_all(&self) -> Vec<Queued> {
        let items: Vec<Queued> = {
            let mut s = self.lock();
            if s.items.is_empty() || s.skip_until.is_some_and(|t| Instant::now() < t) {
                return Vec::new();
            }
            s.mem_bytes = 0;
            s.disk_bytes = 0;
            let items = s.items.drain(..).collect();
            self.gauges(&s);
            items
        };
        let mut out = Vec::with_capacity(items.len());
        for mut item in items {
            if item.body.is_none() {
                match item.file.as_ref().map(std::fs::read) {
                    Some(Ok(body)) => item.body = Some(body.into()),
                    _ => {
                        forget(&item);
                        self.count_dropped(item.endpoint, "retry_queue_unreadable", 1);
                        continue;
                    }
                }
            }
            out.push(item);
        }
        out
    }

    /// After a round of retries: whether anything got through decides the wait before the next round (1, 2, 4,
    /// then 8 intervals while nothing does).
    pub fn round_done(&self, delivered: bool, failed_again: bool, interval: std::time::Duration) {
        let mut s = self.lock();
        if delivered || !failed_again {
            (s.skip_until, s.wait_intervals) = (None, 0);
        } else {
            s.wait_intervals = (s.wait_intervals * 2).clamp(1, 8);
            s.skip_until = Some(Instant::now() + jitter(interval * s.wait_intervals));
        }
    }

    /// A request of `len` bytes starts (`true`) or ends: requests in flight count against the memory bound.
    pub fn in_flight(&self, len: usize, starts: bool) {
        let over = {
            let mut s = self.lock();
            if starts {
                s.in_flight += len;
            } else {
                s.in_flight = s.in_flight.saturating_sub(len);
            }
            // Only a start can go over the bound, and only a queue holding bodies in memory has any to give up.
            starts && s.mem_bytes > 0 && s.mem_bytes + s.in_flight > self.max_bytes
        };
        if over {
            self.bound();
        }
    }
}

/// Removes a payload's copy on disk (delivered, or dropped).
pub(super) fn forget(item: &Queued) {
    if let Some(path) = &item.file {
        let _ = std::fs::remove_file(path);
    }
}

/// A delay between half and all of `d`, from a cheap per-call random source.
pub(super) fn jitter(d: std::time::Duration) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() as u64);
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let frac = 0.5 + (x % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}
