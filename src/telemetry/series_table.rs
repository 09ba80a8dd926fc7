//! The figures per metric name behind `GET /debug/series` and `harrier top`: the workers' rows (see
//! [`crate::aggregate::names`]) merged at each flush, with the interval before kept beside them, and the names that
//! the limits refused the most reported as self-metrics. Its cost is per flush and per name held, never per line
//! or per series on a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::catalog::{SERIES_ESTIMATED_BYTES, SERIES_LIMITED};
use super::Telemetry;
use crate::aggregate::admit::Limit;
use crate::aggregate::names::NameRow;

/// Names reported in `harrier.series.limited` per interval.
pub const LIMITED_REPORTED: usize = 10;

pub use crate::top::table::{sort_rows, DroppedBy, MetricRow, SeriesTable, SortBy};

fn dropped_by(d: [u64; 4]) -> DroppedBy {
    DroppedBy {
        series_limit: d[Limit::SeriesLimit as usize],
        per_metric: d[Limit::PerMetric as usize],
        per_tag: d[Limit::PerTag as usize],
        memory_limit: d[Limit::Memory as usize],
    }
}

/// The latest table, shared by the flusher (which writes it once per flush) and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct SeriesStats {
    table: Mutex<SeriesTable>,
}

impl SeriesStats {
    /// Merges the workers' rows of a flush at `at`, keeps the interval before's lines beside them, and reports the
    /// most refused names and the estimated bytes as self-metrics.
    pub fn record(&self, rows: Vec<NameRow>, at: i64, interval: Duration, telemetry: &Telemetry) {
        let mut merged: HashMap<Arc<str>, NameRow> = HashMap::with_capacity(rows.len());
        for row in rows {
            match merged.get_mut(&row.name) {
                Some(m) => m.merge(&row),
                None => {
                    merged.insert(row.name.clone(), row);
                }
            }
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let previous: HashMap<&str, (u64, f64)> = table
            .metrics
            .iter()
            .map(|r| (r.name.as_str(), (r.lines, r.samples)))
            .collect();
        let mut metrics: Vec<MetricRow> = merged
            .into_values()
            .map(|r| {
                let (lines_previous, samples_previous) = previous.get(&*r.name).copied().unwrap_or_default();
                MetricRow {
                    name: r.name.to_string(),
                    series: r.series,
                    lines: r.lines,
                    samples: r.samples,
                    lines_previous,
                    samples_previous,
                    dropped: dropped_by(r.dropped),
                    bytes: r.bytes,
                }
            })
            .collect();
        sort_rows(&mut metrics, SortBy::Dropped);
        for row in metrics.iter().take(LIMITED_REPORTED).filter(|r| r.dropped.total() > 0) {
            let metric = format!("metric:{}", row.name);
            let counts = counts_of(&row.dropped);
            for limit in Limit::ALL {
                let n = counts[limit as usize];
                if n > 0 {
                    telemetry.add(&SERIES_LIMITED, &[&metric, &format!("limit:{}", limit.reason())], n);
                }
            }
        }
        let bytes = metrics.iter().map(|r| r.bytes).sum();
        telemetry.set(&SERIES_ESTIMATED_BYTES, &[], bytes as f64);
        *table = SeriesTable {
            flushed_at: at,
            interval_seconds: interval.as_secs_f64(),
            names: metrics.iter().filter(|r| r.series > 0).count() as u64,
            series: metrics.iter().map(|r| r.series).sum(),
            lines: metrics.iter().map(|r| r.lines).sum(),
            bytes,
            metrics,
        };
    }

    /// The table with its `top` first rows by `by`.
    pub fn snapshot(&self, top: usize, by: SortBy) -> SeriesTable {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = SeriesTable {
            metrics: Vec::new(),
            ..table.clone()
        };
        let mut rows = table.metrics.clone();
        drop(table);
        sort_rows(&mut rows, by);
        rows.truncate(top);
        out.metrics = rows;
        out
    }
}

fn counts_of(d: &DroppedBy) -> [u64; 4] {
    let mut c = [0; 4];
    c[Limit::SeriesLimit as usize] = d.series_limit;
    c[Limit::PerMetric as usize] = d.per_metric;
    c[Limit::PerTag as usize] = d.per_tag;
    c[Limit::Memory as usize] = d.memory_limit;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, series: u64, lines: u64, dropped: [u64; 4]) -> NameRow {
        NameRow {
            name: name.into(),
            series,
            bytes: series * 100,
            lines,
            samples: lines as f64,
            dropped,
        }
    }

    #[test]
    fn the_workers_rows_merge_by_name_and_keep_the_interval_before() {
        let stats = SeriesStats::default();
        let t = Telemetry::default();
        stats.record(
            vec![row("a", 1, 10, [0; 4]), row("a", 2, 5, [0; 4])],
            1,
            Duration::from_secs(2),
            &t,
        );
        stats.record(
            vec![row("a", 3, 7, [0; 4]), row("b", 9, 1, [4, 0, 0, 0])],
            2,
            Duration::from_secs(2),
            &t,
        );
        let table = stats.snapshot(10, SortBy::Series);
        assert_eq!(
            (table.flushed_at, table.series, table.lines, table.names),
            (2, 12, 8, 2)
        );
        assert_eq!(table.metrics[0].name, "b");
        let a = &table.metrics[1];
        assert_eq!((a.series, a.lines, a.lines_previous), (3, 7, 15));
        assert_eq!(stats.snapshot(1, SortBy::Lines).metrics[0].name, "a");
        assert_eq!(stats.snapshot(1, SortBy::Dropped).metrics[0].dropped.series_limit, 4);
    }
}
