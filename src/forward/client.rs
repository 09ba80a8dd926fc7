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
//!
//! This file holds the handle ([`Forwarder`]) and the task's loop (jobs in, rounds of sends, membership). What the
//! task holds and how metrics are routed into it is in [`super::outbox`]; the answers of sends and
//! acknowledgement polls in [`super::outcome`]; how long batches may wait in [`super::expiry`]; and the tracking
//! of a job until all of its parts are safe in [`super::settle`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::destination::AckReport;
use super::encode;
use super::outbox::Outbox;
use super::route::Members;
use super::wire::route_key;
use super::Forward;
use super::LOG;
use crate::aggregate::Entry;
use crate::config::ClientTlsConfig;
use crate::telemetry::catalog::FORWARD_DROPPED;
use crate::telemetry::Telemetry;
use bytes::Bytes;

pub use super::destination::BATCH_ID_HEADER;
pub use super::settle::Settle;

/// Jobs waiting to be taken by the forwarding task before new ones are refused (a local hands one per interval;
/// a proxy one per stream it receives).
const QUEUE: usize = 1024;

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
            applied_boundary: u64::MAX,
            reachable: reachable.clone(),
            outbox: Outbox::new(
                max_intervals.max(1),
                interval,
                telemetry.clone(),
                sender_base,
                reports_tx,
                tls,
            ),
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
                    .map(|e| Bytes::from(prost::Message::encode_to_vec(&encode(e))))
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
                    telemetry.add(&FORWARD_DROPPED, &["cause:queue_full"], n);
                    LOG.log(|| format!("{n} metrics dropped: the forwarding queue is full (the global is too slow)"));
                }
                return;
            }
            let _ = done_rx.await;
        })
    }
}

struct Task {
    mode: Mode,
    members: watch::Receiver<Members>,
    /// The wall-clock interval at which `outbox.active` was taken (immediate mode).
    applied_boundary: u64,
    reachable: Arc<AtomicUsize>,
    /// The members in force, the destinations and what is queued for them.
    outbox: Outbox,
}

impl Task {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut reports: mpsc::UnboundedReceiver<AckReport>) {
        let mut tick = tokio::time::interval(
            (self.outbox.interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(500)),
        );
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
                    self.outbox.expire();
                    self.round().await;
                }
                Some(report) = reports.recv() => {
                    self.outbox.on_report(report);
                    while let Ok(r) = reports.try_recv() {
                        self.outbox.on_report(r);
                    }
                    let now = Instant::now();
                    if self.outbox.dests.values().any(|d| d.due(now)) {
                        self.round().await;
                    }
                }
                _ = tick.tick() => {
                    if self.mode == Mode::Immediate {
                        self.on_membership();
                    }
                    self.outbox.expire();
                    let now = Instant::now();
                    if self.outbox.dests.values().any(|d| d.due(now)) {
                        self.round().await;
                    }
                }
            }
            for d in done {
                let _ = d.send(());
            }
            self.outbox.publish(&self.reachable);
        }
    }

    /// Takes the latest members: at each job for a local, at each wall-clock interval for a proxy.
    fn on_membership(&mut self) {
        if self.mode == Mode::Immediate {
            let ms = self.outbox.interval.as_millis().max(1) as u64;
            let now = crate::telemetry::unix_now_ms();
            let boundary = now / ms;
            if boundary == self.applied_boundary {
                return;
            }
            self.applied_boundary = boundary;
        }
        let latest = self.members.borrow().clone();
        if latest != self.outbox.active {
            LOG.log(|| format!("members now {:?}", latest.addrs()));
            self.outbox.active = latest;
        }
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
            self.outbox.telemetry.add(&FORWARD_DROPPED, &["cause:malformed"], n);
        }
        let settlement = job.settle.map(|settle| self.outbox.settlements.open(settle));
        let queued = if job.metrics.is_empty() {
            0
        } else {
            self.outbox.route(job.metrics, hashes, Instant::now(), settlement, None)
        };
        if let Some(o) = settlement {
            self.outbox.settlements.add_parts(o, queued as isize);
        }
        job.done
    }

    /// Sends what is due at every destination, concurrently, within one interval; routes the share of a destination
    /// that cannot be reached to the next members and sends again.
    async fn round(&mut self) {
        let deadline = Instant::now() + self.outbox.interval.max(Duration::from_millis(200));
        for _ in 0..8 {
            let now = Instant::now();
            let due: Vec<Arc<str>> = self
                .outbox
                .dests
                .values()
                .filter(|d| d.due(now))
                .map(|d| d.addr.clone())
                .collect();
            if due.is_empty() || now >= deadline {
                break;
            }
            // One task per destination; the results come in the order the sends finish.
            let sends: JoinSet<_> = due
                .iter()
                .map(|a| {
                    let d = &self.outbox.dests[a];
                    let addr = a.clone();
                    let f = d.send_all(deadline);
                    async move { (addr, f.await) }
                })
                .collect();
            let results = sends.join_all().await;
            for (addr, outcomes) in results {
                self.outbox.apply(&addr, outcomes);
            }
        }
    }
}
