//! Condition types and reasons of the MAOS resources, and the one way to update a condition list.
//!
//! Reasons are CamelCase and double as the labels of error metrics; messages are short and
//! fixed in form, never a prompt, a model answer or a secret.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of a Task.
pub mod task {
    /// The spec is valid and the Task is registered with its pool.
    pub const ACCEPTED: &str = "Accepted";
    /// A valid DAG of subtasks exists (planned or manual).
    pub const PLANNED: &str = "Planned";
    /// Dispatch is paused by `spec.suspend`.
    pub const SUSPENDED: &str = "Suspended";
    /// The Task finished with a result (True) or without one (False); Unknown while it runs.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Its pool can run agents (True), or cannot (False, reason PoolNotReady, naming the pool's
    /// problem); False with reason Finished once the Task is done.
    pub const PROGRESSING: &str = "Progressing";
}

/// Condition types of an AgentPool.
pub mod pool {
    /// At least `replicas.min` agents beat and the pool can take work.
    pub const READY: &str = "Ready";
    /// The agent count is moving towards a new target.
    pub const SCALING: &str = "Scaling";
    /// Agents are being replaced or cannot be started.
    pub const DEGRADED: &str = "Degraded";
    /// Some agents cannot reach some of the pool's MCP servers: their tools are not offered.
    /// Present only on pools with MCP servers.
    pub const TOOLS_DEGRADED: &str = "ToolsDegraded";
}

/// Condition types of a Checkpoint.
pub mod checkpoint {
    /// The snapshot is stored and verified (True) or could not be (False).
    pub const SUCCEEDED: &str = "Succeeded";
}

/// Reasons used in MAOS conditions.
pub mod reason {
    /// Not yet known: set on the first reconcile.
    pub const RECONCILING: &str = "Reconciling";
    /// The spec breaks a rule the schema could not check.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The Task's AgentPool does not exist.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// The Task names MCP tools (`spec.tools`) its pool does not offer; it waits for the pool.
    pub const TOOLS_UNAVAILABLE: &str = "ToolsUnavailable";
    /// No plan was accepted: the operator rejected the planner's DAG twice, or `submit_plan`
    /// refused it on every attempt.
    pub const PLAN_REJECTED: &str = "PlanRejected";
    /// A subtask failed after its last retry.
    pub const SUBTASK_FAILED: &str = "SubtaskFailed";
    /// `activeDeadlineSeconds` passed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// The token or cost budget is spent.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    /// `spec.shutdown` stopped the Task.
    pub const CANCELLED: &str = "Cancelled";
    /// The Task's state in Redis vanished and no checkpoint could restore it.
    pub const STATE_LOST: &str = "StateLost";
    /// A Task's lost Redis state was restored from a checkpoint (an Event reason).
    pub const STATE_RESTORED: &str = "StateRestored";
    /// A Task started from a checkpoint, or left a suspension (an Event reason).
    pub const RESUMED: &str = "Resumed";
    /// The checkpoint a Task resumes from does not exist (yet).
    pub const CHECKPOINT_NOT_FOUND: &str = "CheckpointNotFound";
    /// The checkpoint a Task resumes from failed, so there is nothing to resume from.
    pub const CHECKPOINT_FAILED: &str = "CheckpointFailed";
    /// A stored checkpoint's sha256 differs from the one recorded; nothing was restored.
    pub const CHECKPOINT_CORRUPT: &str = "CheckpointCorrupt";
    /// A Checkpoint's Task does not exist.
    pub const TASK_NOT_FOUND: &str = "TaskNotFound";
    /// A Checkpoint was stored.
    pub const SAVED: &str = "Saved";
    /// The Task finished with a result.
    pub const COMPLETED: &str = "Completed";
    /// The API-key Secret of a pool is missing.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The Task's pool was deleted while it ran.
    pub const POOL_DELETED: &str = "PoolDeleted";
    /// The Task's pool cannot run agents.
    pub const POOL_NOT_READY: &str = "PoolNotReady";
    /// The Task's pool can run agents.
    pub const POOL_READY: &str = "PoolReady";
    /// A Task's spec differs in meaning from that of the Task its Checkpoint was taken of.
    pub const CHECKPOINT_MISMATCH: &str = "CheckpointMismatch";
    /// The pool's API key is the example Secret's placeholder.
    pub const API_KEY_PLACEHOLDER: &str = "APIKeyPlaceholder";
    /// The API server refused to create an agent pod (RBAC, a quota, admission); the
    /// message is its answer.
    pub const FAILED_CREATE: &str = "FailedCreate";
    /// The Task finished: nothing more progresses.
    pub const FINISHED: &str = "Finished";
    /// `spec.suspend` holds the Task's dispatch (the Suspended condition and its Event).
    pub const SUSPENDED: &str = "Suspended";
}

/// Sets one condition in a list, keyed by type, as Kubernetes' `meta.SetStatusCondition` does:
/// `lastTransitionTime` changes only when the status changes. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(existing) => {
            let transition_time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let updated = Condition {
                last_transition_time: transition_time,
                ..new
            };
            if *existing == updated {
                false
            } else {
                *existing = updated;
                true
            }
        }
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Builds a condition; `status` is "True", "False" or "Unknown".
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn new_condition_is_appended() {
        let mut list = Vec::new();
        let changed = set_condition(
            &mut list,
            condition(task::ACCEPTED, "True", "Valid", "ok", Some(1), at(10)),
        );
        assert!(changed);
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_message() {
        let mut list = vec![condition(
            task::SUCCEEDED,
            "Unknown",
            reason::RECONCILING,
            "a",
            Some(1),
            at(10),
        )];
        let changed = set_condition(
            &mut list,
            condition(
                task::SUCCEEDED,
                "Unknown",
                reason::RECONCILING,
                "b",
                Some(2),
                at(20),
            ),
        );
        assert!(changed);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].message, "b");
        assert_eq!(list[0].observed_generation, Some(2));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut list = vec![condition(
            task::SUCCEEDED,
            "Unknown",
            reason::RECONCILING,
            "a",
            Some(1),
            at(10),
        )];
        set_condition(
            &mut list,
            condition(
                task::SUCCEEDED,
                "False",
                reason::SUBTASK_FAILED,
                "x",
                Some(1),
                at(20),
            ),
        );
        assert_eq!(list[0].last_transition_time, at(20));
        assert_eq!(list[0].status, "False");
    }

    #[test]
    fn identical_condition_reports_no_change() {
        let mut list = vec![condition(
            pool::READY,
            "True",
            "AgentsReady",
            "1/1",
            Some(3),
            at(10),
        )];
        let changed = set_condition(
            &mut list,
            condition(pool::READY, "True", "AgentsReady", "1/1", Some(3), at(99)),
        );
        assert!(!changed);
        assert_eq!(list[0].last_transition_time, at(10));
    }
}
