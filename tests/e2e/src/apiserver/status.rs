//! Kubernetes `Status` errors: every refusal the API server makes, with the HTTP code and
//! `reason` a real kube-apiserver would use, so clients branch on them the same way.

use serde_json::{Value, json};

/// One cause of an `Invalid` error: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// The field path, e.g. `spec.parallelism`.
    pub field: String,
    /// A `FieldValue*` reason, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The human message without the field prefix.
    pub message: String,
}

/// A refusal, rendered as a `Status` object by [`ApiError::to_status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 404: the object (or route) does not exist.
    #[error("{message}")]
    NotFound {
        /// `Status.details.kind`, the resource plural.
        kind: String,
        /// `Status.details.name`.
        name: String,
        /// The full message.
        message: String,
    },
    /// 409: create of a name that exists.
    #[error("{message}")]
    AlreadyExists {
        /// The resource plural.
        kind: String,
        /// The object name.
        name: String,
        /// The full message.
        message: String,
    },
    /// 409: optimistic-concurrency failure (stale resourceVersion or uid precondition).
    #[error("{message}")]
    Conflict {
        /// The resource plural.
        kind: String,
        /// The object name.
        name: String,
        /// The full message.
        message: String,
    },
    /// 409: a server-side apply would change fields other managers own.
    #[error("{message}")]
    ApplyConflict {
        /// The full message listing managers and fields.
        message: String,
        /// Each conflicting field (structured-merge-diff path) and whose it is.
        causes: Vec<(String, String)>,
    },
    /// 422: the object breaks its schema or the API's rules.
    #[error("{message}")]
    Invalid {
        /// The API group of the kind (`Status.details.group`), empty for the core group.
        group: String,
        /// The kind, e.g. `Task`.
        kind: String,
        /// The object name.
        name: String,
        /// Every failing field.
        causes: Vec<FieldCause>,
        /// The full message naming the fields.
        message: String,
    },
    /// 400: the request cannot be decoded or is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 403: the request is understood but not allowed (RBAC said no, or it is never allowed,
    /// e.g. deleting `default`).
    #[error("{message}")]
    Forbidden {
        /// `Status.details.group`.
        group: String,
        /// `Status.details.kind`, the resource plural.
        kind: String,
        /// `Status.details.name`.
        name: String,
        /// The full message.
        message: String,
    },
    /// 401: missing or wrong bearer token.
    #[error("Unauthorized")]
    Unauthorized,
    /// 406: the client accepts no representation we can produce.
    #[error("{0}")]
    NotAcceptable(String),
    /// 415: the request body's content type is not supported for this verb.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410: the requested resourceVersion is older than the retained watch history.
    #[error("{0}")]
    Gone(String),
    /// 429: the request would break a limit (an eviction a disruption budget forbids).
    #[error("{message}")]
    TooManyRequests {
        /// The full message.
        message: String,
        /// `details.causes[0].reason`, e.g. `DisruptionBudget`.
        cause_reason: &'static str,
        /// `details.causes[0].message`.
        cause: String,
        /// `details.retryAfterSeconds` and the `Retry-After` header; 0 for none.
        retry_after_seconds: u32,
    },
    /// 500: a bug in the testbed; reported rather than panicking.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A `NotFound` for `resource` (plural, optionally `plural.group`) named `name`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            kind: resource.to_string(),
            name: name.to_string(),
            message: format!("{resource} \"{name}\" not found"),
        }
    }

    /// An `AlreadyExists` for `resource` named `name`.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        ApiError::AlreadyExists {
            kind: resource.to_string(),
            name: name.to_string(),
            message: format!("{resource} \"{name}\" already exists"),
        }
    }

    /// The `Conflict` kube-apiserver returns for a stale resourceVersion.
    pub fn stale(resource: &str, name: &str) -> Self {
        ApiError::Conflict {
            kind: resource.to_string(),
            name: name.to_string(),
            message: format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        }
    }

    /// An `Invalid` listing `causes`, with kube-apiserver's message shape.
    pub fn invalid(kind: &str, name: &str, causes: Vec<FieldCause>) -> Self {
        let details = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>();
        let joined = if details.len() == 1 {
            details[0].clone()
        } else {
            format!("[{}]", details.join(", "))
        };
        ApiError::Invalid {
            group: String::new(),
            kind: kind.to_string(),
            name: name.to_string(),
            message: format!("{kind} \"{name}\" is invalid: {joined}"),
            causes,
        }
    }

    /// An `Invalid` about a kind of API group `group`, named `Kind.group` in the message as
    /// kube-apiserver names it; other errors, and kinds already qualified, are unchanged.
    pub fn in_group(self, group: &str) -> Self {
        match self {
            ApiError::Invalid {
                group: current,
                kind,
                name,
                causes,
                message,
            } if current.is_empty() && !group.is_empty() => {
                let unqualified = format!("{kind} \"{name}\" is invalid");
                let message = match message.strip_prefix(&unqualified) {
                    Some(rest) => format!("{kind}.{group} \"{name}\" is invalid{rest}"),
                    None => message,
                };
                ApiError::Invalid {
                    group: group.to_string(),
                    kind,
                    name,
                    causes,
                    message,
                }
            }
            other => other,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotAcceptable(_) => 406,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Gone(_) => 410,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Gone(_) => "Expired",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `meta.k8s.io/v1` `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { kind, name, .. }
            | ApiError::AlreadyExists { kind, name, .. }
            | ApiError::Conflict { kind, name, .. } => {
                let (plural, group) = kind.split_once('.').unwrap_or((kind, ""));
                Some(json!({"name": name, "group": group, "kind": plural}))
            }
            ApiError::TooManyRequests {
                cause_reason,
                cause,
                retry_after_seconds,
                ..
            } => {
                let mut details = json!({"causes": [{"reason": cause_reason, "message": cause}]});
                if *retry_after_seconds > 0 {
                    details["retryAfterSeconds"] = json!(retry_after_seconds);
                }
                Some(details)
            }
            ApiError::ApplyConflict { causes, .. } => Some(json!({
                "causes": causes.iter().map(|(field, message)| json!({
                    "reason": "FieldManagerConflict",
                    "message": message,
                    "field": field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::Forbidden {
                group, kind, name, ..
            } => Some(json!({"name": name, "group": group, "kind": kind})),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
                ..
            } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason,
                    "message": c.message,
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_update_is_a_409_conflict_status() {
        let status = ApiError::stale("tasks.maos.dev", "x").to_status();
        assert_eq!(status["code"], 409);
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(status["details"]["group"], "maos.dev");
        assert_eq!(status["details"]["kind"], "tasks");
    }

    #[test]
    fn invalid_status_names_every_field_in_message_and_causes() {
        let err = ApiError::invalid(
            "Task",
            "t",
            vec![
                FieldCause {
                    field: "spec.a".into(),
                    reason: "FieldValueInvalid",
                    message: "bad".into(),
                },
                FieldCause {
                    field: "spec.b".into(),
                    reason: "FieldValueRequired",
                    message: "Required value".into(),
                },
            ],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "Task \"t\" is invalid: [spec.a: bad, spec.b: Required value]"
        );
        assert_eq!(status["details"]["causes"][1]["field"], "spec.b");
    }
}
