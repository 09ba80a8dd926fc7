//! Tests of [`super`]: formatting, validation, targets and sending.

use super::*;
use crate::protocol::{parse_line, parse_str, Message as Parsed, MetricValue};
use crate::protocol::{AlertType, CheckStatus};
use proptest::prelude::*;
use std::net::UdpSocket;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

fn args(list: &[&str]) -> EmitArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        emit: EmitArgs,
    }
    Cli::try_parse_from(std::iter::once("emit").chain(list.iter().copied()))
        .unwrap()
        .emit
}

fn line(list: &[&str]) -> String {
    build(&args(list)).unwrap().1.line()
}

fn error(list: &[&str]) -> String {
    build(&args(list)).unwrap_err().to_string()
}

#[test]
fn metrics_are_formatted_as_the_protocol_says() {
    assert_eq!(
        line(&["--name", "deploys", "--count", "1", "--tag", "svc:api"]),
        "deploys:1|c|#svc:api"
    );
    assert_eq!(line(&["--name", "q", "--gauge", "-2.5"]), "q:-2.5|g");
    assert_eq!(line(&["--name", "t", "--timing", "12.5"]), "t:12.5|ms");
    assert_eq!(line(&["--name", "t", "--timing", "1.5s"]), "t:1500|ms");
    assert_eq!(line(&["--name", "t", "--timing", "250us"]), "t:0.25|ms");
    assert_eq!(
        line(&["--name", "h", "--histogram", "3", "--sample-rate", "0.5"]),
        "h:3|h|@0.5"
    );
    assert_eq!(line(&["--name", "d", "--distribution", "1e20"]), "d:1e20|d");
    assert_eq!(
        line(&["--name", "u", "--set", "user:42", "--tag", "a:b", "--tag", "c"]),
        "u:user:42|s|#a:b,c"
    );
    assert_eq!(line(&["--name", "g", "--gauge", "1_000"]), "g:1000|g");
}

#[test]
fn events_and_service_checks_are_formatted_as_the_protocol_says() {
    assert_eq!(
        line(&[
            "--event",
            "Deploy",
            "--text",
            "v1\nlive",
            "--alert-type",
            "success",
            "--tag",
            "svc:api"
        ]),
        "_e{6,8}:Deploy|v1\\nlive|t:success|#svc:api"
    );
    assert_eq!(
        line(&[
            "--event",
            "é|x",
            "--priority",
            "low",
            "--hostname",
            "web-1",
            "--aggregation-key",
            "k",
            "--source-type",
            "cli",
            "--timestamp",
            "1700000000",
        ]),
        "_e{4,0}:é|x||d:1700000000|h:web-1|k:k|p:low|s:cli"
    );
    assert_eq!(
        line(&[
            "--service-check",
            "db.up",
            "--status",
            "critical",
            "--message",
            "primary\ndown",
            "--tag",
            "db:main"
        ]),
        "_sc|db.up|2|#db:main|m:primary\\ndown"
    );
    assert_eq!(
        line(&[
            "--service-check",
            "db.up",
            "--status",
            "1",
            "--hostname",
            "h",
            "--timestamp",
            "5"
        ]),
        "_sc|db.up|1|d:5|h:h"
    );
    let parsed = line(&["--event", "Deploy", "--text", "a\r\nb"]);
    let Ok(Parsed::Event(e)) = parse_str(&parsed) else {
        panic!("{parsed}")
    };
    assert_eq!(e.text(), "a\nb");
}

#[test]
fn bad_values_name_their_flag_and_value() {
    let cases: [(&[&str], &[&str]); 20] = [
        (
            &["--name", "x", "--gauge", "abc"],
            &["--gauge", "\"abc\"", "not a number"],
        ),
        (&["--name", "x", "--count", "inf"], &["--count", "finite"]),
        (&["--name", "x", "--count", "1e400"], &["--count", "1e400"]),
        (&["--name", "x", "--timing", "soon"], &["--timing", "soon"]),
        (&["--name", "a|b", "--count", "1"], &["--name", "a|b", "'|'"]),
        (&["--name", "a:b", "--count", "1"], &["--name", "':'"]),
        (&["--name", "a\nb", "--count", "1"], &["--name", "newline"]),
        (&["--name", "a#b", "--count", "1"], &["--name", "'#'"]),
        (
            &["--name", "x", "--count", "1", "--tag", "a,b"],
            &["--tag", "a,b", "repeat --tag"],
        ),
        (&["--name", "x", "--count", "1", "--tag", "a|b"], &["--tag", "'|'"]),
        (&["--name", "x", "--count", "1", "--tag", ""], &["--tag", "empty"]),
        (
            &["--name", "x", "--count", "1", "--sample-rate", "2"],
            &["--sample-rate", "\"2\""],
        ),
        (
            &["--name", "x", "--count", "1", "--to", "ftp://h:1"],
            &["--to", "scheme"],
        ),
        (&["--name", "x", "--count", "1", "--to", "udp://h:0"], &["--to", "port"]),
        (&["--service-check", "x", "--status", "bad"], &["--status", "bad"]),
        (&["--service-check", "x"], &["--status"]),
        (
            &["--service-check", "x", "--status", "0", "--message", "a|b"],
            &["--message", "'|'"],
        ),
        (&["--event", "t", "--alert-type", "fatal"], &["--alert-type", "fatal"]),
        (&["--event", "t", "--priority", "high"], &["--priority", "high"]),
        (&["--event", "t", "--timestamp", "-3"], &["--timestamp", "-3"]),
    ];
    for (argv, wanted) in cases {
        let e = error(argv);
        for w in wanted {
            assert!(e.contains(w), "{argv:?}: {e:?} lacks {w:?}");
        }
    }
}

#[test]
fn no_kind_two_kinds_and_misplaced_flags_are_usage_errors() {
    assert!(error(&["--name", "x"]).contains("nothing to send"));
    let two = error(&["--name", "x", "--count", "1", "--gauge", "2"]);
    assert!(two.contains("--count and --gauge"), "{two}");
    assert!(error(&["--count", "1"]).contains("--name"));
    assert!(error(&["--event", "t", "--service-check", "c"]).contains("--event and --service-check"));
    assert!(error(&["--name", "x", "--count", "1", "--text", "t"]).contains("--text"));
    assert!(error(&["--name", "x", "--count", "1", "--hostname", "h"]).contains("host:"));
    assert!(error(&["--event", "t", "--name", "x"]).contains("--name"));
    assert!(error(&["--event", "t", "--status", "ok"]).contains("--status"));
    assert!(error(&["--service-check", "c", "--status", "ok", "--text", "x"]).contains("--text"));
    assert!(error(&["--event", ""]).contains("empty"));
    assert!(error(&["--name", "_sc", "--count", "1"]).contains("service check"));
    assert!(error(&["--name", "_e{x", "--count", "1"]).contains("event"));
}

#[test]
fn targets_take_the_listener_forms_and_default_to_the_local_udp_listener() {
    let path = |p: &str| SocketName::Path(p.into());
    assert_eq!(
        build(&args(&["--name", "x", "--count", "1"])).unwrap().0,
        Target::Udp("127.0.0.1:8125".into(), Family::Any)
    );
    for (url, target, shown) in [
        (
            "tcp://[::1]:9000",
            Target::Tcp("[::1]:9000".into(), Family::Any),
            "tcp://[::1]:9000",
        ),
        (
            "localhost:8125",
            Target::Udp("localhost:8125".into(), Family::Any),
            "udp://localhost:8125",
        ),
        (
            "[::1]:8125",
            Target::Udp("[::1]:8125".into(), Family::Any),
            "udp://[::1]:8125",
        ),
        (
            "udp://:8125",
            Target::Udp("127.0.0.1:8125".into(), Family::Any),
            "udp://127.0.0.1:8125",
        ),
        (
            "udp6://:8125",
            Target::Udp("[::1]:8125".into(), Family::V6),
            "udp6://[::1]:8125",
        ),
        ("TCP4://h:1", Target::Tcp("h:1".into(), Family::V4), "tcp4://h:1"),
        (
            "unixgram:///run/s.sock",
            Target::Unixgram(path("/run/s.sock")),
            "unixgram:///run/s.sock",
        ),
        (
            "unixgram:/run/s.sock",
            Target::Unixgram(path("/run/s.sock")),
            "unixgram:///run/s.sock",
        ),
        (
            "unixgram:@harrier",
            Target::Unixgram(SocketName::Abstract("harrier".into())),
            "unixgram:@harrier",
        ),
        (
            "unix:///run/s.sock",
            Target::Unix(path("/run/s.sock")),
            "unix:///run/s.sock",
        ),
        ("unix:@h", Target::Unix(SocketName::Abstract("h".into())), "unix:@h"),
    ] {
        let got = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(got, target, "{url}");
        assert_eq!(got.to_string(), shown, "{url}");
    }
    for bad in [
        "unix://",
        "unix:@",
        "tls://h:1",
        "udp://h",
        "udp://h:0",
        "udp://h:x",
        "ftp://h:1",
        "udp:h:1",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_line_reaches_an_abstract_unixgram_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("harrier-client-test-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let target = Target::parse(&format!("unixgram:@{name}")).unwrap();
    send(&target, "x:1|c", Duration::from_secs(2)).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"x:1|c\n");
}

#[test]
fn sending_to_a_closed_tcp_port_or_a_missing_socket_is_an_io_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let t = Duration::from_secs(2);
    assert!(send(&Target::Tcp(addr.to_string(), Family::Any), "x:1|c", t).is_err());
    let missing = std::env::temp_dir().join(format!("harrier-client-missing-{}.sock", std::process::id()));
    assert!(send(&Target::Unix(SocketName::Path(missing.clone())), "x:1|c", t).is_err());
    assert!(send(&Target::Unixgram(SocketName::Path(missing)), "x:1|c", t).is_err());
}

#[test]
fn a_udp_datagram_carries_the_line_and_its_newline() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let target = Target::Udp(sock.local_addr().unwrap().to_string(), Family::V4);
    send(&target, "x:1|c", Duration::from_secs(2)).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"x:1|c\n");
}

fn kind() -> impl Strategy<Value = MetricKind> {
    proptest::sample::select(MetricKind::ALL.to_vec())
}

proptest! {
    #[test]
    fn every_valid_metric_parses_back_to_its_name_value_and_tags(
        name in "[^:|#\n\r]{1,24}",
        kind in kind(),
        number in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
        member in "[^|\n\r]{1,24}",
        rate in proptest::option::of(1e-9f64..=1.0),
        tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..5),
    ) {
        prop_assume!(check_metric_name(&name).is_ok());
        for t in &tags {
            check_tag(t).unwrap();
        }
        let value = if kind == MetricKind::Set { Value::Member(member.clone()) } else { Value::Number(number) };
        let spec = MetricSpec { name: name.clone(), kind, value, sample_rate: rate, tags: tags.clone() };
        let line = metric_line(&spec);
        let Ok(Parsed::Metric(m)) = parse_line(line.as_bytes()) else {
            panic!("{line:?} does not parse as a metric");
        };
        prop_assert_eq!(m.name, name.as_str());
        prop_assert_eq!(m.kind, kind);
        match m.value {
            MetricValue::SetMember(s) => prop_assert_eq!(s, member.as_str()),
            MetricValue::Numbers(v) => {
                prop_assert_eq!(v.len(), 1);
                // -0 is sent as 0.
                prop_assert_eq!(v.first(), if number == 0.0 { 0.0 } else { number });
            }
        }
        prop_assert_eq!(m.sample_rate, rate.unwrap_or(1.0));
        prop_assert_eq!(m.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn every_event_parses_back_to_its_title_text_and_tags(
        title in "[^\\\\\r]{1,24}",
        text in "[^\\\\\r]{0,40}",
        tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..4),
    ) {
        let spec = EventSpec {
            title: title.clone(), text: text.clone(), timestamp: None, hostname: None, priority: None,
            alert_type: Some(AlertType::Warning), aggregation_key: None, source_type: None, tags: tags.clone(),
        };
        let line = event_line(&spec);
        prop_assert!(!line.contains('\n'));
        let Ok(Parsed::Event(e)) = parse_line(line.as_bytes()) else {
            panic!("{line:?} does not parse as an event");
        };
        prop_assert_eq!(e.title(), title.as_str());
        prop_assert_eq!(e.text(), text.as_str());
        prop_assert_eq!(e.alert_type, AlertType::Warning);
        prop_assert_eq!(e.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn every_service_check_parses_back_to_its_name_status_and_message(
        name in "[^|\n\r]{1,24}",
        code in 0u8..4,
        message in proptest::option::of("[^|\n\r]{0,30}"),
        tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..4),
    ) {
        let status = CheckStatus::from_code(code).unwrap();
        let spec = CheckSpec {
            name: name.clone(), status, timestamp: None, hostname: None, tags: tags.clone(),
            message: message.clone(),
        };
        let line = check_line(&spec);
        let Ok(Parsed::ServiceCheck(c)) = parse_line(line.as_bytes()) else {
            panic!("{line:?} does not parse as a service check");
        };
        prop_assert_eq!(c.name, name.as_str());
        prop_assert_eq!(c.status, status);
        prop_assert_eq!(c.message, message.as_deref());
        prop_assert_eq!(c.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
