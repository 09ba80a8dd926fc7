//! What becomes a new series: the operator's controls, applied where a shard meets a line whose text it does not
//! know (a known series is found by its text first, so none of this is on its path).
//!
//! In order: `mapper_profiles` rewrite the name and add tags, `statsd_metric_blocklist` drops the line,
//! `metric_tag_filterlist` removes tags (so that series differing only in them are one), then the limits decide
//! whether a series the shard does not hold may be created: `series_limit` (one shared count), `memory_limit`
//! (the estimated bytes of the series held), `series_limit_per_metric` and `series_limit_per_tag` (counts under
//! one lock, taken only to create or remove a series).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::key::SeriesKey;
use super::mapper::{Mapper, MapperCache};
use crate::config::{Config, FilterAction};
use crate::protocol::{MetricKind, Tags};

/// What the shards share to decide about new series: the limits, the rewriting controls, `minimum_sample_rate`.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub limits: Option<Arc<Limits>>,
    pub controls: Option<Arc<Controls>>,
    /// 0: no clamping.
    pub min_rate: f64,
}

impl Admission {
    pub fn new(config: &Config) -> Result<Admission, String> {
        Ok(Admission {
            limits: Limits::new(config).map(Arc::new),
            controls: Controls::new(config)?.map(Arc::new),
            min_rate: config.minimum_sample_rate,
        })
    }
}

pub use crate::config::controls::SMALLEST_SERIES_BYTES;

/// The estimated bytes of a series of `kind` with a name and canonical tags of these lengths: its slot, hot
/// state, index entries, key strings and state, and what a flush holds for it (the interval's copy and its output
/// series). Measured from the RSS of series of each kind held by the real server (see the README's "Memory").
pub fn series_bytes(kind: MetricKind, name_len: usize, tags_len: usize) -> u64 {
    let state = match kind {
        MetricKind::Counter | MetricKind::Gauge => 0,
        // A digest's centroids and buffer, the stats, and the summary or forwarded copy at flush.
        MetricKind::Timer | MetricKind::Histogram => 2_600,
        // A DDSketch's bins (or a digest), and its copy at flush.
        MetricKind::Distribution => 2_600,
        // A sparse HyperLogLog, its registers once dense, and the copy forwarded at flush.
        MetricKind::Set => 3_200,
    };
    SMALLEST_SERIES_BYTES + state + 2 * (name_len + tags_len) as u64
}

/// [`series_bytes`] of a held series' key.
pub fn key_bytes(key: &SeriesKey) -> u64 {
    series_bytes(key.kind, key.name.len(), key.tags.joined().len())
}

/// Which limit refused a new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    SeriesLimit = 0,
    PerMetric = 1,
    PerTag = 2,
    Memory = 3,
}

impl Limit {
    pub const ALL: [Limit; 4] = [Limit::SeriesLimit, Limit::PerMetric, Limit::PerTag, Limit::Memory];

    /// The `reason` tag of `harrier.series.dropped` and the `limit` tag of `harrier.series.limited`.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::SeriesLimit => "series_limit",
            Limit::PerMetric => "series_limit_per_metric",
            Limit::PerTag => "series_limit_per_tag",
            Limit::Memory => "memory_limit",
        }
    }
}

/// The limits on series held, shared by every shard.
#[derive(Debug, Default)]
pub struct Limits {
    /// `series_limit` (0: none).
    series: usize,
    held: AtomicUsize,
    /// `memory_limit` less the fixed part: the bytes the series may take (0: none).
    budget: u64,
    bytes: AtomicU64,
    per_metric: Option<usize>,
    per_tag: Vec<(Box<str>, usize)>,
    /// Only when `per_metric` or `per_tag` is set.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_name: HashMap<Box<str>, u32>,
    /// Per `per_tag` entry: how many series hold each value.
    by_tag: Vec<HashMap<Box<str>, u32>>,
}

impl Limits {
    /// `None` when nothing is limited.
    pub fn new(config: &Config) -> Option<Limits> {
        let fixed = crate::config::controls::fixed_memory(config).0;
        let budget = config.memory_limit.map_or(0, |m| m.saturating_sub(fixed).max(1));
        let limits = Limits {
            series: config.series_limit,
            budget,
            per_metric: config.series_limit_per_metric,
            per_tag: config
                .series_limit_per_tag
                .iter()
                .map(|t| (t.tag.as_str().into(), t.limit))
                .collect(),
            counts: Mutex::new(Counts {
                by_name: HashMap::new(),
                by_tag: vec![HashMap::new(); config.series_limit_per_tag.len()],
            }),
            ..Limits::default()
        };
        let any = limits.series > 0 || limits.budget > 0 || limits.per_metric.is_some() || !limits.per_tag.is_empty();
        any.then_some(limits)
    }

    /// `series_limit` alone (tests and benches).
    pub fn series_limit(limit: usize) -> Limits {
        Limits {
            series: limit,
            ..Limits::default()
        }
    }

    /// Takes room for a new series of this name and canonical tags, or says which limit refuses it.
    pub fn admit(&self, name: &str, kind: MetricKind, tags: &str) -> Result<(), Limit> {
        if self.series > 0
            && self
                .held
                .fetch_update(Relaxed, Relaxed, |k| (k < self.series).then_some(k + 1))
                .is_err()
        {
            return Err(Limit::SeriesLimit);
        }
        if self.series == 0 {
            self.held.fetch_add(1, Relaxed);
        }
        let bytes = series_bytes(kind, name.len(), tags.len());
        if self.budget > 0
            && self
                .bytes
                .fetch_update(Relaxed, Relaxed, |b| (b + bytes <= self.budget).then_some(b + bytes))
                .is_err()
        {
            self.held.fetch_sub(1, Relaxed);
            return Err(Limit::Memory);
        }
        if self.budget == 0 {
            self.bytes.fetch_add(bytes, Relaxed);
        }
        if let Err(limit) = self.admit_counted(name, tags) {
            self.held.fetch_sub(1, Relaxed);
            self.bytes.fetch_sub(bytes, Relaxed);
            return Err(limit);
        }
        Ok(())
    }

    fn admit_counted(&self, name: &str, tags: &str) -> Result<(), Limit> {
        let Some(mut counts) = self.counts() else {
            return Ok(());
        };
        if let Some(max) = self.per_metric {
            if counts.by_name.get(name).is_some_and(|&n| n as usize >= max) {
                return Err(Limit::PerMetric);
            }
        }
        for ((key, max), values) in self.per_tag.iter().zip(&counts.by_tag) {
            if let Some(value) = tag_value(tags, key) {
                if !values.contains_key(value) && values.len() >= *max {
                    return Err(Limit::PerTag);
                }
            }
        }
        self.adjust(&mut counts, name, tags, true);
        Ok(())
    }

    /// Counts a series kept whatever the limits (imported from other instances, which are not refused).
    pub fn force(&self, key: &SeriesKey) {
        self.held.fetch_add(1, Relaxed);
        self.bytes.fetch_add(key_bytes(key), Relaxed);
        if let Some(mut counts) = self.counts() {
            self.adjust(&mut counts, &key.name, key.tags.joined(), true);
        }
    }

    /// Gives back the room of a series removed.
    pub fn release(&self, key: &SeriesKey) {
        self.held.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(key_bytes(key), Relaxed);
        if let Some(mut counts) = self.counts() {
            self.adjust(&mut counts, &key.name, key.tags.joined(), false);
        }
    }

    /// The per-metric and per-tag counts, locked; `None` when neither limit is set (nothing is counted).
    fn counts(&self) -> Option<std::sync::MutexGuard<'_, Counts>> {
        (self.per_metric.is_some() || !self.per_tag.is_empty())
            .then(|| self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts one series of this name and canonical tags into (`add`) or out of the per-metric and per-tag counts.
    fn adjust(&self, counts: &mut Counts, name: &str, tags: &str, add: bool) {
        fn step(map: &mut HashMap<Box<str>, u32>, key: &str, add: bool) {
            if add {
                *map.entry(key.into()).or_insert(0) += 1;
            } else if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        if self.per_metric.is_some() {
            step(&mut counts.by_name, name, add);
        }
        for ((key, _), values) in self.per_tag.iter().zip(&mut counts.by_tag) {
            if let Some(value) = tag_value(tags, key) {
                step(values, value, add);
            }
        }
    }

    /// The estimated bytes of the series held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

/// The value of tag key `key` in canonical tags (`a:1,b:2`); a tag `key` without a value has the empty value.
fn tag_value<'a>(tags: &'a str, key: &str) -> Option<&'a str> {
    tags.split(',').find_map(|t| match t.split_once(':') {
        Some((k, v)) if k == key => Some(v),
        None if t == key => Some(""),
        _ => None,
    })
}

/// A line's name and tags as the controls rewrote them (`None`: as written).
#[derive(Debug, Default)]
pub struct Rewritten {
    pub name: Option<String>,
    pub tags: Option<String>,
}

/// Why the controls dropped a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocklisted(pub u32);

#[derive(Debug)]
struct Filter {
    include: bool,
    keys: Vec<Box<str>>,
}

impl Filter {
    fn keeps(&self, tag: &str) -> bool {
        let key = tag.split_once(':').map_or(tag, |(k, _)| k);
        self.keys.iter().any(|k| **k == *key) == self.include
    }
}

/// The rewriting controls, compiled: shared by every shard.
#[derive(Debug)]
pub struct Controls {
    mapper: Option<Mapper>,
    filters: HashMap<Box<str>, Filter>,
    /// `statsd_metric_blocklist`, in the order configured (an entry's index names it in the counts).
    blocklist: Vec<Box<str>>,
    /// Each whole name of `blocklist`, with its entry's index (used without `match_prefix`).
    blocked_names: HashMap<Box<str>, u32>,
    match_prefix: bool,
    pub mapper_cache_size: usize,
}

impl Controls {
    /// `None` when nothing rewrites or drops lines.
    pub fn new(config: &Config) -> Result<Option<Controls>, String> {
        let mapper = Mapper::new(&config.mapper_profiles)?;
        if mapper.is_none() && config.metric_tag_filterlist.is_empty() && config.statsd_metric_blocklist.is_empty() {
            return Ok(None);
        }
        let filters = config
            .metric_tag_filterlist
            .iter()
            .map(|f| {
                let filter = Filter {
                    include: f.action == FilterAction::Include,
                    keys: f.tags.iter().map(|t| t.as_str().into()).collect(),
                };
                (f.metric_name.as_str().into(), filter)
            })
            .collect();
        let blocklist: Vec<Box<str>> = config
            .statsd_metric_blocklist
            .iter()
            .map(|s| s.as_str().into())
            .collect();
        Ok(Some(Controls {
            mapper,
            filters,
            blocked_names: blocklist
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            blocklist,
            match_prefix: config.statsd_metric_blocklist_match_prefix,
            mapper_cache_size: config.mapper_cache_size,
        }))
    }

    /// The blocklist's entries, in order.
    pub fn blocklist(&self) -> &[Box<str>] {
        &self.blocklist
    }

    /// The name and tags a line of a series not known by its text is keyed by, or the blocklist entry that drops
    /// it. Allocates only when something is rewritten.
    pub fn rewrite(&self, name: &str, tags: Tags<'_>, cache: &mut MapperCache) -> Result<Rewritten, Blocklisted> {
        let mapped = self.mapper.as_ref().and_then(|m| cache.map(m, name));
        let final_name = mapped.as_ref().map_or(name, |m| m.name.as_str());
        if let Some(entry) = self.blocked(final_name) {
            return Err(Blocklisted(entry));
        }
        let filter = self.filters.get(final_name);
        let added = mapped.as_ref().map_or(&[][..], |m| &m.tags[..]);
        let tags = (filter.is_some() || !added.is_empty()).then(|| {
            let mut out = String::with_capacity(tags.raw().len());
            for tag in tags.iter().filter(|t| filter.is_none_or(|f| f.keeps(t))) {
                push_tag(&mut out, tag);
            }
            for tag in added.iter().filter(|t| filter.is_none_or(|f| f.keeps(t))) {
                push_tag(&mut out, tag);
            }
            out
        });
        Ok(Rewritten {
            name: mapped.map(|m| m.name.clone()),
            tags,
        })
    }

    /// The entry of `statsd_metric_blocklist` that blocks `name`, if any.
    fn blocked(&self, name: &str) -> Option<u32> {
        if self.blocklist.is_empty() {
            return None;
        }
        if self.match_prefix {
            self.blocklist
                .iter()
                .position(|p| name.starts_with(&**p))
                .map(|i| i as u32)
        } else {
            self.blocked_names.get(name).copied()
        }
    }

    /// An imported key with `metric_tag_filterlist` applied, if it changes it (a global filters what locals that
    /// do not filter forward).
    pub fn filter_key(&self, key: &SeriesKey) -> Option<SeriesKey> {
        let filter = self.filters.get(&*key.name)?;
        if key.tags.iter().all(|t| filter.keeps(t)) {
            return None;
        }
        let tags = crate::model::TagSet::from_tags(key.tags.iter().filter(|t| filter.keeps(t)));
        Some(SeriesKey::new(&key.name, key.kind, key.scope, tags))
    }
}

fn push_tag(out: &mut String, tag: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(tag);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml_with_env(yaml, "test.yaml", |_| None).unwrap()
    }

    #[test]
    fn a_filter_removes_the_listed_keys_and_the_mapping_adds_tags_first() {
        let c = config(
            "mapper_profiles: [{name: p, prefix: 'req.', mappings: [{match: 'req.*', name: req, tags: {route: \
             '$1'}}]}]\nmetric_tag_filterlist: [{metric_name: req, action: exclude, tags: [request_id]}]",
        );
        let controls = Controls::new(&c).unwrap().unwrap();
        let mut cache = MapperCache::new(10);
        let r = controls
            .rewrite("req.charges", Tags::new("request_id:abc,env:prod"), &mut cache)
            .unwrap();
        assert_eq!(r.name.as_deref(), Some("req"));
        assert_eq!(r.tags.as_deref(), Some("env:prod,route:charges"));
        let untouched = controls
            .rewrite("other", Tags::new("request_id:abc"), &mut cache)
            .unwrap();
        assert!(untouched.name.is_none() && untouched.tags.is_none());
    }

    #[test]
    fn an_include_filter_keeps_only_its_keys_and_filters_imported_keys_too() {
        let c = config("metric_tag_filterlist: [{metric_name: m, action: include, tags: [env]}]");
        let controls = Controls::new(&c).unwrap().unwrap();
        let mut cache = MapperCache::new(10);
        let r = controls.rewrite("m", Tags::new("env:a,pod:b,env"), &mut cache).unwrap();
        assert_eq!(r.tags.as_deref(), Some("env:a,env"));
        let key = SeriesKey::new(
            "m",
            MetricKind::Counter,
            super::super::Scope::Mixed,
            crate::model::TagSet::from_tags(["env:a", "pod:b"]),
        );
        assert_eq!(controls.filter_key(&key).unwrap().tags.joined(), "env:a");
    }

    #[test]
    fn the_blocklist_matches_whole_names_or_prefixes_and_names_its_entry() {
        let exact = Controls::new(&config("statsd_metric_blocklist: [a.b, c]"))
            .unwrap()
            .unwrap();
        let mut cache = MapperCache::new(0);
        assert_eq!(
            exact.rewrite("c", Tags::new(""), &mut cache).unwrap_err(),
            Blocklisted(1)
        );
        assert!(exact.rewrite("a.b.c", Tags::new(""), &mut cache).is_ok());
        let prefix = Controls::new(&config(
            "statsd_metric_blocklist: [a.b, c]\nstatsd_metric_blocklist_match_prefix: true",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            prefix.rewrite("a.b.c", Tags::new(""), &mut cache).unwrap_err(),
            Blocklisted(0)
        );
        assert!(prefix.rewrite("b", Tags::new(""), &mut cache).is_ok());
    }

    #[test]
    fn per_metric_and_per_tag_limits_refuse_new_series_and_give_room_back() {
        let c = config("series_limit_per_metric: 2\nseries_limit_per_tag: [{tag: pod, limit: 1}]");
        let l = Limits::new(&c).unwrap();
        assert_eq!(l.admit("m", MetricKind::Counter, "a:1"), Ok(()));
        assert_eq!(l.admit("m", MetricKind::Counter, "a:2"), Ok(()));
        assert_eq!(l.admit("m", MetricKind::Counter, "a:3"), Err(Limit::PerMetric));
        assert_eq!(l.admit("n", MetricKind::Counter, "pod:x"), Ok(()));
        // A value already held goes on being admitted.
        assert_eq!(l.admit("n", MetricKind::Counter, "a:1,pod:x"), Ok(()));
        assert_eq!(l.admit("o", MetricKind::Counter, "pod:x"), Ok(()));
        assert_eq!(l.admit("p", MetricKind::Counter, "pod:y"), Err(Limit::PerTag));
        let key = |n: &str, t: &str| {
            SeriesKey::new(
                n,
                MetricKind::Counter,
                super::super::Scope::Mixed,
                crate::model::TagSet::from_tags(t.split(',')),
            )
        };
        l.release(&key("m", "a:1"));
        assert_eq!(l.admit("m", MetricKind::Counter, "a:3"), Ok(()));
        for (n, t) in [("n", "pod:x"), ("n", "a:1,pod:x"), ("o", "pod:x")] {
            l.release(&key(n, t));
        }
        assert_eq!(l.admit("p", MetricKind::Counter, "pod:y"), Ok(()));
    }

    #[test]
    fn the_memory_budget_refuses_series_once_their_estimate_is_spent() {
        let room = 10 * series_bytes(MetricKind::Counter, 1, 0);
        let fixed = crate::config::controls::fixed_memory(&config("")).0;
        let c = config(&format!("memory_limit: {}", fixed + room));
        let l = Limits::new(&c).unwrap();
        for _ in 0..10 {
            assert_eq!(l.admit("m", MetricKind::Counter, ""), Ok(()));
        }
        assert_eq!(l.admit("m", MetricKind::Counter, ""), Err(Limit::Memory));
        assert_eq!(l.bytes(), 10 * series_bytes(MetricKind::Counter, 1, 0));
    }
}
