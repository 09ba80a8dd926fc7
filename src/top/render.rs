//! The text of `harrier top`: a header (the flush, totals), then one row per metric name, fitted to a width.

use std::fmt::Write as _;

use super::table::{sort_rows, MetricRow, SeriesTable, SortBy};

/// The figures' columns after NAME: title, width, and the sort it marks when it is the sorted column.
const COLUMNS: [(&str, usize, Option<SortBy>); 6] = [
    ("SERIES", 8, Some(SortBy::Series)),
    ("LINES", 8, Some(SortBy::Lines)),
    ("LINES/S", 8, None),
    ("SAMPLES", 8, None),
    ("DROPPED", 8, Some(SortBy::Dropped)),
    ("BYTES", 10, Some(SortBy::Bytes)),
];
/// The mark before the sorted column's title.
const MARK: char = '▼';
/// NAME is never narrower than this, whatever the width.
const MIN_NAME: usize = 8;

/// The table as text, its rows sorted by `sort` (descending, ties by name), each line at most `width` characters:
/// NAME takes what the figures leave (long names end in `…`); below 64 columns, where NAME would be narrower than
/// 8, lines are cut at the width. The flush's age is taken from the clock.
pub fn render(table: &SeriesTable, sort: SortBy, width: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    render_at(table, sort, width, now)
}

/// [`render`] at `now` (Unix seconds), for the flush's age.
pub fn render_at(table: &SeriesTable, sort: SortBy, width: usize, now: i64) -> String {
    let mut out = String::new();
    out.push_str(&fit(&flush_line(table, sort, now), width));
    out.push('\n');
    let totals = format!(
        "{} names · {} series · {} lines · {} of state",
        count(table.names),
        count(table.series),
        count(table.lines),
        bytes(table.bytes)
    );
    out.push_str(&fit(&totals, width));
    out.push_str("\n\n");
    let figures: usize = COLUMNS.iter().map(|(_, w, _)| w + 1).sum();
    let name_width = width.saturating_sub(figures).max(MIN_NAME);
    out.push_str(&format!("{:<name_width$}", "NAME"));
    for (title, w, marks) in COLUMNS {
        let title = if marks == Some(sort) {
            format!("{MARK}{title}")
        } else {
            title.to_string()
        };
        let _ = write!(out, " {title:>w$}");
    }
    out.push('\n');
    let mut rows = table.metrics.clone();
    sort_rows(&mut rows, sort);
    for row in &rows {
        row_line(&mut out, row, table.interval_seconds, name_width);
    }
    if rows.is_empty() {
        out.push_str("(no metrics)\n");
    }
    if name_width + figures <= width {
        return out;
    }
    out.lines().map(|l| fit(l, width) + "\n").collect()
}

/// `flushed 12:00:00 UTC, 3s ago · every 10s · sorted by lines`.
fn flush_line(table: &SeriesTable, sort: SortBy, now: i64) -> String {
    let flushed = if table.flushed_at == 0 {
        "no flush yet".to_string()
    } else {
        let t = table.flushed_at.rem_euclid(86_400);
        format!(
            "flushed {:02}:{:02}:{:02} UTC, {}",
            t / 3600,
            t / 60 % 60,
            t % 60,
            age(now.saturating_sub(table.flushed_at))
        )
    };
    format!(
        "harrier top · {flushed} · every {}s · sorted by {sort}",
        amount(table.interval_seconds)
    )
}

/// `3s ago`, `2m05s ago`, `1h02m ago`.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "in the future".to_string(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m{:02}s ago", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m ago", s / 3600, s / 60 % 60),
        s => format!("{}d{:02}h ago", s / 86_400, s / 3600 % 24),
    }
}

fn row_line(out: &mut String, row: &MetricRow, interval_seconds: f64, name_width: usize) {
    let rate = if interval_seconds > 0.0 {
        row.lines as f64 / interval_seconds
    } else {
        0.0
    };
    let cells = [
        count(row.series),
        count(row.lines),
        amount(rate),
        amount(row.samples),
        count(row.dropped.total()),
        bytes(row.bytes),
    ];
    let _ = write!(out, "{:<name_width$}", fit(&row.name, name_width));
    for ((_, w, _), cell) in COLUMNS.iter().zip(cells) {
        let _ = write!(out, " {cell:>w$}");
    }
    out.push('\n');
}

/// `text` cut to `width` characters, ending in `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A count: exact below 100 000, else `123.4k`, `1.2M`, `3.4G`.
fn count(n: u64) -> String {
    if n < 100_000 {
        n.to_string()
    } else {
        compact(n as f64)
    }
}

/// A figure that may have a fraction: one decimal below 100, exact whole numbers below 100 000, else compact.
fn amount(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.abs() >= 100_000.0 {
        compact(x)
    } else if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn compact(x: f64) -> String {
    let units = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let (div, unit) = units.into_iter().find(|(d, _)| x.abs() >= *d).unwrap_or((1.0, ""));
    format!("{:.1}{unit}", x / div)
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `1.2 MiB`.
pub(super) fn bytes(n: u64) -> String {
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = units[0];
    for u in &units[1..] {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::table::DroppedBy;

    fn table() -> SeriesTable {
        let row = |name: &str, series, lines, bytes, dropped| MetricRow {
            name: name.to_string(),
            series,
            lines,
            samples: lines as f64 * 2.0,
            lines_previous: lines / 2,
            samples_previous: lines as f64,
            dropped: DroppedBy {
                series_limit: dropped,
                per_metric: 1,
                per_tag: 0,
                memory_limit: 0,
            },
            bytes,
        };
        SeriesTable {
            flushed_at: 1_700_000_000,
            interval_seconds: 10.0,
            names: 1234,
            series: 5_678_901,
            lines: 42_000,
            bytes: 3 * 1024 * 1024 + 300 * 1024,
            metrics: vec![
                row("api.requests", 120, 30_000, 64 * 1024, 0),
                row("db.query.time", 4000, 2_000, 2 * 1024 * 1024, 7),
                row(
                    "a.very.long.metric.name.that.goes.on.and.on.well.past.any.sensible.width",
                    50,
                    10_000,
                    900,
                    2,
                ),
            ],
        }
    }

    fn data_rows(text: &str) -> Vec<&str> {
        text.lines().skip_while(|l| !l.starts_with("NAME")).skip(1).collect()
    }

    #[test]
    fn rows_come_in_the_order_of_the_sort_whatever_order_the_table_has() {
        let text = render_at(&table(), SortBy::Lines, 100, 1_700_000_003);
        let rows = data_rows(&text);
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].starts_with("api.requests "), "{text}");
        assert!(rows[1].starts_with("a.very.long"), "{text}");
        assert!(rows[2].starts_with("db.query.time "), "{text}");
        let text = render_at(&table(), SortBy::Bytes, 100, 1_700_000_003);
        assert!(data_rows(&text)[0].starts_with("db.query.time "), "{text}");
    }

    #[test]
    fn the_sorted_column_is_marked_and_no_other() {
        for (sort, title) in [
            (SortBy::Series, "▼SERIES"),
            (SortBy::Lines, "▼LINES"),
            (SortBy::Bytes, "▼BYTES"),
            (SortBy::Dropped, "▼DROPPED"),
        ] {
            let text = render_at(&table(), sort, 100, 1_700_000_003);
            let header = text.lines().find(|l| l.starts_with("NAME")).unwrap();
            assert!(header.contains(title), "{sort}: {header}");
            assert_eq!(header.matches(MARK).count(), 1, "{sort}: {header}");
        }
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis_so_that_every_line_fits_the_width() {
        for width in [40, 64, 80, 100] {
            let text = render_at(&table(), SortBy::Series, width, 1_700_000_003);
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            let long = data_rows(&text).into_iter().find(|l| l.starts_with("a.very")).unwrap();
            assert!(long.contains('…'), "{long}");
            if width >= 64 {
                assert!(long.ends_with(" 900 B"), "{width}: every figure is kept: {long}");
            }
        }
        let text = render_at(&table(), SortBy::Series, 200, 1_700_000_003);
        assert!(text.contains("sensible.width "), "{text}");
    }

    #[test]
    fn the_header_gives_the_flush_age_and_human_totals() {
        let text = render_at(&table(), SortBy::Dropped, 120, 1_700_000_125);
        let mut lines = text.lines();
        let flush = lines.next().unwrap();
        assert!(flush.contains("flushed 22:13:20 UTC, 2m05s ago"), "{flush}");
        assert!(
            flush.contains("every 10s") && flush.contains("sorted by dropped"),
            "{flush}"
        );
        let totals = lines.next().unwrap();
        assert_eq!(totals, "1234 names · 5.7M series · 42000 lines · 3.3 MiB of state");
        let no_flush = SeriesTable::default();
        let text = render_at(&no_flush, SortBy::Series, 80, 5);
        assert!(text.contains("no flush yet") && text.contains("(no metrics)"), "{text}");
    }

    #[test]
    fn a_row_shows_the_rate_samples_dropped_sum_and_human_bytes() {
        let text = render_at(&table(), SortBy::Series, 100, 1_700_000_003);
        let db = data_rows(&text)
            .into_iter()
            .find(|l| l.starts_with("db.query.time"))
            .unwrap();
        let cells: Vec<&str> = db.split_whitespace().collect();
        assert_eq!(
            cells,
            ["db.query.time", "4000", "2000", "200", "4000", "8", "2.0", "MiB"]
        );
    }

    #[test]
    fn numbers_are_made_short_for_their_columns() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1_258_291), "1.2 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(count(99_999), "99999");
        assert_eq!(count(123_456), "123.5k");
        assert_eq!(count(7_000_000_000), "7.0G");
        assert_eq!(amount(2.26), "2.3");
        assert_eq!(amount(12.0), "12");
        assert_eq!(amount(1234.56), "1235");
        assert_eq!(age(3725), "1h02m ago");
        assert_eq!(age(2 * 86_400 + 5 * 3600 + 7), "2d05h ago");
    }
}
