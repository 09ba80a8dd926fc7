//! A worker thread: reads its own sockets (or takes raw batches from readers), parses, aggregates the lines its
//! shard owns and hands the others over; see the [`pipeline`](super) documentation for the whole path.

use super::*;

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

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) waker: Arc<Waker>,
    /// Datagram sockets this worker reads itself.
    pub(super) sources: Vec<Source>,
    pub(super) shards: Vec<ShardSender>,
    pub(super) raw_queued: Arc<AtomicUsize>,
    pub(super) handover_bytes: Arc<AtomicUsize>,
    pub(super) extend: Arc<ExtendTags>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) batch_pool: BufferPool,
    pub(super) line_pool: BufferPool,
    pub(super) state: ShardState,
}

impl Worker {
    pub(super) fn run(mut self, mut rx: mpsc::UnboundedReceiver<ShardMsg>) {
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
