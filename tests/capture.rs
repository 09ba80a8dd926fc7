//! `harrier capture` and `harrier replay`, the built binary, against a small axum server in the test serving
//! `capture::routes` (before the real server wires `Capture::record` into its workers): datagrams recorded into the
//! `Capture` by the test are saved to a file, replayed to a socket the test binds, and arrive identical and in
//! order; a busy server, a bad query and bad flags are refused.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harrier::capture::{Capture, Reader, Record, Writer};

const BIN: &str = env!("CARGO_BIN_EXE_harrier");
const LISTENERS: [&str; 2] = ["udp://127.0.0.1:8125", "unixgram:///run/harrier.sock"];

/// An HTTP server on 127.0.0.1 serving `routes(capture)`, on its own runtime (stopped when dropped).
struct Server {
    address: String,
    capture: Arc<Capture>,
    _runtime: tokio::runtime::Runtime,
}

fn serve() -> Server {
    let capture = Arc::new(Capture::new(LISTENERS.iter().map(|l| l.to_string()).collect()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let app = harrier::capture::routes(capture.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server {
        address,
        capture,
        _runtime: runtime,
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the binary runs")
}

fn temp_file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("harrier-capture-test-{}-{tag}.zst", std::process::id()))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn datagrams_captured_from_a_server_replay_identical_and_in_order() {
    let server = serve();
    let file = temp_file("round-trip");
    let path = file.to_str().unwrap().to_string();
    let child = Command::new(BIN)
        .args([
            "capture",
            "--address",
            &server.address,
            "--duration",
            "1500ms",
            "--output",
            &path,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    wait_until("the capture records", || server.capture.recording());
    let sent: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("replayed.{i}:{i}|c|#n:{}", i % 7).into_bytes())
        .collect();
    for (i, datagram) in sent.iter().enumerate() {
        server.capture.record(i % 2, datagram);
    }
    let out = child.wait_with_output().expect("it exits");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("harrier capture: 200 records"),
        "{}",
        stderr(&out)
    );

    let records: Vec<Record> = Reader::new(std::fs::File::open(&file).unwrap())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let listeners: Vec<&str> = records.iter().map(|r| r.listener.as_str()).take(4).collect();
    assert_eq!(listeners, [LISTENERS[0], LISTENERS[1], LISTENERS[0], LISTENERS[1]]);

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = format!("udp://{}", socket.local_addr().unwrap());
    let out = run(&["replay", &path, "--to", &to, "--speed", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("sent 200 records"), "{}", stderr(&out));
    let mut buf = [0u8; 2048];
    for want in &sent {
        let n = socket.recv(&mut buf).expect("a replayed datagram");
        assert_eq!(&buf[..n], &want[..]);
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn replay_keeps_the_recorded_gaps_divided_by_the_speed_and_sends_to_unixgram() {
    let file = temp_file("gaps");
    let path = file.to_str().unwrap().to_string();
    let mut w = Writer::new(std::fs::File::create(&file).unwrap()).unwrap();
    let t0 = 1_700_000_000_000_000_000u64;
    w.write(t0, LISTENERS[0], b"first:1|c").unwrap();
    w.write(t0 + 600_000_000, LISTENERS[0], b"second:1|c").unwrap();
    w.finish().unwrap();
    let sock_path = std::env::temp_dir().join(format!("harrier-replay-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = format!("unixgram://{}", sock_path.display());
    let mut buf = [0u8; 64];
    for (speed, min, max) in [("1", 550, 2000), ("3", 180, 550)] {
        let child = Command::new(BIN)
            .args(["replay", &path, "--to", &to, "--speed", speed])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let n = socket.recv(&mut buf).unwrap();
        let first = Instant::now();
        assert_eq!(&buf[..n], b"first:1|c");
        let n = socket.recv(&mut buf).unwrap();
        let gap = first.elapsed().as_millis();
        assert_eq!(&buf[..n], b"second:1|c");
        assert!((min..max).contains(&gap), "speed {speed}: a gap of {gap} ms");
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_second_capture_is_refused_with_409_and_a_bad_query_with_400_naming_it() {
    let server = serve();
    let running = server.capture.start(Duration::from_secs(30), 1 << 20).unwrap();
    let file = temp_file("busy");
    let out = run(&[
        "capture",
        "--address",
        &server.address,
        "--duration",
        "1s",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("409 Conflict: a capture is already running"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists(), "a refused capture writes no file");
    drop(running);
    wait_until("the capture is over", || !server.capture.running());

    for (query, name) in [
        ("duration=soon", "duration"),
        ("max_bytes=0", "max_bytes"),
        ("every=1s", "every"),
    ] {
        let e = harrier::http_get::get_ok(
            &server.address,
            &format!("/debug/capture?{query}"),
            Duration::from_secs(5),
        )
        .err()
        .unwrap();
        let text = e.to_string();
        assert!(
            text.contains("400 Bad Request") && text.contains(&format!("invalid {name}=")),
            "{text}"
        );
    }
}

#[test]
fn bad_flags_exit_2_and_an_unreadable_file_exits_1() {
    for bad in [
        &["capture", "--output", "x", "--duration", "soon"][..],
        &["capture", "--output", "x", "--max-bytes", "0"],
        &["capture", "--duration", "1s"],
        &["replay", "x", "--to", "tcp://127.0.0.1:8125"],
        &["replay", "x", "--to", "udp://127.0.0.1:8125", "--speed", "-1"],
        &["replay", "x"],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let missing = temp_file("missing");
    let out = run(&["replay", missing.to_str().unwrap(), "--to", "udp://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(missing.to_str().unwrap()), "{}", stderr(&out));
    let not_capture = temp_file("not-capture");
    std::fs::write(&not_capture, zstd::encode_all(&b"hello"[..], 3).unwrap()).unwrap();
    let out = run(&["replay", not_capture.to_str().unwrap(), "--to", "udp://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a Harrier capture"), "{}", stderr(&out));
    let _ = std::fs::remove_file(&not_capture);
}

#[test]
fn a_capture_with_nothing_received_is_a_valid_empty_file() {
    let server = serve();
    let file = temp_file("empty");
    let out = run(&[
        "capture",
        "--address",
        &server.address,
        "--duration",
        "300ms",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("harrier capture: 0 records"), "{}", stderr(&out));
    assert_eq!(Reader::new(std::fs::File::open(&file).unwrap()).unwrap().count(), 0);
    let _ = std::fs::remove_file(&file);
}
