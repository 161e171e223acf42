//! A deleted Task's cleanup: its agents told to stop, its queued work dropped, agents still
//! holding its items waited for (up to the grace), then every Redis key of it removed, bounded
//! by [`orphans::clean_or_let_go`] when Redis cannot be reached.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use maos_core::api::v1alpha1::Task;
use maos_core::coord::{Pool, PoolUid, TaskUid};

use super::super::orphans;
use super::super::{Context, Error, now};
use super::take_memory;

/// Deletion: stop the agents, drop queued work, wait (bounded) for agents still holding an
/// item of the Task, then remove every key of the Task.
pub(super) async fn cleanup(task: &Task, ctx: &Context) -> Result<Action, Error> {
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
