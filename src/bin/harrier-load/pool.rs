//! The sender's datagrams, built up front and deterministic from `--seed`: which series each line belongs to, its
//! name and tags, its type and value, and what each datagram carries (for the manifest).

use std::fmt::Write as _;

use crate::SendArgs;

/// A small deterministic generator.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One datagram of the pool and what it carries.
pub(crate) struct Datagram {
    pub(crate) bytes: Vec<u8>,
    /// (series index, counter increment)
    pub(crate) counters: Vec<(u32, f64)>,
    /// (series index, timer samples)
    pub(crate) samples: Vec<(u32, u32)>,
    pub(crate) lines: u32,
}

fn series_type(opts: &SendArgs, series: usize) -> &str {
    let total: u32 = opts.mix.0.iter().map(|(_, w)| w).sum::<u32>().max(1);
    // Spread types over series deterministically by weight.
    let slot = (series as u64 * 2_654_435_761 % u64::from(total)) as u32;
    let mut acc = 0;
    for (k, w) in &opts.mix.0 {
        acc += w;
        if slot < acc {
            return k;
        }
    }
    "c"
}

/// The name of a series with its tags (`name|#tag0:value..`), as the manifest keys it.
pub(crate) fn series_name(opts: &SendArgs, series: usize) -> String {
    // With --names, a series is name x type: the name is shared by the types, and so are its tags.
    let (mut s, tag_seed) = if opts.names > 0 {
        let name = series / opts.mix.0.len().max(1);
        (format!("load.n{name}"), name)
    } else {
        (format!("load.{}.m{series}", series_type(opts, series)), series)
    };
    if opts.tags > 0 {
        s.push_str("|#");
        for t in 0..opts.tags {
            if t > 0 {
                s.push(',');
            }
            let _ = write!(s, "tag{t}:value{}", (tag_seed + t * 7) % 97);
        }
    }
    s
}

/// With --names: the series of a line (its name cycles; its type is drawn by the --mix weights) and its type.
fn pick_named(opts: &SendArgs, line_no: usize, rng: &mut Rng) -> (usize, String) {
    let total: u32 = opts.mix.0.iter().map(|(_, w)| w).sum::<u32>().max(1);
    let r = (rng.next() % u64::from(total)) as u32;
    let mut acc = 0;
    let mut k = 0;
    for (i, (_, w)) in opts.mix.0.iter().enumerate() {
        acc += w;
        if r < acc {
            k = i;
            break;
        }
    }
    let name = line_no % opts.names;
    (name * opts.mix.0.len() + k, opts.mix.0[k].0.clone())
}

/// The value of a line of type `kind` for `series`, recorded in `d` when it is a counter or a timer.
fn line_value(opts: &SendArgs, kind: &str, series: usize, rng: &mut Rng, d: &mut Datagram) -> String {
    match kind {
        "c" => {
            let v = 1 + rng.next() % 5;
            d.counters.push((series as u32, v as f64));
            v.to_string()
        }
        "g" => (rng.next() % 10_000).to_string(),
        "s" if opts.names > 0 => format!("member{}", rng.next() % 100),
        "s" => format!("member{}", rng.next() % 100_000),
        _ => {
            d.samples.push((series as u32, 1));
            if opts.names > 0 {
                format!("{}.{:03}", rng.next() % 1000, rng.next() % 1000)
            } else {
                format!("{}.{}", rng.next() % 1000, rng.next() % 100)
            }
        }
    }
}

/// Builds the datagrams of one thread: every series appears, cyclically, in a pool of at least 256 datagrams.
pub(crate) fn build_pool(opts: &SendArgs, thread: usize) -> Vec<Datagram> {
    let mut rng = Rng(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (thread as u64 + 1));
    // Every name (or series) appears, cyclically; with --names, several times each, so that each takes its types.
    let lines_needed = if opts.names > 0 { opts.names * 16 } else { opts.series };
    let datagrams = lines_needed.div_ceil(opts.lines_per_datagram).max(256);
    let mut line_no = thread * 7919;
    let mut pool = Vec::with_capacity(datagrams);
    for _ in 0..datagrams {
        let mut d = Datagram {
            bytes: Vec::new(),
            counters: Vec::new(),
            samples: Vec::new(),
            lines: 0,
        };
        for _ in 0..opts.lines_per_datagram {
            let (series, kind) = if opts.names > 0 {
                pick_named(opts, line_no, &mut rng)
            } else {
                let series = line_no % opts.series;
                (series, series_type(opts, series).to_string())
            };
            let kind = kind.as_str();
            line_no += 1;
            let name = series_name(opts, series);
            let (metric, rest) = name.split_once('|').map_or((name.as_str(), ""), |(m, r)| (m, r));
            let value = line_value(opts, kind, series, &mut rng, &mut d);
            let _ = writeln!(
                SliceWriter(&mut d.bytes),
                "{metric}:{value}|{kind}{}{rest}",
                if rest.is_empty() { "" } else { "|" }
            );
            d.lines += 1;
        }
        // Drop the last newline: a datagram need not end with one.
        d.bytes.pop();
        pool.push(d);
    }
    pool
}

struct SliceWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
