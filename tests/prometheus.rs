//! The remote-write sink against real databases started by the test: Debian's Prometheus (2.42, with
//! `--web.enable-remote-write-receiver`) and VictoriaMetrics. DogStatsD lines go through the real server over
//! UDP; the answers come from PromQL queries on the database's HTTP API.

use crate::common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use crate::common::tsdb::Tsdb;
use harrier::config::Config;
use harrier::server::{self, RunningServer};

async fn harrier_writing_to(tsdb: &Tsdb) -> RunningServer {
    let yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nhostname: web-1\n\
         aggregates: [min, max, count]\npercentiles: [0.5, 0.99]\n\
         metric_sinks: [{{kind: prometheus_remote_write, name: prom, config: {{url: \"{}\", \
         headers: {{X-Scope-OrgID: tenant-1}}, max_samples_per_request: 3}}}}]\n",
        tsdb.write_url()
    );
    let config = Config::from_yaml_with_env(&yaml, "t", |_| None).expect("config");
    server::start(config, vec![]).await.expect("server starts")
}

/// Polls `promql` until it answers `want` (the sink flushes every second).
async fn until_value(tsdb: &Tsdb, promql: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = tsdb.value(promql).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}: {promql} answers {got:?}, expected {want}",
            tsdb.kind
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn labels(result: &serde_json::Value) -> BTreeMap<String, String> {
    result["metric"]
        .as_object()
        .expect("a metric")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Three rounds of lines, each checked once the database has it; then every type's mapping and a label set.
async fn counters_gauges_timers_and_sets_arrive_with_their_labels(tsdb: Tsdb) {
    let server = harrier_writing_to(&tsdb).await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.udp_address().unwrap();
    let mut total = 0;
    for round in 1..=3 {
        let lines = format!(
            "deploys:{round}|c|#svc:api,env:b,env:a,canary\nqueue.depth:{}|g|#db:main\n\
             api.latency:10|ms|#route:/a\napi.latency:20|ms|#route:/a\napi.latency:30|ms|#route:/a\n\
             users:u0|s\nusers:u{round}|s\n9.bad-name:1|g",
            round * 10
        );
        sock.send_to(lines.as_bytes(), addr).unwrap();
        total += round;
        // The counter's running total: exact after every interval.
        until_value(&tsdb, "deploys_total", f64::from(total)).await;
    }
    until_value(&tsdb, "queue_depth{db=\"main\"}", 30.0).await;
    let checks = [
        ("api_latency_min{route=\"/a\"}", 10.0),
        ("api_latency_max{route=\"/a\"}", 30.0),
        ("api_latency_count{route=\"/a\"}", 3.0),
        ("api_latency_50percentile{route=\"/a\"}", 20.0),
        ("users", 2.0),
        ("_9_bad_name", 1.0),
        ("sum by (svc) (deploys_total)", 6.0),
    ];
    for (promql, want) in checks {
        assert_eq!(tsdb.value(promql).await, Some(want), "{:?}: {promql}", tsdb.kind);
        eprintln!("{:?}: {promql} → {want}", tsdb.kind);
    }
    let deploys = tsdb.query("deploys_total").await;
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    let want: BTreeMap<String, String> = [
        ("__name__", "deploys_total"),
        ("canary", "true"),
        ("env", "a,b"),
        ("host", "web-1"),
        ("svc", "api"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels(&deploys[0]), want, "{:?}", tsdb.kind);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_receives_every_type_with_exact_counter_totals() {
    counters_gauges_timers_and_sets_arrive_with_their_labels(Tsdb::prometheus().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_victoria_metrics_receives_every_type_with_exact_counter_totals() {
    counters_gauges_timers_and_sets_arrive_with_their_labels(Tsdb::victoria_metrics().await).await;
}

mod requests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::common::intake::{Intake, Reply};
    use harrier::aggregate::TagSet;
    use harrier::config::PrometheusConfig;
    use harrier::sink::prometheus::{proto, PrometheusSink};
    use harrier::sink::{Flush, Series, SeriesKind, Sink, SinkOutcome};
    use harrier::telemetry::Telemetry;
    use prost::Message;

    fn flush_of(n: usize) -> Arc<Flush> {
        Arc::new(Flush {
            timestamp: 1_700_000_000,
            interval: Duration::from_secs(2),
            hostname: "h".to_string(),
            series: (0..n)
                .map(|i| Series {
                    name: format!("m.{i}").into(),
                    suffix: Default::default(),
                    tags: TagSet::from_tags(["k:v"]),
                    value: i as f64,
                    kind: SeriesKind::Gauge,
                    timestamp: 1_700_000_000,
                })
                .collect(),
            ..Flush::default()
        })
    }

    fn sink(intake: &Intake) -> PrometheusSink {
        let cfg = PrometheusConfig {
            url: format!("{}/api/v1/write", intake.url()),
            headers: [("Authorization".to_string(), "Bearer s3cret".to_string())].into(),
            max_samples_per_request: 4,
            ..PrometheusConfig::default()
        };
        PrometheusSink::new("prom", cfg, Arc::new(Telemetry::default())).unwrap()
    }

    #[tokio::test]
    async fn requests_carry_the_remote_write_headers_and_snappy_protobuf_bodies() {
        let intake = Intake::start(|_, _| Reply::Status(204)).await;
        assert_eq!(sink(&intake).flush(flush_of(10)).await, SinkOutcome::Ok);
        let reqs = intake.requests_to("/api/v1/write");
        assert_eq!(reqs.len(), 3, "10 samples in requests of at most 4");
        let mut names = Vec::new();
        for r in &reqs {
            let h = |k: &str| r.headers.get(k).map(String::as_str);
            assert_eq!(h("content-encoding"), Some("snappy"));
            assert_eq!(h("content-type"), Some("application/x-protobuf"));
            assert_eq!(h("x-prometheus-remote-write-version"), Some("0.1.0"));
            assert_eq!(h("authorization"), Some("Bearer s3cret"));
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&r.body)
                .expect("snappy block format");
            let req = proto::WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
            names.extend(req.timeseries.iter().map(|t| t.labels[0].value.clone()));
        }
        names.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("m_{i}")).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[tokio::test]
    async fn a_server_error_is_retried_and_a_bad_request_is_not() {
        // The first request fails with 503, the retry is accepted.
        let flaky = Intake::start(|_, i| if i == 0 { Reply::Status(503) } else { Reply::Status(204) }).await;
        assert_eq!(sink(&flaky).flush(flush_of(1)).await, SinkOutcome::Ok);
        assert_eq!(flaky.requests_to("/api/v1/write").len(), 2, "one 503, then accepted");

        let refusing = Intake::start(|_, _| Reply::Status(400)).await;
        let outcome = sink(&refusing).flush(flush_of(1)).await;
        assert!(
            matches!(outcome, SinkOutcome::Failed { reason: "http_400", .. }),
            "{outcome:?}"
        );
        assert_eq!(refusing.requests_to("/api/v1/write").len(), 1, "a 400 is not retried");
    }
}

/// `GET /metrics`, scraped by a real Prometheus (its parser is strict: a malformed line fails the scrape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_self_metrics_and_the_listener_counter_grows_with_traffic() {
    let yaml = "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nhostname: web-1\n\
                http_address: 127.0.0.1:0\nmetric_sinks: []\n";
    let config = Config::from_yaml_with_env(yaml, "t", |_| None).expect("config");
    let server = server::start(config, vec![]).await.expect("server starts");
    let http = server.http_address.expect("http listener").to_string();
    let tsdb = Tsdb::prometheus_scraping(Some(&http)).await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = server.udp_address().unwrap();
    let lines = "a:1|c\nb:2|g\nc:3|ms";
    let send = |n: usize| {
        for _ in 0..n {
            sock.send_to(lines.as_bytes(), udp).unwrap();
        }
    };
    let query = "sum(harrier_listener_lines_total)";
    send(10);
    until_value(&tsdb, "up{job=\"harrier\"}", 1.0).await;
    until_value(&tsdb, query, 30.0).await;
    send(20);
    until_value(&tsdb, query, 90.0).await;
    eprintln!("{query} → 90 after 30 datagrams of 3 lines");
    server.shutdown().await;
}
