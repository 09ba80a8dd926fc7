//! `harrier capture` (a running server's `GET /debug/capture` saved to a file as it arrives) and `harrier replay`
//! (a capture's payloads sent again as datagrams, with their recorded gaps).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CaptureError, Reader, MAX_DURATION};
use crate::client::Target;
use crate::http_get::{self, HttpError};

/// How much longer than the capture `harrier capture` waits for its end (a capture with no traffic sends nothing
/// between its header and its end).
const GRACE: Duration = Duration::from_secs(30);

/// The arguments of `harrier capture`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Record what a running server receives for a while (GET /debug/capture) into a file",
    long_about = None,
    after_help = CAPTURE_HELP
)]
pub struct CaptureArgs {
    /// The server's http_address.
    #[arg(long, value_name = "HOST:PORT", default_value = crate::top::DEFAULT_ADDRESS)]
    pub address: String,
    /// How long to record (500ms, 30s, 2m; at most 24h).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_capture_duration)]
    pub duration: Duration,
    /// Where to write the capture (a zstd stream; see `harrier replay`).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop once the file reaches this many bytes (the server's default: 256 MiB).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,
}

const CAPTURE_HELP: &str = "Exit codes: 0 captured; 2 bad usage; 1 the capture failed (no server, a capture already \
running, the connection cut).\n\nExample:\n  harrier capture --duration 1m --output incident.capture.zst\n  \
harrier replay incident.capture.zst --to udp://127.0.0.1:8125";

/// The arguments of `harrier replay`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Send a capture's datagrams (from harrier capture) to a server, keeping their recorded gaps",
    long_about = None,
    after_help = REPLAY_HELP
)]
pub struct ReplayArgs {
    /// The capture file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to send: udp://HOST:PORT (udp4, udp6 pick the family), unixgram:///PATH or unixgram:@NAME.
    #[arg(long, value_name = "URL", value_parser = parse_datagram_target)]
    pub to: Target,
    /// Replay this many times faster than recorded (0.5 is half as fast); 0 sends as fast as possible.
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_speed)]
    pub speed: f64,
}

const REPLAY_HELP: &str = "Each record's payload is sent as one datagram. Exit codes: 0 sent; 2 bad usage; 1 the \
file could not be read (what came before an error in it is sent) or a datagram could not be sent.";

/// Why `harrier capture` or `harrier replay` failed (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Capture { path: PathBuf, source: CaptureError },
    #[error("receiving the capture: {0}")]
    Receive(io::Error),
    #[error("sending to {to}: {source}")]
    Send { to: String, source: io::Error },
}

fn parse_capture_duration(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(format!("{s:?}: a capture lasts more than 0s and at most 24h"));
    }
    Ok(d)
}

fn parse_datagram_target(s: &str) -> Result<Target, String> {
    match Target::parse(s) {
        Ok(t @ (Target::Udp(..) | Target::Unixgram(_))) => Ok(t),
        Ok(_) => Err(format!(
            "{s:?}: harrier replay sends datagrams: use udp://HOST:PORT or unixgram:///PATH"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a speed (a number, 0 or more)")),
    }
}

/// What a capture or a replay went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// The file's (compressed) bytes.
    pub file_bytes: u64,
    /// Records not sent: too large for one datagram.
    pub too_large: u64,
}

/// `harrier capture`: writes the answer's body to the output as it arrives, then reads the file back for the
/// summary (which checks it is whole).
pub fn capture(args: &CaptureArgs) -> Result<Summary, CliError> {
    let mut path = format!("/debug/capture?duration={}ms", args.duration.as_millis());
    if let Some(n) = args.max_bytes {
        path.push_str(&format!("&max_bytes={n}"));
    }
    let mut body = http_get::get_ok(&args.address, &path, args.duration + GRACE)?;
    // Created once the server has agreed: a busy server does not clobber an older file.
    let file_error = |source| CliError::File {
        path: args.output.clone(),
        source,
    };
    let file = File::create(&args.output).map_err(file_error)?;
    let mut out = BufWriter::new(file);
    let copied = io::copy(&mut body, &mut out);
    out.flush().map_err(file_error)?;
    let file_bytes = copied.map_err(CliError::Receive)?;
    let mut summary = read_back(&args.output)?;
    summary.file_bytes = file_bytes;
    Ok(summary)
}

fn read_back(path: &Path) -> Result<Summary, CliError> {
    let file = File::open(path).map_err(|source| CliError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let capture_error = |source| CliError::Capture {
        path: path.to_path_buf(),
        source,
    };
    let mut summary = Summary::default();
    for record in Reader::new(BufReader::new(file)).map_err(capture_error)? {
        let record = record.map_err(capture_error)?;
        summary.records += 1;
        summary.bytes += record.payload.len() as u64;
    }
    Ok(summary)
}

/// When a record recorded `recorded_ns` after the first is due, at `speed` (None: at once).
pub fn due_after(first_ns: u64, recorded_ns: u64, speed: f64) -> Option<Duration> {
    if speed <= 0.0 {
        return None;
    }
    let gap = Duration::from_nanos(recorded_ns.saturating_sub(first_ns));
    Duration::try_from_secs_f64(gap.as_secs_f64() / speed).ok()
}

/// A datagram socket to the target.
enum Socket {
    Udp(UdpSocket, std::net::SocketAddr),
    Unix(UnixDatagram, std::os::unix::net::SocketAddr),
}

impl Socket {
    fn open(target: &Target) -> io::Result<Socket> {
        match target {
            Target::Udp(addr, family) => {
                let a = crate::client::resolve(addr, *family)?[0];
                let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                Ok(Socket::Udp(UdpSocket::bind(local)?, a))
            }
            Target::Unixgram(name) => Ok(Socket::Unix(
                UnixDatagram::unbound()?,
                crate::client::unix_address(name)?,
            )),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a datagram target")),
        }
    }

    fn send(&self, payload: &[u8]) -> io::Result<()> {
        match self {
            Socket::Udp(s, a) => s.send_to(payload, a).map(|_| ()),
            Socket::Unix(s, a) => s.send_to_addr(payload, a).map(|_| ()),
        }
    }
}

/// `harrier replay`: sends each record's payload as one datagram, at its recorded time divided by the speed.
/// A record too large for one datagram is counted and skipped; a file error ends the replay with what came
/// before it sent (`on_error` gets the summary so far).
pub fn replay(args: &ReplayArgs, on_error: impl FnOnce(&Summary)) -> Result<Summary, CliError> {
    let file_error = |source| CliError::File {
        path: args.file.clone(),
        source,
    };
    let file = File::open(&args.file).map_err(file_error)?;
    let capture_error = |source| CliError::Capture {
        path: args.file.clone(),
        source,
    };
    let reader = Reader::new(BufReader::new(file)).map_err(capture_error)?;
    let send_error = |source| CliError::Send {
        to: args.to.to_string(),
        source,
    };
    let socket = Socket::open(&args.to).map_err(send_error)?;
    let mut summary = Summary::default();
    let (start, mut first) = (Instant::now(), None);
    for record in reader {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                on_error(&summary);
                return Err(capture_error(e));
            }
        };
        let first_ns = *first.get_or_insert(record.received_ns);
        if let Some(due) = due_after(first_ns, record.received_ns, args.speed) {
            if let Some(wait) = (start + due).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        match socket.send(&record.payload) {
            Ok(()) => {
                summary.records += 1;
                summary.bytes += record.payload.len() as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => summary.too_large += 1,
            Err(e) => {
                on_error(&summary);
                return Err(send_error(e));
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_time_is_its_recorded_gap_divided_by_the_speed() {
        let s = 1_000_000_000;
        assert_eq!(due_after(10 * s, 12 * s, 1.0), Some(Duration::from_secs(2)));
        assert_eq!(due_after(10 * s, 12 * s, 4.0), Some(Duration::from_millis(500)));
        assert_eq!(due_after(10 * s, 12 * s, 0.5), Some(Duration::from_secs(4)));
        assert_eq!(due_after(10 * s, 12 * s, 0.0), None, "speed 0: at once");
        assert_eq!(due_after(10 * s, 9 * s, 1.0), Some(Duration::ZERO), "a clock step back");
    }

    #[test]
    fn replay_takes_datagram_targets_and_plain_speeds_only() {
        assert!(parse_datagram_target("udp://127.0.0.1:8125").is_ok());
        assert!(parse_datagram_target("unixgram:///tmp/x.sock").is_ok());
        let e = parse_datagram_target("tcp://127.0.0.1:8125").unwrap_err();
        assert!(e.contains("sends datagrams"), "{e}");
        assert!(parse_datagram_target("udp://127.0.0.1:0").is_err());
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        assert_eq!(parse_speed("0"), Ok(0.0));
        for bad in ["-1", "fast", "inf", "NaN"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert!(parse_capture_duration("0s").is_err());
        assert!(parse_capture_duration("25h").is_err());
        assert_eq!(parse_capture_duration("1m30s"), Ok(Duration::from_secs(90)));
    }
}
