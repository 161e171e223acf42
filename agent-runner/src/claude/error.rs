//! What can go wrong talking to the Messages API, and which of it is worth retrying.

use std::time::Duration;

/// A failed model call. No variant ever holds the API key.
#[derive(Debug, thiserror::Error)]
pub enum ClaudeError {
    /// The API refused the request (400, 401, 403, 404, 413, ...): the same request cannot
    /// succeed, so it is not retried.
    #[error("the Claude API refused the request ({status} {kind}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The API's error type, e.g. `invalid_request_error`.
        kind: String,
        /// The API's message.
        message: String,
        /// The API's request id, for support.
        request_id: Option<String>,
    },
    /// The API is overloaded, rate-limited or failing (429, 529, 5xx): worth retrying.
    #[error("the Claude API is unavailable ({status} {kind}): {message}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// The API's error type, e.g. `overloaded_error`.
        kind: String,
        /// The API's message.
        message: String,
        /// How long the API asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The connection failed or was cut.
    #[error("cannot reach the Claude API: {0}")]
    Transport(String),
    /// No answer arrived in time.
    #[error("the Claude API did not answer in time")]
    Timeout,
    /// The answer could not be understood.
    #[error("malformed answer from the Claude API: {0}")]
    MalformedResponse(String),
    /// A streamed answer failed midway with an `error` event.
    #[error("the answer stream failed ({kind}): {message}")]
    Stream {
        /// The error type, e.g. `overloaded_error`.
        kind: String,
        /// The message.
        message: String,
    },
    /// Retryable failures went on past the retry limit.
    #[error("the Claude API still failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many calls were made.
        attempts: u32,
        /// The last failure.
        last: Box<ClaudeError>,
    },
    /// The client is misconfigured (missing key, bad base URL).
    #[error("Claude client configuration: {0}")]
    Config(String),
}

impl ClaudeError {
    /// Whether calling again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClaudeError::Unavailable { .. } | ClaudeError::Transport(_) | ClaudeError::Timeout => {
                true
            }
            ClaudeError::Stream { kind, .. } => matches!(
                kind.as_str(),
                "overloaded_error" | "api_error" | "rate_limit_error"
            ),
            _ => false,
        }
    }

    /// How long the API asked to wait before the next call, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClaudeError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ClaudeError::Rejected { .. } => "ModelRequestRejected",
            ClaudeError::Unavailable { .. } | ClaudeError::Stream { .. } => "ModelUnavailable",
            ClaudeError::Transport(_) | ClaudeError::Timeout => "ModelUnreachable",
            ClaudeError::MalformedResponse(_) => "ModelResponseMalformed",
            ClaudeError::RetriesExhausted { .. } => "ModelRetriesExhausted",
            ClaudeError::Config(_) => "ModelClientMisconfigured",
        }
    }
}
