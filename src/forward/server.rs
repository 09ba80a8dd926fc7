//! The global side: the gRPC import server. Each stream is read to its end and validated; then its metrics are
//! merged into the shards that own their series (the same shards that aggregate DogStatsD received directly).

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::decode;
use super::proto::forward_server::Forward;
use super::proto::{Metric, SendMetricsResponse};
use crate::aggregate::Entry;
use crate::pipeline::{Pipeline, ShardMsg};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("import");

/// Most metrics accepted in one stream.
const MAX_METRICS_PER_STREAM: u64 = 50_000_000;

/// Merges imported metrics into the shards.
pub struct ImportService {
    pub shards: Vec<mpsc::Sender<ShardMsg>>,
    pub telemetry: Arc<Telemetry>,
}

#[tonic::async_trait]
impl Forward for ImportService {
    async fn send_metrics(&self, request: Request<Streaming<Metric>>) -> Result<Response<SendMetricsResponse>, Status> {
        let mut stream = request.into_inner();
        let n = self.shards.len();
        let mut per_shard: Vec<Vec<Entry>> = (0..n).map(|_| Vec::new()).collect();
        let (mut accepted, mut rejected) = (0u64, 0u64);
        while let Some(m) = stream.message().await? {
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
        for (shard, entries) in per_shard.into_iter().enumerate() {
            if !entries.is_empty() && self.shards[shard].send(ShardMsg::Import(entries)).await.is_err() {
                return Err(Status::unavailable("shutting down"));
            }
        }
        self.telemetry.count("harrier.import.metrics", &[], accepted);
        Ok(Response::new(SendMetricsResponse { accepted, rejected }))
    }
}
