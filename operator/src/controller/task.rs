//! The Task controller: validates and registers a Task with its pool, folds the agents' events
//! into its status, carries out what [`crate::lifecycle::advance`] decides (plan, dispatch,
//! cancel, complete), writes the status at most about once a second (at once on a phase
//! change), and removes the Task's Redis keys when it is deleted.
//!
//! One reconcile of a live Task ([`step`]) reads, decides, applies: it reads what the decision
//! needs ([`attach`]: a valid spec, the pool and the Task's Redis state; [`events`]: the
//! agents' events folded into the status; [`facts`]: the rest), decides with
//! [`lifecycle::advance`], and applies what it decided ([`effects`], the checkpoint timing,
//! [`status_write`], [`requeue`]). [`lost`] handles a pool or Redis state gone under a running
//! Task, [`finished`] a finished Task's retention and TTL, [`cleanup`] a deleted Task's keys.
//!
//! Restart safety: status is the durable memory. Events are acked only after the status that
//! folded them is written (and folding skips entries up to `status.lastEventId`), and dispatch
//! goes through the queue's enqueue-once marker, so a restart neither loses nor repeats work.

mod attach;
mod cleanup;
mod effects;
mod events;
mod facts;
mod finished;
mod lost;
mod phase_event;
mod requeue;
mod status_write;

use std::sync::Arc;
use std::time::Instant;

pub use super::task_checkpoints::task_of_checkpoint;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::runtime::reflector::ObjectRef;
use maos_core::api::v1alpha1::conditions::{find_condition, reason, task as cond};
use maos_core::api::v1alpha1::{AgentPool, Task, TaskStatus};
use maos_core::coord::events::EventConsumer;
use maos_core::coord::queue::EntryId;
use maos_core::meta::FINALIZER_TASK;

use super::task_checkpoints;
use super::{Context, Error, from_finalizer, now};
use crate::lifecycle::{self, init_conditions, is_finished, phase_of};
use attach::Attached;
use status_write::{overwritten_by_someone_else, write_status};

pub use super::result::RESULT_KEY;

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
            Finalize::Cleanup(task) => cleanup::cleanup(&task, &ctx).await,
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

/// One reconcile of a live Task: read what the decision needs, decide, apply what it decided.
async fn step(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
) -> Result<Action, Error> {
    let now = now();
    let generation = task.metadata.generation;
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
    let before = phase_of(&memory.status);
    init_conditions(&mut memory.status, generation, now);
    memory.status.observed_generation = generation;
    if is_finished(&memory.status) {
        write_status(task, ctx, api, memory, before, true).await?;
        return finished::finished(task, ctx, memory, now).await;
    }

    // Read.
    let live = match attach::attach(task, ctx, api, memory, before, now).await? {
        Attached::Live(live) => live,
        Attached::Stopped(action) => return Ok(action),
    };
    super::event_pump::ensure(ctx, &mut memory.pump, &live.coord, task);
    let seen = events::fold_new(task, ctx, &live.coord, memory, now).await?;
    let read = facts::read(
        task,
        &live,
        &mut memory.status,
        seen.budget_refused.as_deref(),
        now,
    )
    .await?;

    // Decide.
    let outcome = lifecycle::advance(&task.spec, &mut memory.status, &read.facts(generation, now));

    // Apply.
    let timing = effects::Timing {
        now,
        accepted_at: read.accepted_at,
        newest_event_ms: seen.newest_ms,
    };
    effects::carry_out(
        task,
        ctx,
        &live,
        &mut memory.status,
        outcome.effects,
        &timing,
    )
    .await?;
    task_checkpoints::keep_up(
        task,
        ctx,
        &uid,
        &mut memory.status,
        &mut memory.next_checkpoint,
        read.accepted_at,
        now,
    )
    .await?;
    let wrote = write_status(task, ctx, api, memory, before, false).await?;
    if is_finished(&memory.status) {
        return finished::finished(task, ctx, memory, now).await;
    }
    Ok(Action::requeue(requeue::next_wait(
        now,
        outcome.wake_at,
        memory.next_checkpoint,
        status_write::unwritten_since(memory, wrote),
        ctx.settings.status_interval,
    )))
}

impl TaskMemory {
    /// Replaces the working status with one rebuilt from a snapshot; the event consumer starts
    /// afresh (its group was recreated at the snapshot status's newest folded event).
    fn adopt(&mut self, status: TaskStatus) {
        self.status = status;
        self.consumer = None;
        self.unacked.clear();
    }
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
