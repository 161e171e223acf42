//! The Task controller: validates and registers a Task with its pool, folds the agents' events
//! into its status, carries out what [`crate::lifecycle::advance`] decides (plan, dispatch,
//! cancel, complete), writes the status at most about once a second (at once on a phase
//! change), and removes the Task's Redis keys when it is deleted.
//!
//! Restart safety: status is the durable memory. Events are acked only after the status that
//! folded them is written (and folding skips entries up to `status.lastEventId`), and dispatch
//! goes through the queue's enqueue-once marker, so a restart neither loses nor repeats work.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use super::task_checkpoints::task_of_checkpoint;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use maos_core::api::v1alpha1::conditions::{find_condition, reason, task as cond};
use maos_core::api::v1alpha1::{
    AgentPool, BudgetStatus, SubtaskPhase, Task, TaskPhase, TaskStatus,
};
use maos_core::coord::budget::Limits;
use maos_core::coord::events::{EventConsumer, EventKind};
use maos_core::coord::failure::FailReason;
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::plan::Goal;
use maos_core::coord::queue::{EntryId, WorkItem};
use maos_core::coord::{Pool, PoolUid, TaskUid};
use maos_core::dag::SubtaskName;
use maos_core::meta::{FIELD_MANAGER, FINALIZER_TASK};
use maos_core::price::micro_usd;

use super::orphans;
use super::task_checkpoints::{self, Resume};
use super::{Context, Error, from_finalizer, now};
use crate::checkpoint::resume::Restored;
use crate::lifecycle::{
    self, Effect, Facts, PLAN, SYNTHESIZE, finish_failed, init_conditions, is_finished, phase_of,
};
use crate::status::{self, EntryPosition, Folded, fold};

pub use super::result::RESULT_KEY;
/// The consumer name the operator reads a Task's events as; fixed, so a new leader inherits
/// what the old one read and never acked.
const EVENT_CONSUMER: &str = "operator";
/// Most events folded in one reconcile (more wait for the next one, woken at once).
const EVENT_BATCH: usize = 500;
const EVENT_BATCHES: usize = 8;
/// How often a running Task is reconciled even when nothing wakes it.
const SAFETY_REQUEUE: Duration = Duration::from_secs(5);
/// How long a Task whose pool is missing waits before it looks again (the pool's creation
/// also wakes it).
const POOL_RECHECK: Duration = Duration::from_secs(10);
/// The largest result a ConfigMap holds (its limit is 1 MiB with metadata).
/// Longest a finished Task waits before it looks at its retention again.
const RETENTION_RECHECK: Duration = Duration::from_secs(3600);
/// Events acked between two trims of a Task's event stream: a trim is one short script, and
/// a stream this much longer than needed is a few tens of KiB.
const EVENTS_PER_TRIM: usize = 100;

/// What the controller keeps about one Task between reconciles.
#[derive(Default)]
pub(crate) struct TaskMemory {
    /// The working status, ahead of the API server's copy by at most one status interval.
    status: TaskStatus,
    /// The status last written.
    written: Option<TaskStatus>,
    /// The one written before it: a watch cache a write behind still shows it.
    previous: Option<TaskStatus>,
    /// The API server's status was written by someone else: rewrite it at once, with no
    /// phase Event (the phase did not change, only a copy of it).
    overwritten: bool,
    /// When it was written.
    written_at: Option<Instant>,
    /// Events folded into `status` but not yet acked (they are acked once it is written).
    unacked: Vec<EntryId>,
    /// The Task's event consumer.
    consumer: Option<EventConsumer>,
    /// The Task's registration for wake-ups when events arrive.
    pump: Option<super::event_pump::Registration>,
    /// The Redis registration was checked by this process.
    registered: bool,
    /// When the next periodic checkpoint is due (`None`: not yet looked up).
    next_checkpoint: Option<Timestamp>,
    /// Events acked since the event stream was last trimmed.
    acked_since_trim: usize,
    /// The finished Task's transient keys were given their expiry by this process.
    expiry_set: bool,
    /// The finished Task's retention ended and its transient keys were dropped.
    retired: bool,
}

/// Reconciles one Task.
pub async fn reconcile(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = super::reconcile_span("task", task.as_ref());
    tracing::Instrument::instrument(reconcile_in_span(task, ctx), span).await
}

async fn reconcile_in_span(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = task
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = task.uid();
    let result = finalizer(&api, FINALIZER_TASK, task, |event| async {
        match event {
            Finalize::Apply(task) => apply(&task, &ctx, &api).await,
            Finalize::Cleanup(task) => cleanup(&task, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer);
    ctx.metrics
        .observe_reconcile("task", started.elapsed().as_secs_f64());
    super::note_outcome(&ctx, uid.as_deref(), &result);
    result
}

fn take_memory(ctx: &Context, uid: &str) -> Option<TaskMemory> {
    ctx.tasks.lock().ok().and_then(|mut m| m.remove(uid))
}

fn keep_memory(ctx: &Context, uid: &str, memory: TaskMemory) {
    if let Ok(mut m) = ctx.tasks.lock() {
        m.insert(uid.to_owned(), memory);
    }
}

async fn apply(task: &Task, ctx: &Arc<Context>, api: &Api<Task>) -> Result<Action, Error> {
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
    let mut memory = take_memory(ctx, &uid).unwrap_or_else(|| TaskMemory {
        status: task.status.clone().unwrap_or_default(),
        written: task.status.clone(),
        ..TaskMemory::default()
    });
    if overwritten_by_someone_else(task.status.as_ref(), &memory) {
        tracing::info!(task = %task.name_any(), namespace = %task.namespace().unwrap_or_default(), "the Task's status was changed by someone else; writing it back from the operator's state");
        memory.overwritten = true;
    }
    let result = step(task, ctx, api, &mut memory).await;
    // Every Task in the watch cache is reconciled, finished or not (all of them at start), so
    // `maos_tasks` counts what exists, not only what changed since this process started.
    ctx.metrics
        .set_task_phase(&uid, Some(phase_of(&memory.status)));
    // Kept while the Task exists, finished or not: the cache may still hold an older status
    // than the one written last, and this memory is the newer of the two.
    if is_finished(&memory.status) {
        memory.pump = None;
    }
    keep_memory(ctx, &uid, memory);
    result
}

/// One reconcile of a live Task.
async fn step(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
) -> Result<Action, Error> {
    let now = now();
    let generation = task.metadata.generation;
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
    let namespace = task.namespace().unwrap_or_default();
    let before = phase_of(&memory.status);
    init_conditions(&mut memory.status, generation, now);
    memory.status.observed_generation = generation;

    if is_finished(&memory.status) {
        write_status(task, ctx, api, memory, before, true).await?;
        return finished(task, ctx, memory, now).await;
    }

    if let Err(errors) = task.validate() {
        let message = errors.to_string();
        lifecycle::set(
            &mut memory.status,
            cond::ACCEPTED,
            "False",
            reason::INVALID_SPEC,
            &message,
            generation,
            now,
        );
        finish_failed(
            &mut memory.status,
            reason::INVALID_SPEC,
            &message,
            generation,
            now,
        );
        write_status(task, ctx, api, memory, before, true).await?;
        return Ok(Action::await_change());
    }

    // The pool: looked up until the Task is registered; its uid then names the Task's keys.
    let pool_uid = match memory.status.pool_uid.clone() {
        Some(uid) => uid,
        None => {
            let pools: Api<AgentPool> = Api::namespaced(ctx.client.clone(), &namespace);
            match pools.get_opt(&task.spec.pool_ref.name).await? {
                Some(pool) => pool.uid().ok_or(Error::MissingMetadata("pool uid"))?,
                None => {
                    let message = format!(
                        "AgentPool {} not found in namespace {namespace}; waiting for it",
                        task.spec.pool_ref.name
                    );
                    lifecycle::set(
                        &mut memory.status,
                        cond::ACCEPTED,
                        "False",
                        reason::POOL_NOT_FOUND,
                        &message,
                        generation,
                        now,
                    );
                    write_status(task, ctx, api, memory, before, true).await?;
                    return Ok(Action::requeue(POOL_RECHECK));
                }
            }
        }
    };
    let pool = Pool::new(ctx.redis.clone(), &PoolUid::new(&pool_uid)?);
    let coord = pool.task(&TaskUid::new(&uid)?);
    let cached_pool = ctx
        .pool_cache
        .get(&ObjectRef::new(&task.spec.pool_ref.name).within(&namespace));
    if memory.status.pool_uid.is_some()
        && !pool_lives(cached_pool.as_deref(), &pool_uid)
        && !pool_lives(
            Api::<AgentPool>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(&task.spec.pool_ref.name)
                .await?
                .as_ref(),
            &pool_uid,
        )
    {
        return pool_deleted(task, ctx, api, memory, before, &pool, &coord).await;
    }

    if !memory.registered || memory.status.pool_uid.is_none() {
        if memory.status.pool_uid.is_some() && !coord.exists().await? {
            return state_lost(task, ctx, api, memory, before, &pool, &coord).await;
        }
        let mut accepted_why = "Registered";
        let mut accepted_message = format!("registered with AgentPool {}", task.spec.pool_ref.name);
        let mut redispatch = Vec::new();
        if memory.status.pool_uid.is_none()
            && let Some(from) = &task.spec.resume_from
        {
            let refused = match task_checkpoints::resume(task, ctx, coord.keys(), now).await? {
                Resume::Restored(restored) => {
                    let Restored {
                        status,
                        redispatch: in_flight,
                        ..
                    } = *restored;
                    adopt(memory, status);
                    redispatch = in_flight;
                    accepted_why = reason::RESUMED;
                    accepted_message = format!(
                        "resumed from Checkpoint {} in AgentPool {}",
                        from.checkpoint, task.spec.pool_ref.name
                    );
                    let done = memory
                        .status
                        .subtasks
                        .iter()
                        .filter(|s| s.phase == SubtaskPhase::Succeeded)
                        .count();
                    let note = format!(
                        "resumed from Checkpoint {}: {done} of {} subtask(s) already done",
                        from.checkpoint,
                        memory.status.subtasks.len(),
                    );
                    ctx.event(task, EventType::Normal, reason::RESUMED, "Resume", note)
                        .await;
                    None
                }
                Resume::Wait { why, message } => Some((why, message, false)),
                Resume::Fail { why, message } => Some((why, message, true)),
            };
            if let Some((why, message, permanent)) = refused {
                lifecycle::set(
                    &mut memory.status,
                    cond::ACCEPTED,
                    "False",
                    why,
                    &message,
                    generation,
                    now,
                );
                if permanent {
                    finish_failed(&mut memory.status, why, &message, generation, now);
                }
                write_status(task, ctx, api, memory, before, true).await?;
                return Ok(if permanent {
                    Action::await_change()
                } else {
                    Action::requeue(POOL_RECHECK)
                });
            }
        }
        register(task, &pool, &coord).await?;
        memory.registered = true;
        memory.status.pool_uid = Some(pool_uid.clone());
        lifecycle::set(
            &mut memory.status,
            cond::ACCEPTED,
            "True",
            accepted_why,
            &accepted_message,
            generation,
            now,
        );
        let accepted_at = accepted_at(&memory.status, now);
        enqueue(task, &pool, &coord, redispatch, accepted_at, now).await?;
    } else if !coord.exists().await? {
        return state_lost(task, ctx, api, memory, before, &pool, &coord).await;
    }
    super::event_pump::ensure(ctx, &mut memory.pump, &coord, task);

    // Fold what the agents reported.
    let retry_limit = task.spec.retry_strategy.limit;
    // An agent's account of why it could not reserve its next call, if one could not.
    let mut budget_refused: Option<String> = None;
    let mut newest_event_ms: Option<u64> = None;
    let consumer = memory
        .consumer
        .get_or_insert_with(|| coord.events().consumer(GROUP_OPERATOR, EVENT_CONSUMER));
    for _ in 0..EVENT_BATCHES {
        let batch = consumer.next(EVENT_BATCH, None).await?;
        if batch.is_empty() {
            break;
        }
        let full = batch.len() >= EVENT_BATCH;
        for delivered in batch {
            memory.unacked.push(delivered.entry.clone());
            let Some(position) = EntryPosition::parse(delivered.entry.as_str()) else {
                continue;
            };
            let last = memory
                .status
                .last_event_id
                .as_deref()
                .and_then(EntryPosition::parse);
            let cost_before = cost_of(&memory.status);
            let subtask_before = memory
                .status
                .subtasks
                .iter()
                .find(|s| s.name == delivered.event.subtask)
                .cloned();
            let folded = fold(
                &mut memory.status,
                &position,
                last.as_ref(),
                &delivered.event,
                retry_limit,
                &ctx.settings.prices,
                now,
            );
            if folded == Folded::AlreadyFolded {
                continue;
            }
            memory.status.last_event_id = Some(delivered.entry.to_string());
            newest_event_ms = Some(position.millis());
            match &delivered.event.kind {
                EventKind::TokensUsed {
                    model,
                    input,
                    output,
                    cache_read,
                    cache_creation,
                } => {
                    ctx.metrics.add_tokens(model, "input", *input);
                    ctx.metrics.add_tokens(model, "output", *output);
                    ctx.metrics.add_tokens(model, "cache_read", *cache_read);
                    ctx.metrics
                        .add_tokens(model, "cache_creation", *cache_creation);
                    let added = cost_of(&memory.status) - cost_before;
                    if added > 0.0 {
                        ctx.metrics.add_cost(added);
                    }
                }
                EventKind::SubtaskSucceeded if folded == Folded::Changed => {
                    if let Some(started) = subtask_before.and_then(|s| s.started_at) {
                        let seconds = now.duration_since(started.0).as_secs_f64();
                        ctx.metrics.observe_subtask(seconds.max(0.0));
                    }
                }
                EventKind::SubtaskFailed { reason } => {
                    let why = FailReason::of_message(reason);
                    if why == Some(FailReason::BudgetExceeded) {
                        budget_refused = Some(reason.clone());
                    }
                    if folded != Folded::Changed {
                        continue;
                    }
                    // The reason's name only: its detail may quote the API's answer.
                    tracing::info!(
                        task = %task.name_any(),
                        namespace = %namespace,
                        subtask = %delivered.event.subtask,
                        attempt = delivered.event.attempt,
                        agent = %delivered.event.agent,
                        reason = why.map_or("Unknown", FailReason::as_str),
                        "subtask attempt failed"
                    );
                }
                _ => {}
            }
        }
        if !full {
            break;
        }
    }

    // Facts from Redis the decision needs.
    let plan_result = if memory.status.plan_revision.is_none()
        && memory
            .status
            .subtasks
            .iter()
            .any(|s| s.name == PLAN && s.phase == SubtaskPhase::Succeeded)
    {
        coord
            .results()
            .get(&SubtaskName::new(PLAN)?)
            .await?
            .map(|r| r.result)
    } else {
        None
    };
    memory.status.budget = token_budget(task, &coord).await?;
    let budget_exhausted = budget_exhausted(task, &memory.status, budget_refused.as_deref());
    let accepted_at = accepted_at(&memory.status, now);
    let pool_blocker = cached_pool.as_deref().and_then(lifecycle::pool_blocker);
    let facts = Facts {
        now,
        accepted_at,
        plan_result: plan_result.as_deref(),
        budget_exhausted,
        generation,
        pool_blocker: pool_blocker.as_deref(),
    };
    let outcome = lifecycle::advance(&task.spec, &mut memory.status, &facts);

    for effect in outcome.effects {
        match effect {
            Effect::AcceptPlan(subtasks) => coord.plan().set_subtasks(&subtasks).await?,
            Effect::RejectPlan { feedback } => {
                let plan = SubtaskName::new(PLAN)?;
                coord.results().forget(&plan).await?;
                coord.journal(&plan).clear().await?;
                coord.plan().set_feedback(&feedback).await?;
            }
            Effect::Dispatch(orders) => {
                // Before the retry can be claimed: it must not replay the attempt it retries.
                for order in orders.iter().filter(|o| o.attempt > 1) {
                    let why = memory
                        .status
                        .subtasks
                        .iter()
                        .find(|s| s.name == order.subtask.as_str())
                        .and_then(status::last_failure)
                        .unwrap_or("the attempt failed");
                    coord
                        .journal(&order.subtask)
                        .end_before(order.attempt, why)
                        .await?;
                }
                let items = enqueue(task, &pool, &coord, orders, accepted_at, now).await?;
                if let Some(ready_ms) = newest_event_ms {
                    let waited = unix_ms().saturating_sub(ready_ms);
                    for _ in &items {
                        ctx.metrics.observe_dispatch(waited as f64 / 1000.0);
                    }
                }
            }
            Effect::Cancel { reason } => {
                coord.cancel(&reason).await?;
                pool.queue().purge_task(coord.keys().task()).await?;
            }
            Effect::Complete => {
                super::result::complete(task, ctx, &coord, &mut memory.status, now).await?;
            }
        }
    }

    if task.spec.checkpoint.is_some() && !is_finished(&memory.status) {
        let due =
            task_checkpoints::periodic(task, ctx, memory.next_checkpoint, accepted_at, now).await?;
        memory.next_checkpoint = Some(due);
    }
    let newest = super::newest_checkpoints::last_checkpoint(ctx, &uid);
    if newest.is_some() && newest != memory.status.last_checkpoint {
        memory.status.last_checkpoint = newest;
    }

    let wrote = write_status(task, ctx, api, memory, before, false).await?;
    if is_finished(&memory.status) {
        return finished(task, ctx, memory, now).await;
    }
    // Woken at once by events; otherwise at the next due moment.
    let mut wait = SAFETY_REQUEUE;
    if let Some(at) = outcome.wake_at {
        wait = wait.min(until(now, at));
    }
    if let Some(at) = memory.next_checkpoint {
        wait = wait.min(until(now, at));
    }
    if !wrote && memory.written.as_ref() != Some(&memory.status) {
        let since = memory.written_at.map_or(Duration::ZERO, |at| at.elapsed());
        wait = wait.min(ctx.settings.status_interval.saturating_sub(since));
    }
    Ok(Action::requeue(wait.max(Duration::from_millis(10))))
}

/// Writes the status if the phase changed, `force` is set, or the status interval passed;
/// acks the events it folded once written. Returns whether it wrote.
async fn write_status(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    force: bool,
) -> Result<bool, Error> {
    let phase = phase_of(&memory.status);
    memory.status.phase = Some(phase);
    let overwritten = memory.overwritten;
    if memory.written.as_ref() == Some(&memory.status) && !overwritten {
        ack(memory, task, ctx).await;
        return Ok(false);
    }
    let written_phase = memory.written.as_ref().and_then(|s| s.phase);
    let due = memory
        .written_at
        .is_none_or(|at| at.elapsed() >= ctx.settings.status_interval);
    if !(force || due || overwritten || written_phase != Some(phase)) {
        return Ok(false);
    }
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

/// Whether the API server's status is neither of the last two this process wrote, in what a
/// user sees (phase, progress, result, conditions, subtask phases): someone else wrote it, and
/// the operator, which owns status, writes its own back. Timestamps are left out: the API server
/// may store them at another precision than they were sent.
fn overwritten_by_someone_else(cached: Option<&TaskStatus>, memory: &TaskMemory) -> bool {
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

async fn phase_event(
    task: &Task,
    ctx: &Context,
    status: &TaskStatus,
    from: Option<TaskPhase>,
    phase: TaskPhase,
) {
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

/// The Task's token budget as the agents account it in Redis, when it has one.
async fn token_budget(
    task: &Task,
    coord: &maos_core::coord::Task,
) -> Result<Option<BudgetStatus>, Error> {
    let Some(limit) = task.spec.budget.as_ref().and_then(|b| b.max_tokens) else {
        return Ok(None);
    };
    let usage = coord.budget().usage().await?;
    Ok(Some(BudgetStatus {
        max_tokens: limit,
        spent_tokens: usage.spent,
        reserved_tokens: usage.reserved,
    }))
}

/// Whether the Task's budget is spent: tokens (`status.budget`), cost (`status.usage`), or an
/// agent that could not reserve its next call (`refused`: its `BudgetExceeded: …` reason).
fn budget_exhausted(task: &Task, status: &TaskStatus, refused: Option<&str>) -> Option<String> {
    let budget = task.spec.budget.as_ref()?;
    if let Some(tokens) = status.budget.filter(|b| b.spent_tokens >= b.max_tokens) {
        return Some(format!(
            "the token budget ({}) is spent: {} tokens used",
            tokens.max_tokens, tokens.spent_tokens
        ));
    }
    if let Some(max) = budget
        .max_cost_usd
        .as_deref()
        .and_then(|c| c.parse::<f64>().ok())
    {
        let cost = cost_of(status);
        if cost >= max {
            return Some(format!(
                "the cost budget (${max:.2}) is spent: ${cost:.4} used"
            ));
        }
    }
    refused.map(|reason| {
        let detail = reason
            .split_once(':')
            .map_or(reason, |(_, detail)| detail)
            .trim();
        format!("an agent could not reserve its next model call: {detail}")
    })
}

fn cost_of(status: &TaskStatus) -> f64 {
    status
        .usage
        .as_ref()
        .and_then(|u| u.cost_usd.as_deref())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0.0)
}

/// A finished Task: its transient Redis keys go after the retention ([`retain`]); the Task
/// is deleted after `ttlSecondsAfterFinished`, as Kubernetes Jobs are.
async fn finished(
    task: &Task,
    ctx: &Context,
    memory: &mut TaskMemory,
    now: Timestamp,
) -> Result<Action, Error> {
    let retention_left = retain(task, ctx, memory, now).await?;
    let requeue = |wait: Option<Duration>| match (wait, retention_left) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Action::requeue(a),
        (None, None) => Action::await_change(),
    };
    let Some(ttl) = task.spec.ttl_seconds_after_finished else {
        return Ok(requeue(None));
    };
    let completed = memory.status.completed_at.as_ref().map_or(now, |t| t.0);
    let expires = completed
        .checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .unwrap_or(Timestamp::MAX);
    if now < expires {
        return Ok(requeue(Some(until(now, expires))));
    }
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    tracing::info!(task = %task.name_any(), ttl, "deleting the finished Task: ttlSecondsAfterFinished passed");
    match api
        .delete(&task.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    Ok(Action::await_change())
}

/// Bounds a finished Task's Redis memory: its conversations (journals), events, messages,
/// applied effects and dispatch markers go `--finished-task-retention-seconds` after it
/// finished; what its status, result and a later Checkpoint or resume read (identity and plan,
/// shared state, results, budget, cancel reason) stays until the Task is deleted.
///
/// Restart-safe without a timer of its own: the moment is `status.completedAt` + retention, the
/// keys get it as an absolute Redis expiry (so Redis drops them even with no operator running),
/// and when it passes the operator deletes them again together with what has no expiry (the
/// pool's dispatch markers, queue items left behind, keys an agent wrote after the finish).
/// Returns how long until then, or `None` once done.
async fn retain(
    task: &Task,
    ctx: &Context,
    memory: &mut TaskMemory,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    if memory.retired {
        return Ok(None);
    }
    let (Some(pool_uid), Some(uid)) = (memory.status.pool_uid.as_deref(), task.uid()) else {
        // Never registered: it has no keys.
        memory.retired = true;
        return Ok(None);
    };
    let pool = Pool::new(ctx.redis.clone(), &PoolUid::new(pool_uid)?);
    let task_uid = TaskUid::new(&uid)?;
    // A finished status always has the moment; without one there is nothing to wait for.
    let ends = lifecycle::retention_ends(&memory.status, ctx.settings.finished_task_retention)
        .unwrap_or(now);
    if now < ends {
        if !memory.expiry_set {
            let at_ms = u64::try_from(ends.as_millisecond()).unwrap_or(0);
            pool.task(&task_uid).expire_transient_at(at_ms).await?;
            memory.expiry_set = true;
        }
        // Looked at again at least hourly: a timer years away is more than the runtime's
        // timer wheel takes, and the moment is recomputed from the status anyway.
        return Ok(Some(until(now, ends).min(RETENTION_RECHECK)));
    }
    let dropped = pool.retire_task(&task_uid).await?;
    tracing::info!(task = %task.name_any(), namespace = %task.namespace().unwrap_or_default(), keys = dropped, "the finished Task's retention ended: dropped its conversations, events and messages");
    memory.retired = true;
    Ok(None)
}

/// Replaces the working status with one rebuilt from a snapshot; the event consumer starts
/// afresh (its group was recreated at the snapshot status's newest folded event).
fn adopt(memory: &mut TaskMemory, status: TaskStatus) {
    memory.status = status;
    memory.consumer = None;
    memory.unacked.clear();
}

/// Registers the Task in Redis (identity, event groups, token and cost budget, goal) and makes sure its
/// pool's queue group exists (after a flushed Redis it is gone too). Safe to repeat.
async fn register(task: &Task, pool: &Pool, coord: &maos_core::coord::Task) -> Result<(), Error> {
    let budget = task.spec.budget.as_ref();
    coord
        .register(Limits {
            tokens: budget.and_then(|b| b.max_tokens),
            // The schema admits only amounts micro_usd reads exactly.
            cost_micro_usd: budget
                .and_then(|b| b.max_cost_usd.as_deref())
                .and_then(micro_usd),
        })
        .await?;
    coord
        .plan()
        .set_goal(&Goal {
            prompt: task.spec.prompt.clone(),
            max_subtasks: task.spec.max_subtasks,
        })
        .await?;
    pool.queue().ensure_group().await?;
    Ok(())
}

/// When the Task was accepted (`now` if it is not yet): its `activeDeadlineSeconds` counts
/// from then.
fn accepted_at(status: &TaskStatus, now: Timestamp) -> Timestamp {
    find_condition(&status.conditions, cond::ACCEPTED)
        .filter(|c| c.status == "True")
        .map_or(now, |c| c.last_transition_time.0)
}

/// Puts `orders` on the pool's queue, each (subtask, attempt) at most once; returns the items.
async fn enqueue(
    task: &Task,
    pool: &Pool,
    coord: &maos_core::coord::Task,
    orders: Vec<lifecycle::WorkOrder>,
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

async fn state_lost(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    pool: &Pool,
    coord: &maos_core::coord::Task,
) -> Result<Action, Error> {
    let now = now();
    if let Some((checkpoint, restored)) =
        task_checkpoints::recover(task, ctx, coord.keys(), &memory.status).await?
    {
        let Restored {
            status,
            redispatch,
            redone,
        } = restored;
        adopt(memory, status);
        register(task, pool, coord).await?;
        enqueue(
            task,
            pool,
            coord,
            redispatch,
            accepted_at(&memory.status, now),
            now,
        )
        .await?;
        memory.registered = true;
        let note = if redone.is_empty() {
            format!("Redis state lost; restored from Checkpoint {checkpoint}, nothing to redo")
        } else {
            format!(
                "Redis state lost; restored from Checkpoint {checkpoint}; redoing {}: {}",
                redone.len(),
                redone.join(", ")
            )
        };
        tracing::warn!(task = %task.name_any(), checkpoint = %checkpoint, redone = redone.len(), "Redis state lost; restored from a checkpoint");
        ctx.event(
            task,
            EventType::Warning,
            reason::STATE_RESTORED,
            "Restore",
            note,
        )
        .await;
        write_status(task, ctx, api, memory, before, true).await?;
        return Ok(Action::requeue(Duration::from_millis(10)));
    }
    finish_failed(
        &mut memory.status,
        reason::STATE_LOST,
        "the Task's state in Redis is gone (its meta key is missing) and no checkpoint restored it",
        task.metadata.generation,
        now,
    );
    write_status(task, ctx, api, memory, before, true).await?;
    Ok(Action::await_change())
}

/// Whether `pool` is the live AgentPool with uid `uid` (not gone, not replaced by a namesake,
/// not being deleted).
fn pool_lives(pool: Option<&AgentPool>, uid: &str) -> bool {
    pool.is_some_and(|p| {
        p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()
    })
}

/// The Task's pool was deleted under it: its agents and queue are gone, so nothing can finish
/// it. It fails with `PoolDeleted` and its Redis keys go (a Checkpoint taken before still
/// resumes it in a new Task); a pool recreated under the same name is another pool.
async fn pool_deleted(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    pool: &Pool,
    coord: &maos_core::coord::Task,
) -> Result<Action, Error> {
    let now = now();
    let message = format!(
        "AgentPool {} was deleted while the Task ran; its unfinished subtasks were cancelled",
        task.spec.pool_ref.name
    );
    tracing::info!(task = %task.name_any(), namespace = %task.namespace().unwrap_or_default(), pool = %task.spec.pool_ref.name, "the Task's pool was deleted; failing the Task");
    pool.delete_task(coord.keys().task()).await?;
    memory.pump = None;
    memory.consumer = None;
    memory.unacked.clear();
    finish_failed(
        &mut memory.status,
        reason::POOL_DELETED,
        &message,
        task.metadata.generation,
        now,
    );
    write_status(task, ctx, api, memory, before, true).await?;
    Ok(Action::await_change())
}

/// Deletion: stop the agents, drop queued work, wait (bounded) for agents still holding an
/// item of the Task, then remove every key of the Task.
async fn cleanup(task: &Task, ctx: &Context) -> Result<Action, Error> {
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
    drop(take_memory(ctx, &uid));
    if let Ok(mut newest) = ctx.newest_checkpoints.lock() {
        newest.remove(&uid);
    }
    ctx.metrics.set_task_phase(&uid, None);
    let Some(pool_uid) = task.status.as_ref().and_then(|s| s.pool_uid.clone()) else {
        return Ok(Action::await_change());
    };
    let deleted_at = task
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or_else(now, |t| t.0);
    let orphan = orphans::Orphan::Task {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        task_uid: uid.clone(),
        pool_uid: pool_uid.clone(),
        since: now(),
    };
    orphans::clean_or_let_go(
        ctx,
        task,
        orphan,
        remove_keys(task, ctx, &uid, &pool_uid, deleted_at),
    )
    .await
}

/// The Redis part of a deleted Task's cleanup: cancel, wait (up to the grace) for agents still
/// working it, then remove its queue entries and keys.
async fn remove_keys(
    task: &Task,
    ctx: &Context,
    uid: &str,
    pool_uid: &str,
    deleted_at: Timestamp,
) -> Result<Action, Error> {
    let pool = Pool::new(ctx.redis.clone(), &PoolUid::new(pool_uid)?);
    let task_uid = TaskUid::new(uid)?;
    let coord = pool.task(&task_uid);
    let queue = pool.queue();
    coord.cancel("the Task was deleted").await?;
    // Counted before the purge, which drops claimed items too: an agent that holds one stops
    // at its next turn (it sees the cancel) and acks it.
    let working = queue.pending_for_task(&task_uid).await?;
    let grace =
        SignedDuration::try_from(ctx.settings.cleanup_grace).unwrap_or(SignedDuration::ZERO);
    if working > 0 && now() < deleted_at.checked_add(grace).unwrap_or(Timestamp::MAX) {
        return Err(Error::AgentsStillWorking(task.name_any()));
    }
    let removed = orphans::remove_task_keys(&ctx.redis, pool_uid, uid).await?;
    tracing::info!(task = %task.name_any(), keys = removed, "removed the Task's Redis keys");
    Ok(Action::await_change())
}

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

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Tasks to wake because `pool` changed: those waiting for it to appear, those on it while it
/// is deleted, and those whose `Blocked` phase no longer matches whether it can run agents.
pub fn tasks_of_pool(
    store: &kube::runtime::reflector::Store<Task>,
    pool: &AgentPool,
) -> Vec<ObjectRef<Task>> {
    let (name, namespace) = (pool.name_any(), pool.namespace());
    let blocker = lifecycle::pool_blocker(pool);
    let deleted = pool.metadata.deletion_timestamp.is_some();
    store
        .state()
        .iter()
        .filter(|t| t.namespace() == namespace && t.spec.pool_ref.name == name)
        .filter(|t| {
            let Some(status) = t.status.as_ref() else {
                return true;
            };
            if status.pool_uid.is_none() {
                return true;
            }
            let shown = find_condition(&status.conditions, cond::PROGRESSING)
                .filter(|c| c.reason == reason::POOL_NOT_READY)
                .map(|c| c.message.as_str());
            !is_finished(status) && (deleted || shown != blocker.as_deref())
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}
