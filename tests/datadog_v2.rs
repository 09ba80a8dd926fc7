//! The Datadog sink as today's agent: v2 series (the agent's `MetricPayload`, zstd or deflate) by default, and a
//! retry queue that outlives the interval: an intake that refuses connections, answers 503, is slow, or is down
//! across a restart of Harrier gets every counter total exactly once. Each test starts the real server and a local
//! intake that decodes what it receives.

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::eventually;
use crate::common::intake::{Intake, Point, Reply};
use harrier::config::Config;
use harrier::server::{self, RunningServer};

const KEY: &str = "test-api-key-v2-0123456789";

async fn start(yaml: &str) -> RunningServer {
    let config = Config::from_yaml_with_env(yaml, "t", |_| None).unwrap();
    server::start(config, vec![]).await.unwrap()
}

fn by_name(points: &[(usize, Point)]) -> HashMap<String, Point> {
    points.iter().map(|(_, p)| (p.metric.clone(), p.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_sends_v2_series_that_decode_as_the_agents_metric_payload() {
    for (compression, encoding) in [("", "zstd"), ("compression: deflate, ", "deflate")] {
        let intake = Intake::accepting().await;
        let yaml = format!(
            "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 10s\nhostname: web-1\n\
             aggregates: [min, max, count]\npercentiles: [0.5]\n\
             metric_sinks: [{{kind: datadog, config: {{{compression}api_key: {KEY}, api_hostname: \"{}\"}}}}]\n",
            intake.url()
        );
        let server = start(&yaml).await;
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(
            b"page.views:5|c|@0.5|#env:prod\npage.views:10|c|#env:prod\nqueue.depth:42|g|#host:db-7,device:sda1\n\
              api.latency:10|ms|#route:/a\napi.latency:20|ms|#route:/a\napi.latency:30|ms|#route:/a\n\
              users:a|s\nusers:b|s\nusers:a|s",
            server.udp_address().unwrap(),
        )
        .unwrap();
        assert!(
            eventually(Duration::from_secs(5), || server.telemetry.listeners[0]
                .lines
                .load(Ordering::Relaxed)
                >= 9)
            .await
        );
        server.shutdown().await;

        assert!(intake.requests_to("/api/v1/series").is_empty(), "v2 is the default");
        let reqs = intake.requests_to("/api/v2/series");
        assert!(!reqs.is_empty());
        for r in &reqs {
            assert_eq!(
                r.headers.get("content-type").map(String::as_str),
                Some("application/x-protobuf")
            );
            assert_eq!(r.headers.get("content-encoding").map(String::as_str), Some(encoding));
            assert_eq!(r.headers.get("dd-api-key").map(String::as_str), Some(KEY));
        }
        let got = by_name(&intake.points());
        let views = &got["page.views"];
        assert_eq!(
            views.kind, "rate",
            "DogStatsD counters are rates, as the agent sends them"
        );
        assert_eq!(views.interval, 10);
        assert_eq!(views.value, 2.0, "(5 / 0.5 + 10) / 10 s");
        assert_eq!(views.host.as_deref(), Some("web-1"));
        assert_eq!(views.tags, ["env:prod"]);
        assert!((views.timestamp - harrier::telemetry::unix_now()).abs() < 60);
        let depth = &got["queue.depth"];
        assert_eq!((depth.kind.as_str(), depth.value, depth.interval), ("gauge", 42.0, 0));
        assert_eq!(depth.host.as_deref(), Some("db-7"));
        assert_eq!(depth.device.as_deref(), Some("sda1"));
        assert!(
            depth.tags.is_empty(),
            "host and device are resources, not tags: {:?}",
            depth.tags
        );
        assert_eq!(got["api.latency.min"].value, 10.0);
        assert_eq!(got["api.latency.max"].value, 30.0);
        assert_eq!(got["api.latency.count"].kind, "rate");
        assert_eq!(got["api.latency.count"].value, 0.3);
        assert_eq!(got["api.latency.50percentile"].value, 20.0);
        assert_eq!(got["api.latency.50percentile"].tags, ["route:/a"]);
        assert_eq!((got["users"].kind.as_str(), got["users"].value), ("gauge", 2.0));
    }
}

/// Sends `lines` counter lines (`outage.hits:1|c|#n:<i % 5>`), one every 10 ms, from a plain thread: steady
/// traffic across the outage. Returns the number of lines sent per tag.
fn steady_counters(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<HashMap<String, f64>> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent: HashMap<String, f64> = HashMap::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tag = format!("n:{}", i % 5);
            sock.send_to(format!("outage.hits:1|c|#{tag}").as_bytes(), addr)
                .unwrap();
            *sent.entry(tag).or_default() += 1.0;
            i += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    })
}

/// The totals per tag of `outage.hits` in the points of accepted requests.
fn totals(intake: &Intake, accepted: impl Fn(usize) -> bool) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for (i, p) in intake.points() {
        if p.metric == "outage.hits" && accepted(i) {
            *out.entry(p.tags.join(",")).or_default() += p.total();
        }
    }
    out
}

/// The total of a self-metric (summed over the series carrying `tag`) in every point received.
fn self_metric(intake: &Intake, name: &str, tag: &str) -> f64 {
    intake
        .points()
        .iter()
        .filter(|(_, p)| p.metric == name && p.tags.iter().any(|t| t == tag))
        .map(|(_, p)| p.total())
        .sum()
}

fn yaml_for(url: &str, extra: &str) -> String {
    format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nnum_workers: 1\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{url}\"{extra}}}}}]\n"
    )
}

/// Waits until the intake's totals equal what was sent (or 40 s pass), and returns them.
async fn wait_for_totals(
    intake: &Intake,
    sent: &HashMap<String, f64>,
    accepted: impl Fn(usize) -> bool + Copy,
) -> HashMap<String, f64> {
    eventually(Duration::from_secs(40), || totals(intake, accepted) == *sent).await;
    totals(intake, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_refusing_connections_for_twenty_seconds_then_back_gets_every_counter_total_exactly_once() {
    // A port nobody listens on yet: connections are refused until the intake starts there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = start(&yaml_for(&format!("http://{addr}"), "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counters(server.udp_address().unwrap(), stop.clone());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let intake = Intake::start_on(addr, |_, _| Reply::Status(202)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(sent.values().sum::<f64>() > 1500.0, "steady traffic: {sent:?}");
    let got = wait_for_totals(&intake, &sent, |_| true).await;
    server.shutdown().await;
    assert_eq!(got, sent, "every total, exactly once");
    let refused = self_metric(&intake, "harrier.sink.requests", "result:connection");
    assert!(
        refused >= 15.0,
        "the outage was seen and reported once back: {refused} refused requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_answering_503_for_twenty_seconds_then_back_gets_every_counter_total_exactly_once() {
    let down = Arc::new(AtomicBool::new(true));
    // The requests answered 202: only their points count.
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let (d, a) = (down.clone(), accepted.clone());
    let intake = Intake::start(move |_, i| {
        if d.load(Ordering::Relaxed) {
            Reply::Status(503)
        } else {
            a.lock().unwrap().insert(i);
            Reply::Status(202)
        }
    })
    .await;
    let server = start(&yaml_for(&intake.url(), "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counters(server.udp_address().unwrap(), stop.clone());
    tokio::time::sleep(Duration::from_secs(20)).await;
    down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let is_accepted = |i: usize| accepted.lock().unwrap().contains(&i);
    let got = wait_for_totals(&intake, &sent, is_accepted).await;
    server.shutdown().await;
    assert_eq!(got, sent, "every total, exactly once, from the accepted requests");
    let answered_503 = intake.requests.lock().unwrap().len() - accepted.lock().unwrap().len();
    assert!(answered_503 >= 15, "the outage was seen: {answered_503} answers 503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_intake_taking_three_seconds_per_post_on_a_one_second_interval_loses_nothing() {
    let intake = Intake::start(|_, _| Reply::After(Duration::from_secs(3), 202)).await;
    let server = start(&yaml_for(&intake.url(), "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counters(server.udp_address().unwrap(), stop.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let got = wait_for_totals(&intake, &sent, |_| true).await;
    server.shutdown().await;
    assert_eq!(
        got, sent,
        "every total, exactly once: no request was cut and sent again"
    );
    assert_eq!(
        self_metric(&intake, "harrier.sink.requests", "result:timeout"),
        0.0,
        "nothing timed out"
    );
    assert_eq!(self_metric(&intake, "harrier.sink.requests", "result:deadline"), 0.0);
    let ok = self_metric(&intake, "harrier.sink.requests", "result:ok");
    assert!(ok >= 5.0, "requests reported delivered: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_queued_on_disk_during_an_outage_arrives_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("harrier-v2-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(", retry_queue_dir: \"{}\"", dir.display());
    let yaml = yaml_for(&format!("http://{addr}"), &extra);
    // First run: the intake refuses connections; the run stops (and flushes) during the outage.
    let first = start(&yaml).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = steady_counters(first.udp_address().unwrap(), stop.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    first.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10), "the stop is bounded");
    let files = std::fs::read_dir(dir.join("datadog")).unwrap().count();
    assert!(files >= 3, "the outage's payloads are on disk: {files}");
    // The intake is back; a second run sends what the first left on disk.
    let intake = Intake::start_on(addr, |_, _| Reply::Status(202)).await;
    let second = start(&yaml).await;
    let got = wait_for_totals(&intake, &sent, |_| true).await;
    second.shutdown().await;
    assert_eq!(got, sent, "every total of the first run, exactly once");
    assert_eq!(
        std::fs::read_dir(dir.join("datadog")).unwrap().count(),
        0,
        "delivered: removed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
