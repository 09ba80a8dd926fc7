//! The JSON answer of `GET /debug/series?top=N&sort=series|lines|bytes|dropped`: totals of the metric names the
//! server holds, and its top N names by one figure. The server builds it (and sorts with [`sort_rows`]);
//! `harrier top` reads it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The answer of `GET /debug/series`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesTable {
    /// Unix seconds of the flush these figures come from (0: no flush yet).
    pub flushed_at: i64,
    pub interval_seconds: f64,
    /// Metric names held in total.
    pub names: u64,
    /// Series held in total.
    pub series: u64,
    /// Lines in the last interval, all names.
    pub lines: u64,
    /// Estimated bytes of state, all names.
    pub bytes: u64,
    /// The top N rows by the requested sort, descending, ties by name.
    pub metrics: Vec<MetricRow>,
}

/// One metric name's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub name: String,
    /// Series held under this name.
    pub series: u64,
    /// Lines in the last interval.
    pub lines: u64,
    /// Samples in the last interval (lines weighted by the inverse of their sample rate).
    pub samples: f64,
    /// Lines in the interval before the last.
    pub lines_previous: u64,
    /// Samples in the interval before the last.
    pub samples_previous: f64,
    /// New series refused in the last interval, by limit.
    pub dropped: DroppedBy,
    /// Estimated bytes of state.
    pub bytes: u64,
}

/// New series refused in the last interval, by the limit that refused them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedBy {
    pub series_limit: u64,
    pub per_metric: u64,
    pub per_tag: u64,
    pub memory_limit: u64,
}

impl DroppedBy {
    /// New series refused by any limit.
    pub fn total(&self) -> u64 {
        self.series_limit
            .saturating_add(self.per_metric)
            .saturating_add(self.per_tag)
            .saturating_add(self.memory_limit)
    }
}

/// The figure rows are sorted by (`sort=` of the query, `--sort` of `harrier top`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SortBy {
    /// Series held.
    #[default]
    Series,
    /// Lines in the last interval.
    Lines,
    /// Estimated bytes of state.
    Bytes,
    /// New series refused in the last interval, all limits.
    Dropped,
}

/// A sort word that is not one of `series`, `lines`, `bytes`, `dropped`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sort {0:?} (expected series, lines, bytes or dropped)")]
pub struct UnknownSort(pub String);

impl SortBy {
    /// Every sort, in the order of the table's columns.
    pub const ALL: [SortBy; 4] = [SortBy::Series, SortBy::Lines, SortBy::Bytes, SortBy::Dropped];

    /// The query word: `series`, `lines`, `bytes` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Series => "series",
            SortBy::Lines => "lines",
            SortBy::Bytes => "bytes",
            SortBy::Dropped => "dropped",
        }
    }

    /// The figure of `row` this sorts by.
    pub fn key(self, row: &MetricRow) -> u64 {
        match self {
            SortBy::Series => row.series,
            SortBy::Lines => row.lines,
            SortBy::Bytes => row.bytes,
            SortBy::Dropped => row.dropped.total(),
        }
    }

    /// Descending by [`SortBy::key`], then by name.
    pub fn compare(self, a: &MetricRow, b: &MetricRow) -> Ordering {
        self.key(b).cmp(&self.key(a)).then_with(|| a.name.cmp(&b.name))
    }
}

impl FromStr for SortBy {
    type Err = UnknownSort;

    /// Parses the query word (ASCII case ignored).
    fn from_str(word: &str) -> Result<SortBy, UnknownSort> {
        SortBy::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(word))
            .ok_or_else(|| UnknownSort(word.to_string()))
    }
}

impl fmt::Display for SortBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sorts `rows` descending by `by`, ties by name (ascending).
pub fn sort_rows(rows: &mut [MetricRow], by: SortBy) {
    rows.sort_unstable_by(|a, b| by.compare(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, series: u64, lines: u64, bytes: u64, dropped: DroppedBy) -> MetricRow {
        MetricRow {
            name: name.to_string(),
            series,
            lines,
            bytes,
            dropped,
            ..MetricRow::default()
        }
    }

    fn names(rows: &[MetricRow]) -> Vec<&str> {
        rows.iter().map(|r| r.name.as_str()).collect()
    }

    fn rows() -> Vec<MetricRow> {
        let d = |series_limit, per_tag| DroppedBy {
            series_limit,
            per_tag,
            ..DroppedBy::default()
        };
        vec![
            row("c", 10, 5, 300, d(0, 0)),
            row("a", 10, 50, 100, d(1, 1)),
            row("b", 30, 5, 200, d(3, 0)),
            row("d", 1, 500, 100, d(0, 2)),
        ]
    }

    #[test]
    fn rows_sort_descending_by_the_chosen_figure_with_ties_by_name() {
        let mut r = rows();
        sort_rows(&mut r, SortBy::Series);
        assert_eq!(names(&r), ["b", "a", "c", "d"]);
        sort_rows(&mut r, SortBy::Lines);
        assert_eq!(names(&r), ["d", "a", "b", "c"]);
        sort_rows(&mut r, SortBy::Bytes);
        assert_eq!(names(&r), ["c", "b", "a", "d"]);
    }

    #[test]
    fn dropped_sorts_by_the_sum_of_the_four_limits() {
        let mut r = rows();
        sort_rows(&mut r, SortBy::Dropped);
        // b 3, a 2, d 2 (tie by name), c 0.
        assert_eq!(names(&r), ["b", "a", "d", "c"]);
    }

    #[test]
    fn sort_words_parse_and_an_unknown_one_is_named_in_the_error() {
        for s in SortBy::ALL {
            assert_eq!(s.as_str().parse::<SortBy>(), Ok(s));
        }
        assert_eq!("Lines".parse::<SortBy>(), Ok(SortBy::Lines));
        let e = "size".parse::<SortBy>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown sort \"size\" (expected series, lines, bytes or dropped)"
        );
    }

    #[test]
    fn the_table_round_trips_through_json_with_the_documented_field_names() {
        let table = SeriesTable {
            flushed_at: 1_700_000_000,
            interval_seconds: 10.0,
            names: 4,
            series: 51,
            lines: 560,
            bytes: 700,
            metrics: rows(),
        };
        let json = serde_json::to_value(&table).unwrap();
        for key in [
            "flushed_at",
            "interval_seconds",
            "names",
            "series",
            "lines",
            "bytes",
            "metrics",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        let row = &json["metrics"][1];
        for key in [
            "name",
            "series",
            "lines",
            "samples",
            "lines_previous",
            "samples_previous",
            "bytes",
        ] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
        for key in ["series_limit", "per_metric", "per_tag", "memory_limit"] {
            assert!(row["dropped"].get(key).is_some(), "{key} in {row}");
        }
        let back: SeriesTable = serde_json::from_value(json).unwrap();
        assert_eq!(back, table);
    }
}
