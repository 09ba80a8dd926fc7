//! A worker thread: reads its own sockets (or takes raw batches from readers and stream connections) and hands
//! what it receives to its [`Ingester`]; see the [`pipeline`](super) documentation for the whole path.

use super::*;

/// How long a worker that has just emptied its sockets of light traffic waits before it reads them again, rather
/// than sleeping in `poll` until the next datagram: one wake-up per nap instead of one per burst of datagrams.
/// With the worker's timer slack ([`NAP_SLACK_NS`]) the kernel may stretch a nap to the next timer event it
/// already has, which spares it reprogramming a timer per nap (costly in a virtual machine).
const NAP: Duration = Duration::from_millis(1);
/// Timer slack of worker threads, in nanoseconds (the kernel's default is 50 µs).
const NAP_SLACK_NS: libc::c_ulong = 2_000_000;
/// Traffic counts as light (and the worker naps) while fewer datagrams than this were read since the last sleep:
/// what gathers in the socket during a nap then stays far below what its receive buffer holds (the default 16 MiB
/// buffer holds tens of thousands of small datagrams).
const NAP_MAX_DATAGRAMS: usize = 512;
/// Series a worker takes out of its shard per step of a flush, between two reads of its sockets: a few
/// milliseconds of work, so that the sockets are read all through the take of a large interval (a million series
/// take hundreds of milliseconds, longer than the kernel's buffer lasts at a million lines a second).
const TAKE_STEP: usize = 16_384;

pub(super) struct Worker {
    pub(super) waker: Arc<Waker>,
    /// Datagram sockets this worker reads itself.
    pub(super) sources: Vec<Source>,
    pub(super) raw_queued: Arc<AtomicUsize>,
    pub(super) telemetry: Arc<Telemetry>,
    /// `harrier capture`: what is read is copied there while a capture runs.
    pub(super) capture: Arc<Capture>,
    pub(super) batch_pool: BufferPool,
    pub(super) core: Ingester,
    /// The interval being taken out in steps, and where it goes when done.
    pub(super) taking: Option<(oneshot::Sender<Interval>, Taking)>,
}

impl Worker {
    pub(super) fn run(mut self, rx: mpsc::UnboundedReceiver<ShardMsg>) {
        self.serve(rx);
        // A stop in the middle of a take still answers the flush that asked for it.
        while self.taking.is_some() {
            self.take_step();
        }
    }

    fn serve(&mut self, mut rx: mpsc::UnboundedReceiver<ShardMsg>) {
        batch_scheduling();
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with integer arguments only; it changes only this thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, NAP_SLACK_NS, 0, 0, 0)
        };
        let mut polls: Vec<libc::pollfd> = Vec::new();
        // Datagrams read since the last sleep.
        let mut taken = 0usize;
        loop {
            // Messages first: flushes and syncs are never kept waiting behind socket traffic.
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg) {
                            return;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            if self.taking.is_some() {
                // A flush is under way: one step of it, one read of the sockets, and on, without sleeping.
                self.take_step();
                self.read_sources();
                continue;
            }
            if self.sources.is_empty() {
                match rx.blocking_recv() {
                    Some(msg) => {
                        if !self.handle(msg) {
                            return;
                        }
                        continue;
                    }
                    None => return,
                }
            }
            // A socket that filled a whole `recvmmsg` batch may hold more: read again (after the messages). One that
            // did not is most likely empty now.
            let (n, more) = self.read_sources();
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
    fn read_sources(&mut self) -> (usize, bool) {
        if self.sources.iter().any(|s| s.stopping()) {
            self.drain_stopped();
        }
        let now = unix_now();
        let (mut read, mut more) = (0, false);
        let mut sources = std::mem::take(&mut self.sources);
        for source in &mut sources {
            let mut lines = 0;
            let listener = source.listener;
            let n = source.read(|datagram| {
                self.capture.record(listener, datagram);
                lines += self.core.lines(datagram, now)
            });
            if n > 0 {
                source.stats.lines.fetch_add(lines, Ordering::Relaxed);
                read += n;
                more |= n == Source::BATCH;
            }
        }
        self.sources = sources;
        (read, more)
    }

    /// At stop: reads what is still queued in the sockets of stopped listeners, for at most a second (senders that
    /// keep sending must not hold the shutdown), then closes them.
    fn drain_stopped(&mut self) {
        let until = std::time::Instant::now() + Duration::from_secs(1);
        let mut sources = std::mem::take(&mut self.sources);
        let now = unix_now();
        for source in sources.iter_mut().filter(|s| s.stopping()) {
            while std::time::Instant::now() < until {
                let mut lines = 0;
                let n = source.read(|datagram| lines += self.core.lines(datagram, now));
                source.stats.lines.fetch_add(lines, Ordering::Relaxed);
                if n == 0 {
                    break;
                }
            }
        }
        sources.retain(|s| !s.stopping());
        self.sources = sources;
    }

    /// Handles one message; false to exit.
    fn handle(&mut self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Raw(batch) => {
                self.raw(&batch);
                self.batch_pool.put(batch.data);
                self.raw_queued.fetch_sub(1, Ordering::AcqRel);
            }
            ShardMsg::Flush(reply) => {
                // The drops join the telemetry before the flush that asked collects it.
                self.core.report_drops(&self.telemetry);
                // (The flusher waits for each reply, so no flush is under way here; were one, it ends first.)
                while self.taking.is_some() {
                    self.take_step();
                }
                self.taking = Some((reply, self.core.begin_take()));
            }
            ShardMsg::Import(entries) => self.core.import(entries),
            ShardMsg::Sync(ack) => {
                if self.sources.iter().any(|s| s.stopping()) {
                    self.drain_stopped();
                }
                let _ = ack.send(());
            }
            ShardMsg::Attach(source) => self.sources.push(*source),
            ShardMsg::Stop => return false,
        }
        true
    }

    /// One step of the flush under way; at its last, the interval goes to the flush that asked for it.
    fn take_step(&mut self) {
        let Some((_, taking)) = &mut self.taking else {
            return;
        };
        if self.core.take_step(taking, TAKE_STEP) {
            if let Some((reply, taking)) = self.taking.take() {
                let interval = self.core.finish_take(taking, unix_now());
                // What the take counted (clamped lines) joins the telemetry before the flush collects it.
                self.core.report_drops(&self.telemetry);
                let _ = reply.send(interval);
            }
        }
    }

    /// Parses and aggregates a raw batch from a reader thread or a stream connection.
    fn raw(&mut self, batch: &Batch) {
        if self.capture.recording() {
            record_batch(&self.capture, batch);
        }
        let lines = self.core.lines(&batch.data, unix_now());
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
    }
}

/// Most bytes of a batch captured as one record: a batch (many stream lines or datagrams of a reader) is cut at
/// line ends into records that `harrier replay` can send as datagrams.
const CAPTURE_RECORD_MAX: usize = 8192;

/// A raw batch captured as records of whole lines of at most [`CAPTURE_RECORD_MAX`] bytes (a longer line alone).
#[cold]
fn record_batch(capture: &Capture, batch: &Batch) {
    let mut rest = batch.data.as_slice();
    while !rest.is_empty() {
        let mut end = rest.len().min(CAPTURE_RECORD_MAX);
        if end < rest.len() {
            end = match memchr::memrchr(b'\n', &rest[..end]) {
                Some(nl) => nl + 1,
                None => memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1),
            };
        }
        let record = rest[..end].strip_suffix(b"\n").unwrap_or(&rest[..end]);
        if !record.is_empty() {
            capture.record(batch.listener, record);
        }
        rest = &rest[end..];
    }
}
