//! One destination of the forwarder: a gRPC channel to a global (or a proxy), the batches routed to it in the
//! order they were numbered, whether it can be reached, and the task that asks it which batches are safe.
//!
//! A batch is *to send* until the destination answers its stream, then *merged* by that destination's
//! incarnation until an acknowledgement says it is flushed. The acknowledgement task long-polls `Acknowledge`
//! while anything is merged and not yet safe, and probes a destination marked down until it answers again.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};

use crate::config::ClientTlsConfig;

use super::view::forward_client::ForwardClient;
use super::view::{self as proto, AcknowledgeRequest};
use super::wire::RawBatch;

/// Most bytes of metrics in one gRPC message.
const MESSAGE_BYTES: usize = 1024 * 1024;

/// The metadata key carrying a batch's identity `<sender hex>-<seq>`, so that a retried batch the receiver
/// already merged is not merged twice.
pub const BATCH_ID_HEADER: &str = "harrier-batch-id";

/// Where a batch stands with its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    ToSend,
    /// Merged by the destination's incarnation given; waiting for its acknowledgement.
    Merged(u64),
}

/// Part of one forwarded interval (or one proxied stream) routed to one destination.
pub struct Batch {
    pub seq: u64,
    /// Each an encoded `Metric`.
    pub metrics: Arc<Vec<Bytes>>,
    /// Routing hashes, one per metric.
    pub hashes: Arc<Vec<u64>>,
    pub state: State,
    /// When its data was first routed (kept when it is routed again).
    pub born: Instant,
    /// The settlement of the job it came from, whose owner waits for every part to be safe (a proxy's incoming
    /// batch; see [`super::settle`]).
    pub settlement: Option<u64>,
}

/// Why sending to a destination failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing answered (refused, reset, no route): the batch was not merged.
    Unreachable,
    /// No answer in time: the batch may or may not have been merged, so it is only ever sent here again.
    Timeout,
    /// The destination refuses this batch as it is; sending it again cannot help.
    Refused,
}

impl Failure {
    pub fn cause(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "deadline_exceeded",
            Failure::Refused => "refused",
        }
    }
}

/// The `destination` tag of a destination's telemetry.
pub fn dest_tag(addr: &str) -> String {
    format!("destination:{addr}")
}

/// What the acknowledgement task learnt: the destination's incarnation and watermark, or that it did not answer.
pub struct AckReport {
    pub addr: Arc<str>,
    pub answer: Option<(u64, u64)>,
}

/// What the acknowledgement task should ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    after: u64,
    wait: bool,
    incarnation: u64,
}

/// A destination and its queue.
pub struct Destination {
    pub addr: Arc<str>,
    client: ForwardClient<Channel>,
    /// The sender part of this destination's batch ids.
    pub sender: u64,
    next_seq: u64,
    /// Batches in the order they were numbered.
    pub queue: VecDeque<Batch>,
    /// Set while the destination cannot be reached; no new batch is routed to it then.
    pub down: bool,
    /// It has answered at least once.
    pub confirmed: bool,
    retry_at: Instant,
    backoff: Duration,
    /// The incarnation that last answered (0: none yet).
    pub incarnation: u64,
    want: watch::Sender<Option<Want>>,
    poller: tokio::task::JoinHandle<()>,
    /// The receiver predates `SendMetricBatches`: one metric per message.
    legacy: Arc<AtomicBool>,
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// The first backoff after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Destination {
    /// A destination at `host:port`; its acknowledgement task reports to `reports`.
    pub fn new(
        addr: Arc<str>,
        sender_base: u64,
        interval: Duration,
        reports: mpsc::UnboundedSender<AckReport>,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Destination, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("forward address {addr:?}: {e}"))?;
        let endpoint = match tls {
            Some(files) => {
                let host = addr.rsplit_once(':').map_or(&*addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let config = crate::tls::client_config(files, host).map_err(|e| e.to_string())?;
                endpoint
                    .tls_config(config)
                    .map_err(|e| format!("forward_tls for {addr:?}: {e}"))?
            }
            None => endpoint,
        };
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(1).min(interval))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let client = ForwardClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let sender = xxhash_rust::xxh3::xxh3_64_with_seed(addr.as_bytes(), sender_base).max(1);
        let (want, want_rx) = watch::channel(None);
        let wait = (interval * 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let poller = tokio::spawn(poll(addr.clone(), client.clone(), sender, want_rx, reports, wait));
        Ok(Destination {
            addr,
            client,
            sender,
            next_seq: 1,
            queue: VecDeque::new(),
            down: false,
            confirmed: false,
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
            incarnation: 0,
            want,
            poller,
            legacy: Arc::default(),
        })
    }

    /// Queues a new batch (numbered after every earlier one).
    pub fn push(&mut self, metrics: Vec<Bytes>, hashes: Vec<u64>, born: Instant, settlement: Option<u64>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Batch {
            seq,
            metrics: Arc::new(metrics),
            hashes: Arc::new(hashes),
            state: State::ToSend,
            born,
            settlement,
        });
    }

    /// True when it has batches to send and is not waiting out a backoff.
    pub fn due(&self, now: Instant) -> bool {
        (!self.down || now >= self.retry_at) && self.queue.iter().any(|b| b.state == State::ToSend)
    }

    /// The sending of every batch to send, oldest first, stopping at the first failure; each result with the
    /// batch's number. Runs without `self`, so destinations are sent to concurrently.
    pub fn send_all(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Vec<(u64, Result<proto::SendMetricsResponse, Failure>)>> {
        let batches: Vec<(u64, Arc<Vec<Bytes>>)> = self
            .queue
            .iter()
            .filter(|b| b.state == State::ToSend)
            .map(|b| (b.seq, b.metrics.clone()))
            .collect();
        let mut client = self.client.clone();
        let sender = self.sender;
        let legacy = self.legacy.clone();
        async move {
            let mut out = Vec::with_capacity(batches.len());
            for (seq, metrics) in batches {
                let left = deadline.saturating_duration_since(Instant::now());
                let result = if left.is_zero() {
                    Err(Failure::Timeout)
                } else {
                    send_one(&mut client, sender, seq, metrics, left, &legacy).await
                };
                let failed = result.is_err();
                out.push((seq, result));
                if failed {
                    break;
                }
            }
            out
        }
    }

    /// It answered as `incarnation`: what another incarnation merged and had not acknowledged is gone with it,
    /// so it is to be sent again. Returns how many batches that is.
    pub fn answered_as(&mut self, incarnation: u64) -> u64 {
        let mut resent = 0;
        if self.incarnation != 0 && incarnation != self.incarnation {
            for b in self.queue.iter_mut() {
                if matches!(b.state, State::Merged(i) if i != incarnation) {
                    b.state = State::ToSend;
                    resent += 1;
                }
            }
        }
        self.incarnation = incarnation;
        resent
    }

    /// It answered: up again, backoff reset.
    pub fn answered(&mut self) {
        self.down = false;
        self.confirmed = true;
        self.backoff = FIRST_BACKOFF;
    }

    /// It did not answer: down, retried after a backoff that doubles.
    pub fn failed(&mut self) {
        self.down = true;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Tells the acknowledgement task what to ask: wait for the oldest merged batch, or probe while down (or
    /// until it first answers).
    pub fn update_want(&self) {
        let oldest_merged = self
            .queue
            .iter()
            .filter(|b| matches!(b.state, State::Merged(i) if i == self.incarnation))
            .map(|b| b.seq)
            .min();
        let want = match oldest_merged {
            Some(seq) => Some(Want {
                after: seq - 1,
                wait: !self.down,
                incarnation: self.incarnation,
            }),
            None if self.down || !self.confirmed => Some(Want {
                after: u64::MAX,
                wait: false,
                incarnation: 0,
            }),
            None => None,
        };
        self.want.send_if_modified(|w| {
            let changed = *w != want;
            *w = want;
            changed
        });
    }
}

/// Cuts a batch into messages of at most [`MESSAGE_BYTES`].
fn messages(metrics: &[Bytes]) -> Vec<RawBatch> {
    let mut out = Vec::new();
    let mut current = RawBatch::default();
    let mut bytes = 0;
    for m in metrics {
        if bytes + m.len() > MESSAGE_BYTES && !current.metrics.is_empty() {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += m.len() + 8;
        current.metrics.push(m.clone());
    }
    if !current.metrics.is_empty() {
        out.push(current);
    }
    out
}

fn batch_request<T>(stream: T, sender: u64, seq: u64) -> tonic::Request<T> {
    let mut request = tonic::Request::new(stream);
    if let Ok(v) = format!("{sender:016x}-{seq}").parse() {
        request.metadata_mut().insert(BATCH_ID_HEADER, v);
    }
    request
}

async fn send_one(
    client: &mut ForwardClient<Channel>,
    sender: u64,
    seq: u64,
    metrics: Arc<Vec<Bytes>>,
    left: Duration,
    legacy: &AtomicBool,
) -> Result<proto::SendMetricsResponse, Failure> {
    let sent = async {
        if !legacy.load(Ordering::Relaxed) {
            let stream = tokio_stream::iter(messages(&metrics));
            match client.send_metric_batches(batch_request(stream, sender, seq)).await {
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    // A receiver older than batches: one metric per message from now on.
                    legacy.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let decoded: Vec<proto::Metric> = metrics
            .iter()
            .filter_map(|m| prost::Message::decode(m.clone()).ok())
            .collect();
        client
            .send_metrics(batch_request(tokio_stream::iter(decoded), sender, seq))
            .await
    };
    match tokio::time::timeout(left, sent).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(match status.code() {
            // The receiver refuses this batch as it is: retrying cannot help, and it would hold newer ones.
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted | tonic::Code::Unimplemented => {
                Failure::Refused
            }
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Failure::Timeout,
            // Unavailable (no connection, or the receiver is stopping and refused the stream) and the rest:
            // nothing was merged.
            _ => Failure::Unreachable,
        }),
        Err(_) => Err(Failure::Timeout),
    }
}

/// The acknowledgement task of one destination: asks what `want` says, reports each answer (or its absence).
async fn poll(
    addr: Arc<str>,
    mut client: ForwardClient<Channel>,
    sender: u64,
    mut want: watch::Receiver<Option<Want>>,
    reports: mpsc::UnboundedSender<AckReport>,
    wait: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(w) = *want.borrow_and_update() else {
            if want.changed().await.is_err() {
                return;
            }
            continue;
        };
        let request = AcknowledgeRequest {
            sender,
            after_seq: w.after,
            wait_ms: if w.wait { wait.as_millis() as u32 } else { 0 },
            incarnation: w.incarnation,
        };
        let answer = match tokio::time::timeout(wait + Duration::from_secs(5), client.acknowledge(request)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Some((r.incarnation, r.flushed_seq))
            }
            _ => None,
        };
        let ok = answer.is_some();
        if reports
            .send(AckReport {
                addr: addr.clone(),
                answer,
            })
            .is_err()
        {
            return;
        }
        if ok && w.wait {
            backoff = FIRST_BACKOFF;
            continue;
        }
        // A probe, or no answer: ask again after a pause, or as soon as there is something new to ask.
        let pause = if ok { FIRST_BACKOFF } else { backoff };
        if !ok {
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = FIRST_BACKOFF;
        }
        if let Ok(Err(_)) = tokio::time::timeout(pause, want.changed()).await {
            return;
        }
    }
}
