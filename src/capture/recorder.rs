//! [`Capture`]: the recording side, shared by the worker threads (which call [`Capture::record`]) and the HTTP
//! handler (which calls [`Capture::start`] and streams what comes back).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc as chunks;

use super::{CaptureError, Writer};

/// Records queued between the workers and the writer thread, at most.
const QUEUE_RECORDS: usize = 16_384;
/// Payload bytes queued, at most: beyond, records are dropped (and counted).
const QUEUE_BYTES: u64 = 64 << 20;
/// Chunks of the file waiting for the HTTP answer, at most.
const CHUNKS: usize = 16;
/// Uncompressed bytes after which a chunk is compressed and handed on.
const CHUNK_BYTES: usize = 256 << 10;
/// How often the writer hands on what it has, checks the client is still there and the deadline.
const TICK: Duration = Duration::from_millis(200);
/// How long past the deadline a client that stopped reading may hold the writer thread.
const STALL: Duration = Duration::from_secs(60);

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureEnd {
    /// Its duration passed.
    Duration,
    /// Its compressed output reached `max_bytes`.
    MaxBytes,
    /// The receiver of its chunks was dropped (the HTTP client went away).
    ClientGone,
    /// The client stopped reading, for longer than a minute past the duration.
    Stalled,
    /// Encoding failed (logged).
    Error,
}

impl CaptureEnd {
    const ALL: [CaptureEnd; 5] = [
        CaptureEnd::Duration,
        CaptureEnd::MaxBytes,
        CaptureEnd::ClientGone,
        CaptureEnd::Stalled,
        CaptureEnd::Error,
    ];
}

impl fmt::Display for CaptureEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureEnd::Duration => "its duration passed",
            CaptureEnd::MaxBytes => "it reached max_bytes",
            CaptureEnd::ClientGone => "the client went away",
            CaptureEnd::Stalled => "the client stopped reading",
            CaptureEnd::Error => "of an error",
        })
    }
}

/// What the workers read, recorded while a capture runs. Shared as `Arc<Capture>`; one capture at a time.
pub struct Capture {
    listeners: Arc<[String]>,
    state: Arc<State>,
}

struct State {
    /// A capture is recording: the one thing [`Capture::record`] reads when none is.
    active: AtomicBool,
    /// A capture is under way (recording, or its writer thread finishing).
    busy: AtomicBool,
    queue: RwLock<Option<SyncSender<Item>>>,
    queued_bytes: AtomicU64,
    /// Records of the current or last capture: written, dropped (queue full).
    records: AtomicU64,
    dropped: AtomicU64,
    /// How the last capture ended: 1 + its index in [`CaptureEnd::ALL`], 0 for none yet.
    last_end: AtomicU8,
}

struct Item {
    listener: usize,
    received_ns: u64,
    data: Vec<u8>,
}

impl Capture {
    /// A capture point for these listeners (`record`'s `listener` is an index into them).
    pub fn new(listener_names: Vec<String>) -> Capture {
        Capture {
            listeners: listener_names.into(),
            state: Arc::new(State {
                active: AtomicBool::new(false),
                busy: AtomicBool::new(false),
                queue: RwLock::new(None),
                queued_bytes: AtomicU64::new(0),
                records: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                last_end: AtomicU8::new(0),
            }),
        }
    }

    /// Records one datagram or batch read from `listener`: nothing but one relaxed load when no capture runs;
    /// while one runs, a copy queued without blocking (dropped and counted when the queue is full).
    #[inline]
    pub fn record(&self, listener: usize, data: &[u8]) {
        if self.state.active.load(Ordering::Relaxed) {
            self.state.record(listener, data);
        }
    }

    /// Starts a capture of `duration` (at most `max_bytes` of compressed output): the chunks of the file come
    /// through the receiver, which ends with the capture. It ends at the duration, at `max_bytes`, or when the
    /// receiver is dropped. [`CaptureError::Busy`] when one is under way.
    pub fn start(&self, duration: Duration, max_bytes: u64) -> Result<chunks::Receiver<Bytes>, CaptureError> {
        let bad = |name: &str, value: String, reason: &str| CaptureError::Parameter {
            name: name.to_string(),
            value,
            reason: reason.to_string(),
        };
        if duration.is_zero() {
            return Err(bad("duration", format!("{duration:?}"), "a capture needs a duration"));
        }
        let deadline = Instant::now()
            .checked_add(duration)
            .ok_or_else(|| bad("duration", format!("{duration:?}"), "too long"))?;
        if max_bytes == 0 {
            return Err(bad("max_bytes", "0".into(), "a capture needs at least one byte"));
        }
        let state = &self.state;
        if state
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(CaptureError::Busy);
        }
        let writer = match Writer::new(Vec::new()) {
            Ok(w) => w,
            Err(e) => {
                state.busy.store(false, Ordering::Release);
                return Err(e);
            }
        };
        for counter in [&state.queued_bytes, &state.records, &state.dropped] {
            counter.store(0, Ordering::Relaxed);
        }
        let (tx, items) = mpsc::sync_channel(QUEUE_RECORDS);
        let (out, rx) = chunks::channel(CHUNKS);
        *state.queue.write().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        state.active.store(true, Ordering::Release);
        let session = Session {
            state: state.clone(),
            listeners: self.listeners.clone(),
            items,
            out,
            writer,
            deadline,
            max_bytes,
            sent: 0,
            pending: 0,
            last_flush: Instant::now(),
        };
        let spawned = std::thread::Builder::new()
            .name("harrier-capture".into())
            .spawn(move || session.run());
        if let Err(e) = spawned {
            state.stop_recording();
            state.busy.store(false, Ordering::Release);
            return Err(CaptureError::Spawn(e));
        }
        Ok(rx)
    }

    /// A capture is recording (`record` queues what it is given).
    pub fn recording(&self) -> bool {
        self.state.active.load(Ordering::Acquire)
    }

    /// A capture is under way: recording, or finishing its file (a `start` now is [`CaptureError::Busy`]).
    pub fn running(&self) -> bool {
        self.state.busy.load(Ordering::Acquire)
    }

    /// Records written by the current or last capture.
    pub fn records(&self) -> u64 {
        self.state.records.load(Ordering::Relaxed)
    }

    /// Records dropped by the current or last capture (its queue was full).
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// How the last capture ended (None before the first ended).
    pub fn last_end(&self) -> Option<CaptureEnd> {
        let i = self.state.last_end.load(Ordering::Acquire);
        CaptureEnd::ALL.get(usize::from(i).checked_sub(1)?).copied()
    }

    /// The listeners' names, by index.
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }
}

impl State {
    #[cold]
    #[inline(never)]
    fn record(&self, listener: usize, data: &[u8]) {
        let len = data.len() as u64;
        let undo = || {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        };
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            undo();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let queue = match self.queue.try_read() {
            Ok(q) => q,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // The capture is starting or stopping: this one is not waited for.
            Err(TryLockError::WouldBlock) => {
                undo();
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(tx) = queue.as_ref() else {
            // The capture ended since the check.
            undo();
            return;
        };
        let received_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let item = Item {
            listener,
            received_ns,
            data: data.to_vec(),
        };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                undo();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => undo(),
        }
    }

    /// `record` is back to its one load; what was queued stays in the queue for the writer.
    fn stop_recording(&self) {
        self.active.store(false, Ordering::Release);
        // Taking the write lock waits for any `record` holding the read lock: after it, nothing more is queued.
        *self.queue.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// One capture, on its writer thread.
struct Session {
    state: Arc<State>,
    listeners: Arc<[String]>,
    items: Receiver<Item>,
    out: chunks::Sender<Bytes>,
    writer: Writer<Vec<u8>>,
    deadline: Instant,
    max_bytes: u64,
    /// Compressed bytes handed on.
    sent: u64,
    /// Uncompressed bytes written since the last chunk.
    pending: usize,
    last_flush: Instant,
}

impl Session {
    fn run(mut self) {
        let end = self.record_until_end();
        self.state.stop_recording();
        let state = self.state.clone();
        // The receiver's end comes after the capture is over: a client may start the next one at once.
        let out = self.out.clone();
        let (end, sent) = self.finish(end);
        tracing::info!(
            "capture ended ({end}): {} records, {sent} bytes compressed, {} dropped (queue full)",
            state.records.load(Ordering::Relaxed),
            state.dropped.load(Ordering::Relaxed)
        );
        let index = CaptureEnd::ALL.iter().position(|e| *e == end).unwrap_or(0);
        state.last_end.store(index as u8 + 1, Ordering::Release);
        state.busy.store(false, Ordering::Release);
        drop(out);
    }

    /// Encodes what comes until the capture ends; the header goes out at once.
    fn record_until_end(&mut self) -> CaptureEnd {
        if let Err(end) = self.push_chunk() {
            return end;
        }
        loop {
            if self.out.is_closed() {
                return CaptureEnd::ClientGone;
            }
            let now = Instant::now();
            if now >= self.deadline {
                return CaptureEnd::Duration;
            }
            match self.items.recv_timeout(TICK.min(self.deadline - now)) {
                Ok(item) => {
                    if let Err(e) = self.encode(item) {
                        tracing::warn!("capture stopped: {e}");
                        return CaptureEnd::Error;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The state holds the sender while recording: not reached.
                Err(RecvTimeoutError::Disconnected) => return CaptureEnd::Error,
            }
            if self.pending >= CHUNK_BYTES || (self.pending > 0 && self.last_flush.elapsed() >= TICK) {
                if let Err(end) = self.push_chunk() {
                    return end;
                }
                if self.sent >= self.max_bytes {
                    return CaptureEnd::MaxBytes;
                }
            }
        }
    }

    fn encode(&mut self, item: Item) -> Result<(), CaptureError> {
        self.state
            .queued_bytes
            .fetch_sub(item.data.len() as u64, Ordering::Relaxed);
        let name = self.listeners.get(item.listener).map_or("unknown", String::as_str);
        self.writer.write(item.received_ns, name, &item.data)?;
        self.pending += item.data.len();
        self.state.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Compresses what was written and hands it on.
    fn push_chunk(&mut self) -> Result<(), CaptureEnd> {
        if let Err(e) = self.writer.flush() {
            tracing::warn!("capture stopped: {e}");
            return Err(CaptureEnd::Error);
        }
        self.pending = 0;
        self.last_flush = Instant::now();
        let chunk = std::mem::take(self.writer.get_mut());
        self.sent += chunk.len() as u64;
        deliver(&self.out, &self.state, self.deadline, chunk)
    }

    /// After recording stopped: what was queued before is written (unless the capture ended by size or for the
    /// client), and the zstd frame is ended. Returns how it ended and the compressed bytes handed on.
    fn finish(mut self, end: CaptureEnd) -> (CaptureEnd, u64) {
        loop {
            match self.items.try_recv() {
                Ok(item) if end == CaptureEnd::Duration => {
                    if let Err(e) = self.encode(item) {
                        tracing::warn!("capture stopped: {e}");
                        return (CaptureEnd::Error, self.sent);
                    }
                }
                Ok(_) => {
                    self.state.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if matches!(end, CaptureEnd::ClientGone | CaptureEnd::Stalled | CaptureEnd::Error) {
            return (end, self.sent);
        }
        let rest = match self.writer.finish() {
            Ok(rest) => rest,
            Err(e) => {
                tracing::warn!("capture: {e}");
                return (CaptureEnd::Error, self.sent);
            }
        };
        let sent = self.sent + rest.len() as u64;
        match deliver(&self.out, &self.state, self.deadline, rest) {
            Ok(()) => (end, sent),
            Err(e) => (e, sent),
        }
    }
}

/// Hands `chunk` to the receiver, waiting while it is full: past the deadline, recording stops meanwhile (the
/// workers are not kept copying for a slow client), and after [`STALL`] more the capture gives up.
fn deliver(out: &chunks::Sender<Bytes>, state: &State, deadline: Instant, chunk: Vec<u8>) -> Result<(), CaptureEnd> {
    if chunk.is_empty() {
        return Ok(());
    }
    let mut chunk = Bytes::from(chunk);
    loop {
        match out.try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(chunks::error::TrySendError::Closed(_)) => return Err(CaptureEnd::ClientGone),
            Err(chunks::error::TrySendError::Full(back)) => chunk = back,
        }
        let now = Instant::now();
        if now >= deadline {
            state.stop_recording();
            if now >= deadline + STALL {
                return Err(CaptureEnd::Stalled);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
