use proptest::prelude::*;

use super::*;

#[track_caller]
fn metric(line: &str) -> Metric<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::Metric(m)) => m,
        other => panic!("{line:?} should parse as a metric, got {other:?}"),
    }
}

#[track_caller]
fn event(line: &str) -> Event<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::Event(e)) => e,
        other => panic!("{line:?} should parse as an event, got {other:?}"),
    }
}

#[track_caller]
fn check(line: &str) -> ServiceCheck<'_> {
    match parse_line(line.as_bytes()) {
        Ok(Message::ServiceCheck(c)) => c,
        other => panic!("{line:?} should parse as a service check, got {other:?}"),
    }
}

fn numbers(m: &Metric<'_>) -> Vec<f64> {
    match m.value {
        MetricValue::Numbers(v) => v.iter().collect(),
        MetricValue::SetMember(s) => panic!("expected numbers, got set member {s:?}"),
    }
}

fn tags<'a>(m: &Metric<'a>) -> Vec<&'a str> {
    m.tags.iter().collect()
}

#[test]
fn packets_split_on_newlines_dropping_one_carriage_return_and_skipping_empty_lines() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"a:1|c", &[b"a:1|c"]),
        (b"a:1|c\nb:2|c\n", &[b"a:1|c", b"b:2|c"]),
        (b"a:1|c\r\nb:2|c\r\n", &[b"a:1|c", b"b:2|c"]),
        (b"a:1|c\r\r\n", &[b"a:1|c\r"]),
        (b"\n\na:1|c\n\n\nb:2|c", &[b"a:1|c", b"b:2|c"]),
        (b"\r\n\r\n", &[]),
        (b"", &[]),
    ];
    for (packet, want) in cases {
        let got: Vec<&[u8]> = lines(packet).collect();
        assert_eq!(&got, want, "packet {:?}", String::from_utf8_lossy(packet));
    }
}

#[test]
fn every_metric_type_parses() {
    let cases = [
        ("a.b:1|c", MetricKind::Counter),
        ("a.b:1|g", MetricKind::Gauge),
        ("a.b:1|ms", MetricKind::Timer),
        ("a.b:1|h", MetricKind::Histogram),
        ("a.b:1|d", MetricKind::Distribution),
        ("a.b:1|s", MetricKind::Set),
    ];
    for (line, kind) in cases {
        let m = metric(line);
        assert_eq!(m.name, "a.b");
        assert_eq!(m.kind, kind, "{line}");
        assert_eq!(m.sample_rate, 1.0);
        assert!(m.tags.is_empty());
        assert_eq!(m.timestamp, None);
    }
}

#[test]
fn values_parse_with_go_float_syntax() {
    let cases: &[(&str, f64)] = &[
        ("x:12.5|ms", 12.5),
        ("x:-5|g", -5.0),
        ("x:+5|g", 5.0),
        ("x:1e3|c", 1000.0),
        ("x:.5|c", 0.5),
        ("x:1_000|c", 1000.0),
        ("x:0x1p4|g", 16.0),
    ];
    for &(line, want) in cases {
        assert_eq!(numbers(&metric(line)), vec![want], "{line}");
    }
}

#[test]
fn packed_values_yield_one_sample_each_and_skip_empty_pieces() {
    assert_eq!(numbers(&metric("x:1:2:3|ms")), vec![1.0, 2.0, 3.0]);
    assert_eq!(numbers(&metric("x:::666::123::::|h")), vec![666.0, 123.0]);
    assert_eq!(numbers(&metric("x:1.1234:41:|d")), vec![1.1234, 41.0]);
    let m = metric("x:1:2:3:4|ms|@0.1|#result:success,op:frob");
    match m.value {
        MetricValue::Numbers(v) => assert_eq!(v.len(), 4),
        _ => unreachable!(),
    }
    assert_eq!(m.sample_rate, 0.1);
    assert_eq!(tags(&m), vec!["result:success", "op:frob"]);
}

#[test]
fn a_set_value_is_every_byte_up_to_the_pipe_colons_included() {
    assert_eq!(metric("users:abc:def|s").value, MetricValue::SetMember("abc:def"));
    assert_eq!(metric("users:42|s").value, MetricValue::SetMember("42"));
    assert_eq!(metric("users:nan|s").value, MetricValue::SetMember("nan"));
}

#[test]
fn optional_fields_are_read_in_any_order_and_the_last_repeat_wins() {
    let a = metric("x:1|c|@0.5|#a:b,c|T1700000000");
    let b = metric("x:1|c|T1700000000|#a:b,c|@0.5");
    for m in [&a, &b] {
        assert_eq!(m.sample_rate, 0.5);
        assert_eq!(tags(m), vec!["a:b", "c"]);
        assert_eq!(m.timestamp, Some(1_700_000_000));
    }
    let m = metric("x:1|c|#first|@0.5|#second|@0.25");
    assert_eq!(tags(&m), vec!["second"]);
    assert_eq!(m.sample_rate, 0.25);
}

#[test]
fn origin_fields_unknown_fields_and_empty_fields_are_ignored() {
    for line in [
        "x:1|c|c:ci-1234|#a",
        "x:1|c|e:it-false,cn-web,pu-1234|#a",
        "x:1|c|card:high|#a",
        "x:1|c|zzz:unknown|#a",
        "x:1|c||#a",
        "x:1|c|#a|",
    ] {
        let m = metric(line);
        assert_eq!(numbers(&m), vec![1.0], "{line}");
        assert_eq!(tags(&m), vec!["a"], "{line}");
    }
}

#[test]
fn tags_are_split_on_commas_exactly_as_written() {
    assert_eq!(tags(&metric("x:1|c|#a,,b")), vec!["a", "", "b"]);
    assert_eq!(tags(&metric("x:1|c|#a,")), vec!["a", ""]);
    assert!(tags(&metric("x:1|c|#")).is_empty());
    assert_eq!(tags(&metric("x:1|c|# spaced tag ,b")), vec![" spaced tag ", "b"]);
    assert_eq!(tags(&metric("x:1|c|#route:/v1/charges")), vec!["route:/v1/charges"]);
}

#[test]
fn timestamps_take_a_sign_and_leading_zeros() {
    assert_eq!(metric("x:1|g|T+5").timestamp, Some(5));
    assert_eq!(metric("x:1|g|T0001").timestamp, Some(1));
}

#[test]
fn names_are_not_validated_beyond_being_non_empty() {
    assert_eq!(metric(" spaced name:1|c").name, " spaced name");
    assert_eq!(metric("ünïcödé.métric:1|c").name, "ünïcödé.métric");
    assert_eq!(metric("_e:1|c").name, "_e");
}

#[test]
fn every_rejection_reason_is_reported() {
    let cases: &[(&[u8], &str)] = &[
        (b"x:1|c\xff", "invalid_utf8"),
        (b"x:\xc3|c", "invalid_utf8"),
        (b"foo", "no_pipe"),
        (b"foo:1", "no_pipe"),
        (b"foo|c", "no_colon"),
        (b":1|c", "empty_name"),
        (b"foo:|c", "empty_value"),
        (b"foo:::|c", "empty_value"),
        (b"foo:1|", "bad_type"),
        (b"foo:1||", "bad_type"),
        (b"foo:1|G", "bad_type"),
        (b"foo:1|gauge", "bad_type"),
        (b"foo:1|m", "bad_type"),
        (b"foo:1|c\r\r", "bad_type"),
        (b"foo:1|count", "bad_type"),
        (b"foo:abc|c", "bad_value"),
        (b"foo:1:abc:2|ms", "bad_value"),
        (b"foo: 5|g", "bad_value"),
        (b"foo:0x10|g", "bad_value"),
        (b"foo:nan|g", "non_finite_value"),
        (b"foo:NaN|g", "non_finite_value"),
        (b"foo:+inf|g", "non_finite_value"),
        (b"foo:-Infinity|ms", "non_finite_value"),
        (b"foo:1e400|g", "non_finite_value"),
        (b"foo:1:inf|h", "non_finite_value"),
        (b"foo:1|c|@", "bad_sample_rate"),
        (b"foo:1|c|@abc", "bad_sample_rate"),
        (b"foo:1|c|@0", "sample_rate_out_of_range"),
        (b"foo:1|c|@-0.1", "sample_rate_out_of_range"),
        (b"foo:1|c|@1.1", "sample_rate_out_of_range"),
        (b"foo:1|c|@nan", "sample_rate_out_of_range"),
        (b"foo:1|ms|@1e-320", "sample_rate_out_of_range"),
        (b"foo:1|c|T", "bad_timestamp"),
        (b"foo:1|c|T0", "bad_timestamp"),
        (b"foo:1|c|T-1", "bad_timestamp"),
        (b"foo:1|c|T1.5", "bad_timestamp"),
        (b"foo:1|c|TABCD", "bad_timestamp"),
        (b"_e{3,3}", "bad_event_header"),
        (b"_e{3}:foo|bar", "bad_event_header"),
        (b"_e{a,3}:foo|bar", "bad_event_header"),
        (b"_e{3,-1}:foo|bar", "bad_event_header"),
        (b"_e{0,9}:|test text", "empty_event_title"),
        (b"_e{4,3}:foo|bar", "event_length_mismatch"),
        (b"_e{3,4}:foo|bar", "event_length_mismatch"),
        (b"_e{5,0}:title", "event_length_mismatch"),
        (b"_e{1,1}:\xc3\xa9|x", "event_length_mismatch"),
        (b"_sc", "bad_service_check"),
        (b"_sc|foo.bar", "bad_service_check"),
        (b"_scX|foo|0", "empty_service_check_name"),
        (b"_sc|", "bad_service_check"),
        (b"_sc||0", "empty_service_check_name"),
        (b"_sc|foo.bar|5", "bad_service_check_status"),
        (b"_sc|foo.bar|OK", "bad_service_check_status"),
        (b"_sc|foo.bar|21", "bad_service_check_status"),
        (b"_sc|foo.bar| 0", "bad_service_check_status"),
        (b"_sc|foo.bar|-1", "bad_service_check_status"),
        (b"_sc|foo.bar|", "bad_service_check_status"),
    ];
    for (line, reason) in cases {
        match parse_line(line) {
            Err(e) => assert_eq!(e.reason(), *reason, "line {:?}: {e}", String::from_utf8_lossy(line)),
            Ok(m) => panic!(
                "line {:?} should be rejected as {reason}, got {m:?}",
                String::from_utf8_lossy(line)
            ),
        }
    }
    // Every declared reason is exercised above.
    for reason in ParseError::REASONS {
        assert!(cases.iter().any(|(_, r)| *r == reason), "no case for {reason}");
    }
}

#[test]
fn rejection_messages_name_the_bad_value() {
    let msg = |line: &'static str| parse_line(line.as_bytes()).unwrap_err().to_string();
    assert!(msg("x:1|gauge").contains("\"gauge\""));
    assert!(msg("x:abc|c").contains("\"abc\""));
    assert!(msg("x:1|c|@2").contains("\"2\""));
    assert!(msg("x:1|c|Tnope").contains("\"nope\""));
    assert!(msg("_sc|x|9").contains("\"9\""));
}

#[test]
fn bad_lines_do_not_stop_the_rest_of_the_packet() {
    let packet = b"good.a:1|c\nbad\ngood.b:2|g\nx:nan|g\n_sc|x|9\ngood.c:3|ms";
    let results: Vec<_> = parse_packet(packet).collect();
    assert_eq!(results.len(), 6);
    let good: Vec<&str> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Message::Metric(m)) => Some(m.name),
            _ => None,
        })
        .collect();
    assert_eq!(good, vec!["good.a", "good.b", "good.c"]);
    let reasons: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.reason()))
        .collect();
    assert_eq!(reasons, vec!["no_pipe", "non_finite_value", "bad_service_check_status"]);
}

#[test]
fn events_parse_every_field() {
    let e = event("_e{3,3}:foo|bar|k:foos|s:test|t:success|p:low|#foo:bar,baz:qux|d:1136239445|h:example.com");
    assert_eq!(e.title(), "foo");
    assert_eq!(e.text(), "bar");
    assert_eq!(e.aggregation_key, Some("foos"));
    assert_eq!(e.source_type, Some("test"));
    assert_eq!(e.alert_type, AlertType::Success);
    assert_eq!(e.priority, Priority::Low);
    assert_eq!(e.tags.iter().collect::<Vec<_>>(), vec!["foo:bar", "baz:qux"]);
    assert_eq!(e.timestamp, Some(1_136_239_445));
    assert_eq!(e.hostname, Some("example.com"));
}

#[test]
fn events_default_to_normal_info_now_and_no_host() {
    let e = event("_e{5,4}:title|text");
    assert_eq!(
        (e.priority, e.alert_type, e.timestamp, e.hostname),
        (Priority::Normal, AlertType::Info, None, None)
    );
    assert!(e.tags.is_empty());
}

#[test]
fn event_lengths_delimit_title_and_text_so_pipes_may_appear_inside() {
    let e = event("_e{10,24}:test|title|test\\line1\\nline2\\nline3");
    assert_eq!(e.title(), "test|title");
    assert_eq!(e.text(), "test\\line1\nline2\nline3");
    let e = event("_e{3,15}:foo|foo\\nbar\\nbaz\\n");
    assert_eq!(e.text(), "foo\nbar\nbaz\n");
    // Lengths are byte counts, before unescaping.
    let e = event("_e{2,2}:é|é");
    assert_eq!((e.raw_title, e.raw_text), ("é", "é"));
}

#[test]
fn event_edge_cases_match_the_agent() {
    let e = event("_e{10,0}:test title||t:warning");
    assert_eq!((e.raw_text, e.alert_type), ("", AlertType::Warning));
    assert_eq!(event("_e{5,4}:title|text|p:urgent").priority, Priority::Normal);
    assert_eq!(event("_e{5,0}:title|").raw_text, "");
    // The separator and the closing brace are not checked.
    assert_eq!(event("_e{5,4}:titleXtext").raw_text, "text");
    assert_eq!(event("_e{5,4]:title|text").raw_title, "title");
    // Bad optional values are ignored; the rest of the event stands.
    let e = event("_e{3,3}:foo|bar|d:abc|t:baz|h:h1");
    assert_eq!(
        (e.timestamp, e.alert_type, e.hostname),
        (None, AlertType::Info, Some("h1"))
    );
    assert_eq!(event("_e{3,3}:foo|bar|d:-5").timestamp, Some(-5));
    // Bytes between the text and the next pipe are an unknown field.
    assert_eq!(event("_e{3,3}:foo|barjunk|h:x").hostname, Some("x"));
}

#[test]
fn service_checks_parse_every_field() {
    let c = check("_sc|foo.bar|0|#foo:bar,qux:dor|d:1136239445|h:example.com");
    assert_eq!(c.name, "foo.bar");
    assert_eq!(c.status, CheckStatus::Ok);
    assert_eq!(c.tags.iter().collect::<Vec<_>>(), vec!["foo:bar", "qux:dor"]);
    assert_eq!(c.timestamp, Some(1_136_239_445));
    assert_eq!(c.hostname, Some("example.com"));
    assert_eq!(c.message, None);
    for (line, status) in [
        ("_sc|x|0", CheckStatus::Ok),
        ("_sc|x|1", CheckStatus::Warning),
        ("_sc|x|2", CheckStatus::Critical),
        ("_sc|x|3", CheckStatus::Unknown),
    ] {
        assert_eq!(check(line).status, status);
    }
}

#[test]
fn service_check_edge_cases_match_the_agent() {
    let c = check("_sc|agent.up|0|d:21|h:localhost|h:localhost2|d:22");
    assert_eq!((c.hostname, c.timestamp), (Some("localhost2"), Some(22)));
    assert_eq!(check("_sc|x|0|m:hello|world").message, Some("hello"));
    let c = check("_sc|x|1|h:localhost|m:this is fine|#t:1");
    assert_eq!(c.message, Some("this is fine"));
    assert_eq!(c.tags.raw(), "t:1");
    assert_eq!(check("_sc|x|0|m:a\\nb").message, Some("a\\nb"));
    assert_eq!(check("_sc|x|0|d:abc").timestamp, None);
}

#[test]
fn formatting_a_parsed_metric_gives_back_the_line() {
    for line in [
        "a.b:1|c",
        "svc.api.request.latency:12.5|ms|@0.5|#env:prod,route:/v1/charges,status:200",
        "x:1:2:3|h|#a",
        "users:abc:def|s",
        "x:-4.25|g|T1700000000",
    ] {
        assert_eq!(metric(line).to_string(), line);
    }
}

// ---- property tests ----

fn name_strategy() -> impl Strategy<Value = String> {
    // Any text without the delimiters of the grammar, and not starting like an event or a service check.
    "[a-zA-Z0-9._ é/-]{1,40}".prop_filter("not a special prefix", |n| {
        !n.starts_with("_e{") && !n.starts_with("_sc")
    })
}

fn tag_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:/ -]{0,20}"
}

fn kind_strategy() -> impl Strategy<Value = MetricKind> {
    prop::sample::select(MetricKind::ALL.to_vec())
}

fn finite_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        (0.0f64..1000.0),
    ]
}

proptest! {
    #[test]
    fn property_test_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for result in parse_packet(&bytes) {
            if let Ok(Message::Metric(m)) = result {
                // Iterating values must not panic either.
                if let MetricValue::Numbers(v) = m.value {
                    prop_assert_eq!(v.iter().count(), v.len());
                }
                let _ = m.tags.iter().count();
            }
        }
    }

    #[test]
    fn property_test_grammar_shaped_garbage_never_panics(
        pieces in prop::collection::vec(
            prop_oneof![
                Just("|".to_string()), Just(":".to_string()), Just("#".to_string()), Just("@".to_string()),
                Just(",".to_string()), Just("\n".to_string()), Just("_e{".to_string()), Just("_sc".to_string()),
                Just("T".to_string()), Just("}".to_string()), "[0-9]{1,3}", "[a-z]{1,3}", Just("é".to_string()),
                Just("-".to_string()), Just(".".to_string()), Just("\\n".to_string()),
            ],
            0..40,
        )
    ) {
        let packet = pieces.concat();
        for result in parse_packet(packet.as_bytes()) {
            match result {
                Ok(Message::Event(e)) => { let _ = (e.title(), e.text()); }
                Ok(Message::Metric(m)) => { if let MetricValue::Numbers(v) = m.value { let _ = v.iter().sum::<f64>(); } }
                _ => {}
            }
        }
        // Cutting a line at its value agrees with the full parse on every line the full parse takes as a metric:
        // same name and suffix (the text a shard knows it by), and the same value once the type is known.
        for line in super::str_lines(&packet) {
            let view = super::split_metric(line);
            if let Ok(Message::Metric(m)) = super::parse_str(line) {
                let view = view.expect("a metric line has a name:value| prefix");
                prop_assert_eq!((view.name, view.suffix), (m.name, m.suffix));
                prop_assert_eq!(super::parse_value(m.kind, view.value), Ok(m.value));
                if let Some(v) = view.short_number() {
                    if let MetricValue::Numbers(values) = m.value {
                        prop_assert_eq!(v, values.first());
                    }
                }
            }
        }
    }

    #[test]
    fn property_test_a_formatted_metric_parses_back_to_the_same_parts(
        name in name_strategy(),
        kind in kind_strategy(),
        values in prop::collection::vec(finite_value(), 1..5),
        member in "[a-zA-Z0-9:._-]{1,20}",
        rate in prop_oneof![Just(1.0f64), (0.0001f64..=1.0)],
        tags in prop::collection::vec(tag_strategy(), 0..6),
        timestamp in prop::option::of(1i64..4_000_000_000),
    ) {
        let mut line = format!("{name}:");
        if kind == MetricKind::Set {
            line.push_str(&member);
        } else {
            let text: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            line.push_str(&text.join(":"));
        }
        line.push('|');
        line.push_str(kind.wire());
        if rate != 1.0 {
            line.push_str(&format!("|@{rate}"));
        }
        let tag_block = tags.join(",");
        if !tag_block.is_empty() {
            line.push_str(&format!("|#{tag_block}"));
        }
        if let Some(ts) = timestamp {
            line.push_str(&format!("|T{ts}"));
        }

        let parsed = match parse_line(line.as_bytes()) {
            Ok(Message::Metric(m)) => m,
            other => return Err(TestCaseError::fail(format!("{line:?} gave {other:?}"))),
        };
        prop_assert_eq!(parsed.name, name.as_str());
        prop_assert_eq!(parsed.kind, kind);
        match parsed.value {
            MetricValue::SetMember(m) => prop_assert_eq!(m, member.as_str()),
            MetricValue::Numbers(v) => prop_assert_eq!(v.iter().collect::<Vec<_>>(), values),
        }
        prop_assert_eq!(parsed.sample_rate, rate);
        prop_assert_eq!(parsed.tags.raw(), tag_block.as_str());
        prop_assert_eq!(parsed.timestamp, timestamp);
        // And the formatter writes what the parser reads.
        prop_assert_eq!(parsed.to_string(), line);
    }
}

proptest! {
    #[test]
    fn property_test_find_either_finds_the_first_of_two_bytes_like_a_plain_search(
        s in proptest::collection::vec(prop_oneof![Just(b':'), Just(b'|'), Just(0u8), Just(0x80u8), any::<u8>()], 0..40),
        a in prop_oneof![Just(b':'), any::<u8>()],
        b in prop_oneof![Just(b'|'), any::<u8>()],
    ) {
        let expected = s.iter().position(|&c| c == a || c == b);
        prop_assert_eq!(super::find_either(&s, a, b), expected);
    }
}

proptest! {
    #[test]
    fn property_test_lines_of_a_valid_utf8_packet_are_the_same_as_lines_of_its_bytes(
        s in "([a-z:|#@,.0-9]{0,12}[\r\n]{0,2}){0,12}|\\PC{0,60}"
    ) {
        let from_str: Vec<&[u8]> = super::str_lines(&s).map(str::as_bytes).collect();
        let from_bytes: Vec<&[u8]> = super::lines(s.as_bytes()).collect();
        prop_assert_eq!(from_str, from_bytes);
    }
}
