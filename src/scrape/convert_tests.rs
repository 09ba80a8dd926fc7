use super::*;

fn converter(histograms: ScrapeHistograms) -> Converter {
    Converter::new(Options {
        prefix: String::new(),
        tags: "instance:h:1".to_string(),
        allow: None,
        deny: None,
        histograms,
    })
}

fn run(c: &mut Converter, body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let outcome = c.convert(body, &mut out);
    let lines: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    assert_eq!(outcome.lines as usize, lines.len());
    lines
}

const COUNTER: &str = "# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} VALUE\n";

#[test]
fn a_counter_primes_on_the_first_scrape_then_reports_differences_and_a_reset_counts_from_zero() {
    let mut c = converter(ScrapeHistograms::Buckets);
    assert!(run(&mut c, &COUNTER.replace("VALUE", "10")).is_empty());
    assert_eq!(
        run(&mut c, &COUNTER.replace("VALUE", "17")),
        ["http_requests_total:7.0|c|#instance:h:1,code:200"]
    );
    assert_eq!(
        run(&mut c, &COUNTER.replace("VALUE", "17")),
        ["http_requests_total:0.0|c|#instance:h:1,code:200"]
    );
    // The target restarted: its counter is below the last value and counts from zero.
    assert_eq!(
        run(&mut c, &COUNTER.replace("VALUE", "3")),
        ["http_requests_total:3.0|c|#instance:h:1,code:200"]
    );
}

#[test]
fn a_stream_that_appears_after_the_first_scrape_counts_from_zero() {
    let mut c = converter(ScrapeHistograms::Buckets);
    run(&mut c, &COUNTER.replace("VALUE", "1"));
    let body = format!(
        "{}http_requests_total{{code=\"500\"}} 2\n",
        COUNTER.replace("VALUE", "1")
    );
    let lines = run(&mut c, &body);
    assert!(
        lines.contains(&"http_requests_total:2.0|c|#instance:h:1,code:500".to_string()),
        "{lines:?}"
    );
}

#[test]
fn openmetrics_counters_keep_their_total_name_and_created_samples_are_skipped() {
    let mut c = converter(ScrapeHistograms::Buckets);
    let body = |v: u32| format!("# TYPE jobs counter\njobs_total {v}\njobs_created 1700000000\n# EOF\n");
    run(&mut c, &body(1));
    assert_eq!(run(&mut c, &body(4)), ["jobs_total:3.0|c|#instance:h:1"]);
}

#[test]
fn gauges_untyped_and_summary_quantiles_are_gauges_and_nan_is_skipped() {
    let mut c = converter(ScrapeHistograms::Buckets);
    let body = "# TYPE temp gauge\ntemp{room=\"a b\",empty=\"\"} 21.5\nuntyped_thing 3\n\
                # TYPE rpc summary\nrpc{quantile=\"0.5\"} 0.2\nrpc{quantile=\"0.99\"} NaN\nrpc_sum 10\nrpc_count 4\n";
    assert_eq!(
        run(&mut c, body),
        [
            "temp:21.5|g|#instance:h:1,room:a b",
            "untyped_thing:3.0|g|#instance:h:1",
            "rpc:0.2|g|#instance:h:1,quantile:0.5",
        ]
    );
    let again = run(
        &mut c,
        &body
            .replace("rpc_sum 10", "rpc_sum 12.5")
            .replace("rpc_count 4", "rpc_count 6"),
    );
    assert!(again.contains(&"rpc.sum:2.5|c|#instance:h:1".to_string()), "{again:?}");
    assert!(
        again.contains(&"rpc.count:2.0|c|#instance:h:1".to_string()),
        "{again:?}"
    );
}

const HISTOGRAM: &str = "# TYPE lat histogram\n\
    lat_bucket{path=\"/a\",le=\"0.1\"} B1\n\
    lat_bucket{path=\"/a\",le=\"1\"} B2\n\
    lat_bucket{path=\"/a\",le=\"+Inf\"} B3\n\
    lat_sum{path=\"/a\"} SUM\n\
    lat_count{path=\"/a\"} B3\n";

fn histogram(b1: u32, b2: u32, b3: u32, sum: f64) -> String {
    HISTOGRAM
        .replace("B1", &b1.to_string())
        .replace("B2", &b2.to_string())
        .replace("B3", &b3.to_string())
        .replace("SUM", &sum.to_string())
}

#[test]
fn histogram_buckets_become_counters_tagged_le_with_sum_and_count() {
    let mut c = converter(ScrapeHistograms::Buckets);
    run(&mut c, &histogram(1, 2, 3, 1.0));
    assert_eq!(
        run(&mut c, &histogram(3, 6, 8, 5.5)),
        [
            "lat.bucket:2.0|c|#instance:h:1,path:/a,le:0.1",
            "lat.bucket:4.0|c|#instance:h:1,path:/a,le:1",
            "lat.bucket:5.0|c|#instance:h:1,path:/a,le:+Inf",
            "lat.sum:4.5|c|#instance:h:1,path:/a",
            "lat.count:5.0|c|#instance:h:1,path:/a",
        ]
    );
}

/// The observations each distribution line carries (values, weight).
fn weights(lines: &[String]) -> Vec<(Vec<f64>, f64)> {
    lines
        .iter()
        .map(|l| {
            let (name_values, rest) = l.split_once('|').unwrap();
            let values: Vec<f64> = name_values.split(':').skip(1).map(|v| v.parse().unwrap()).collect();
            let rate = rest
                .split('|')
                .find_map(|s| s.strip_prefix('@'))
                .map_or(1.0, |r| r.parse::<f64>().unwrap());
            (values, 1.0 / rate)
        })
        .collect()
}

#[test]
fn with_histograms_distribution_each_buckets_new_observations_are_spread_over_it_with_the_exact_count() {
    let mut c = converter(ScrapeHistograms::Distribution);
    run(&mut c, &histogram(0, 0, 0, 0.0));
    // 2 new in (0, 0.1], 9 in (0.1, 1], 1 above 1.
    let lines = run(&mut c, &histogram(2, 11, 12, 7.0));
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("lat:") && l.ends_with("|#instance:h:1,path:/a")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.contains("|d")), "{lines:?}");
    let w = weights(&lines);
    let total: f64 = w.iter().map(|(v, w)| v.len() as f64 * w).sum();
    assert_eq!(total, 12.0, "{lines:?}");
    let in_first: f64 = w
        .iter()
        .filter(|(v, _)| v[0] <= 0.1)
        .map(|(v, w)| v.len() as f64 * w)
        .sum();
    assert_eq!(in_first, 2.0);
    let above: f64 = w
        .iter()
        .filter(|(v, _)| v[0] >= 1.0)
        .map(|(v, w)| v.len() as f64 * w)
        .sum();
    assert_eq!(
        above, 1.0,
        "the +Inf bucket's observation sits at the highest finite bound"
    );
    assert!(w.iter().all(|(v, _)| v.iter().all(|x| (0.0..=1.0).contains(x))));
}

#[test]
fn a_sample_rate_for_every_weight_gives_that_weight_back_to_a_truncating_reader() {
    for w in (1..5000u64).chain([49, 98, 999_999, 1_000_000]) {
        let r = rate_for(w);
        let back = 1.0 / r;
        assert!(back >= w as f64 && back < w as f64 + 1e-6, "{w}: {r} gives {back}");
        assert_eq!(back as u64, w);
    }
}

#[test]
fn allow_and_deny_select_families_by_whole_name() {
    let mut c = Converter::new(Options {
        prefix: "node.".to_string(),
        tags: String::new(),
        allow: Some(regex::RegexSet::new(["^(?:node_.*)$"]).unwrap()),
        deny: Some(regex::RegexSet::new(["^(?:node_secret)$"]).unwrap()),
        histograms: ScrapeHistograms::Buckets,
    });
    let lines = run(&mut c, "node_load1 1\nnode_secret 2\ngo_goroutines 3\nnode_a:b 4\n");
    assert_eq!(lines, ["node.node_load1:1.0|g", "node.node_a_b:4.0|g"]);
}

#[test]
fn tag_values_lose_what_would_split_a_line_and_bad_lines_are_counted_by_reason() {
    let mut c = converter(ScrapeHistograms::Buckets);
    let mut out = Vec::new();
    let outcome = c.convert("m{v=\"a,b|c\\nd\"} 1\nbroken 1x\nalso 2x\nnovalue\n", &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "m:1.0|g|#instance:h:1,v:a_b_c_d\n");
    assert_eq!(outcome.samples, 1);
    assert_eq!(outcome.bad, [("bad_value", 2), ("no_value", 1)]);
}
