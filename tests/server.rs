//! The local server end to end: real listeners on 127.0.0.1 (ports chosen by the OS), real parse workers and
//! shards, and a capturing sink. Each test sends, then shuts the server down, which runs the final flush.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use harrier::config::ListenAddress;
use harrier::protocol::CheckStatus;
use harrier::server::RunningServer;
use harrier::sink::SeriesKind;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
    Unixgram,
    Unix,
}

/// Sends lines over a transport: datagrams (or frames) of at most ~1400 bytes, or a TCP stream.
fn send(server: &RunningServer, transport: Transport, lines: &[String]) {
    let mut packets: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in lines {
        if !current.is_empty() && current.len() + line.len() + 1 > 1400 {
            packets.push(std::mem::take(&mut current));
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.is_empty() {
        packets.push(current);
    }
    let address = &server.addresses[0];
    match (transport, address) {
        (Transport::Udp, ListenAddress::Udp(addr)) => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            for (i, p) in packets.iter().enumerate() {
                sock.send_to(p.as_bytes(), addr).unwrap();
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        (Transport::Unixgram, ListenAddress::Unixgram(path)) => {
            let sock = UnixDatagram::unbound().unwrap();
            for (i, p) in packets.iter().enumerate() {
                sock.send_to(p.as_bytes(), path).unwrap();
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        (Transport::Tcp, ListenAddress::Tcp(addr)) => {
            let mut conn = TcpStream::connect(addr).unwrap();
            for p in &packets {
                conn.write_all(p.as_bytes()).unwrap();
            }
        }
        (Transport::Unix, ListenAddress::Unix(path)) => {
            let mut conn = UnixStream::connect(path).unwrap();
            for p in &packets {
                conn.write_all(&(p.len() as u32).to_le_bytes()).unwrap();
                conn.write_all(p.as_bytes()).unwrap();
            }
        }
        other => panic!("transport and address do not match: {other:?}"),
    }
}

/// Waits until the server has taken in `lines` lines on its first listener.
async fn wait_for_lines(server: &RunningServer, lines: u64) {
    let stats = server.telemetry.listeners[0].clone();
    let ok = eventually(Duration::from_secs(20), || stats.lines.load(Ordering::Relaxed) >= lines).await;
    assert!(
        ok,
        "server took in {} of {lines} lines",
        stats.lines.load(Ordering::Relaxed)
    );
}

fn listen_url(transport: Transport) -> String {
    match transport {
        Transport::Udp => "udp://127.0.0.1:0".to_string(),
        Transport::Tcp => "tcp://127.0.0.1:0".to_string(),
        Transport::Unixgram => format!("unixgram://{}", socket_path("dgram").display()),
        Transport::Unix => format!("unix://{}", socket_path("stream").display()),
    }
}

/// Every metric type, with exact expectations, over one transport, with `extra` configuration.
async fn every_type_comes_out_exact_over(transport: Transport, extra: &str) {
    let url = listen_url(transport);
    let yaml = config(
        &[&url],
        &format!("aggregates: [min, max, count, sum, avg]\npercentiles: [0.5, 0.9, 0.99]\n{extra}"),
    );
    let (server, sink) = start(&yaml).await;

    let mut lines: Vec<String> = Vec::new();
    for _ in 0..10 {
        lines.push("req.count:1|c|@0.5|#route:/a".to_string());
    }
    lines.push("req.count:2.5|c|#route:/a".to_string());
    lines.push("queue.depth:3|g".to_string());
    lines.push("queue.depth:7|g".to_string());
    for v in 1..=1000 {
        lines.push(format!("latency:{v}|ms|#svc:api"));
    }
    for i in 0..10_000 {
        lines.push(format!("users:user-{i}|s"));
    }
    lines.push("_sc|db.up|2|#db:main|m:primary down".to_string());
    lines.push("_e{6,12}:deploy|api v1\\nlive|t:success|#svc:api".to_string());
    send(&server, transport, &lines);
    wait_for_lines(&server, lines.len() as u64).await;
    server.shutdown().await;

    let v = sink.values();
    assert_eq!(v["req.count#route:/a"], 22.5, "{transport:?}: 10 × 1/0.5 + 2.5");
    assert_eq!(sink.kind_of("req.count#route:/a"), Some(SeriesKind::Counter));
    assert_eq!(v["queue.depth"], 7.0, "{transport:?}: the last gauge wins");
    assert_eq!(v["latency.min#svc:api"], 1.0);
    assert_eq!(v["latency.max#svc:api"], 1000.0);
    assert_eq!(v["latency.count#svc:api"], 1000.0);
    assert_eq!(sink.kind_of("latency.count#svc:api"), Some(SeriesKind::SampleCount));
    assert_eq!(v["latency.sum#svc:api"], 500_500.0);
    assert_eq!(v["latency.avg#svc:api"], 500.5);
    for (suffix, exact) in [
        ("50percentile", 500.0),
        ("90percentile", 900.0),
        ("99percentile", 990.0),
    ] {
        let got = v[&format!("latency.{suffix}#svc:api")];
        // Within 1% of the rank range: 10 values of 1000.
        assert!(
            (got - exact).abs() <= 10.0,
            "{transport:?}: {suffix} = {got}, exact {exact}"
        );
    }
    let users = v["users"];
    assert!(
        (users - 10_000.0).abs() / 10_000.0 < 0.02,
        "{transport:?}: set estimate {users}"
    );

    let flushes = sink.flushes.lock().unwrap();
    let checks: Vec<_> = flushes.iter().flat_map(|f| f.checks.clone()).collect();
    assert_eq!(checks.len(), 1, "{transport:?}");
    assert_eq!(checks[0].name, "db.up");
    assert_eq!(checks[0].status, CheckStatus::Critical);
    assert_eq!(checks[0].message, "primary down");
    assert_eq!(checks[0].tags.output().collect::<Vec<_>>(), vec!["db:main"]);
    let events: Vec<_> = flushes.iter().flat_map(|f| f.events.clone()).collect();
    assert_eq!(events.len(), 1, "{transport:?}");
    assert_eq!(events[0].title, "deploy");
    assert_eq!(events[0].text, "api v1\nlive");
    assert_eq!(events[0].alert_type.as_str(), "success");
    assert_eq!(flushes[0].hostname, "test-host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_udp() {
    every_type_comes_out_exact_over(Transport::Udp, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_tcp() {
    every_type_comes_out_exact_over(Transport::Tcp, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_unixgram() {
    every_type_comes_out_exact_over(Transport::Unixgram, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_unix_stream() {
    every_type_comes_out_exact_over(Transport::Unix, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_udp_with_reader_threads() {
    every_type_comes_out_exact_over(Transport::Udp, "num_readers: 2\nnum_workers: 3\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_udp_when_one_of_three_workers_reads_the_socket() {
    every_type_comes_out_exact_over(Transport::Udp, "num_readers: 0\nnum_workers: 3\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_comes_out_exact_over_unixgram_with_reader_threads() {
    every_type_comes_out_exact_over(Transport::Unixgram, "num_readers: 2\nnum_workers: 2\n").await;
}

/// Lines already in the socket when the server is told to stop reach the final flush, whoever reads the socket.
async fn lines_queued_at_stop_are_flushed(extra: &str) {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], extra)).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let packet = "queued.at.stop:1|c|#a:b\n".repeat(50);
    for _ in 0..100 {
        sock.send_to(packet.as_bytes(), addr).unwrap();
    }
    // No wait: most of these are still in the socket's queue.
    server.shutdown().await;
    assert_eq!(sink.values()["queued.at.stop#a:b"], 5000.0, "{extra}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_queued_in_the_socket_at_stop_are_flushed_with_reader_threads() {
    lines_queued_at_stop_are_flushed("num_readers: 2\nnum_workers: 2\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_queued_in_the_socket_at_stop_are_flushed_when_the_workers_read() {
    lines_queued_at_stop_are_flushed("num_readers: 0\nnum_workers: 2\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_150k_bad_lines_among_good_ones_over_two_workers_is_counted_by_reason_and_the_good_lines_are_exact()
{
    // Two reader threads (two SO_REUSEPORT sockets) and two workers, fed by two senders: both workers count drops.
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "num_readers: 2\nnum_workers: 2\n")).await;
    let addr = server.udp_address().unwrap();
    let bad: [(&str, &[u8]); 6] = [
        ("no_pipe", b"nopipe:1"),
        ("bad_type", b"x:1|zz"),
        ("non_finite_value", b"x:nan|g"),
        ("sample_rate_out_of_range", b"x:1|c|@7"),
        ("bad_timestamp", b"x:1|c|T-x"),
        ("invalid_utf8", b"x\xff:1|c"),
    ];
    let per_reason = 25_000;
    let senders = [
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    let mut packet = Vec::new();
    let mut sent_lines = 0u64;
    let mut datagrams = 0usize;
    for i in 0..per_reason {
        for (_, line) in bad {
            packet.extend_from_slice(line);
            packet.push(b'\n');
        }
        packet.extend_from_slice(format!("flood.good:1|c|#k:{}\n", i % 100).as_bytes());
        sent_lines += bad.len() as u64 + 1;
        if packet.len() > 1300 || i + 1 == per_reason {
            senders[datagrams % 2].send_to(&packet, addr).unwrap();
            packet.clear();
            datagrams += 1;
            if datagrams.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    wait_for_lines(&server, sent_lines).await;
    server.shutdown().await;
    let good: f64 = sink
        .values()
        .iter()
        .filter(|(k, _)| k.starts_with("flood.good#"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(good, per_reason as f64, "every good line counted once");
    for (reason, _) in bad {
        assert_eq!(
            sink.self_metric("harrier.lines.rejected", &format!("reason:{reason}")),
            per_reason as f64,
            "{reason}"
        );
    }
    assert_eq!(sink.self_metric("harrier.lines.rejected", ""), 150_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_lines_in_a_mixed_packet_are_aggregated_and_bad_ones_counted_by_reason() {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "")).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let packet: &[u8] = b"good.a:1|c\nbad\ngood.b:2|g\nx:nan|g\n_sc|x|9\nx:1|gauge\nx:1|c|@2\n\xff\xfe:1|c\ngood.a:4|c";
    sock.send_to(packet, addr).unwrap();
    sock.send_to(b"good.a:1|c|@0.5|T0", addr).unwrap();
    wait_for_lines(&server, 10).await;
    server.shutdown().await;

    let v = sink.values();
    assert_eq!(v["good.a"], 5.0);
    assert_eq!(v["good.b"], 2.0);
    assert_eq!(v.len(), 2, "only the good lines produce series: {v:?}");
    for (reason, n) in [
        ("no_pipe", 1.0),
        ("non_finite_value", 1.0),
        ("bad_service_check_status", 1.0),
        ("bad_type", 1.0),
        ("sample_rate_out_of_range", 1.0),
        ("bad_timestamp", 1.0),
        ("invalid_utf8", 1.0),
    ] {
        assert_eq!(
            sink.self_metric("harrier.lines.rejected", &format!("reason:{reason}")),
            n,
            "{reason}"
        );
    }
    assert_eq!(sink.self_metric("harrier.lines.rejected", ""), 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_datagram_is_counted_and_produces_no_metric() {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "metric_max_length: 100\n")).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let big: String = (0..20).map(|i| format!("big.{i}:1|c\n")).collect();
    assert!(big.len() > 100);
    sock.send_to(big.as_bytes(), addr).unwrap();
    sock.send_to(b"small:1|c", addr).unwrap();
    wait_for_lines(&server, 1).await;
    server.shutdown().await;

    let v = sink.values();
    assert_eq!(v.get("small"), Some(&1.0));
    assert!(v.keys().all(|k| !k.starts_with("big.")), "{v:?}");
    assert_eq!(sink.self_metric("harrier.listener.oversize", ""), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamped_counters_and_gauges_pass_through_and_other_types_are_dropped() {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "")).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        b"ts.c:5|c|T1700000000\nts.c:1|c\nts.g:2|g|T1700000010\nts.h:1|h|T1700000000",
        addr,
    )
    .unwrap();
    wait_for_lines(&server, 4).await;
    server.shutdown().await;
    let series = sink.user_series();
    let stamped: Vec<_> = series.iter().filter(|s| s.timestamp < 1_750_000_000).collect();
    assert_eq!(stamped.len(), 2, "{series:?}");
    assert!(stamped
        .iter()
        .any(|s| &*s.name == "ts.c" && s.value == 5.0 && s.timestamp == 1_700_000_000));
    assert!(stamped
        .iter()
        .any(|s| &*s.name == "ts.g" && s.value == 2.0 && s.timestamp == 1_700_000_010));
    // The untimestamped ts.c is aggregated on its own.
    assert!(series
        .iter()
        .any(|s| &*s.name == "ts.c" && s.value == 1.0 && s.timestamp > 1_700_000_010));
    assert!(!series.iter().any(|s| s.name.starts_with("ts.h")));
    assert_eq!(
        sink.self_metric("harrier.lines.dropped", "reason:timestamp_on_unsupported_type"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_device_tags_set_the_series_host_and_device_and_extend_tags_apply() {
    let (server, sink) = start(&config(&["udp://127.0.0.1:0"], "extend_tags: [\"env:prod\"]\n")).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"disk.used:5|g|#host:db-1,device:sda1,env:dev,role:db", addr)
        .unwrap();
    wait_for_lines(&server, 1).await;
    server.shutdown().await;
    let s = sink
        .user_series()
        .into_iter()
        .find(|s| &*s.name == "disk.used")
        .unwrap();
    assert_eq!(s.host("test-host"), Some("db-1"));
    assert_eq!(s.tags.device(), Some("sda1"));
    assert_eq!(s.tags.output().collect::<Vec<_>>(), vec!["env:prod", "role:db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tcp_line_is_counted_and_the_connection_stays_open() {
    let (server, sink) = start(&config(&["tcp://127.0.0.1:0"], "metric_max_length: 64\n")).await;
    let mut conn = TcpStream::connect(server.tcp_address().unwrap()).unwrap();
    conn.write_all(b"a:1|c\nthis is not a metric\n").unwrap();
    conn.write_all(format!("{}\n", "x".repeat(100)).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    conn.write_all(b"a:2|c\n").unwrap();
    wait_for_lines(&server, 3).await;
    server.shutdown().await;
    assert_eq!(sink.values()["a"], 3.0);
    assert_eq!(sink.self_metric("harrier.lines.rejected", "reason:no_pipe"), 1.0);
    assert_eq!(sink.self_metric("harrier.listener.oversize", ""), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_is_closed() {
    let (server, _sink) = start(&config(&["tcp://127.0.0.1:0"], "tcp_idle_timeout: 200ms\n")).await;
    let mut conn = TcpStream::connect(server.tcp_address().unwrap()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(1);
    assert_eq!(n, 0, "the server closes the idle connection");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_unix_stream_frame_closes_that_connection() {
    let path = socket_path("frame");
    let url = format!("unix://{}", path.display());
    let (server, sink) = start(&config(&[&url], "metric_max_length: 64\n")).await;
    let mut conn = UnixStream::connect(&path).unwrap();
    conn.write_all(&5u32.to_le_bytes()).unwrap();
    conn.write_all(b"f:1|c").unwrap();
    conn.write_all(&1000u32.to_le_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut conn, &mut buf).unwrap_or(1),
        0,
        "connection closed"
    );
    // Another connection still works.
    let mut other = UnixStream::connect(&path).unwrap();
    other.write_all(&5u32.to_le_bytes()).unwrap();
    other.write_all(b"f:2|c").unwrap();
    wait_for_lines(&server, 2).await;
    server.shutdown().await;
    assert_eq!(sink.values()["f"], 3.0);
    assert_eq!(sink.self_metric("harrier.listener.oversize", ""), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_unix_socket_file_is_replaced_at_start() {
    let path = socket_path("stale");
    drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let url = format!("unixgram://{}", path.display());
    let (server, sink) = start(&config(&[&url], "")).await;
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"stale.ok:1|c", &path)
        .unwrap();
    wait_for_lines(&server, 1).await;
    server.shutdown().await;
    assert_eq!(sink.values()["stale.ok"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_happen_every_interval_and_state_resets() {
    let yaml = config(&["udp://127.0.0.1:0"], "").replace("interval: 1h", "interval: 300ms");
    let (server, sink) = start(&yaml).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"tick:1|c", addr).unwrap();
    assert!(eventually(Duration::from_secs(5), || sink.values().get("tick") == Some(&1.0)).await);
    let flushes_before = sink.flush_count();
    assert!(eventually(Duration::from_secs(5), || sink.flush_count() >= flushes_before + 2).await);
    // Nothing is re-emitted once the series is idle.
    assert_eq!(sink.values()["tick"], 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_server_answers_healthcheck_and_version() {
    let yaml = config(&["udp://127.0.0.1:0"], "http_address: \"127.0.0.1:0\"\n");
    let (server, _sink) = start(&yaml).await;
    let addr = server.http_address.unwrap();
    let get = |path: &str| {
        let mut conn = TcpStream::connect(addr).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut conn, &mut body).unwrap();
        body
    };
    let health = get("/healthcheck");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    let version = get("/version");
    assert!(version.ends_with(&format!("{}\n", harrier::VERSION)), "{version}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_emits_aggregates_but_not_percentiles_or_sets() {
    // The global does not exist: forwarding fails (counted) and the local still emits its part. A short interval
    // bounds the final flush's forwarding attempts.
    let yaml = config(
        &["udp://127.0.0.1:0"],
        "forward_address: \"127.0.0.1:9\"\npercentiles: [0.5]\n",
    )
    .replace("interval: 1h", "interval: 2s");
    let (server, sink) = start(&yaml).await;
    let addr = server.udp_address().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        b"lat:1|ms\nlat:3|ms\nu:a|s\nlocal.lat:5|ms|#veneurlocalonly\nlocal.u:a|s|#veneurlocalonly\ng.c:2|c|#veneurglobalonly\nplain:1|c",
        addr,
    )
    .unwrap();
    wait_for_lines(&server, 7).await;
    server.shutdown().await;
    let v = sink.values();
    assert_eq!(v["lat.min"], 1.0);
    assert_eq!(v["lat.max"], 3.0);
    assert_eq!(v["lat.count"], 2.0);
    assert!(!v.contains_key("lat.50percentile"), "{v:?}");
    assert!(!v.contains_key("u"), "{v:?}");
    assert_eq!(v["local.lat.50percentile"], 5.0);
    assert_eq!(v["local.u"], 1.0);
    assert!(!v.contains_key("g.c"), "{v:?}");
    assert_eq!(v["plain"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_second_server_cannot_take_a_udp_port_already_in_use() {
    // The default read mode binds one socket without SO_REUSEPORT: a second instance fails to start instead of
    // silently taking part of the traffic.
    let (server, _sink) = start(&config(&["udp://127.0.0.1:0"], "num_workers: 4\n")).await;
    let addr = server.udp_address().unwrap();
    let yaml = config(&[&format!("udp://{addr}")], "num_workers: 4\n");
    let second = harrier::config::Config::from_yaml_with_env(&yaml, "test", |_| None).unwrap();
    let started = harrier::server::start(second, vec![]).await;
    assert!(started.is_err(), "a second server bound {addr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_is_closed_and_counted_while_the_open_ones_go_on() {
    let yaml = config(&["tcp://127.0.0.1:0"], "max_connections: 2\n");
    let (server, sink) = start(&yaml).await;
    let addr = server.tcp_address().unwrap();
    let mut first = TcpStream::connect(addr).unwrap();
    let mut second = TcpStream::connect(addr).unwrap();
    first.write_all(b"open.one:1|c\n").unwrap();
    second.write_all(b"open.two:1|c\n").unwrap();
    let stats = server.telemetry.listeners[0].clone();
    assert!(
        eventually(Duration::from_secs(5), || stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2)
        .await
    );
    let mut third = TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    let closed = matches!(std::io::Read::read(&mut third, &mut buf), Ok(0) | Err(_));
    assert!(closed, "the third connection is closed by the server");
    assert!(
        eventually(Duration::from_secs(5), || stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
        .await
    );
    first.write_all(b"open.one:2|c\n").unwrap();
    drop((first, second));
    assert!(
        eventually(Duration::from_secs(5), || server.telemetry.listeners[0]
            .lines
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3)
        .await
    );
    server.shutdown().await;
    let v = sink.values();
    assert_eq!(v["open.one"], 3.0);
    assert_eq!(v["open.two"], 1.0);
}
