//! The `harrier` binary: CLI behaviour, the console sink, periodic flushes and graceful shutdown on signals.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("harrier-bin-{}-{name}", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    path
}

/// A running binary whose stdout and stderr lines arrive on channels.
struct Running {
    child: Child,
    udp: SocketAddr,
    stdout: mpsc::Receiver<String>,
    /// Every stderr line, the first (which names the bound address) included.
    stderr: mpsc::Receiver<String>,
}

fn spawn(envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.env("HARRIER_STATSD_LISTEN_ADDRESSES", "udp://127.0.0.1:0")
        .env("HARRIER_HOSTNAME", "bin-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    // The first stderr line names the bound address.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .split("udp://")
        .nth(1)
        .and_then(|rest| rest.split([';', ',', ' ']).next())
        .unwrap_or_else(|| panic!("no udp address in {first:?}"));
    let udp: SocketAddr = addr.trim().parse().unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    let _ = err_tx.send(first.trim_end().to_string());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        udp,
        stdout: rx,
        stderr: err_rx,
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the binary did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_line(rx: &mpsc::Receiver<String>, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn the_readme_line_is_printed_at_the_next_flush() {
    let mut run = spawn(&[("HARRIER_INTERVAL", "1s")]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"deploys:1|c|#svc:api\n", run.udp).unwrap();
    let line = wait_for_line(&run.stdout, Duration::from_secs(10), |l| l.contains(" deploys "));
    let line = line.expect("the counter is printed by a periodic flush");
    assert!(line.contains("counter deploys 1 host=bin-test tags=svc:api"), "{line}");
    signal(&run.child, libc::SIGINT);
    assert!(wait_exit(&mut run.child, Duration::from_secs(10)).success());
}

#[test]
fn sigterm_mid_interval_flushes_what_was_received_and_exits_zero() {
    let mut run = spawn(&[("HARRIER_INTERVAL", "1h")]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"before.term:3|c|#a:b\nbefore.term.g:42|g", run.udp)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&run.child, libc::SIGTERM);
    let status = wait_exit(&mut run.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let out: Vec<String> = run.stdout.try_iter().collect();
    assert!(
        out.iter()
            .any(|l| l.contains("counter before.term 3 host=bin-test tags=a:b")),
        "{out:#?}"
    );
    assert!(out.iter().any(|l| l.contains("gauge before.term.g 42 ")), "{out:#?}");
}

#[test]
fn validate_config_accepts_the_example_and_names_an_unknown_key() {
    let ok = Command::new(BIN)
        .args(["--validate-config", "--config", "config.example.yaml"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));

    let bad = temp_file("bad.yaml", "interval: 10s\nflush_evrything: true\n");
    let out = Command::new(BIN)
        .arg("--validate-config")
        .arg("-f")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("flush_evrything"), "{stderr}");

    let bad_value = temp_file("bad-value.yaml", "percentiles: [2]\n");
    let out = Command::new(BIN)
        .args(["--validate-config", "--config"])
        .arg(&bad_value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("percentiles"), "{stderr}");
}

#[test]
fn version_and_help_print_and_exit_zero() {
    let v = Command::new(BIN).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("harrier {}", env!("CARGO_PKG_VERSION"))
    );
    let h = Command::new(BIN).arg("--help").output().unwrap();
    assert!(h.status.success());
    let help = String::from_utf8_lossy(&h.stdout);
    assert!(
        help.contains("--config") && help.contains("--validate-config"),
        "{help}"
    );
    let bad = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn an_address_in_use_fails_start_up_with_a_message_naming_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("udp://{}", taken.local_addr().unwrap());
    let out = Command::new(BIN)
        .env("HARRIER_STATSD_LISTEN_ADDRESSES", &addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("statsd_listen_addresses"),
        "{stderr}"
    );
}

#[test]
fn print_config_shows_the_effective_configuration_with_secrets_redacted() {
    let out = Command::new(BIN)
        .arg("--print-config")
        .env("HARRIER_INTERVAL", "5s")
        .env("VENEUR_DATADOGAPIKEY", "sekrit-key-42")
        .env("HARRIER_METRIC_SINKS", "[{kind: prometheus_remote_write, config: {url: \"http://127.0.0.1:9/w\", headers: {Authorization: Bearer-t0k}}}]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("interval: 5s"), "{yaml}");
    assert!(
        yaml.contains("kind: datadog") && yaml.contains("kind: prometheus_remote_write"),
        "{yaml}"
    );
    assert!(!yaml.contains("sekrit-key-42") && !yaml.contains("t0k"), "{yaml}");
    assert!(yaml.contains("<redacted>"), "{yaml}");
    // What it prints is a configuration again.
    let path = std::env::temp_dir().join(format!("harrier-printed-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml.as_bytes()).unwrap();
    let check = Command::new(BIN)
        .arg("--validate-config")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_never_show_the_api_key() {
    let key = "dd-key-never-logged-123";
    // A Datadog sink whose intake refuses connections (a port nobody listens on), so that failures are logged.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sinks = format!("[{{kind: datadog, config: {{api_key: {key}, api_hostname: \"http://{closed}\"}}}}]");
    let mut run = spawn(&[
        ("HARRIER_LOG_FORMAT", "json"),
        ("HARRIER_INTERVAL", "1s"),
        ("HARRIER_METRIC_SINKS", &sinks),
    ]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"good:1|c\nthis is not a metric\nbad.value:abc|c", run.udp)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    signal(&run.child, libc::SIGTERM);
    assert!(wait_exit(&mut run.child, Duration::from_secs(10)).success());
    let lines: Vec<String> = run.stderr.try_iter().collect();
    assert!(lines.len() >= 3, "{lines:#?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "message"] {
            assert!(v.get(field).is_some(), "no {field} in {line}");
        }
        assert!(!line.contains(key), "the API key was logged: {line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bad line") || l.contains("not a metric") || l.contains("abc")),
        "the bad input was logged: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("connection")),
        "the sink's failure was logged: {lines:#?}"
    );
}

/// Sends `n` distinct counter series, 50 lines per datagram, then stops the server; its peak RSS and stdout.
fn flood(n: usize, limit: &str) -> (u64, Vec<String>) {
    let mut run = spawn(&[("HARRIER_INTERVAL", "1h"), ("HARRIER_SERIES_LIMIT", limit)]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = String::new();
    for i in 0..n {
        datagram.push_str(&format!("flood.requests:1|c|#request_id:{i}\n"));
        if (i + 1) % 50 == 0 || i + 1 == n {
            sock.send_to(datagram.trim_end().as_bytes(), run.udp).unwrap();
            datagram.clear();
            // 100 lines per millisecond at most: this debug build must keep up while other tests of the binary
            // share the CPU, or the receive buffer overflows (what the kernel drops never reaches the series limit
            // to be counted).
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(2000));
    let peak = common::peak_rss_kib(&run.child);
    signal(&run.child, libc::SIGTERM);
    assert!(wait_exit(&mut run.child, Duration::from_secs(30)).success());
    (peak, run.stdout.try_iter().collect())
}

#[test]
fn a_flood_of_distinct_series_stays_within_the_series_limit_in_memory_and_is_counted() {
    let (kept_50k, _) = flood(50_000, "0");
    let (flooded, out) = flood(400_000, "50000");
    let value = |prefix: &str| {
        out.iter()
            .find(|l| l.contains(prefix))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {:?}", &out[out.len().saturating_sub(30)..]))
    };
    assert_eq!(value("counter harrier.series.flushed 50000").round(), 50_000.0);
    let dropped = value("counter harrier.series.dropped ");
    assert!(dropped >= 300_000.0, "lines of new series dropped: {dropped}");
    assert!(
        flooded <= 2 * kept_50k,
        "peak RSS with 400,000 series sent and a limit of 50,000: {flooded} KiB; with 50,000 sent: {kept_50k} KiB"
    );
}
