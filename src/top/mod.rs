//! `harrier top`: the metric names of a running server with the most series, lines, bytes of state or refused
//! series, from its `GET /debug/series` (see [`table`] for the answer). `--once` prints one table (for scripts);
//! otherwise the table is redrawn every `--interval` and keys change the sort ([`interactive`]).

pub mod interactive;
pub mod render;
pub mod table;
mod terminal;

use std::io::{self, Read, Write};
use std::time::Duration;

pub use render::{render, render_at};
pub use table::{sort_rows, DroppedBy, MetricRow, SeriesTable, SortBy, UnknownSort};

use crate::http_get::{self, HttpError};

/// Where `harrier top` asks without `--address`: the default `http_address` of a local server.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8126";
/// How long a fetch of the table may take, per step (connect, each read).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read: a table of the top 10 000 names is a few MiB.
const MAX_ANSWER: u64 = 64 << 20;
/// The width of `--once` when stdout is not a terminal and `COLUMNS` is not set.
const PIPE_WIDTH: usize = 120;

/// The arguments of `harrier top`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Show the metric names of a running server with the most series, lines, bytes or dropped series",
    long_about = None,
    after_help = TOP_HELP
)]
pub struct TopArgs {
    /// The server's http_address.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// The figure names are ranked by: series, lines, bytes or dropped.
    #[arg(long, value_name = "BY", default_value = "series")]
    pub sort: SortBy,
    /// How many names to show.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub top: u32,
    /// Print one table to stdout and exit.
    #[arg(long)]
    pub once: bool,
    /// How often the table is fetched and redrawn (500ms, 1s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
}

const TOP_HELP: &str = "Keys: s sort by series, l by lines, b by bytes, d by dropped series, q or Ctrl-C quits.\n\n\
Exit codes: 0 done; 2 bad usage; 1 the table could not be fetched (no server, an HTTP error, an answer that is not \
a series table).\n\nExamples:\n  harrier top\n  harrier top --sort lines --top 50\n  harrier top --once --address \
10.0.0.5:8126 --sort dropped";

/// Why `harrier top` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer's body could not be read.
    #[error("GET {url}: reading the answer: {source}")]
    Body { url: String, source: io::Error },
    /// The answer is not a [`SeriesTable`].
    #[error("GET {url}: the answer is not a series table: {source}")]
    Json { url: String, source: serde_json::Error },
    /// The terminal could not be set up, read or written.
    #[error("the terminal: {0}")]
    Terminal(io::Error),
}

/// An `--interval`: a duration of at least 10 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("{s:?} is shorter than 10ms"));
    }
    Ok(d)
}

/// Runs `harrier top` until it is done (`--once`) or quit.
pub fn run(args: &TopArgs) -> Result<(), TopError> {
    if !args.once {
        return interactive::run(args);
    }
    let table = fetch(&args.address, args.sort, args.top)?;
    let width = terminal::stdout_size().map_or_else(pipe_width, |(w, _)| w);
    let mut out = io::stdout().lock();
    out.write_all(render(&table, args.sort, width).as_bytes())
        .and_then(|()| out.flush())
        .map_err(TopError::Terminal)
}

fn pipe_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&w| w > 0)
        .unwrap_or(PIPE_WIDTH)
}

/// `GET /debug/series?top=N&sort=BY` of `address`, as a table.
pub fn fetch(address: &str, sort: SortBy, top: u32) -> Result<SeriesTable, TopError> {
    let path = format!("/debug/series?top={top}&sort={sort}");
    let response = http_get::get_ok(address, &path, FETCH_TIMEOUT)?;
    let url = response.url.clone();
    let mut body = Vec::new();
    response
        .take(MAX_ANSWER)
        .read_to_end(&mut body)
        .map_err(|source| TopError::Body {
            url: url.clone(),
            source,
        })?;
    serde_json::from_slice(&body).map_err(|source| TopError::Json { url, source })
}
