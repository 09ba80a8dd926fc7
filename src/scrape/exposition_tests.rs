use super::*;
use proptest::prelude::*;

fn samples(body: &str) -> Vec<Sample<'_>> {
    lines(body)
        .filter_map(|l| match l {
            Ok(Line::Sample(s)) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn a_text_format_body_reads_into_types_and_samples_with_their_labels() {
    let body = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n\
                # TYPE node_cpu_seconds_total counter\n\
                node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1234.5\n\
                node_cpu_seconds_total{cpu=\"0\",mode=\"user\",} 7 1700000000000\n\
                # TYPE node_load1 gauge\n\
                node_load1 0.25\n";
    let all: Vec<_> = lines(body).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        all[0],
        Line::Type {
            family: "node_cpu_seconds_total",
            kind: Kind::Counter
        }
    );
    let s = samples(body);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].name, "node_cpu_seconds_total");
    assert_eq!(s[0].value, 1234.5);
    assert_eq!(s[0].series, "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}");
    let labels: Vec<_> = s[1].labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        labels,
        ["cpu=0", "mode=user"],
        "a trailing comma is allowed; the timestamp ignored"
    );
    assert_eq!(s[1].value, 7.0);
    assert_eq!(s[2].name, "node_load1");
    assert_eq!(s[2].series, "node_load1");
    assert_eq!(s[2].labels.iter().count(), 0);
}

#[test]
fn label_values_are_unescaped_and_may_hold_braces_commas_and_quotes() {
    let body = "m{path=\"/a,b}\",msg=\"say \\\"hi\\\"\\nbye \\\\ \"} 1\n";
    let s = samples(body);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].labels.get("path").as_deref(), Some("/a,b}"));
    assert_eq!(s[0].labels.get("msg").as_deref(), Some("say \"hi\"\nbye \\ "));
}

#[test]
fn openmetrics_bodies_end_at_eof_and_exemplars_are_ignored() {
    let body = "# TYPE rpc histogram\n\
                # UNIT rpc seconds\n\
                rpc_bucket{le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.2 1700000000.1\n\
                rpc_bucket{le=\"+Inf\"} 4\n\
                rpc_count 4\n\
                # EOF\n\
                after 1\n";
    let all: Vec<_> = lines(body).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.last(), Some(&Line::Eof));
    let s = samples(body);
    assert_eq!(s[0].labels.get("le").as_deref(), Some("0.5"));
    assert_eq!(s[0].value, 3.0);
    assert_eq!(s[1].labels.get("le").as_deref(), Some("+Inf"));
}

#[test]
fn prometheus_3_quoted_names_are_read_from_the_braces() {
    let s = samples("{\"my.metric\",code=\"200\"} 5\n{\"only.name\"} 6\n");
    assert_eq!(s[0].name, "my.metric");
    assert_eq!(s[0].labels.get("code").as_deref(), Some("200"));
    assert_eq!(s[0].labels.iter().count(), 1);
    assert_eq!(s[1].name, "only.name");
    assert_eq!(s[1].value, 6.0);
}

#[test]
fn special_values_read_as_go_writes_them() {
    let s = samples("a +Inf\nb -Inf\nc NaN\nd 1e-3\ne -0\n");
    assert_eq!(s[0].value, f64::INFINITY);
    assert_eq!(s[1].value, f64::NEG_INFINITY);
    assert!(s[2].value.is_nan());
    assert_eq!(s[3].value, 0.001);
    assert_eq!(s[4].value, 0.0);
}

#[test]
fn a_bad_line_is_an_error_for_that_line_and_the_next_lines_are_read() {
    let body = "ok 1\nnovalue\nopen{a=\"1\" 2\nbad 12x\n{=\"x\"} 3\nlast{a=\"1\"} 4\n";
    let results: Vec<_> = lines(body).collect();
    assert_eq!(results.len(), 6);
    assert!(results[0].is_ok());
    assert_eq!(results[1], Err(LineError::NoValue));
    assert_eq!(results[2], Err(LineError::Labels));
    assert_eq!(results[3], Err(LineError::Value));
    assert_eq!(results[4], Err(LineError::NoName));
    assert!(matches!(&results[5], Ok(Line::Sample(s)) if s.value == 4.0));
}

#[test]
fn carriage_returns_and_indentation_are_tolerated() {
    let s = samples("  a 1\r\n\r\n\tb{x=\"y\"} 2\r\n");
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].labels.get("x").as_deref(), Some("y"));
}

proptest! {
    #[test]
    fn no_body_makes_the_parser_panic(body in any::<String>()) {
        for line in lines(&body) {
            if let Ok(Line::Sample(s)) = line {
                let _ = s.labels.iter().count();
            }
        }
    }

    #[test]
    fn samples_written_in_the_text_format_read_back_the_same(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        labels in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "[ -~\\n]{0,12}"), 0..4),
        value in -1e12f64..1e12,
    ) {
        let escaped: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect();
        let body = if escaped.is_empty() {
            format!("{name} {value}\n")
        } else {
            format!("{name}{{{}}} {value}\n", escaped.join(","))
        };
        let s = samples(&body);
        prop_assert_eq!(s.len(), 1);
        prop_assert_eq!(s[0].name, name.as_str());
        prop_assert_eq!(s[0].value, value);
        let read: Vec<(String, String)> = s[0].labels.iter().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
        prop_assert_eq!(read, labels);
    }
}
