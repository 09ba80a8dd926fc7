//! The local side: streams each interval's forwardable entries to `forward_address`.
//!
//! One task owns the connection and a queue of unsent intervals. Each interval's entries are encoded once and
//! sent as one stream tagged with an identity (`harrier-batch-id`), oldest first, retrying with backoff until one
//! interval has passed; the global merges a batch at most once, so a retry after a lost answer counts nothing
//! twice. What could not be sent stays queued and goes with the next interval's
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
            sender_id: xxhash_rust::xxh3::xxh3_64(
                format!("{}-{:?}-{address}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
            ),
            seq: 0,
        };
        tokio::spawn(task.run(rx));
        Ok(Arc::new(Forwarder { jobs: tx, telemetry }))
    }
}

impl Forward for Forwarder {
    fn forward(&self, entries: Vec<Entry>) -> tokio::task::JoinHandle<()> {
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

/// The metadata key carrying a batch's identity, so that a retried batch the global already merged is not merged
/// twice.
pub const BATCH_ID_HEADER: &str = "harrier-batch-id";

/// One interval's encoded metrics, with its identity and failed attempts.
struct Queued {
    id: String,
    metrics: Arc<Vec<proto::Metric>>,
    failures: u32,
}

struct Task {
    client: ForwardClient<Channel>,
    max_intervals: u32,
    interval: Duration,
    telemetry: Arc<Telemetry>,
    /// Unsent intervals, oldest first.
    queue: VecDeque<Queued>,
    sender_id: u64,
    seq: u64,
}

impl Task {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some((mut entries, done)) = jobs.recv().await {
            let encoded = tokio::task::spawn_blocking(move || entries.iter_mut().map(encode).collect::<Vec<_>>())
                .await
                .unwrap_or_default();
            if !encoded.is_empty() {
                self.seq += 1;
                self.queue.push_back(Queued {
                    id: format!("{:016x}-{}", self.sender_id, self.seq),
                    metrics: Arc::new(encoded),
                    failures: 0,
                });
            }
            if !self.queue.is_empty() {
                self.attempt().await;
            }
            let _ = done.send(());
        }
    }

    /// Sends one batch as one stream, tagged with its identity.
    async fn send_one(&mut self, batch: &Queued, left: Duration) -> Result<proto::SendMetricsResponse, &'static str> {
        let metrics = batch.metrics.clone();
        let stream = tokio_stream::iter((0..metrics.len()).map(move |i| metrics[i].clone()));
        let mut request = tonic::Request::new(stream);
        if let Ok(v) = batch.id.parse() {
            request.metadata_mut().insert(BATCH_ID_HEADER, v);
        }
        match tokio::time::timeout(left, self.client.send_metrics(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unavailable => "transient_unavailable",
                tonic::Code::DeadlineExceeded => "deadline_exceeded",
                // The global refuses this batch as it is: retrying cannot help, and it would hold newer ones.
                tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted | tonic::Code::Unimplemented => "refused",
                _ => "send",
            }),
            Err(_) => Err("deadline_exceeded"),
        }
    }

    /// Sends the queued intervals oldest first, each as its own stream, retrying until one interval has passed.
    async fn attempt(&mut self) {
        let started = Instant::now();
        let deadline = started + self.interval;
        let mut backoff = Duration::from_millis(50);
        let mut cause = "";
        while let Some(batch) = self.queue.pop_front() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.queue.push_front(batch);
                cause = "deadline_exceeded";
                break;
            }
            match self.send_one(&batch, left).await {
                Ok(r) => {
                    self.telemetry
                        .count("harrier.forward.metrics", &["result:sent"], r.accepted);
                    if r.rejected > 0 {
                        self.telemetry
                            .count("harrier.forward.metrics", &["result:rejected"], r.rejected);
                    }
                    backoff = Duration::from_millis(50);
                }
                Err(c) => {
                    self.telemetry
                        .count("harrier.forward.errors", &[&format!("cause:{c}")], 1);
                    self.queue.push_front(batch);
                    cause = c;
                    if Instant::now() + backoff >= deadline {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.telemetry
            .count("harrier.forward.duration_ms", &[], started.elapsed().as_millis() as u64);
        if self.queue.is_empty() {
            return;
        }
        // Keep what failed for the next interval, up to the bound.
        let mut dropped = 0u64;
        for q in self.queue.iter_mut() {
            q.failures += 1;
        }
        while let Some(q) = self.queue.front() {
            if q.failures < self.max_intervals {
                break;
            }
            dropped += q.metrics.len() as u64;
            self.queue.pop_front();
        }
        let kept: u64 = self.queue.iter().map(|q| q.metrics.len() as u64).sum();
        if dropped > 0 {
            self.telemetry
                .count("harrier.forward.dropped", &["cause:too_many_intervals"], dropped);
        }
        LOG.log(|| {
            format!(
                "could not forward ({cause}); {kept} metrics kept for the next interval, {dropped} dropped after \
                 forward_max_intervals={} failed attempts",
                self.max_intervals
            )
        });
    }
}
