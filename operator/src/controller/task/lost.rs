//! What a running Task does when what it stands on is gone: its Redis state (restored from a
//! Checkpoint if one can, else the Task fails with `StateLost`) or its pool (the Task fails with
//! `PoolDeleted`).

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use maos_core::api::v1alpha1::conditions::reason;
use maos_core::api::v1alpha1::{Task, TaskPhase};
use maos_core::coord::Pool;

use super::super::task_checkpoints;
use super::super::{Context, Error, now};
use super::TaskMemory;
use super::attach::register;
use super::effects::enqueue;
use super::status_write::write_status;
use crate::checkpoint::resume::Restored;
use crate::lifecycle::{accepted_at, finish_failed};

/// The Task's Redis state vanished (a flushed or replaced Redis): restore it from the newest
/// usable Checkpoint and redo what that one did not hold, or fail the Task with `StateLost`.
pub(super) async fn state_lost(
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
        memory.adopt(status);
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

/// The Task's pool was deleted under it: its agents and queue are gone, so nothing can finish
/// it. It fails with `PoolDeleted` and its Redis keys go (a Checkpoint taken before still
/// resumes it in a new Task); a pool recreated under the same name is another pool.
pub(super) async fn pool_deleted(
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
