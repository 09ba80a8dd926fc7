//! The sending side: routes forwarded metrics to the global tier and keeps them until they are safe.
//!
//! One task owns every destination. A local hands it each interval's forwardable entries (a proxy, each stream it
//! receives). The task encodes them, picks each series' owner by rendezvous hashing over the members in force (see
//! [`super::route`]), and appends one batch per owner to that destination's queue. Destinations are sent to
//! concurrently, each stream tagged with its batch id; a destination that cannot be reached gets its share of the
//! interval routed to the next member in each series' order, and no new series until it answers again.
//!
//! A batch the destination merged stays queued until the destination acknowledges it (flushed to all of its
//! sinks, or, through a proxy, acknowledged by every global). If the destination comes back as another
//! incarnation, what the old one had not acknowledged is sent again; if it stays unreachable for
//! `forward_max_intervals`, it goes to the next member in each series' order; with no member to take it, it is
//! dropped and counted. Nothing here blocks ingest or the flush: the flusher only hands entries over a bounded
//! queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::destination::{AckReport, Destination, Failure, State};
use super::route::Members;
use super::wire::route_key;
use super::Forward;
use super::{encode, view as proto};
use crate::aggregate::Entry;
use crate::config::ClientTlsConfig;
use crate::telemetry::{LimitedLog, Telemetry};
use bytes::Bytes;

pub use super::destination::BATCH_ID_HEADER;

static LOG: LimitedLog = LimitedLog::new("forward");

/// Jobs waiting to be taken by the forwarding task before new ones are refused (a local hands one per interval;
/// a proxy one per stream it receives).
const QUEUE: usize = 1024;

/// Called once every part of a job is safe (or given up).
pub type Settle = Box<dyn FnOnce() + Send>;

struct Job {
    /// Each an encoded `Metric`.
    metrics: Vec<Bytes>,
    settle: Option<Settle>,
    done: Option<oneshot::Sender<()>>,
}

/// When membership changes take effect and when batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A local: one job per interval; members are read at each job (each flush is an interval boundary).
    Interval,
    /// A proxy: jobs are sent as they come; members change at wall-clock multiples of the interval.
    Immediate,
}

/// Routes to the global tier and keeps what is not yet safe.
pub struct Forwarder {
    jobs: mpsc::Sender<Job>,
    telemetry: Arc<Telemetry>,
    reachable: Arc<AtomicUsize>,
}

impl Forwarder {
    /// Starts the forwarding task over the members `members` gives (a fixed list, or discovery's latest).
    pub fn start(
        members: watch::Receiver<Members>,
        mode: Mode,
        max_intervals: u32,
        interval: Duration,
        telemetry: Arc<Telemetry>,
        tls: Option<Arc<ClientTlsConfig>>,
    ) -> Arc<Forwarder> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let reachable = Arc::new(AtomicUsize::new(0));
        let sender_base =
            xxhash_rust::xxh3::xxh3_64(format!("{}-{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes());
        let task = Task {
            mode,
            members,
            active: Members::default(),
            applied_boundary: u64::MAX,
            dests: HashMap::new(),
            max_intervals: max_intervals.max(1),
            interval,
            telemetry: telemetry.clone(),
            sender_base,
            reports_tx,
            origins: HashMap::new(),
            next_origin: 0,
            reachable: reachable.clone(),
            tls,
        };
        tokio::spawn(task.run(rx, reports));
        Arc::new(Forwarder {
            jobs: tx,
            telemetry,
            reachable,
        })
    }

    /// A proxy's stream: routed at once; `settle` runs when every part is safe. False when the queue is full.
    pub fn submit(&self, metrics: Vec<Bytes>, settle: Option<Settle>) -> bool {
        self.jobs
            .try_send(Job {
                metrics,
                settle,
                done: None,
            })
            .is_ok()
    }

    /// Members in force that have answered and did not fail since.
    pub fn reachable(&self) -> usize {
        self.reachable.load(Ordering::Relaxed)
    }
}

impl Forward for Forwarder {
    fn forward(&self, mut entries: Vec<Entry>) -> tokio::task::JoinHandle<()> {
        let jobs = self.jobs.clone();
        let telemetry = self.telemetry.clone();
        tokio::spawn(async move {
            let n = entries.len() as u64;
            let metrics = tokio::task::spawn_blocking(move || {
                entries
                    .iter_mut()
                    .filter_map(|e| encode(e).map(|m| Bytes::from(prost::Message::encode_to_vec(&m))))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let (done_tx, done_rx) = oneshot::channel();
            let job = Job {
                metrics,
                settle: None,
                done: Some(done_tx),
            };
            // Called every interval, even with nothing new: each job is an interval boundary.
            if jobs.try_send(job).is_err() {
                if n > 0 {
                    telemetry.count("harrier.forward.dropped", &["cause:queue_full"], n);
                    LOG.log(|| format!("{n} metrics dropped: the forwarding queue is full (the global is too slow)"));
                }
                return;
            }
            let _ = done_rx.await;
        })
    }
}

struct Origin {
    parts: usize,
    settle: Settle,
}

struct Task {
    mode: Mode,
    members: watch::Receiver<Members>,
    /// The members in force.
    active: Members,
    /// The wall-clock interval at which `active` was taken (immediate mode).
    applied_boundary: u64,
    dests: HashMap<Arc<str>, Destination>,
    max_intervals: u32,
    interval: Duration,
    telemetry: Arc<Telemetry>,
    sender_base: u64,
    reports_tx: mpsc::UnboundedSender<AckReport>,
    origins: HashMap<u64, Origin>,
    next_origin: u64,
    reachable: Arc<AtomicUsize>,
    /// `forward_tls`: connections to the globals are TLS with these files.
    tls: Option<Arc<ClientTlsConfig>>,
}

fn dest_tag(addr: &str) -> String {
    format!("destination:{addr}")
}

impl Task {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut reports: mpsc::UnboundedReceiver<AckReport>) {
        let mut tick =
            tokio::time::interval((self.interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut done = Vec::new();
            tokio::select! {
                biased;
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    self.on_membership();
                    done.extend(self.on_job(job));
                    while let Ok(job) = jobs.try_recv() {
                        done.extend(self.on_job(job));
                    }
                    self.expire();
                    self.round().await;
                }
                Some(report) = reports.recv() => {
                    self.on_report(report);
                    while let Ok(r) = reports.try_recv() {
                        self.on_report(r);
                    }
                    let now = Instant::now();
                    if self.dests.values().any(|d| d.due(now)) {
                        self.round().await;
                    }
                }
                _ = tick.tick() => {
                    if self.mode == Mode::Immediate {
                        self.on_membership();
                    }
                    self.expire();
                    let now = Instant::now();
                    if self.dests.values().any(|d| d.due(now)) {
                        self.round().await;
                    }
                }
            }
            for d in done {
                let _ = d.send(());
            }
            self.publish();
        }
    }

    /// Takes the latest members: at each job for a local, at each wall-clock interval for a proxy.
    fn on_membership(&mut self) {
        if self.mode == Mode::Immediate {
            let ms = self.interval.as_millis().max(1) as u64;
            let now = crate::telemetry::unix_now_ms();
            let boundary = now / ms;
            if boundary == self.applied_boundary {
                return;
            }
            self.applied_boundary = boundary;
        }
        let latest = self.members.borrow().clone();
        if latest != self.active {
            LOG.log(|| format!("members now {:?}", latest.addrs()));
            self.active = latest;
        }
    }

    fn dest(&mut self, addr: &Arc<str>) -> Option<&mut Destination> {
        if !self.dests.contains_key(addr) {
            let tls = self.tls.as_deref();
            match Destination::new(
                addr.clone(),
                self.sender_base,
                self.interval,
                self.reports_tx.clone(),
                tls,
            ) {
                Ok(d) => {
                    self.dests.insert(addr.clone(), d);
                }
                Err(e) => {
                    LOG.log(|| e);
                    return None;
                }
            }
        }
        self.dests.get_mut(addr)
    }

    /// Splits metrics by owner among the members in force (skipping `exclude` and destinations that are down,
    /// unless every member is down) and queues one batch per owner. Returns the number of batches queued.
    fn route(
        &mut self,
        metrics: Vec<Bytes>,
        hashes: Vec<u64>,
        born: Instant,
        origin: Option<u64>,
        exclude: Option<&str>,
    ) -> usize {
        let members = self.active.clone();
        let usable: Vec<bool> = members
            .addrs()
            .iter()
            .map(|a| Some(&**a) != exclude && self.dests.get(a).is_none_or(|d| !d.down))
            .collect();
        let fallback: Vec<bool> = members.addrs().iter().map(|a| Some(&**a) != exclude).collect();
        let any_usable = usable.iter().any(|&u| u);
        let mut parts: Vec<(Vec<Bytes>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); members.len()];
        let mut unrouted = 0u64;
        // Metrics routed past their first choice, by that first choice (a destination down, or `exclude`).
        let some_skipped = usable.iter().zip(&fallback).any(|(u, f)| u != f) || exclude.is_some();
        let mut skipped = vec![0u64; members.len()];
        for (m, h) in metrics.into_iter().zip(hashes) {
            let owner = if any_usable {
                members.owner(h, |i| usable[i])
            } else {
                members.owner(h, |i| fallback[i])
            };
            if some_skipped && any_usable {
                if let Some(first) = members.owner(h, |_| true) {
                    if Some(first) != owner {
                        skipped[first] += 1;
                    }
                }
            }
            match owner {
                Some(i) => {
                    parts[i].0.push(m);
                    parts[i].1.push(h);
                }
                None => unrouted += 1,
            }
        }
        if unrouted > 0 {
            self.telemetry
                .count("harrier.forward.dropped", &["cause:no_members"], unrouted);
            LOG.log(|| format!("{unrouted} metrics dropped: no global to send them to"));
        }
        for (i, n) in skipped.into_iter().enumerate() {
            if n > 0 {
                self.telemetry
                    .count("harrier.forward.reroutes", &[&dest_tag(&members.addrs()[i])], n);
            }
        }
        let mut queued = 0;
        for (i, (ms, hs)) in parts.into_iter().enumerate() {
            if ms.is_empty() {
                continue;
            }
            let addr = members.addrs()[i].clone();
            if let Some(d) = self.dest(&addr) {
                d.push(ms, hs, born, origin);
                queued += 1;
            }
        }
        queued
    }

    fn on_job(&mut self, mut job: Job) -> Option<oneshot::Sender<()>> {
        let mut hashes = Vec::with_capacity(job.metrics.len());
        let before = job.metrics.len();
        job.metrics.retain(|m| match route_key(m) {
            Some(h) => {
                hashes.push(h);
                true
            }
            None => false,
        });
        if job.metrics.len() < before {
            let n = (before - job.metrics.len()) as u64;
            self.telemetry.count("harrier.forward.dropped", &["cause:malformed"], n);
        }
        let origin = job.settle.map(|settle| {
            self.next_origin += 1;
            self.origins.insert(self.next_origin, Origin { parts: 0, settle });
            self.next_origin
        });
        let queued = if job.metrics.is_empty() {
            0
        } else {
            self.route(job.metrics, hashes, Instant::now(), origin, None)
        };
        if let Some(o) = origin {
            self.add_parts(o, queued as isize);
        }
        job.done
    }

    /// Adds to an origin's count of unsettled parts; settles it at zero.
    fn add_parts(&mut self, origin: u64, delta: isize) {
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        o.parts = (o.parts as isize + delta).max(0) as usize;
        if o.parts == 0 {
            if let Some(o) = self.origins.remove(&origin) {
                (o.settle)();
            }
        }
    }

    /// Sends what is due at every destination, concurrently, within one interval; routes the share of a destination
    /// that cannot be reached to the next members and sends again.
    async fn round(&mut self) {
        let deadline = Instant::now() + self.interval.max(Duration::from_millis(200));
        for _ in 0..8 {
            let now = Instant::now();
            let due: Vec<Arc<str>> = self
                .dests
                .values()
                .filter(|d| d.due(now))
                .map(|d| d.addr.clone())
                .collect();
            if due.is_empty() || now >= deadline {
                break;
            }
            let sends = due.iter().map(|a| {
                let d = &self.dests[a];
                let addr = a.clone();
                let f = d.send_all(deadline);
                async move { (addr, f.await) }
            });
            let results = futures_join_all(sends).await;
            for (addr, outcomes) in results {
                self.apply(&addr, outcomes);
            }
        }
    }

    fn apply(&mut self, addr: &Arc<str>, outcomes: Vec<(u64, Result<proto::SendMetricsResponse, Failure>)>) {
        let tag = dest_tag(addr);
        let mut reroute = false;
        let mut settled = Vec::new();
        let Some(d) = self.dests.get_mut(addr) else { return };
        for (seq, result) in outcomes {
            let Some(pos) = d.queue.iter().position(|b| b.seq == seq) else {
                continue;
            };
            match result {
                Ok(r) => {
                    d.answered();
                    if r.incarnation != 0 {
                        let resent = d.answered_as(r.incarnation);
                        if resent > 0 {
                            self.telemetry.count("harrier.forward.resends", &[&tag], resent);
                        }
                    }
                    let b = &mut d.queue[pos];
                    let n = b.metrics.len() as u64;
                    self.telemetry
                        .count("harrier.forward.metrics", &[&tag, "result:sent"], r.accepted.min(n));
                    let bytes: usize = b.metrics.iter().map(Bytes::len).sum();
                    self.telemetry.count("harrier.forward.bytes", &[&tag], bytes as u64);
                    if r.rejected > 0 {
                        self.telemetry
                            .count("harrier.forward.metrics", &[&tag, "result:rejected"], r.rejected);
                    }
                    if r.incarnation == 0 {
                        // A receiver without acknowledgements: merged is all it will ever say.
                        settled.push(d.queue.remove(pos).and_then(|b| b.origin));
                        continue;
                    }
                    b.state = State::Merged(r.incarnation);
                }
                Err(f) => {
                    self.telemetry
                        .count("harrier.forward.errors", &[&tag, &format!("cause:{}", f.cause())], 1);
                    match f {
                        Failure::Refused => {
                            let b = d.queue.remove(pos);
                            let n = b.as_ref().map_or(0, |b| b.metrics.len() as u64);
                            self.telemetry
                                .count("harrier.forward.dropped", &[&tag, "cause:refused"], n);
                            LOG.log(|| format!("{addr} refused a batch of {n} metrics; dropped"));
                            settled.push(b.and_then(|b| b.origin));
                        }
                        Failure::Unreachable => {
                            d.failed();
                            reroute = true;
                        }
                        Failure::Timeout => d.failed(),
                    }
                }
            }
        }
        for o in settled.into_iter().flatten() {
            self.add_parts(o, -1);
        }
        if reroute {
            self.reroute_unsent(addr);
        }
    }

    /// Routes every batch `addr` has to send (never merged by a living incarnation) to the next members.
    fn reroute_unsent(&mut self, addr: &Arc<str>) {
        let Some(d) = self.dests.get_mut(addr) else { return };
        let (moving, staying): (Vec<_>, Vec<_>) = d.queue.drain(..).partition(|b| b.state == State::ToSend);
        d.queue.extend(staying);
        self.move_batches(addr, moving);
    }

    /// Routes batches taken from `from` to the next member of each of their series.
    fn move_batches(&mut self, from: &Arc<str>, batches: Vec<super::destination::Batch>) {
        if batches.is_empty() {
            return;
        }
        let others = self.active.addrs().iter().any(|a| a != from);
        for b in batches {
            if !others {
                // Nowhere else to go: keep it for `from`.
                if let Some(d) = self.dests.get_mut(from) {
                    let pos = d.queue.partition_point(|x| x.seq < b.seq);
                    d.queue.insert(pos, b);
                }
                continue;
            }
            let metrics = Arc::try_unwrap(b.metrics).unwrap_or_else(|m| (*m).clone());
            let hashes = Arc::try_unwrap(b.hashes).unwrap_or_else(|h| (*h).clone());
            let queued = self.route(metrics, hashes, b.born, b.origin, Some(from));
            if let Some(o) = b.origin {
                self.add_parts(o, queued as isize - 1);
            }
        }
    }

    fn on_report(&mut self, r: AckReport) {
        let tag = dest_tag(&r.addr);
        let Some(d) = self.dests.get_mut(&r.addr) else { return };
        let Some((incarnation, flushed)) = r.answer else {
            // Sends keep their own backoff; a failed probe only marks the destination down.
            if !d.down {
                d.failed();
            }
            return;
        };
        d.answered();
        let resent = d.answered_as(incarnation);
        if resent > 0 {
            self.telemetry.count("harrier.forward.resends", &[&tag], resent);
            LOG.log(|| {
                format!(
                    "{} restarted; {resent} batches it had not flushed are sent again",
                    r.addr
                )
            });
        }
        let mut settled = Vec::new();
        d.queue.retain(|b| {
            let safe = b.state == State::Merged(incarnation) && b.seq <= flushed;
            if safe {
                settled.push(b.origin);
            }
            !safe
        });
        self.telemetry
            .count("harrier.forward.acknowledged", &[&tag], settled.len() as u64);
        for o in settled.into_iter().flatten() {
            self.add_parts(o, -1);
        }
    }

    /// Batches older than `forward_max_intervals` at a destination that is down (or no longer a member) go to
    /// the next members; with none to take them they are dropped. A merged batch still not acknowledged after
    /// twice that long is let go (its destination is alive and has it).
    fn expire(&mut self) {
        let now = Instant::now();
        let max_age = self.interval * self.max_intervals;
        let addrs: Vec<Arc<str>> = self.dests.keys().cloned().collect();
        for addr in addrs {
            let member = self.active.addrs().contains(&addr);
            let tag = dest_tag(&addr);
            let Some(d) = self.dests.get_mut(&addr) else { continue };
            let stranded = d.down || !member;
            let mut moving = Vec::new();
            let mut dropped = 0u64;
            let mut released = Vec::new();
            let mut kept = std::collections::VecDeque::new();
            for b in d.queue.drain(..) {
                let age = now.saturating_duration_since(b.born);
                let unsent_here = !member && b.state == State::ToSend;
                if (stranded && age >= max_age) || unsent_here {
                    moving.push(b);
                } else if age >= max_age * 2 {
                    if b.state == State::ToSend {
                        dropped += b.metrics.len() as u64;
                    }
                    released.push(b.origin);
                } else {
                    kept.push_back(b);
                }
            }
            d.queue = kept;
            let empty = d.queue.is_empty();
            if dropped > 0 {
                self.telemetry
                    .count("harrier.forward.dropped", &[&tag, "cause:too_many_intervals"], dropped);
            }
            for o in released.into_iter().flatten() {
                self.add_parts(o, -1);
            }
            let others = self
                .active
                .addrs()
                .iter()
                .any(|a| *a != addr && self.dests.get(a).is_none_or(|d| !d.down));
            if others {
                self.move_batches(&addr, moving);
            } else {
                let n: u64 = moving.iter().map(|b| b.metrics.len() as u64).sum();
                if n > 0 {
                    self.telemetry
                        .count("harrier.forward.dropped", &[&tag, "cause:too_many_intervals"], n);
                    LOG.log(|| {
                        format!(
                            "{n} metrics for {addr} dropped after forward_max_intervals={} intervals with no \
                             member to take them",
                            self.max_intervals
                        )
                    });
                }
                for o in moving.into_iter().filter_map(|b| b.origin) {
                    self.add_parts(o, -1);
                }
            }
            if empty && !member {
                if let Some(d) = self.dests.get(&addr) {
                    if d.queue.is_empty() {
                        self.dests.remove(&addr);
                    }
                }
            }
        }
    }

    /// Tells each destination's acknowledgement task what to ask, and reports the gauges.
    fn publish(&mut self) {
        // Every member has a destination, so that each is probed and its reachability known before traffic.
        let mut reachable = 0;
        for a in self.active.addrs().to_vec() {
            if self.dest(&a).is_some_and(|d| d.confirmed && !d.down) {
                reachable += 1;
            }
        }
        self.reachable.store(reachable, Ordering::Relaxed);
        for d in self.dests.values() {
            d.update_want();
            let tag = dest_tag(&d.addr);
            let pending = d.queue.iter().filter(|b| matches!(b.state, State::Merged(_))).count();
            let unsent = d.queue.len() - pending;
            self.telemetry
                .gauge("harrier.forward.acknowledgements_pending", &[&tag], pending as f64);
            self.telemetry
                .gauge("harrier.forward.batches_unsent", &[&tag], unsent as f64);
            self.telemetry
                .gauge("harrier.forward.reachable", &[&tag], if d.down { 0.0 } else { 1.0 });
        }
    }
}

/// Runs futures concurrently and collects their outputs (in completion order).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                    out.push(v);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out
}
