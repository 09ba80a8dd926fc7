//! What a worker does with the lines it receives, apart from where they come from: parse, aggregate into its
//! shard, and count what it drops in its own counters. Public so that benches and tests drive the same code.

use super::*;
use crate::aggregate::admit::Limit;
use crate::logging::LocalLog;

/// Lines one worker dropped, by reason, since they were last taken (each flush takes them into the telemetry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Lines the parser rejected, indexed by [`ParseError::reason_index`] (`harrier.lines.rejected{reason}`).
    pub rejected: [u64; ParseError::REASONS.len()],
    /// `|T` on a type that cannot be sent unaggregated (`harrier.lines.dropped{reason:timestamp_on_unsupported_type}`).
    pub timestamp_on_unsupported_type: u64,
    /// Timestamped points over the shard's bound (`harrier.lines.dropped{reason:too_many_timestamped}`).
    pub too_many_timestamped: u64,
    /// Lines of new series refused by a limit, indexed by [`Limit`] (`harrier.series.dropped{reason}`).
    pub limited: [u64; 4],
    /// Lines dropped by `statsd_metric_blocklist`, indexed by entry (`harrier.lines.blocklisted{entry}`).
    pub blocklisted: Vec<u64>,
    /// Lines counted at `minimum_sample_rate` (`harrier.lines.sample_rate_clamped`; still aggregated).
    pub clamped: u64,
    /// Lines whose value did not fit their series' state (`harrier.lines.dropped{reason:unparsable}`; the parser
    /// makes this impossible, so a non-zero count is a bug).
    pub unparsable: u64,
}

impl DropCounts {
    /// Lines rejected for `reason` (one of [`ParseError::REASONS`]); 0 for an unknown reason.
    pub fn rejected_for(&self, reason: &str) -> u64 {
        ParseError::REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.rejected[i])
    }

    /// Every line counted here.
    pub fn total(&self) -> u64 {
        self.rejected.iter().sum::<u64>()
            + self.timestamp_on_unsupported_type
            + self.too_many_timestamped
            + self.limited.iter().sum::<u64>()
            + self.blocklisted.iter().sum::<u64>()
            + self.unparsable
    }

    /// Lines refused by `limit`.
    pub fn limited_by(&self, limit: Limit) -> u64 {
        self.limited[limit as usize]
    }

    /// Adds these counts to the process' self-metrics (once per worker and flush: the shared counters and the
    /// registry's lock are touched per interval, never per line).
    pub fn add_to(&self, telemetry: &Telemetry, blocklist: &[Box<str>]) {
        for (i, &n) in self.rejected.iter().enumerate() {
            if n > 0 {
                telemetry.rejected[i].fetch_add(n, Ordering::Relaxed);
            }
        }
        use crate::telemetry::catalog::{LINES_BLOCKLISTED, LINES_DROPPED, LINES_SAMPLE_RATE_CLAMPED, SERIES_DROPPED};
        for limit in Limit::ALL {
            let n = self.limited[limit as usize];
            if n > 0 {
                telemetry.add(&SERIES_DROPPED, &[&format!("reason:{}", limit.reason())], n);
            }
        }
        for (entry, &n) in self.blocklisted.iter().enumerate().filter(|(_, &n)| n > 0) {
            let name = blocklist.get(entry).map_or("?", |e| &**e);
            telemetry.add(&LINES_BLOCKLISTED, &[&format!("entry:{name}")], n);
        }
        if self.clamped > 0 {
            telemetry.add(&LINES_SAMPLE_RATE_CLAMPED, &[], self.clamped);
        }
        for (metric, tag, n) in [
            (
                &LINES_DROPPED,
                "reason:timestamp_on_unsupported_type",
                self.timestamp_on_unsupported_type,
            ),
            (&LINES_DROPPED, "reason:too_many_timestamped", self.too_many_timestamped),
            (&LINES_DROPPED, "reason:unparsable", self.unparsable),
        ] {
            if n > 0 {
                telemetry.add(metric, &[tag], n);
            }
        }
    }
}

/// One worker's parse-and-aggregate core: its shard, and its drop counters and rate-limited logs.
#[derive(Debug)]
pub struct Ingester {
    state: ShardState,
    extend: Arc<ExtendTags>,
    drops: DropCounts,
    bad_line_log: LocalLog,
    series_limit_log: LocalLog,
}

impl Ingester {
    pub fn new(state: ShardState, extend: Arc<ExtendTags>) -> Self {
        Ingester {
            state,
            extend,
            drops: DropCounts::default(),
            bad_line_log: LocalLog::new("rejected line"),
            series_limit_log: LocalLog::new("series limit"),
        }
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The drops counted since the last call; reset.
    pub fn take_drops(&mut self) -> DropCounts {
        std::mem::take(&mut self.drops)
    }

    /// Adds the drops counted since the last call to the self-metrics (see [`DropCounts::add_to`]).
    pub fn report_drops(&mut self, telemetry: &Telemetry) {
        let drops = self.take_drops();
        let blocklist = self.state.controls().map_or(&[][..], |c| c.blocklist());
        drops.add_to(telemetry, blocklist);
    }

    /// Merges entries imported from another instance (global mode).
    pub fn import(&mut self, entries: Vec<Entry>) {
        self.state.import(entries);
    }

    /// Ends the interval at once (see [`ShardState::take_interval`]); logs, at a limited rate, what `series_limit`
    /// dropped in it.
    pub fn take_interval(&mut self, now: i64) -> Interval {
        let mut taking = self.begin_take();
        while !self.take_step(&mut taking, usize::MAX) {}
        self.finish_take(taking, now)
    }

    /// Starts taking the interval out in steps (see [`ShardState::begin_take`]): the worker reads its sockets
    /// between the steps.
    pub fn begin_take(&mut self) -> Taking {
        self.state.begin_take()
    }

    /// Visits up to `max` more series; true when done (see [`ShardState::take_step`]).
    pub fn take_step(&mut self, taking: &mut Taking, max: usize) -> bool {
        self.state.take_step(taking, max)
    }

    /// Ends a stepped take; logs, at a limited rate, what `series_limit` dropped in the interval.
    pub fn finish_take(&mut self, taking: Taking, now: i64) -> Interval {
        let interval = self.state.finish_take(taking);
        self.drops.clamped += interval.clamped;
        let mut refused: Vec<(&str, [u64; 4])> = interval
            .names
            .iter()
            .filter(|r| r.dropped.iter().any(|&d| d > 0))
            .map(|r| (&*r.name, r.dropped))
            .collect();
        if !refused.is_empty() {
            refused.sort_by_key(|(n, d)| (std::cmp::Reverse(d.iter().sum::<u64>()), *n));
            let lines: u64 = refused.iter().map(|(_, d)| d.iter().sum::<u64>()).sum();
            let limits: Vec<&str> = Limit::ALL
                .iter()
                .filter(|l| refused.iter().any(|(_, d)| d[**l as usize] > 0))
                .map(|l| l.reason())
                .collect();
            let top: Vec<String> = refused
                .iter()
                .take(5)
                .map(|(n, d)| format!("{n} ({})", d.iter().sum::<u64>()))
                .collect();
            self.series_limit_log.log(now, || {
                format!(
                    "{} reached: {lines} lines of new series dropped in the last interval; most from: {}",
                    limits.join(", "),
                    top.join(", ")
                )
            });
        }
        interval
    }

    /// Parses and aggregates newline-separated lines received at `now` (Unix seconds); returns the number of
    /// lines. Valid UTF-8 data (the rule) is validated once as a whole; otherwise line by line, so that only the
    /// bad lines are rejected.
    #[inline]
    pub fn lines(&mut self, data: &[u8], now: i64) -> u64 {
        let mut lines = 0u64;
        match std::str::from_utf8(data) {
            Ok(text) => lines += self.text_lines(text, now),
            Err(_) => {
                for line in protocol::lines(data) {
                    lines += 1;
                    match std::str::from_utf8(line) {
                        Ok(line) => self.line(line, now),
                        Err(_) => self.reject(line, &ParseError::InvalidUtf8, now),
                    }
                }
            }
        }
        lines
    }

    /// The lines of a valid UTF-8 packet, [`GROUP`] at a time: each line is cut at its value and its text hashed
    /// (starting the load of its index entry), then looked up (starting the load of its series' state), then
    /// aggregated in order. A line whose text this shard knows (the usual case: a series written the same way as
    /// before) is aggregated from its value alone; any other is parsed in full. The loads of a group overlap instead
    /// of following each other, which is what a line costs once the series outgrow the cache.
    fn text_lines(&mut self, text: &str, now: i64) -> u64 {
        let mut count = 0u64;
        if self.state.len() < GROUP_FROM_SERIES {
            // Few series: they stay in the cache, and the staging of a group would only add work.
            for line in protocol::str_lines(text) {
                count += 1;
                self.line(line, now);
            }
            return count;
        }
        let mut it = protocol::str_lines(text);
        let mut group: [Option<Staged<'_>>; GROUP] = [None; GROUP];
        loop {
            let mut n = 0;
            for line in it.by_ref().take(GROUP) {
                let cut = protocol::split_metric(line).map(|v| {
                    let th = text_hash(v.name, v.suffix);
                    self.state.prefetch_text(th);
                    (v, th)
                });
                group[n] = Some((line, cut));
                n += 1;
            }
            if n == 0 {
                return count;
            }
            count += n as u64;
            let mut found = [usize::MAX; GROUP];
            for (slot, g) in found.iter_mut().zip(&group[..n]) {
                if let Some((_, Some((_, th)))) = g {
                    if let Some(i) = self.state.find_known(*th) {
                        *slot = i;
                    }
                }
            }
            for &i in found[..n].iter().filter(|&&i| i != usize::MAX) {
                self.state.prefetch_value(i);
            }
            for (&i, g) in found.iter().zip(&group[..n]) {
                let Some((line, cut)) = *g else { continue };
                if let (true, Some((view, _))) = (i != usize::MAX, cut) {
                    if let Some(result) = self.state.add_known_at(i, &view) {
                        self.count_dropped(result);
                        continue;
                    }
                }
                self.parse_line(line, now);
            }
        }
    }

    /// One line. A line whose text this shard knows (the usual case: a series written the same way as before) is
    /// aggregated from its value alone; any other is parsed in full.
    #[inline]
    fn line(&mut self, line: &str, now: i64) {
        let known = protocol::split_metric(line).and_then(|view| self.state.add_known_line(&view));
        match known {
            Some(result) => self.count_dropped(result),
            None => self.parse_line(line, now),
        }
    }

    /// A line parsed in full, then aggregated (the key is worked out only if the shard does not know the line's
    /// text), or rejected and counted.
    fn parse_line(&mut self, line: &str, now: i64) {
        let result = match protocol::parse_str(line) {
            Ok(Message::Metric(m)) => self.state.add_metric(&m, None, &self.extend),
            Ok(other) => self.state.add_message(other, &self.extend, now),
            Err(e) => return self.reject(line.as_bytes(), &e, now),
        };
        self.count_dropped(result);
    }

    #[cold]
    fn count_blocklisted(&mut self, entry: u32) {
        let counts = &mut self.drops.blocklisted;
        if counts.len() <= entry as usize {
            counts.resize(entry as usize + 1, 0);
        }
        counts[entry as usize] += 1;
    }

    #[cold]
    fn reject(&mut self, line: &[u8], e: &ParseError<'_>, now: i64) {
        self.drops.rejected[e.reason_index()] += 1;
        self.bad_line_log
            .log(now, || format!("{e}: {:?}", String::from_utf8_lossy(line)));
    }

    #[inline]
    fn count_dropped(&mut self, result: Result<(), Dropped>) {
        match result {
            Ok(()) => {}
            Err(Dropped::Unparsable) => self.drops.unparsable += 1,
            Err(Dropped::TimestampOnUnsupportedType) => self.drops.timestamp_on_unsupported_type += 1,
            Err(Dropped::TooManyTimestamped) => self.drops.too_many_timestamped += 1,
            Err(Dropped::Limited(limit)) => self.drops.limited[limit as usize] += 1,
            Err(Dropped::Blocklisted(entry)) => self.count_blocklisted(entry),
        }
    }
}
