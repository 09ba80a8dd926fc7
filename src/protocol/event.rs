//! Events: `_e{title_len,text_len}:title|text[|d:ts][|h:host][|p:priority][|t:alert][|k:key][|s:source][|#tags]`.

use std::borrow::Cow;

use super::number::parse_i64;
use super::{fields, split_once_byte, ParseError, Tags};

/// Event priority (`p:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Event alert type (`t:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertType {
    Error,
    Warning,
    #[default]
    Info,
    Success,
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::Error => "error",
            AlertType::Warning => "warning",
            AlertType::Info => "info",
            AlertType::Success => "success",
        }
    }
}

/// A parsed event, borrowing from the packet. Title and text are kept as sent (with `\n` escapes); use
/// [`Event::title`] and [`Event::text`] for the unescaped strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub raw_title: &'a str,
    pub raw_text: &'a str,
    /// `d:`, unix seconds; `None` means "now".
    pub timestamp: Option<i64>,
    /// `h:`
    pub hostname: Option<&'a str>,
    pub priority: Priority,
    pub alert_type: AlertType,
    /// `k:`
    pub aggregation_key: Option<&'a str>,
    /// `s:`
    pub source_type: Option<&'a str>,
    pub tags: Tags<'a>,
}

impl<'a> Event<'a> {
    /// The title with every `\n` escape turned into a newline.
    pub fn title(&self) -> Cow<'a, str> {
        unescape_newlines(self.raw_title)
    }

    /// The text with every `\n` escape turned into a newline.
    pub fn text(&self) -> Cow<'a, str> {
        unescape_newlines(self.raw_text)
    }
}

/// Replaces the two bytes `\` `n` with a newline; other backslashes are kept.
pub fn unescape_newlines(s: &str) -> Cow<'_, str> {
    if s.contains("\\n") {
        Cow::Owned(s.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(super) fn parse(line: &str) -> Result<Event<'_>, ParseError<'_>> {
    let (header, body) = split_once_byte(line, b':');
    let body = body.ok_or(ParseError::BadEventHeader(header))?;
    // `_e{` + `A,B` + one closing byte (not checked, as in the agent).
    let bad_header = || ParseError::BadEventHeader(header);
    if header.len() < 7 {
        return Err(bad_header());
    }
    let lengths = header.get(3..header.len() - 1).ok_or_else(bad_header)?;
    let (title_len, text_len) = split_once_byte(lengths, b',');
    let text_len = text_len.ok_or_else(bad_header)?;
    let title_len = parse_i64(title_len).ok_or_else(bad_header)?;
    let text_len = parse_i64(text_len).ok_or_else(bad_header)?;
    if title_len < 0 || text_len < 0 {
        return Err(bad_header());
    }
    if title_len == 0 {
        return Err(ParseError::EmptyEventTitle);
    }
    let (title_len, text_len) = (title_len as usize, text_len as usize);
    let text_end = title_len
        .checked_add(1)
        .and_then(|n| n.checked_add(text_len))
        .filter(|&end| end <= body.len())
        .ok_or(ParseError::EventLengthMismatch)?;
    let raw_title = body.get(..title_len).ok_or(ParseError::EventLengthMismatch)?;
    let raw_text = body
        .get(title_len + 1..text_end)
        .ok_or(ParseError::EventLengthMismatch)?;
    let rest = body.get(text_end..).ok_or(ParseError::EventLengthMismatch)?;

    let mut event = Event {
        raw_title,
        raw_text,
        timestamp: None,
        hostname: None,
        priority: Priority::Normal,
        alert_type: AlertType::Info,
        aggregation_key: None,
        source_type: None,
        tags: Tags::default(),
    };
    // The first piece is whatever sits between the text and the next `|`: an unknown field, ignored.
    for field in fields(rest).skip(1) {
        if let Some(v) = field.strip_prefix("d:") {
            // A bad date is ignored, as in the agent.
            if let Some(ts) = parse_i64(v) {
                event.timestamp = Some(ts);
            }
        } else if let Some(v) = field.strip_prefix("h:") {
            event.hostname = Some(v);
        } else if let Some(v) = field.strip_prefix("p:") {
            match v {
                "normal" => event.priority = Priority::Normal,
                "low" => event.priority = Priority::Low,
                _ => {}
            }
        } else if let Some(v) = field.strip_prefix("t:") {
            match v {
                "error" => event.alert_type = AlertType::Error,
                "warning" => event.alert_type = AlertType::Warning,
                "info" => event.alert_type = AlertType::Info,
                "success" => event.alert_type = AlertType::Success,
                _ => {}
            }
        } else if let Some(v) = field.strip_prefix("k:") {
            event.aggregation_key = Some(v);
        } else if let Some(v) = field.strip_prefix("s:") {
            event.source_type = Some(v);
        } else if let Some(v) = field.strip_prefix('#') {
            event.tags = Tags::new(v);
        }
    }
    Ok(event)
}
