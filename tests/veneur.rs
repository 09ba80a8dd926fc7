//! Veneur's own configuration files run unchanged: the example files Veneur publishes (`tests/veneur/v14.2.0/`,
//! `tests/veneur/head/`, byte for byte from stripe/veneur; sources in `tests/veneur/README.md`), and
//! `tests/veneur/v14.yaml` (v14.2's flat keys) and `tests/veneur/head.yaml` (HEAD's nested sinks), written from
//! Veneur's reference to cover every key family.

use crate::common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::cluster::Dns;
use crate::common::intake::Intake;
use crate::common::{eventually, socket_path, CaptureSink};
use harrier::config::{Config, ListenAddress};
use harrier::server::{self, RunningServer};
use harrier::sink::Sink;

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

        // forward_use_grpc: false matters only to a file that forwards: v14.yaml's forward_address is "".
        assert!(!stderr.contains("forward_use_grpc"), "{name}: {stderr}");
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("forward_use_grpc: false") {
            let forwarding = text.replace("forward_address: \"\"", "forward_address: \"127.0.0.1:9\"");
            let with_address = path.with_extension("forwarding.yaml");
            std::fs::write(&with_address, forwarding).unwrap();
            let (code, stderr) = validate("--validate-config", &with_address);
            assert_eq!(code, Some(0), "{name}: {stderr}");
            assert!(stderr.contains("forward_use_grpc: false"), "{name}: {stderr}");
        }

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

/// Veneur's published example files for `veneur` (v14.2.0 and HEAD), checked in unchanged.
const PUBLISHED: [&str; 4] = [
    "v14.2.0/example.yaml",
    "v14.2.0/example_host.yaml",
    "head/example.yaml",
    "head/example_host.yaml",
];

fn published(name: &str) -> String {
    std::fs::read_to_string(format!("tests/veneur/{name}")).unwrap()
}

#[test]
fn veneurs_published_example_files_validate_with_warnings_and_fail_strict_validation() {
    for name in PUBLISHED {
        // The file itself, as Veneur ships it: validation parses every address (the abstract socket
        // `unixgram:@veneur-statsd.sock` included) but binds nothing.
        let path = std::path::Path::new("tests/veneur").join(name);
        let (code, stderr) = validate("--validate-config", &path);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let warning = stderr
            .lines()
            .find(|l| l.contains("ignoring Veneur settings for features Harrier does not have"))
            .unwrap_or_else(|| panic!("{name}: no warning in {stderr}"));
        for key in ["sentry_dsn", "trace_max_length_bytes"] {
            assert!(warning.contains(key), "{name}: {key} is not named in {warning}");
        }
        assert!(!warning.contains("statsd_listen_addresses"), "{name}: {warning}");
        if name.ends_with("/example.yaml") {
            for key in [
                "ssf_listen_addresses",
                "grpc_listen_addresses",
                "tls_key",
                "veneur_metrics_scopes",
            ] {
                assert!(warning.contains(key), "{name}: {key} is not named in {warning}");
            }
            assert!(
                stderr.contains("extend_tags: ignoring the empty tag"),
                "{name}: {stderr}"
            );
        }
        let (code, stderr) = validate("--validate-config-strict", &path);
        assert_eq!(
            code,
            Some(1),
            "{name}: strict validation refuses the warnings: {stderr}"
        );
        assert!(stderr.contains("ignoring Veneur settings"), "{name}: {stderr}");
    }
}

/// Veneur's published `example_proxy.yaml` files (veneur-proxy's keys; HEAD still ships the v14.2 proxy's).
const PROXY_FILES: [&str; 2] = ["v14.2.0/example_proxy.yaml", "head/example_proxy.yaml"];

#[test]
fn veneurs_proxy_example_files_validate_as_a_harrier_proxy_and_fail_strict_validation() {
    for name in PROXY_FILES {
        let path = std::path::Path::new("tests/veneur").join(name);
        let (code, stderr) = validate("--validate-config", &path);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let warning = stderr
            .lines()
            .find(|l| l.contains("ignoring Veneur settings for features Harrier does not have"))
            .unwrap_or_else(|| panic!("{name}: no warning in {stderr}"));
        for key in [
            "forward_address (http://veneur.example.com",
            "consul_forward_service_name",
            "consul_trace_service_name",
            "trace_address",
            "trace_api_address",
            "forward_timeout",
            "idle_connection_timeout",
            "max_idle_conns_per_host",
            "tracing_client_capacity",
            "tracing_client_flush_interval",
            "tracing_client_metrics_interval",
            "runtime_metrics_interval",
            "ssf_destination_address",
            "sentry_dsn",
            "enable_profiling",
            "debug",
        ] {
            assert!(warning.contains(key), "{name}: {key} is not named in {warning}");
        }
        assert!(
            stderr.contains("grpcForwardServiceName.service.consul")
                && stderr.contains("grpc_forward_address is not used"),
            "{name}: the warnings say how the globals are found: {stderr}"
        );
        let (code, stderr) = validate("--validate-config-strict", &path);
        assert_eq!(
            code,
            Some(1),
            "{name}: strict validation refuses the warnings: {stderr}"
        );
        assert!(stderr.contains("ignoring Veneur settings"), "{name}: {stderr}");
    }
}

/// A proxy from a published `example_proxy.yaml`, its listeners on free loopback ports and `stats_address` a
/// socket of the test's; with `consul_dns`, the file also names the DNS server that stands in for Consul's.
fn proxy_from_example(name: &str, stats: &UdpSocket, consul_dns: Option<&str>) -> Config {
    let rewrites = vec![
        ("\"localhost:8127\"", "\"127.0.0.1:0\"".to_string()),
        ("\"localhost:8128\"", "\"127.0.0.1:0\"".to_string()),
        ("\"localhost:8125\"", format!("\"{}\"", stats.local_addr().unwrap())),
    ];
    let mut text = rewrite(name, &published(name), &rewrites);
    if let Some(dns) = consul_dns {
        text.push_str(&format!(
            "forward_discovery: {{kind: dns_srv, name: grpcForwardServiceName.service.consul, nameserver: \"{dns}\", \
             refresh: 1s}}\n"
        ));
    }
    let config = Config::from_yaml_with_env(&text, name, |_| None).expect("the published file loads");
    assert!(config.proxy, "{name} is a proxy");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veneurs_proxy_example_files_start_and_answer_unhealthy_while_consul_has_no_global() {
    for name in PROXY_FILES {
        let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Consul's DNS interface (127.0.0.1:8600) has no agent on this machine: the proxy starts, and says in its
        // health check that it reaches no global.
        let proxy = server::start(proxy_from_example(name, &stats, None), vec![])
            .await
            .unwrap();
        let http = proxy.http_address.expect("http_address is served");
        let status = http_status(http, "/healthcheck");
        assert_eq!(status, 503, "{name}: a proxy with no global is unhealthy");
        proxy.shutdown().await;
    }
}

/// The status code of `GET path` on a plain HTTP/1.1 server.
fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_from_veneurs_example_routes_a_locals_timer_to_the_global_its_consul_name_finds() {
    let name = "head/example_proxy.yaml";
    let (global, global_sink) = start_global().await;
    let port = global.grpc_address.unwrap().port();
    let dns = Dns::start(
        "127.0.0.1 global.test\n",
        &[("grpcForwardServiceName.service.consul", "global.test", port)],
    );
    let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy = server::start(proxy_from_example(name, &stats, Some(&dns.nameserver())), vec![])
        .await
        .unwrap();
    let local_yaml = format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nforward_address: \"{}\"\n",
        proxy.grpc_address.unwrap()
    );
    let (local, _) = common::start(&local_yaml).await;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let routed = eventually(Duration::from_secs(30), || {
        udp.send_to(b"proxied.latency:5|ms", local.udp_address().unwrap())
            .unwrap();
        global_sink
            .user_series()
            .iter()
            .any(|s| s.full_name().to_string() == "proxied.latency.50percentile")
    })
    .await;
    assert!(routed, "the global got {:?}", global_sink.user_series());
    local.shutdown().await;
    proxy.shutdown().await;
    global.shutdown().await;
}

/// A Harrier global on a free gRPC port, flushing every second and reporting medians: where the tests' locals and
/// proxies forward.
async fn start_global() -> (RunningServer, Arc<CaptureSink>) {
    common::start("statsd_listen_addresses: []\ngrpc_address: \"127.0.0.1:0\"\ninterval: 1s\npercentiles: [0.5]\n")
        .await
}

/// A unique name in Linux's abstract socket namespace (shared by every process of the network namespace, so
/// Veneur's fixed `veneur-statsd.sock` could collide with a running Veneur or a parallel test).
fn abstract_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "harrier-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Rewrites, in memory, what a published file asks for that cannot run on a test machine: each `(from, to)`
/// replaces text that must occur exactly once, so the test notices when the file changes.
fn rewrite(name: &str, text: &str, rewrites: &[(&str, String)]) -> String {
    let mut text = text.to_string();
    for (from, to) in rewrites {
        assert_eq!(text.matches(from).count(), 1, "{name}: {from:?} is in the file once");
        text = text.replace(from, to);
    }
    text
}

/// The rewrites of `example.yaml`: fixed ports (Veneur's 8126–8128, taken on a machine running Veneur, and on
/// 0.0.0.0) become OS-chosen ports on 127.0.0.1, `/tmp/veneur-statsd.sock` a unique temporary path, the abstract
/// name a unique one; `stats_address` (Harrier's own metrics, sent as DogStatsD) a socket of the test's.
fn example_rewrites(unix: &std::path::Path, abstract_name: &str, stats: &UdpSocket) -> Vec<(&'static str, String)> {
    vec![
        ("udp://localhost:8126", "udp://127.0.0.1:0".to_string()),
        ("tcp://localhost:8126", "tcp://127.0.0.1:0".to_string()),
        (
            "unixgram:///tmp/veneur-statsd.sock",
            format!("unixgram://{}", unix.display()),
        ),
        ("unixgram:@veneur-statsd.sock", format!("unixgram:@{abstract_name}")),
        ("\"localhost:8126\"", format!("\"{}\"", stats.local_addr().unwrap())),
        ("\"0.0.0.0:8127\"", "\"127.0.0.1:0\"".to_string()),
        ("\"0.0.0.0:8128\"", "\"127.0.0.1:0\"".to_string()),
    ]
}

/// Sends one counter to each of the server's listeners, named after the listener's kind.
fn send_to_every_listener(server: &RunningServer, prefix: &str) -> Vec<String> {
    let mut sent = Vec::new();
    for address in &server.addresses {
        let kind = match address {
            ListenAddress::Udp(_) => "udp",
            ListenAddress::Tcp(_) => "tcp",
            ListenAddress::Unixgram(_) => "unixgram",
            ListenAddress::UnixgramAbstract(_) => "abstract",
            other => panic!("the published files have no {other} listener"),
        };
        let line = format!("{prefix}.{kind}:1|c|#via:{kind}");
        match address {
            ListenAddress::Udp(a) => {
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .send_to(line.as_bytes(), a)
                    .unwrap();
            }
            ListenAddress::Tcp(a) => {
                let mut conn = TcpStream::connect(a).unwrap();
                conn.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            ListenAddress::Unixgram(path) => {
                UnixDatagram::unbound().unwrap().send_to(line.as_bytes(), path).unwrap();
            }
            ListenAddress::UnixgramAbstract(name) => {
                // A NUL byte and the name: no file is involved.
                let to = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
                UnixDatagram::unbound()
                    .unwrap()
                    .send_to_addr(line.as_bytes(), &to)
                    .unwrap();
            }
            _ => unreachable!(),
        }
        sent.push(format!("{prefix}.{kind}"));
    }
    sent
}

/// Waits (the files' `interval: 10s`, aligned to the clock, so up to two intervals) until every name is flushed to
/// the capture sink.
async fn flushed(sink: &CaptureSink, names: &[String]) -> bool {
    eventually(Duration::from_secs(30), || {
        let got = sink.user_series();
        names
            .iter()
            .all(|n| got.iter().any(|s| *s.name == **n && s.value == 1.0))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veneur_v14_2_example_yaml_starts_and_flushes_what_each_listener_got_abstract_socket_included() {
    let name = "v14.2.0/example.yaml";
    let intake = Intake::accepting().await;
    let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = socket_path("v14-example");
    let abstract_name = abstract_name("v14-example");
    let mut rewrites = example_rewrites(&unix, &abstract_name, &stats);
    // Its Datadog sink (`datadog_api_key: "farts"`) would post to app.datadoghq.com: a local test intake instead.
    rewrites.push(("https://app.datadoghq.com", intake.url()));
    let text = rewrite(name, &published(name), &rewrites);
    let config = Config::from_yaml_with_env(&text, name, |_| None).expect("the published file loads");
    let sink = Arc::new(CaptureSink::default());
    let server = server::start(config, vec![sink.clone() as Arc<dyn Sink>])
        .await
        .unwrap();
    assert_eq!(server.addresses.len(), 4, "{:?}", server.addresses);
    assert!(server
        .addresses
        .contains(&ListenAddress::UnixgramAbstract(abstract_name.clone())));
    assert!(server.http_address.is_some() && server.grpc_address.is_some());

    let names = send_to_every_listener(&server, "v14ex");
    assert!(
        flushed(&sink, &names).await,
        "{names:?} not all in {:?}",
        sink.user_series()
    );
    let arrived = || {
        let points = intake.points();
        names.iter().all(|n| points.iter().any(|(_, p)| p.metric == *n))
    };
    assert!(
        eventually(Duration::from_secs(10), arrived).await,
        "the Datadog sink posted to the intake: {:?}",
        intake.points()
    );
    server.shutdown().await;
    let _ = std::fs::remove_file(&unix);
    let reqs = intake.series_requests();
    assert_eq!(reqs[0].headers.get("dd-api-key").map(String::as_str), Some("farts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veneur_head_example_yaml_starts_and_flushes_what_each_listener_got_abstract_socket_included() {
    let name = "head/example.yaml";
    let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = socket_path("head-example");
    let abstract_name = abstract_name("head-example");
    let text = rewrite(name, &published(name), &example_rewrites(&unix, &abstract_name, &stats));
    let config = Config::from_yaml_with_env(&text, name, |_| None).expect("the published file loads");
    // HEAD's file configures no metric sink: the test adds its capture sink (no rewrite of the file).
    assert!(config.metric_sinks.is_empty());
    let sink = Arc::new(CaptureSink::default());
    let server = server::start(config, vec![sink.clone() as Arc<dyn Sink>])
        .await
        .unwrap();
    assert_eq!(server.addresses.len(), 4, "{:?}", server.addresses);
    let names = send_to_every_listener(&server, "headex");
    assert!(names.contains(&"headex.abstract".to_string()));
    assert!(
        flushed(&sink, &names).await,
        "{names:?} not all in {:?}",
        sink.user_series()
    );
    // Its `extend_tags: [""]` adds no tag.
    let abstract_series = sink
        .user_series()
        .into_iter()
        .find(|s| *s.name == *"headex.abstract")
        .unwrap();
    assert_eq!(abstract_series.tags.output().collect::<Vec<_>>(), ["via:abstract"]);
    server.shutdown().await;
    let _ = std::fs::remove_file(&unix);
}

/// `example_host.yaml` is a local forwarding to a global at `http://127.0.0.1:8127`: a Harrier global started by
/// the test takes that place, so the forwarded timer is seen there and the counter at the local.
async fn run_example_host(name: &str, intake: Option<&Intake>) -> (Arc<CaptureSink>, Arc<CaptureSink>) {
    let (global, global_sink) = start_global().await;
    let stats = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rewrites = vec![
        ("udp://localhost:8126", "udp://127.0.0.1:0".to_string()),
        ("\"localhost:8125\"", format!("\"{}\"", stats.local_addr().unwrap())),
        (
            "\"http://127.0.0.1:8127\"",
            format!("\"http://{}\"", global.grpc_address.unwrap()),
        ),
    ];
    if let Some(intake) = intake {
        rewrites.push(("https://app.datadoghq.com", intake.url()));
    }
    let text = rewrite(name, &published(name), &rewrites);
    let config = Config::from_yaml_with_env(&text, name, |_| None).expect("the published file loads");
    assert!(config.is_local(), "{name} forwards");
    let sink = Arc::new(CaptureSink::default());
    let local = server::start(config, vec![sink.clone() as Arc<dyn Sink>])
        .await
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"host.hits:1|c|#via:udp\nhost.latency:5|ms",
        local.udp_address().unwrap(),
    )
    .unwrap();
    assert!(
        flushed(&sink, &["host.hits".to_string()]).await,
        "{name}: {:?}",
        sink.user_series()
    );
    let forwarded = eventually(Duration::from_secs(30), || {
        global_sink
            .user_series()
            .iter()
            .any(|s| s.full_name().to_string() == "host.latency.50percentile")
    })
    .await;
    assert!(forwarded, "{name}: the global got {:?}", global_sink.user_series());
    local.shutdown().await;
    global.shutdown().await;
    (sink, global_sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veneur_v14_2_example_host_yaml_starts_flushes_and_forwards_to_a_global() {
    let intake = Intake::accepting().await;
    let (sink, _) = run_example_host("v14.2.0/example_host.yaml", Some(&intake)).await;
    assert!(sink.user_series().iter().any(|s| *s.name == *"host.hits"));
    let point = intake
        .points()
        .into_iter()
        .map(|(_, p)| p)
        .find(|p| p.metric == "host.hits")
        .unwrap_or_else(|| panic!("the Datadog sink posted: {:?}", intake.points()));
    assert_eq!(point.tags, ["baz:quz", "foo:bar", "via:udp"], "the sink tags of `tags`");
    assert_eq!(point.host.as_deref(), Some("foobar"), "hostname: foobar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veneur_head_example_host_yaml_starts_flushes_and_forwards_to_a_global() {
    run_example_host("head/example_host.yaml", None).await;
}
