//! Service checks: `_sc|name|status[|d:ts][|h:host][|#tags][|m:message]`.

use super::number::parse_i64;
use super::{fields, split_once_byte, ParseError, Tags};

/// Service check status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl CheckStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => CheckStatus::Ok,
            1 => CheckStatus::Warning,
            2 => CheckStatus::Critical,
            3 => CheckStatus::Unknown,
            _ => return None,
        })
    }
}

/// A parsed service check, borrowing from the packet.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck<'a> {
    pub name: &'a str,
    pub status: CheckStatus,
    /// `d:`, unix seconds; `None` means "now".
    pub timestamp: Option<i64>,
    /// `h:`
    pub hostname: Option<&'a str>,
    pub tags: Tags<'a>,
    /// `m:`, up to the next `|`, kept as sent (the agent does not unescape it).
    pub message: Option<&'a str>,
}

pub(super) fn parse(line: &str) -> Result<ServiceCheck<'_>, ParseError<'_>> {
    // The agent checks the 3-byte prefix `_sc` and then drops 4 bytes, so `_scX|…` is parsed oddly and rejected.
    let body = line.get(4..).ok_or(ParseError::BadServiceCheck(line))?;
    let (name, rest) = split_once_byte(body, b'|');
    let rest = rest.ok_or(ParseError::BadServiceCheck(line))?;
    if name.is_empty() {
        return Err(ParseError::EmptyServiceCheckName);
    }
    let (status, optional) = split_once_byte(rest, b'|');
    let status = match status.as_bytes() {
        [c @ b'0'..=b'3'] => CheckStatus::from_code(c - b'0').ok_or(ParseError::BadServiceCheckStatus(status))?,
        _ => return Err(ParseError::BadServiceCheckStatus(status)),
    };
    let mut check = ServiceCheck {
        name,
        status,
        timestamp: None,
        hostname: None,
        tags: Tags::default(),
        message: None,
    };
    for field in optional.into_iter().flat_map(fields) {
        if let Some(v) = field.strip_prefix("d:") {
            if let Some(ts) = parse_i64(v) {
                check.timestamp = Some(ts);
            }
        } else if let Some(v) = field.strip_prefix("h:") {
            check.hostname = Some(v);
        } else if let Some(v) = field.strip_prefix("m:") {
            check.message = Some(v);
        } else if let Some(v) = field.strip_prefix('#') {
            check.tags = Tags::new(v);
        }
    }
    Ok(check)
}
