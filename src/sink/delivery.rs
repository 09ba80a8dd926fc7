//! The delivery layer every HTTP sink shares under its own encoder: one keep-alive client, POSTs retried with
//! exponential backoff and jitter until the flush's deadline, and every request's outcome counted.
//!
//! Failure policy: 5xx, 408, 429, timeouts and connection errors are retried until the deadline (one interval);
//! 413 is handed back to the encoder, which may split the payload; any other status is dropped at once. Each
//! request is counted as `harrier.sink.requests{sink,endpoint,result}`. Header values are never logged (they
//! carry API keys and auth tokens): logs name the sink, the endpoint and the outcome only.
//!
//! A payload still failing with a retryable outcome at the deadline goes to the sink's **retry queue** (in memory,
//! bounded by `retry_queue_max_bytes`; beyond it the oldest payloads are dropped and counted in
//! `harrier.sink.dropped{sink,reason:retry_queue_full}`). Each flush sends its own payloads first and then the
//! queued ones, oldest first, concurrently and to the same deadline; what fails again is queued again, in order.
//! While the intake keeps failing, the queue is tried every 1, 2, 4 and then 8 intervals. The queue's size is the
//! gauge `harrier.sink.retry_queue_bytes{sink}`. With `retry_queue_dir`, queued payloads are also written there
//! (bodies only: headers, and so API keys, never reach the disk) and loaded again at the next start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("sink delivery");

/// How one payload's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// Not retried; the data is dropped.
    Dropped(&'static str),
    /// 413: the encoder may split the data.
    TooLarge,
    /// Retries ran out of time.
    GaveUp(&'static str),
    /// Retries ran out of time, and the payload waits in the retry queue.
    Queued(&'static str),
}

impl Sent {
    /// The failure's reason, `None` if delivered.
    pub fn failure(self) -> Option<&'static str> {
        match self {
            Sent::Ok => None,
            Sent::TooLarge => Some("http_413"),
            Sent::Queued(_) => Some("queued"),
            Sent::Dropped(r) | Sent::GaveUp(r) => Some(r),
        }
    }
}

/// A payload waiting to be sent again.
struct Queued {
    endpoint: &'static str,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    /// Its copy in `retry_queue_dir`, if the sink has one.
    file: Option<PathBuf>,
}

/// `retry_queue_dir`: where queued payloads are also written (their bodies only, named by sequence and endpoint:
/// no header, so no API key, ever reaches the disk), so that they survive a restart.
struct Disk {
    dir: PathBuf,
    next: AtomicU64,
}

/// Which endpoint, URL and headers a payload found on disk goes to (the sink's current ones).
pub type Resolve = dyn Fn(&str) -> Option<(&'static str, String, HeaderMap)> + Send + Sync;

#[derive(Default)]
struct QueueState {
    items: VecDeque<Queued>,
    bytes: usize,
    /// While the intake keeps failing: no new attempt before this, and how many intervals the last wait was.
    skip_until: Option<Instant>,
    wait_intervals: u32,
}

/// A sink's payloads that ran out of retries in their own interval, oldest first.
struct RetryQueue {
    max_bytes: usize,
    state: Mutex<QueueState>,
    disk: Option<Disk>,
}

impl RetryQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A poisoned lock means a panic mid-update; the queue is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sink's client, retry queue and accounting; cheap to clone into each request's task.
#[derive(Clone)]
pub struct Delivery {
    sink: Arc<str>,
    client: reqwest::Client,
    telemetry: Arc<Telemetry>,
    queue: Arc<RetryQueue>,
}

impl Delivery {
    /// A delivery whose retry queue holds at most `retry_queue_max_bytes` of payloads (0: no queue).
    pub fn new(sink: &str, telemetry: Arc<Telemetry>, retry_queue_max_bytes: usize) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("harrier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Delivery {
            sink: sink.into(),
            client,
            telemetry,
            queue: Arc::new(RetryQueue {
                max_bytes: retry_queue_max_bytes,
                state: Mutex::default(),
                disk: None,
            }),
        })
    }

    /// Also keeps queued payloads in `dir/<sink>/`, bounded with the queue, and loads what an earlier run left
    /// there (oldest first), sending it to the endpoint `resolve` names. Call before any flush.
    pub fn with_disk(mut self, dir: &Path, resolve: &Resolve) -> Result<Self, String> {
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
        let mut found: Vec<(u64, String, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| format!("retry_queue_dir {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let (seq, endpoint) = file.strip_suffix(".payload")?.split_once('-')?;
                Some((seq.parse().ok()?, endpoint.to_string(), e.path()))
            })
            .collect();
        found.sort();
        let next = found.last().map_or(0, |f| f.0 + 1);
        let mut items = Vec::new();
        for (_, endpoint, path) in found {
            match (resolve(&endpoint), std::fs::read(&path)) {
                (Some((endpoint, url, headers)), Ok(body)) => items.push(Queued {
                    endpoint,
                    url,
                    headers,
                    body: body.into(),
                    file: Some(path),
                }),
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let queue = Arc::get_mut(&mut self.queue).ok_or("the retry queue is already shared")?;
        queue.disk = Some(Disk {
            dir,
            next: AtomicU64::new(next),
        });
        self.enqueue(items, false);
        Ok(self)
    }

    /// Bytes of payloads waiting in the retry queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }

    /// Puts payloads at the back (new failures) or, in their order, at the front (queued ones that failed again)
    /// of the retry queue, dropping the oldest beyond its bound.
    fn enqueue(&self, mut items: Vec<Queued>, front: bool) {
        if let Some(disk) = &self.queue.disk {
            for item in items.iter_mut().filter(|i| i.file.is_none()) {
                let seq = disk.next.fetch_add(1, Ordering::Relaxed);
                let path = disk.dir.join(format!("{seq:020}-{}.payload", item.endpoint));
                let tmp = path.with_extension("tmp");
                let written = std::fs::write(&tmp, &item.body).and_then(|()| std::fs::rename(&tmp, &path));
                match written {
                    Ok(()) => item.file = Some(path),
                    Err(e) => LOG.log(|| format!("{}: cannot write {}: {e}", self.sink, path.display())),
                }
            }
        }
        let mut dropped = 0u64;
        {
            let mut q = self.queue.lock();
            q.bytes += items.iter().map(|i| i.body.len()).sum::<usize>();
            if front {
                // Pushed to the front last to first, so that they keep their order there.
                for item in items.into_iter().rev() {
                    q.items.push_front(item);
                }
            } else {
                q.items.extend(items);
            }
            while q.bytes > self.queue.max_bytes {
                let Some(oldest) = q.items.pop_front() else { break };
                q.bytes -= oldest.body.len();
                forget(&oldest);
                dropped += 1;
            }
            self.telemetry.gauge(
                "harrier.sink.retry_queue_bytes",
                &[&format!("sink:{}", self.sink)],
                q.bytes as f64,
            );
        }
        if dropped > 0 {
            self.count_dropped("retry_queue_full", dropped);
            LOG.log(|| {
                format!(
                    "{}: retry queue full: dropped its {dropped} oldest payload(s)",
                    self.sink
                )
            });
        }
    }

    /// Sends the queued payloads again, oldest first and concurrently, until `deadline`; those that fail again
    /// with a retryable outcome go back to the front of the queue in their order. Returns the failures' reasons.
    pub async fn retry_queued(&self, deadline: Instant) -> Vec<&'static str> {
        let interval = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let items: Vec<Queued> = {
            let mut q = self.queue.lock();
            if q.items.is_empty() || q.skip_until.is_some_and(|t| Instant::now() < t) {
                return Vec::new();
            }
            q.bytes = 0;
            q.items.drain(..).collect()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let me = self.clone();
            tasks.spawn(async move {
                let sent = me
                    .post_once(item.endpoint, &item.url, &item.headers, item.body.clone(), deadline)
                    .await;
                (i, item, sent)
            });
        }
        let mut again = Vec::new();
        let mut failures = Vec::new();
        let mut delivered = 0;
        while let Some(done) = tasks.join_next().await {
            let Ok((i, item, sent)) = done else {
                failures.push("panicked");
                continue;
            };
            match sent {
                Sent::Ok => {
                    forget(&item);
                    delivered += 1;
                }
                Sent::GaveUp(_) => again.push((i, item)),
                other => {
                    forget(&item);
                    let reason = other.failure().unwrap_or("dropped");
                    self.count_dropped(reason, 1);
                    failures.push(reason);
                }
            }
        }
        again.sort_by_key(|(i, _)| *i);
        if !again.is_empty() {
            failures.push("queued");
        }
        {
            let mut q = self.queue.lock();
            if delivered > 0 || again.is_empty() {
                (q.skip_until, q.wait_intervals) = (None, 0);
            } else {
                // Nothing got through: wait 1, 2, 4, then 8 intervals before the next attempt.
                q.wait_intervals = (q.wait_intervals * 2).clamp(1, 8);
                q.skip_until = Some(Instant::now() + jitter(interval * q.wait_intervals));
            }
        }
        self.enqueue(again.into_iter().map(|(_, item)| item).collect(), true);
        failures
    }

    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Counts payloads given up in `harrier.sink.dropped{sink,reason}`.
    fn count_dropped(&self, reason: &str, n: u64) {
        let sink = format!("sink:{}", self.sink);
        let reason = format!("reason:{reason}");
        self.telemetry.count("harrier.sink.dropped", &[&sink, &reason], n);
    }

    /// Counts one outcome in `harrier.sink.requests{sink,endpoint,result}`.
    pub fn count(&self, endpoint: &str, result: &str) {
        let sink = format!("sink:{}", self.sink);
        let endpoint = format!("endpoint:{endpoint}");
        let result = format!("result:{result}");
        self.telemetry
            .count("harrier.sink.requests", &[&sink, &endpoint, &result], 1);
    }

    /// POSTs `body` to `url` with `headers`, retrying what is worth retrying until `deadline`; a payload that
    /// still fails then goes to the retry queue (when the sink has one).
    pub async fn post(
        &self,
        endpoint: &'static str,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Sent {
        match self.post_once(endpoint, url, headers, body.clone(), deadline).await {
            Sent::GaveUp(reason) if self.queue.max_bytes > 0 && body.len() <= self.queue.max_bytes => {
                let item = Queued {
                    endpoint,
                    url: url.to_string(),
                    headers: headers.clone(),
                    body,
                    file: None,
                };
                self.enqueue(vec![item], false);
                Sent::Queued(reason)
            }
            sent => sent,
        }
    }

    /// One payload's attempts until `deadline`, without the retry queue.
    async fn post_once(
        &self,
        endpoint: &'static str,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Sent {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                self.count(endpoint, "deadline");
                return Sent::GaveUp("deadline");
            };
            let req = self
                .client
                .post(url)
                .timeout(left)
                .headers(headers.clone())
                .body(body.clone());
            let retry_reason: &'static str = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => {
                            self.count(endpoint, "ok");
                            return Sent::Ok;
                        }
                        413 => {
                            self.count(endpoint, "http_413");
                            return Sent::TooLarge;
                        }
                        408 | 429 | 500..=599 => status_reason(status),
                        _ => {
                            let reason = status_reason(status);
                            self.count(endpoint, reason);
                            // The answer's first line often says why (a Prometheus "out of order sample", say).
                            let why = resp.text().await.unwrap_or_default();
                            let why = why.lines().next().unwrap_or("").chars().take(200).collect::<String>();
                            LOG.log(|| format!("{}: {endpoint}: {reason}, dropped (not retried): {why}", self.sink));
                            return Sent::Dropped(reason);
                        }
                    }
                }
                Err(e) if e.is_timeout() => "timeout",
                Err(e) if e.is_connect() => "connection",
                Err(_) => "request_error",
            };
            self.count(endpoint, retry_reason);
            let wait = jitter(backoff);
            if Instant::now() + wait >= deadline {
                LOG.log(|| {
                    format!(
                        "{}: {endpoint}: {retry_reason} after {attempt} attempts; giving up at the deadline",
                        self.sink
                    )
                });
                return Sent::GaveUp(retry_reason);
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Removes a payload's copy on disk (delivered, or dropped).
fn forget(item: &Queued) {
    if let Some(path) = &item.file {
        let _ = std::fs::remove_file(path);
    }
}

/// The `result` word of an HTTP status.
pub fn status_reason(status: u16) -> &'static str {
    match status {
        400 => "http_400",
        401 => "http_401",
        403 => "http_403",
        404 => "http_404",
        408 => "http_408",
        413 => "http_413",
        429 => "http_429",
        500..=599 => "http_5xx",
        _ => "http_other",
    }
}

/// A delay between half and all of `d`, from a cheap per-call random source.
fn jitter(d: Duration) -> Duration {
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
