//! `harrier top --once`: the built binary against a listener in the test that answers a fixed series table (or an
//! error), before the server has its `GET /debug/series`: rows in order, exit 1 with the status on an HTTP error
//! or an answer that is not a table, exit 2 on bad flags.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;

use harrier::top::{DroppedBy, MetricRow, SeriesTable};

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

/// A listener that answers one request with `status` and `body`; the thread returns the request's first line.
fn answer_once(status: &'static str, body: String) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let (ready, wait) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        ready.send(()).expect("ready");
        let (mut conn, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).expect("read") == 1 {
            request.push(byte[0]);
        }
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).expect("write");
        conn.write_all(body.as_bytes()).expect("write");
        let request = String::from_utf8_lossy(&request).into_owned();
        request.lines().next().unwrap_or_default().to_string()
    });
    wait.recv().expect("the listener thread runs");
    (address, handle)
}

fn top(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("top")
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("the binary runs")
}

fn table() -> SeriesTable {
    let row = |name: &str, series, lines, bytes| MetricRow {
        name: name.to_string(),
        series,
        lines,
        samples: lines as f64,
        lines_previous: lines,
        samples_previous: lines as f64,
        dropped: DroppedBy::default(),
        bytes,
    };
    SeriesTable {
        flushed_at: 1_700_000_000,
        interval_seconds: 10.0,
        names: 3,
        series: 1111,
        lines: 3000,
        bytes: 40_000,
        // As the server sorts them for sort=lines.
        metrics: vec![
            row("http.requests", 10, 2000, 30_000),
            row("queue.depth", 100, 900, 9_000),
            row("cache.hits", 1000, 100, 1_000),
        ],
    }
}

#[test]
fn top_once_prints_the_rows_of_the_servers_table_in_order() {
    let (address, server) = answer_once("200 OK", serde_json::to_string(&table()).unwrap());
    let out = top(&["--once", "--address", &address, "--sort", "lines", "--top", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.join().unwrap(), "GET /debug/series?top=3&sort=lines HTTP/1.1");
    let names: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["http.requests", "queue.depth", "cache.hits"], "{stdout}");
    assert!(stdout.contains("▼LINES"), "{stdout}");
    assert!(
        stdout.contains("3 names · 1111 series · 3000 lines · 39.1 KiB of state"),
        "{stdout}"
    );
}

#[test]
fn top_once_exits_1_naming_the_status_when_the_server_answers_500() {
    let (address, _server) = answer_once("500 Internal Server Error", "the table is broken".to_string());
    let out = top(&["--once", "--address", &address]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("500 Internal Server Error: the table is broken"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn top_once_exits_1_when_the_answer_is_not_a_series_table() {
    let (address, _server) = answer_once("200 OK", "{\"flushed_at\": \"yesterday\"}".to_string());
    let out = top(&["--once", "--address", &address]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the answer is not a series table"), "{stderr}");
}

#[test]
fn top_exits_1_when_nothing_listens_and_2_on_bad_flags() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let out = top(&["--once", "--address", &address]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot connect to {address}")), "{stderr}");
    for bad in [
        &["--sort", "size"][..],
        &["--top", "0"],
        &["--interval", "soon"],
        &["--interval", "1ms"],
    ] {
        let out = top(bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
}

#[test]
fn top_without_once_and_without_a_terminal_draws_until_stdin_ends_or_a_signal() {
    // stdin is not a terminal: no keys are read; SIGTERM ends the loop cleanly (exit 0).
    let (address, _server) = answer_once("200 OK", serde_json::to_string(&table()).unwrap());
    let mut child = Command::new(BIN)
        .args(["top", "--address", &address, "--interval", "10s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // The first draw comes after the signal handlers are installed.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("http.requests") {
        let n = stdout.read(&mut buf).expect("read stdout");
        assert!(n > 0, "stdout ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: kill with the id of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().expect("it exits");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        seen.starts_with(b"\x1b[H\x1b[2J"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
}
