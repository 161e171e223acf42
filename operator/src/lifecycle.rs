//! What a Task does next: a pure decision over its spec, its status (with the agents' events
//! already folded in) and a few facts read from Redis.
//!
//! The Task's status is the whole memory of the decision: the planner and the synthesizer are
//! entries `plan` and `synthesize` of `status.subtasks` beside the work subtasks, the accepted
//! DAG is rebuilt from the entries' names and `dependsOn`, and every attempt dispatched is
//! counted in its entry. An operator restarted mid-task reads the same status and decides the
//! same; the queue's enqueue-once marker absorbs a dispatch repeated after a crash.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use maos_core::api::v1alpha1::conditions::{
    condition, find_condition, pool as pool_cond, reason, set_condition, task as cond,
};
use maos_core::api::v1alpha1::{
    AgentPool, Shutdown, SubtaskPhase, SubtaskSpec, SubtaskStatus, TaskPhase, TaskSpec, TaskStatus,
};
use maos_core::coord::failure::FailReason;
use maos_core::coord::queue::WorkKind;
use maos_core::dag::{DraftNode, Plan, SubtaskName};
use maos_core::validate::check_subtasks;

use crate::scheduler::{self, Dispatch};
use crate::status::{fail_attempt, is_done, summarize, truncate};

/// The status entry (and work-item subtask) of the planner.
pub const PLAN: &str = "plan";
/// The status entry (and work-item subtask) of the final merge.
pub const SYNTHESIZE: &str = "synthesize";
/// How long past its `subtaskTimeoutSeconds` a running attempt may go before the operator
/// counts it as failed: the agent itself stops at the deadline, this catches a stuck agent.
pub const TIMEOUT_GRACE: SignedDuration = SignedDuration::from_secs(30);
/// Longest condition message written.
pub(crate) const MAX_CONDITION_MESSAGE: usize = 300;

/// What the reconciler read for this decision, besides the Task itself.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The time of the decision.
    pub now: Timestamp,
    /// When the Task was accepted: `activeDeadlineSeconds` counts from here.
    pub accepted_at: Timestamp,
    /// The planner's recorded answer (`results["plan"]`), read once the plan entry succeeded.
    pub plan_result: Option<&'a str>,
    /// Why the Task's budget is spent, if it is.
    pub budget_exhausted: Option<String>,
    /// The Task's `metadata.generation`.
    pub generation: Option<i64>,
    /// Why the Task's pool cannot run agents, if it cannot ([`pool_blocker`]).
    pub pool_blocker: Option<&'a str>,
}

/// Why `pool` cannot run any agent, if it cannot: its status says it is not Ready because of a
/// problem (Degraded), not merely agents still starting.
pub fn pool_blocker(pool: &AgentPool) -> Option<String> {
    let conditions = &pool.status.as_ref()?.conditions;
    let ready = find_condition(conditions, pool_cond::READY)?;
    let degraded = find_condition(conditions, pool_cond::DEGRADED)?;
    (ready.status == "False" && degraded.status == "True").then(|| {
        format!(
            "AgentPool {} cannot run agents: {}: {}",
            pool.metadata.name.as_deref().unwrap_or_default(),
            degraded.reason,
            degraded.message
        )
    })
}

/// A work item to put on the pool's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkOrder {
    /// The subtask (`plan` and `synthesize` for those kinds).
    pub subtask: SubtaskName,
    /// The attempt it starts.
    pub attempt: u32,
    /// Plan, work or synthesize.
    pub kind: WorkKind,
}

/// A side effect the reconciler carries out, in order, before it writes the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the accepted plan's subtasks to Redis, where agents read their prompts.
    AcceptPlan(Vec<SubtaskSpec>),
    /// Drop the rejected plan (its result and journal) and tell the next planner why.
    RejectPlan {
        /// Why it was rejected, for the planner.
        feedback: String,
    },
    /// Enqueue these work items.
    Dispatch(Vec<WorkOrder>),
    /// Tell running agents to stop and drop the Task's queued items.
    Cancel {
        /// Why, in a short fixed form.
        reason: String,
    },
    /// Every subtask is done: read the results and finish the Task with its result.
    Complete,
}

/// What [`advance`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Effects to carry out, in order.
    pub effects: Vec<Effect>,
    /// The earliest moment something waits for (a retry backoff, a timeout, the deadline).
    pub wake_at: Option<Timestamp>,
}

impl Outcome {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Sets every condition a Task has to `Unknown` (and `Suspended` to False) if it is missing:
/// conditions exist from the first reconcile on.
pub fn init_conditions(status: &mut TaskStatus, generation: Option<i64>, now: Timestamp) {
    for (type_, status_value) in [
        (cond::ACCEPTED, "Unknown"),
        (cond::PLANNED, "Unknown"),
        (cond::SUSPENDED, "False"),
        (cond::SUCCEEDED, "Unknown"),
    ] {
        if find_condition(&status.conditions, type_).is_none() {
            set_condition(
                &mut status.conditions,
                condition(
                    type_,
                    status_value,
                    reason::RECONCILING,
                    "",
                    generation,
                    Time(now),
                ),
            );
        }
    }
}

/// Sets condition `type_` (messages are cut to a bounded length).
pub fn set(
    status: &mut TaskStatus,
    type_: &str,
    value: &str,
    why: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        condition(
            type_,
            value,
            why,
            truncate(message, MAX_CONDITION_MESSAGE),
            generation,
            Time(now),
        ),
    );
}

/// Whether the Task has finished, successfully or not.
pub fn is_finished(status: &TaskStatus) -> bool {
    find_condition(&status.conditions, cond::SUCCEEDED).is_some_and(|c| c.status != "Unknown")
}

/// When a finished Task's retention ends (its transient Redis keys go): `completedAt`, or in a
/// status that lost it when `Succeeded` last changed, plus `retention`. From the status alone,
/// so an operator restarted at any point computes the same moment. `None` while it runs.
pub fn retention_ends(status: &TaskStatus, retention: std::time::Duration) -> Option<Timestamp> {
    let finished = find_condition(&status.conditions, cond::SUCCEEDED)
        .filter(|c| c.status != "Unknown")?
        .last_transition_time
        .0;
    let since = status.completed_at.as_ref().map_or(finished, |t| t.0);
    let retention = SignedDuration::try_from(retention).unwrap_or(SignedDuration::MAX);
    Some(since.checked_add(retention).unwrap_or(Timestamp::MAX))
}

/// When a finished Task is deleted by its `ttlSecondsAfterFinished` (`ttl`): `completedAt`, or
/// `now` in a status that lost it, plus `ttl`, as Kubernetes Jobs count it.
pub fn ttl_ends(status: &TaskStatus, ttl: u32, now: Timestamp) -> Timestamp {
    let completed = status.completed_at.as_ref().map_or(now, |t| t.0);
    completed
        .checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .unwrap_or(Timestamp::MAX)
}

/// The one-word summary of the status, for printer columns.
pub fn phase_of(status: &TaskStatus) -> TaskPhase {
    match find_condition(&status.conditions, cond::SUCCEEDED)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
    {
        Some(("True", _)) => return TaskPhase::Succeeded,
        // A user's own stop is not a failure (as Argo and Tekton show it).
        Some(("False", reason::CANCELLED)) => return TaskPhase::Cancelled,
        Some(("False", _)) => return TaskPhase::Failed,
        _ => {}
    }
    if find_condition(&status.conditions, cond::ACCEPTED).is_none_or(|c| c.status != "True") {
        return TaskPhase::Pending;
    }
    if find_condition(&status.conditions, cond::SUSPENDED)
        .is_some_and(|c| c.status == "True" && c.reason == reason::SUSPENDED)
    {
        return TaskPhase::Suspended;
    }
    if find_condition(&status.conditions, cond::PROGRESSING)
        .is_some_and(|c| c.status == "False" && c.reason == reason::POOL_NOT_READY)
    {
        return TaskPhase::Blocked;
    }
    if status.plan_revision.is_none() {
        return TaskPhase::Planning;
    }
    if status.subtasks.iter().any(|s| s.name == SYNTHESIZE) {
        return TaskPhase::Synthesizing;
    }
    TaskPhase::Running
}

/// Ends the Task without a result: `Succeeded=False` with `why`; every subtask not yet done is
/// cancelled.
pub fn finish_failed(
    status: &mut TaskStatus,
    why: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    for subtask in &mut status.subtasks {
        if !is_done(subtask.phase) {
            subtask.phase = SubtaskPhase::Cancelled;
            subtask.finished_at = Some(Time(now));
            subtask.message = Some(format!("cancelled: {why}"));
        }
    }
    set(
        status,
        cond::SUCCEEDED,
        "False",
        why,
        message,
        generation,
        now,
    );
    finish(status, now);
}

/// Whether a Task that cannot be accepted now ever can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It may be later (its pool or Checkpoint may yet appear): it stays `Pending`.
    Wait,
    /// It never can be (an invalid spec, a failed Checkpoint): it fails with the reason.
    Permanent,
}

/// The Task is not accepted: `Accepted=False` with `why` and `message`, and when the refusal is
/// [`Refusal::Permanent`] the Task fails with them too.
pub fn refuse(
    status: &mut TaskStatus,
    why: &str,
    message: &str,
    refusal: Refusal,
    generation: Option<i64>,
    now: Timestamp,
) {
    set(
        status,
        cond::ACCEPTED,
        "False",
        why,
        message,
        generation,
        now,
    );
    if refusal == Refusal::Permanent {
        finish_failed(status, why, message, generation, now);
    }
}

/// When the Task was accepted (`now` if it is not yet): its `activeDeadlineSeconds` counts
/// from then.
pub fn accepted_at(status: &TaskStatus, now: Timestamp) -> Timestamp {
    find_condition(&status.conditions, cond::ACCEPTED)
        .filter(|c| c.status == "True")
        .map_or(now, |c| c.last_transition_time.0)
}

/// Ends the Task with its result.
pub fn finish_succeeded(status: &mut TaskStatus, generation: Option<i64>, now: Timestamp) {
    set(
        status,
        cond::SUCCEEDED,
        "True",
        reason::COMPLETED,
        "every subtask succeeded",
        generation,
        now,
    );
    finish(status, now);
}

fn finish(status: &mut TaskStatus, now: Timestamp) {
    status.completed_at = Some(Time(now));
    set(
        status,
        cond::SUSPENDED,
        "False",
        reason::FINISHED,
        "the Task finished: there is no dispatch left to hold",
        status.observed_generation,
        now,
    );
    // Only a Task that ran has the condition: one refused before it started never needed a pool.
    if find_condition(&status.conditions, cond::PROGRESSING).is_some() {
        set(
            status,
            cond::PROGRESSING,
            "False",
            reason::FINISHED,
            "the Task finished: nothing more progresses",
            status.observed_generation,
            now,
        );
    }
    summarize(status, now);
}

/// Parses and checks a planner's answer: a JSON list of `{name, prompt, dependsOn}` with at most
/// `max_subtasks` entries forming a valid DAG.
pub fn parse_plan(answer: &str, max_subtasks: u32) -> Result<Vec<SubtaskSpec>, String> {
    let subtasks: Vec<SubtaskSpec> = serde_json::from_str(answer)
        .map_err(|e| format!("the plan is not a list of {{name, prompt, dependsOn}}: {e}"))?;
    if subtasks.is_empty() {
        return Err("the plan has no subtasks".to_owned());
    }
    if subtasks.len() > max_subtasks as usize {
        return Err(format!(
            "the plan has {} subtasks; at most {max_subtasks} are allowed",
            subtasks.len()
        ));
    }
    check_subtasks(&subtasks, "plan").map_err(|e| e.to_string())?;
    Ok(subtasks)
}

/// The status entry of an accepted subtask, waiting for its dependencies.
pub fn pending_entry(name: &str, depends_on: Vec<String>) -> SubtaskStatus {
    SubtaskStatus {
        name: name.to_owned(),
        phase: SubtaskPhase::Pending,
        depends_on,
        agent: None,
        attempts: None,
        started_at: None,
        finished_at: None,
        tokens: None,
        message: None,
    }
}

/// Decides the Task's next step at `facts.now`, updating `status` (subtask entries, plan,
/// conditions) and returning the effects to carry out. A finished Task decides nothing.
pub fn advance(spec: &TaskSpec, status: &mut TaskStatus, facts: &Facts<'_>) -> Outcome {
    let (now, generation) = (facts.now, facts.generation);
    let mut outcome = Outcome::default();
    if is_finished(status) {
        return outcome;
    }
    let retry = &spec.retry_strategy;

    // A running attempt far past its timeout: its agent is stuck; count the attempt as failed.
    let timeout = SignedDuration::from_secs(i64::from(spec.subtask_timeout_seconds));
    for subtask in &mut status.subtasks {
        if subtask.phase != SubtaskPhase::Running {
            continue;
        }
        let Some(started) = subtask.started_at.as_ref().map(|t| t.0) else {
            continue;
        };
        let limit = started
            .checked_add(timeout)
            .and_then(|t| t.checked_add(TIMEOUT_GRACE))
            .unwrap_or(Timestamp::MAX);
        if now >= limit {
            let attempts = subtask.attempts.unwrap_or(1);
            fail_attempt(
                subtask,
                attempts,
                "DeadlineExceeded: no result within subtaskTimeoutSeconds",
                retry.limit,
                now,
            );
        } else {
            outcome.wake(limit);
        }
    }

    // Endings that stop everything, most deliberate first.
    let deadline = facts
        .accepted_at
        .checked_add(SignedDuration::from_secs(i64::from(
            spec.active_deadline_seconds,
        )))
        .unwrap_or(Timestamp::MAX);
    let stop = if spec.shutdown == Some(Shutdown::Terminate) {
        Some((
            reason::CANCELLED,
            "spec.shutdown is Terminate: running subtasks were stopped".to_owned(),
        ))
    } else if now >= deadline {
        Some((
            reason::DEADLINE_EXCEEDED,
            format!(
                "the Task ran longer than activeDeadlineSeconds ({} s)",
                spec.active_deadline_seconds
            ),
        ))
    } else if let Some(why) = &facts.budget_exhausted {
        Some((reason::BUDGET_EXCEEDED, why.clone()))
    } else {
        status
            .subtasks
            .iter()
            .find(|s| s.phase == SubtaskPhase::Failed)
            .map(|failed| {
                let message = failed.message.clone().unwrap_or_default();
                let attempts = failed.attempts.unwrap_or(1);
                match FailReason::of_message(&message) {
                    Some(FailReason::BudgetExceeded) => (
                        reason::BUDGET_EXCEEDED,
                        format!("subtask {} stopped: {message}", failed.name),
                    ),
                    // The planner's plan was refused by submit_plan on every attempt.
                    Some(FailReason::PlanRejected) => (
                        reason::PLAN_REJECTED,
                        format!("no plan was accepted after {attempts} attempt(s): {message}"),
                    ),
                    _ => (
                        reason::SUBTASK_FAILED,
                        format!(
                            "subtask {} failed after {attempts} attempt(s): {message}",
                            failed.name
                        ),
                    ),
                }
            })
    };
    if let Some((why, message)) = stop {
        outcome.effects.push(Effect::Cancel {
            reason: why.to_owned(),
        });
        finish_failed(status, why, &message, generation, now);
        return outcome;
    }
    outcome.wake(deadline);

    let (progressing, why, message) = match facts.pool_blocker {
        Some(blocker) => ("False", reason::POOL_NOT_READY, blocker.to_owned()),
        None => (
            "True",
            reason::POOL_READY,
            format!("AgentPool {} can run agents", spec.pool_ref.name),
        ),
    };
    set(
        status,
        cond::PROGRESSING,
        progressing,
        why,
        &message,
        generation,
        now,
    );

    let hold = spec.suspend || spec.shutdown == Some(Shutdown::Graceful);
    // The user's hold shows first: a suspended Task shutting down gracefully is Suspended.
    let (suspended, why, message) = match (spec.suspend, spec.shutdown) {
        (true, Some(Shutdown::Graceful)) => (
            "True",
            reason::SUSPENDED,
            "spec.suspend is true and spec.shutdown is Graceful: no new dispatch; the Task ends Cancelled once running subtasks finish",
        ),
        (true, _) => (
            "True",
            reason::SUSPENDED,
            "spec.suspend is true: no new dispatch",
        ),
        (false, Some(Shutdown::Graceful)) => (
            "True",
            "ShuttingDown",
            "spec.shutdown is Graceful: no new dispatch",
        ),
        (false, _) => ("False", "Running", ""),
    };
    set(
        status,
        cond::SUSPENDED,
        suspended,
        why,
        message,
        generation,
        now,
    );
    let graceful = spec.shutdown == Some(Shutdown::Graceful);
    let in_flight = status
        .subtasks
        .iter()
        .any(|s| matches!(s.phase, SubtaskPhase::Queued | SubtaskPhase::Running));
    if graceful && !in_flight {
        outcome.effects.push(Effect::Cancel {
            reason: reason::CANCELLED.to_owned(),
        });
        finish_failed(
            status,
            reason::CANCELLED,
            "spec.shutdown is Graceful: stopped after the running subtasks",
            generation,
            now,
        );
        return outcome;
    }

    if status.plan_revision.is_none() {
        plan_step(spec, status, facts, hold, &mut outcome);
        if status.plan_revision.is_none() || is_finished(status) {
            summarize(status, now);
            return outcome;
        }
        // A plan accepted just now: its first subtasks go out in the same step.
    }

    let work: Vec<&SubtaskStatus> = status
        .subtasks
        .iter()
        .filter(|s| s.name != PLAN && s.name != SYNTHESIZE)
        .collect();
    let all_succeeded = work.iter().all(|s| s.phase == SubtaskPhase::Succeeded);
    if all_succeeded {
        if !spec.synthesize {
            outcome.effects.push(Effect::Complete);
            return outcome;
        }
        if !status.subtasks.iter().any(|s| s.name == SYNTHESIZE) {
            let all = work.iter().map(|s| s.name.clone()).collect();
            status.subtasks.push(pending_entry(SYNTHESIZE, all));
        }
        let synthesized = status
            .subtasks
            .iter()
            .any(|s| s.name == SYNTHESIZE && s.phase == SubtaskPhase::Succeeded);
        if synthesized {
            outcome.effects.push(Effect::Complete);
        } else if !hold {
            single_step(
                status,
                SYNTHESIZE,
                WorkKind::Synthesize,
                retry,
                now,
                &mut outcome,
            );
        }
        summarize(status, now);
        return outcome;
    }
    if hold {
        summarize(status, now);
        return outcome;
    }

    let drafts: Vec<DraftNode<'_>> = work
        .iter()
        .map(|s| DraftNode {
            name: &s.name,
            depends_on: &s.depends_on,
        })
        .collect();
    let plan = match Plan::new(&drafts, "status.subtasks") {
        Ok(plan) => plan,
        Err(errors) => {
            // Only an edited status can get here: the plan was checked when it was accepted.
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            outcome.effects.push(Effect::Cancel {
                reason: reason::INVALID_SPEC.to_owned(),
            });
            finish_failed(
                status,
                reason::INVALID_SPEC,
                &format!("the accepted plan in status is not a DAG: {message}"),
                generation,
                now,
            );
            return outcome;
        }
    };
    let statuses: Vec<SubtaskStatus> = work.iter().map(|s| (*s).clone()).collect();
    let decision = scheduler::next_dispatch(&plan, &statuses, spec.parallelism, retry, now);
    if let Some(at) = decision.wake_at {
        outcome.wake(at);
    }
    let orders: Vec<WorkOrder> = decision
        .dispatch
        .into_iter()
        .map(|Dispatch { subtask, attempt }| WorkOrder {
            subtask,
            attempt,
            kind: WorkKind::Work,
        })
        .collect();
    mark_queued(status, &orders);
    if !orders.is_empty() {
        outcome.effects.push(Effect::Dispatch(orders));
    }
    summarize(status, now);
    outcome
}

/// Planning: a manual DAG is accepted at once; otherwise the planner runs, and its answer is
/// accepted, or rejected once with feedback and then for good.
fn plan_step(
    spec: &TaskSpec,
    status: &mut TaskStatus,
    facts: &Facts<'_>,
    hold: bool,
    outcome: &mut Outcome,
) {
    let (now, generation) = (facts.now, facts.generation);
    if !spec.subtasks.is_empty() {
        accept(
            status,
            spec.subtasks.clone(),
            "Manual",
            generation,
            now,
            outcome,
        );
        return;
    }
    if !status.subtasks.iter().any(|s| s.name == PLAN) {
        status.subtasks.push(pending_entry(PLAN, Vec::new()));
    }
    let planned = status
        .subtasks
        .iter()
        .find(|s| s.name == PLAN)
        .is_some_and(|s| s.phase == SubtaskPhase::Succeeded);
    if !planned {
        if !hold {
            single_step(
                status,
                PLAN,
                WorkKind::Plan,
                &spec.retry_strategy,
                now,
                outcome,
            );
        }
        return;
    }
    let verdict = match facts.plan_result {
        Some(answer) => parse_plan(answer, spec.max_subtasks),
        None => Err("the planner finished without submitting a plan".to_owned()),
    };
    match verdict {
        Ok(subtasks) => accept(status, subtasks, "PlanAccepted", generation, now, outcome),
        Err(problem) => {
            let rejected_before = find_condition(&status.conditions, cond::PLANNED)
                .is_some_and(|c| c.reason == reason::PLAN_REJECTED);
            let message = format!("the planner's plan was rejected: {problem}");
            if rejected_before {
                outcome.effects.push(Effect::Cancel {
                    reason: reason::PLAN_REJECTED.to_owned(),
                });
                set(
                    status,
                    cond::PLANNED,
                    "False",
                    reason::PLAN_REJECTED,
                    &message,
                    generation,
                    now,
                );
                finish_failed(status, reason::PLAN_REJECTED, &message, generation, now);
                return;
            }
            set(
                status,
                cond::PLANNED,
                "False",
                reason::PLAN_REJECTED,
                &format!("{message}; asking the planner once more"),
                generation,
                now,
            );
            outcome
                .effects
                .push(Effect::RejectPlan { feedback: problem });
            let Some(entry) = status.subtasks.iter_mut().find(|s| s.name == PLAN) else {
                return;
            };
            let attempt = entry.attempts.unwrap_or(1) + 1;
            entry.phase = SubtaskPhase::Queued;
            entry.attempts = Some(attempt);
            entry.finished_at = None;
            entry.message = Some("plan rejected; planning again".to_owned());
            if let Ok(subtask) = SubtaskName::new(PLAN) {
                outcome.effects.push(Effect::Dispatch(vec![WorkOrder {
                    subtask,
                    attempt,
                    kind: WorkKind::Plan,
                }]));
            }
        }
    }
}

fn accept(
    status: &mut TaskStatus,
    subtasks: Vec<SubtaskSpec>,
    why: &str,
    generation: Option<i64>,
    now: Timestamp,
    outcome: &mut Outcome,
) {
    for subtask in &subtasks {
        status
            .subtasks
            .push(pending_entry(&subtask.name, subtask.depends_on.clone()));
    }
    status.plan_revision = Some(status.plan_revision.unwrap_or(0) + 1);
    set(
        status,
        cond::PLANNED,
        "True",
        why,
        &format!("{} subtasks", subtasks.len()),
        generation,
        now,
    );
    outcome.effects.push(Effect::AcceptPlan(subtasks));
}

/// Dispatches the lone subtask `name` (the planner or the synthesizer) when it is due.
fn single_step(
    status: &mut TaskStatus,
    name: &str,
    kind: WorkKind,
    retry: &maos_core::api::v1alpha1::RetryStrategy,
    now: Timestamp,
    outcome: &mut Outcome,
) {
    let Some(entry) = status.subtasks.iter().find(|s| s.name == name) else {
        return;
    };
    if entry.phase != SubtaskPhase::Pending {
        return;
    }
    let attempts = entry.attempts.unwrap_or(0);
    if attempts > 0 {
        let failed_at = entry.finished_at.as_ref().map_or(now, |t| t.0);
        let delay = SignedDuration::try_from(scheduler::retry_delay(retry, attempts))
            .unwrap_or(SignedDuration::MAX);
        let ready_at = failed_at.checked_add(delay).unwrap_or(Timestamp::MAX);
        if ready_at > now {
            outcome.wake(ready_at);
            return;
        }
    }
    let Ok(subtask) = SubtaskName::new(name) else {
        return;
    };
    let order = WorkOrder {
        subtask,
        attempt: attempts + 1,
        kind,
    };
    mark_queued(status, std::slice::from_ref(&order));
    outcome.effects.push(Effect::Dispatch(vec![order]));
}

fn mark_queued(status: &mut TaskStatus, orders: &[WorkOrder]) {
    for order in orders {
        if let Some(entry) = status
            .subtasks
            .iter_mut()
            .find(|s| s.name == order.subtask.as_str())
        {
            entry.phase = SubtaskPhase::Queued;
            entry.attempts = Some(order.attempt);
            entry.finished_at = None;
            entry.started_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maos_core::api::v1alpha1::Budget;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).expect("valid")
    }

    fn spec(subtasks: &[(&str, &[&str])]) -> TaskSpec {
        let mut spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "prompt": "Compare vector databases.",
            "poolRef": {"name": "default"},
        }))
        .expect("spec");
        spec.subtasks = subtasks
            .iter()
            .map(|(name, deps)| SubtaskSpec {
                name: (*name).into(),
                prompt: format!("do {name}"),
                depends_on: deps.iter().map(|d| (*d).into()).collect(),
                voters: None,
            })
            .collect();
        spec
    }

    fn facts(now: i64) -> Facts<'static> {
        Facts {
            now: at(now),
            accepted_at: at(0),
            plan_result: None,
            budget_exhausted: None,
            generation: Some(1),
            pool_blocker: None,
        }
    }

    fn accepted() -> TaskStatus {
        let mut status = TaskStatus::default();
        init_conditions(&mut status, Some(1), at(0));
        set(
            &mut status,
            cond::ACCEPTED,
            "True",
            "Registered",
            "",
            Some(1),
            at(0),
        );
        status
    }

    fn dispatched(outcome: &Outcome) -> Vec<(String, u32, WorkKind)> {
        outcome
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Dispatch(orders) => Some(orders),
                _ => None,
            })
            .flatten()
            .map(|o| (o.subtask.as_str().to_owned(), o.attempt, o.kind))
            .collect()
    }

    fn entry<'a>(status: &'a TaskStatus, name: &str) -> &'a SubtaskStatus {
        status
            .subtasks
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} has a status entry"))
    }

    fn entry_mut<'a>(status: &'a mut TaskStatus, name: &str) -> &'a mut SubtaskStatus {
        status
            .subtasks
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} has a status entry"))
    }

    fn succeed(status: &mut TaskStatus, name: &str) {
        let e = entry_mut(status, name);
        e.phase = SubtaskPhase::Succeeded;
        e.finished_at = Some(Time(at(1)));
    }

    fn reason_of(status: &TaskStatus) -> (String, String) {
        let c = find_condition(&status.conditions, cond::SUCCEEDED).expect("Succeeded");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_manual_dag_is_accepted_at_once_and_only_its_roots_are_dispatched() {
        let spec = spec(&[("a", &[]), ("b", &["a"])]);
        let mut status = accepted();
        let outcome = advance(&spec, &mut status, &facts(1));
        assert!(matches!(&outcome.effects[0], Effect::AcceptPlan(s) if s.len() == 2));
        assert_eq!(dispatched(&outcome), [("a".into(), 1, WorkKind::Work)]);
        assert_eq!(status.plan_revision, Some(1));
        assert_eq!(entry(&status, "a").phase, SubtaskPhase::Queued);
        assert_eq!(entry(&status, "b").phase, SubtaskPhase::Pending);
        assert_eq!(phase_of(&status), TaskPhase::Running);
        let planned = find_condition(&status.conditions, cond::PLANNED).expect("Planned");
        assert_eq!(
            (planned.status.as_str(), planned.reason.as_str()),
            ("True", "Manual")
        );
    }

    #[test]
    fn without_subtasks_the_planner_runs_first() {
        let spec = spec(&[]);
        let mut status = accepted();
        let outcome = advance(&spec, &mut status, &facts(1));
        assert_eq!(dispatched(&outcome), [(PLAN.into(), 1, WorkKind::Plan)]);
        assert_eq!(phase_of(&status), TaskPhase::Planning);
        // Nothing more while the planner works.
        let again = advance(&spec, &mut status, &facts(2));
        assert!(again.effects.is_empty(), "{again:?}");
    }

    #[test]
    fn a_valid_plan_is_accepted_and_dispatched() {
        let spec = spec(&[]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        succeed(&mut status, PLAN);
        let answer = r#"[{"name":"x","prompt":"p"},{"name":"y","prompt":"q","dependsOn":["x"]}]"#;
        let outcome = advance(
            &spec,
            &mut status,
            &Facts {
                plan_result: Some(answer),
                ..facts(2)
            },
        );
        assert!(matches!(&outcome.effects[0], Effect::AcceptPlan(s) if s.len() == 2));
        assert_eq!(status.plan_revision, Some(1));
        assert_eq!(entry(&status, "y").depends_on, vec!["x".to_owned()]);
        assert_eq!(dispatched(&outcome), [("x".into(), 1, WorkKind::Work)]);
    }

    #[test]
    fn a_rejected_plan_is_asked_for_once_more_with_the_reason_then_fails_the_task() {
        let spec = spec(&[]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        succeed(&mut status, PLAN);
        let cyclic = r#"[{"name":"x","prompt":"p","dependsOn":["y"]},{"name":"y","prompt":"q","dependsOn":["x"]}]"#;
        let first = advance(
            &spec,
            &mut status,
            &Facts {
                plan_result: Some(cyclic),
                ..facts(2)
            },
        );
        assert!(
            matches!(&first.effects[0], Effect::RejectPlan { feedback } if feedback.contains("cycle")),
            "{first:?}"
        );
        assert_eq!(dispatched(&first), [(PLAN.into(), 2, WorkKind::Plan)]);
        assert!(!is_finished(&status));
        succeed(&mut status, PLAN);
        let second = advance(
            &spec,
            &mut status,
            &Facts {
                plan_result: Some(cyclic),
                ..facts(3)
            },
        );
        assert!(second.effects.contains(&Effect::Cancel {
            reason: reason::PLAN_REJECTED.into()
        }));
        assert_eq!(
            reason_of(&status),
            ("False".into(), reason::PLAN_REJECTED.into())
        );
    }

    #[test]
    fn a_planner_whose_plans_the_tool_refused_fails_the_task_as_plan_rejected_saying_why() {
        let spec = spec(&[]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        let plan = entry_mut(&mut status, PLAN);
        plan.phase = SubtaskPhase::Failed;
        plan.attempts = Some(3);
        plan.message = Some("PlanRejected: the plan has 6 subtasks; at most 3 are allowed".into());
        advance(&spec, &mut status, &facts(2));
        assert_eq!(
            reason_of(&status),
            ("False".into(), reason::PLAN_REJECTED.into())
        );
        let message = &find_condition(&status.conditions, cond::SUCCEEDED)
            .expect("c")
            .message;
        assert!(
            message.contains("PlanRejected: the plan has 6 subtasks; at most 3 are allowed"),
            "{message}"
        );
    }

    #[test]
    fn a_plan_over_max_subtasks_or_not_json_is_rejected_with_why() {
        assert!(
            parse_plan("not json", 4)
                .expect_err("not json")
                .contains("not a list")
        );
        let three =
            r#"[{"name":"a","prompt":"p"},{"name":"b","prompt":"p"},{"name":"c","prompt":"p"}]"#;
        assert!(
            parse_plan(three, 2)
                .expect_err("too many")
                .contains("at most 2")
        );
        assert!(
            parse_plan("[]", 2)
                .expect_err("empty")
                .contains("no subtasks")
        );
        let reserved = r#"[{"name":"plan","prompt":"p"}]"#;
        assert!(parse_plan(reserved, 2).is_err());
    }

    #[test]
    fn when_every_subtask_succeeded_the_synthesizer_runs_then_the_task_completes() {
        let spec = spec(&[("a", &[]), ("b", &[])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        succeed(&mut status, "a");
        succeed(&mut status, "b");
        let outcome = advance(&spec, &mut status, &facts(2));
        assert_eq!(
            dispatched(&outcome),
            [(SYNTHESIZE.into(), 1, WorkKind::Synthesize)]
        );
        assert_eq!(phase_of(&status), TaskPhase::Synthesizing);
        assert_eq!(entry(&status, SYNTHESIZE).depends_on, vec!["a", "b"]);
        succeed(&mut status, SYNTHESIZE);
        let done = advance(&spec, &mut status, &facts(3));
        assert_eq!(done.effects, vec![Effect::Complete]);
    }

    #[test]
    fn without_synthesis_the_task_completes_when_its_subtasks_do() {
        let mut spec = spec(&[("a", &[])]);
        spec.synthesize = false;
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        succeed(&mut status, "a");
        assert_eq!(
            advance(&spec, &mut status, &facts(2)).effects,
            vec![Effect::Complete]
        );
    }

    #[test]
    fn a_subtask_failed_for_good_fails_the_task_and_cancels_the_rest() {
        let spec = spec(&[("a", &[]), ("b", &[])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        let a = entry_mut(&mut status, "a");
        a.phase = SubtaskPhase::Failed;
        a.attempts = Some(3);
        a.message = Some("ModelError: 400".into());
        let outcome = advance(&spec, &mut status, &facts(2));
        assert!(matches!(&outcome.effects[0], Effect::Cancel { .. }));
        assert_eq!(
            reason_of(&status),
            ("False".into(), reason::SUBTASK_FAILED.into())
        );
        let message = &find_condition(&status.conditions, cond::SUCCEEDED)
            .expect("c")
            .message;
        assert!(
            message.contains("subtask a failed after 3 attempt(s)"),
            "{message}"
        );
        assert_eq!(entry(&status, "b").phase, SubtaskPhase::Cancelled);
        assert!(status.completed_at.is_some());
        assert_eq!(phase_of(&status), TaskPhase::Failed);
    }

    #[test]
    fn a_subtask_stopped_by_the_budget_fails_the_task_with_budget_exceeded() {
        let spec = spec(&[("a", &[])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        let a = entry_mut(&mut status, "a");
        a.phase = SubtaskPhase::Failed;
        a.message = Some("BudgetExceeded: spent".into());
        advance(&spec, &mut status, &facts(2));
        assert_eq!(reason_of(&status).1, reason::BUDGET_EXCEEDED);
    }

    #[test]
    fn a_spent_budget_fails_the_task() {
        let mut spec = spec(&[("a", &[])]);
        spec.budget = Some(Budget {
            max_tokens: Some(10),
            max_cost_usd: None,
        });
        let mut status = accepted();
        let outcome = advance(
            &spec,
            &mut status,
            &Facts {
                budget_exhausted: Some("the token budget (10) is spent".into()),
                ..facts(1)
            },
        );
        assert!(matches!(&outcome.effects[0], Effect::Cancel { .. }));
        assert_eq!(reason_of(&status).1, reason::BUDGET_EXCEEDED);
    }

    #[test]
    fn the_active_deadline_counts_from_acceptance() {
        let mut spec = spec(&[("a", &[])]);
        spec.active_deadline_seconds = 60;
        let mut status = accepted();
        let running = advance(&spec, &mut status, &facts(59));
        assert!(!is_finished(&status));
        assert_eq!(running.wake_at, Some(at(60)));
        advance(&spec, &mut status, &facts(60));
        assert_eq!(reason_of(&status).1, reason::DEADLINE_EXCEEDED);
    }

    #[test]
    fn terminate_cancels_at_once() {
        let mut spec = spec(&[("a", &[])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        spec.shutdown = Some(Shutdown::Terminate);
        let outcome = advance(&spec, &mut status, &facts(2));
        assert!(matches!(&outcome.effects[0], Effect::Cancel { .. }));
        assert_eq!(reason_of(&status).1, reason::CANCELLED);
        assert_eq!(entry(&status, "a").phase, SubtaskPhase::Cancelled);
    }

    #[test]
    fn graceful_shutdown_lets_running_subtasks_finish_then_cancels() {
        let mut spec = spec(&[("a", &[]), ("b", &["a"])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        spec.shutdown = Some(Shutdown::Graceful);
        let waiting = advance(&spec, &mut status, &facts(2));
        assert!(waiting.effects.is_empty(), "{waiting:?}");
        assert!(!is_finished(&status));
        succeed(&mut status, "a");
        advance(&spec, &mut status, &facts(3));
        assert_eq!(reason_of(&status).1, reason::CANCELLED);
        assert_eq!(entry(&status, "b").phase, SubtaskPhase::Cancelled);
        assert_eq!(entry(&status, "a").phase, SubtaskPhase::Succeeded);
    }

    #[test]
    fn a_suspended_task_dispatches_nothing_until_resumed() {
        let mut spec = spec(&[("a", &[])]);
        spec.suspend = true;
        let mut status = accepted();
        let held = advance(&spec, &mut status, &facts(1));
        assert!(dispatched(&held).is_empty());
        let suspended = find_condition(&status.conditions, cond::SUSPENDED).expect("Suspended");
        assert_eq!(suspended.status, "True");
        spec.suspend = false;
        let resumed = advance(&spec, &mut status, &facts(2));
        assert_eq!(dispatched(&resumed), [("a".into(), 1, WorkKind::Work)]);
        let suspended = find_condition(&status.conditions, cond::SUSPENDED).expect("Suspended");
        assert_eq!(suspended.status, "False");
    }

    #[test]
    fn an_attempt_stuck_past_its_timeout_and_grace_is_failed_and_retried() {
        let mut spec = spec(&[("a", &[])]);
        spec.subtask_timeout_seconds = 10;
        spec.retry_strategy.backoff.duration_seconds = 0;
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        let a = entry_mut(&mut status, "a");
        a.phase = SubtaskPhase::Running;
        a.started_at = Some(Time(at(1)));
        let before = advance(&spec, &mut status, &facts(40));
        assert!(dispatched(&before).is_empty());
        assert_eq!(before.wake_at, Some(at(41)));
        let after = advance(&spec, &mut status, &facts(41));
        assert_eq!(dispatched(&after), [("a".into(), 2, WorkKind::Work)]);
    }

    #[test]
    fn a_finished_task_decides_nothing() {
        let spec = spec(&[("a", &[])]);
        let mut status = accepted();
        finish_failed(&mut status, reason::CANCELLED, "stop", Some(1), at(1));
        let before = status.clone();
        assert_eq!(advance(&spec, &mut status, &facts(2)), Outcome::default());
        assert_eq!(status, before);
    }

    #[test]
    fn the_retention_counts_from_the_finish_recorded_in_the_status() {
        let retention = std::time::Duration::from_secs(3600);
        let mut status = accepted();
        assert_eq!(retention_ends(&status, retention), None, "still running");
        finish_succeeded(&mut status, Some(1), at(10));
        assert_eq!(retention_ends(&status, retention), Some(at(3610)));
        // A status that lost completedAt still has a fixed moment: the finish's condition.
        status.completed_at = None;
        assert_eq!(retention_ends(&status, retention), Some(at(3610)));
        // No retention ends at the finish; a huge one saturates instead of overflowing.
        assert_eq!(
            retention_ends(&status, std::time::Duration::ZERO),
            Some(at(10))
        );
        assert_eq!(
            retention_ends(&status, std::time::Duration::from_secs(u64::MAX)),
            Some(Timestamp::MAX)
        );
    }

    #[test]
    fn the_phase_summarises_the_conditions() {
        let mut status = TaskStatus::default();
        init_conditions(&mut status, Some(1), at(0));
        assert_eq!(phase_of(&status), TaskPhase::Pending);
        set(
            &mut status,
            cond::ACCEPTED,
            "True",
            "Registered",
            "",
            Some(1),
            at(0),
        );
        assert_eq!(phase_of(&status), TaskPhase::Planning);
        status.plan_revision = Some(1);
        assert_eq!(phase_of(&status), TaskPhase::Running);
        finish_succeeded(&mut status, Some(1), at(1));
        assert_eq!(phase_of(&status), TaskPhase::Succeeded);
    }

    #[test]
    fn a_suspended_task_shows_suspended_and_a_finished_one_says_why_not() {
        let mut spec = spec(&[("a", &[])]);
        spec.suspend = true;
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        assert_eq!(phase_of(&status), TaskPhase::Suspended);
        spec.suspend = false;
        advance(&spec, &mut status, &facts(2));
        assert_eq!(phase_of(&status), TaskPhase::Running);
        finish_succeeded(&mut status, Some(1), at(3));
        let suspended = find_condition(&status.conditions, cond::SUSPENDED).expect("Suspended");
        assert_eq!(
            (suspended.status.as_str(), suspended.reason.as_str()),
            ("False", reason::FINISHED)
        );
        assert!(!suspended.message.is_empty());
    }

    #[test]
    fn a_task_whose_pool_cannot_run_agents_is_blocked_until_it_can() {
        let spec = spec(&[("a", &[])]);
        let mut status = accepted();
        let blocker = "AgentPool default cannot run agents: ModelAuthFailed: invalid x-api-key";
        let blocked = Facts {
            pool_blocker: Some(blocker),
            ..facts(1)
        };
        advance(&spec, &mut status, &blocked);
        assert_eq!(phase_of(&status), TaskPhase::Blocked);
        let progressing = find_condition(&status.conditions, cond::PROGRESSING).expect("c");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", reason::POOL_NOT_READY)
        );
        assert_eq!(progressing.message, blocker);

        advance(&spec, &mut status, &facts(2));
        assert_eq!(phase_of(&status), TaskPhase::Running);
        let progressing = find_condition(&status.conditions, cond::PROGRESSING).expect("c");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", reason::POOL_READY)
        );

        finish_succeeded(&mut status, Some(1), at(3));
        let progressing = find_condition(&status.conditions, cond::PROGRESSING).expect("c");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", reason::FINISHED)
        );
        assert_eq!(phase_of(&status), TaskPhase::Succeeded);
    }

    #[test]
    fn a_pool_blocks_its_tasks_only_when_not_ready_for_a_problem() {
        let pool = |ready: &str, degraded: &str| {
            let mut pool = AgentPool::new(
                "default",
                serde_json::from_value(serde_json::json!({
                    "apiKeySecretRef": {"name": "anthropic", "key": "api-key"}
                }))
                .expect("spec"),
            );
            let mut status = maos_core::api::v1alpha1::AgentPoolStatus::default();
            for (type_, value, why) in [
                (pool_cond::READY, ready, "ModelAuthFailed"),
                (pool_cond::DEGRADED, degraded, "ModelAuthFailed"),
            ] {
                set_condition(
                    &mut status.conditions,
                    condition(type_, value, why, "invalid x-api-key", None, Time(at(0))),
                );
            }
            pool.status = Some(status);
            pool
        };
        assert_eq!(
            pool_blocker(&pool("False", "True")).as_deref(),
            Some("AgentPool default cannot run agents: ModelAuthFailed: invalid x-api-key")
        );
        assert_eq!(
            pool_blocker(&pool("False", "False")),
            None,
            "agents starting"
        );
        assert_eq!(
            pool_blocker(&pool("True", "True")),
            None,
            "some agents work"
        );
    }

    #[test]
    fn a_graceful_shutdown_in_progress_is_not_shown_as_suspended() {
        let mut spec = spec(&[("a", &[]), ("b", &["a"])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        spec.shutdown = Some(Shutdown::Graceful);
        advance(&spec, &mut status, &facts(2));
        assert_eq!(phase_of(&status), TaskPhase::Running);
    }

    #[test]
    fn a_suspended_task_shutting_down_gracefully_shows_suspended() {
        let mut spec = spec(&[("a", &[]), ("b", &["a"])]);
        let mut status = accepted();
        advance(&spec, &mut status, &facts(1));
        spec.suspend = true;
        spec.shutdown = Some(Shutdown::Graceful);
        advance(&spec, &mut status, &facts(2));
        assert_eq!(phase_of(&status), TaskPhase::Suspended);
        let suspended = find_condition(&status.conditions, cond::SUSPENDED).expect("c");
        assert!(
            suspended.message.contains("Graceful"),
            "{}",
            suspended.message
        );
    }

    #[test]
    fn a_cancelled_task_shows_cancelled_not_failed() {
        for shutdown in [Shutdown::Terminate, Shutdown::Graceful] {
            let mut spec = spec(&[("a", &[])]);
            spec.shutdown = Some(shutdown);
            let mut status = accepted();
            advance(&spec, &mut status, &facts(1));
            assert_eq!(phase_of(&status), TaskPhase::Cancelled, "{shutdown:?}");
        }
        let mut failed = accepted();
        finish_failed(&mut failed, reason::SUBTASK_FAILED, "x", Some(1), at(1));
        assert_eq!(phase_of(&failed), TaskPhase::Failed);
    }

    #[test]
    fn a_refusal_to_wait_leaves_the_task_pending_and_unfinished() {
        let mut status = TaskStatus::default();
        init_conditions(&mut status, Some(1), at(0));
        refuse(
            &mut status,
            reason::POOL_NOT_FOUND,
            "AgentPool default not found",
            Refusal::Wait,
            Some(1),
            at(1),
        );
        let accepted = find_condition(&status.conditions, cond::ACCEPTED).expect("Accepted");
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reason::POOL_NOT_FOUND)
        );
        assert_eq!(accepted.message, "AgentPool default not found");
        assert!(!is_finished(&status));
        assert_eq!(phase_of(&status), TaskPhase::Pending);
    }

    #[test]
    fn a_permanent_refusal_fails_the_task_with_the_same_reason() {
        let mut status = TaskStatus::default();
        init_conditions(&mut status, Some(1), at(0));
        refuse(
            &mut status,
            reason::INVALID_SPEC,
            "spec.subtasks: a cycle",
            Refusal::Permanent,
            Some(1),
            at(1),
        );
        let accepted = find_condition(&status.conditions, cond::ACCEPTED).expect("Accepted");
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reason::INVALID_SPEC)
        );
        assert_eq!(
            reason_of(&status),
            ("False".to_owned(), reason::INVALID_SPEC.to_owned())
        );
        assert_eq!(phase_of(&status), TaskPhase::Failed);
        assert_eq!(status.completed_at, Some(Time(at(1))));
    }

    #[test]
    fn the_task_counts_as_accepted_when_accepted_became_true_and_not_before() {
        let mut status = TaskStatus::default();
        init_conditions(&mut status, Some(1), at(0));
        assert_eq!(accepted_at(&status, at(9)), at(9), "not accepted yet: now");
        set(
            &mut status,
            cond::ACCEPTED,
            "True",
            "Registered",
            "",
            Some(1),
            at(3),
        );
        assert_eq!(accepted_at(&status, at(9)), at(3));
        set(
            &mut status,
            cond::ACCEPTED,
            "False",
            reason::POOL_NOT_FOUND,
            "",
            Some(1),
            at(5),
        );
        assert_eq!(accepted_at(&status, at(9)), at(9));
    }

    #[test]
    fn a_finished_task_lives_its_ttl_from_its_completion() {
        let mut status = accepted();
        finish_succeeded(&mut status, Some(1), at(100));
        assert_eq!(ttl_ends(&status, 60, at(130)), at(160));
        status.completed_at = None;
        assert_eq!(
            ttl_ends(&status, 60, at(130)),
            at(190),
            "without the moment it counts from now"
        );
    }
}
