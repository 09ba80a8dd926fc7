//! The operator's controls through the real server: mapper profiles, tag filtering with re-aggregation, the
//! blocklist, per-metric and per-tag limits, the minimum sample rate, the memory budget, and `/debug/series`.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{config, start};

fn send_udp(addr: SocketAddr, lines: &[String]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for chunk in lines.chunks(20) {
        sock.send_to(chunk.join("\n").as_bytes(), addr).unwrap();
    }
}

/// Lines over one TCP connection (nothing is lost, however many).
fn send_tcp(addr: SocketAddr, lines: impl Iterator<Item = String>) {
    let mut stream = std::io::BufWriter::new(TcpStream::connect(addr).unwrap());
    for line in lines {
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
    }
    stream.flush().unwrap();
}

/// [`send_tcp`] off the test's runtime, which also runs the server's connection tasks.
async fn send_tcp_async(addr: SocketAddr, lines: impl Iterator<Item = String> + Send + 'static) {
    tokio::task::spawn_blocking(move || send_tcp(addr, lines))
        .await
        .unwrap();
}

/// `GET path` on the server's HTTP address: the status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut response = harrier::http_get::get(&addr.to_string(), path, Duration::from_secs(10)).unwrap();
    let mut body = String::new();
    response.read_to_string(&mut body).unwrap();
    (response.status, body)
}

#[tokio::test]
async fn wildcard_and_regex_mappings_turn_dotted_names_into_tags() {
    let yaml = config(
        &["udp://127.0.0.1:0"],
        r#"dogstatsd_mapper_profiles:
  - name: airflow
    prefix: "airflow."
    mappings:
      - match: "airflow.job.duration.*.*"
        name: "airflow.job.duration"
        tags: {dag: "$1", task: "${2}"}
  - name: queues
    prefix: "queue."
    mappings:
      - match: 'queue\.([a-z]+)\.(depth|size)'
        match_type: regex
        name: "queue.$2"
        tags: {queue: "$1"}
"#,
    );
    let (server, sink) = start(&yaml).await;
    let udp = server.udp_address().unwrap();
    send_udp(
        udp,
        &[
            "airflow.job.duration.my_dag.my_task:3|c".into(),
            "airflow.job.duration.my_dag.my_task:4|c|#env:prod".into(),
            "airflow.job.duration.other_dag.t:1|c".into(),
            "airflow.job.duration.too.many.parts:1|c".into(),
            "queue.jobs.depth:7|g".into(),
            "queue.mail.size:2|g".into(),
            "untouched.name:5|c".into(),
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await;
    let values = sink.values();
    let expect = [
        ("airflow.job.duration#dag:my_dag,task:my_task", 3.0),
        ("airflow.job.duration#dag:my_dag,env:prod,task:my_task", 4.0),
        ("airflow.job.duration#dag:other_dag,task:t", 1.0),
        ("airflow.job.duration.too.many.parts", 1.0),
        ("queue.depth#queue:jobs", 7.0),
        ("queue.size#queue:mail", 2.0),
        ("untouched.name", 5.0),
    ];
    for (id, v) in expect {
        assert_eq!(values.get(id), Some(&v), "{id} in {values:?}");
    }
    assert_eq!(values.len(), expect.len(), "{values:?}");
}

#[tokio::test]
async fn an_exclude_filter_collapses_a_thousand_request_ids_into_one_series_with_the_exact_sum_and_a_merged_digest() {
    let yaml = config(
        &["tcp://127.0.0.1:0"],
        "metric_tag_filterlist:\n  - {metric_name: req.count, action: exclude, tags: [request_id]}\n  - {metric_name: \
         req.latency, action: exclude, tags: [request_id]}\n  - {metric_name: req.users, action: include, tags: \
         [route]}\n",
    );
    let (server, sink) = start(&yaml).await;
    let tcp = server.tcp_address().unwrap();
    // Each request id twice, so that the second line of a text takes the known path.
    let lines = (0..2).flat_map(|_| {
        (1..=1000).flat_map(|i| {
            [
                format!("req.count:2|c|#request_id:{i},route:a"),
                format!("req.latency:{i}|ms|#route:a,request_id:{i}"),
                format!("req.users:u{}|s|#route:a,request_id:{i},pod:p{}", i % 300, i % 7),
            ]
        })
    });
    send_tcp_async(tcp, lines.collect::<Vec<_>>().into_iter()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.shutdown().await;
    let values = sink.values();
    assert_eq!(values.get("req.count#route:a"), Some(&4000.0), "{values:?}");
    assert_eq!(values.get("req.latency.count#route:a"), Some(&2000.0));
    assert_eq!(values.get("req.latency.min#route:a"), Some(&1.0));
    assert_eq!(values.get("req.latency.max#route:a"), Some(&1000.0));
    let p50 = values["req.latency.50percentile#route:a"];
    assert!((p50 - 500.0).abs() <= 10.0, "p50 of 1..1000 twice: {p50}");
    let p99 = values["req.latency.99percentile#route:a"];
    assert!((p99 - 990.0).abs() <= 10.0, "p99: {p99}");
    let users = values["req.users#route:a"];
    assert!((users - 300.0).abs() <= 6.0, "distinct users in one set: {users}");
    assert!(
        values.keys().all(|k| !k.contains("request_id") && !k.contains("pod:")),
        "{values:?}"
    );
}

#[tokio::test]
async fn blocklisted_names_are_dropped_and_counted_by_entry() {
    let yaml = config(
        &["udp://127.0.0.1:0"],
        "statsd_metric_blocklist: [debug., noisy.]\nstatsd_metric_blocklist_match_prefix: true\n",
    );
    let (server, sink) = start(&yaml).await;
    let mut lines: Vec<String> = (0..30).map(|i| format!("debug.m{i}:1|c")).collect();
    lines.extend((0..5).map(|_| "noisy.x:1|g".to_string()));
    lines.push("kept.metric:9|c".into());
    lines.push("debugger.not.a.prefix.match:1|c".into());
    send_udp(server.udp_address().unwrap(), &lines);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await;
    let values = sink.values();
    assert_eq!(values.get("kept.metric"), Some(&9.0));
    assert!(
        !values
            .keys()
            .any(|k| k.starts_with("debug.") || k.starts_with("noisy.")),
        "{values:?}"
    );
    // `debug.` as a prefix does not match `debugger.`.
    assert_eq!(values.get("debugger.not.a.prefix.match"), Some(&1.0));
    assert_eq!(sink.self_metric("harrier.lines.blocklisted", "entry:debug."), 30.0);
    assert_eq!(sink.self_metric("harrier.lines.blocklisted", "entry:noisy."), 5.0);
}

#[tokio::test]
async fn a_sample_rate_of_1e_9_is_clamped_to_the_minimum_and_counted() {
    let yaml = config(&["udp://127.0.0.1:0"], "num_workers: 1\n");
    let (server, sink) = start(&yaml).await;
    let udp = server.udp_address().unwrap();
    // Three packets, so that the later lines find their series by its text.
    for _ in 0..3 {
        send_udp(
            udp,
            &["tiny.rate:1|c|@0.000000001".into(), "normal.rate:1|c|@0.5".into()],
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown().await;
    let values = sink.values();
    // Counted at the default minimum of 1e-6: a million samples a line, not a billion.
    assert_eq!(values.get("tiny.rate"), Some(&3_000_000.0), "{values:?}");
    assert_eq!(values.get("normal.rate"), Some(&6.0));
    assert_eq!(sink.self_metric("harrier.lines.sample_rate_clamped", ""), 3.0);
}

#[tokio::test]
async fn a_per_metric_limit_keeps_a_well_behaved_metric_complete_while_another_floods_400k_series() {
    let yaml = config(
        &["tcp://127.0.0.1:0"],
        "num_workers: 1\nseries_limit_per_metric: 5000\nseries_limit_per_tag: [{tag: pod_name, limit: 3}]\n",
    );
    let (server, sink) = start(&yaml).await;
    let tcp = server.tcp_address().unwrap();
    let flood = (0..400_000).map(|i| format!("flood.metric:1|c|#request_id:{i}"));
    let good = (0..200).flat_map(|i| (0..3).map(move |_| format!("good.metric:2|c|#route:r{i}")));
    let pods = (0..10).map(|p| format!("pods.metric:1|c|#pod_name:p{p}"));
    send_tcp_async(tcp, good.clone().chain(flood).chain(good).chain(pods)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.shutdown().await;
    let values = sink.values();
    for i in 0..200 {
        assert_eq!(
            values.get(&format!("good.metric#route:r{i}")),
            Some(&12.0),
            "route r{i}"
        );
    }
    let flooded = values.keys().filter(|k| k.starts_with("flood.metric")).count();
    assert_eq!(flooded, 5000);
    assert_eq!(
        sink.self_metric("harrier.series.dropped", "reason:series_limit_per_metric"),
        395_000.0
    );
    let pods = values.keys().filter(|k| k.starts_with("pods.metric")).count();
    assert_eq!(pods, 3);
    assert_eq!(
        sink.self_metric("harrier.series.dropped", "reason:series_limit_per_tag"),
        7.0
    );
    assert_eq!(
        sink.self_metric("harrier.series.limited", "metric:flood.metric"),
        395_000.0,
        "the flooding metric is named among the top offenders"
    );
}

// Multi-threaded: the test's blocking HTTP requests must not stop the server's tasks on the same runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_series_lists_the_flooding_metric_first_with_its_figures() {
    let yaml = config(
        &["tcp://127.0.0.1:0"],
        "num_workers: 1\nhttp_address: \"127.0.0.1:0\"\nseries_limit_per_metric: 3000\n",
    )
    .replace("interval: 1h", "interval: 1s");
    let (server, _sink) = start(&yaml).await;
    let http = server.http_address.unwrap();
    let tcp = server.tcp_address().unwrap();
    let (status, body) = http_get(http, "/debug/series?top=3&sort=nonsense");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sort=nonsense"), "{body}");
    // Two intervals of the same traffic: the table shows the last and the one before.
    for _ in 0..2 {
        let flood = (0..5000).map(|i| format!("exploding.metric:1|c|#request_id:{i}"));
        let calm = (0..10).map(|i| format!("calm.metric:1|g|#host_group:{i}"));
        send_tcp_async(tcp, calm.chain(flood)).await;
        let start = Instant::now();
        let flushed_at = |body: &str| -> i64 {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["flushed_at"].as_i64().unwrap()
        };
        let before = flushed_at(&http_get(http, "/debug/series").1);
        while flushed_at(&http_get(http, "/debug/series").1) == before {
            assert!(start.elapsed() < Duration::from_secs(5), "no flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, body) = http_get(http, "/debug/series?top=1&sort=series");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = v["metrics"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "exploding.metric", "{body}");
    assert_eq!(rows[0]["series"], 3000);
    assert!(rows[0]["bytes"].as_u64().unwrap() >= 3000 * 480);
    let (_, body) = http_get(http, "/debug/series?top=5&sort=dropped");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &v["metrics"][0];
    assert_eq!(first["name"], "exploding.metric");
    // The second interval: 3000 known series took their lines, 2000 were refused; the first the same.
    assert_eq!(first["dropped"]["per_metric"], 2000, "{body}");
    assert_eq!(first["lines"], 3000);
    assert_eq!(first["lines_previous"], 3000);
    let calm = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "calm.metric")
        .unwrap();
    assert_eq!((calm["series"].as_u64(), calm["lines"].as_u64()), (Some(10), Some(10)));
    assert_eq!(v["series"], 3010);
    server.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

#[test]
fn a_memory_limit_flood_keeps_rss_under_the_limit_and_known_series_exact() {
    // With a TCP listener the fixed part counts the workers' batch queues (36 MiB each, two workers here): 160 MiB
    // leaves about 64 MiB to the series, far less than the million sent need.
    let limit_mib = 160u64;
    let mut child = Command::new(BIN)
        .env("HARRIER_STATSD_LISTEN_ADDRESSES", "tcp://127.0.0.1:0")
        .env("HARRIER_HOSTNAME", "mem-test")
        .env("HARRIER_INTERVAL", "1h")
        .env("HARRIER_MEMORY_LIMIT", format!("{limit_mib}MiB"))
        .env("HARRIER_NUM_WORKERS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let tcp: SocketAddr = first
        .split("tcp://")
        .nth(1)
        .and_then(|r| r.split([';', ',', ' ']).next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tcp address in {first:?}"));
    std::thread::spawn(move || for _ in stderr.lines() {});
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    // 100 known series first, then 1,000,000 distinct ones (far beyond what 64 MiB holds), then the known ones
    // again.
    let known = || (0..100).map(|i| format!("known.metric:3|c|#k:{i}"));
    let flood = (0..1_000_000).map(|i| format!("flood.metric.n{i}:1|c|#request_id:{i}"));
    send_tcp(tcp, known().chain(flood).chain(known()));
    std::thread::sleep(Duration::from_millis(1500));
    let peak = common::peak_rss_kib(&child);
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    let lines = out.join().unwrap();
    assert!(
        peak < limit_mib * 1024,
        "peak RSS {peak} KiB over the {limit_mib} MiB limit"
    );
    let value = |l: &str| l.split_whitespace().nth(3).and_then(|v| v.parse::<f64>().ok());
    for i in 0..100 {
        let tags = format!("tags=k:{i}");
        let found = lines
            .iter()
            .find(|l| l.contains(" known.metric ") && l.ends_with(&tags))
            .and_then(|l| value(l));
        assert_eq!(found, Some(6.0), "known.metric {tags}");
    }
    let dropped = lines
        .iter()
        .find(|l| l.contains(" harrier.series.dropped ") && l.contains("reason:memory_limit"))
        .and_then(|l| value(l))
        .unwrap_or_else(|| {
            panic!(
                "no memory_limit drops in {:?}",
                &lines[lines.len().saturating_sub(20)..]
            )
        });
    assert!(dropped > 500_000.0, "lines of new series refused: {dropped}");
}

#[test]
fn bad_controls_are_refused_at_start_naming_the_key() {
    for (yaml, key) in [
        (
            "mapper_profiles: [{name: p, prefix: a, mappings: [{match: 'a.(b', match_type: regex, name: x}]}]",
            "mapper_profiles[0].mappings[0].match",
        ),
        ("series_limit_per_metric: 0", "series_limit_per_metric"),
        (
            "series_limit_per_tag: [{tag: pod, limit: 0}]",
            "series_limit_per_tag[0].limit",
        ),
        (
            "metric_tag_filterlist: [{metric_name: '', tags: [a]}]",
            "metric_tag_filterlist[0].metric_name",
        ),
        ("minimum_sample_rate: 2", "minimum_sample_rate"),
        ("memory_limit: 1MiB", "memory_limit"),
        ("series_limit: 1000000\nmemory_limit: 100MiB", "memory_limit"),
    ] {
        let path = std::env::temp_dir().join(format!("harrier-controls-{}-{}.yaml", std::process::id(), key.len()));
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(BIN)
            .arg("-f")
            .arg(&path)
            .arg("--validate-config")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{yaml}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{yaml}: {stderr}");
    }
}

fn global_yaml(extra: &str) -> String {
    config(
        &["udp://127.0.0.1:0"],
        &format!("grpc_address: \"127.0.0.1:0\"\npercentiles: [0.5]\n{extra}"),
    )
}

fn local_yaml(forward: SocketAddr, extra: &str) -> String {
    config(
        &["tcp://127.0.0.1:0"],
        &format!("forward_address: \"{forward}\"\naggregates: [count]\npercentiles: [0.5]\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_filter_on_the_global_merges_what_a_local_that_does_not_filter_forwards_with_a_filtering_locals() {
    let filter = "metric_tag_filterlist: [{metric_name: fleet.latency, action: exclude, tags: [request_id]}]\n";
    let (global, global_sink) = start(&global_yaml(filter)).await;
    let grpc = global.grpc_address.unwrap();
    let (plain, plain_sink) = start(&local_yaml(grpc, "")).await;
    let (filtering, filtering_sink) = start(&local_yaml(grpc, filter)).await;
    // 1..=500 through the local that does not filter (one series per request id there), 501..=1000 through the
    // one that does.
    let lines = |from: u32| {
        (from..from + 500)
            .map(|i| format!("fleet.latency:{i}|ms|#svc:api,request_id:{i}"))
            .collect::<Vec<_>>()
    };
    send_tcp_async(plain.tcp_address().unwrap(), lines(1).into_iter()).await;
    send_tcp_async(filtering.tcp_address().unwrap(), lines(501).into_iter()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    plain.shutdown().await;
    filtering.shutdown().await;
    assert!(
        common::eventually(Duration::from_secs(10), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            >= 501)
        .await,
        "the locals' digests arrive"
    );
    global.shutdown().await;
    // The local that filters reports one series; the other, one per request id.
    let f = filtering_sink.values();
    assert_eq!(f.get("fleet.latency.count#svc:api"), Some(&500.0), "{f:?}");
    let p = plain_sink.values();
    assert_eq!(p.keys().filter(|k| k.starts_with("fleet.latency.count")).count(), 500);
    // The global merges all 1,000 digests into one series: the median of 1..=1000.
    let g = global_sink.values();
    let medians: Vec<(&String, &f64)> = g
        .iter()
        .filter(|(k, _)| k.starts_with("fleet.latency.50percentile"))
        .collect();
    assert_eq!(medians.len(), 1, "{g:?}");
    assert_eq!(medians[0].0, "fleet.latency.50percentile#svc:api");
    assert!((medians[0].1 - 500.0).abs() <= 10.0, "{medians:?}");
}

/// A server with HTTP, a 1 s interval and one worker, on a multi-threaded test runtime.
fn http_server_yaml(listen: &str, extra: &str) -> String {
    config(
        &[listen],
        &format!("num_workers: 1\nhttp_address: \"127.0.0.1:0\"\n{extra}"),
    )
    .replace("interval: 1h", "interval: 1s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harrier_top_once_against_a_running_server_lists_the_flooding_metric_first() {
    let (server, _sink) = start(&http_server_yaml(
        "tcp://127.0.0.1:0",
        "series_limit_per_metric: 20000\n",
    ))
    .await;
    let (http, tcp) = (server.http_address.unwrap(), server.tcp_address().unwrap());
    let lines = (0..50)
        .map(|i| format!("steady.metric:1|c|#shard:{i}"))
        .chain((0..30_000).map(|i| format!("exploding.requests:1|c|#request_id:{i}")))
        .chain((0..500).map(|i| format!("medium.metric:{i}|g|#pod:{i}")));
    send_tcp_async(tcp, lines).await;
    let flushed = common::eventually(Duration::from_secs(5), || {
        let (_, body) = http_get(http, "/debug/series");
        serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["series"].as_u64() == Some(20_550))
    })
    .await;
    assert!(flushed, "no flush with every series");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["top", "--once", "--address", &http.to_string()])
            .env("COLUMNS", "120")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.shutdown().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("exploding.requests") || l.contains("medium.metric") || l.contains("steady.metric"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(
        rows[0].contains("exploding.requests") && rows[0].contains("20000"),
        "{stdout}"
    );
    assert!(
        rows[1].contains("medium.metric") && rows[2].contains("steady.metric"),
        "{stdout}"
    );
    // The refused series show in the row of the name that flooded.
    assert!(rows[0].contains("10000"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_server_captures_replays_into_a_second_server_with_the_same_counter_totals_and_series() {
    let (first, first_sink) = start(&http_server_yaml("udp://127.0.0.1:0", "")).await;
    let (http, udp) = (first.http_address.unwrap(), first.udp_address().unwrap());
    let file = std::env::temp_dir().join(format!("harrier-controls-{}.capture", std::process::id()));
    let (bin_file, bin_http) = (file.clone(), http.to_string());
    let capture = std::thread::spawn(move || {
        Command::new(BIN)
            .args(["capture", "--address", &bin_http, "--duration", "3s", "--output"])
            .arg(&bin_file)
            .output()
            .unwrap()
    });
    // Traffic once the capture request is under way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lines = Vec::new();
    for round in 0..5 {
        for i in 0..40 {
            lines.push(format!("orders.placed:{}|c|#region:r{i}", round + 1));
            lines.push(format!("orders.latency:{}|ms|#region:r{}", i * 3 + round, i % 4));
        }
        lines.push(format!("queue.depth:{round}|g"));
        lines.push("users.active:u1|s".to_string());
    }
    for chunk in lines.chunks(25) {
        send_udp(udp, chunk);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::task::spawn_blocking(move || capture.join().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    first.shutdown().await;

    let (second, second_sink) = start(&http_server_yaml("udp://127.0.0.1:0", "")).await;
    let to = format!("udp://{}", second.udp_address().unwrap());
    let replay = Command::new(BIN)
        .args(["replay"])
        .arg(&file)
        .args(["--to", &to, "--speed", "0"])
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(
        common::eventually(Duration::from_secs(5), || second.telemetry.listeners[0]
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= lines.len() as u64)
        .await,
        "the replayed lines arrive"
    );
    second.shutdown().await;
    let (a, b) = (first_sink.values(), second_sink.values());
    assert_eq!(a.get("orders.placed#region:r7"), Some(&15.0), "{a:?}");
    // Counters: the same totals per series (the flushes fall differently; the sums do not).
    let counters = |v: &std::collections::HashMap<String, f64>| {
        let mut c: Vec<(String, f64)> = v
            .iter()
            .filter(|(k, _)| k.starts_with("orders.placed") || k.starts_with("orders.latency.count"))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        c.sort_by(|x, y| x.0.cmp(&y.0));
        c
    };
    assert_eq!(counters(&a), counters(&b));
    assert_eq!(counters(&a).len(), 44);
    // The same series.
    let mut keys_a: Vec<&String> = a.keys().collect();
    let mut keys_b: Vec<&String> = b.keys().collect();
    keys_a.sort();
    keys_b.sort();
    assert_eq!(keys_a, keys_b);
    let _ = std::fs::remove_file(&file);
}
