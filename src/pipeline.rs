//! The hot path between sockets and shards.
//!
//! A datagram listener's socket is either read by a worker itself (`num_readers: 0`, the default: the worker
//! sleeps in `poll(2)` on its sockets and an eventfd that wakes it for messages, and under light traffic naps a
//! millisecond between reads so that one wake-up reads many datagrams), or by reader threads that fill
//! pooled [`Batch`]es with raw, newline-separated packets and hand each batch to a worker (round robin), as stream
//! listeners always do. Each worker thread owns one shard's [`ShardState`] and parses what it receives: a line whose
//! series belongs to its own shard is aggregated on the spot (parsed once, hashed once, no copy); a line owned by
//! another shard is copied into that worker's outgoing buffer and handed over once per batch, so every series is
//! aggregated by exactly one thread and no lock is shared on the hot path. With one worker nothing is ever handed
//! over. A line whose text (name and everything after the value) the worker's shard already knows is aggregated from
//! its value alone, without the full parse. Buffers travel back to their pools, so steady state allocates nothing
//! per line.
//!
//! Raw batches are bounded per worker (a full worker makes its listener wait, and the kernel's socket buffer
//! absorbs the burst). Hand-overs between workers never wait, so that two workers can never wait on each other:
//! they are bounded in bytes per receiving worker ([`HANDOVER_MAX_BYTES`], over a second of a million lines per
//! second), and what would exceed the bound is dropped and counted (`harrier.lines.dropped{reason:worker_behind}`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use xxhash_rust::xxh3::xxh3_64;

use crate::aggregate::key::text_hash;
use crate::aggregate::shard::SeriesLimit;
use crate::aggregate::{Dropped, Entry, ExtendTags, Interval, KeyView, ShardState};
use crate::listen::Source;
use crate::protocol::{self, LineView, Message, ParseError};
use crate::telemetry::{unix_now, LimitedLog, Telemetry};

/// Bytes of lines gathered before a batch is handed on.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Raw batches queued per worker before listeners wait.
const QUEUE_DEPTH: usize = 256;
/// Lines of a packet looked up together (see `Worker::text_lines`): enough loads in flight to hide a cache miss,
/// few enough that their entries stay in the L1 cache until they are used.
const GROUP: usize = 16;
/// A line of a group: its text, and, if it has a metric's shape, its cut and text hash.
type Staged<'a> = (&'a str, Option<(LineView<'a>, u128)>);

/// Below this many series in a shard, lines are aggregated one by one: the series stay in the cache, and staging a
/// group pays only once they do not (50,000 mixed series: 400 → 221 ns per line, `benches/e2e.sh mixed50k`).
const GROUP_FROM_SERIES: usize = 8192;
/// Buffers kept in a pool; more are freed.
const POOL_MAX: usize = 4096;
/// Bytes of lines handed over to one worker and not yet processed, beyond which further hand-overs to it are
/// dropped and counted: a worker that stops keeping up must not grow memory without bound.
pub const HANDOVER_MAX_BYTES: usize = 64 * 1024 * 1024;

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
    /// Validated lines owned by this worker's shard, handed over by another worker.
    Lines(Vec<u8>),
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
    /// Bytes of handed-over lines queued and not yet processed.
    handover_bytes: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

impl ShardSender {
    /// Sends a control or hand-over message (never waits). False once the worker is gone.
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

    /// Hands lines over to this worker, unless that would put more than [`HANDOVER_MAX_BYTES`] in its queue: then
    /// the lines come back, for the caller to count and drop.
    fn send_lines(&self, lines: Vec<u8>) -> Result<(), Vec<u8>> {
        let len = lines.len();
        if self.handover_bytes.fetch_add(len, Ordering::AcqRel) + len > HANDOVER_MAX_BYTES {
            self.handover_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(lines);
        }
        // If the worker is gone (shutdown), nothing takes these bytes off the count; it no longer matters.
        self.send(ShardMsg::Lines(lines));
        Ok(())
    }

    fn send_raw(&self, batch: Batch) -> bool {
        self.raw_queued.fetch_add(1, Ordering::AcqRel);
        self.send(ShardMsg::Raw(batch))
    }
}

/// Where listeners send batches: round robin over the workers.
#[derive(Debug, Clone)]
pub struct Ingest {
    workers: Vec<ShardSender>,
    next: Arc<AtomicUsize>,
    pub pool: BufferPool,
}

impl Ingest {
    fn pick(&self) -> &ShardSender {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
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

static BAD_LINE_LOG: LimitedLog = LimitedLog::new("rejected line");
static SERIES_LIMIT_LOG: LimitedLog = LimitedLog::new("series limit");
static BEHIND_LOG: LimitedLog = LimitedLog::new("worker behind");

impl Pipeline {
    /// Starts `workers` worker threads, each owning one shard.
    pub fn start(workers: usize, extend: Arc<ExtendTags>, telemetry: Arc<Telemetry>, series_limit: usize) -> Pipeline {
        let limit = (series_limit > 0).then(|| Arc::new(SeriesLimit::new(series_limit)));
        let mut receivers = Vec::with_capacity(workers);
        let mut shards = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel();
            let sender = ShardSender {
                tx,
                raw_queued: Arc::default(),
                handover_bytes: Arc::default(),
                waker: Arc::new(Waker::new().expect("creating a worker's eventfd")),
            };
            receivers.push((
                rx,
                sender.raw_queued.clone(),
                sender.handover_bytes.clone(),
                sender.waker.clone(),
            ));
            shards.push(sender);
        }
        let batch_pool = BufferPool::default();
        let line_pool = BufferPool::default();
        let mut threads = Vec::with_capacity(workers);
        for (i, (rx, raw_queued, handover_bytes, waker)) in receivers.into_iter().enumerate() {
            let worker = Worker {
                index: i,
                waker,
                sources: Vec::new(),
                shards: shards.clone(),
                raw_queued,
                handover_bytes,
                extend: extend.clone(),
                telemetry: telemetry.clone(),
                batch_pool: batch_pool.clone(),
                line_pool: line_pool.clone(),
                state: ShardState::with_limit(limit.clone()),
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
                pool: batch_pool,
            },
            shards,
            threads,
        }
    }

    /// Waits until every worker has processed what was queued before this call, hand-overs included. Listeners
    /// must have stopped.
    pub async fn sync(&self) {
        // Two rounds: the first drains raw batches (which may hand lines over); the second drains the hand-overs.
        for _ in 0..2 {
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

    /// The shard that owns a hash.
    #[inline]
    pub fn shard_of(hash: u64, shards: usize) -> usize {
        // The key hash is already mixed; the high bits are independent of the map's low bits.
        ((hash >> 32) as usize) % shards
    }
}

/// The nice value of the runtime's threads (flushes, sink encoding, forwarding, imports, HTTP): below the
/// workers', so that on a busy core the work of a flush waits for ingest rather than ingest for the flush. A
/// worker left without the CPU for longer than its socket buffer lasts (2 MiB: about 75 ms at 1M lines/s) loses
/// lines; a flush that waits only finishes later.
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

/// How long a worker that has just emptied its sockets of light traffic waits before it reads them again, rather
/// than sleeping in `poll` until the next datagram: one wake-up per nap instead of one per burst of datagrams.
/// With the worker's timer slack ([`NAP_SLACK_NS`]) the kernel may stretch a nap to the next timer event it
/// already has, which spares it reprogramming a timer per nap (costly in a virtual machine).
const NAP: Duration = Duration::from_millis(1);
/// Timer slack of worker threads, in nanoseconds (the kernel's default is 50 µs).
const NAP_SLACK_NS: libc::c_ulong = 2_000_000;
/// Traffic counts as light (and the worker naps) while fewer datagrams than this were read since the last sleep:
/// what gathers in the socket during a nap then stays far below what its receive buffer holds (a 2 MiB buffer
/// holds several thousand small datagrams).
const NAP_MAX_DATAGRAMS: usize = 512;

struct Worker {
    index: usize,
    waker: Arc<Waker>,
    /// Datagram sockets this worker reads itself.
    sources: Vec<Source>,
    shards: Vec<ShardSender>,
    raw_queued: Arc<AtomicUsize>,
    handover_bytes: Arc<AtomicUsize>,
    extend: Arc<ExtendTags>,
    telemetry: Arc<Telemetry>,
    batch_pool: BufferPool,
    line_pool: BufferPool,
    state: ShardState,
}

impl Worker {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<ShardMsg>) {
        batch_scheduling();
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with integer arguments only; it changes only this thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, NAP_SLACK_NS, 0, 0, 0)
        };
        let n = self.shards.len();
        let mut out: Vec<Vec<u8>> = (0..n).map(|_| Vec::new()).collect();
        let mut polls: Vec<libc::pollfd> = Vec::new();
        // Datagrams read since the last sleep.
        let mut taken = 0usize;
        loop {
            // Messages first: flushes and syncs are never kept waiting behind socket traffic.
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg, &mut out) {
                            return;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if self.sources.is_empty() {
                match rx.blocking_recv() {
                    Some(msg) => {
                        if !self.handle(msg, &mut out) {
                            return;
                        }
                        continue;
                    }
                    None => return,
                }
            }
            // A socket that filled a whole `recvmmsg` batch may hold more: read again (after the messages). One that
            // did not is most likely empty now.
            let (n, more) = self.read_sources(&mut out);
            taken += n;
            if more {
                continue;
            }
            if taken > 0 {
                // Light traffic is flowing: nap a moment and let the next datagrams gather in the socket, so that
                // one wake-up reads many (a wake-up costs about as much as a few datagrams). Heavier traffic
                // already brings many per wake-up, and is not left to pile up in the socket.
                let light = taken < NAP_MAX_DATAGRAMS;
                taken = 0;
                if light {
                    std::thread::sleep(NAP);
                    continue;
                }
            }
            // Nothing came since the last read: sleep until a socket is readable or a message comes (or 100 ms pass,
            // to notice a stop).
            self.waker.park();
            if !rx.is_empty() {
                self.waker.unpark(false);
                continue;
            }
            polls.clear();
            polls.push(libc::pollfd {
                fd: self.waker.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            polls.extend(self.sources.iter().map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `polls` is a live array of `polls.len()` initialised pollfds; the descriptors stay open for
            // the call (owned by `self`).
            unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 100) };
            self.waker.unpark(polls[0].revents & libc::POLLIN != 0);
        }
    }

    /// Reads each own socket once (up to a `recvmmsg` batch) and aggregates what came. Sockets of a stopping
    /// server are drained and dropped. Returns the datagrams read, and whether a socket filled a whole batch (and
    /// may hold more).
    fn read_sources(&mut self, out: &mut [Vec<u8>]) -> (usize, bool) {
        if self.sources.iter().any(|s| s.stopping()) {
            self.drain_stopped(out);
        }
        let now = unix_now();
        let (mut read, mut more) = (0, false);
        let mut sources = std::mem::take(&mut self.sources);
        for source in &mut sources {
            let mut lines = 0;
            let n = source.read(|datagram| lines += self.lines(datagram, now, out));
            if n > 0 {
                source.stats.lines.fetch_add(lines, Ordering::Relaxed);
                read += n;
                more |= n == Source::BATCH;
            }
        }
        self.sources = sources;
        self.hand_over(out);
        (read, more)
    }

    /// At stop: reads what is still queued in the sockets of stopped listeners, for at most a second (senders that
    /// keep sending must not hold the shutdown), then closes them.
    fn drain_stopped(&mut self, out: &mut [Vec<u8>]) {
        let until = std::time::Instant::now() + Duration::from_secs(1);
        let mut sources = std::mem::take(&mut self.sources);
        let now = unix_now();
        for source in sources.iter_mut().filter(|s| s.stopping()) {
            while std::time::Instant::now() < until {
                let mut lines = 0;
                let n = source.read(|datagram| lines += self.lines(datagram, now, out));
                source.stats.lines.fetch_add(lines, Ordering::Relaxed);
                if n == 0 {
                    break;
                }
            }
        }
        sources.retain(|s| !s.stopping());
        self.sources = sources;
        self.hand_over(out);
    }

    /// Handles one message; false to exit.
    fn handle(&mut self, msg: ShardMsg, out: &mut [Vec<u8>]) -> bool {
        {
            match msg {
                ShardMsg::Raw(batch) => {
                    self.raw(&batch, out);
                    self.batch_pool.put(batch.data);
                    self.raw_queued.fetch_sub(1, Ordering::AcqRel);
                }
                ShardMsg::Lines(buf) => {
                    self.handover_bytes.fetch_sub(buf.len(), Ordering::AcqRel);
                    let now = unix_now();
                    for line in protocol::lines(&buf) {
                        // Lines handed over were validated by the worker that received them.
                        let Ok(line) = std::str::from_utf8(line) else {
                            continue;
                        };
                        if self.add_known(line) {
                            continue;
                        }
                        if let Ok(msg) = protocol::parse_str(line) {
                            self.add(msg, None, now);
                        }
                    }
                    self.line_pool.put(buf);
                }
                ShardMsg::Flush(reply) => {
                    let _ = reply.send(self.state.take_interval());
                    let (names, lines) = self.state.take_limited();
                    if lines > 0 {
                        let top: Vec<String> = names.iter().take(5).map(|(n, k)| format!("{n} ({k})")).collect();
                        SERIES_LIMIT_LOG.log(|| {
                            format!(
                                "series_limit reached: {lines} lines of new series dropped in the last interval; \
                                 most from: {}",
                                top.join(", ")
                            )
                        });
                    }
                }
                ShardMsg::Import(entries) => self.state.import(entries),
                ShardMsg::Sync(ack) => {
                    if self.sources.iter().any(|s| s.stopping()) {
                        self.drain_stopped(out);
                    }
                    let _ = ack.send(());
                }
                ShardMsg::Attach(source) => self.sources.push(*source),
                ShardMsg::Stop => return false,
            }
        }
        true
    }

    /// Parses a raw batch: own lines are aggregated now, others are handed to their shard's worker.
    fn raw(&mut self, batch: &Batch, out: &mut [Vec<u8>]) {
        let lines = self.lines(&batch.data, unix_now(), out);
        if let Some(stats) = self.telemetry.listeners.get(batch.listener) {
            stats.lines.fetch_add(lines, Ordering::Relaxed);
            if batch.packets > 0 {
                stats.packets.fetch_add(batch.packets, Ordering::Relaxed);
                // Each packet was followed by one separator newline.
                stats.bytes.fetch_add(
                    (batch.data.len() as u64).saturating_sub(batch.packets),
                    Ordering::Relaxed,
                );
            }
        }
        self.hand_over(out);
    }

    /// Sends the lines gathered for other shards.
    fn hand_over(&mut self, out: &mut [Vec<u8>]) {
        for (shard, buf) in out.iter_mut().enumerate() {
            if !buf.is_empty() {
                let full = std::mem::take(buf);
                if let Err(dropped) = self.shards[shard].send_lines(full) {
                    let lines = memchr::memchr_iter(b'\n', &dropped).count() as u64;
                    self.telemetry
                        .count("harrier.lines.dropped", &["reason:worker_behind"], lines);
                    BEHIND_LOG.log(|| {
                        format!(
                            "worker {shard} is behind by more than {HANDOVER_MAX_BYTES} bytes of lines handed \
                             over to it; {lines} lines dropped"
                        )
                    });
                    self.line_pool.put(dropped);
                }
            }
        }
    }

    /// Parses newline-separated lines: own lines are aggregated now, others are gathered in `out` for their
    /// shard's worker. Returns the number of lines. Valid UTF-8 data (the rule) is validated once as a whole;
    /// otherwise line by line, so that only the bad lines are rejected.
    #[inline]
    fn lines(&mut self, data: &[u8], now: i64, out: &mut [Vec<u8>]) -> u64 {
        let mut lines = 0u64;
        match std::str::from_utf8(data) {
            Ok(text) => lines += self.text_lines(text, now, out),
            Err(_) => {
                for line in protocol::lines(data) {
                    lines += 1;
                    match std::str::from_utf8(line) {
                        Ok(line) => self.line(line, now, out),
                        Err(_) => self.reject(line, &ParseError::InvalidUtf8),
                    }
                }
            }
        }
        lines
    }

    /// The lines of a valid UTF-8 packet, [`GROUP`] at a time: each line is cut at its value and its text hashed
    /// (starting the load of its index entry), then looked up (starting the load of its series' state), then
    /// aggregated in order. A line whose text this shard knows (the usual case: a series written the same way as
    /// before) is aggregated from its value alone; any other is parsed in full. The loads of a group overlap instead
    /// of following each other, which is what a line costs once the series outgrow the cache.
    fn text_lines(&mut self, text: &str, now: i64, out: &mut [Vec<u8>]) -> u64 {
        let mut count = 0u64;
        if self.state.len() < GROUP_FROM_SERIES {
            // Few series: they stay in the cache, and the staging of a group would only add work.
            for line in protocol::str_lines(text) {
                count += 1;
                self.line(line, now, out);
            }
            return count;
        }
        let mut it = protocol::str_lines(text);
        let mut group: [Option<Staged<'_>>; GROUP] = [None; GROUP];
        loop {
            let mut n = 0;
            for line in it.by_ref().take(GROUP) {
                let cut = protocol::split_metric(line).map(|v| {
                    let th = text_hash(v.name, v.suffix);
                    self.state.prefetch_text(th);
                    (v, th)
                });
                group[n] = Some((line, cut));
                n += 1;
            }
            if n == 0 {
                return count;
            }
            count += n as u64;
            let mut found = [usize::MAX; GROUP];
            for (slot, g) in found.iter_mut().zip(&group[..n]) {
                if let Some((_, Some((_, th)))) = g {
                    if let Some(i) = self.state.find_known(*th) {
                        *slot = i;
                    }
                }
            }
            for &i in found[..n].iter().filter(|&&i| i != usize::MAX) {
                self.state.prefetch_value(i);
            }
            for (&i, g) in found.iter().zip(&group[..n]) {
                let Some((line, cut)) = *g else { continue };
                if let (true, Some((view, _))) = (i != usize::MAX, cut) {
                    if let Some(result) = self.state.add_known_at(i, &view) {
                        self.count_dropped(result);
                        continue;
                    }
                }
                self.parse_line(line, now, out);
            }
        }
    }

    /// One line. A line whose text this shard knows (the usual case: a series written the same way as before) is
    /// aggregated from its value alone; any other is parsed in full, then aggregated or handed over.
    #[inline]
    fn line(&mut self, line: &str, now: i64, out: &mut [Vec<u8>]) {
        if self.add_known(line) {
            return;
        }
        self.parse_line(line, now, out);
    }

    /// A line parsed in full, then aggregated or handed over to the shard that owns its series.
    fn parse_line(&mut self, line: &str, now: i64, out: &mut [Vec<u8>]) {
        let msg = match protocol::parse_str(line) {
            Ok(msg) => msg,
            Err(e) => return self.reject(line.as_bytes(), &e),
        };
        let n = self.shards.len();
        if n == 1 {
            // Nothing to route: the key is worked out only if the shard does not know the line's text.
            self.add(msg, None, now);
            return;
        }
        let (hash, view) = match &msg {
            Message::Metric(m) => {
                let view = KeyView::new(m.name, m.kind, m.tags, &self.extend);
                (view.hash, Some(view))
            }
            Message::ServiceCheck(c) => (xxh3_64(c.name.as_bytes()), None),
            Message::Event(e) => (xxh3_64(e.raw_title.as_bytes()), None),
        };
        let shard = Pipeline::shard_of(hash, n);
        if shard == self.index {
            self.add(msg, view.as_ref(), now);
        } else {
            let buf = &mut out[shard];
            if buf.capacity() == 0 {
                *buf = self.line_pool.get();
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
    }

    /// Aggregates a line from its value alone if this shard knows its text; false if the line needs the full parse.
    #[inline]
    fn add_known(&mut self, line: &str) -> bool {
        let Some(result) = protocol::split_metric(line).and_then(|view| self.state.add_known_line(&view)) else {
            return false;
        };
        self.count_dropped(result);
        true
    }

    fn reject(&self, line: &[u8], e: &ParseError<'_>) {
        self.telemetry.reject(e);
        BAD_LINE_LOG.log(|| format!("{e}: {:?}", String::from_utf8_lossy(line)));
    }

    #[inline]
    fn add(&mut self, msg: Message<'_>, view: Option<&KeyView<'_>>, now: i64) {
        let result = match msg {
            Message::Metric(m) => self.state.add_metric(&m, view, &self.extend),
            other => self.state.add_message(other, &self.extend, now),
        };
        self.count_dropped(result);
    }

    fn count_dropped(&self, result: Result<(), Dropped>) {
        let reason = match result {
            Err(Dropped::TimestampOnUnsupportedType) => "reason:timestamp_on_unsupported_type",
            Err(Dropped::TooManyTimestamped) => "reason:too_many_timestamped",
            Err(Dropped::SeriesLimit) => {
                self.telemetry
                    .count("harrier.series.dropped", &["reason:series_limit"], 1);
                return;
            }
            _ => return,
        };
        self.telemetry.count("harrier.lines.dropped", &[reason], 1);
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
