//! The global side: the gRPC import server. Each stream is read to its end and validated; then its metrics are
//! merged into the shards that own their series (the same shards that aggregate DogStatsD received directly).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::decode;
use super::proto::forward_server::Forward;
use super::proto::{Metric, SendMetricsResponse};
use crate::aggregate::Entry;
use crate::pipeline::{Pipeline, ShardMsg, ShardSender};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("import");

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: u64 = 5_000_000;

/// Senders remembered for de-duplication; past this, the table is cleared (a retry may then merge twice).
const REMEMBERED_SENDERS: usize = 1_000_000;
/// Import streams merged at the same time; more wait.
const CONCURRENT_IMPORTS: usize = 64;

/// Merges imported metrics into the shards.
pub struct ImportService {
    pub shards: Vec<ShardSender>,
    pub telemetry: Arc<Telemetry>,
    /// Raised at shutdown: streams still open are refused (the sender keeps their data).
    pub stop: watch::Receiver<bool>,
    pub seen: Mutex<Seen>,
    pub permits: Semaphore,
}

impl ImportService {
    pub fn new(shards: Vec<ShardSender>, telemetry: Arc<Telemetry>, stop: watch::Receiver<bool>) -> Self {
        ImportService {
            shards,
            telemetry,
            stop,
            seen: Mutex::default(),
            permits: Semaphore::new(CONCURRENT_IMPORTS),
        }
    }
}

/// The last batch merged from each sender. A sender numbers its batches in order and sends them oldest first,
/// stopping at the first failure, so a batch numbered at or below the last one merged is a retry of a batch the
/// global already has.
#[derive(Default)]
pub struct Seen {
    last: HashMap<u64, u64>,
}

impl Seen {
    /// Parses `sender-seq` (both hex/decimal as the client writes them) and records it; false for a batch already
    /// merged.
    fn admit(&mut self, id: &str) -> bool {
        let Some((sender, seq)) = id.split_once('-') else {
            return true;
        };
        let (Ok(sender), Ok(seq)) = (u64::from_str_radix(sender, 16), seq.parse::<u64>()) else {
            return true;
        };
        if self.last.len() >= REMEMBERED_SENDERS && !self.last.contains_key(&sender) {
            self.last.clear();
        }
        let last = self.last.entry(sender).or_insert(0);
        if seq <= *last {
            return false;
        }
        *last = seq;
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
        let _permit = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return Err(Status::unavailable("shutting down")),
            p = self.permits.acquire() => p.map_err(|_| Status::unavailable("shutting down"))?,
        };
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
            if !seen.admit(&id) {
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
