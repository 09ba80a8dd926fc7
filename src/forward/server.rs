//! The receiving side of forwarding at a global: the gRPC import server. Each stream is read to its end,
//! validated, and merged into the shards that own its series (the same shards that aggregate
//! DogStatsD received directly). `Acknowledge` answers from [`Acks`]. A proxy's receiver is [`super::proxy`].

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::ack::{batch_id, Acks};
use super::decode;
use super::proto::forward_server::Forward;
use super::proto::{AcknowledgeRequest, AcknowledgeResponse, Metric, MetricBatch, SendMetricsResponse};
use crate::aggregate::Entry;
use crate::pipeline::{Pipeline, ShardMsg, ShardSender};
use crate::telemetry::catalog::{IMPORT_BATCHES_REFUSED, IMPORT_DUPLICATES, IMPORT_ERRORS, IMPORT_METRICS};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("import");

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: u64 = 5_000_000;
/// Most encoded bytes one stream may carry (each message is also bounded by the server's decoding limit): what a
/// stream holds is kept until its end, so a peer cannot make the global hold more than this per stream.
const MAX_BYTES_PER_STREAM: usize = 256 * 1024 * 1024;

/// Import streams merged at the same time; more wait.
const CONCURRENT_IMPORTS: usize = 64;

/// Merges imported metrics into the shards that own their series.
pub struct ImportService {
    pub shards: Vec<ShardSender>,
    pub telemetry: Arc<Telemetry>,
    /// Raised at shutdown: streams still open are refused (the sender keeps their data).
    pub stop: watch::Receiver<bool>,
    pub acks: Arc<Acks>,
    pub permits: Semaphore,
}

impl ImportService {
    pub fn new(
        shards: Vec<ShardSender>,
        acks: Arc<Acks>,
        telemetry: Arc<Telemetry>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ImportService {
            shards,
            telemetry,
            stop,
            acks,
            permits: Semaphore::new(CONCURRENT_IMPORTS),
        }
    }

    fn refuse_batch(&self, reason: &str) {
        self.telemetry
            .add(&IMPORT_BATCHES_REFUSED, &[&format!("reason:{reason}")], 1);
    }

    fn response(&self, accepted: u64, rejected: u64, duplicate: bool) -> Response<SendMetricsResponse> {
        Response::new(SendMetricsResponse {
            accepted,
            rejected,
            incarnation: self.acks.incarnation,
            duplicate,
        })
    }

    /// A global's import: read whole and validated, then merged all or nothing, and a given batch only once.
    async fn import<T: IntoMetrics + Send + 'static>(
        &self,
        request: Request<Streaming<T>>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        let batch = batch_id(request.metadata());
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let _permit = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
            p = self.permits.acquire() => p.map_err(|_| Status::unavailable("shutting down"))?,
        };
        let shards = &self.shards;
        let n = shards.len();
        let mut per_shard: Vec<Vec<Entry>> = (0..n).map(|_| Vec::new()).collect();
        let (mut accepted, mut rejected) = (0u64, 0u64);
        let mut bytes = 0usize;
        // A stream (one batch of a sender) with any malformed metric is refused whole: nothing of a peer that
        // sends garbage is merged. Each bad metric is counted by reason, the batch once by its first reason.
        let mut refused: Option<&'static str> = None;
        loop {
            let next = tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
                m = stream.message() => m?,
            };
            let Some(item) = next else { break };
            for m in item.into_metrics() {
                if accepted + rejected >= MAX_METRICS_PER_STREAM {
                    self.refuse_batch("too_many_metrics");
                    return Err(Status::resource_exhausted("too many metrics in one stream"));
                }
                bytes += prost::Message::encoded_len(&m);
                if bytes > MAX_BYTES_PER_STREAM {
                    self.refuse_batch("too_many_bytes");
                    return Err(Status::resource_exhausted("too many bytes in one stream"));
                }
                let name = m.name.clone();
                match decode(m) {
                    Ok(entry) if refused.is_none() => {
                        accepted += 1;
                        per_shard[Pipeline::shard_of(entry.hash, n)].push(entry);
                    }
                    // The batch is refused already: the rest is only checked and counted.
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        rejected += 1;
                        self.telemetry
                            .add(&IMPORT_ERRORS, &[&format!("reason:{}", e.reason())], 1);
                        LOG.log(|| format!("refused an imported metric {name:?} (and its whole batch): {e}"));
                        if refused.is_none() {
                            refused = Some(e.reason());
                            per_shard.iter_mut().for_each(Vec::clear);
                        }
                    }
                }
            }
        }
        if let Some(reason) = refused {
            self.refuse_batch(reason);
            // Answered (not an error), so that the sender does not send it again: every metric counts as rejected.
            return Ok(self.response(0, accepted + rejected, false));
        }
        if *self.stop.borrow() {
            return Err(Status::unavailable("shutting down"));
        }
        let admitted = self.acks.import(batch, || {
            for (shard, entries) in per_shard.into_iter().enumerate() {
                if !entries.is_empty() {
                    shards[shard].send(ShardMsg::Import(entries));
                }
            }
        });
        if !admitted {
            self.telemetry.add(&IMPORT_DUPLICATES, &[], 1);
            return Ok(self.response(accepted, rejected, true));
        }
        self.telemetry.add(&IMPORT_METRICS, &[], accepted);
        Ok(self.response(accepted, rejected, false))
    }
}

/// What a stream carries: one metric per message, or a batch.
trait IntoMetrics {
    fn into_metrics(self) -> Vec<Metric>;
}

impl IntoMetrics for Metric {
    fn into_metrics(self) -> Vec<Metric> {
        vec![self]
    }
}

impl IntoMetrics for MetricBatch {
    fn into_metrics(self) -> Vec<Metric> {
        self.metrics
    }
}

#[tonic::async_trait]
impl Forward for ImportService {
    async fn send_metrics(&self, request: Request<Streaming<Metric>>) -> Result<Response<SendMetricsResponse>, Status> {
        self.import(request).await
    }

    async fn send_metric_batches(
        &self,
        request: Request<Streaming<MetricBatch>>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        self.import(request).await
    }

    async fn acknowledge(&self, request: Request<AcknowledgeRequest>) -> Result<Response<AcknowledgeResponse>, Status> {
        let r = request.into_inner();
        let flushed_seq = self.acks.answer(r.sender, r.after_seq, r.wait_ms, r.incarnation).await;
        Ok(Response::new(AcknowledgeResponse {
            incarnation: self.acks.incarnation,
            flushed_seq,
        }))
    }
}
