//! Writing a Task's working status to the API server (server-side apply, one field manager),
//! at most once per status interval unless the phase changed or a write is forced; acking the
//! events a written status folded, and now and then trimming the event stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use maos_core::api::v1alpha1::{Task, TaskPhase, TaskStatus};
use maos_core::meta::FIELD_MANAGER;

use super::super::{Context, Error};
use super::TaskMemory;
use super::phase_event::phase_event;
use crate::lifecycle::phase_of;

/// Events acked between two trims of a Task's event stream: a trim is one short script, and
/// a stream this much longer than needed is a few tens of KiB.
const EVENTS_PER_TRIM: usize = 100;

/// Whether the working status goes out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// It is what was written last: nothing to write (the events it folded can be acked).
    Unchanged,
    /// It changed, but not enough to write before the status interval passes.
    Later,
    /// Write it.
    Now,
}

/// What happens to `status` (its phase already set), given the status `written` last, whether
/// someone else `overwritten` the API server's copy, a `force`d write, and whether the status
/// interval passed since the last write (`interval_passed`).
fn decide_write(
    status: &TaskStatus,
    written: Option<&TaskStatus>,
    overwritten: bool,
    force: bool,
    interval_passed: bool,
) -> Write {
    if written == Some(status) && !overwritten {
        return Write::Unchanged;
    }
    let phase_changed = written.and_then(|s| s.phase) != status.phase;
    if force || interval_passed || overwritten || phase_changed {
        Write::Now
    } else {
        Write::Later
    }
}

/// Writes the status if the phase changed, `force` is set, or the status interval passed;
/// acks the events it folded once written. Returns whether it wrote.
pub(super) async fn write_status(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    force: bool,
) -> Result<bool, Error> {
    let phase = phase_of(&memory.status);
    memory.status.phase = Some(phase);
    let interval_passed = memory
        .written_at
        .is_none_or(|at| at.elapsed() >= ctx.settings.status_interval);
    match decide_write(
        &memory.status,
        memory.written.as_ref(),
        memory.overwritten,
        force,
        interval_passed,
    ) {
        Write::Unchanged => {
            ack(memory, task, ctx).await;
            return Ok(false);
        }
        Write::Later => return Ok(false),
        Write::Now => {}
    }
    let written_phase = memory.written.as_ref().and_then(|s| s.phase);
    let patch = serde_json::json!({
        "apiVersion": Task::api_version(&()),
        "kind": Task::kind(&()),
        "status": memory.status,
    });
    api.patch_status(
        &task.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    memory.previous = memory.written.replace(memory.status.clone());
    memory.written_at = Some(Instant::now());
    memory.overwritten = false;
    ack(memory, task, ctx).await;
    if written_phase != Some(phase) || before != phase {
        phase_event(task, ctx, &memory.status, written_phase, phase).await;
    }
    Ok(true)
}

/// How long ago the status was last written, when the working status differs from it and this
/// reconcile did not write it (`wrote`): it goes out once the status interval has passed.
pub(super) fn unwritten_since(memory: &TaskMemory, wrote: bool) -> Option<Duration> {
    (!wrote && memory.written.as_ref() != Some(&memory.status))
        .then(|| memory.written_at.map_or(Duration::ZERO, |at| at.elapsed()))
}

/// Whether the API server's status is neither of the last two this process wrote, in what a
/// user sees (phase, progress, result, conditions, subtask phases): someone else wrote it, and
/// the operator, which owns status, writes its own back. Timestamps are left out: the API server
/// may store them at another precision than they were sent.
pub(super) fn overwritten_by_someone_else(
    cached: Option<&TaskStatus>,
    memory: &TaskMemory,
) -> bool {
    let (Some(cached), Some(written)) = (cached, memory.written.as_ref()) else {
        return false;
    };
    let view = |status: &TaskStatus| {
        (
            status.phase,
            status.progress.clone(),
            status.result.clone(),
            status
                .conditions
                .iter()
                .map(|c| {
                    (
                        c.type_.clone(),
                        c.status.clone(),
                        c.reason.clone(),
                        c.message.clone(),
                    )
                })
                .collect::<Vec<_>>(),
            status
                .subtasks
                .iter()
                .map(|s| (s.name.clone(), s.phase, s.attempts))
                .collect::<Vec<_>>(),
        )
    };
    let seen = view(cached);
    seen != view(written) && memory.previous.as_ref().is_none_or(|p| seen != view(p))
}

/// Acks the events the written status folded, and now and then trims the event stream of
/// what every consumer group has acked, so a long-running Task's stream stays bounded.
async fn ack(memory: &mut TaskMemory, task: &Task, ctx: &Context) {
    if memory.unacked.is_empty() {
        return;
    }
    let Some(consumer) = &memory.consumer else {
        return;
    };
    match consumer.ack(&memory.unacked).await {
        Ok(()) => {
            memory.acked_since_trim += memory.unacked.len();
            memory.unacked.clear();
        }
        // Redelivered later and skipped by position: harmless.
        Err(err) => {
            tracing::warn!(task = %task.name_any(), error = %err, "acking folded events failed");
            return;
        }
    }
    // Not while a Checkpoint reads the Task: its snapshot pairs the status it read with the
    // events after it, and those may be acked (and would be trimmed) by then.
    if memory.acked_since_trim < EVENTS_PER_TRIM
        || ctx.checkpoint_reading(&task.namespace().unwrap_or_default(), &task.name_any())
    {
        return;
    }
    match consumer.log().trim_consumed().await {
        Ok(_) => memory.acked_since_trim = 0,
        // Tried again after the next ack; the stream is only longer meanwhile.
        Err(err) => {
            tracing::warn!(task = %task.name_any(), error = %err, "trimming the event stream failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use maos_core::api::v1alpha1::conditions::{condition, set_condition};

    fn in_phase(phase: TaskPhase, progress: &str) -> TaskStatus {
        TaskStatus {
            phase: Some(phase),
            progress: Some(progress.to_owned()),
            ..TaskStatus::default()
        }
    }

    fn wrote(last: TaskStatus, before: Option<TaskStatus>) -> TaskMemory {
        TaskMemory {
            status: last.clone(),
            written: Some(last),
            previous: before,
            ..TaskMemory::default()
        }
    }

    #[test]
    fn a_status_as_written_is_not_written_again() {
        let status = in_phase(TaskPhase::Running, "1/2");
        assert_eq!(
            decide_write(&status, Some(&status), false, true, true),
            Write::Unchanged,
            "not even when forced"
        );
    }

    #[test]
    fn a_status_as_written_is_written_back_when_someone_else_overwrote_it() {
        let status = in_phase(TaskPhase::Running, "1/2");
        assert_eq!(
            decide_write(&status, Some(&status), true, false, false),
            Write::Now
        );
    }

    #[test]
    fn progress_in_the_same_phase_waits_for_the_status_interval() {
        let written = in_phase(TaskPhase::Running, "1/2");
        let status = in_phase(TaskPhase::Running, "2/2");
        assert_eq!(
            decide_write(&status, Some(&written), false, false, false),
            Write::Later
        );
        assert_eq!(
            decide_write(&status, Some(&written), false, false, true),
            Write::Now
        );
        assert_eq!(
            decide_write(&status, Some(&written), false, true, false),
            Write::Now,
            "a forced write does not wait"
        );
    }

    #[test]
    fn a_phase_change_is_written_at_once() {
        let written = in_phase(TaskPhase::Running, "1/2");
        let status = in_phase(TaskPhase::Synthesizing, "2/2");
        assert_eq!(
            decide_write(&status, Some(&written), false, false, false),
            Write::Now
        );
        assert_eq!(
            decide_write(&status, None, false, false, false),
            Write::Now,
            "the first status is written at once"
        );
    }

    #[test]
    fn a_status_still_to_be_written_says_so_and_one_written_does_not() {
        let mut memory = wrote(in_phase(TaskPhase::Running, "1/2"), None);
        assert_eq!(unwritten_since(&memory, false), None);
        memory.status.progress = Some("2/2".to_owned());
        assert_eq!(unwritten_since(&memory, true), None, "just written");
        assert_eq!(
            unwritten_since(&memory, false),
            Some(Duration::ZERO),
            "never written by this process: due at once"
        );
    }

    #[test]
    fn the_status_this_process_wrote_or_the_one_before_is_not_someone_elses() {
        let older = in_phase(TaskPhase::Planning, "0/2");
        let newer = in_phase(TaskPhase::Running, "1/2");
        let memory = wrote(newer.clone(), Some(older.clone()));
        assert!(!overwritten_by_someone_else(Some(&newer), &memory));
        assert!(
            !overwritten_by_someone_else(Some(&older), &memory),
            "a watch cache a write behind"
        );
        assert!(!overwritten_by_someone_else(None, &memory));
        assert!(!overwritten_by_someone_else(
            Some(&newer),
            &TaskMemory::default()
        ));
    }

    #[test]
    fn a_status_that_differs_in_what_a_user_sees_is_someone_elses() {
        let newer = in_phase(TaskPhase::Running, "1/2");
        let memory = wrote(newer.clone(), None);
        let mut edited = newer.clone();
        edited.phase = Some(TaskPhase::Succeeded);
        assert!(overwritten_by_someone_else(Some(&edited), &memory));
        let mut edited = newer.clone();
        set_condition(
            &mut edited.conditions,
            condition(
                "Succeeded",
                "True",
                "Completed",
                "",
                Some(1),
                Time(Timestamp::UNIX_EPOCH),
            ),
        );
        assert!(overwritten_by_someone_else(Some(&edited), &memory));
    }

    #[test]
    fn a_status_that_differs_only_in_timestamps_is_not_someone_elses() {
        let newer = in_phase(TaskPhase::Running, "1/2");
        let memory = wrote(newer.clone(), None);
        let mut reprecised = newer;
        reprecised.completed_at = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!overwritten_by_someone_else(Some(&reprecised), &memory));
    }
}
