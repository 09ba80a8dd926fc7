//! Captures of what a server receives, to replay it into another (reproducing an incident, benchmarking on real
//! traffic): `GET /debug/capture` records every datagram and stream batch the workers read for a while
//! ([`Capture`], [`routes`]), `harrier capture` saves that to a file and `harrier replay` sends it again ([`cli`]).
//!
//! # The file format
//!
//! A zstd stream (one frame or several) whose decompressed content is the header `HARRIER-CAPTURE 1\n`, then
//! records, each:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | receive time, nanoseconds since the Unix epoch, `u64` little-endian |
//! | 2 | length of the listener's name, `u16` little-endian |
//! | n | the listener's name: its URL, e.g. `udp://127.0.0.1:8125` (UTF-8) |
//! | 4 | length of the payload, `u32` little-endian |
//! | m | the payload: one datagram, or one batch of stream lines as a reader handed it to a worker |
//!
//! The stream ends between two records. Records are in the order the capture queued them (each worker's in the
//! order it read them). [`Writer`] and [`Reader`] write and read it; a stream cut in a record (a capture
//! interrupted) reads as its records up to there, then a [`CaptureError::Truncated`] naming the offset.
//!
//! # Cost
//!
//! [`Capture::record`] is called by the worker threads for everything they read. When no capture runs it is
//! one relaxed atomic load. While one runs it copies the bytes into a bounded queue without blocking (a full
//! queue drops the record and counts it); one writer thread encodes and compresses, and hands chunks of the file
//! to the HTTP answer.

pub mod cli;
mod file;
mod http;
mod recorder;

pub use file::{Reader, Record, Writer, MAGIC};
pub use http::{parse_query, routes, DEFAULT_DURATION, DEFAULT_MAX_BYTES, MAX_DURATION};
pub use recorder::{Capture, CaptureEnd};

use std::io;

/// Why a capture could not be started, written or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Another capture is running (one at a time).
    #[error("a capture is already running")]
    Busy,
    /// The writer thread could not be started.
    #[error("cannot start the capture's writer thread: {0}")]
    Spawn(io::Error),
    /// Encoding or writing the stream failed.
    #[error("writing the capture: {0}")]
    Write(io::Error),
    /// A field does not fit its length.
    #[error("{what} of {len} bytes does not fit a capture record (at most {max})")]
    TooLong { what: &'static str, len: usize, max: u64 },
    /// The stream does not start with [`MAGIC`].
    #[error("not a Harrier capture: it starts with {found:?}, not \"HARRIER-CAPTURE 1\\n\"")]
    NotACapture { found: String },
    /// The stream ends in the middle of a record.
    #[error("the capture ends in the middle of the record at byte {offset} (of the decompressed stream, cut at {end}): {what} is incomplete")]
    Truncated { offset: u64, end: u64, what: &'static str },
    /// The stream could not be read or decompressed.
    #[error("reading the capture at byte {offset} (of the decompressed stream): {source}")]
    Read { offset: u64, source: io::Error },
    /// A record's listener name is not UTF-8.
    #[error("the record at byte {offset} (of the decompressed stream) has a listener name that is not UTF-8")]
    BadListener { offset: u64 },
    /// A query parameter of `GET /debug/capture` is wrong.
    #[error("invalid {name}={value:?}: {reason}")]
    Parameter {
        name: String,
        value: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests;
