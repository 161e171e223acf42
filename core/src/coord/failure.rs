//! Why a subtask attempt ended without a result: the reasons agents put at the front of a
//! `SubtaskFailed` event (`"<Reason>: <detail>"`) and the operator reads back, so the two can
//! never disagree on which failures are worth another attempt.

/// Why an attempt failed. The CamelCase name is the prefix of the event's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The task's token or cost budget is spent.
    BudgetExceeded,
    /// `maxTurns` model calls did not finish it.
    MaxTurnsExceeded,
    /// The work item's deadline passed.
    DeadlineExceeded,
    /// The task was cancelled.
    Cancelled,
    /// The model API kept failing with transient errors, or answered past `max_tokens`.
    ModelError,
    /// The model ended without the answer its item needs (no plan, a refusal).
    NoAnswer,
    /// The planner's plan was refused (too many subtasks, a cycle, ...).
    PlanRejected,
    /// The Claude API refused the API key (401, 403), or the key is a placeholder.
    ModelAuthFailed,
    /// The Claude API does not know the model (404).
    ModelNotFound,
    /// The Claude API refused the request as invalid (400, 413, ...).
    ModelRequestRejected,
}

impl FailReason {
    /// Every reason, for parsing.
    pub const ALL: [FailReason; 10] = [
        Self::BudgetExceeded,
        Self::MaxTurnsExceeded,
        Self::DeadlineExceeded,
        Self::Cancelled,
        Self::ModelError,
        Self::NoAnswer,
        Self::PlanRejected,
        Self::ModelAuthFailed,
        Self::ModelNotFound,
        Self::ModelRequestRejected,
    ];

    /// The CamelCase reason, as conditions and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BudgetExceeded => "BudgetExceeded",
            Self::MaxTurnsExceeded => "MaxTurnsExceeded",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Cancelled => "Cancelled",
            Self::ModelError => "ModelError",
            Self::NoAnswer => "NoAnswer",
            Self::PlanRejected => "PlanRejected",
            Self::ModelAuthFailed => "ModelAuthFailed",
            Self::ModelNotFound => "ModelNotFound",
            Self::ModelRequestRejected => "ModelRequestRejected",
        }
    }

    /// Whether another attempt cannot succeed where this one failed: the same key, model or
    /// request would be refused again, so the subtask fails at once instead of retrying.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Self::ModelAuthFailed | Self::ModelNotFound | Self::ModelRequestRejected
        )
    }

    /// The reason at the front of an event's `"<Reason>: <detail>"` text, if it is one of ours.
    pub fn of_message(message: &str) -> Option<Self> {
        let head = message.split(':').next().unwrap_or_default().trim();
        Self::ALL.into_iter().find(|r| r.as_str() == head)
    }

    /// The event text `"<Reason>: <detail>"`.
    pub fn with_detail(self, detail: &str) -> String {
        format!("{}: {detail}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_reads_back_from_its_event_text() {
        for reason in FailReason::ALL {
            assert_eq!(
                FailReason::of_message(&reason.with_detail("why")),
                Some(reason)
            );
        }
        assert_eq!(FailReason::of_message("Nonsense: x"), None);
        assert_eq!(FailReason::of_message(""), None);
    }

    #[test]
    fn only_refusals_of_key_model_or_request_are_permanent() {
        let permanent: Vec<_> = FailReason::ALL
            .into_iter()
            .filter(|r| r.is_permanent())
            .collect();
        assert_eq!(
            permanent,
            [
                FailReason::ModelAuthFailed,
                FailReason::ModelNotFound,
                FailReason::ModelRequestRejected
            ]
        );
    }
}
