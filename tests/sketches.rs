//! Distributions as the Datadog agent's DDSketch (`distributions: sketch`, the default): sent to
//! `/api/beta/sketches` as `SketchPayload`s with exact count, min, max and sum and percentiles within the mapping's
//! accuracy; forwarded by locals and merged exactly by the global; and `distributions: histogram` still giving
//! today's t-digest series. Each test starts the real servers and a local intake that decodes what it receives.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use crate::common::eventually;
use crate::common::intake::Intake;
use harrier::config::Config;
use harrier::ddsketch::DdSketch;
use harrier::server::{self, RunningServer};
use harrier::sink::datadog::payload::sketch_payload::sketch::Dogsketch;

const KEY: &str = "test-api-key-sketches";
/// The agent's mapping: gamma = 1 + 2/128, key(v) = round(ln v / ln gamma) + 1338.
const GAMMA: f64 = 1.015625;
const BIAS: i32 = 1338;

async fn start(yaml: &str) -> RunningServer {
    let config = Config::from_yaml_with_env(yaml, "t", |_| None).unwrap();
    server::start(config, vec![]).await.unwrap()
}

fn send(server: &RunningServer, lines: &[String]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for chunk in lines.chunks(20) {
        sock.send_to(chunk.join("\n").as_bytes(), server.udp_address().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Bins summed over several Dogsketches (the merge the intake would make).
fn bins(ds: &[&Dogsketch]) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    for d in ds {
        assert_eq!(d.k.len(), d.n.len());
        for (k, n) in d.k.iter().zip(&d.n) {
            *out.entry(*k).or_default() += u64::from(*n);
        }
    }
    out
}

/// The q-quantile read from bins the way the mapping defines them, independently of Harrier's code: the bin that
/// holds the sample of rank q·(count−1), read as its key's value gamma^(key − bias) (positive keys only).
fn quantile_of_bins(bins: &BTreeMap<i32, u64>, q: f64) -> f64 {
    let count: u64 = bins.values().sum();
    let rank = (q * (count - 1) as f64).round() as u64;
    let mut seen = 0;
    for (k, n) in bins {
        seen += n;
        if seen > rank {
            return GAMMA.powi(k - BIAS);
        }
    }
    unreachable!()
}

/// The sample of rank q·(count−1) in sorted order.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributions_arrive_as_sketches_with_exact_statistics_and_percentiles_within_the_mapping_accuracy() {
    let intake = Intake::accepting().await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1h\nhostname: web-1\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\"}}}}]\n",
        intake.url()
    );
    let server = start(&yaml).await;
    // 2,000 values from 0.5 to 1000, log-spread, with three decimals; a tenth sampled at rate 0.5 (weight 2).
    let values: Vec<f64> = (0..2000)
        .map(|i| (0.5 * 2000f64.powf(i as f64 / 1999.0) * 1000.0).round() / 1000.0)
        .collect();
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 10 == 0 {
                format!("req.latency:{v}|d|@0.5|#route:/a")
            } else {
                format!("req.latency:{v}|d|#route:/a")
            }
        })
        .collect();
    send(&server, &lines);
    let stats = server.telemetry.listeners[0].clone();
    assert!(
        eventually(Duration::from_secs(10), || stats
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2000)
        .await
    );
    server.shutdown().await;

    let got = intake.dogsketches("req.latency");
    assert_eq!(got.len(), 1, "one sketch for the interval");
    let (tags, host, d) = &got[0];
    assert_eq!(tags, &["route:/a"]);
    assert_eq!(host, "web-1");
    let r = &intake.requests_to("/api/beta/sketches")[0];
    assert_eq!(r.headers.get("content-encoding").map(String::as_str), Some("zstd"));
    // Exact statistics, weights included (the agent's weight: 1/rate, truncated).
    let mut weighted: Vec<f64> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        weighted.push(*v);
        if i % 10 == 0 {
            weighted.push(*v);
        }
    }
    weighted.sort_by(f64::total_cmp);
    assert_eq!(d.cnt, 2200);
    assert_eq!(d.min, 0.5);
    assert_eq!(d.max, 1000.0);
    let sum: f64 = weighted.iter().sum();
    assert!((d.sum - sum).abs() <= 1e-9 * sum, "{} vs {sum}", d.sum);
    assert!((d.avg - sum / 2200.0).abs() <= 1e-9 * sum);
    // Percentiles within the mapping's accuracy (a bin spans 2/128 of its value: two bins of slack).
    let b = bins(&[d]);
    assert_eq!(b.values().sum::<u64>(), 2200);
    for q in [0.5, 0.9, 0.99] {
        let (est, exact) = (quantile_of_bins(&b, q), exact_quantile(&weighted, q));
        assert!(
            (est - exact).abs() <= 2.0 * (GAMMA - 1.0) * exact,
            "p{q}: {est} vs exact {exact}"
        );
    }
    // Datadog computes the distribution's percentiles: no series of it goes to the series endpoint.
    assert!(intake
        .points()
        .iter()
        .all(|(_, p)| !p.metric.starts_with("req.latency")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributions_as_histogram_still_give_todays_t_digest_series_and_no_sketch() {
    let intake = Intake::accepting().await;
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1h\ndistributions: histogram\n\
         aggregates: [min, max, count]\npercentiles: [0.5]\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\"}}}}]\n",
        intake.url()
    );
    let server = start(&yaml).await;
    let lines: Vec<String> = (1..=5).map(|v| format!("req.size:{v}|d")).collect();
    send(&server, &lines);
    let stats = server.telemetry.listeners[0].clone();
    assert!(
        eventually(Duration::from_secs(10), || stats
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5)
        .await
    );
    server.shutdown().await;
    assert!(intake.requests_to("/api/beta/sketches").is_empty());
    let got: BTreeMap<String, (String, f64)> = intake
        .points()
        .into_iter()
        .filter(|(_, p)| p.metric.starts_with("req.size"))
        .map(|(_, p)| (p.metric.clone(), (p.kind.clone(), p.total())))
        .collect();
    let want: BTreeMap<String, (String, f64)> = [
        ("req.size.min", ("gauge", 1.0)),
        ("req.size.max", ("gauge", 5.0)),
        ("req.size.count", ("rate", 5.0)),
        ("req.size.50percentile", ("gauge", 3.0)),
    ]
    .into_iter()
    .map(|(k, (t, v))| (k.to_string(), (t.to_string(), v)))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locals_forward_their_sketches_and_the_global_merges_them_exactly() {
    let intake = Intake::accepting().await;
    let global = start(&format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\ngrpc_address: \"127.0.0.1:0\"\n\
         metric_sinks: [{{kind: datadog, config: {{api_key: {KEY}, api_hostname: \"{}\"}}}}]\n",
        intake.url()
    ))
    .await;
    let grpc = global.grpc_address.unwrap();
    let local_yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nforward_address: \"{grpc}\"\n\
         metric_sinks: [{{kind: console}}]\n"
    );
    let (a, b) = (start(&local_yaml).await, start(&local_yaml).await);
    // Different ranges on each host, overlapping in the middle.
    let on_a: Vec<f64> = (1..=3000).map(|i| i as f64 * 0.37).collect();
    let on_b: Vec<f64> = (1..=5000).map(|i| 500.0 + i as f64 * 1.3).collect();
    send(
        &a,
        &on_a
            .iter()
            .map(|v| format!("job.duration:{v}|d|#team:x"))
            .collect::<Vec<_>>(),
    );
    send(
        &b,
        &on_b
            .iter()
            .map(|v| format!("job.duration:{v}|d|#team:x"))
            .collect::<Vec<_>>(),
    );
    let arrived = || -> u64 {
        intake
            .dogsketches("job.duration")
            .iter()
            .map(|(_, _, d)| d.cnt as u64)
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(30), || arrived() == 8000).await,
        "{} of 8000 samples arrived as sketches",
        arrived()
    );
    a.shutdown().await;
    b.shutdown().await;
    global.shutdown().await;

    let got = intake.dogsketches("job.duration");
    assert!(got.iter().all(|(tags, _, _)| tags == &["team:x"]));
    let ds: Vec<&Dogsketch> = got.iter().map(|(_, _, d)| d).collect();
    // The union of what arrived is the sketch of every sample of both hosts: exact.
    let mut expected = DdSketch::default();
    for v in on_a.iter().chain(&on_b) {
        expected.insert(*v, 1);
    }
    let want: BTreeMap<i32, u64> = expected.bins().map(|(k, n)| (i32::from(k), u64::from(n))).collect();
    assert_eq!(bins(&ds), want, "merged bin for bin");
    let min = ds.iter().map(|d| d.min).fold(f64::INFINITY, f64::min);
    let max = ds.iter().map(|d| d.max).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((min, max), (0.37, 500.0 + 5000.0 * 1.3));
    let sum: f64 = ds.iter().map(|d| d.sum).sum();
    let want_sum: f64 = on_a.iter().chain(&on_b).sum();
    assert!((sum - want_sum).abs() <= 1e-9 * want_sum);
    // The locals reported nothing of it themselves.
    assert!(intake
        .points()
        .iter()
        .all(|(_, p)| !p.metric.starts_with("job.duration")));
}
