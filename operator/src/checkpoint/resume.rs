//! What a Task's status becomes when its state comes back from a snapshot, and what must be
//! dispatched again. Pure: the Task controller restores the Redis keys and applies this.
//!
//! A snapshot's status is the status last written before its Redis state was read, so every
//! subtask it shows as done has its result in the snapshot. Subtasks it shows queued or running
//! were held by agents of the old state; they are dispatched again with the same attempt (the
//! new agent continues the subtask's journal), and events the snapshot holds beyond the status
//! are folded as usual after the restore.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use maos_core::api::v1alpha1::conditions::{find_condition, reason, task as cond};
use maos_core::api::v1alpha1::{SubtaskPhase, TaskSpec, TaskStatus};
use maos_core::coord::queue::WorkKind;
use maos_core::dag::SubtaskName;

use crate::lifecycle::{PLAN, SYNTHESIZE, WorkOrder, set};

/// A status rebuilt from a snapshot, and the work to put on the queue again.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored {
    /// The status to continue from.
    pub status: TaskStatus,
    /// Subtasks that were queued or running when the snapshot was taken.
    pub redispatch: Vec<WorkOrder>,
    /// Subtasks done after the snapshot (or in flight at it), so done again.
    pub redone: Vec<String>,
}

/// The fields of `resumed` whose values would change what a Task resumed from a snapshot of
/// `taken` means: its goal, its DAG, how it is planned, and whether results are merged. The
/// pool, parallelism, budget and deadlines may change: they say how the work is done, not what.
pub fn mismatched_fields(taken: &TaskSpec, resumed: &TaskSpec) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if taken.prompt != resumed.prompt {
        fields.push("spec.prompt");
    }
    if taken.subtasks != resumed.subtasks {
        fields.push("spec.subtasks");
    }
    if taken.max_subtasks != resumed.max_subtasks {
        fields.push("spec.maxSubtasks");
    }
    if taken.synthesize != resumed.synthesize {
        fields.push("spec.synthesize");
    }
    fields
}

fn kind_of(name: &str) -> WorkKind {
    match name {
        PLAN => WorkKind::Plan,
        SYNTHESIZE => WorkKind::Synthesize,
        _ => WorkKind::Work,
    }
}

fn in_flight(status: &TaskStatus) -> Vec<WorkOrder> {
    status
        .subtasks
        .iter()
        .filter(|s| matches!(s.phase, SubtaskPhase::Queued | SubtaskPhase::Running))
        .filter_map(|s| {
            Some(WorkOrder {
                subtask: SubtaskName::new(&s.name).ok()?,
                attempt: s.attempts.unwrap_or(1).max(1),
                kind: kind_of(&s.name),
            })
        })
        .collect()
}

/// The status of a new Task that resumes from a snapshot taken of `snapshot`'s Task: its plan
/// and finished subtasks carry over; failed or cancelled subtasks start afresh; the outcome,
/// result and timestamps of the old Task do not.
pub fn resumed(
    snapshot: &TaskStatus,
    checkpoint: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Restored {
    let mut status = snapshot.clone();
    status.observed_generation = generation;
    status.result = None;
    status.result_ref = None;
    status.completed_at = None;
    status.speedup = None;
    status.last_checkpoint = None;
    status.pool_uid = None;
    status.started_at = Some(Time(now));
    // Accepted goes too: the new Task is accepted now, and its activeDeadlineSeconds counts
    // from then, not from the old Task's acceptance.
    status.conditions.retain(|c| c.type_ == cond::PLANNED);
    for subtask in &mut status.subtasks {
        if matches!(
            subtask.phase,
            SubtaskPhase::Failed | SubtaskPhase::Cancelled
        ) {
            subtask.phase = SubtaskPhase::Pending;
            subtask.attempts = None;
            subtask.agent = None;
            subtask.started_at = None;
            subtask.finished_at = None;
            subtask.message = Some(format!("resumed from Checkpoint {checkpoint}"));
        }
    }
    // The old Task's synthesis ran on the old results; with subtasks redone it must run again.
    let redo_all = status
        .subtasks
        .iter()
        .any(|s| s.name != SYNTHESIZE && s.name != PLAN && s.phase != SubtaskPhase::Succeeded);
    if redo_all {
        status.subtasks.retain(|s| s.name != SYNTHESIZE);
    }
    set(
        &mut status,
        cond::SUCCEEDED,
        "Unknown",
        reason::RESUMED,
        &format!("resumed from Checkpoint {checkpoint}"),
        generation,
        now,
    );
    set(
        &mut status,
        cond::SUSPENDED,
        "False",
        reason::RESUMED,
        "",
        generation,
        now,
    );
    let redispatch = in_flight(&status);
    let redone = redispatch.iter().map(|o| o.subtask.to_string()).collect();
    Restored {
        status,
        redispatch,
        redone,
    }
}

/// The status of a running Task whose Redis state was lost and restored from `snapshot`: it
/// goes back to what the snapshot shows (whatever finished later is done again), keeping the
/// Task's own identity, conditions other than Planned, and newest checkpoint.
pub fn recovered(current: &TaskStatus, snapshot: &TaskStatus) -> Restored {
    let mut status = snapshot.clone();
    status.observed_generation = current.observed_generation;
    status.pool_uid = current.pool_uid.clone();
    status.last_checkpoint = current.last_checkpoint.clone();
    status.conditions = current
        .conditions
        .iter()
        .filter(|c| c.type_ != cond::PLANNED)
        .cloned()
        .collect();
    if let Some(planned) = find_condition(&snapshot.conditions, cond::PLANNED) {
        status.conditions.push(planned.clone());
    }
    let redispatch = in_flight(&status);
    // Whatever had finished or was under way after the snapshot starts over.
    let mut redone: Vec<String> = current
        .subtasks
        .iter()
        .filter(|s| {
            matches!(
                s.phase,
                SubtaskPhase::Succeeded | SubtaskPhase::Running | SubtaskPhase::Queued
            )
        })
        .filter(|s| {
            !status
                .subtasks
                .iter()
                .any(|old| old.name == s.name && old.phase == SubtaskPhase::Succeeded)
        })
        .map(|s| s.name.clone())
        .collect();
    for order in &redispatch {
        let name = order.subtask.to_string();
        if !redone.contains(&name) {
            redone.push(name);
        }
    }
    Restored {
        status,
        redispatch,
        redone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> TaskSpec {
        let mut value = serde_json::json!({"prompt": "Write a report.", "poolRef": {"name": "a"}});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("spec")
    }

    #[test]
    fn a_resume_is_refused_for_a_change_of_goal_dag_plan_bound_or_synthesis_only() {
        let taken = spec(serde_json::json!({}));
        assert!(mismatched_fields(&taken, &taken).is_empty());
        let moved = spec(
            serde_json::json!({"poolRef": {"name": "b"}, "parallelism": 2,
                                             "budget": {"maxTokens": 10}}),
        );
        assert!(
            mismatched_fields(&taken, &moved).is_empty(),
            "how, not what"
        );
        let other = spec(
            serde_json::json!({"prompt": "Something else.", "synthesize": false,
                                             "maxSubtasks": 3,
                                             "subtasks": [{"name": "x", "prompt": "p"}]}),
        );
        assert_eq!(
            mismatched_fields(&taken, &other),
            [
                "spec.prompt",
                "spec.subtasks",
                "spec.maxSubtasks",
                "spec.synthesize"
            ]
        );
    }
    use crate::lifecycle::{finish_succeeded, init_conditions, is_finished};
    use maos_core::api::v1alpha1::SubtaskStatus;

    fn entry(name: &str, phase: SubtaskPhase, attempts: Option<u32>) -> SubtaskStatus {
        SubtaskStatus {
            name: name.into(),
            phase,
            depends_on: vec![],
            agent: Some("agent-1".into()),
            attempts,
            started_at: None,
            finished_at: None,
            tokens: None,
            message: None,
        }
    }

    fn status(entries: Vec<SubtaskStatus>) -> TaskStatus {
        let mut status = TaskStatus {
            subtasks: entries,
            plan_revision: Some(1),
            ..TaskStatus::default()
        };
        init_conditions(&mut status, Some(1), Timestamp::UNIX_EPOCH);
        set(
            &mut status,
            cond::PLANNED,
            "True",
            "Planned",
            "3 subtasks",
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        status
    }

    #[test]
    fn a_resumed_task_keeps_what_finished_redoes_failures_and_redispatches_what_ran() {
        let snapshot = status(vec![
            entry("plan", SubtaskPhase::Succeeded, Some(1)),
            entry("a", SubtaskPhase::Succeeded, Some(1)),
            entry("b", SubtaskPhase::Running, Some(2)),
            entry("c", SubtaskPhase::Failed, Some(3)),
        ]);
        let out = resumed(&snapshot, "ck", Some(1), Timestamp::UNIX_EPOCH);
        let phase = |n: &str| {
            out.status
                .subtasks
                .iter()
                .find(|s| s.name == n)
                .map(|s| (s.phase, s.attempts))
        };
        assert_eq!(phase("a"), Some((SubtaskPhase::Succeeded, Some(1))));
        assert_eq!(phase("b"), Some((SubtaskPhase::Running, Some(2))));
        assert_eq!(phase("c"), Some((SubtaskPhase::Pending, None)));
        assert_eq!(out.redispatch.len(), 1);
        assert_eq!(out.redispatch[0].subtask.as_str(), "b");
        assert_eq!(out.redispatch[0].attempt, 2);
        assert_eq!(out.redispatch[0].kind, WorkKind::Work);
        assert!(!is_finished(&out.status));
        assert_eq!(out.status.pool_uid, None);
        assert!(
            find_condition(&out.status.conditions, cond::ACCEPTED).is_none(),
            "the new Task's acceptance (and deadline) starts now"
        );
    }

    #[test]
    fn resuming_a_finished_task_keeps_its_synthesis_so_it_completes_at_once() {
        let mut snapshot = status(vec![
            entry("a", SubtaskPhase::Succeeded, Some(1)),
            entry("synthesize", SubtaskPhase::Succeeded, Some(1)),
        ]);
        finish_succeeded(&mut snapshot, Some(1), Timestamp::UNIX_EPOCH);
        snapshot.result = Some("old".into());
        let out = resumed(&snapshot, "ck", Some(1), Timestamp::UNIX_EPOCH);
        assert!(!is_finished(&out.status), "the new Task completes itself");
        assert_eq!(out.status.result, None);
        assert!(out.status.subtasks.iter().any(|s| s.name == "synthesize"));
        assert!(out.redispatch.is_empty());
    }

    #[test]
    fn a_failed_subtask_sends_the_synthesis_back_to_be_run_again() {
        let snapshot = status(vec![
            entry("a", SubtaskPhase::Failed, Some(3)),
            entry("synthesize", SubtaskPhase::Cancelled, None),
        ]);
        let out = resumed(&snapshot, "ck", Some(1), Timestamp::UNIX_EPOCH);
        assert!(!out.status.subtasks.iter().any(|s| s.name == "synthesize"));
    }

    #[test]
    fn a_recovered_task_goes_back_to_the_snapshot_and_names_what_is_redone() {
        let snapshot = status(vec![
            entry("a", SubtaskPhase::Succeeded, Some(1)),
            entry("b", SubtaskPhase::Running, Some(1)),
            entry("c", SubtaskPhase::Pending, None),
            entry("d", SubtaskPhase::Pending, None),
            entry("e", SubtaskPhase::Pending, None),
        ]);
        let mut current = status(vec![
            entry("a", SubtaskPhase::Succeeded, Some(1)),
            entry("b", SubtaskPhase::Succeeded, Some(1)),
            entry("c", SubtaskPhase::Succeeded, Some(1)),
            entry("d", SubtaskPhase::Running, Some(1)),
            entry("e", SubtaskPhase::Pending, None),
        ]);
        current.pool_uid = Some("pool".into());
        current.observed_generation = Some(4);
        let out = recovered(&current, &snapshot);
        assert_eq!(out.status.pool_uid.as_deref(), Some("pool"));
        assert_eq!(out.status.observed_generation, Some(4));
        assert_eq!(out.redone, ["b", "c", "d"].map(str::to_owned));
        assert_eq!(out.redispatch.len(), 1);
        assert_eq!(out.redispatch[0].subtask.as_str(), "b");
        assert_eq!(
            out.status
                .conditions
                .iter()
                .filter(|c| c.type_ == cond::PLANNED)
                .count(),
            1
        );
    }
}
