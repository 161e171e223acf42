//! The Event a Task's phase change publishes: what it says ([`phase_note`], pure), then the
//! log line and the Event.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use maos_core::api::v1alpha1::conditions::{find_condition, reason, task as cond};
use maos_core::api::v1alpha1::{Task, TaskPhase, TaskStatus};

use super::super::Context;
use crate::lifecycle::{PLAN, SYNTHESIZE};

/// What a phase change says: the Event's type, reason and note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PhaseNote {
    /// Normal, or Warning for a Task that failed or cannot go on.
    pub(super) type_: EventType,
    /// The Event's CamelCase reason.
    pub(super) reason: String,
    /// The Event's note.
    pub(super) note: String,
}

/// Publishes the Event (and logs) that the Task went `from` a phase to `phase`.
pub(super) async fn phase_event(
    task: &Task,
    ctx: &Context,
    status: &TaskStatus,
    from: Option<TaskPhase>,
    phase: TaskPhase,
) {
    let PhaseNote {
        type_,
        reason,
        note,
    } = phase_note(task, status, from, phase);
    // Names and reasons only: condition messages never hold a prompt, an answer or a secret.
    tracing::info!(
        task = %task.name_any(),
        namespace = %task.namespace().unwrap_or_default(),
        from = ?from,
        phase = ?phase,
        reason = %reason,
        "Task phase changed"
    );
    ctx.event(task, type_, &reason, "Reconcile", note).await;
}

/// What the Event of the Task's change `from` a phase to `phase` says, from its status.
pub(super) fn phase_note(
    task: &Task,
    status: &TaskStatus,
    from: Option<TaskPhase>,
    phase: TaskPhase,
) -> PhaseNote {
    let succeeded = find_condition(&status.conditions, cond::SUCCEEDED);
    let (type_, reason, note) = match phase {
        TaskPhase::Cancelled => (
            EventType::Normal,
            reason::CANCELLED.to_owned(),
            succeeded.map_or(String::new(), |c| c.message.clone()),
        ),
        TaskPhase::Suspended => (
            EventType::Normal,
            reason::SUSPENDED.to_owned(),
            "spec.suspend is true: no new dispatch; running subtasks finish".to_owned(),
        ),
        TaskPhase::Failed => (
            EventType::Warning,
            succeeded.map_or("Failed".to_owned(), |c| c.reason.clone()),
            succeeded.map_or(String::new(), |c| c.message.clone()),
        ),
        TaskPhase::Succeeded => (
            EventType::Normal,
            "Succeeded".to_owned(),
            format!(
                "{} subtask(s) succeeded; result in ConfigMap {}-result",
                status
                    .subtasks
                    .iter()
                    .filter(|s| s.name != PLAN && s.name != SYNTHESIZE)
                    .count(),
                task.name_any()
            ),
        ),
        TaskPhase::Blocked => (
            EventType::Warning,
            reason::POOL_NOT_READY.to_owned(),
            find_condition(&status.conditions, cond::PROGRESSING)
                .map_or(String::new(), |c| c.message.clone()),
        ),
        TaskPhase::Pending => {
            let accepted = find_condition(&status.conditions, cond::ACCEPTED);
            (
                EventType::Warning,
                accepted.map_or("Pending".to_owned(), |c| c.reason.clone()),
                accepted.map_or(String::new(), |c| c.message.clone()),
            )
        }
        // Out of a suspension into a live phase, as a Job reports it (a finished one says how
        // it finished above).
        other if from == Some(TaskPhase::Suspended) => (
            EventType::Normal,
            reason::RESUMED.to_owned(),
            format!("spec.suspend is false: dispatch resumed; Task is {other:?}"),
        ),
        other if from == Some(TaskPhase::Blocked) => (
            EventType::Normal,
            reason::POOL_READY.to_owned(),
            format!(
                "AgentPool {} can run agents again; Task is {other:?}",
                task.spec.pool_ref.name
            ),
        ),
        other => (
            EventType::Normal,
            format!("{other:?}"),
            format!("Task is {other:?}"),
        ),
    };
    PhaseNote {
        type_,
        reason,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use maos_core::api::v1alpha1::{SubtaskPhase, SubtaskStatus};

    use crate::lifecycle::{self, Refusal};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).expect("valid")
    }

    fn task() -> Task {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "maos.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "compare", "namespace": "default"},
            "spec": {"prompt": "Compare vector databases.", "poolRef": {"name": "default"}},
        }))
        .expect("task")
    }

    fn status() -> TaskStatus {
        let mut status = TaskStatus::default();
        lifecycle::init_conditions(&mut status, Some(1), at(0));
        status
    }

    fn succeeded(name: &str) -> SubtaskStatus {
        SubtaskStatus {
            name: name.to_owned(),
            phase: SubtaskPhase::Succeeded,
            depends_on: vec![],
            agent: None,
            attempts: Some(1),
            started_at: None,
            finished_at: Some(Time(at(1))),
            tokens: None,
            message: None,
        }
    }

    fn note(type_: EventType, reason: &str, note: &str) -> PhaseNote {
        PhaseNote {
            type_,
            reason: reason.to_owned(),
            note: note.to_owned(),
        }
    }

    #[test]
    fn a_failed_task_warns_with_the_reason_and_message_it_failed_with() {
        let mut status = status();
        lifecycle::finish_failed(
            &mut status,
            "BudgetExceeded",
            "the token budget (10) is spent",
            Some(1),
            at(1),
        );
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Running),
                TaskPhase::Failed
            ),
            note(
                EventType::Warning,
                "BudgetExceeded",
                "the token budget (10) is spent"
            )
        );
    }

    #[test]
    fn a_succeeded_task_counts_its_work_subtasks_and_names_its_result_configmap() {
        let mut status = status();
        status.subtasks = ["plan", "a", "b", "synthesize"]
            .into_iter()
            .map(succeeded)
            .collect();
        lifecycle::finish_succeeded(&mut status, Some(1), at(2));
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Synthesizing),
                TaskPhase::Succeeded
            ),
            note(
                EventType::Normal,
                "Succeeded",
                "2 subtask(s) succeeded; result in ConfigMap compare-result"
            )
        );
    }

    #[test]
    fn a_cancelled_task_is_a_normal_event_not_a_failure() {
        let mut status = status();
        lifecycle::finish_failed(
            &mut status,
            reason::CANCELLED,
            "cancelled by the user",
            Some(1),
            at(1),
        );
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Running),
                TaskPhase::Cancelled
            ),
            note(
                EventType::Normal,
                reason::CANCELLED,
                "cancelled by the user"
            )
        );
    }

    #[test]
    fn suspending_and_resuming_say_what_spec_suspend_does() {
        let status = status();
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Running),
                TaskPhase::Suspended
            ),
            note(
                EventType::Normal,
                reason::SUSPENDED,
                "spec.suspend is true: no new dispatch; running subtasks finish"
            )
        );
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Suspended),
                TaskPhase::Running
            ),
            note(
                EventType::Normal,
                reason::RESUMED,
                "spec.suspend is false: dispatch resumed; Task is Running"
            )
        );
    }

    #[test]
    fn a_blocked_task_warns_with_why_its_pool_cannot_run_agents_and_says_when_it_can_again() {
        let mut status = status();
        lifecycle::set(
            &mut status,
            cond::PROGRESSING,
            "False",
            reason::POOL_NOT_READY,
            "AgentPool default cannot run agents: NoApiKey: Secret anthropic not found",
            Some(1),
            at(1),
        );
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Running),
                TaskPhase::Blocked
            ),
            note(
                EventType::Warning,
                reason::POOL_NOT_READY,
                "AgentPool default cannot run agents: NoApiKey: Secret anthropic not found"
            )
        );
        assert_eq!(
            phase_note(
                &task(),
                &status,
                Some(TaskPhase::Blocked),
                TaskPhase::Running
            ),
            note(
                EventType::Normal,
                reason::POOL_READY,
                "AgentPool default can run agents again; Task is Running"
            )
        );
    }

    #[test]
    fn a_pending_task_warns_with_why_it_is_not_accepted() {
        let mut status = status();
        lifecycle::refuse(
            &mut status,
            reason::POOL_NOT_FOUND,
            "AgentPool default not found in namespace default; waiting for it",
            Refusal::Wait,
            Some(1),
            at(1),
        );
        assert_eq!(
            phase_note(&task(), &status, None, TaskPhase::Pending),
            note(
                EventType::Warning,
                reason::POOL_NOT_FOUND,
                "AgentPool default not found in namespace default; waiting for it"
            )
        );
    }

    #[test]
    fn any_other_phase_is_named_as_it_is() {
        assert_eq!(
            phase_note(
                &task(),
                &status(),
                Some(TaskPhase::Pending),
                TaskPhase::Planning
            ),
            note(EventType::Normal, "Planning", "Task is Planning")
        );
    }
}
