//! Carrying out what [`crate::lifecycle::advance`] decided, effect by effect, in its order:
//! the accepted or rejected plan written to Redis, work dispatched to the pool's queue,
//! agents cancelled, the Task completed with its result.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use maos_core::api::v1alpha1::{SubtaskSpec, Task, TaskStatus};
use maos_core::coord::Pool;
use maos_core::coord::queue::WorkItem;
use maos_core::dag::SubtaskName;

use super::super::{Context, Error};
use super::attach::Live;
use crate::lifecycle::{Effect, PLAN, WorkOrder};
use crate::status;

/// The moments the effects are carried out at.
pub(super) struct Timing {
    /// The time of the decision.
    pub(super) now: Timestamp,
    /// When the Task was accepted: dispatched work is due by its `activeDeadlineSeconds`.
    pub(super) accepted_at: Timestamp,
    /// The stream time (ms) of the newest event folded this reconcile: dispatched work waited
    /// for the operator since then.
    pub(super) newest_event_ms: Option<u64>,
}

/// Carries out `effects` in order.
pub(super) async fn carry_out(
    task: &Task,
    ctx: &Arc<Context>,
    live: &Live,
    status: &mut TaskStatus,
    effects: Vec<Effect>,
    timing: &Timing,
) -> Result<(), Error> {
    for effect in effects {
        match effect {
            Effect::AcceptPlan(subtasks) => accept_plan(live, &subtasks).await?,
            Effect::RejectPlan { feedback } => reject_plan(live, &feedback).await?,
            Effect::Dispatch(orders) => dispatch(task, ctx, live, status, orders, timing).await?,
            Effect::Cancel { reason } => cancel(live, &reason).await?,
            Effect::Complete => {
                super::super::result::complete(task, ctx, &live.coord, status, timing.now).await?;
            }
        }
    }
    Ok(())
}

/// Writes the accepted plan's subtasks, where agents read their prompts.
async fn accept_plan(live: &Live, subtasks: &[SubtaskSpec]) -> Result<(), Error> {
    live.coord.plan().set_subtasks(subtasks).await?;
    Ok(())
}

/// Drops the rejected plan (its result and journal) and tells the next planner why.
async fn reject_plan(live: &Live, feedback: &str) -> Result<(), Error> {
    let plan = SubtaskName::new(PLAN)?;
    live.coord.results().forget(&plan).await?;
    live.coord.journal(&plan).clear().await?;
    live.coord.plan().set_feedback(feedback).await?;
    Ok(())
}

/// Tells running agents to stop and drops the Task's queued items.
async fn cancel(live: &Live, reason: &str) -> Result<(), Error> {
    live.coord.cancel(reason).await?;
    live.pool
        .queue()
        .purge_task(live.coord.keys().task())
        .await?;
    Ok(())
}

/// Ends each retried attempt's journal, then enqueues the orders and times how long the work
/// waited since the event that made it ready.
async fn dispatch(
    task: &Task,
    ctx: &Context,
    live: &Live,
    status: &TaskStatus,
    orders: Vec<WorkOrder>,
    timing: &Timing,
) -> Result<(), Error> {
    // Before the retry can be claimed: it must not replay the attempt it retries.
    for (order, why) in retries(status, &orders) {
        live.coord
            .journal(&order.subtask)
            .end_before(order.attempt, why)
            .await?;
    }
    let items = enqueue(
        task,
        &live.pool,
        &live.coord,
        orders,
        timing.accepted_at,
        timing.now,
    )
    .await?;
    if let Some(ready_ms) = timing.newest_event_ms {
        let waited = unix_ms().saturating_sub(ready_ms);
        for _ in &items {
            ctx.metrics.observe_dispatch(waited as f64 / 1000.0);
        }
    }
    Ok(())
}

/// The retries among `orders` (attempts after the first), each with why the attempt before it
/// ended, for its journal.
fn retries<'a>(
    status: &'a TaskStatus,
    orders: &'a [WorkOrder],
) -> impl Iterator<Item = (&'a WorkOrder, &'a str)> {
    orders.iter().filter(|o| o.attempt > 1).map(|order| {
        let why = status
            .subtasks
            .iter()
            .find(|s| s.name == order.subtask.as_str())
            .and_then(status::last_failure)
            .unwrap_or("the attempt failed");
        (order, why)
    })
}

/// Puts `orders` on the pool's queue, each (subtask, attempt) at most once; returns the items.
pub(super) async fn enqueue(
    task: &Task,
    pool: &Pool,
    coord: &maos_core::coord::Task,
    orders: Vec<WorkOrder>,
    accepted_at: Timestamp,
    now: Timestamp,
) -> Result<Vec<WorkItem>, Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = deadline_ms(task, accepted_at, now);
    let items: Vec<WorkItem> = orders
        .into_iter()
        .map(|order| WorkItem {
            task: coord.keys().task().clone(),
            subtask: order.subtask,
            attempt: order.attempt,
            kind: order.kind,
            deadline_ms: deadline,
        })
        .collect();
    pool.queue().enqueue_many_once(&items).await?;
    Ok(items)
}

/// The deadline of work dispatched `now` (ms since the epoch): its `subtaskTimeoutSeconds`,
/// but never past the Task's `activeDeadlineSeconds` from `accepted_at`.
fn deadline_ms(task: &Task, accepted_at: Timestamp, now: Timestamp) -> u64 {
    let timeout = SignedDuration::from_secs(i64::from(task.spec.subtask_timeout_seconds));
    let active = SignedDuration::from_secs(i64::from(task.spec.active_deadline_seconds));
    let by_timeout = now.checked_add(timeout).unwrap_or(Timestamp::MAX);
    let by_deadline = accepted_at.checked_add(active).unwrap_or(Timestamp::MAX);
    u64::try_from(by_timeout.min(by_deadline).as_millisecond()).unwrap_or(0)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maos_core::api::v1alpha1::{SubtaskPhase, SubtaskStatus};
    use maos_core::coord::queue::WorkKind;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).expect("valid")
    }

    fn task(subtask_timeout: u32, active_deadline: u32) -> Task {
        let mut task: Task = serde_json::from_value(serde_json::json!({
            "apiVersion": "maos.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": {"prompt": "Compare vector databases.", "poolRef": {"name": "default"}},
        }))
        .expect("task");
        task.spec.subtask_timeout_seconds = subtask_timeout;
        task.spec.active_deadline_seconds = active_deadline;
        task
    }

    fn order(subtask: &str, attempt: u32) -> WorkOrder {
        WorkOrder {
            subtask: SubtaskName::new(subtask).expect("name"),
            attempt,
            kind: WorkKind::Work,
        }
    }

    fn entry(name: &str, message: Option<&str>) -> SubtaskStatus {
        SubtaskStatus {
            name: name.to_owned(),
            phase: SubtaskPhase::Pending,
            depends_on: vec![],
            agent: None,
            attempts: Some(1),
            started_at: None,
            finished_at: None,
            tokens: None,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn work_is_due_at_its_subtask_timeout() {
        let task = task(600, 3600);
        assert_eq!(
            deadline_ms(&task, at(0), at(100)),
            u64::try_from(at(700).as_millisecond()).expect("positive")
        );
    }

    #[test]
    fn work_is_never_due_after_the_tasks_active_deadline() {
        let task = task(600, 3600);
        assert_eq!(
            deadline_ms(&task, at(0), at(3300)),
            u64::try_from(at(3600).as_millisecond()).expect("positive"),
            "the deadline counts from acceptance, not from this dispatch"
        );
    }

    #[test]
    fn only_retries_end_the_journal_of_the_attempt_before_with_its_failure() {
        let mut status = TaskStatus::default();
        let mut failed = entry("b", None);
        crate::status::fail_attempt(&mut failed, 1, "ModelError: overloaded", 2, at(0));
        status.subtasks = vec![entry("a", None), failed];
        let orders = [order("a", 1), order("b", 2)];
        let retried: Vec<(&str, u32, &str)> = retries(&status, &orders)
            .map(|(o, why)| (o.subtask.as_str(), o.attempt, why))
            .collect();
        assert_eq!(retried, vec![("b", 2, "ModelError: overloaded")]);
    }

    #[test]
    fn a_retry_whose_failure_is_not_recorded_says_the_attempt_failed() {
        let status = TaskStatus::default();
        let orders = [order("a", 3)];
        let retried: Vec<&str> = retries(&status, &orders).map(|(_, why)| why).collect();
        assert_eq!(retried, vec!["the attempt failed"]);
    }
}
