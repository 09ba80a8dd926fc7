//! The hot path between sockets and shards.
//!
//! Listeners fill pooled [`Batch`]es with raw, newline-separated packets and hand each batch to a parse worker
//! (round robin). A parse worker validates every line, counts rejects by reason, and copies each good line into
//! the outgoing buffer of the shard that owns its series (by key hash). Each shard thread owns its
//! [`ShardState`]: it aggregates lines, and on a flush command swaps its state for an empty one and hands the old
//! one to the flusher. Buffers travel back to their pools, so steady state allocates nothing per line.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::xxh3_64;

use crate::aggregate::{Dropped, Entry, ExtendTags, KeyView, ShardState};
use crate::protocol::{self, Message};
use crate::telemetry::{unix_now, LimitedLog, Telemetry};

/// Bytes of lines gathered before a batch is handed on.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Batches queued per parse worker and per shard before senders wait.
const QUEUE_DEPTH: usize = 1024;
/// Buffers kept in a pool; more are freed.
const POOL_MAX: usize = 4096;

/// Newline-separated packets from one listener.
#[derive(Debug, Default)]
pub struct Batch {
    pub listener: usize,
    pub data: Vec<u8>,
}

impl Batch {
    /// Appends one packet (datagram, frame or line) and the newline that separates it from the next.
    #[inline]
    pub fn push_packet(&mut self, packet: &[u8]) {
        self.data.extend_from_slice(packet);
        self.data.push(b'\n');
    }
}

/// A pool of reusable byte buffers.
#[derive(Debug, Clone, Default)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    pub fn get(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + 8192))
    }

    pub fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_MAX {
            free.push(buf);
        }
    }
}

/// Where listeners send batches: round robin over the parse workers.
#[derive(Debug, Clone)]
pub struct Ingest {
    workers: Vec<mpsc::Sender<Batch>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    pub pool: BufferPool,
}

impl Ingest {
    fn pick(&self) -> &mpsc::Sender<Batch> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }

    /// A new empty batch for `listener`, from the pool.
    pub fn batch(&self, listener: usize) -> Batch {
        Batch {
            listener,
            data: self.pool.get(),
        }
    }

    /// Hands a batch on from a plain thread, waiting if the workers are behind. False once the pipeline is gone.
    pub fn send_blocking(&self, batch: Batch) -> bool {
        if batch.data.is_empty() {
            self.pool.put(batch.data);
            return true;
        }
        self.pick().blocking_send(batch).is_ok()
    }

    /// Hands a batch on from an async task.
    pub async fn send(&self, batch: Batch) -> bool {
        if batch.data.is_empty() {
            self.pool.put(batch.data);
            return true;
        }
        self.pick().send(batch).await.is_ok()
    }
}

/// Asks every shard for its interval and returns the states. Lines a shard received before the request are in
/// its state (a shard's queue is first in, first out).
pub async fn flush_shards(shards: &[mpsc::Sender<ShardMsg>]) -> Vec<ShardState> {
    let mut replies = Vec::with_capacity(shards.len());
    for shard in shards {
        let (tx, rx) = oneshot::channel();
        if shard.send(ShardMsg::Flush(tx)).await.is_ok() {
            replies.push(rx);
        }
    }
    let mut states = Vec::with_capacity(replies.len());
    for rx in replies {
        if let Ok(state) = rx.await {
            states.push(state);
        }
    }
    states
}

/// A message to a shard thread.
pub enum ShardMsg {
    /// Validated lines, newline-separated.
    Lines(Vec<u8>),
    /// Swap the state for an empty one and send the old one back.
    Flush(oneshot::Sender<ShardState>),
    /// Merge entries imported from another instance (global mode).
    Import(Vec<Entry>),
}

/// Handles to the running parse workers and shards.
pub struct Pipeline {
    pub ingest: Ingest,
    pub shards: Vec<mpsc::Sender<ShardMsg>>,
    parse_threads: Vec<JoinHandle<()>>,
    shard_threads: Vec<JoinHandle<()>>,
}

static BAD_LINE_LOG: LimitedLog = LimitedLog::new("rejected line");

impl Pipeline {
    /// Starts `workers` parse threads and `workers` shard threads.
    pub fn start(workers: usize, extend: Arc<ExtendTags>, telemetry: Arc<Telemetry>) -> Pipeline {
        let line_pool = BufferPool::default();
        let mut shards = Vec::with_capacity(workers);
        let mut shard_threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            shards.push(tx);
            let extend = extend.clone();
            let telemetry = telemetry.clone();
            let pool = line_pool.clone();
            shard_threads.push(
                std::thread::Builder::new()
                    .name(format!("harrier-shard-{i}"))
                    .spawn(move || run_shard(rx, extend, telemetry, pool))
                    .expect("spawning a shard thread"),
            );
        }
        let batch_pool = BufferPool::default();
        let mut workers_tx = Vec::with_capacity(workers);
        let mut parse_threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            workers_tx.push(tx);
            let ctx = ParseWorker {
                shards: shards.clone(),
                extend: extend.clone(),
                telemetry: telemetry.clone(),
                batch_pool: batch_pool.clone(),
                line_pool: line_pool.clone(),
            };
            parse_threads.push(
                std::thread::Builder::new()
                    .name(format!("harrier-parse-{i}"))
                    .spawn(move || ctx.run(rx))
                    .expect("spawning a parse thread"),
            );
        }
        Pipeline {
            ingest: Ingest {
                workers: workers_tx,
                next: Arc::default(),
                pool: batch_pool,
            },
            shards,
            parse_threads,
            shard_threads,
        }
    }

    /// Closes the ingest side and waits until every batch already handed in has reached its shard. The shards
    /// keep running (for the final flush). Listeners must have dropped their [`Ingest`] clones.
    pub fn drain_parsers(&mut self) {
        let Ingest { workers, .. } = std::mem::replace(
            &mut self.ingest,
            Ingest {
                workers: Vec::new(),
                next: Arc::default(),
                pool: BufferPool::default(),
            },
        );
        drop(workers);
        for t in self.parse_threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the shard threads (after the final flush).
    pub fn stop_shards(mut self) {
        self.shards.clear();
        for t in self.shard_threads.drain(..) {
            let _ = t.join();
        }
    }

    /// The shard that owns a hash.
    pub fn shard_of(hash: u64, shards: usize) -> usize {
        // The key hash is already mixed; the high bits are independent of the map's low bits.
        ((hash >> 32) as usize) % shards
    }
}

struct ParseWorker {
    shards: Vec<mpsc::Sender<ShardMsg>>,
    extend: Arc<ExtendTags>,
    telemetry: Arc<Telemetry>,
    batch_pool: BufferPool,
    line_pool: BufferPool,
}

impl ParseWorker {
    fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let n = self.shards.len();
        let mut out: Vec<Vec<u8>> = (0..n).map(|_| self.line_pool.get()).collect();
        while let Some(batch) = rx.blocking_recv() {
            let mut lines = 0u64;
            for line in protocol::lines(&batch.data) {
                lines += 1;
                let hash = match protocol::parse_line(line) {
                    Ok(Message::Metric(m)) => KeyView::new(m.name, m.kind, m.tags, &self.extend).hash,
                    Ok(Message::ServiceCheck(c)) => xxh3_64(c.name.as_bytes()),
                    Ok(Message::Event(e)) => xxh3_64(e.raw_title.as_bytes()),
                    Err(e) => {
                        self.telemetry.reject(&e);
                        BAD_LINE_LOG.log(|| format!("{e}: {:?}", String::from_utf8_lossy(line)));
                        continue;
                    }
                };
                let shard = Pipeline::shard_of(hash, n);
                let buf = &mut out[shard];
                buf.extend_from_slice(line);
                buf.push(b'\n');
                if buf.len() >= BATCH_BYTES {
                    let full = std::mem::replace(buf, self.line_pool.get());
                    if self.shards[shard].blocking_send(ShardMsg::Lines(full)).is_err() {
                        return;
                    }
                }
            }
            if let Some(stats) = self.telemetry.listeners.get(batch.listener) {
                stats.lines.fetch_add(lines, Ordering::Relaxed);
            }
            self.batch_pool.put(batch.data);
            // Hand on what this batch produced, so a quiet listener's lines are not held back.
            for (shard, buf) in out.iter_mut().enumerate() {
                if !buf.is_empty() {
                    let full = std::mem::replace(buf, self.line_pool.get());
                    if self.shards[shard].blocking_send(ShardMsg::Lines(full)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn run_shard(mut rx: mpsc::Receiver<ShardMsg>, extend: Arc<ExtendTags>, telemetry: Arc<Telemetry>, pool: BufferPool) {
    let mut state = ShardState::default();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ShardMsg::Lines(buf) => {
                let now = unix_now();
                for line in protocol::lines(&buf) {
                    if let Err(Dropped::TimestampOnUnsupportedType) = state.add_line(line, &extend, now) {
                        telemetry.dropped_timestamped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                pool.put(buf);
            }
            ShardMsg::Flush(reply) => {
                let _ = reply.send(std::mem::take(&mut state));
            }
            ShardMsg::Import(entries) => state.import(entries),
        }
    }
}
