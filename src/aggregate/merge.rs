//! The workers' intervals merged into one at the flush. Each worker aggregates every line it receives, so a series
//! sent to several workers (over two sockets, two connections or two reader threads) has a partial state in each;
//! merged here, the output has one series per key, as if one worker had received every line.
//!
//! Per type: counters add (saturating), histograms merge their exact statistics and their digests, sets and
//! DDSketches merge (both exactly), and a gauge takes the value of the worker merged last (which of two senders'
//! concurrent gauges is "last" has no order to keep: one sender's lines all go to one worker, see
//! [`crate::pipeline::Ingest::lane`]). A service check sent to several workers keeps its latest run.

use std::collections::HashMap;

use hashbrown::HashTable;

use super::shard::{Interval, Value};
use super::TagSet;

/// Merges the intervals of every worker into one whose keys are distinct. Nothing is copied when only one
/// interval holds anything (one worker, or traffic that reached only one).
pub fn merge_intervals(mut intervals: Vec<Interval>) -> Option<Interval> {
    intervals.retain(|i| !is_empty(i));
    // The interval with the most series is the base: its entries are indexed and kept in place.
    intervals.sort_by_key(|i| std::cmp::Reverse(i.series.len()));
    let mut rest = intervals.into_iter();
    let mut base = rest.next()?;
    let others: Vec<Interval> = rest.collect();
    if others.is_empty() {
        return Some(base);
    }
    let mut index: HashTable<u32> = HashTable::with_capacity(base.series.len());
    for (i, e) in base.series.iter().enumerate() {
        index.insert_unique(e.hash, i as u32, |&j| base.series[j as usize].hash);
    }
    let mut checks: HashMap<(String, TagSet), usize> = HashMap::new();
    for (i, c) in base.checks.iter().enumerate() {
        checks.insert((c.name.clone(), c.tags.clone()), i);
    }
    for other in others {
        base.series.reserve(other.series.len());
        for incoming in other.series {
            let series = &base.series;
            let found = index
                .find(incoming.hash, |&j| series[j as usize].key == incoming.key)
                .copied();
            match found {
                Some(j) => base.series[j as usize].value.merge(incoming.value),
                None => {
                    let j = base.series.len() as u32;
                    if matches!(incoming.value, Value::Histogram(_)) {
                        base.histograms += 1;
                    }
                    base.series.push(incoming);
                    let series = &base.series;
                    index.insert_unique(series[j as usize].hash, j, |&k| series[k as usize].hash);
                }
            }
        }
        for check in other.checks {
            match checks.get(&(check.name.clone(), check.tags.clone())) {
                Some(&i) if base.checks[i].timestamp <= check.timestamp => base.checks[i] = check,
                Some(_) => {}
                None => {
                    checks.insert((check.name.clone(), check.tags.clone()), base.checks.len());
                    base.checks.push(check);
                }
            }
        }
        // Reduced series come only from a summarizing shard, that is from the only worker: there is nothing to
        // merge them with, but they are kept if ever there were.
        base.reduced.extend(other.reduced);
        base.events.extend(other.events);
        base.timestamped.extend(other.timestamped);
    }
    Some(base)
}

fn is_empty(i: &Interval) -> bool {
    i.series.is_empty()
        && i.reduced.is_empty()
        && i.checks.is_empty()
        && i.events.is_empty()
        && i.timestamped.is_empty()
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
