//! Why `harrier emit` sent nothing: bad usage, detected before sending.

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

/// A [`UsageError::InvalidValue`].
pub(super) fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> UsageError {
    UsageError::InvalidValue {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}
