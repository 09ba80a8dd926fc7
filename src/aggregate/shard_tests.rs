//! Tests of [`super`]: one shard's series, intervals, limits and imports.

use super::*;
use crate::aggregate::admit::{Limit, Limits};
use crate::aggregate::Scope;
use crate::config::Aggregate;
use crate::model::SeriesKind;
use crate::protocol::parse_line;
use crate::protocol::Message;

fn feed(state: &mut ShardState, extend: &ExtendTags, lines: &str) {
    for line in crate::protocol::lines(lines.as_bytes()) {
        match parse_line(line) {
            Ok(Message::Metric(m)) => state.add_metric(&m, None, extend).unwrap(),
            other => panic!("not a metric: {other:?}"),
        }
    }
}

/// As a worker does: a line whose text the shard knows is aggregated from its value alone, any other is parsed
/// in full. Returns how many lines took the first way.
fn feed_known_first(state: &mut ShardState, extend: &ExtendTags, lines: &str) -> usize {
    let mut known = 0;
    for line in crate::protocol::str_lines(lines) {
        if let Some(view) = crate::protocol::split_metric(line) {
            if let Some(result) = state.add_known_line(&view) {
                result.unwrap();
                known += 1;
                continue;
            }
        }
        match parse_line(line.as_bytes()) {
            Ok(Message::Metric(m)) => state.add_metric(&m, None, extend).unwrap(),
            other => panic!("not a metric: {other:?}"),
        }
    }
    known
}

fn values(interval: &Interval) -> Vec<(String, String, f64)> {
    assert!(
        interval.reduced.is_empty(),
        "a shard built without summarizing reduced a value"
    );
    let mut v: Vec<_> = interval
        .series
        .iter()
        .map(|e| {
            let value = match &e.value {
                Value::Counter(v) | Value::Gauge(v) => *v,
                Value::Histogram(h) => h.stats.count,
                Value::Sketch(s) => s.count() as f64,
                Value::Set(s) => s.estimate(),
            };
            (e.key.name.to_string(), e.key.tags.joined().to_string(), value)
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

#[test]
fn values_restart_each_interval_and_a_series_idle_for_an_interval_is_not_flushed_then_forgotten() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    feed(&mut state, &e, "a:2|c|#x:1\nb:5|g\nh:1|ms\nh:2|ms\ns:u1|s\n");
    let first = state.take_interval();
    assert_eq!(
        values(&first),
        vec![
            ("a".into(), "x:1".into(), 2.0),
            ("b".into(), "".into(), 5.0),
            ("h".into(), "".into(), 2.0),
            ("s".into(), "".into(), 1.0),
        ]
    );
    // Only `a` and `h` get lines in the second interval: they start again from zero and empty.
    feed(&mut state, &e, "a:3|c|#x:1\nh:7|ms\n");
    assert_eq!(state.len(), 4, "idle series are kept for one interval");
    let second = state.take_interval();
    assert_eq!(
        values(&second),
        vec![("a".into(), "x:1".into(), 3.0), ("h".into(), "".into(), 1.0)]
    );
    assert_eq!(state.len(), 2, "series idle for a whole interval are removed");
    // Nothing at all: nothing is flushed, and every series is gone.
    assert!(state.take_interval().series.is_empty());
    assert!(state.take_interval().series.is_empty());
    assert_eq!(state.len(), 0);
    // A removed series comes back as new.
    feed(&mut state, &e, "b:9|g\n");
    assert_eq!(values(&state.take_interval()), vec![("b".into(), "".into(), 9.0)]);
}

#[test]
fn new_series_beyond_the_limit_are_dropped_known_ones_go_on_and_idle_ones_make_room() {
    let e = ExtendTags::default();
    let limit = std::sync::Arc::new(Limits::series_limit(3));
    let mut a = ShardState::with_limits(Some(limit.clone()));
    let mut b = ShardState::with_limits(Some(limit.clone()));
    let add = |state: &mut ShardState, line: &str| match parse_line(line.as_bytes()) {
        Ok(Message::Metric(m)) => state.add_metric(&m, None, &e),
        other => panic!("{other:?}"),
    };
    // The limit is shared: two series here, one there, then nothing new anywhere.
    assert_eq!(add(&mut a, "x:1|c"), Ok(()));
    assert_eq!(add(&mut a, "y:1|c"), Ok(()));
    assert_eq!(add(&mut b, "z:1|c"), Ok(()));
    assert_eq!(add(&mut b, "flood.1:1|c"), Err(Dropped::Limited(Limit::SeriesLimit)));
    assert_eq!(
        add(&mut a, "flood.2:1|c|#id:9"),
        Err(Dropped::Limited(Limit::SeriesLimit))
    );
    assert_eq!(
        add(&mut a, "flood.2:1|c|#id:10"),
        Err(Dropped::Limited(Limit::SeriesLimit))
    );
    assert_eq!(add(&mut a, "x:5|c"), Ok(()), "a kept series goes on");
    let taken = a.take_interval();
    assert_eq!(
        values(&taken),
        vec![("x".into(), "".into(), 6.0), ("y".into(), "".into(), 1.0)]
    );
    // The refused lines are counted by name.
    let flood = taken.names.iter().find(|r| &*r.name == "flood.2");
    assert_eq!(
        flood.map(|r| (r.series, r.dropped[Limit::SeriesLimit as usize])),
        Some((0, 2))
    );
    // y goes idle for an interval and is removed: room for one new series.
    assert_eq!(add(&mut a, "x:1|c"), Ok(()));
    a.take_interval();
    assert_eq!(a.len(), 1);
    assert_eq!(add(&mut b, "w:1|c"), Ok(()));
    assert_eq!(add(&mut b, "v:1|c"), Err(Dropped::Limited(Limit::SeriesLimit)));
}

#[test]
fn one_series_written_with_its_tags_in_different_orders_and_repeats_is_aggregated_once() {
    let e = ExtendTags::new(&["env:prod".to_string()]);
    let mut state = ShardState::default();
    for _ in 0..3 {
        feed(
            &mut state,
            &e,
            "r:1|c|#b:2,a:1\nr:1|c|#a:1,b:2\nr:1|c|#a:1,b:2,a:1,env:dev\nr:1|c|#env:prod,a:1,b:2\n",
        );
    }
    assert_eq!(state.len(), 1);
    assert_eq!(
        values(&state.take_interval()),
        vec![("r".into(), "a:1,b:2,env:prod".into(), 12.0)]
    );
}

#[test]
fn removing_series_keeps_every_other_series_findable() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    let all: String = (0..500).map(|i| format!("m{i}:1|c|#t:{}\n", i % 7)).collect();
    feed(&mut state, &e, &all);
    state.take_interval();
    // Every third series stays active; the others are removed at the next flush, moving slots around.
    let some: String = (0..500)
        .step_by(3)
        .map(|i| format!("m{i}:1|c|#t:{}\n", i % 7))
        .collect();
    feed(&mut state, &e, &some);
    state.take_interval();
    assert_eq!(state.len(), 167);
    feed(&mut state, &e, &some);
    feed(&mut state, &e, &some);
    assert_eq!(state.len(), 167, "no series was duplicated after the removals");
    let third = state.take_interval();
    assert_eq!(third.series.len(), 167);
    assert!(values(&third).iter().all(|(_, _, v)| *v == 2.0));
}

#[test]
fn an_imported_series_is_the_same_series_as_lines_that_come_later() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    let key = SeriesKey::new(
        "g",
        MetricKind::Counter,
        Scope::Global,
        TagSet::from_tags(["b:2", "a:1"]),
    );
    state.import(vec![Entry {
        hash: key.hash(),
        key,
        value: Value::Counter(10.0),
    }]);
    feed(
        &mut state,
        &e,
        "g:1|c|#a:1,b:2,veneurglobalonly\ng:1|c|#a:1,b:2,veneurglobalonly\n",
    );
    assert_eq!(state.len(), 1);
    assert_eq!(
        values(&state.take_interval()),
        vec![("g".into(), "a:1,b:2".into(), 12.0)]
    );
}

#[test]
fn a_line_known_by_its_text_is_aggregated_with_the_type_and_sample_rate_of_that_text() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    let lines = "x:1|c|@0.5|#a:1\nx:1|c|#a:1\nx:4|g|#a:1\nu:5|s\nt:1:2:3|ms\n";
    assert_eq!(feed_known_first(&mut state, &e, lines), 0, "every text is new");
    assert_eq!(
        feed_known_first(&mut state, &e, lines),
        4,
        "the first line of a series text is known again"
    );
    // `x:1|c|#a:1` is the counter `x{a:1}` written another way (its rate): the same series, found by its key.
    assert_eq!(
        feed_known_first(&mut state, &e, "x:3|c|@0.5|#a:1\nx:7|g|#a:1\nu:6|s\nu:5|s\nt:4|ms\n"),
        5
    );
    assert_eq!(state.len(), 4);
    assert_eq!(
        values(&state.take_interval()),
        vec![
            // Counter: 1/0.5 + 1 + 1/0.5 + 1 + 3/0.5 = 12; gauge: the last value; set members 5 and 6 (a
            // member that looks like a number is still a member); timer: 3 + 3 + 1 samples.
            ("t".into(), "".into(), 7.0),
            ("u".into(), "".into(), 2.0),
            ("x".into(), "a:1".into(), 7.0),
            ("x".into(), "a:1".into(), 12.0),
        ]
    );
}

#[test]
fn a_known_text_with_a_bad_value_is_left_to_the_full_parse_and_a_timestamped_line_is_never_known() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    feed(&mut state, &e, "x:1|c|#a:1\n");
    let bad = crate::protocol::split_metric("x:abc|c|#a:1").unwrap();
    assert!(state.add_known_line(&bad).is_none());
    assert!(matches!(
        parse_line(b"x:abc|c|#a:1"),
        Err(crate::protocol::ParseError::BadValue("abc"))
    ));
    let stamped = "x:1|c|#a:1|T1700000000";
    feed(&mut state, &e, stamped);
    let view = crate::protocol::split_metric(stamped).unwrap();
    assert!(state.add_known_line(&view).is_none(), "its text is not registered");
    feed(&mut state, &e, stamped);
    let interval = state.take_interval();
    assert_eq!(interval.timestamped.len(), 2);
    assert_eq!(values(&interval), vec![("x".into(), "a:1".into(), 1.0)]);
}

proptest::proptest! {
    #[test]
    fn property_test_lines_found_by_their_text_aggregate_exactly_as_fully_parsed_lines(
        lines in proptest::collection::vec(
            (
                0usize..3,
                0usize..4,
                proptest::collection::vec(0u32..50, 1..3),
                0usize..3,
                0usize..4,
            ),
            1..60,
        ),
    ) {
        let tag_blocks = ["", "|#a:1,b:2", "|#b:2,a:1", "|#a:1|c:container"];
        let text: String = lines
            .iter()
            .map(|(name, kind, values, rate, tags)| {
                let kind = ["c", "g", "ms", "s"][*kind];
                let value = if kind == "s" {
                    values[0].to_string()
                } else {
                    values.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
                };
                let rate = ["", "|@0.5", "|@0.25"][*rate];
                format!("m{name}:{value}|{kind}{rate}{}\n", tag_blocks[*tags])
            })
            .collect();
        let e = ExtendTags::default();
        let (mut full, mut fast) = (ShardState::default(), ShardState::default());
        for _ in 0..2 {
            feed(&mut full, &e, &text);
            feed_known_first(&mut fast, &e, &text);
        }
        proptest::prop_assert_eq!(values(&full.take_interval()), values(&fast.take_interval()));
    }
}

/// A reported series as (name, tags, value, kind).
type Reported = (String, String, String, SeriesKind);

/// What an interval reports and forwards, sorted: the series reported and the forwarded keys.
fn reported(state: &mut ShardState, cfg: &EmitConfig) -> (Vec<Reported>, Vec<String>) {
    let mut out = sink::Flush::default();
    let mut forward = Vec::new();
    crate::aggregate::emit(state.take_interval(), cfg, 1_700_000_000, &mut out, &mut forward);
    let mut series: Vec<_> = out
        .series
        .iter()
        .map(|s| {
            let value = format!("{:?}", s.value);
            (s.full_name().to_string(), s.tags.joined().to_string(), value, s.kind)
        })
        .collect();
    series.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let mut forwarded: Vec<String> = forward
        .iter()
        .map(|e| format!("{}#{}", e.key.name, e.key.tags.joined()))
        .collect();
    forwarded.sort();
    (series, forwarded)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A shard that reduces the histograms and sets it reports to their values when the interval is taken
    /// reports, bit for bit, what the full interval reports through `emit`, and forwards the same series; over
    /// two intervals (the second after the reset), as a local and as a global, with every aggregate.
    #[test]
    fn a_summarized_interval_reports_exactly_what_the_full_interval_reports(
        lines in proptest::collection::vec(
            (0u8..6, 0usize..5, proptest::collection::vec(0u32..2000, 1..4), 0usize..3, 0usize..3),
            1..60,
        ),
        is_local in proptest::bool::ANY,
    ) {
        let scope_tags = ["", "|#veneurlocalonly", "|#veneurglobalonly,a:b"];
        let text: String = lines
            .iter()
            .map(|(name, kind, values, rate, scope)| {
                let kind = ["c", "g", "ms", "h", "s"][*kind];
                let value = if kind == "s" {
                    values[0].to_string()
                } else {
                    // Some zero samples and some fractions among them.
                    values.iter().map(|v| format!("{}", f64::from(*v) / 8.0 - 10.0)).collect::<Vec<_>>().join(":")
                };
                let rate = ["", "|@0.5", "|@0.1"][*rate];
                format!("m{name}:{value}|{kind}{rate}{}\n", scope_tags[*scope])
            })
            .collect();
        let all = [
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Avg,
            Aggregate::Hmean,
            Aggregate::Median,
        ];
        let cfg = EmitConfig::new(is_local, &all, &[0.25, 0.5, 0.99]);
        let e = ExtendTags::default();
        let mut full = ShardState::default();
        let mut summarized = ShardState::default().summarizing(std::sync::Arc::new(cfg.clone()));
        for _ in 0..2 {
            feed(&mut full, &e, &text);
            feed(&mut summarized, &e, &text);
            proptest::prop_assert_eq!(reported(&mut full, &cfg), reported(&mut summarized, &cfg));
        }
    }
}

proptest::proptest! {
    /// A worker takes a large interval out in steps and aggregates lines between them: whatever the step size and
    /// wherever the lines fall, each line is in exactly one of the two intervals, a line aggregated before the take
    /// is in the first, and a series idle for a whole interval is still removed.
    #[test]
    fn an_interval_taken_in_steps_with_lines_in_between_counts_each_line_exactly_once(
        step in 1usize..20,
        before in proptest::collection::vec(0u8..40, 0..120),
        between in proptest::collection::vec((0usize..30, 0u8..60), 0..200),
    ) {
        let e = ExtendTags::default();
        let mut state = ShardState::default();
        // A previous interval leaves series idle in this one (30..40 get no line now unless sent below).
        let idle: String = (30..40).map(|k| format!("c{k}:1|c\nh{k}:1|ms\n")).collect();
        feed(&mut state, &e, &idle);
        state.take_interval();
        let mut sent = std::collections::BTreeMap::<String, f64>::new();
        let mut first_part = std::collections::BTreeMap::<String, f64>::new();
        for k in &before {
            feed(&mut state, &e, &format!("c{k}:1|c\nh{k}:1|ms\n"));
            *sent.entry(format!("c{k}")).or_default() += 1.0;
            *first_part.entry(format!("c{k}")).or_default() += 1.0;
        }
        let mut taking = state.begin_take();
        // Each line of `between` arrives after step number `at` (or after the last step, if there are fewer).
        let mut steps = 0;
        loop {
            let done = state.take_step(&mut taking, step);
            for (_, k) in between.iter().filter(|(at, _)| *at == steps || (done && *at > steps)) {
                feed(&mut state, &e, &format!("c{k}:1|c\nh{k}:2|ms\n"));
                *sent.entry(format!("c{k}")).or_default() += 1.0;
            }
            steps += 1;
            if done {
                break;
            }
        }
        let first = state.finish_take(taking);
        let second = state.take_interval();
        let mut got = std::collections::BTreeMap::<String, f64>::new();
        let mut got_first = std::collections::BTreeMap::<String, f64>::new();
        for (interval, is_first) in [(&first, true), (&second, false)] {
            for (name, _, v) in values(interval) {
                if name.starts_with('c') {
                    *got.entry(name.clone()).or_default() += v;
                    if is_first {
                        *got_first.entry(name).or_default() += v;
                    }
                }
            }
        }
        proptest::prop_assert_eq!(&got, &sent);
        for (name, n) in &first_part {
            proptest::prop_assert!(got_first.get(name).copied().unwrap_or(0.0) >= *n, "{} lost from the first interval", name);
        }
        // Series idle since the previous interval and sent nothing since were removed by the stepped take.
        for k in 30..40u8 {
            let name = format!("c{k}");
            if !sent.contains_key(&name) {
                proptest::prop_assert!(!got.contains_key(&name));
            }
        }
    }
}

#[test]
fn a_series_costs_48_bytes_of_slot_32_of_hot_state_and_40_per_output_series() {
    // Names and tag sets are one pointer each (`SharedStr`): with fat `Arc<str>`s a slot was 64 bytes, an entry
    // of a taken interval 64 and an output series 56.
    assert_eq!(std::mem::size_of::<SeriesKey>(), 24);
    assert_eq!(std::mem::size_of::<Slot>(), 48);
    assert_eq!(std::mem::size_of::<Hot>(), 32);
    assert_eq!(std::mem::size_of::<Entry>(), 48);
    assert_eq!(std::mem::size_of::<sink::Series>(), 40);
}

/// The flush of `lines` fed to a new state (summarizing, sketching) under `cfg`.
fn flushed(cfg: &EmitConfig, summarizing: bool, sketching: bool, lines: &str) -> sink::Flush {
    let mut state = ShardState::default().sketching(sketching);
    if summarizing {
        state = state.summarizing(std::sync::Arc::new(cfg.clone()));
    }
    feed(&mut state, &ExtendTags::default(), lines);
    let mut out = sink::Flush::default();
    crate::aggregate::emit(state.take_interval(), cfg, 1_700_000_000, &mut out, &mut Vec::new());
    out
}

#[test]
fn histograms_are_output_whole_only_when_a_sink_asks_and_only_where_they_are_reported() {
    let lines: String = (1..=100).map(|v| format!("lat:{v}|ms|#r:a\nd:{v}|d\n")).collect();
    let plain = EmitConfig::new(false, &[Aggregate::Max, Aggregate::Count], &[0.5]);
    let asked = EmitConfig {
        exponential: Some(160),
        ..plain.clone()
    };
    let names = |f: &sink::Flush| {
        let mut n: Vec<String> = f.all_series().map(|s| s.full_name().to_string()).collect();
        n.sort();
        n
    };
    for summarizing in [false, true] {
        let before = flushed(&plain, summarizing, false, &lines);
        assert!(before.histograms.is_empty(), "nothing whole unless asked");
        let after = flushed(&asked, summarizing, false, &lines);
        assert_eq!(names(&after), names(&before), "the other sinks' series are unchanged");
        assert_eq!(after.histograms.len(), 2, "{:?}", after.histograms);
        for h in &after.histograms {
            let d = &h.data;
            assert_eq!(
                (d.count, d.sum, d.min, d.max),
                (100.0, 5050.0, 1.0, 100.0),
                "{}",
                h.name
            );
            assert_eq!(d.buckets.total(), 100);
            assert_eq!(d.quantiles.len(), 1);
            assert!((d.quantiles[0].1 - 50.0).abs() <= 1.0, "{:?}", d.quantiles);
        }
        let lat = after
            .histograms
            .iter()
            .find(|h| &*h.name == "lat")
            .expect("the timer, whole");
        assert_eq!(lat.tags.joined(), "r:a");
    }
    // Distributions as DDSketches: whole from the sketch, exact stats.
    let sketched = flushed(&asked, false, true, &lines);
    let d = sketched
        .histograms
        .iter()
        .find(|h| &*h.name == "d")
        .expect("the distribution, whole");
    assert_eq!(
        (d.data.count, d.data.sum, d.data.min, d.data.max),
        (100.0, 5050.0, 1.0, 100.0)
    );
    assert_eq!(d.data.buckets.total(), 100);
    // A local forwards its histograms: none is whole there (the global's is), its own aggregates stay series.
    let local = EmitConfig {
        exponential: Some(160),
        ..EmitConfig::new(true, &[Aggregate::Max, Aggregate::Count], &[0.5])
    };
    let out = flushed(&local, false, false, &lines);
    assert!(out.histograms.is_empty(), "{:?}", out.histograms);
    assert!(names(&out).contains(&"lat.max".to_string()), "{:?}", names(&out));
    let local_only: String = (1..=10).map(|v| format!("l:{v}|ms|#veneurlocalonly\n")).collect();
    assert_eq!(
        flushed(&local, false, false, &local_only).histograms.len(),
        1,
        "a local-only histogram is reported here"
    );
}

#[test]
fn series_with_the_same_tags_share_one_tag_set_whether_made_from_lines_or_imported() {
    let e = ExtendTags::default();
    let mut state = ShardState::default();
    feed(&mut state, &e, "a:1|c|#env:prod,svc:api\nb:1|g|#svc:api,env:prod\n");
    let imported = |name: &str| {
        let key = SeriesKey::new(
            name,
            MetricKind::Counter,
            Scope::Global,
            TagSet::from_tags(["env:prod", "svc:api"]),
        );
        Entry {
            hash: key.hash(),
            key,
            value: Value::Counter(1.0),
        }
    };
    state.import(vec![imported("c"), imported("d")]);
    assert_eq!(state.len(), 4);
    let first = state.slots[0].key.tags.joined().as_ptr();
    for slot in &state.slots {
        assert_eq!(slot.key.tags.joined(), "env:prod,svc:api");
        assert!(
            std::ptr::eq(slot.key.tags.joined().as_ptr(), first),
            "{} has its own copy",
            slot.key.name
        );
    }
}
