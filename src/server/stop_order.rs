//! The order in which a running server stops, each step a method: stop reading, let every batch already read
//! reach its shard, the final flush, answer the senders waiting on imports and stop the import server, stop the
//! workers and the HTTP server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::flush::Flusher;
use crate::forward::ack::Acks;
use crate::listen::Running;
use crate::pipeline::{Ingest, Pipeline};

/// Everything a stop touches, owned until its step.
pub(super) struct StopOrder {
    /// Read by the reader threads and workers: set, they stop reading.
    pub stop_flag: Arc<AtomicBool>,
    pub running: Vec<Running>,
    /// The `prometheus_scrape` tasks, which end at the stop signal (a read in progress is abandoned).
    pub scrapes: Vec<JoinHandle<()>>,
    /// The OTLP servers, which refuse requests from the stop signal on and end once those under way are answered.
    pub otlp: Vec<JoinHandle<()>>,
    /// The server's own handle on the workers' inboxes (dropped once the listeners are done).
    pub ingest: Ingest,
    pub pipeline: Pipeline,
    pub flush_task: JoinHandle<()>,
    pub flusher: Arc<Flusher>,
    pub flush_on_shutdown: bool,
    pub interval: Duration,
    pub acks: Arc<Acks>,
    /// Stops the gRPC server, which outlives the final flush so that senders hear that it is flushed.
    pub grpc_stop: watch::Sender<bool>,
    pub grpc_task: Option<JoinHandle<()>>,
    pub http_task: Option<JoinHandle<()>>,
}

impl StopOrder {
    /// Waits for the stop signal, then stops everything in order.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        crate::shutdown::stopped(&mut stop).await;
        stop_reading(&self.stop_flag, self.running).await;
        for task in self.scrapes.into_iter().chain(self.otlp) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        // 2. Every batch read reaches its shard; the periodic flusher ends.
        drop(self.ingest);
        self.pipeline.sync().await;
        let _ = self.flush_task.await;
        if self.flush_on_shutdown {
            final_flush(&self.flusher, self.interval).await;
        }
        drop(self.flusher);
        // 4. Senders waiting to hear what is flushed get their answer; then the import server stops (imports were
        // refused since the stop began).
        self.acks.close();
        let _ = self.grpc_stop.send(true);
        if let Some(t) = self.grpc_task {
            let _ = tokio::time::timeout(self.interval.max(Duration::from_secs(1)), t).await;
        }
        // 5. The workers, then the HTTP server.
        let pipeline = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || pipeline.stop()).await;
        if let Some(t) = self.http_task {
            let _ = t.await;
        }
    }
}

/// Step 1: stop reading; readers and connections hand on what they already read.
async fn stop_reading(flag: &AtomicBool, running: Vec<Running>) {
    flag.store(true, Ordering::Relaxed);
    for r in running {
        match r {
            Running::Threads(threads) => {
                let _ = tokio::task::spawn_blocking(move || {
                    for t in threads {
                        let _ = t.join();
                    }
                })
                .await;
            }
            Running::Attached => {}
            Running::Task(task) => {
                // Connections drain for at most a second; this bound is a second line of defence.
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
    }
}

/// Step 3, the final flush, bounded by one interval and the sinks' request timeout (a request under way is not cut; what
/// fails goes to the retry queue, and to `retry_queue_dir` when set).
async fn final_flush(flusher: &Flusher, interval: Duration) {
    let mut tasks = JoinSet::new();
    flusher.flush_once(&mut tasks).await;
    let slack = flusher
        .sinks
        .iter()
        .map(|s| s.request_timeout())
        .max()
        .unwrap_or_default();
    let _ = tokio::time::timeout(interval + slack, async { while tasks.join_next().await.is_some() {} }).await;
}
