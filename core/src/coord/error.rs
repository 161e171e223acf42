//! The coordination layer's errors, and which Redis failures count as transient.
//!
//! Every Redis failure is sorted into a variant named for what went wrong, so the operator can
//! put the variant in a condition reason or a metric label and an agent can decide whether to
//! retry. Messages never contain a value, a password or a prompt.

use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::functions::is_function_missing;

/// Result of a coordination call.
pub type CoordResult<T> = Result<T, CoordError>;

/// What went wrong in a coordination call.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Redis could not be reached, or the connection dropped, and retrying did not help.
    #[error("Redis connection lost during {op}: {source}")]
    ConnectionLost {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        source: RedisError,
    },
    /// The cluster was redirecting, failing over or down (MOVED/ASK/TRYAGAIN/CLUSTERDOWN/
    /// MASTERDOWN/READONLY) for longer than the retries lasted.
    #[error("Redis cluster unavailable during {op}: {source}")]
    ClusterUnavailable {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        source: RedisError,
    },
    /// The Redis user is not allowed this command or key (NOPERM): a tenant-isolation refusal.
    #[error("Redis refused {op}: no permission for this user")]
    NoPermission {
        /// The operation that was refused.
        op: &'static str,
    },
    /// The server does not have the coordination function library (restarted empty, flushed,
    /// a new master): transient, the operator loads it (`FUNCTION LOAD`, Redis 7.0 or later).
    #[error("Redis has no MAOS function library loaded during {op} (the operator loads it)")]
    FunctionsNotLoaded {
        /// The operation that failed.
        op: &'static str,
    },
    /// The credentials were rejected.
    #[error("Redis rejected the credentials")]
    AuthenticationFailed,
    /// A shared-state value is larger than the cap; nothing was written.
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The shared-state key (a field in the task's hash).
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// A shared-state key is empty or longer than the cap.
    #[error("shared-state key must be 1 to {limit} bytes, not {size}")]
    InvalidStateKey {
        /// The key's size in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// An identifier used to build Redis keys (a uid, agent name) is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidName {
        /// What kind of identifier.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The connection settings contradict each other (TLS files for a `redis://` URL, say).
    #[error("invalid Redis configuration: {0}")]
    InvalidConfig(String),
    /// A rate-limit request asks for more than a bucket can ever hold, so waiting cannot help.
    #[error("rate-limit request for {requested} {bucket} exceeds the bucket's capacity {capacity}")]
    RateRequestTooLarge {
        /// Which bucket.
        bucket: &'static str,
        /// What was asked for.
        requested: u64,
        /// The bucket's capacity.
        capacity: u64,
    },
    /// Redis answered in a shape the protocol does not allow (a corrupt entry, a wrong type).
    #[error("unexpected Redis data in {op}: {detail}")]
    Protocol {
        /// The operation that read it.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Any other error Redis reported.
    #[error("Redis error during {op}: {source}")]
    Redis {
        /// The operation that failed.
        op: &'static str,
        /// The underlying error.
        source: RedisError,
    },
}

impl CoordError {
    /// Sorts a Redis error from operation `op` into a variant.
    pub fn from_redis(op: &'static str, source: RedisError) -> Self {
        match source.kind() {
            ErrorKind::Server(ServerErrorKind::NoPerm) => Self::NoPermission { op },
            ErrorKind::AuthenticationFailed => Self::AuthenticationFailed,
            ErrorKind::Server(
                ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::CrossSlot,
            )
            | ErrorKind::ClusterConnectionNotFound => Self::ClusterUnavailable { op, source },
            _ if is_connection_error(&source) => Self::ConnectionLost { op, source },
            _ if is_function_missing(&source) => Self::FunctionsNotLoaded { op },
            // A server error whose code redis-rs does not know (e.g. WRONGPASS arrives as an
            // extension error on some paths) is still recognisable by its code.
            _ if source.code() == Some("WRONGPASS") => Self::AuthenticationFailed,
            _ if source.code() == Some("NOPERM") => Self::NoPermission { op },
            _ => Self::Redis { op, source },
        }
    }

    /// A short, stable name of the variant, for condition reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConnectionLost { .. } => "ConnectionLost",
            Self::ClusterUnavailable { .. } => "ClusterUnavailable",
            Self::NoPermission { .. } => "NoPermission",
            Self::FunctionsNotLoaded { .. } => "FunctionsNotLoaded",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::ValueTooLarge { .. } => "ValueTooLarge",
            Self::InvalidStateKey { .. } => "InvalidStateKey",
            Self::InvalidName { .. } => "InvalidName",
            Self::InvalidConfig(_) => "InvalidConfig",
            Self::RateRequestTooLarge { .. } => "RateRequestTooLarge",
            Self::Protocol { .. } => "Protocol",
            Self::Redis { .. } => "RedisError",
        }
    }

    /// A [`CoordError::Protocol`] for data of the wrong shape read or written during `op`.
    pub fn protocol(op: &'static str, detail: impl Into<String>) -> Self {
        Self::Protocol {
            op,
            detail: detail.into(),
        }
    }
}

fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// Whether a server error says the slot is served elsewhere now (a redirection, a replica that
/// was a master), or not served at the moment (failover, loading).
pub(crate) fn is_topology(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::BusyLoading
    )
}

/// Whether retrying the same call after a short wait may succeed: lost connections, timeouts,
/// redirections and failover states, and a function library not loaded yet (the operator
/// loads it). NOPERM, wrong types and script errors are permanent.
pub(crate) fn is_transient(err: &RedisError) -> bool {
    is_transient_link(err) || is_function_missing(err)
}

/// Whether retrying may succeed because the link or the cluster recovers: [`is_transient`]
/// without the missing function library (which only the operator's loading cures).
pub(crate) fn is_transient_link(err: &RedisError) -> bool {
    matches!(err.kind(), ErrorKind::Server(kind) if is_topology(kind))
        || err.kind() == ErrorKind::ClusterConnectionNotFound
        || (is_connection_error(err)
            && !matches!(
                err.kind(),
                ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
            ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> RedisError {
        server_error_with(code, "detail")
    }

    fn server_error_with(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
    }

    #[test]
    fn noperm_is_a_permanent_permission_error() {
        let err = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "no permissions"));
        assert!(!is_transient(&err));
        assert!(matches!(
            CoordError::from_redis("get", err),
            CoordError::NoPermission { op: "get" }
        ));
    }

    #[test]
    fn failover_states_are_transient() {
        for kind in [
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ReadOnly,
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
        ] {
            let err = RedisError::from((ErrorKind::Server(kind), "failover"));
            assert!(is_transient(&err), "{kind:?}");
        }
    }

    #[test]
    fn dropped_connection_is_transient_and_typed() {
        let err = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_transient(&err));
        assert!(matches!(
            CoordError::from_redis("claim", err),
            CoordError::ConnectionLost { op: "claim", .. }
        ));
    }

    #[test]
    fn missing_function_library_is_transient_and_typed() {
        let err = server_error_with("ERR", "Function not found");
        assert!(is_transient(&err));
        assert!(matches!(
            CoordError::from_redis("heartbeat", err),
            CoordError::FunctionsNotLoaded { op: "heartbeat" }
        ));
    }

    #[test]
    fn unknown_server_error_is_permanent() {
        let err = server_error("WRONGTYPE");
        assert!(!is_transient(&err));
        assert_eq!(CoordError::from_redis("get", err).reason(), "RedisError");
    }
}
