//! The delivery layer every HTTP sink shares under its own encoder: one keep-alive client, POSTs retried with
//! exponential backoff and jitter until the flush's deadline, and every request's outcome counted.
//!
//! Failure policy: 5xx, 408, 429, timeouts and connection errors are retried until the deadline (one interval);
//! 413 is handed back to the encoder, which may split the payload; any other status is dropped at once. Each
//! request is counted as `harrier.sink.requests{sink,endpoint,result}`. Header values are never logged (they
//! carry API keys and auth tokens): logs name the sink, the endpoint and the outcome only.

use std::sync::Arc;
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
}

impl Sent {
    /// The failure's reason, `None` if delivered.
    pub fn failure(self) -> Option<&'static str> {
        match self {
            Sent::Ok => None,
            Sent::TooLarge => Some("http_413"),
            Sent::Dropped(r) | Sent::GaveUp(r) => Some(r),
        }
    }
}

/// A sink's client and its accounting; cheap to clone into each request's task.
#[derive(Clone)]
pub struct Delivery {
    sink: Arc<str>,
    client: reqwest::Client,
    telemetry: Arc<Telemetry>,
}

impl Delivery {
    pub fn new(sink: &str, telemetry: Arc<Telemetry>) -> Result<Self, String> {
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
        })
    }

    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Counts one outcome in `harrier.sink.requests{sink,endpoint,result}`.
    pub fn count(&self, endpoint: &str, result: &str) {
        let sink = format!("sink:{}", self.sink);
        let endpoint = format!("endpoint:{endpoint}");
        let result = format!("result:{result}");
        self.telemetry
            .count("harrier.sink.requests", &[&sink, &endpoint, &result], 1);
    }

    /// POSTs `body` to `url` with `headers`, retrying what is worth retrying until `deadline`.
    pub async fn post(
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
