//! `prometheus_scrape`: Prometheus and OpenMetrics endpoints read on a schedule (what Stripe ran veneur-prometheus
//! for), their samples turned into DogStatsD lines that join the same workers as the lines from the sockets, so a
//! local forwards them to the global like any other series.
//!
//! Each target is its own task: a read bounded in time and size ([`fetch`]), the body parsed and converted off the
//! runtime's threads ([`convert`], with the semantics per type), the lines handed to one worker (its lane, so a
//! gauge's last value is the last one read). A slow, failing or enormous target delays nobody else: not the other
//! targets, not the sockets, not the flush. Its health is a self-metric per target (`harrier.scrape.*`).
//! With `discovery`, the entry's targets are the addresses a DNS name has, looked up every `refresh`: a new address
//! gets a task (its first read primes its counters), a vanished one's task stops.

pub mod convert;
pub mod exposition;
mod fetch;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::convert::{Converter, Options, Outcome};
use self::fetch::Fetcher;
use crate::config::{pattern_set, ScrapeConfig};
use crate::pipeline::{Ingest, BATCH_BYTES};
use crate::telemetry::catalog::{
    SCRAPES, SCRAPE_BAD_LINES, SCRAPE_DURATION_MS, SCRAPE_SAMPLES, SCRAPE_TARGETS, SCRAPE_UP,
};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("prometheus_scrape");

/// What every target task shares.
#[derive(Clone)]
struct Shared {
    ingest: Ingest,
    /// The index of the `prometheus_scrape` listener stats (lines counted there).
    listener: usize,
    telemetry: Arc<Telemetry>,
    stop: watch::Receiver<bool>,
}

/// One entry's settings, ready for its targets.
#[derive(Clone)]
struct Entry {
    fetcher: Fetcher,
    config: Arc<ScrapeConfig>,
    /// The entry's tags (`tags`), joined.
    tags: String,
    allow: Option<regex::RegexSet>,
    deny: Option<regex::RegexSet>,
}

/// Starts every entry's targets (discovery lookups included); each task ends when `stop` turns true.
pub fn start(
    entries: &[ScrapeConfig],
    ingest: &Ingest,
    listener: usize,
    telemetry: Arc<Telemetry>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let shared = Shared {
        ingest: ingest.clone(),
        listener,
        telemetry,
        stop,
    };
    let mut tasks = Vec::new();
    for (i, cfg) in entries.iter().enumerate() {
        let key = format!("prometheus_scrape[{i}]");
        let entry = Entry {
            fetcher: Fetcher::new(&key, cfg)?,
            config: Arc::new(cfg.clone()),
            tags: cfg.tags.join(","),
            allow: pattern_set(&format!("{key}.metrics_allow"), &cfg.metrics_allow).map_err(|e| e.to_string())?,
            deny: pattern_set(&format!("{key}.metrics_deny"), &cfg.metrics_deny).map_err(|e| e.to_string())?,
        };
        for target in &cfg.targets {
            tasks.push(tokio::spawn(scrape_target(
                entry.clone(),
                target.clone(),
                shared.clone(),
            )));
        }
        shared
            .telemetry
            .set(&SCRAPE_TARGETS, &[&format!("scrape:{i}")], cfg.targets.len() as f64);
        if let Some(d) = &cfg.discovery {
            let resolver = crate::forward::discovery::resolver(&format!("{key}.discovery"), d)?;
            tasks.push(tokio::spawn(discover(i, entry, resolver, shared.clone())));
        }
    }
    Ok(tasks)
}

/// Keeps one task per address that the entry's DNS name has, besides its fixed targets; at the stop signal, stops
/// them and waits for them.
async fn discover(index: usize, entry: Entry, resolver: hickory_resolver::TokioResolver, shared: Shared) {
    let Some(cfg) = entry.config.discovery.clone() else {
        return;
    };
    let mut stop = shared.stop.clone();
    let mut running: HashMap<String, (JoinHandle<()>, watch::Sender<bool>)> = HashMap::new();
    loop {
        let lookup = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => break,
            lookup = crate::forward::discovery::lookup(&resolver, &cfg) => lookup,
        };
        match lookup {
            Ok(found) if !found.is_empty() => {
                running.retain(|addr, (_, stop_one)| {
                    let keep = found.contains(addr);
                    if !keep {
                        let _ = stop_one.send(true);
                    }
                    keep
                });
                for addr in found {
                    if running.contains_key(&addr) {
                        continue;
                    }
                    let (tx, rx) = watch::channel(false);
                    let mut own = shared.clone();
                    own.stop = rx;
                    running.insert(
                        addr.clone(),
                        (tokio::spawn(scrape_target(entry.clone(), addr, own)), tx),
                    );
                }
            }
            // No answer, or nobody: the targets stay as they are.
            Ok(_) => LOG.log(|| format!("{}: no addresses; keeping {} targets", cfg.name, running.len())),
            Err(e) => LOG.log(|| format!("discovery failed ({e}); keeping {} targets", running.len())),
        }
        let total = entry.config.targets.len() + running.len();
        shared
            .telemetry
            .set(&SCRAPE_TARGETS, &[&format!("scrape:{index}")], total as f64);
        tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => break,
            _ = tokio::time::sleep(cfg.refresh) => {}
        }
    }
    for (_, (task, stop_one)) in running {
        let _ = stop_one.send(true);
        let _ = task.await;
    }
}

/// The `host:port` a target is known by (its `target` and `instance` tags).
fn target_name(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// Reads one target every `interval` until the stop signal.
async fn scrape_target(entry: Entry, target: String, shared: Shared) {
    let cfg = entry.config.clone();
    let url = cfg.url(&target);
    let name = target_name(&url);
    let mut tags = entry.tags.clone();
    if cfg.instance_tag {
        if !tags.is_empty() {
            tags.push(',');
        }
        tags.push_str(&format!("instance:{name}"));
    }
    let options = Options {
        prefix: cfg.prefix.clone(),
        tags,
        allow: entry.allow.clone(),
        deny: entry.deny.clone(),
        histograms: cfg.histograms,
    };
    let mut converter = Some(Converter::new(options.clone()));
    let lane = shared.ingest.lane();
    let mut stop = shared.stop.clone();
    // Targets spread over the interval, each at the same offset every time (as Prometheus does).
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    let offset = Duration::from_nanos(h.finish() % cfg.interval.as_nanos().max(1) as u64);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, cfg.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let target_tag = format!("target:{name}");
    loop {
        tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let body = tokio::select! {
            _ = crate::shutdown::stopped(&mut stop) => return,
            body = entry.fetcher.fetch(&url) => body,
        };
        let telemetry = &shared.telemetry;
        let result = match body {
            Ok(body) => {
                let (c, out, outcome) = convert_off_runtime(converter.take(), body, &options).await;
                converter = Some(c);
                send_lines(&lane, shared.listener, &out).await;
                report(telemetry, &target_tag, &outcome);
                telemetry.set(&SCRAPE_UP, &[&target_tag], 1.0);
                "ok"
            }
            Err(e) => {
                LOG.log(|| format!("{url}: {e}"));
                telemetry.set(&SCRAPE_UP, &[&target_tag], 0.0);
                e.reason()
            }
        };
        telemetry.add(&SCRAPES, &[&target_tag, &format!("result:{result}")], 1);
        telemetry.set(
            &SCRAPE_DURATION_MS,
            &[&target_tag],
            started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

/// Converts a body on a blocking thread (a large body is many milliseconds of parsing, which must not hold a
/// runtime thread that the flush needs). A conversion that panicked (a bug) is logged and starts a new converter
/// from `options`.
async fn convert_off_runtime(
    converter: Option<Converter>,
    body: String,
    options: &Options,
) -> (Converter, Vec<u8>, Outcome) {
    let mut c = converter.unwrap_or_else(|| Converter::new(options.clone()));
    let job = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(body.len() / 2);
        let outcome = c.convert(&body, &mut out);
        (c, out, outcome)
    });
    match job.await {
        Ok(done) => done,
        Err(e) => {
            LOG.log(|| format!("converting a scrape failed: {e}"));
            (Converter::new(options.clone()), Vec::new(), Outcome::default())
        }
    }
}

/// Hands the lines to the target's worker in batches cut at line ends.
async fn send_lines(lane: &Ingest, listener: usize, mut lines: &[u8]) {
    while !lines.is_empty() {
        let mut cut = lines.len().min(BATCH_BYTES);
        if cut < lines.len() {
            cut = lines[..cut].iter().rposition(|&b| b == b'\n').map_or(cut, |i| i + 1);
        }
        let mut batch = lane.batch(listener);
        batch.data.extend_from_slice(&lines[..cut]);
        batch.packets = 1;
        if !lane.send(batch).await {
            return;
        }
        lines = &lines[cut..];
    }
}

fn report(telemetry: &Telemetry, target_tag: &str, outcome: &Outcome) {
    telemetry.set(&SCRAPE_SAMPLES, &[target_tag], outcome.samples as f64);
    for (reason, n) in &outcome.bad {
        telemetry.add(&SCRAPE_BAD_LINES, &[target_tag, &format!("reason:{reason}")], *n);
    }
}
