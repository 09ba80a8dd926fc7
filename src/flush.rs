//! The interval loop: every `interval`, take each shard's state, merge the states into one, turn it into output,
//! and hand the output to every sink concurrently (and, in local mode, the sketches to the forwarder). Neither
//! ingest nor the next flush waits for a sink: each sink call runs in its own task, bounded by one interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aggregate::merge::merge_intervals;
use crate::aggregate::{emit, EmitConfig, EmitCounts, Entry, Interval, TagSet};
use crate::forward::ack::Acks;
pub use crate::forward::Forward;
use crate::model::{Flush, Series, SeriesKind};
use crate::pipeline::{await_flush, flush_shards, request_flush, ShardSender};
use crate::sink::{Sink, SinkOutcome};
use crate::telemetry::catalog::FORWARD_DROPPED;
use crate::telemetry::series_table::SeriesStats;
use crate::telemetry::{unix_now, LimitedLog, Telemetry};

static SINK_LOG: LimitedLog = LimitedLog::new("sink flush failed");

/// Everything a flush needs.
pub struct Flusher {
    pub shards: Vec<ShardSender>,
    pub sinks: Vec<Arc<dyn Sink>>,
    pub emit: EmitConfig,
    pub telemetry: Arc<Telemetry>,
    pub interval: Duration,
    pub hostname: String,
    pub forwarder: Option<Arc<dyn Forward>>,
    /// A global's acknowledgements: each flush takes the imports merged before it, and they are safe once every
    /// sink is done with it.
    pub acks: Option<Arc<Acks>>,
    /// `tags`: added to every series, check and event at the sinks.
    pub sink_tags: Vec<String>,
    /// `stats_address`: self-metrics go there as DogStatsD instead of to the sinks.
    pub stats: Option<StatsClient>,
    /// The figures per metric name (`GET /debug/series`), updated at each flush.
    pub series_stats: Arc<SeriesStats>,
}

/// Sends self-metrics as DogStatsD datagrams to `stats_address` (never blocking: a full socket buffer drops them).
pub struct StatsClient {
    socket: std::net::UdpSocket,
    target: std::net::SocketAddr,
}

impl StatsClient {
    pub fn new(target: std::net::SocketAddr) -> std::io::Result<Self> {
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        Ok(StatsClient { socket, target })
    }

    /// The series as `name:value|c` (counters, per interval) or `|g` lines with their tags, in datagrams of at
    /// most 1,432 bytes.
    pub fn send(&self, series: &[Series]) {
        use std::fmt::Write as _;
        const MAX: usize = 1432;
        let mut datagram = String::with_capacity(MAX);
        let mut line = String::new();
        for s in series {
            line.clear();
            let kind = if s.kind == SeriesKind::Gauge { "g" } else { "c" };
            let _ = write!(line, "{}:{}|{kind}", s.full_name(), s.value);
            if !s.tags.is_empty() {
                let _ = write!(line, "|#{}", s.tags.joined());
            }
            if !datagram.is_empty() && datagram.len() + 1 + line.len() > MAX {
                let _ = self.socket.send_to(datagram.as_bytes(), self.target);
                datagram.clear();
            }
            if !datagram.is_empty() {
                datagram.push('\n');
            }
            datagram.push_str(&line);
        }
        if !datagram.is_empty() {
            let _ = self.socket.send_to(datagram.as_bytes(), self.target);
        }
    }
}

/// Adds `tags` to each series' own (sinks' `tags`: not part of the series key, not forwarded).
fn add_tags<'a>(tag_sets: impl Iterator<Item = &'a mut TagSet>, tags: &[String]) {
    if tags.is_empty() {
        return;
    }
    for set in tag_sets {
        *set = TagSet::from_tags(set.iter().chain(tags.iter().map(String::as_str)));
    }
}

impl Flusher {
    /// Flushes at every multiple of `interval` on the wall clock (so that every instance's intervals line up, and
    /// membership changes of the global tier apply at the same boundary everywhere) until `stop` is raised; then
    /// waits for the sink calls still running (each bounded by one interval).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut in_flight = JoinSet::new();
        let ms = self.interval.as_millis().max(1) as u64;
        let mut last: Option<u64> = None;
        loop {
            let now = crate::telemetry::unix_now_ms();
            let next = next_boundary(now, ms, last);
            let wait = Duration::from_millis(next * ms - now.min(next * ms));
            last = Some(next);
            tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => break,
                _ = tokio::time::sleep(wait) => {
                    self.flush_once(&mut in_flight).await;
                    while in_flight.try_join_next().is_some() {}
                }
            }
        }
        // The sinks of the last regular flush finish (each is bounded by one interval and its request timeout)
        // before the final flush starts and the process exits: detached, they were cut off by the exit when a stop
        // came right after a flush.
        let slack = self.sinks.iter().map(|s| s.request_timeout()).max().unwrap_or_default();
        let _ = tokio::time::timeout(self.interval + slack, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        in_flight.detach_all();
    }

    /// One flush: swap the shards, build the output, start every sink and the forwarder. The started tasks go into
    /// `tasks`, so a caller can wait for them (the final flush does).
    pub async fn flush_once(&self, tasks: &mut JoinSet<()>) {
        let started = Instant::now();
        let timestamp = unix_now();
        let states = match &self.acks {
            Some(acks) => {
                let (replies, id) = acks.begin_flush(|| request_flush(&self.shards));
                (await_flush(replies).await, Some(id))
            }
            None => (flush_shards(&self.shards).await, None),
        };
        let (mut states, ack_id) = states;
        let rows = states.iter_mut().flat_map(|s| std::mem::take(&mut s.names)).collect();
        self.series_stats
            .record(rows, timestamp, self.interval, &self.telemetry, self.shards.len());
        // Marks this flush's imports safe once every sink is done with it (or the flush could not be built).
        let ack = AckOnDrop(self.acks.clone().zip(ack_id));
        let emit_cfg = self.emit.clone();
        let sink_tags = self.sink_tags.clone();
        let head = Flush {
            timestamp,
            interval: self.interval,
            hostname: self.hostname.clone(),
            ..Flush::default()
        };
        let built = tokio::task::spawn_blocking(move || build(states, &emit_cfg, head, &sink_tags)).await;
        let Ok((mut out, forward, counts)) = built else {
            SINK_LOG.log(|| "building the flush panicked; this interval is lost".to_string());
            return;
        };
        self.telemetry.record_flush(counts, started.elapsed());
        let mut own = self.telemetry.collect(timestamp);
        match &self.stats {
            Some(stats) => stats.send(&own),
            None => {
                add_tags(own.iter_mut().map(|s| &mut s.tags), &self.sink_tags);
                out.series.extend(own);
            }
        }

        match &self.forwarder {
            // Called every interval, even with nothing new, so that intervals kept after a failure are retried.
            Some(f) => {
                let handle = f.forward(forward);
                tasks.spawn(async move {
                    let _ = handle.await;
                });
            }
            None if !forward.is_empty() => {
                self.telemetry
                    .add(&FORWARD_DROPPED, &["cause:no_forwarder"], forward.len() as u64);
            }
            None => {}
        }

        let mut sink_tasks = self.deliver(Arc::new(out));
        tasks.spawn(async move {
            while sink_tasks.join_next().await.is_some() {}
            drop(ack);
        });
    }

    /// Hands the flush to every sink, each in its own task bounded by one interval and its request timeout.
    fn deliver(&self, out: Arc<Flush>) -> JoinSet<()> {
        let mut sink_tasks = JoinSet::new();
        for sink in &self.sinks {
            let sink = sink.clone();
            let out = out.clone();
            let telemetry = self.telemetry.clone();
            // Attempts start within the interval; one under way at its end may run to the sink's request timeout.
            let deadline = self.interval + sink.request_timeout();
            sink_tasks.spawn(async move {
                let t0 = Instant::now();
                let outcome = match tokio::time::timeout(deadline, sink.flush(out)).await {
                    Ok(outcome) => outcome,
                    Err(_) => SinkOutcome::Failed {
                        reason: "deadline",
                        detail: format!("not done within one interval and the request timeout ({deadline:?})"),
                    },
                };
                let result = match &outcome {
                    SinkOutcome::Ok => "ok",
                    SinkOutcome::Failed { reason, detail } => {
                        SINK_LOG.log(|| format!("{} ({}): {reason}: {detail}", sink.name(), sink.kind()));
                        reason
                    }
                };
                telemetry.record_sink(sink.name(), sink.kind(), result, t0.elapsed());
            });
        }
        sink_tasks
    }
}

/// Reports a flush done to the acknowledgements when dropped.
struct AckOnDrop(Option<(Arc<Acks>, u64)>);

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        if let Some((acks, id)) = self.0.take() {
            acks.flushed(id);
        }
    }
}

/// The number of the next flush boundary (a multiple of `interval_ms` on the wall clock) at `now_ms`, given the
/// last one flushed: the next after the last, so one flush per boundary even if the timer fires a little early
/// by the wall clock; from the clock again if it was stepped back by more than an interval.
fn next_boundary(now_ms: u64, interval_ms: u64, last: Option<u64>) -> u64 {
    let next = (now_ms / interval_ms + 1).max(last.map_or(0, |l| l + 1));
    if next * interval_ms > now_ms + 2 * interval_ms {
        now_ms / interval_ms + 1
    } else {
        next
    }
}

/// Builds the output of one flush from the workers' intervals (on a blocking thread): the intervals merged into
/// one, its series reported or set aside to forward, and the sinks' extra tags added.
fn build(
    states: Vec<Interval>,
    emit_cfg: &EmitConfig,
    mut out: Flush,
    sink_tags: &[String],
) -> (Flush, Vec<Entry>, EmitCounts) {
    // One interval with one entry per series, whichever workers received its lines.
    let states = merge_intervals(states);
    let mut forward = Vec::new();
    // The output's size up front (a histogram is several series): grown by doubling instead, a million series'
    // output was reallocated and copied a dozen times, and held twice at the last copy.
    let per_histogram = emit_cfg.aggregates.len() + emit_cfg.percentiles.len();
    let expected: usize = states
        .iter()
        .map(|st| st.series.len() + st.histograms * per_histogram.saturating_sub(1) + st.timestamped.len())
        .sum();
    out.series.reserve_exact(expected);
    let counts = match states {
        Some(state) => emit(state, emit_cfg, out.timestamp, &mut out, &mut forward),
        None => EmitCounts::default(),
    };
    add_tags(out.series.iter_mut().map(|s| &mut s.tags), sink_tags);
    add_tags(out.sketch_series.iter_mut().map(|s| &mut s.tags), sink_tags);
    add_tags(out.sketches.iter_mut().map(|s| &mut s.tags), sink_tags);
    add_tags(out.histograms.iter_mut().map(|h| &mut h.tags), sink_tags);
    add_tags(out.checks.iter_mut().map(|c| &mut c.tags), sink_tags);
    add_tags(out.events.iter_mut().map(|e| &mut e.tags), sink_tags);
    (out, forward, counts)
}

#[cfg(test)]
mod tests {
    use super::next_boundary;

    #[test]
    fn flushes_fall_on_the_multiples_of_the_interval_once_each_whatever_the_timer_and_clock_do() {
        // Started mid-interval: the first flush is at the next multiple.
        assert_eq!(next_boundary(10_500, 1_000, None), 11);
        // The timer fired 3 ms early by the wall clock: the next boundary is still the one after the last flushed,
        // not the same one again.
        assert_eq!(next_boundary(10_997, 1_000, Some(11)), 12);
        // On time, and late by less than an interval: the boundary after the last.
        assert_eq!(next_boundary(11_000, 1_000, Some(11)), 12);
        assert_eq!(next_boundary(11_400, 1_000, Some(11)), 12);
        // Late by more than an interval (a stalled process): boundaries missed are not flushed in a burst.
        assert_eq!(next_boundary(14_200, 1_000, Some(11)), 15);
        // The clock stepped back by a minute: from the clock again, not a minute of waiting.
        assert_eq!(next_boundary(50_100, 1_000, Some(110)), 51);
        // Stepped back by less than two intervals: the boundary after the last, which is near.
        assert_eq!(next_boundary(10_100, 1_000, Some(11)), 12);
    }
}
