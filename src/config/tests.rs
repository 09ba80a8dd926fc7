use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_with_env(yaml, "test.yaml", no_env)
}

#[test]
fn an_empty_file_gives_a_local_udp_server_with_a_console_sink() {
    let c = parse("").unwrap();
    assert_eq!(c.statsd_listen_addresses, vec!["udp://127.0.0.1:8125"]);
    assert_eq!(c.interval, Duration::from_secs(10));
    assert!(c.metric_sinks.is_empty());
    assert!(!c.is_local());
    assert!(c.flush_on_shutdown);
    assert_eq!(c.metric_max_length, 8192);
    assert_eq!(c.read_buffer_size_bytes, 16 * 1024 * 1024);
    assert_eq!(c.aggregates, vec![Aggregate::Min, Aggregate::Max, Aggregate::Count]);
}

#[test]
fn the_example_config_is_valid_and_documents_every_key() {
    let text = include_str!("../../config.example.yaml");
    parse(text).unwrap();
    for (key, _) in KEYS {
        let documented = text.contains(&format!("\n{key}:")) || text.contains(&format!("\n# {key}:"));
        assert!(documented, "config.example.yaml does not document `{key}`");
    }
}

#[test]
fn every_documented_key_is_accepted() {
    // KEYS must list exactly the struct's fields: each must deserialize on its own.
    for (key, _) in KEYS {
        let value = match *key {
            "statsd_listen_addresses" => "[\"udp://127.0.0.1:0\"]",
            "interval" | "tcp_idle_timeout" => "5s",
            "hostname" | "forward_address" => "\"\"",
            "grpc_address" | "http_address" => "\"127.0.0.1:0\"",
            "extend_tags" | "tags" => "[a:b]",
            "stats_address" => "\"127.0.0.1:8126\"",
            "log_format" => "json",
            "log_level" => "warn",
            "percentiles" => "[0.5]",
            "aggregates" => "[min]",
            "distributions" => "histogram",
            "flush_on_shutdown" => "false",
            "metric_sinks" | "forward_addresses" => "[]",
            "prometheus_scrape" => "[{targets: [\"127.0.0.1:9100\"]}]",
            "forward_discovery" => "{kind: dns_a, name: globals.test, port: 8128}",
            "proxy" => "false",
            // With the key each needs beside it (files are read at start, not by the parse).
            "grpc_tls" => "{cert_file: a.pem, key_file: a-key.pem}\ngrpc_address: \"127.0.0.1:0\"",
            "statsd_tls" => "{cert_file: a.pem, key_file: a-key.pem}\nstatsd_listen_addresses: [\"tls://127.0.0.1:0\"]",
            "forward_tls" => "{ca_file: ca.pem}\nforward_address: \"127.0.0.1:8128\"",
            "series_limit_per_tag" => "[{tag: pod_name, limit: 2000}]",
            "mapper_profiles" => "[{name: p, prefix: 'a.', mappings: [{match: 'a.*', name: a, tags: {x: '$1'}}]}]",
            "metric_tag_filterlist" => "[{metric_name: m, action: exclude, tags: [request_id]}]",
            "statsd_metric_blocklist" => "[a.b]",
            "statsd_metric_blocklist_match_prefix" => "true",
            "minimum_sample_rate" => "0.001",
            "memory_limit" => "512MiB",
            "otlp_listen_addresses" => "[\"grpc://127.0.0.1:0\"]",
            "otlp_tls" => "{cert_file: a.pem, key_file: a-key.pem}\notlp_listen_addresses: [\"https://127.0.0.1:0\"]",
            "otlp_max_request_bytes" => "65536",
            "otlp_resource_attributes_as_tags" => "true",
            _ => "3",
        };
        parse(&format!("{key}: {value}\n")).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn the_global_tier_is_given_one_way_only_and_each_way_is_checked() {
    let err = parse("forward_address: a:1\nforward_addresses: [b:1]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_address and forward_addresses"), "{err}");
    let err = parse("forward_addresses: [b:1]\nforward_discovery: {kind: dns_a, name: x, port: 1}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_addresses and forward_discovery"), "{err}");
    let err = parse("forward_addresses: [b:1, nope]\n").unwrap_err().to_string();
    assert!(err.contains("forward_addresses") && err.contains("nope"), "{err}");
    let err = parse("forward_discovery: {kind: dns_a, name: x}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_discovery.port"), "{err}");
    let err = parse("forward_discovery: {kind: dns_srv, name: x, port: 3}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_discovery.port"), "{err}");
    let err = parse("proxy: true\nforward_addresses: [b:1]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("grpc_address"), "{err}");
    let err = parse("proxy: true\ngrpc_address: 127.0.0.1:0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("proxy"), "{err}");
    let c = parse("forward_discovery: {kind: dns_srv, name: _g._tcp.x, nameserver: \"127.0.0.1:53\"}\n").unwrap();
    assert!(c.is_local());
    assert_eq!(c.forward_discovery.unwrap().refresh, Duration::from_secs(30));
    let c = parse("proxy: true\ngrpc_address: 127.0.0.1:0\nforward_addresses: [a:1, b:2]\n").unwrap();
    assert!(!c.is_local() && c.forwards());
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let err = parse("interval: 10s\nflush_everything_now: true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("flush_everything_now"), "{err}");
    let err = parse("metric_sinks: [{kind: datadog, config: {api_kee: x}}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_kee"), "{err}");
}

#[test]
fn bad_values_are_errors_that_name_the_key_and_value() {
    let cases = [
        ("interval: 0s", "interval"),
        ("interval: 18446744073709551615", "interval"),
        ("tcp_idle_timeout: 0s", "tcp_idle_timeout"),
        ("num_workers: 100000", "num_workers"),
        ("forward_max_intervals: 0", "forward_max_intervals"),
        ("interval: soon", "soon"),
        (
            "statsd_listen_addresses: [\"quic://127.0.0.1:1\"]",
            "statsd_listen_addresses",
        ),
        (
            "statsd_listen_addresses: [\"127.0.0.1:8125\"]",
            "statsd_listen_addresses",
        ),
        ("percentiles: [1.5]", "percentiles"),
        ("percentiles: [0]", "percentiles"),
        ("aggregates: [p99]", "p99"),
        ("aggregates: [min, min]", "aggregates"),
        ("metric_max_length: 0", "metric_max_length"),
        ("http_address: nowhere", "http_address"),
        ("forward_address: globalhost", "forward_address"),
        ("extend_tags: [\"a,b\"]", "extend_tags"),
        ("metric_sinks: [{kind: carrier_pigeon}]", "carrier_pigeon"),
        (
            "metric_sinks: [{kind: datadog, config: {api_hostname: ftp://x}}]",
            "api_hostname",
        ),
        ("metric_sinks: [{kind: console}, {kind: console}]", "metric_sinks"),
        ("- just\n- a list", "mapping"),
    ];
    for (yaml, needle) in cases {
        match parse(yaml) {
            Ok(_) => panic!("{yaml:?} should be refused"),
            Err(e) => assert!(e.to_string().contains(needle), "{yaml:?}: {e} does not name {needle}"),
        }
    }
}

#[test]
fn percentile_names_keep_veneur_names_for_integral_percents_and_stay_unique() {
    assert_eq!(percentile_suffix(0.99), "99percentile");
    assert_eq!(percentile_suffix(0.5), "50percentile");
    assert_eq!(percentile_suffix(0.29), "29percentile");
    assert_eq!(percentile_suffix(0.999), "99_9percentile");
    assert_eq!(percentile_suffix(0.9999), "99_99percentile");
    parse("percentiles: [0.99, 0.999]").unwrap();
    let err = parse("percentiles: [0.99, 0.99]").unwrap_err().to_string();
    assert!(err.contains("collides"), "{err}");
}

#[test]
fn environment_variables_override_the_file() {
    let env = |k: &str| match k {
        "HARRIER_INTERVAL" => Some("2s".to_string()),
        "HARRIER_HOSTNAME" => Some("12345".to_string()),
        "HARRIER_NUM_WORKERS" => Some("3".to_string()),
        "HARRIER_EXTEND_TAGS" => Some("env:prod, team:core".to_string()),
        "HARRIER_PERCENTILES" => Some("0.5,0.95".to_string()),
        "HARRIER_STATSD_LISTEN_ADDRESSES" => Some("[udp://127.0.0.1:0, tcp://127.0.0.1:0]".to_string()),
        "HARRIER_FLUSH_ON_SHUTDOWN" => Some("false".to_string()),
        "HARRIER_METRIC_SINKS" => Some("[{kind: console, name: out}]".to_string()),
        _ => None,
    };
    let c = Config::from_yaml_with_env("interval: 10s\nnum_workers: 1\nhostname: file\n", "t", env).unwrap();
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.hostname, "12345");
    assert_eq!(c.num_workers, 3);
    assert_eq!(c.extend_tags, vec!["env:prod", "team:core"]);
    assert_eq!(c.percentiles, vec![0.5, 0.95]);
    assert_eq!(c.statsd_listen_addresses.len(), 2);
    assert!(!c.flush_on_shutdown);
    assert_eq!(c.metric_sinks[0].display_name(), "out");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let env = |k: &str| (k == "HARRIER_NUM_WORKERS").then(|| "[unclosed".to_string());
    let err = Config::from_yaml_with_env("", "t", env).unwrap_err().to_string();
    assert!(err.contains("HARRIER_NUM_WORKERS"), "{err}");
}

#[test]
fn durations_accept_go_style_units_and_plain_seconds() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    for bad in ["", "10", "s", "10x", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse("interval: 7").unwrap().interval, Duration::from_secs(7));
}

#[test]
fn listen_addresses_parse_every_scheme() {
    assert!(matches!(
        ListenAddress::parse("udp://127.0.0.1:8125"),
        Ok(ListenAddress::Udp(_))
    ));
    assert!(matches!(
        ListenAddress::parse("tcp://localhost:8125"),
        Ok(ListenAddress::Tcp(_))
    ));
    assert_eq!(
        ListenAddress::parse("unixgram:///tmp/dsd.sock"),
        Ok(ListenAddress::Unixgram("/tmp/dsd.sock".into()))
    );
    assert_eq!(
        ListenAddress::parse("unix:///tmp/dsd.sock"),
        Ok(ListenAddress::Unix("/tmp/dsd.sock".into()))
    );
    assert!(ListenAddress::parse("unix://").is_err());
}

#[test]
fn listen_addresses_take_every_form_veneur_accepts() {
    use std::net::SocketAddr;
    let ok = |url: &str| ListenAddress::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    // Go's URL form of a Linux abstract socket (Veneur's example.yaml), and the `//` spelling of it.
    assert_eq!(
        ok("unixgram:@veneur-statsd.sock"),
        ListenAddress::UnixgramAbstract("veneur-statsd.sock".into())
    );
    assert_eq!(
        ok("unix:@veneur-ssf.sock"),
        ListenAddress::UnixAbstract("veneur-ssf.sock".into())
    );
    assert_eq!(ok("unixgram://@dsd"), ListenAddress::UnixgramAbstract("dsd".into()));
    // Go's opaque path forms.
    assert_eq!(
        ok("unixgram:/tmp/dsd.sock"),
        ListenAddress::Unixgram("/tmp/dsd.sock".into())
    );
    assert_eq!(ok("unix:dsd.sock"), ListenAddress::Unix("dsd.sock".into()));
    // IPv6, an empty host, the family-specific schemes, and Go's preference for IPv4 when a name has both.
    let v6: SocketAddr = "[::1]:8125".parse().unwrap();
    assert_eq!(ok("udp://[::1]:8125"), ListenAddress::Udp(v6));
    assert_eq!(ok("tcp://[::1]:8125"), ListenAddress::Tcp(v6));
    assert_eq!(ok("udp://:8125"), ListenAddress::Udp("0.0.0.0:8125".parse().unwrap()));
    assert_eq!(ok("tcp6://:8125"), ListenAddress::Tcp("[::]:8125".parse().unwrap()));
    assert_eq!(
        ok("udp4://127.0.0.1:1"),
        ListenAddress::Udp("127.0.0.1:1".parse().unwrap())
    );
    assert_eq!(ok("udp6://[::1]:1"), ListenAddress::Udp("[::1]:1".parse().unwrap()));
    assert!(matches!(ok("udp://localhost:8126"), ListenAddress::Udp(a) if a.is_ipv4()));
    assert!(matches!(ok("UDP://127.0.0.1:8125"), ListenAddress::Udp(_)));
    // Displayed as they are parsed back.
    for url in [
        "unixgram:@veneur-statsd.sock",
        "unix:@a",
        "udp://[::1]:8125",
        "unixgram:///tmp/x.sock",
    ] {
        assert_eq!(ok(&ok(url).to_string()), ok(url), "{url}");
    }
}

#[test]
fn bad_listen_addresses_are_refused_naming_the_key_and_the_value() {
    for (bad, reason) in [
        ("unixgram:@", "name after `@` is empty"),
        ("unixgram:", "path is empty"),
        ("udp:127.0.0.1:8125", "expected udp://host:port"),
        ("udp4://[::1]:8125", "no IPv4 address"),
        ("udp://:http", "not a port number"),
        ("unixpacket:///tmp/x", "unixpacket"),
        ("sctp://127.0.0.1:1", "unknown scheme"),
        ("8125", "expected scheme://address"),
    ] {
        let yaml = format!("statsd_listen_addresses: [\"{bad}\"]");
        match parse(&yaml) {
            Err(ConfigError::Invalid { key, value, reason: r }) => {
                assert_eq!(key, "statsd_listen_addresses");
                assert_eq!(value, bad);
                assert!(r.contains(reason), "{bad}: {r}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let long = format!("unixgram:@{}", "x".repeat(108));
    assert!(ListenAddress::parse(&long).unwrap_err().contains("at most 107"));
}

#[test]
fn veneurs_empty_tags_are_skipped_with_a_warning() {
    let c = parse("tags: [\"\"]\nextend_tags: [\"\", \"env:ci\"]").unwrap();
    assert_eq!(c.extend_tags, vec!["env:ci"]);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("extend_tags: ignoring the empty tag")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings.iter().any(|w| w.starts_with("tags: ignoring the empty tag")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn the_api_key_never_appears_in_debug_output() {
    let c = parse("metric_sinks: [{kind: datadog, config: {api_key: s3cr3t-key-123}}]").unwrap();
    let dump = format!("{c:?}");
    assert!(!dump.contains("s3cr3t-key-123"), "{dump}");
    assert!(dump.contains("<redacted>"), "{dump}");
    assert_eq!(c.metric_sinks[0].datadog().unwrap().api_key, "s3cr3t-key-123");
}

#[test]
fn a_datadog_sink_without_a_key_is_refused_naming_the_key_and_the_variable() {
    if std::env::var("DD_API_KEY").is_ok() {
        return; // The variable would fill the key.
    }
    let err = parse("metric_sinks: [{kind: datadog}]").unwrap_err().to_string();
    assert!(err.contains("api_key") && err.contains("DD_API_KEY"), "{err}");
}

#[test]
fn a_prometheus_sink_needs_a_url_and_names_the_key_that_is_wrong() {
    let err = parse("metric_sinks: [{kind: prometheus_remote_write}]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metric_sinks[prometheus_remote_write].config.url"),
        "{err}"
    );
    let err = parse(
        "metric_sinks: [{kind: prometheus_remote_write, config: {url: \"http://x/w\", max_samples_per_request: 0}}]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_samples_per_request"), "{err}");
    let err = parse(
        "metric_sinks: [{kind: prometheus_remote_write, config: {url: \"http://x/w\", headers: {\"bad header\": v}}}]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("config.headers") && err.contains("bad header"), "{err}");
    let c = parse("metric_sinks: [{kind: prometheus_remote_write, config: {url: \"http://x/w\", counter_expiry: 1m}}]")
        .unwrap();
    let p = c.metric_sinks[0].prometheus().unwrap();
    assert_eq!(
        (p.max_samples_per_request, p.counter_expiry),
        (5000, Duration::from_secs(60))
    );
}

#[test]
fn header_values_never_appear_in_debug_output() {
    let c = parse(
        "metric_sinks: [{kind: prometheus_remote_write, config: {url: \"http://x/w\", headers: {Authorization: Bearer-t0ken}}}]",
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("t0ken") && shown.contains("Authorization"), "{shown}");
}

#[test]
fn veneur_environment_variables_override_the_file_and_harrier_ones_win() {
    let env = |k: &str| match k {
        "VENEUR_INTERVAL" => Some("3s".to_string()),
        "HARRIER_INTERVAL" => Some("5s".to_string()),
        "VENEUR_NUMWORKERS" => Some("3".to_string()),
        "VENEUR_DATADOGAPIKEY" => Some("12345678901234567890123456789012".to_string()),
        "VENEUR_DATADOGAPIHOSTNAME" => Some("http://127.0.0.1:9".to_string()),
        "VENEUR_TAGS" => Some("team:a,tier:b".to_string()),
        _ => None,
    };
    let c = Config::from_yaml_with_env("interval: 1s\nnum_workers: 1\n", "t", env).unwrap();
    assert_eq!(c.interval, Duration::from_secs(5));
    assert_eq!(c.num_workers, 3);
    assert_eq!(c.tags, vec!["team:a", "tier:b"]);
    let dd = c.metric_sinks[0].datadog().unwrap();
    // A key that looks like a number stays the key.
    assert_eq!(
        (dd.api_key.as_str(), dd.api_hostname.as_str()),
        ("12345678901234567890123456789012", "http://127.0.0.1:9")
    );
}

#[test]
fn omit_empty_hostname_means_no_host_only_when_no_hostname_is_given() {
    let c = parse("omit_empty_hostname: true\n").unwrap();
    assert_eq!(c.hostname, "");
    let c = parse("omit_empty_hostname: true\nhostname: web-9\n").unwrap();
    assert_eq!(c.hostname, "web-9");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn tls_keys_are_checked_against_the_listeners_and_forwarding_they_secure() {
    let err = parse("statsd_listen_addresses: [\"tls://127.0.0.1:0\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("statsd_tls"), "{err}");
    let err = parse("grpc_tls: {cert_file: a.pem, key_file: b.pem}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("grpc_tls") && err.contains("grpc_address"), "{err}");
    let err = parse("forward_tls: {ca_file: ca.pem}\n").unwrap_err().to_string();
    assert!(err.contains("forward_tls") && err.contains("forward_address"), "{err}");
    let err = parse("forward_address: a:1\nforward_tls: {ca_file: ca.pem, cert_file: c.pem}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_file"), "{err}");
    let err = parse("grpc_address: \"127.0.0.1:0\"\ngrpc_tls: {cert_file: \"\", key_file: b.pem}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("grpc_tls.cert_file"), "{err}");
}
