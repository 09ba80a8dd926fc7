//! The DogStatsD client behind `harrier emit` (Veneur's `veneur-emit`): one metric, event or service check from
//! the command line, validated, formatted as one wire line and sent over UDP, TCP, a unix datagram socket or a
//! unix stream socket, for hosts and scripts without `nc`.
//!
//! Everything is checked before anything is sent: a value that is not a number, a name or tag that would cut the
//! line (`|`, `#`, a newline, `:` in a metric name, `,` in a tag), no kind or two kinds of metric, or a flag that
//! does not apply to what is sent is a [`UsageError`] naming the flag and the value (exit code 2 in the binary);
//! a failure to send is an [`std::io::Error`] (exit code 1).
//!
//! The lines follow the DogStatsD grammar as [`crate::protocol`] parses it: `name:value|type[|@rate][|#tags]`,
//! `_e{title_bytes,text_bytes}:title|text[|d:ts][|h:host][|k:key][|p:priority][|s:source][|t:alert][|#tags]`
//! with newlines in title and text sent as the two characters `\n` (the lengths count the escaped bytes), and
//! `_sc|name|status[|d:ts][|h:host][|#tags][|m:message]`.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::{parse_f64, AlertType, CheckStatus, MetricKind, Priority, MIN_SAMPLE_RATE};

/// Where `harrier emit` sends without `--to`: the default listener of a local server.
pub const DEFAULT_TARGET: &str = "udp://127.0.0.1:8125";

/// The arguments of `harrier emit`. Values are taken as text and validated by [`build`], so that every error
/// names its flag in the same way.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "Send one metric, event or service check to a DogStatsD server (as veneur-emit), then exit",
    long_about = None,
    after_help = EMIT_HELP
)]
pub struct EmitArgs {
    /// Where to send, in the forms of statsd_listen_addresses: udp://HOST:PORT, tcp://HOST:PORT
    /// (newline-delimited; udp4, udp6, tcp4, tcp6 pick the family), unixgram:///PATH, unix:///PATH
    /// (length-prefixed frames), or unixgram:@NAME / unix:@NAME (Linux abstract sockets). A bare HOST:PORT is UDP.
    #[arg(long, alias = "hostport", value_name = "URL", default_value = DEFAULT_TARGET)]
    pub to: String,
    /// The metric's name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Send a counter of this value.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<String>,
    /// Send a gauge of this value.
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub gauge: Option<String>,
    /// Send a timer: milliseconds, or a duration with a unit (250ms, 1.5s, 2m, 300us).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub timing: Option<String>,
    /// Send a histogram sample of this value.
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub histogram: Option<String>,
    /// Send a distribution sample of this value.
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub distribution: Option<String>,
    /// Send this member of a set (counted once per interval however often it is sent).
    #[arg(long, value_name = "MEMBER", allow_hyphen_values = true)]
    pub set: Option<String>,
    /// A tag, key:value or a bare word; repeat the flag for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The metric's sample rate, in (0, 1]: the server scales counters by its inverse.
    #[arg(long, value_name = "RATE")]
    pub sample_rate: Option<String>,
    /// Send an event with this title.
    #[arg(long, value_name = "TITLE", allow_hyphen_values = true)]
    pub event: Option<String>,
    /// The event's text (newlines are sent escaped, as the agent expects).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: Option<String>,
    /// The event's alert type: error, warning, info (the default) or success.
    #[arg(long, value_name = "TYPE")]
    pub alert_type: Option<String>,
    /// The event's priority: normal (the default) or low.
    #[arg(long, value_name = "PRIORITY")]
    pub priority: Option<String>,
    /// The event's aggregation key.
    #[arg(long, value_name = "KEY")]
    pub aggregation_key: Option<String>,
    /// The event's source type.
    #[arg(long, value_name = "TYPE")]
    pub source_type: Option<String>,
    /// Send a service check of this name.
    #[arg(long, value_name = "NAME")]
    pub service_check: Option<String>,
    /// The service check's status: ok, warning, critical, unknown, or 0 to 3.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// The service check's message.
    #[arg(long, value_name = "MESSAGE", allow_hyphen_values = true)]
    pub message: Option<String>,
    /// The hostname of an event or a service check (for a metric, use --tag host:NAME).
    #[arg(long, value_name = "HOST")]
    pub hostname: Option<String>,
    /// The time of an event or a service check, in unix seconds (default: when the server receives it).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timestamp: Option<String>,
}

const EMIT_HELP: &str = "Exactly one of --count, --gauge, --timing, --histogram, --distribution, --set (with --name), \
--event or --service-check.\n\nExit codes: 0 sent; 2 bad usage or a bad value (nothing is sent); 1 the line could not \
be sent (e.g. connection refused over tcp:// or unix://, no socket at a unixgram:// path).\n\nExamples:\n  \
harrier emit --name deploys --count 1 --tag svc:api\n  harrier emit --to tcp://127.0.0.1:8125 --name queue.depth \
--gauge 42\n  harrier emit --event 'Deploy api' --text 'v1.2 is live' --alert-type success --tag svc:api\n  \
harrier emit --service-check db.up --status critical --message 'primary down'";

/// Why nothing was sent: bad usage, detected before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A flag's value is wrong.
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The flags do not make one metric, event or service check.
    #[error("{0}")]
    Flags(String),
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> UsageError {
    UsageError::InvalidValue {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Which addresses a host name may resolve to (`udp4://`, `tcp6://`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Any: IPv4 first when there are both.
    #[default]
    Any,
    V4,
    V6,
}

impl Family {
    fn suffix(self) -> &'static str {
        match self {
            Family::Any => "",
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

/// A unix socket: a file, or a name in Linux's abstract namespace (`@name`, no file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketName {
    Path(PathBuf),
    Abstract(String),
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketName::Path(p) => write!(f, "//{}", p.display()),
            SocketName::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// A destination of `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port`, resolved when sending.
    Udp(String, Family),
    /// `host:port`, newline-delimited lines.
    Tcp(String, Family),
    /// A unix datagram socket.
    Unixgram(SocketName),
    /// A unix stream socket, each packet framed by its length as a 4-byte little-endian integer.
    Unix(SocketName),
}

impl Target {
    /// Parses the forms `statsd_listen_addresses` takes (without `tls://`): `udp://host:port`, `tcp://host:port`
    /// (`udp4`, `udp6`, `tcp4`, `tcp6` pick the family), `unixgram:///path`, `unixgram:path`, `unixgram:@name`
    /// (a Linux abstract socket) and the same for `unix:`, or a bare `host:port` (UDP, as veneur-emit's
    /// `-hostport`). An empty host (`udp://:8125`, as a listener is often written) means this host. Host names are
    /// resolved when sending.
    pub fn parse(url: &str) -> Result<Target, UsageError> {
        let bad = |reason: &str| invalid("--to", url, reason);
        let known = [
            "udp",
            "udp4",
            "udp6",
            "tcp",
            "tcp4",
            "tcp6",
            "unixgram",
            "unix",
            "tls",
            "unixpacket",
        ];
        let (scheme, rest) = match url.split_once(':') {
            Some((scheme, rest)) if known.contains(&scheme.to_ascii_lowercase().as_str()) => {
                (scheme.to_ascii_lowercase(), rest)
            }
            Some((scheme, rest)) if rest.starts_with("//") => {
                return Err(bad(&format!(
                    "unknown scheme {scheme:?} (expected udp://, tcp://, unixgram:// or unix://)"
                )))
            }
            // `host:port`, `[::1]:8125`.
            _ => ("udp".to_string(), url),
        };
        let authority = rest.strip_prefix("//");
        let host_port = |family: Family| -> Result<String, UsageError> {
            let rest = match authority {
                Some(a) => a,
                // A bare `host:port`.
                None if rest == url => rest,
                None => return Err(bad(&format!("expected {scheme}://HOST:PORT"))),
            };
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected HOST:PORT, e.g. udp://127.0.0.1:8125"))?;
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return Err(bad("the port is not a number from 1 to 65535")),
            }
            Ok(match (host, family) {
                ("" | "[]", Family::V6) => format!("[::1]:{port}"),
                ("" | "[]", _) => format!("127.0.0.1:{port}"),
                _ => rest.to_string(),
            })
        };
        let socket = || -> Result<SocketName, UsageError> {
            let rest = authority.unwrap_or(rest);
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() || name.contains('\0') || name.len() > 107 {
                    return Err(bad("an abstract socket name is 1 to 107 bytes, without NUL"));
                }
                return Ok(SocketName::Abstract(name.to_string()));
            }
            if rest.is_empty() {
                Err(bad("the socket path is empty"))
            } else {
                Ok(SocketName::Path(PathBuf::from(rest)))
            }
        };
        match scheme.as_str() {
            "udp" => host_port(Family::Any).map(|a| Target::Udp(a, Family::Any)),
            "udp4" => host_port(Family::V4).map(|a| Target::Udp(a, Family::V4)),
            "udp6" => host_port(Family::V6).map(|a| Target::Udp(a, Family::V6)),
            "tcp" => host_port(Family::Any).map(|a| Target::Tcp(a, Family::Any)),
            "tcp4" => host_port(Family::V4).map(|a| Target::Tcp(a, Family::V4)),
            "tcp6" => host_port(Family::V6).map(|a| Target::Tcp(a, Family::V6)),
            "unixgram" => socket().map(Target::Unixgram),
            "unix" => socket().map(Target::Unix),
            "tls" => Err(bad(
                "tls:// is not supported by harrier emit (use tcp://, udp:// or a unix socket)",
            )),
            _ => Err(bad("unixpacket sockets are not supported (use unixgram: or unix:)")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Udp(a, family) => write!(f, "udp{}://{a}", family.suffix()),
            Target::Tcp(a, family) => write!(f, "tcp{}://{a}", family.suffix()),
            Target::Unixgram(name) => write!(f, "unixgram:{name}"),
            Target::Unix(name) => write!(f, "unix:{name}"),
        }
    }
}

/// A metric's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A finite number (counters, gauges, timers, histograms, distributions).
    Number(f64),
    /// A set's member.
    Member(String),
}

/// One metric line's content.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub kind: MetricKind,
    pub value: Value,
    /// `None`: no `|@` field (a rate of 1).
    pub sample_rate: Option<f64>,
    pub tags: Vec<String>,
}

/// One event's content: title and text as they should read, newlines included.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub title: String,
    pub text: String,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub priority: Option<Priority>,
    pub alert_type: Option<AlertType>,
    pub aggregation_key: Option<String>,
    pub source_type: Option<String>,
    pub tags: Vec<String>,
}

/// One service check's content.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub status: CheckStatus,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub tags: Vec<String>,
    /// Newlines are sent as the two characters `\n` (the agent does not unescape them).
    pub message: Option<String>,
}

/// What one `harrier emit` sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Metric(MetricSpec),
    Event(EventSpec),
    ServiceCheck(CheckSpec),
}

impl Message {
    /// The wire line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Message::Metric(m) => metric_line(m),
            Message::Event(e) => event_line(e),
            Message::ServiceCheck(c) => check_line(c),
        }
    }
}

/// A number as the wire writes it: the shortest text that parses back to the same `f64`, with an exponent for
/// very large or very small magnitudes (Rust's `Display` never uses one).
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else if v == 0.0 {
        // No `-0`: the same value for every aggregation.
        "0".to_string()
    } else {
        format!("{v}")
    }
}

fn push_tags(out: &mut String, tags: &[String]) {
    if !tags.is_empty() {
        out.push_str("|#");
        out.push_str(&tags.join(","));
    }
}

/// `name:value|type[|@rate][|#tags]`.
pub fn metric_line(m: &MetricSpec) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(&m.name);
    out.push(':');
    match &m.value {
        Value::Number(v) => out.push_str(&format_number(*v)),
        Value::Member(s) => out.push_str(s),
    }
    out.push('|');
    out.push_str(m.kind.wire());
    if let Some(rate) = m.sample_rate {
        out.push_str("|@");
        out.push_str(&format_number(rate));
    }
    push_tags(&mut out, &m.tags);
    out
}

/// Newlines (and CRLF pairs) as the two characters `\n`.
fn escape_newlines(s: &str) -> String {
    s.replace("\r\n", "\\n").replace('\n', "\\n")
}

/// `_e{title_len,text_len}:title|text[|d:ts][|h:host][|k:key][|p:priority][|s:source][|t:alert][|#tags]`, the
/// lengths in bytes of the escaped title and text; the optional fields in datadog-go's order.
pub fn event_line(e: &EventSpec) -> String {
    let title = escape_newlines(&e.title);
    let text = escape_newlines(&e.text);
    let mut out = format!("_e{{{},{}}}:{title}|{text}", title.len(), text.len());
    if let Some(ts) = e.timestamp {
        out.push_str(&format!("|d:{ts}"));
    }
    for (prefix, field) in [("|h:", &e.hostname), ("|k:", &e.aggregation_key)] {
        if let Some(v) = field {
            out.push_str(prefix);
            out.push_str(v);
        }
    }
    if let Some(p) = e.priority {
        out.push_str("|p:");
        out.push_str(p.as_str());
    }
    if let Some(s) = &e.source_type {
        out.push_str("|s:");
        out.push_str(s);
    }
    if let Some(t) = e.alert_type {
        out.push_str("|t:");
        out.push_str(t.as_str());
    }
    push_tags(&mut out, &e.tags);
    out
}

/// `_sc|name|status[|d:ts][|h:host][|#tags][|m:message]`, the message last as the docs ask.
pub fn check_line(c: &CheckSpec) -> String {
    let mut out = format!("_sc|{}|{}", c.name, c.status.code());
    if let Some(ts) = c.timestamp {
        out.push_str(&format!("|d:{ts}"));
    }
    if let Some(h) = &c.hostname {
        out.push_str("|h:");
        out.push_str(h);
    }
    push_tags(&mut out, &c.tags);
    if let Some(m) = &c.message {
        out.push_str("|m:");
        out.push_str(&escape_newlines(m));
    }
    out
}

/// The characters that would end or cut a line or a field, named for an error.
fn cutting_char(s: &str, forbidden: &[char]) -> Option<String> {
    s.chars().find(|c| forbidden.contains(c)).map(|c| match c {
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        c => format!("'{c}'"),
    })
}

/// A text field: not empty, none of `forbidden`.
fn check_text(flag: &'static str, value: &str, forbidden: &[char], why: &str) -> Result<(), UsageError> {
    if value.is_empty() {
        return Err(invalid(flag, value, "it is empty"));
    }
    match cutting_char(value, forbidden) {
        Some(c) => Err(invalid(flag, value, format!("it contains {c}, {why}"))),
        None => Ok(()),
    }
}

/// A metric name: not empty, no `:` (it ends the name), `|`, `#` or newline, and not starting as an event or a
/// service check does.
pub fn check_metric_name(name: &str) -> Result<(), UsageError> {
    if name.starts_with("_e{") || name.starts_with("_sc") {
        return Err(invalid(
            "--name",
            name,
            "a line starting with _e{ or _sc is read as an event or a service check",
        ));
    }
    check_text(
        "--name",
        name,
        &[':', '|', '#', '\n', '\r'],
        "which the DogStatsD line cannot carry in a metric name",
    )
}

/// A tag: not empty, and no `,` (it separates tags; repeat --tag instead), `|`, `#`, newline.
pub fn check_tag(tag: &str) -> Result<(), UsageError> {
    if tag.contains(',') {
        return Err(invalid(
            "--tag",
            tag,
            "it contains ',', which separates tags: repeat --tag for each tag",
        ));
    }
    check_text(
        "--tag",
        tag,
        &['|', '#', '\n', '\r'],
        "which the DogStatsD line cannot carry in a tag",
    )
}

/// A finite number in the wire's syntax (Go's `ParseFloat`, as the server reads it).
pub fn parse_number(flag: &'static str, raw: &str) -> Result<f64, UsageError> {
    match parse_f64(raw) {
        Some(v) if v.is_finite() => Ok(v),
        Some(_) => Err(invalid(flag, raw, "not a finite number")),
        None => Err(invalid(flag, raw, "not a number")),
    }
}

/// A timer's value in milliseconds: a bare number is milliseconds; a number with a unit (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`) is converted, as veneur-emit takes a Go duration.
pub fn parse_timing(raw: &str) -> Result<f64, UsageError> {
    const UNITS: [(&str, f64); 8] = [
        ("ns", 1e-6),
        ("us", 1e-3),
        ("µs", 1e-3),
        ("μs", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
        ("m", 60e3),
        ("h", 3600e3),
    ];
    // Longest suffixes first: "ms" before "s" and "m".
    for (unit, scale) in UNITS {
        if let Some(number) = raw.strip_suffix(unit) {
            if let Some(v) = parse_f64(number).filter(|v| v.is_finite()) {
                return Ok(v * scale);
            }
        }
    }
    parse_number("--timing", raw).map_err(|_| {
        invalid(
            "--timing",
            raw,
            "not a number of milliseconds nor a duration such as 250ms, 1.5s or 2m",
        )
    })
}

/// A sample rate in [1e-9, 1], as the server accepts.
pub fn parse_sample_rate(raw: &str) -> Result<f64, UsageError> {
    let v = parse_number("--sample-rate", raw)?;
    if (MIN_SAMPLE_RATE..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            "--sample-rate",
            raw,
            "a sample rate is in (0, 1] (at least 1e-9)",
        ))
    }
}

/// `ok`, `warning`, `critical`, `unknown` (any case) or `0`..`3`.
pub fn parse_status(raw: &str) -> Result<CheckStatus, UsageError> {
    Ok(match raw.to_ascii_lowercase().as_str() {
        "0" | "ok" => CheckStatus::Ok,
        "1" | "warning" | "warn" => CheckStatus::Warning,
        "2" | "critical" | "crit" => CheckStatus::Critical,
        "3" | "unknown" => CheckStatus::Unknown,
        _ => {
            return Err(invalid(
                "--status",
                raw,
                "expected ok, warning, critical, unknown, or 0 to 3",
            ))
        }
    })
}

fn parse_alert_type(raw: &str) -> Result<AlertType, UsageError> {
    Ok(match raw {
        "error" => AlertType::Error,
        "warning" => AlertType::Warning,
        "info" => AlertType::Info,
        "success" => AlertType::Success,
        _ => return Err(invalid("--alert-type", raw, "expected error, warning, info or success")),
    })
}

fn parse_priority(raw: &str) -> Result<Priority, UsageError> {
    match raw {
        "normal" => Ok(Priority::Normal),
        "low" => Ok(Priority::Low),
        _ => Err(invalid("--priority", raw, "expected normal or low")),
    }
}

fn parse_timestamp(raw: &str) -> Result<i64, UsageError> {
    match raw.parse::<i64>() {
        Ok(ts) if ts > 0 => Ok(ts),
        _ => Err(invalid(
            "--timestamp",
            raw,
            "expected a positive integer number of unix seconds",
        )),
    }
}

/// An optional one-field text of an event or check: no `|` (it ends the field) nor a newline.
fn optional_field(flag: &'static str, value: &Option<String>) -> Result<Option<String>, UsageError> {
    match value {
        None => Ok(None),
        Some(v) => {
            check_text(flag, v, &['|', '\n', '\r'], "which would end the field")?;
            Ok(Some(v.clone()))
        }
    }
}

/// Validates the arguments into a destination and a message; nothing is sent.
pub fn build(args: &EmitArgs) -> Result<(Target, Message), UsageError> {
    let target = Target::parse(&args.to)?;
    let kinds: Vec<(&'static str, MetricKind, &str)> = [
        ("--count", MetricKind::Counter, &args.count),
        ("--gauge", MetricKind::Gauge, &args.gauge),
        ("--timing", MetricKind::Timer, &args.timing),
        ("--histogram", MetricKind::Histogram, &args.histogram),
        ("--distribution", MetricKind::Distribution, &args.distribution),
        ("--set", MetricKind::Set, &args.set),
    ]
    .into_iter()
    .filter_map(|(flag, kind, v)| v.as_deref().map(|v| (flag, kind, v)))
    .collect();
    let mut what: Vec<&str> = kinds.iter().map(|k| k.0).collect();
    if args.event.is_some() {
        what.push("--event");
    }
    if args.service_check.is_some() {
        what.push("--service-check");
    }
    match what.len() {
        0 => {
            return Err(UsageError::Flags(
                "nothing to send: give one of --count, --gauge, --timing, --histogram, --distribution or --set \
                 (with --name), --event or --service-check"
                    .to_string(),
            ))
        }
        1 => {}
        _ => {
            return Err(UsageError::Flags(format!(
                "{} given together: harrier emit sends exactly one metric, event or service check",
                what.join(" and ")
            )))
        }
    }
    // Flags that belong to another kind of message than the one sent.
    let not_for = |flags: &[(&'static str, bool)], sent: &str| -> Result<(), UsageError> {
        match flags.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(UsageError::Flags(format!("{flag} does not apply to {sent}"))),
            None => Ok(()),
        }
    };
    let event_flags = [
        ("--text", args.text.is_some()),
        ("--alert-type", args.alert_type.is_some()),
        ("--priority", args.priority.is_some()),
        ("--aggregation-key", args.aggregation_key.is_some()),
        ("--source-type", args.source_type.is_some()),
    ];
    let check_flags = [
        ("--status", args.status.is_some()),
        ("--message", args.message.is_some()),
    ];
    let metric_flags = [
        ("--name", args.name.is_some()),
        ("--sample-rate", args.sample_rate.is_some()),
    ];
    let tags = args
        .tags
        .iter()
        .map(|t| check_tag(t).map(|()| t.clone()))
        .collect::<Result<Vec<_>, _>>()?;

    if let Some(&(flag, kind, raw)) = kinds.first() {
        not_for(&event_flags, "a metric (they are for --event)")?;
        not_for(&check_flags, "a metric (they are for --service-check)")?;
        not_for(
            &[
                ("--hostname", args.hostname.is_some()),
                ("--timestamp", args.timestamp.is_some()),
            ],
            "a metric (use --tag host:NAME for its host)",
        )?;
        let name = args
            .name
            .as_deref()
            .ok_or_else(|| UsageError::Flags(format!("{flag} needs the metric's --name")))?;
        check_metric_name(name)?;
        let value = match kind {
            MetricKind::Set => {
                check_text(
                    "--set",
                    raw,
                    &['|', '\n', '\r'],
                    "which the DogStatsD line cannot carry in a set member",
                )?;
                Value::Member(raw.to_string())
            }
            MetricKind::Timer => Value::Number(parse_timing(raw)?),
            _ => Value::Number(parse_number(flag, raw)?),
        };
        let sample_rate = args.sample_rate.as_deref().map(parse_sample_rate).transpose()?;
        return Ok((
            target,
            Message::Metric(MetricSpec {
                name: name.to_string(),
                kind,
                value,
                sample_rate,
                tags,
            }),
        ));
    }
    let hostname = optional_field("--hostname", &args.hostname)?;
    let timestamp = args.timestamp.as_deref().map(parse_timestamp).transpose()?;
    if let Some(title) = &args.event {
        not_for(&metric_flags, "an event (its title is the value of --event)")?;
        not_for(&check_flags, "an event (they are for --service-check)")?;
        if title.is_empty() {
            return Err(invalid("--event", title, "an event's title is empty"));
        }
        if title.replace("\r\n", "\n").contains('\r') {
            return Err(invalid("--event", title, "it contains a carriage return"));
        }
        let text = args.text.clone().unwrap_or_default();
        if text.replace("\r\n", "\n").contains('\r') {
            return Err(invalid("--text", &text, "it contains a carriage return"));
        }
        return Ok((
            target,
            Message::Event(EventSpec {
                title: title.clone(),
                text,
                timestamp,
                hostname,
                priority: args.priority.as_deref().map(parse_priority).transpose()?,
                alert_type: args.alert_type.as_deref().map(parse_alert_type).transpose()?,
                aggregation_key: optional_field("--aggregation-key", &args.aggregation_key)?,
                source_type: optional_field("--source-type", &args.source_type)?,
                tags,
            }),
        ));
    }
    let name = args.service_check.as_deref().unwrap_or_default();
    not_for(
        &metric_flags,
        "a service check (its name is the value of --service-check)",
    )?;
    not_for(&event_flags, "a service check (they are for --event)")?;
    check_text(
        "--service-check",
        name,
        &['|', '\n', '\r'],
        "which the DogStatsD line cannot carry in a service check's name",
    )?;
    let status = args
        .status
        .as_deref()
        .ok_or_else(|| UsageError::Flags("--service-check needs a --status (ok, warning, critical or unknown)".into()))
        .and_then(parse_status)?;
    let message = match &args.message {
        Some(m) if m.contains('|') => {
            return Err(invalid("--message", m, "it contains '|', which would end the message"))
        }
        m => m.clone(),
    };
    Ok((
        target,
        Message::ServiceCheck(CheckSpec {
            name: name.to_string(),
            status,
            timestamp,
            hostname,
            tags,
            message,
        }),
    ))
}

/// The addresses of `addr` in `family`, IPv4 first (as Go dials `udp` and `tcp`).
fn resolve(addr: &str, family: Family) -> io::Result<Vec<SocketAddr>> {
    let mut all: Vec<SocketAddr> = addr
        .to_socket_addrs()?
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    all.sort_by_key(|a| a.is_ipv6());
    if all.is_empty() {
        let which = match family {
            Family::Any => "",
            Family::V4 => " IPv4",
            Family::V6 => " IPv6",
        };
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no{which} address"),
        ));
    }
    Ok(all)
}

/// The socket address of a unix socket name.
fn unix_address(name: &SocketName) -> io::Result<UnixAddr> {
    match name {
        SocketName::Path(p) => UnixAddr::from_pathname(p),
        #[cfg(target_os = "linux")]
        SocketName::Abstract(n) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(n.as_bytes())
        }
        #[cfg(not(target_os = "linux"))]
        SocketName::Abstract(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract unix sockets (`@name`) exist on Linux only",
        )),
    }
}

/// Sends one line (a newline is added) to `target`: one datagram, or one write on a new connection (a frame
/// with its length on a unix stream), each step bounded by `timeout`.
pub fn send(target: &Target, line: &str, timeout: Duration) -> io::Result<()> {
    let mut packet = String::with_capacity(line.len() + 1);
    packet.push_str(line);
    packet.push('\n');
    let packet = packet.as_bytes();
    match target {
        Target::Udp(addr, family) => {
            // The first address is used: a datagram to an address with no listener is not an error anyway.
            let a = resolve(addr, *family)?[0];
            let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = UdpSocket::bind(local)?;
            sock.set_write_timeout(Some(timeout))?;
            sock.send_to(packet, a).map(|_| ())
        }
        Target::Tcp(addr, family) => {
            let mut last = None;
            for a in resolve(addr, *family)? {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(mut conn) => {
                        conn.set_write_timeout(Some(timeout))?;
                        conn.write_all(packet)?;
                        conn.flush()?;
                        return conn.shutdown(std::net::Shutdown::Write);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no address")))
        }
        Target::Unixgram(name) => {
            let sock = UnixDatagram::unbound()?;
            sock.set_write_timeout(Some(timeout))?;
            sock.send_to_addr(packet, &unix_address(name)?).map(|_| ())
        }
        Target::Unix(name) => {
            let len = u32::try_from(packet.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the line is too long for one frame"))?;
            let mut conn = UnixStream::connect_addr(&unix_address(name)?)?;
            conn.set_write_timeout(Some(timeout))?;
            let mut frame = Vec::with_capacity(4 + packet.len());
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(packet);
            conn.write_all(&frame)?;
            conn.flush()?;
            conn.shutdown(std::net::Shutdown::Write)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_line, parse_str, Message as Parsed, MetricValue};
    use proptest::prelude::*;

    fn args(list: &[&str]) -> EmitArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            emit: EmitArgs,
        }
        Cli::try_parse_from(std::iter::once("emit").chain(list.iter().copied()))
            .unwrap()
            .emit
    }

    fn line(list: &[&str]) -> String {
        build(&args(list)).unwrap().1.line()
    }

    fn error(list: &[&str]) -> String {
        build(&args(list)).unwrap_err().to_string()
    }

    #[test]
    fn metrics_are_formatted_as_the_protocol_says() {
        assert_eq!(
            line(&["--name", "deploys", "--count", "1", "--tag", "svc:api"]),
            "deploys:1|c|#svc:api"
        );
        assert_eq!(line(&["--name", "q", "--gauge", "-2.5"]), "q:-2.5|g");
        assert_eq!(line(&["--name", "t", "--timing", "12.5"]), "t:12.5|ms");
        assert_eq!(line(&["--name", "t", "--timing", "1.5s"]), "t:1500|ms");
        assert_eq!(line(&["--name", "t", "--timing", "250us"]), "t:0.25|ms");
        assert_eq!(
            line(&["--name", "h", "--histogram", "3", "--sample-rate", "0.5"]),
            "h:3|h|@0.5"
        );
        assert_eq!(line(&["--name", "d", "--distribution", "1e20"]), "d:1e20|d");
        assert_eq!(
            line(&["--name", "u", "--set", "user:42", "--tag", "a:b", "--tag", "c"]),
            "u:user:42|s|#a:b,c"
        );
        assert_eq!(line(&["--name", "g", "--gauge", "1_000"]), "g:1000|g");
    }

    #[test]
    fn events_and_service_checks_are_formatted_as_the_protocol_says() {
        assert_eq!(
            line(&[
                "--event",
                "Deploy",
                "--text",
                "v1\nlive",
                "--alert-type",
                "success",
                "--tag",
                "svc:api"
            ]),
            "_e{6,8}:Deploy|v1\\nlive|t:success|#svc:api"
        );
        assert_eq!(
            line(&[
                "--event",
                "é|x",
                "--priority",
                "low",
                "--hostname",
                "web-1",
                "--aggregation-key",
                "k",
                "--source-type",
                "cli",
                "--timestamp",
                "1700000000",
            ]),
            "_e{4,0}:é|x||d:1700000000|h:web-1|k:k|p:low|s:cli"
        );
        assert_eq!(
            line(&[
                "--service-check",
                "db.up",
                "--status",
                "critical",
                "--message",
                "primary\ndown",
                "--tag",
                "db:main"
            ]),
            "_sc|db.up|2|#db:main|m:primary\\ndown"
        );
        assert_eq!(
            line(&[
                "--service-check",
                "db.up",
                "--status",
                "1",
                "--hostname",
                "h",
                "--timestamp",
                "5"
            ]),
            "_sc|db.up|1|d:5|h:h"
        );
        let parsed = line(&["--event", "Deploy", "--text", "a\r\nb"]);
        let Ok(Parsed::Event(e)) = parse_str(&parsed) else {
            panic!("{parsed}")
        };
        assert_eq!(e.text(), "a\nb");
    }

    #[test]
    fn bad_values_name_their_flag_and_value() {
        let cases: [(&[&str], &[&str]); 20] = [
            (
                &["--name", "x", "--gauge", "abc"],
                &["--gauge", "\"abc\"", "not a number"],
            ),
            (&["--name", "x", "--count", "inf"], &["--count", "finite"]),
            (&["--name", "x", "--count", "1e400"], &["--count", "1e400"]),
            (&["--name", "x", "--timing", "soon"], &["--timing", "soon"]),
            (&["--name", "a|b", "--count", "1"], &["--name", "a|b", "'|'"]),
            (&["--name", "a:b", "--count", "1"], &["--name", "':'"]),
            (&["--name", "a\nb", "--count", "1"], &["--name", "newline"]),
            (&["--name", "a#b", "--count", "1"], &["--name", "'#'"]),
            (
                &["--name", "x", "--count", "1", "--tag", "a,b"],
                &["--tag", "a,b", "repeat --tag"],
            ),
            (&["--name", "x", "--count", "1", "--tag", "a|b"], &["--tag", "'|'"]),
            (&["--name", "x", "--count", "1", "--tag", ""], &["--tag", "empty"]),
            (
                &["--name", "x", "--count", "1", "--sample-rate", "2"],
                &["--sample-rate", "\"2\""],
            ),
            (
                &["--name", "x", "--count", "1", "--to", "ftp://h:1"],
                &["--to", "scheme"],
            ),
            (&["--name", "x", "--count", "1", "--to", "udp://h:0"], &["--to", "port"]),
            (&["--service-check", "x", "--status", "bad"], &["--status", "bad"]),
            (&["--service-check", "x"], &["--status"]),
            (
                &["--service-check", "x", "--status", "0", "--message", "a|b"],
                &["--message", "'|'"],
            ),
            (&["--event", "t", "--alert-type", "fatal"], &["--alert-type", "fatal"]),
            (&["--event", "t", "--priority", "high"], &["--priority", "high"]),
            (&["--event", "t", "--timestamp", "-3"], &["--timestamp", "-3"]),
        ];
        for (argv, wanted) in cases {
            let e = error(argv);
            for w in wanted {
                assert!(e.contains(w), "{argv:?}: {e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn no_kind_two_kinds_and_misplaced_flags_are_usage_errors() {
        assert!(error(&["--name", "x"]).contains("nothing to send"));
        let two = error(&["--name", "x", "--count", "1", "--gauge", "2"]);
        assert!(two.contains("--count and --gauge"), "{two}");
        assert!(error(&["--count", "1"]).contains("--name"));
        assert!(error(&["--event", "t", "--service-check", "c"]).contains("--event and --service-check"));
        assert!(error(&["--name", "x", "--count", "1", "--text", "t"]).contains("--text"));
        assert!(error(&["--name", "x", "--count", "1", "--hostname", "h"]).contains("host:"));
        assert!(error(&["--event", "t", "--name", "x"]).contains("--name"));
        assert!(error(&["--event", "t", "--status", "ok"]).contains("--status"));
        assert!(error(&["--service-check", "c", "--status", "ok", "--text", "x"]).contains("--text"));
        assert!(error(&["--event", ""]).contains("empty"));
        assert!(error(&["--name", "_sc", "--count", "1"]).contains("service check"));
        assert!(error(&["--name", "_e{x", "--count", "1"]).contains("event"));
    }

    #[test]
    fn targets_take_the_listener_forms_and_default_to_the_local_udp_listener() {
        let path = |p: &str| SocketName::Path(p.into());
        assert_eq!(
            build(&args(&["--name", "x", "--count", "1"])).unwrap().0,
            Target::Udp("127.0.0.1:8125".into(), Family::Any)
        );
        for (url, target, shown) in [
            (
                "tcp://[::1]:9000",
                Target::Tcp("[::1]:9000".into(), Family::Any),
                "tcp://[::1]:9000",
            ),
            (
                "localhost:8125",
                Target::Udp("localhost:8125".into(), Family::Any),
                "udp://localhost:8125",
            ),
            (
                "[::1]:8125",
                Target::Udp("[::1]:8125".into(), Family::Any),
                "udp://[::1]:8125",
            ),
            (
                "udp://:8125",
                Target::Udp("127.0.0.1:8125".into(), Family::Any),
                "udp://127.0.0.1:8125",
            ),
            (
                "udp6://:8125",
                Target::Udp("[::1]:8125".into(), Family::V6),
                "udp6://[::1]:8125",
            ),
            ("TCP4://h:1", Target::Tcp("h:1".into(), Family::V4), "tcp4://h:1"),
            (
                "unixgram:///run/s.sock",
                Target::Unixgram(path("/run/s.sock")),
                "unixgram:///run/s.sock",
            ),
            (
                "unixgram:/run/s.sock",
                Target::Unixgram(path("/run/s.sock")),
                "unixgram:///run/s.sock",
            ),
            (
                "unixgram:@harrier",
                Target::Unixgram(SocketName::Abstract("harrier".into())),
                "unixgram:@harrier",
            ),
            (
                "unix:///run/s.sock",
                Target::Unix(path("/run/s.sock")),
                "unix:///run/s.sock",
            ),
            ("unix:@h", Target::Unix(SocketName::Abstract("h".into())), "unix:@h"),
        ] {
            let got = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(got, target, "{url}");
            assert_eq!(got.to_string(), shown, "{url}");
        }
        for bad in [
            "unix://",
            "unix:@",
            "tls://h:1",
            "udp://h",
            "udp://h:0",
            "udp://h:x",
            "ftp://h:1",
            "udp:h:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_line_reaches_an_abstract_unixgram_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("harrier-client-test-{}", std::process::id());
        let sock = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = Target::parse(&format!("unixgram:@{name}")).unwrap();
        send(&target, "x:1|c", Duration::from_secs(2)).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x:1|c\n");
    }

    #[test]
    fn sending_to_a_closed_tcp_port_or_a_missing_socket_is_an_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let t = Duration::from_secs(2);
        assert!(send(&Target::Tcp(addr.to_string(), Family::Any), "x:1|c", t).is_err());
        let missing = std::env::temp_dir().join(format!("harrier-client-missing-{}.sock", std::process::id()));
        assert!(send(&Target::Unix(SocketName::Path(missing.clone())), "x:1|c", t).is_err());
        assert!(send(&Target::Unixgram(SocketName::Path(missing)), "x:1|c", t).is_err());
    }

    #[test]
    fn a_udp_datagram_carries_the_line_and_its_newline() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = Target::Udp(sock.local_addr().unwrap().to_string(), Family::V4);
        send(&target, "x:1|c", Duration::from_secs(2)).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x:1|c\n");
    }

    fn kind() -> impl Strategy<Value = MetricKind> {
        proptest::sample::select(MetricKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn every_valid_metric_parses_back_to_its_name_value_and_tags(
            name in "[^:|#\n\r]{1,24}",
            kind in kind(),
            number in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            member in "[^|\n\r]{1,24}",
            rate in proptest::option::of(1e-9f64..=1.0),
            tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..5),
        ) {
            prop_assume!(check_metric_name(&name).is_ok());
            for t in &tags {
                check_tag(t).unwrap();
            }
            let value = if kind == MetricKind::Set { Value::Member(member.clone()) } else { Value::Number(number) };
            let spec = MetricSpec { name: name.clone(), kind, value, sample_rate: rate, tags: tags.clone() };
            let line = metric_line(&spec);
            let Ok(Parsed::Metric(m)) = parse_line(line.as_bytes()) else {
                panic!("{line:?} does not parse as a metric");
            };
            prop_assert_eq!(m.name, name.as_str());
            prop_assert_eq!(m.kind, kind);
            match m.value {
                MetricValue::SetMember(s) => prop_assert_eq!(s, member.as_str()),
                MetricValue::Numbers(v) => {
                    prop_assert_eq!(v.len(), 1);
                    // -0 is sent as 0.
                    prop_assert_eq!(v.first(), if number == 0.0 { 0.0 } else { number });
                }
            }
            prop_assert_eq!(m.sample_rate, rate.unwrap_or(1.0));
            prop_assert_eq!(m.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn every_event_parses_back_to_its_title_text_and_tags(
            title in "[^\\\\\r]{1,24}",
            text in "[^\\\\\r]{0,40}",
            tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..4),
        ) {
            let spec = EventSpec {
                title: title.clone(), text: text.clone(), timestamp: None, hostname: None, priority: None,
                alert_type: Some(AlertType::Warning), aggregation_key: None, source_type: None, tags: tags.clone(),
            };
            let line = event_line(&spec);
            prop_assert!(!line.contains('\n'));
            let Ok(Parsed::Event(e)) = parse_line(line.as_bytes()) else {
                panic!("{line:?} does not parse as an event");
            };
            prop_assert_eq!(e.title(), title.as_str());
            prop_assert_eq!(e.text(), text.as_str());
            prop_assert_eq!(e.alert_type, AlertType::Warning);
            prop_assert_eq!(e.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn every_service_check_parses_back_to_its_name_status_and_message(
            name in "[^|\n\r]{1,24}",
            code in 0u8..4,
            message in proptest::option::of("[^|\n\r]{0,30}"),
            tags in proptest::collection::vec("[^,|#\n\r]{1,16}", 0..4),
        ) {
            let status = CheckStatus::from_code(code).unwrap();
            let spec = CheckSpec {
                name: name.clone(), status, timestamp: None, hostname: None, tags: tags.clone(),
                message: message.clone(),
            };
            let line = check_line(&spec);
            let Ok(Parsed::ServiceCheck(c)) = parse_line(line.as_bytes()) else {
                panic!("{line:?} does not parse as a service check");
            };
            prop_assert_eq!(c.name, name.as_str());
            prop_assert_eq!(c.status, status);
            prop_assert_eq!(c.message, message.as_deref());
            prop_assert_eq!(c.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
