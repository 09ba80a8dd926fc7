//! The hot path between sockets and shards.
//!
//! A datagram listener's socket is either read by a worker itself (`num_readers: 0`, the default: the worker
//! sleeps in `poll(2)` on its sockets and an eventfd that wakes it for messages, and under light traffic naps a
//! millisecond between reads so that one wake-up reads many datagrams), or by reader threads that fill
//! pooled [`Batch`]es with raw, newline-separated packets and hand them to a worker, as stream listeners always do.
//! Each worker thread owns one [`ShardState`] and aggregates every line it receives, whatever its series: nothing
//! is handed from one worker to another per line, and no lock is shared on the hot path (gostatsd's model). A
//! series sent to two workers (two sockets, connections or readers) has a partial state in each; the flush merges
//! the workers' intervals into one ([`crate::aggregate::merge`]) before reporting. Each reader thread and each
//! stream connection sends all its batches to one worker (its lane), so one sender's lines stay in order. A line
//! whose text (name and everything after the value) the worker's shard already knows is aggregated from its value
//! alone, without the full parse. Buffers travel back to their pool, so steady state allocates nothing per line.
//!
//! Raw batches are bounded per worker (a full worker makes its listener wait, and the kernel's socket buffer
//! absorbs the burst). Lines a worker drops (bad lines by parse error, `series_limit`, timestamp rules) are counted
//! in the worker's own counters and logged by its own rate limiter; the counts join the telemetry once per flush.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::aggregate::admit::Admission;
use crate::aggregate::key::text_hash;
use crate::aggregate::{Dropped, EmitConfig, Entry, ExtendTags, Interval, ShardState, Taking};
use crate::capture::Capture;
use crate::protocol::{self, LineView, Message, ParseError};
use crate::telemetry::{unix_now, Telemetry};

/// Bytes of lines gathered before a batch is handed on.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Raw batches queued per worker before listeners wait.
const QUEUE_DEPTH: usize = 256;
/// Lines of a packet looked up together (see `Ingester::text_lines`): a whole packet of the usual sizes (up to 128
/// lines), so that the loads started for its last lines have the other lines' work to arrive in. Measured on
/// `benches/e2e.sh mixed50k10s` (100 lines per packet), alternating builds: 16 lines 134–152 ns per line, 32
/// lines 123–130, 64 lines 118–127, 128 lines 112–120.
const GROUP: usize = 128;
/// A line of a group: its text, and, if it has a metric's shape, its cut and text hash.
type Staged<'a> = (&'a str, Option<(LineView<'a>, u128)>);

/// Below this many series in a shard, lines are aggregated one by one: the series stay in the cache, and staging a
/// group pays only once they do not (50,000 mixed series: 400 → 221 ns per line, `benches/e2e.sh mixed50k`).
const GROUP_FROM_SERIES: usize = 8192;
/// Buffers kept in a pool; more are freed.
const POOL_MAX: usize = 4096;

/// Newline-separated packets from one listener.
#[derive(Debug, Default)]
pub struct Batch {
    pub listener: usize,
    pub data: Vec<u8>,
    /// Packets in `data` not yet counted in the listener's stats (counted once per batch, not per packet).
    pub packets: u64,
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

/// A message to a worker.
pub enum ShardMsg {
    /// Raw packets from a listener.
    Raw(Batch),
    /// End the interval and send what it aggregated back.
    Flush(oneshot::Sender<Interval>),
    /// Merge entries imported from another instance (global mode).
    Import(Vec<Entry>),
    /// Answer once everything queued before this message has been processed (and, once the server is stopping,
    /// the worker's own sockets have been drained).
    Sync(oneshot::Sender<()>),
    /// A datagram socket for this worker to read itself (`num_readers: 0`).
    Attach(Box<Source>),
    /// Exit the thread.
    Stop,
}

/// Wakes a worker that sleeps in `poll(2)` on its own sockets: an eventfd, written only while the worker says it
/// is parked, so that a busy worker costs its senders no system call.
#[derive(Debug)]
struct Waker {
    parked: AtomicBool,
    fd: OwnedFd,
}

impl Waker {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative result is an error, checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Waker {
            parked: AtomicBool::new(false),
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Called by a sender after its message is queued.
    fn wake(&self) {
        // Pairs with the fence in `park`: either the worker sees the message, or this sees `parked`.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live local buffer to a descriptor owned by `self`.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    fn park(&self) {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Back from sleep: clears `parked`, and the pending wake-up if there is one (`woken`).
    fn unpark(&self, woken: bool) {
        self.parked.store(false, Ordering::Relaxed);
        if !woken {
            return;
        }
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from a descriptor owned by `self`.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// A worker's inbox.
#[derive(Debug, Clone)]
pub struct ShardSender {
    tx: mpsc::UnboundedSender<ShardMsg>,
    /// Raw batches queued and not yet processed.
    raw_queued: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

impl ShardSender {
    /// Sends a control message (never waits). False once the worker is gone.
    pub fn send(&self, msg: ShardMsg) -> bool {
        let sent = self.tx.send(msg).is_ok();
        self.waker.wake();
        sent
    }

    fn has_room(&self) -> bool {
        self.raw_queued.load(Ordering::Acquire) < QUEUE_DEPTH
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn send_raw(&self, batch: Batch) -> bool {
        self.raw_queued.fetch_add(1, Ordering::AcqRel);
        self.send(ShardMsg::Raw(batch))
    }
}

/// Where listeners send batches: each handle sends to one worker, its lane (see [`Ingest::lane`]).
#[derive(Debug, Clone)]
pub struct Ingest {
    workers: Vec<ShardSender>,
    /// Lanes given out so far.
    next: Arc<AtomicUsize>,
    /// The worker this handle sends to (modulo the number of workers).
    lane: usize,
    pub pool: BufferPool,
}

impl Ingest {
    /// A handle on the next lane: a reader thread or a stream connection takes one, so that its batches all go to
    /// one worker (its lines stay in order, and a gauge's last value is the last one sent), while readers and
    /// connections spread over the workers round robin.
    pub fn lane(&self) -> Ingest {
        Ingest {
            lane: self.next.fetch_add(1, Ordering::Relaxed),
            ..self.clone()
        }
    }

    fn pick(&self) -> &ShardSender {
        &self.workers[self.lane % self.workers.len()]
    }

    /// Gives a datagram socket to worker `i` (modulo the number of workers) to read itself.
    pub fn attach(&self, i: usize, source: Source) -> bool {
        self.workers[i % self.workers.len()].send(ShardMsg::Attach(Box::new(source)))
    }

    /// A new empty batch for `listener`, from the pool.
    pub fn batch(&self, listener: usize) -> Batch {
        Batch {
            listener,
            data: self.pool.get(),
            packets: 0,
        }
    }

    /// The worker for a batch, or `None` for an empty batch (whose buffer goes back to the pool).
    fn route(&self, batch: &mut Batch) -> Option<&ShardSender> {
        if batch.data.is_empty() {
            self.pool.put(std::mem::take(&mut batch.data));
            return None;
        }
        Some(self.pick())
    }

    /// Hands a batch on from a plain thread, waiting while the chosen worker is full. False once the pipeline
    /// is gone.
    pub fn send_blocking(&self, mut batch: Batch) -> bool {
        let Some(worker) = self.route(&mut batch) else {
            return true;
        };
        while !worker.has_room() {
            if worker.is_closed() {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        worker.send_raw(batch)
    }

    /// Hands a batch on from an async task.
    pub async fn send(&self, mut batch: Batch) -> bool {
        let Some(worker) = self.route(&mut batch) else {
            return true;
        };
        while !worker.has_room() {
            if worker.is_closed() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        worker.send_raw(batch)
    }
}

/// Asks every shard for its interval and returns the states. Lines a worker had received before the request are
/// in its state (a worker's inbox is first in, first out).
pub async fn flush_shards(shards: &[ShardSender]) -> Vec<Interval> {
    await_flush(request_flush(shards)).await
}

/// Asks every shard to end its interval (the messages are queued behind everything sent to it before).
pub fn request_flush(shards: &[ShardSender]) -> Vec<oneshot::Receiver<Interval>> {
    let mut replies = Vec::with_capacity(shards.len());
    for shard in shards {
        let (tx, rx) = oneshot::channel();
        if shard.send(ShardMsg::Flush(tx)) {
            replies.push(rx);
        }
    }
    replies
}

/// The intervals the shards send back.
pub async fn await_flush(replies: Vec<oneshot::Receiver<Interval>>) -> Vec<Interval> {
    let mut states = Vec::with_capacity(replies.len());
    for rx in replies {
        if let Ok(state) = rx.await {
            states.push(state);
        }
    }
    states
}

/// Handles to the running workers.
pub struct Pipeline {
    pub ingest: Ingest,
    pub shards: Vec<ShardSender>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts `workers` worker threads, each owning one shard; `emit` is how the flush reports the shards'
    /// intervals (with one worker, the shard reduces what is reported here to its values when the interval is
    /// taken; with several, the intervals are merged first, so they keep their whole state).
    pub fn start(
        workers: usize,
        extend: Arc<ExtendTags>,
        telemetry: Arc<Telemetry>,
        admission: Admission,
        emit: Arc<EmitConfig>,
        capture: Arc<Capture>,
    ) -> Pipeline {
        let mut receivers = Vec::with_capacity(workers);
        let mut shards = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            let sender = ShardSender {
                tx,
                raw_queued: Arc::default(),
                waker: Arc::new(Waker::new().expect("creating a worker's eventfd")),
            };
            receivers.push((rx, sender.raw_queued.clone(), sender.waker.clone()));
            shards.push(sender);
        }
        let batch_pool = BufferPool::default();
        let mut threads = Vec::with_capacity(workers);
        for (i, (rx, raw_queued, waker)) in receivers.into_iter().enumerate() {
            let mut state = ShardState::with_limits(admission.limits.clone())
                .controlled(admission.controls.clone(), admission.min_rate)
                .sketching(emit.sketches);
            if workers == 1 {
                // Nothing to merge at the flush: reduce what this instance reports as the interval is taken.
                state = state.summarizing(emit.clone());
            }
            let worker = Worker {
                waker,
                sources: Vec::new(),
                raw_queued,
                telemetry: telemetry.clone(),
                capture: capture.clone(),
                batch_pool: batch_pool.clone(),
                core: Ingester::new(state, extend.clone()),
                taking: None,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("harrier-worker-{i}"))
                    .spawn(move || worker.run(rx))
                    .expect("spawning a worker thread"),
            );
        }
        Pipeline {
            ingest: Ingest {
                workers: shards.clone(),
                next: Arc::default(),
                lane: 0,
                pool: batch_pool,
            },
            shards,
            threads,
        }
    }

    /// Waits until every worker has processed what was queued before this call. Listeners must have stopped.
    pub async fn sync(&self) {
        let mut acks = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(ShardMsg::Sync(tx)) {
                acks.push(rx);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
    }

    /// Stops the workers (after the final flush).
    pub fn stop(mut self) {
        for shard in &self.shards {
            shard.send(ShardMsg::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// The shard that imports of a series go to (global mode), by its key's hash.
    #[inline]
    pub fn shard_of(hash: u64, shards: usize) -> usize {
        // The key hash is already mixed; the high bits are independent of the map's low bits.
        ((hash >> 32) as usize) % shards
    }
}

/// The nice value of the runtime's threads (flushes, sink encoding, forwarding, imports, HTTP): below the
/// workers', so that on a busy core the work of a flush waits for ingest rather than ingest for the flush. A
/// worker left without the CPU for longer than its socket buffer lasts (16 MiB by default: about 300 ms at 1M
/// lines/s) loses lines; a flush that waits only finishes later.
pub const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`] (Linux: the nice value is per thread). Called at
/// the start of every runtime thread; failure leaves the priority as it was.
pub fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with integer arguments only; on Linux, who = 0 with PRIO_PROCESS names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE);
    }
}

/// Asks the kernel to schedule the calling thread as a throughput thread (`SCHED_BATCH`): when it wakes, it does
/// not preempt the thread running on its core, but waits for it to block or for the next tick. Readers and workers
/// sharing a core then hand over whole batches instead of switching at every burst of datagrams; on idle cores it
/// changes nothing. Needs no privilege; if refused, the thread keeps the default policy.
pub fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0 is the calling thread.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

mod ingester;
pub mod source;
mod worker;
pub use ingester::{DropCounts, Ingester};
pub use source::Source;
use worker::Worker;

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
