//! The local side: streams each interval's forwardable entries to `forward_address`.
//!
//! One task owns the connection and a queue of unsent intervals. Each interval's entries are encoded once; a
//! forward attempt streams every queued interval (the global merges them like any other import), retrying with
//! backoff until one interval has passed. What could not be sent stays queued and goes with the next interval's
//! forward; an interval that has failed `forward_max_intervals` times is dropped and counted. Nothing here can
//! block ingest or the flush: the flusher only hands entries over a bounded queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use super::proto::forward_client::ForwardClient;
use super::{encode, proto};
use crate::aggregate::Entry;
use crate::flush::Forward;
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("forward");

/// Intervals waiting to be handed to the forwarding task before the flusher drops one.
const QUEUE: usize = 4;

type Job = (Vec<Entry>, oneshot::Sender<()>);

/// Forwards to one global (or proxy).
pub struct Forwarder {
    jobs: mpsc::Sender<Job>,
    telemetry: Arc<Telemetry>,
}

impl Forwarder {
    /// Starts the forwarding task. `address` is `host:port` (an `http://` prefix is accepted).
    pub fn start(
        address: &str,
        max_intervals: u32,
        interval: Duration,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Forwarder>, String> {
        let host_port = crate::config::strip_http_scheme(address);
        let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| format!("forward_address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(1).min(interval))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = Task {
            client: ForwardClient::new(channel),
            max_intervals: max_intervals.max(1),
            interval,
            telemetry: telemetry.clone(),
            queue: VecDeque::new(),
        };
        tokio::spawn(task.run(rx));
        Ok(Arc::new(Forwarder { jobs: tx, telemetry }))
    }
}

impl Forward for Forwarder {
    fn forward(&self, entries: Vec<Entry>, _deadline: Duration) -> tokio::task::JoinHandle<()> {
        let (done_tx, done_rx) = oneshot::channel();
        let n = entries.len() as u64;
        if self.jobs.try_send((entries, done_tx)).is_err() && n > 0 {
            self.telemetry
                .count("harrier.forward.dropped", &["cause:queue_full"], n);
            LOG.log(|| format!("{n} metrics dropped: the forwarding queue is full (the global is too slow)"));
        }
        tokio::spawn(async move {
            let _ = done_rx.await;
        })
    }
}

struct Task {
    client: ForwardClient<Channel>,
    max_intervals: u32,
    interval: Duration,
    telemetry: Arc<Telemetry>,
    /// Unsent intervals: their encoded metrics and how many attempts they have failed.
    queue: VecDeque<(Vec<proto::Metric>, u32)>,
}

impl Task {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some((mut entries, done)) = jobs.recv().await {
            let encoded = tokio::task::spawn_blocking(move || entries.iter_mut().map(encode).collect::<Vec<_>>())
                .await
                .unwrap_or_default();
            if !encoded.is_empty() {
                self.queue.push_back((encoded, 0));
            }
            if !self.queue.is_empty() {
                self.attempt().await;
            }
            let _ = done.send(());
        }
    }

    /// Streams every queued interval, retrying until one interval has passed.
    async fn attempt(&mut self) {
        let started = Instant::now();
        let deadline = started + self.interval;
        let metrics: Vec<proto::Metric> = self.queue.iter().flat_map(|(m, _)| m.iter().cloned()).collect();
        let total = metrics.len() as u64;
        let mut backoff = Duration::from_millis(50);
        let cause = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break "deadline_exceeded";
            }
            let stream = tokio_stream::iter(metrics.clone());
            let cause = match tokio::time::timeout(left, self.client.send_metrics(stream)).await {
                Ok(Ok(resp)) => {
                    let r = resp.into_inner();
                    self.telemetry
                        .count("harrier.forward.metrics", &["result:sent"], r.accepted);
                    if r.rejected > 0 {
                        self.telemetry
                            .count("harrier.forward.metrics", &["result:rejected"], r.rejected);
                    }
                    self.telemetry
                        .count("harrier.forward.duration_ms", &[], started.elapsed().as_millis() as u64);
                    self.queue.clear();
                    return;
                }
                Ok(Err(status)) => match status.code() {
                    tonic::Code::Unavailable => "transient_unavailable",
                    tonic::Code::DeadlineExceeded => "deadline_exceeded",
                    _ => "send",
                },
                Err(_) => "deadline_exceeded",
            };
            self.telemetry
                .count("harrier.forward.errors", &[&format!("cause:{cause}")], 1);
            if Instant::now() + backoff >= deadline {
                break cause;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        // Keep what failed for the next interval, up to the bound.
        let mut dropped = 0u64;
        for (_, failures) in self.queue.iter_mut() {
            *failures += 1;
        }
        while let Some((m, failures)) = self.queue.front() {
            if *failures < self.max_intervals {
                break;
            }
            dropped += m.len() as u64;
            self.queue.pop_front();
        }
        let kept: u64 = self.queue.iter().map(|(m, _)| m.len() as u64).sum();
        if dropped > 0 {
            self.telemetry
                .count("harrier.forward.dropped", &["cause:too_many_intervals"], dropped);
        }
        LOG.log(|| {
            format!(
                "could not forward {total} metrics ({cause}); {kept} kept for the next interval, {dropped} dropped \
                 after forward_max_intervals={} failed attempts",
                self.max_intervals
            )
        });
    }
}
