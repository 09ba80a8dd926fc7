//! A shard's figures per metric name, for `GET /debug/series` and the limits' reports: series held and their
//! estimated bytes (kept as series come and go), lines and samples of each interval (summed from the series'
//! own line counts when the interval is taken), new series refused by each limit.
//!
//! Bounded: at most [`TRACKED_NAMES`] names have a row; the series of further names are counted in the row
//! [`OTHER`] (shown as `(other names)`). A row is freed when its name has no series left after an interval.

use std::collections::HashMap;

use super::admit::Limit;
use crate::model::SharedStr;

/// Names with a row of their own, per shard.
pub const TRACKED_NAMES: usize = 10_000;
/// The row of the names beyond [`TRACKED_NAMES`].
pub const OTHER: u32 = 0;
/// The name [`OTHER`]'s row is reported under.
pub const OTHER_NAME: &str = "(other names)";

/// One name's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameRow {
    pub name: SharedStr,
    pub series: u64,
    pub bytes: u64,
    /// This interval's, until it is taken.
    pub lines: u64,
    pub samples: f64,
    /// The interval before's (as taken: the interval before the one the row reports).
    pub lines_previous: u64,
    pub samples_previous: f64,
    /// New series refused, by [`Limit`].
    pub dropped: [u64; 4],
}

impl NameRow {
    /// Adds another shard's row of the same name.
    pub fn merge(&mut self, other: &NameRow) {
        self.series += other.series;
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.samples += other.samples;
        self.lines_previous += other.lines_previous;
        self.samples_previous += other.samples_previous;
        for (a, b) in self.dropped.iter_mut().zip(other.dropped) {
            *a += b;
        }
    }

    fn active(&self) -> bool {
        self.series > 0 || self.lines > 0 || self.dropped.iter().any(|&d| d > 0)
    }
}

/// A shard's rows.
#[derive(Debug)]
pub struct Names {
    ids: HashMap<SharedStr, u32>,
    rows: Vec<NameRow>,
    free: Vec<u32>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            ids: HashMap::new(),
            rows: vec![NameRow {
                name: OTHER_NAME.into(),
                ..NameRow::default()
            }],
            free: Vec::new(),
        }
    }
}

impl Names {
    /// The row of `name`, made if there is room (else [`OTHER`]), and the name's shared string for a new key (none
    /// for [`OTHER`]).
    pub fn id(&mut self, name: &str) -> (u32, Option<SharedStr>) {
        if let Some(&id) = self.ids.get(name) {
            return (id, Some(self.rows[id as usize].name.clone()));
        }
        if self.ids.len() >= TRACKED_NAMES {
            return (OTHER, None);
        }
        let shared: SharedStr = name.into();
        let row = NameRow {
            name: shared.clone(),
            ..NameRow::default()
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.rows[id as usize] = row;
                id
            }
            None => {
                self.rows.push(row);
                (self.rows.len() - 1) as u32
            }
        };
        self.ids.insert(shared.clone(), id);
        (id, Some(shared))
    }

    /// A series of row `id` was created.
    pub fn added(&mut self, id: u32, bytes: u64) {
        let row = &mut self.rows[id as usize];
        row.series += 1;
        row.bytes += bytes;
    }

    /// A series of row `id` was removed.
    pub fn removed(&mut self, id: u32, bytes: u64) {
        let row = &mut self.rows[id as usize];
        row.series = row.series.saturating_sub(1);
        row.bytes = row.bytes.saturating_sub(bytes);
    }

    /// A series of row `id` received `lines` lines at `rate` this interval (counted as it is taken).
    #[inline]
    pub fn lines(&mut self, id: u32, lines: u32, rate: f64) {
        let row = &mut self.rows[id as usize];
        row.lines += u64::from(lines);
        row.samples += f64::from(lines) / rate;
    }

    /// A new series of `name` refused by `limit` (counted in the name's row, made for it if there is room).
    pub fn refused(&mut self, name: &str, limit: Limit) {
        let (id, _) = self.id(name);
        self.rows[id as usize].dropped[limit as usize] += 1;
    }

    /// The interval's rows with anything in them; their interval counts are reset, and the rows of names with no
    /// series left are freed.
    pub fn take(&mut self) -> Vec<NameRow> {
        let mut out = Vec::new();
        for (id, row) in self.rows.iter_mut().enumerate() {
            if row.active() {
                out.push(row.clone());
            }
            row.lines_previous = std::mem::take(&mut row.lines);
            row.samples_previous = std::mem::take(&mut row.samples);
            row.dropped = [0; 4];
            if row.series == 0 && id as u32 != OTHER && !row.name.is_empty() {
                self.ids.remove(&row.name);
                self.free.push(id as u32);
                row.name = "".into();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_series_lines_and_refusals_and_are_freed_when_empty() {
        let mut names = Names::default();
        let (a, shared) = names.id("a");
        assert_eq!(&*shared.unwrap(), "a");
        assert_eq!(names.id("a").0, a);
        names.added(a, 100);
        names.added(a, 100);
        names.lines(a, 3, 0.5);
        names.refused("a", Limit::PerMetric);
        names.refused("never.held", Limit::SeriesLimit);
        for i in 0..TRACKED_NAMES {
            names.id(&format!("filler{i}"));
        }
        names.refused("beyond.the.bound", Limit::Memory);
        let rows = names.take();
        let row = rows.iter().find(|r| &*r.name == "a").unwrap();
        assert_eq!((row.series, row.bytes, row.lines, row.samples), (2, 200, 3, 6.0));
        assert_eq!(row.dropped, [0, 1, 0, 0]);
        names.lines(a, 1, 1.0);
        let next = names.take().into_iter().find(|r| &*r.name == "a").unwrap();
        assert_eq!((next.lines, next.lines_previous, next.samples_previous), (1, 3, 6.0));
        assert_eq!(rows.iter().find(|r| &*r.name == "never.held").unwrap().dropped[0], 1);
        assert_eq!(rows.iter().find(|r| &*r.name == OTHER_NAME).unwrap().dropped[3], 1);
        names.removed(a, 100);
        names.removed(a, 100);
        // Nothing left to report: freed, as the fillers and never.held were at the first take.
        assert_eq!(names.take().len(), 0);
        assert!(names.ids.is_empty());
        let rows_before = names.rows.len();
        names.id("b");
        assert_eq!(names.rows.len(), rows_before, "a freed row is reused");
    }

    #[test]
    fn names_beyond_the_bound_share_the_other_row() {
        let mut names = Names::default();
        for i in 0..TRACKED_NAMES {
            assert_ne!(names.id(&format!("n{i}")).0, OTHER);
        }
        assert_eq!(names.id("one.more"), (OTHER, None));
    }
}
