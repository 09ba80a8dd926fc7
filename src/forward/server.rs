//! The receiving side of forwarding: the gRPC import server of a global or a proxy. Each stream is read to its
//! end; a global validates it and merges it into the shards that own its series (the same shards that aggregate
//! DogStatsD received directly); a proxy hands it to its router. `Acknowledge` answers from [`Acks`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::ack::{parse_batch_id, Acks};
use super::client::Forwarder;
use super::decode;
use super::proto::forward_server::Forward;
use super::proto::{AcknowledgeRequest, AcknowledgeResponse, Metric, SendMetricsResponse};
use crate::aggregate::Entry;
use crate::pipeline::{Pipeline, ShardMsg, ShardSender};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("import");

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: u64 = 5_000_000;

/// Import streams merged at the same time; more wait.
const CONCURRENT_IMPORTS: usize = 64;
/// The longest an `Acknowledge` call waits.
const MAX_ACK_WAIT: Duration = Duration::from_secs(30);

/// Where imported metrics go.
pub enum ImportTarget {
    /// A global: merged into the shards that own their series, and safe once flushed to every sink.
    Shards(Vec<ShardSender>),
    /// A proxy: routed at once to the owning globals, and safe once every one of them acknowledged.
    Router(Arc<Forwarder>),
}

/// Merges (or routes) imported metrics.
pub struct ImportService {
    pub target: ImportTarget,
    pub telemetry: Arc<Telemetry>,
    /// Raised at shutdown: streams still open are refused (the sender keeps their data).
    pub stop: watch::Receiver<bool>,
    pub acks: Arc<Acks>,
    pub permits: Semaphore,
}

impl ImportService {
    pub fn new(target: ImportTarget, acks: Arc<Acks>, telemetry: Arc<Telemetry>, stop: watch::Receiver<bool>) -> Self {
        ImportService {
            target,
            telemetry,
            stop,
            acks,
            permits: Semaphore::new(CONCURRENT_IMPORTS),
        }
    }

    fn response(&self, accepted: u64, rejected: u64, duplicate: bool) -> Response<SendMetricsResponse> {
        Response::new(SendMetricsResponse {
            accepted,
            rejected,
            incarnation: self.acks.incarnation,
            duplicate,
        })
    }

    /// A global's import: validated, then merged all or nothing, and a given batch only once.
    async fn merge(
        &self,
        shards: &[ShardSender],
        batch: Option<(u64, u64)>,
        stream: &mut Streaming<Metric>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        let mut stop = self.stop.clone();
        let n = shards.len();
        let mut per_shard: Vec<Vec<Entry>> = (0..n).map(|_| Vec::new()).collect();
        let (mut accepted, mut rejected) = (0u64, 0u64);
        loop {
            let next = tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
                m = stream.message() => m?,
            };
            let Some(m) = next else { break };
            if accepted + rejected >= MAX_METRICS_PER_STREAM {
                return Err(Status::resource_exhausted("too many metrics in one stream"));
            }
            let name = m.name.clone();
            match decode(m) {
                Ok(entry) => {
                    accepted += 1;
                    per_shard[Pipeline::shard_of(entry.hash, n)].push(entry);
                }
                Err(e) => {
                    rejected += 1;
                    self.telemetry
                        .count("harrier.import.errors", &[&format!("reason:{}", e.reason())], 1);
                    LOG.log(|| format!("refused an imported metric {name:?}: {e}"));
                }
            }
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
            self.telemetry.count("harrier.import.duplicates", &[], 1);
            return Ok(self.response(accepted, rejected, true));
        }
        self.telemetry.count("harrier.import.metrics", &[], accepted);
        Ok(self.response(accepted, rejected, false))
    }

    /// A proxy's import: read whole, then handed to the router at once; safe when every owner acknowledged it.
    async fn route(
        &self,
        router: &Arc<Forwarder>,
        batch: Option<(u64, u64)>,
        stream: &mut Streaming<Metric>,
    ) -> Result<Response<SendMetricsResponse>, Status> {
        let mut stop = self.stop.clone();
        let mut metrics = Vec::new();
        loop {
            let next = tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
                m = stream.message() => m?,
            };
            let Some(m) = next else { break };
            if metrics.len() as u64 >= MAX_METRICS_PER_STREAM {
                return Err(Status::resource_exhausted("too many metrics in one stream"));
            }
            metrics.push(m);
        }
        let accepted = metrics.len() as u64;
        let settle: Option<Box<dyn FnOnce() + Send>> = match batch {
            Some((sender, seq)) => {
                if !self.acks.admit(sender, seq) {
                    self.telemetry.count("harrier.import.duplicates", &[], 1);
                    return Ok(self.response(accepted, 0, true));
                }
                let acks = self.acks.clone();
                Some(Box::new(move || acks.settle(sender, seq)))
            }
            None => None,
        };
        if !router.submit(metrics, settle) {
            return Err(Status::unavailable("the proxy's routing queue is full"));
        }
        self.telemetry.count("harrier.import.metrics", &[], accepted);
        Ok(self.response(accepted, 0, false))
    }
}

#[tonic::async_trait]
impl Forward for ImportService {
    async fn send_metrics(&self, request: Request<Streaming<Metric>>) -> Result<Response<SendMetricsResponse>, Status> {
        let batch = request
            .metadata()
            .get(super::client::BATCH_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_batch_id);
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let _permit = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
            p = self.permits.acquire() => p.map_err(|_| Status::unavailable("shutting down"))?,
        };
        match &self.target {
            ImportTarget::Shards(shards) => self.merge(shards, batch, &mut stream).await,
            ImportTarget::Router(router) => self.route(router, batch, &mut stream).await,
        }
    }

    async fn acknowledge(&self, request: Request<AcknowledgeRequest>) -> Result<Response<AcknowledgeResponse>, Status> {
        let r = request.into_inner();
        let flushed_seq = if r.incarnation != self.acks.incarnation {
            // A sender that does not know this incarnation learns of it at once.
            self.acks.watermark(r.sender)
        } else {
            let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_ACK_WAIT);
            self.acks.wait(r.sender, r.after_seq, wait).await
        };
        Ok(Response::new(AcknowledgeResponse {
            incarnation: self.acks.incarnation,
            flushed_seq,
        }))
    }
}
