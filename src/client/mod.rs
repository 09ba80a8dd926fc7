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

mod error;
mod line;
mod target;

use error::invalid;
pub use error::UsageError;
pub use line::*;
pub use target::*;

use crate::protocol::MetricKind;

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

/// Validates the arguments into a destination and a message; nothing is sent.
pub fn build(args: &EmitArgs) -> Result<(Target, Message), UsageError> {
    let target = Target::parse(&args.to)?;
    let kinds = metric_kinds(args);
    exactly_one(args, &kinds)?;
    let tags = args
        .tags
        .iter()
        .map(|t| check_tag(t).map(|()| t.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let message = match kinds.first() {
        Some(&(flag, kind, raw)) => build_metric(args, flag, kind, raw, tags)?,
        None if args.event.is_some() => build_event(args, tags)?,
        None => build_check(args, tags)?,
    };
    Ok((target, message))
}

/// The metric kinds given: (flag, kind, raw value).
fn metric_kinds(args: &EmitArgs) -> Vec<(&'static str, MetricKind, &str)> {
    [
        ("--count", MetricKind::Counter, &args.count),
        ("--gauge", MetricKind::Gauge, &args.gauge),
        ("--timing", MetricKind::Timer, &args.timing),
        ("--histogram", MetricKind::Histogram, &args.histogram),
        ("--distribution", MetricKind::Distribution, &args.distribution),
        ("--set", MetricKind::Set, &args.set),
    ]
    .into_iter()
    .filter_map(|(flag, kind, v)| v.as_deref().map(|v| (flag, kind, v)))
    .collect()
}

/// Exactly one metric, event or service check is asked for.
fn exactly_one(args: &EmitArgs, kinds: &[(&'static str, MetricKind, &str)]) -> Result<(), UsageError> {
    let mut what: Vec<&str> = kinds.iter().map(|k| k.0).collect();
    if args.event.is_some() {
        what.push("--event");
    }
    if args.service_check.is_some() {
        what.push("--service-check");
    }
    match what.len() {
        0 => Err(UsageError::Flags(
            "nothing to send: give one of --count, --gauge, --timing, --histogram, --distribution or --set \
             (with --name), --event or --service-check"
                .to_string(),
        )),
        1 => Ok(()),
        _ => Err(UsageError::Flags(format!(
            "{} given together: harrier emit sends exactly one metric, event or service check",
            what.join(" and ")
        ))),
    }
}

/// An error for the first of `flags` given, which belong to another kind of message than `sent`.
fn not_for(flags: &[(&'static str, bool)], sent: &str) -> Result<(), UsageError> {
    match flags.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(UsageError::Flags(format!("{flag} does not apply to {sent}"))),
        None => Ok(()),
    }
}

fn event_flags(args: &EmitArgs) -> [(&'static str, bool); 5] {
    [
        ("--text", args.text.is_some()),
        ("--alert-type", args.alert_type.is_some()),
        ("--priority", args.priority.is_some()),
        ("--aggregation-key", args.aggregation_key.is_some()),
        ("--source-type", args.source_type.is_some()),
    ]
}

fn check_flags(args: &EmitArgs) -> [(&'static str, bool); 2] {
    [
        ("--status", args.status.is_some()),
        ("--message", args.message.is_some()),
    ]
}

fn metric_flags(args: &EmitArgs) -> [(&'static str, bool); 2] {
    [
        ("--name", args.name.is_some()),
        ("--sample-rate", args.sample_rate.is_some()),
    ]
}

fn build_metric(
    args: &EmitArgs,
    flag: &'static str,
    kind: MetricKind,
    raw: &str,
    tags: Vec<String>,
) -> Result<Message, UsageError> {
    not_for(&event_flags(args), "a metric (they are for --event)")?;
    not_for(&check_flags(args), "a metric (they are for --service-check)")?;
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
    Ok(Message::Metric(MetricSpec {
        name: name.to_string(),
        kind,
        value,
        sample_rate,
        tags,
    }))
}

fn build_event(args: &EmitArgs, tags: Vec<String>) -> Result<Message, UsageError> {
    let title = args.event.as_deref().unwrap_or_default();
    not_for(&metric_flags(args), "an event (its title is the value of --event)")?;
    not_for(&check_flags(args), "an event (they are for --service-check)")?;
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
    Ok(Message::Event(EventSpec {
        title: title.to_string(),
        text,
        timestamp: args.timestamp.as_deref().map(parse_timestamp).transpose()?,
        hostname: optional_field("--hostname", &args.hostname)?,
        priority: args.priority.as_deref().map(parse_priority).transpose()?,
        alert_type: args.alert_type.as_deref().map(parse_alert_type).transpose()?,
        aggregation_key: optional_field("--aggregation-key", &args.aggregation_key)?,
        source_type: optional_field("--source-type", &args.source_type)?,
        tags,
    }))
}

fn build_check(args: &EmitArgs, tags: Vec<String>) -> Result<Message, UsageError> {
    let name = args.service_check.as_deref().unwrap_or_default();
    not_for(
        &metric_flags(args),
        "a service check (its name is the value of --service-check)",
    )?;
    not_for(&event_flags(args), "a service check (they are for --event)")?;
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
    Ok(Message::ServiceCheck(CheckSpec {
        name: name.to_string(),
        status,
        timestamp: args.timestamp.as_deref().map(parse_timestamp).transpose()?,
        hostname: optional_field("--hostname", &args.hostname)?,
        tags,
        message,
    }))
}

#[cfg(test)]
mod tests;
