//! The figures per metric name behind `GET /debug/series` and `harrier top`: the workers' rows (see
//! [`crate::aggregate::names`]) merged at each flush, with the interval before kept beside them, and the names that
//! the limits refused the most reported as self-metrics. Its cost is per flush and per name held, never per line
//! or per series on a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::catalog::{SERIES_ESTIMATED_BYTES, SERIES_LIMITED};
use super::Telemetry;
use crate::aggregate::admit::Limit;
use crate::aggregate::names::NameRow;
use crate::model::SharedStr;

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

/// The latest rows, shared by the flusher (which writes them once per flush) and the HTTP endpoint (which turns
/// the top ones into a [`SeriesTable`] on a request).
#[derive(Debug, Default)]
pub struct SeriesStats {
    latest: Mutex<Latest>,
}

#[derive(Debug, Default)]
struct Latest {
    flushed_at: i64,
    interval_seconds: f64,
    rows: Vec<NameRow>,
}

impl SeriesStats {
    /// Merges the workers' rows of a flush at `at` (one worker's rows are already one per name), and reports the
    /// most refused names and the estimated bytes as self-metrics. A flush costs a pass over the rows, no string
    /// and no sort (unless a limit refused series).
    pub fn record(&self, rows: Vec<NameRow>, at: i64, interval: Duration, telemetry: &Telemetry, workers: usize) {
        let rows = if workers > 1 { merge(rows) } else { rows };
        let mut refused: Vec<&NameRow> = rows.iter().filter(|r| r.dropped.iter().any(|&d| d > 0)).collect();
        if !refused.is_empty() {
            refused.sort_by(|a, b| {
                let total = |r: &NameRow| r.dropped.iter().sum::<u64>();
                total(b).cmp(&total(a)).then_with(|| a.name.cmp(&b.name))
            });
            for row in refused.into_iter().take(LIMITED_REPORTED) {
                let metric = format!("metric:{}", row.name);
                for limit in Limit::ALL {
                    let n = row.dropped[limit as usize];
                    if n > 0 {
                        telemetry.add(&SERIES_LIMITED, &[&metric, &format!("limit:{}", limit.reason())], n);
                    }
                }
            }
        }
        let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
        telemetry.set(&SERIES_ESTIMATED_BYTES, &[], bytes as f64);
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = Latest {
            flushed_at: at,
            interval_seconds: interval.as_secs_f64(),
            rows,
        };
    }

    /// The table with its `top` first rows by `by`.
    pub fn snapshot(&self, top: usize, by: SortBy) -> SeriesTable {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics: Vec<MetricRow> = latest.rows.iter().map(metric_row).collect();
        let table = SeriesTable {
            flushed_at: latest.flushed_at,
            interval_seconds: latest.interval_seconds,
            names: latest.rows.iter().filter(|r| r.series > 0).count() as u64,
            series: latest.rows.iter().map(|r| r.series).sum(),
            lines: latest.rows.iter().map(|r| r.lines).sum(),
            bytes: latest.rows.iter().map(|r| r.bytes).sum(),
            metrics: Vec::new(),
        };
        drop(latest);
        sort_rows(&mut metrics, by);
        metrics.truncate(top);
        SeriesTable { metrics, ..table }
    }
}

/// The rows of several workers, one per name.
fn merge(rows: Vec<NameRow>) -> Vec<NameRow> {
    let mut index: HashMap<SharedStr, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<NameRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match index.get(&row.name) {
            Some(&i) => out[i].merge(&row),
            None => {
                index.insert(row.name.clone(), out.len());
                out.push(row);
            }
        }
    }
    out
}

fn metric_row(r: &NameRow) -> MetricRow {
    MetricRow {
        name: r.name.to_string(),
        series: r.series,
        lines: r.lines,
        samples: r.samples,
        lines_previous: r.lines_previous,
        samples_previous: r.samples_previous,
        dropped: dropped_by(r.dropped),
        bytes: r.bytes,
    }
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
            lines_previous: lines / 2,
            samples_previous: 0.0,
            dropped,
        }
    }

    #[test]
    fn the_workers_rows_merge_by_name_with_the_interval_before_and_the_most_refused_are_reported() {
        let stats = SeriesStats::default();
        let t = Telemetry::default();
        let rows = vec![
            row("a", 3, 7, [0; 4]),
            row("b", 9, 1, [4, 0, 0, 0]),
            row("a", 0, 8, [0; 4]),
        ];
        stats.record(rows, 2, Duration::from_secs(2), &t, 2);
        let table = stats.snapshot(10, SortBy::Series);
        assert_eq!(
            (table.flushed_at, table.series, table.lines, table.names),
            (2, 12, 16, 2)
        );
        assert_eq!(table.metrics[0].name, "b");
        let a = &table.metrics[1];
        // Two workers' rows of `a`: their lines and their intervals before added.
        assert_eq!((a.series, a.lines, a.lines_previous), (3, 15, 3 + 4));
        assert_eq!(stats.snapshot(1, SortBy::Lines).metrics[0].name, "a");
        assert_eq!(stats.snapshot(1, SortBy::Dropped).metrics[0].dropped.series_limit, 4);
        assert_eq!(t.peek("harrier.series.limited", "metric:b"), 4);
        // One worker's rows are taken as they are.
        stats.record(vec![row("c", 1, 2, [0; 4])], 3, Duration::from_secs(2), &t, 1);
        assert_eq!(stats.snapshot(5, SortBy::Series).metrics.len(), 1);
    }
}
