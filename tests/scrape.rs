//! `prometheus_scrape` through the real server, into a Datadog test intake: Debian's `prometheus-node-exporter` and
//! Prometheus's own `/metrics` as targets, a fake exporter whose values the test controls (histograms rebuilt as
//! distributions), and targets that hang, fail or send 50 MB beside a good one.

use crate::common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::cluster::{free_port, wait_until};
use crate::common::intake::{Intake, Point, Reply};
use crate::common::tsdb::Tsdb;
use harrier::config::Config;
use harrier::server::{self, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Debian's node exporter on a free loopback port; killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        assert!(
            std::path::Path::new(NODE_EXPORTER).exists(),
            "{NODE_EXPORTER} is missing: the scrape tests need it (`apt-get install -y prometheus-node-exporter`; \
             .ci/run installs it on a fresh machine)"
        );
        let port = free_port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the node exporter starts");
        // Ready when it accepts (a TCP connect is not a request: its own request counter stays at 0).
        wait_until(Duration::from_secs(20), "the node exporter accepts", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        NodeExporter { child, port }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://addr/path` as text.
async fn get(addr: &str, path: &str) -> String {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose line starts with `series ` in a text-format body.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// A server with the intake as its Datadog sink (v1 JSON), flushing every second, and `scrape` as its
/// `prometheus_scrape` entries (YAML flow sequence).
async fn start_server(intake: &Intake, scrape: &str, extra: &str) -> RunningServer {
    let yaml = format!(
        "statsd_listen_addresses: []\ninterval: 1s\nhostname: scraper\n{extra}\
         metric_sinks: [{{kind: datadog, config: {{api_key: k, api_hostname: \"{}\", series_api: v1}}}}]\n\
         prometheus_scrape: {scrape}\n",
        intake.url()
    );
    let config = Config::from_yaml_with_env(&yaml, "scrape-test", |_| None).unwrap();
    server::start(config, vec![]).await.unwrap()
}

fn points_named<'a>(points: &'a [Point], name: &'a str) -> impl Iterator<Item = &'a Point> + 'a {
    points.iter().filter(move |p| p.metric == name)
}

fn has_tags(p: &Point, tags: &[&str]) -> bool {
    tags.iter().all(|t| p.tags.iter().any(|pt| pt == t))
}

/// The sum over every flush of a metric's points carrying `tags`.
fn total(points: &[Point], name: &str, tags: &[&str]) -> f64 {
    points_named(points, name)
        .filter(|p| has_tags(p, tags))
        .map(Point::total)
        .sum()
}

fn all_points(intake: &Intake) -> Vec<Point> {
    intake.points().into_iter().map(|(_, p)| p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_counters_add_up_to_its_own_difference_and_its_gauges_match() {
    let exporter = NodeExporter::start();
    let addr = format!("127.0.0.1:{}", exporter.port);
    let intake = Intake::accepting().await;
    let before = get(&addr, "/metrics").await;
    let scrape = format!("[{{targets: [\"{addr}\"], interval: 500ms}}]");
    let server = start_server(&intake, &scrape, "").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.shutdown().await;
    let after = get(&addr, "/metrics").await;
    let points = all_points(&intake);
    let target = format!("target:{addr}");
    let ok = total(&points, "harrier.scrape.scrapes", &[&target, "result:ok"]).round();
    assert!(ok >= 4.0, "the target was read every 500 ms: {ok} reads");

    // The exporter counts the requests it answered; the test's first request saw 0, Harrier's reads came next.
    let requests = "promhttp_metric_handler_requests_total{code=\"200\"}";
    assert_eq!(sample(&before, requests), 0.0);
    let seen_by_harrier = total(&points, "promhttp_metric_handler_requests_total", &["code:200"]);
    // Harrier's first read (which saw 1, the test's request) only primed; its last saw 1 + (ok - 1).
    assert_eq!(
        seen_by_harrier,
        ok - 1.0,
        "the counter's differences add up to the exporter's"
    );
    let answered = sample(&after, requests);
    assert!(
        answered == ok + 1.0 || answered == ok + 2.0,
        "the exporter answered {answered} requests: the test's first, Harrier's {ok} (and one abandoned at the stop)"
    );

    let instance = format!("instance:{addr}");
    let idle = ["cpu:0", "mode:idle", instance.as_str()];
    let cpu = total(&points, "node_cpu_seconds_total", &idle);
    let cpu_series = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}";
    let limit = sample(&after, cpu_series) - sample(&before, cpu_series);
    assert!(
        cpu > 0.0 && cpu <= limit + 1e-9,
        "idle seconds {cpu} within the exporter's own {limit}"
    );

    let mem = points_named(&points, "node_memory_MemTotal_bytes")
        .last()
        .unwrap_or_else(|| panic!("no MemTotal gauge in {} points", points.len()));
    assert_eq!(mem.kind, "gauge");
    assert_eq!(mem.value, sample(&after, "node_memory_MemTotal_bytes"));
    assert!(has_tags(mem, &[&instance]), "{:?}", mem.tags);
    let up = points_named(&points, "harrier.scrape.up")
        .filter(|p| has_tags(p, &[&target]))
        .last();
    assert_eq!(up.map(|p| p.value), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_own_histogram_buckets_add_up_to_its_count() {
    let prometheus = Tsdb::prometheus().await;
    let addr = format!("127.0.0.1:{}", prometheus.port);
    let intake = Intake::accepting().await;
    let scrape = format!("[{{targets: [\"{addr}\"], interval: 500ms, metrics_allow: [\"prometheus_http_.*\"]}}]");
    let server = start_server(&intake, &scrape, "").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.shutdown().await;
    let points = all_points(&intake);
    let name = "prometheus_http_request_duration_seconds";
    let handler = "handler:/metrics";
    let count = total(&points, &format!("{name}.count"), &[handler]);
    let ok = total(
        &points,
        "harrier.scrape.scrapes",
        &[&format!("target:{addr}"), "result:ok"],
    )
    .round();
    // Every read of /metrics is one observation; only Harrier reads it, and its first read primed.
    assert_eq!(count, ok - 1.0, "the histogram's count grew by Harrier's reads");
    let inf = total(&points, &format!("{name}.bucket"), &[handler, "le:+Inf"]);
    assert_eq!(inf, count, "the +Inf bucket holds every observation");
    let mut by_le: Vec<(f64, f64)> = HashMap::<String, f64>::from_iter(
        points_named(&points, &format!("{name}.bucket"))
            .filter(|p| has_tags(p, &[handler]))
            .filter_map(|p| {
                p.tags
                    .iter()
                    .find_map(|t| t.strip_prefix("le:"))
                    .map(|le| (le.to_string(), 0.0))
            }),
    )
    .into_keys()
    .map(|le| {
        let tag = format!("le:{le}");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        (bound, total(&points, &format!("{name}.bucket"), &[handler, &tag]))
    })
    .collect();
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(by_le.len() > 3, "{by_le:?}");
    assert!(
        by_le.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets: {by_le:?}"
    );
    let sum = total(&points, &format!("{name}.sum"), &[handler]);
    assert!(sum > 0.0 && sum < count * 10.0, "{sum}");
    assert!(
        points_named(&points, "go_goroutines").next().is_none(),
        "metrics_allow keeps only prometheus_http_*"
    );
}

/// What the fake exporter answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A counter growing by 5 and a histogram growing by 4 observations per request.
    Good,
    Hang,
    Status500,
    /// 50 MB of valid lines.
    Huge,
}

/// A fake exporter on a loopback port; `served` counts the bodies it wrote whole.
async fn fake_exporter(behaviour: Behaviour) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                answer(&mut conn, behaviour, &count).await;
            });
        }
    });
    (addr, served)
}

async fn answer(conn: &mut tokio::net::TcpStream, behaviour: Behaviour, served: &AtomicU64) {
    match behaviour {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::Status500 => {
            let _ = conn
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops")
                .await;
        }
        Behaviour::Huge => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").await;
            let chunk = "huge_gauge{i=\"0000000000\"} 1\n".repeat(1000);
            for _ in 0..(50_000_000 / chunk.len()) {
                if conn.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        Behaviour::Good => {
            let k = served.load(Ordering::SeqCst) + 1;
            let body = format!(
                "# TYPE fake_jobs_total counter\nfake_jobs_total {}\nfake_temperature 21.5\n\
                 # TYPE fake_lat histogram\nfake_lat_bucket{{le=\"0.1\"}} {}\nfake_lat_bucket{{le=\"1\"}} {}\n\
                 fake_lat_bucket{{le=\"+Inf\"}} {}\nfake_lat_sum {}\nfake_lat_count {}\n",
                5 * k,
                k,
                3 * k,
                4 * k,
                2.5 * k as f64,
                4 * k
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            if conn.write_all(head.as_bytes()).await.is_ok() && conn.write_all(body.as_bytes()).await.is_ok() {
                served.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_a_failing_and_a_50_mb_target_do_not_delay_a_good_targets_flushes() {
    let (good, served) = fake_exporter(Behaviour::Good).await;
    let (hang, _) = fake_exporter(Behaviour::Hang).await;
    let (failing, _) = fake_exporter(Behaviour::Status500).await;
    let (huge, _) = fake_exporter(Behaviour::Huge).await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let intake = Intake::start(move |req, _| {
        if req.path == "/api/v1/series" {
            seen.lock().unwrap().push((Instant::now(), req.points()));
        }
        Reply::Status(202)
    })
    .await;
    let scrape = format!(
        "[{{targets: [\"{good}\"], interval: 1s}}, \
          {{targets: [\"{hang}\", \"{failing}\", \"{huge}\"], interval: 1s, timeout: 900ms}}]"
    );
    let server = start_server(&intake, &scrape, "").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.shutdown().await;

    let arrivals = arrivals.lock().unwrap().clone();
    let with_good: Vec<Instant> = arrivals
        .iter()
        .filter(|(_, points)| points.iter().any(|p| p.metric == "fake_temperature"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        with_good.len() >= 5,
        "the good target's gauge is in {} of {} flushes",
        with_good.len(),
        arrivals.len()
    );
    let gaps: Vec<Duration> = with_good.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1600)),
        "a flush with the good target's metrics every second: {gaps:?}"
    );
    let points: Vec<Point> = arrivals.into_iter().flat_map(|(_, p)| p).collect();
    for (target, reason) in [(&hang, "timeout"), (&failing, "status"), (&huge, "too_large")] {
        let tags = [format!("target:{target}"), format!("result:{reason}")];
        let n = total(&points, "harrier.scrape.scrapes", &[&tags[0], &tags[1]]).round();
        assert!(n >= 4.0, "{target}: {n} reads ended with {reason}");
        let up = points_named(&points, "harrier.scrape.up")
            .filter(|p| has_tags(p, &[&tags[0]]))
            .last();
        assert_eq!(up.map(|p| p.value), Some(0.0), "{target} is down");
    }
    assert!(
        points_named(&points, "huge_gauge").next().is_none(),
        "nothing of an abandoned body is kept"
    );
    let n = served.load(Ordering::SeqCst) as f64;
    let jobs = total(&points, "fake_jobs_total", &[]);
    assert_eq!(
        jobs,
        5.0 * (n - 1.0),
        "the good counter's differences add up over {n} reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_histograms_distribution_a_histograms_observations_join_the_series_digest_with_the_exact_count() {
    let (good, served) = fake_exporter(Behaviour::Good).await;
    let intake = Intake::accepting().await;
    let scrape = format!("[{{targets: [\"{good}\"], interval: 500ms, histograms: distribution, prefix: \"app.\"}}]");
    let server = start_server(&intake, &scrape, "distributions: histogram\npercentiles: [0.5]\n").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.shutdown().await;
    let points = all_points(&intake);
    let n = served.load(Ordering::SeqCst) as f64;
    assert!(n >= 4.0);
    // Each read after the first adds 4 observations: 1 in (0, 0.1], 2 in (0.1, 1], 1 above 1.
    assert_eq!(total(&points, "app.fake_lat.count", &[]), 4.0 * (n - 1.0));
    let max = points_named(&points, "app.fake_lat.max")
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert!(
        max > 0.1 && max <= 1.0,
        "the +Inf bucket's observations sit at its lower bound: max {max}"
    );
    let min = points_named(&points, "app.fake_lat.min")
        .map(|p| p.value)
        .fold(f64::MAX, f64::min);
    assert!(min > 0.0 && min <= 0.1, "min {min}");
    let median = points_named(&points, "app.fake_lat.50percentile")
        .last()
        .map(|p| p.value);
    assert!(median.is_some_and(|m| m > 0.1 && m <= 1.0), "median {median:?}");
    assert!(
        points_named(&points, "app.fake_lat.bucket").next().is_none(),
        "no bucket counters in this mode"
    );
    assert_eq!(total(&points, "app.fake_jobs_total", &[]), 5.0 * (n - 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_found_by_dns_discovery_are_scraped() {
    let (good, served) = fake_exporter(Behaviour::Good).await;
    let port: u16 = good.rsplit_once(':').unwrap().1.parse().unwrap();
    let dns = common::cluster::Dns::start("127.0.0.1 exporters.test\n", &[]);
    let intake = Intake::accepting().await;
    let scrape = format!(
        "[{{discovery: {{kind: dns_a, name: exporters.test, port: {port}, nameserver: \"{}\", refresh: 1s}}, \
          interval: 500ms}}]",
        dns.nameserver()
    );
    let server = start_server(&intake, &scrape, "").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.shutdown().await;
    let points = all_points(&intake);
    let n = served.load(Ordering::SeqCst) as f64;
    assert!(n >= 3.0, "the discovered target was read {n} times");
    assert_eq!(
        total(&points, "fake_jobs_total", &[&format!("instance:{good}")]),
        5.0 * (n - 1.0)
    );
    let targets = points_named(&points, "harrier.scrape.targets").last().map(|p| p.value);
    assert_eq!(targets, Some(1.0));
}
