//! Veneur's own configuration files run unchanged: `tests/veneur/v14.yaml` (v14.2's flat keys) and
//! `tests/veneur/head.yaml` (HEAD's nested sinks), each covering every key family of Veneur's reference.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::eventually;
use common::intake::Intake;
use harrier::config::Config;
use harrier::server;

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

/// A Veneur file with its placeholders filled, written to a temporary path.
fn veneur_file(name: &str, test: &str, intake: &str, stats: &str) -> (String, std::path::PathBuf) {
    let text = std::fs::read_to_string(format!("tests/veneur/{name}"))
        .unwrap()
        .replace("{INTAKE}", intake)
        .replace("{STATS}", stats);
    let path = std::env::temp_dir().join(format!("harrier-veneur-{}-{test}-{name}", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    (text, path)
}

fn validate(flag: &str, path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN).arg(flag).arg("-f").arg(path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn veneur_v14_and_head_configs_validate_with_one_warning_naming_each_ignored_setting() {
    let expected: [(&str, &[&str]); 2] = [
        (
            "v14.yaml",
            &[
                "ssf_listen_addresses",
                "tls_key",
                "num_span_workers",
                "sentry_dsn",
                "features",
                "datadog_trace_api_address",
                "signalfx_api_key",
                "kafka_broker",
                "splunk_hec_address",
                "trace_lightstep_access_token",
                "xray_address",
                "aws_s3_bucket",
                "flush_file",
                "forward_use_grpc: false",
            ],
        ),
        (
            "head.yaml",
            &[
                "http",
                "features",
                "tls",
                "sources",
                "span_sinks",
                "veneur_metrics_scopes",
                "metric_sinks[datadog].max_name_length",
                "metric_sinks[datadog].config.metric_name_prefix_drops",
                "metric_sinks[sfx] (kind signalfx)",
            ],
        ),
    ];
    for (name, keys) in expected {
        let (_, path) = veneur_file(name, "validate", "http://127.0.0.1:9", "127.0.0.1:9");
        let (code, stderr) = validate("--validate-config", &path);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let warning = stderr
            .lines()
            .find(|l| l.contains("ignoring Veneur settings"))
            .unwrap_or_else(|| panic!("{name}: no warning in {stderr}"));
        for key in keys {
            assert!(stderr.contains(key), "{name}: {key} is not named in {stderr}");
        }
        assert!(
            !warning.contains("statsd_listen_addresses"),
            "a shared key is not ignored: {warning}"
        );
        let (code, stderr) = validate("--validate-config-strict", &path);
        assert_eq!(code, Some(1), "{name}: strict validation refuses warnings: {stderr}");

        // A key neither Harrier nor Veneur knows is still an error that names it.
        let text = std::fs::read_to_string(&path).unwrap() + "\nnot_a_veneur_key: 1\n";
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = validate("--validate-config", &path);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains("not_a_veneur_key"), "{stderr}");
        let _ = std::fs::remove_file(&path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veneur_v14_config_runs_and_its_counter_arrives_with_the_sink_tags_and_no_host() {
    let intake = Intake::accepting().await;
    let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
    stats.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (text, path) = veneur_file(
        "v14.yaml",
        "run",
        &intake.url(),
        &stats.local_addr().unwrap().to_string(),
    );
    let _ = std::fs::remove_file(path);
    let config = Config::from_yaml_with_env(&text, "v14.yaml", |_| None).expect("a Veneur file loads");
    assert!(!config.warnings.is_empty());
    let server = server::start(config, vec![]).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"veneur.deploys:3|c|#svc:api", server.udp_address().unwrap())
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !intake.series_requests().is_empty()).await,
        "the Datadog sink made from datadog_api_key/datadog_api_hostname posted"
    );
    // Self-metrics go to stats_address as DogStatsD, not to the sinks.
    let mut buf = [0u8; 2048];
    let (n, _) = stats.recv_from(&mut buf).expect("self-metrics at stats_address");
    let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(datagram.contains("harrier.") && datagram.contains("|c"), "{datagram}");
    server.shutdown().await;

    let reqs = intake.series_requests();
    assert_eq!(
        reqs[0].headers.get("dd-api-key").map(String::as_str),
        Some("test-key-v14")
    );
    let points: Vec<_> = intake.points().into_iter().map(|(_, p)| p).collect();
    let deploys = points
        .iter()
        .find(|p| p.metric == "veneur.deploys")
        .unwrap_or_else(|| panic!("no veneur.deploys in {points:?}"));
    assert_eq!(
        deploys.tags,
        vec!["env:ci", "svc:api", "team:metrics"],
        "extend_tags and tags applied"
    );
    assert_eq!(deploys.host, None, "omit_empty_hostname: no host: {deploys:?}");
    assert!(
        points.iter().all(|p| !p.metric.starts_with("harrier.")),
        "self-metrics went to stats_address only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veneur_head_config_runs_with_its_nested_datadog_sink() {
    let intake = Intake::accepting().await;
    let (text, path) = veneur_file("head.yaml", "run", &intake.url(), "");
    let _ = std::fs::remove_file(path);
    let config = Config::from_yaml_with_env(&text, "head.yaml", |_| None).expect("a Veneur file loads");
    let kinds: Vec<_> = config
        .metric_sinks
        .iter()
        .map(|s| s.display_name().to_string())
        .collect();
    assert_eq!(
        kinds,
        vec!["datadog", "debug"],
        "the signalfx sink is dropped, debug is the console"
    );
    let server = server::start(config, vec![]).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"veneur.head:2|c|#svc:api", server.udp_address().unwrap())
        .unwrap();
    let arrived = || {
        intake
            .points()
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| p.metric == "veneur.head")
    };
    assert!(eventually(Duration::from_secs(10), || arrived().is_some()).await);
    server.shutdown().await;
    let p = arrived().unwrap();
    assert_eq!(p.host.as_deref(), Some("veneur-head"));
    assert_eq!(p.tags, ["env:ci", "svc:api"]);
    assert_eq!(
        intake.series_requests()[0]
            .headers
            .get("dd-api-key")
            .map(String::as_str),
        Some("test-key-head")
    );
}
