//! `harrier-load`: a DogStatsD load generator for benchmarking Harrier, and a `--discard` receiver that gives the
//! machine's receive floor.
//!
//! Send mode builds a pool of datagrams up front (deterministic from `--seed`), then sends them cyclically with
//! `sendmmsg` from `--threads` threads, at `--rate` lines per second (0: as fast as it can). It prints the
//! achieved rate every second and a summary, and with `--manifest FILE` writes exactly what it sent: per-series
//! counter totals and timer sample counts, so that a test can compare them with what the server flushed.
//!
//! Only loopback targets are allowed: this tool must never send traffic off the machine.
//!
//! One module per tool: `send` (with the datagram pool in `pool`), `discard`, `intake` and `decode`; `mmsg` holds
//! what `send` and `discard` share. This file holds the command line (clap) and picks the tool: the mode flags
//! `--discard`, `--intake DIR` and `--decode DIR` (in that order of precedence when several are given), else send.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser};

mod decode;
mod discard;
mod intake;
mod mmsg;
mod pool;
mod send;

const MODES: &str = "Modes (without one: send)";
const SEND: &str = "Send (the default mode)";

/// DogStatsD load generator for benchmarking Harrier (loopback only).
///
/// Without a mode flag it sends: it builds a pool of datagrams up front (deterministic from --seed), sends them
/// cyclically with sendmmsg from --threads threads at --rate lines per second, prints the achieved rate every
/// second and a summary ("sent N lines in M datagrams ..."), and with --manifest writes exactly what it sent.
/// --discard, --intake DIR and --decode DIR select the other tools. Only loopback addresses are accepted.
#[derive(Debug, Clone, Parser)]
#[command(name = "harrier-load", args_override_self = true)]
struct Cli {
    /// RECEIVE: receive and count datagrams on --listen (recvmmsg), nothing else: the machine's receive floor.
    ///
    /// Prints the datagrams received each second and a summary on stderr, and the count of datagrams on stdout.
    #[arg(long, help_heading = MODES)]
    discard: bool,

    /// INTAKE: a stand-in Datadog intake on --listen that stores each request body in DIR.
    ///
    /// An HTTP/1.1 server (keep-alive) that answers 202 to every request at once and stores each body, as
    /// received, in DIR/<n>.<path with / as _>, to be decoded after the run (off the measured path).
    #[arg(long, value_name = "DIR", allow_hyphen_values = true, help_heading = MODES)]
    intake: Option<String>,

    /// DECODE: print the series of the /api/v2/series bodies stored in DIR as JSON lines.
    ///
    /// Prints each series of the /api/v2/series bodies (MetricPayload, zstd or zlib) stored in DIR (by --intake)
    /// as one JSON object per line, in the shape of a v1 series: metric, tags, type, interval and points [[ts, v]].
    #[arg(long, value_name = "DIR", allow_hyphen_values = true, help_heading = MODES)]
    decode: Option<String>,

    /// Address to listen on: UDP with --discard, TCP with --intake (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8125", value_parser = loopback,
          allow_hyphen_values = true)]
    listen: SocketAddr,

    /// How long to send, or to receive (--discard, --intake), in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds, allow_hyphen_values = true)]
    duration: Duration,

    #[command(flatten)]
    send: SendArgs,
}

/// The options of the sender.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = SEND)]
struct SendArgs {
    /// Where to send the datagrams (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8125", value_parser = loopback,
          allow_hyphen_values = true)]
    target: SocketAddr,

    /// Sending threads, each with its own socket and pool (0 counts as 1).
    #[arg(long, value_name = "N", default_value = "1", value_parser = at_least_one, allow_hyphen_values = true)]
    threads: usize,

    /// Lines per second over all threads; 0: as fast as it can.
    #[arg(long, value_name = "LINES_PER_SEC", default_value = "100000", value_parser = whole_number,
          allow_hyphen_values = true)]
    rate: u64,

    /// Lines in each datagram (0 counts as 1).
    #[arg(long, value_name = "N", default_value = "10", value_parser = at_least_one, allow_hyphen_values = true)]
    lines_per_datagram: usize,

    /// Series to send, each with one type drawn by the --mix weights (0 counts as 1; ignored with --names).
    #[arg(long, value_name = "N", default_value = "1000", value_parser = at_least_one, allow_hyphen_values = true)]
    series: usize,

    /// Tags on each series (tag0:valueK, tag1:..., shared by the types of a name with --names).
    #[arg(long, value_name = "N", default_value = "3", value_parser = count, allow_hyphen_values = true)]
    tags: usize,

    /// Metric types and their weights, type=weight,... (types: c, g, ms, h, d, s).
    #[arg(long, value_name = "MIX", default_value = "c=60,g=10,ms=20,s=10", value_parser = mix,
          allow_hyphen_values = true)]
    mix: Mix,

    /// N metric names, each sent with every type of --mix (0: off, --series applies).
    ///
    /// Each line picks the next name and a type by the --mix weights (series = name x type); timers get three
    /// decimals, sets draw from 100 members. Without it, each series has one type and --series says how many.
    #[arg(long, value_name = "N", default_value = "0", value_parser = count, allow_hyphen_values = true)]
    names: usize,

    /// Write what was sent to FILE as JSON: lines, datagrams, seconds, and per series the counter totals and the
    /// timer sample counts.
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    manifest: Option<String>,

    /// Seed of the datagram pool (the same seed builds the same datagrams).
    #[arg(long, value_name = "N", default_value = "1", value_parser = whole_number, allow_hyphen_values = true)]
    seed: u64,
}

/// The `--mix`: (type, weight) pairs in the order given.
#[derive(Debug, Clone)]
struct Mix(Vec<(String, u32)>);

/// A socket address on this machine: `--target` and `--listen` refuse anything else.
fn loopback(v: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = v.parse().map_err(|e| format!("{e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: harrier-load only sends on this machine"
        ));
    }
    Ok(addr)
}

fn whole_number(v: &str) -> Result<u64, String> {
    v.parse::<u64>().map_err(|_| format!("{v:?} is not a whole number"))
}

fn count(v: &str) -> Result<usize, String> {
    Ok(whole_number(v)? as usize)
}

/// A whole number where 0 means 1.
fn at_least_one(v: &str) -> Result<usize, String> {
    Ok(whole_number(v)?.max(1) as usize)
}

/// Seconds, fractions allowed.
fn seconds(v: &str) -> Result<Duration, String> {
    let secs: f64 = v.parse().map_err(|_| format!("{v:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{v:?}: {e}"))
}

fn mix(v: &str) -> Result<Mix, String> {
    v.split(',')
        .map(|part| {
            let (k, w) = part
                .split_once('=')
                .ok_or(format!("--mix part {part:?} is not type=weight"))?;
            if !["c", "g", "ms", "h", "d", "s"].contains(&k) {
                return Err(format!("--mix: unknown type {k:?}"));
            }
            Ok((k.to_string(), w.parse().map_err(|_| format!("--mix weight {w:?}"))?))
        })
        .collect::<Result<_, String>>()
        .map(Mix)
}

fn main() {
    let cli = Cli::parse();
    let result = if cli.discard {
        discard::run(cli.listen, cli.duration)
    } else if let Some(dir) = &cli.intake {
        intake::run(cli.listen, cli.duration, dir)
    } else if let Some(dir) = &cli.decode {
        decode::run(dir)
    } else {
        send::run(&cli.send, cli.duration)
    };
    if let Err(e) = result {
        eprintln!("harrier-load: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("harrier-load").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert!(!c.discard && c.intake.is_none() && c.decode.is_none());
        assert_eq!(c.listen, "127.0.0.1:8125".parse().unwrap());
        assert_eq!(c.duration, Duration::from_secs(10));
        let s = c.send;
        assert_eq!(s.target, "127.0.0.1:8125".parse().unwrap());
        assert_eq!(
            (s.threads, s.rate, s.lines_per_datagram, s.series, s.tags),
            (1, 100_000, 10, 1000, 3)
        );
        assert_eq!((s.names, s.seed, s.manifest), (0, 1, None));
        let mix: Vec<_> = s.mix.0.iter().map(|(k, w)| format!("{k}={w}")).collect();
        assert_eq!(mix, ["c=60", "g=10", "ms=20", "s=10"]);
    }

    #[test]
    fn the_callers_forms() {
        let c = parse(&["--discard", "--listen", "127.0.0.1:18125", "--duration", "12"]).unwrap();
        assert!(c.discard && c.listen.port() == 18125 && c.duration == Duration::from_secs(12));
        let c = parse(&["--intake", "/tmp/b", "--listen", "127.0.0.1:18080", "--duration", "70"]).unwrap();
        assert_eq!((c.intake.as_deref(), c.listen.port()), (Some("/tmp/b"), 18080));
        assert_eq!(
            parse(&["--decode", "/tmp/b"]).unwrap().decode.as_deref(),
            Some("/tmp/b")
        );
        let c = parse(&[
            "--target",
            "127.0.0.1:18125",
            "--duration",
            "10",
            "--manifest",
            "/tmp/m.json",
            "--rate",
            "1000000",
            "--lines-per-datagram",
            "100",
            "--names",
            "10000",
            "--mix",
            "c=70,g=10,ms=10,h=5,s=5",
        ])
        .unwrap();
        assert_eq!(
            (c.send.rate, c.send.lines_per_datagram, c.send.names),
            (1_000_000, 100, 10_000)
        );
        assert_eq!(c.send.mix.0.len(), 5);
        assert_eq!(c.send.manifest.as_deref(), Some("/tmp/m.json"));
        let c = parse(&[
            "--threads",
            "0",
            "--series",
            "0",
            "--lines-per-datagram",
            "0",
            "--duration",
            "0.5",
        ])
        .unwrap();
        assert_eq!((c.send.threads, c.send.series, c.send.lines_per_datagram), (1, 1, 1));
        assert_eq!(c.duration, Duration::from_millis(500));
        // A flag given twice: the last one wins, as with the hand-written parser.
        assert_eq!(parse(&["--rate", "5", "--rate", "0"]).unwrap().send.rate, 0);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        for (args, want) in [
            (&["--rate", "fast"][..], "'--rate <LINES_PER_SEC>'"),
            (&["--duration", "-1"], "'--duration <SECS>'"),
            (&["--target", "10.0.0.1:8125"], "is not a loopback address"),
            (&["--listen", "[::2]:1"], "is not a loopback address"),
            (&["--mix", "c=1,x=2"], "unknown type \"x\""),
            (&["--mix", "c"], "is not type=weight"),
            (&["--mix", "c=-1"], "--mix weight \"-1\""),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            let text = e.to_string();
            assert!(text.contains(want) && text.contains(args[1]), "{args:?}: {text}");
        }
        assert_eq!(parse(&["--bogus"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
