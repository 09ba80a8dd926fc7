//! The delivery layer every HTTP sink shares under its own encoder: one keep-alive client, POSTs retried with
//! exponential backoff and jitter, the [retry queue](super::retry_queue), and every request's outcome counted.
//!
//! Failure policy (the agent forwarder's): 5xx, 408, 429, timeouts and connection errors are retried; 413 is handed
//! back to the encoder, which may split the payload; any other status is dropped at once and counted. Each request
//! is counted as `harrier.sink.requests{sink,endpoint,result}`, each attempt after a payload's first as
//! `harrier.sink.retries{sink,endpoint}`, and each payload given up as `harrier.sink.dropped{sink,endpoint,reason}`.
//! Header values are never logged (they carry API keys and auth tokens): logs name the sink, the endpoint and the
//! outcome only.
//!
//! A sink may choose another [`RetryPolicy`]: the OTLP sink's follows the OTLP/HTTP specification instead (429,
//! 502, 503 and 504 retried, waiting what `Retry-After` says when it says it; any other status dropped; each 2xx
//! answer's body handed to the sink).
//!
//! Time: a payload's attempts start while its flush's interval lasts; each attempt may take `request_timeout`
//! (default 20 s, the agent's), whatever the interval, so a slow intake is waited for rather than cut off and sent
//! the same payload again. A payload still failing at the end of its interval goes to the retry queue. Each flush
//! sends its own payloads first and then the queued ones, oldest first, concurrently; what fails again is queued
//! again, in order. While the intake keeps failing, the queue is tried every 1, 2, 4 and then 8 intervals.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;

pub use super::retry_queue::Resolve;
use super::retry_queue::{forget, Queued, RetryQueue};
use crate::telemetry::catalog::{SINK_REQUESTS, SINK_RETRIES};
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

pub use crate::config::DeliverySettings;

/// Reads the body of a 2xx answer (the OTLP sink's partial-success check).
pub type OnOk = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Which answers a sink's delivery retries.
#[derive(Clone, Default)]
pub enum RetryPolicy {
    /// The agent forwarder's (Datadog, remote write): 5xx, 408 and 429 retried, 413 handed back to the encoder.
    #[default]
    Agent,
    /// OTLP/HTTP's: 429, 502, 503 and 504 retried, after `Retry-After` when the answer has one (if it ends
    /// before the deadline; else the payload gives up, to the retry queue); every other status dropped; each 2xx
    /// answer's body given to `on_ok`.
    Otlp { on_ok: OnOk },
}

/// What the policy makes of a status.
enum Verdict {
    Ok,
    TooLarge,
    Retry,
    Drop,
}

impl RetryPolicy {
    fn verdict(&self, status: u16) -> Verdict {
        match (self, status) {
            (_, 200..=299) => Verdict::Ok,
            (RetryPolicy::Agent, 413) => Verdict::TooLarge,
            (RetryPolicy::Agent, 408 | 429 | 500..=599) => Verdict::Retry,
            (RetryPolicy::Otlp { .. }, 429 | 502 | 503 | 504) => Verdict::Retry,
            _ => Verdict::Drop,
        }
    }
}

/// A sink's client, retry queue and accounting; cheap to clone into each request's task.
#[derive(Clone)]
pub struct Delivery {
    sink: Arc<str>,
    client: reqwest::Client,
    telemetry: Arc<Telemetry>,
    queue: Arc<RetryQueue>,
    request_timeout: Duration,
    policy: RetryPolicy,
}

/// Counts a request's body in flight for as long as it lives (dropped when its attempt ends or is cancelled).
struct InFlight<'a>(&'a RetryQueue, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight(self.1, false);
    }
}

impl Delivery {
    /// A sink's delivery; with `retry_queue_dir` set, `resolve` names where payloads an earlier run left there go.
    pub fn new(
        sink: &str,
        telemetry: Arc<Telemetry>,
        settings: &DeliverySettings,
        resolve: &Resolve,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5).min(settings.request_timeout))
            .user_agent(concat!("harrier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let sink: Arc<str> = sink.into();
        let mut queue = RetryQueue::new(sink.clone(), settings.retry_queue_max_bytes, telemetry.clone());
        if !settings.retry_queue_dir.is_empty() {
            queue.attach_disk(
                Path::new(&settings.retry_queue_dir),
                settings.retry_queue_max_disk_bytes,
                resolve,
            )?;
        }
        Ok(Delivery {
            sink,
            client,
            telemetry,
            queue: Arc::new(queue),
            request_timeout: settings.request_timeout,
            policy: RetryPolicy::Agent,
        })
    }

    /// This delivery with another retry policy (the default is [`RetryPolicy::Agent`]).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long one attempt may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends the queued payloads again, oldest first and concurrently, starting no attempt after `deadline`;
    /// those that fail again with a retryable outcome go back to the front of the queue in their order. Returns
    /// the failures' reasons.
    pub async fn retry_queued(&self, deadline: Instant) -> Vec<&'static str> {
        let interval = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let items = self.queue.take_all();
        if items.is_empty() {
            return Vec::new();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let me = self.clone();
            tasks.spawn(async move {
                let body = item.body.clone().unwrap_or_default();
                let sent = me
                    .post_once(item.endpoint, &item.url, &item.headers, body, deadline, 1)
                    .await;
                (i, item, sent)
            });
        }
        let mut again = Vec::new();
        let mut failures = Vec::new();
        let mut delivered = false;
        while let Some(done) = tasks.join_next().await {
            let Ok((i, item, sent)) = done else {
                failures.push("panicked");
                continue;
            };
            match sent {
                Sent::Ok => {
                    forget(&item);
                    delivered = true;
                }
                Sent::GaveUp(_) => again.push((i, item)),
                other => {
                    forget(&item);
                    let reason = other.failure().unwrap_or("dropped");
                    self.queue.count_dropped(item.endpoint, reason, 1);
                    failures.push(reason);
                }
            }
        }
        again.sort_by_key(|(i, _)| *i);
        if !again.is_empty() {
            failures.push("queued");
        }
        self.queue.round_done(delivered, !again.is_empty(), interval);
        self.queue.push(again.into_iter().map(|(_, item)| item).collect(), true);
        failures
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
        self.telemetry.add(&SINK_REQUESTS, &[&sink, &endpoint, &result], 1);
    }

    /// POSTs `body` to `url` with `headers`, retrying what is worth retrying while `deadline` (the end of the
    /// flush's interval) has not passed; a payload that still fails then goes to the retry queue (when the sink
    /// has one). An attempt under way at the deadline is not cut: it runs to its `request_timeout`.
    pub async fn post(
        &self,
        endpoint: &'static str,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Sent {
        match self.post_once(endpoint, url, headers, body.clone(), deadline, 0).await {
            Sent::GaveUp(reason) if self.queue.takes(body.len()) => {
                let item = Queued {
                    endpoint,
                    url: url.to_string(),
                    headers: headers.clone(),
                    len: body.len(),
                    body: Some(body),
                    file: None,
                };
                self.queue.push(vec![item], false);
                Sent::Queued(reason)
            }
            Sent::GaveUp(reason) => {
                self.queue.count_dropped(endpoint, reason, 1);
                Sent::GaveUp(reason)
            }
            sent => sent,
        }
    }

    /// One payload's attempts, none started after `deadline`, without the retry queue; `retries` is how many
    /// attempts it had before (a queued payload's are retries from the first).
    async fn post_once(
        &self,
        endpoint: &'static str,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
        mut retries: u32,
    ) -> Sent {
        self.queue.in_flight(body.len(), true);
        let _in_flight = InFlight(&self.queue, body.len());
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if Instant::now() >= deadline {
                self.count(endpoint, "deadline");
                return Sent::GaveUp("deadline");
            }
            if retries > 0 {
                let sink = format!("sink:{}", self.sink);
                let ep = format!("endpoint:{endpoint}");
                self.telemetry.add(&SINK_RETRIES, &[&sink, &ep], 1);
            }
            retries += 1;
            let req = self
                .client
                .post(url)
                .timeout(self.request_timeout)
                .headers(headers.clone())
                .body(body.clone());
            let (retry_reason, retry_after) = match req.send().await {
                Ok(resp) => match self.answer(endpoint, resp).await {
                    Ok(sent) => return sent,
                    Err(retry) => retry,
                },
                Err(e) if e.is_timeout() => ("timeout", None),
                Err(e) if e.is_connect() => ("connection", None),
                Err(_) => ("request_error", None),
            };
            self.count(endpoint, retry_reason);
            let now = Instant::now();
            let wait = match retry_after {
                Some(wait) => (now + wait < deadline).then_some(wait),
                None => backoff.next(now, deadline, super::retry_queue::jitter),
            };
            let Some(wait) = wait else {
                LOG.log(|| {
                    format!(
                        "{}: {endpoint}: {retry_reason} after {attempt} attempts; giving up at the deadline",
                        self.sink
                    )
                });
                return Sent::GaveUp(retry_reason);
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Delivery {
    /// What an answer means under the sink's policy: how the payload's delivery ended, or `Err` with the reason
    /// to retry and the wait its `Retry-After` asks for (read under the OTLP policy only).
    async fn answer(
        &self,
        endpoint: &'static str,
        resp: reqwest::Response,
    ) -> Result<Sent, (&'static str, Option<Duration>)> {
        let status = resp.status().as_u16();
        match self.policy.verdict(status) {
            Verdict::Ok => {
                if let RetryPolicy::Otlp { on_ok } = &self.policy {
                    // An unreadable answer body is no failure: the data was accepted.
                    on_ok(&resp.bytes().await.unwrap_or_default());
                }
                self.count(endpoint, "ok");
                Ok(Sent::Ok)
            }
            Verdict::TooLarge => {
                self.count(endpoint, "http_413");
                Ok(Sent::TooLarge)
            }
            Verdict::Retry => {
                let retry_after = match self.policy {
                    RetryPolicy::Otlp { .. } => resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now())),
                    RetryPolicy::Agent => None,
                };
                Err((status_reason(status), retry_after))
            }
            Verdict::Drop => {
                let reason = status_reason(status);
                self.count(endpoint, reason);
                // The answer's first line often says why (a Prometheus "out of order sample", say).
                let why = resp.text().await.unwrap_or_default();
                let why = why.lines().next().unwrap_or("").chars().take(200).collect::<String>();
                LOG.log(|| format!("{}: {endpoint}: {reason}, dropped (not retried): {why}", self.sink));
                self.queue.count_dropped(endpoint, reason, 1);
                Ok(Sent::Dropped(reason))
            }
        }
    }
}

/// The waits between the attempts of one request: 100 ms, doubling up to 5 s, each jittered (to 50–100 %, so that
/// the instances of a fleet do not retry in step), and none that would end at or past the request's deadline.
#[derive(Debug)]
struct Backoff {
    base: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Backoff::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The wait before the next attempt, at `now`; `None` when it would reach `deadline` (give up instead).
    fn next(&mut self, now: Instant, deadline: Instant, jitter: impl Fn(Duration) -> Duration) -> Option<Duration> {
        let wait = jitter(self.base);
        self.base = (self.base * 2).min(Backoff::MAX);
        (now + wait < deadline).then_some(wait)
    }
}

/// How long a `Retry-After` value says to wait, at `now`: delay-seconds, or an IMF-fixdate HTTP date (a date
/// already past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(86_400)));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as a time.
fn parse_http_date(value: &str) -> Option<std::time::SystemTime> {
    let rest = value.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
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

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn the_otlp_policy_retries_only_what_the_otlp_specification_says() {
        let otlp = RetryPolicy::Otlp {
            on_ok: Arc::new(|_| {}),
        };
        let retried: Vec<u16> = (200..600)
            .filter(|&s| matches!(otlp.verdict(s), Verdict::Retry))
            .collect();
        assert_eq!(retried, vec![429, 502, 503, 504]);
        assert!(matches!(otlp.verdict(413), Verdict::Drop));
        assert!(matches!(otlp.verdict(500), Verdict::Drop));
        assert!(matches!(otlp.verdict(200), Verdict::Ok));
        // The agent's policy is unchanged.
        let agent = RetryPolicy::Agent;
        let retried: Vec<u16> = (200..600)
            .filter(|&s| matches!(agent.verdict(s), Verdict::Retry))
            .collect();
        let want: Vec<u16> = [408, 429].into_iter().chain(500..600).collect();
        assert_eq!(retried, want);
        assert!(matches!(agent.verdict(413), Verdict::TooLarge));
    }

    #[test]
    fn waits_double_from_100ms_to_at_most_5s_and_none_reaches_the_deadline() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let far = now + Duration::from_secs(3600);
        let waits: Vec<u64> = (0..9)
            .map(|_| b.next(now, far, |d| d).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // A wait that would end at or past the deadline is not taken.
        let mut b = Backoff::default();
        assert_eq!(
            b.next(now, now + Duration::from_millis(101), |d| d),
            Some(Duration::from_millis(100))
        );
        assert_eq!(b.next(now, now + Duration::from_millis(200), |d| d), None);
        // The real jitter keeps each wait between half and all of its base.
        let mut b = Backoff::default();
        for base in [100u64, 200, 400, 800, 1600, 3200, 5000] {
            let w = b.next(now, far, crate::sink::retry_queue::jitter).unwrap().as_millis() as u64;
            assert!(w >= base / 2 && w <= base, "{w} ms for a base of {base} ms");
        }
    }
}
