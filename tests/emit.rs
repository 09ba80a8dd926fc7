//! `harrier emit`: the built binary sends to a real server (listeners on 127.0.0.1 ports chosen by the OS, on
//! unix sockets and on an abstract unixgram socket, a capturing sink), and what arrives is checked; bad usage exits 2, a failed send exits 1.

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use harrier::protocol::{AlertType, CheckStatus, Priority};
use harrier::server::RunningServer;
use harrier::sink::SeriesKind;

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

fn emit_blocking(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("emit")
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs `harrier emit ARGS` off the runtime's threads and asserts it exits 0.
async fn emit_ok(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        (emit_blocking(&refs), args)
    })
    .await
    .unwrap();
    let (out, args) = out;
    assert_eq!(
        out.status.code(),
        Some(0),
        "harrier emit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the server's listeners took in `lines` lines in all.
async fn wait_for_lines(server: &RunningServer, lines: u64) {
    let total = || -> u64 {
        server
            .telemetry
            .listeners
            .iter()
            .map(|l| l.lines.load(Ordering::Relaxed))
            .sum()
    };
    let ok = eventually(Duration::from_secs(20), || total() >= lines).await;
    assert!(ok, "the server took in {} of {lines} lines", total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_sent_by_harrier_emit_arrives_with_its_value_and_tags() {
    let unix = socket_path("emit-stream");
    let unixgram = socket_path("emit-dgram");
    let yaml = config(
        &[
            "udp://127.0.0.1:0",
            "tcp://127.0.0.1:0",
            &format!("unix://{}", unix.display()),
            &format!("unixgram://{}", unixgram.display()),
            &format!("unixgram:@harrier-emit-test-{}", std::process::id()),
        ],
        "aggregates: [min, max, count]\n",
    );
    let (server, sink) = start(&yaml).await;
    let url = |scheme: &str| {
        server
            .addresses
            .iter()
            .map(ToString::to_string)
            .find(|a| a.starts_with(&format!("{scheme}://")))
            .unwrap_or_else(|| panic!("no {scheme} listener in {:?}", server.addresses))
    };
    let (udp, tcp, unix_url, dgram) = (url("udp"), url("tcp"), url("unix"), url("unixgram"));
    let abstract_dgram = format!("unixgram:@harrier-emit-test-{}", std::process::id());

    let sends: Vec<Vec<&str>> = vec![
        vec!["--to", &udp, "--name", "deploys", "--count", "1", "--tag", "svc:api"],
        vec!["--to", &udp, "--name", "deploys", "--count", "2", "--tag", "svc:api"],
        vec!["--to", &udp, "--name", "queue.depth", "--gauge", "-7.5", "--tag", "q:a"],
        vec![
            "--to", &udp, "--name", "latency", "--timing", "1.5s", "--tag", "svc:api",
        ],
        vec!["--to", &udp, "--name", "latency", "--timing", "250", "--tag", "svc:api"],
        vec!["--to", &udp, "--name", "users", "--set", "alice"],
        vec!["--to", &udp, "--name", "users", "--set", "bob"],
        vec!["--to", &udp, "--name", "users", "--set", "alice"],
        vec![
            "--to",
            &udp,
            "--event",
            "Deploy api",
            "--text",
            "v1.2\nlive",
            "--alert-type",
            "success",
            "--priority",
            "low",
            "--aggregation-key",
            "deploys",
            "--tag",
            "svc:api",
        ],
        vec![
            "--to",
            &udp,
            "--service-check",
            "db.up",
            "--status",
            "critical",
            "--message",
            "primary down",
            "--hostname",
            "db-1",
            "--tag",
            "db:main",
        ],
        vec!["--to", &tcp, "--name", "over.tcp", "--count", "5", "--tag", "via:tcp"],
        vec!["--to", &unix_url, "--name", "over.unix", "--gauge", "3"],
        vec![
            "--to",
            &dgram,
            "--name",
            "over.unixgram",
            "--count",
            "1",
            "--sample-rate",
            "0.5",
        ],
        vec!["--to", &abstract_dgram, "--name", "over.abstract", "--gauge", "0.25"],
    ];
    for args in &sends {
        emit_ok(args).await;
    }
    wait_for_lines(&server, sends.len() as u64).await;
    server.shutdown().await;

    let v = sink.values();
    assert_eq!(v["deploys#svc:api"], 3.0, "{v:?}");
    assert_eq!(sink.kind_of("deploys#svc:api"), Some(SeriesKind::Counter));
    assert_eq!(v["queue.depth#q:a"], -7.5);
    assert_eq!(sink.kind_of("queue.depth#q:a"), Some(SeriesKind::Gauge));
    assert_eq!(v["latency.min#svc:api"], 250.0);
    assert_eq!(v["latency.max#svc:api"], 1500.0, "1.5s is 1500 ms");
    assert_eq!(v["latency.count#svc:api"], 2.0);
    assert_eq!(v["users"], 2.0, "alice twice and bob: two members");
    assert_eq!(v["over.tcp#via:tcp"], 5.0);
    assert_eq!(v["over.unix"], 3.0);
    assert_eq!(v["over.unixgram"], 2.0, "one at a sample rate of 0.5 counts two");
    assert_eq!(v["over.abstract"], 0.25);

    let flushes = sink.flushes.lock().unwrap();
    let events: Vec<_> = flushes.iter().flat_map(|f| f.events.clone()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].title, "Deploy api");
    assert_eq!(
        events[0].text, "v1.2\nlive",
        "the newline is sent escaped and arrives as one"
    );
    assert_eq!(events[0].alert_type, AlertType::Success);
    assert_eq!(events[0].priority, Priority::Low);
    assert_eq!(events[0].aggregation_key.as_deref(), Some("deploys"));
    assert_eq!(events[0].tags.output().collect::<Vec<_>>(), vec!["svc:api"]);
    let checks: Vec<_> = flushes.iter().flat_map(|f| f.checks.clone()).collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].name, "db.up");
    assert_eq!(checks[0].status, CheckStatus::Critical);
    assert_eq!(checks[0].message, "primary down");
    assert_eq!(checks[0].hostname.as_deref(), Some("db-1"));
    assert_eq!(checks[0].tags.output().collect::<Vec<_>>(), vec!["db:main"]);
    drop(flushes);
    let _ = std::fs::remove_file(unix);
    let _ = std::fs::remove_file(unixgram);
}

#[test]
fn bad_values_and_bad_usage_exit_2_naming_the_flag_and_send_nothing() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("udp://{}", sock.local_addr().unwrap());
    let cases: [(&[&str], &[&str]); 11] = [
        (&["--name", "x", "--gauge", "abc"], &["--gauge", "abc", "not a number"]),
        (
            &["--name", "x", "--count", "1", "--gauge", "2"],
            &["--count", "--gauge"],
        ),
        (&["--name", "x"], &["nothing to send", "--count"]),
        (&["--count", "1"], &["--name"]),
        (&["--name", "a|b", "--count", "1"], &["--name", "a|b"]),
        (&["--name", "x", "--count", "1", "--tag", "a,b"], &["--tag", "a,b"]),
        (
            &["--name", "x", "--count", "1", "--sample-rate", "0"],
            &["--sample-rate", "0"],
        ),
        (&["--service-check", "db.up", "--status", "dead"], &["--status", "dead"]),
        (&["--event", "t", "--alert-type", "fatal"], &["--alert-type", "fatal"]),
        (&["--name", "x", "--count"], &["--count"]),
        (&["--name", "x", "--count", "1", "--frobnicate"], &["--frobnicate"]),
    ];
    for (args, wanted) in cases {
        let out = Command::new(BIN)
            .args(["emit", "--to", &to])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{args:?}: {stderr:?} does not name {w:?}");
        }
    }
    let bad_target = emit_blocking(&["--to", "ftp://127.0.0.1:1", "--name", "x", "--count", "1"]);
    assert_eq!(bad_target.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_target.stderr).contains("--to"));

    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        sock.recv(&mut buf).is_err(),
        "nothing is sent on bad usage, got {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn a_refused_tcp_target_or_a_missing_unix_socket_exits_1_naming_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let to = format!("tcp://{addr}");
    let out = emit_blocking(&["--to", &to, "--name", "x", "--count", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&to), "{stderr}");

    for scheme in ["unix", "unixgram"] {
        let path = socket_path("emit-missing");
        let to = format!("{scheme}://{}", path.display());
        let out = emit_blocking(&["--to", &to, "--service-check", "x", "--status", "ok"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{to}: {stderr}");
        assert!(stderr.contains(&to), "{stderr}");
    }
}

#[test]
fn emit_has_its_own_help_and_the_server_flags_still_parse() {
    let help = emit_blocking(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--to",
        "--count",
        "--timing",
        "--set",
        "--event",
        "--service-check",
        "Exit codes",
    ] {
        assert!(text.contains(flag), "{flag} missing from {text}");
    }
    let top = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("emit"));
    // Go-style single-dash flags before no subcommand still work, as does a config file named `emit`.
    let ok = Command::new(BIN)
        .args(["-validate-config", "-config", "config.example.yaml"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let empty_dir = std::env::temp_dir().join(format!("harrier-emit-test-{}", std::process::id()));
    std::fs::create_dir_all(&empty_dir).unwrap();
    let named_emit = Command::new(BIN)
        .args(["-validate-config", "-f", "emit"])
        .current_dir(&empty_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&named_emit.stderr);
    assert_eq!(named_emit.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid configuration"),
        "a missing file named emit: {stderr}"
    );
    // Server flags do not mix with the subcommand.
    let mixed = Command::new(BIN)
        .args(["--validate-config", "emit", "--name", "x", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(mixed.status.code(), Some(2));
}
