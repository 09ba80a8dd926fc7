//! The global side: the gRPC import server. Each stream is read to its end and validated; then its metrics are
//! merged into the shards that own their series (the same shards that aggregate DogStatsD received directly).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::decode;
use super::proto::forward_server::Forward;
use super::proto::{Metric, SendMetricsResponse};
use crate::aggregate::Entry;
use crate::pipeline::{Pipeline, ShardMsg, ShardSender};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("import");

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: u64 = 50_000_000;

/// Batch identities remembered, to merge a retried batch only once.
const REMEMBERED_BATCHES: usize = 65_536;

/// Merges imported metrics into the shards.
pub struct ImportService {
    pub shards: Vec<ShardSender>,
    pub telemetry: Arc<Telemetry>,
    /// Raised at shutdown: streams still open are refused (the sender keeps their data).
    pub stop: watch::Receiver<bool>,
    pub seen: Mutex<Seen>,
}

/// Recently merged batch identities.
#[derive(Default)]
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    fn insert(&mut self, id: String) -> bool {
        if self.ids.contains(&id) {
            return false;
        }
        if self.order.len() >= REMEMBERED_BATCHES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[tonic::async_trait]
impl Forward for ImportService {
    async fn send_metrics(&self, request: Request<Streaming<Metric>>) -> Result<Response<SendMetricsResponse>, Status> {
        let batch_id = request
            .metadata()
            .get(super::client::BATCH_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let n = self.shards.len();
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
            match decode(m) {
                Ok(entry) => {
                    accepted += 1;
                    per_shard[Pipeline::shard_of(entry.hash, n)].push(entry);
                }
                Err(e) => {
                    rejected += 1;
                    self.telemetry
                        .count("harrier.import.errors", &[&format!("reason:{}", e.reason())], 1);
                    LOG.log(|| format!("refused an imported metric: {e}"));
                }
            }
        }
        // Merge all or nothing, and a given batch only once.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *self.stop.borrow() {
            return Err(Status::unavailable("shutting down"));
        }
        if let Some(id) = batch_id {
            if !seen.insert(id) {
                self.telemetry.count("harrier.import.duplicates", &[], 1);
                return Ok(Response::new(SendMetricsResponse { accepted, rejected }));
            }
        }
        for (shard, entries) in per_shard.into_iter().enumerate() {
            if !entries.is_empty() {
                self.shards[shard].send(ShardMsg::Import(entries));
            }
        }
        drop(seen);
        self.telemetry.count("harrier.import.metrics", &[], accepted);
        Ok(Response::new(SendMetricsResponse { accepted, rejected }))
    }
}
