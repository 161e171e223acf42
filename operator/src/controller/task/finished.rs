//! A finished Task: its transient Redis keys go after the retention ([`retain`]); the Task
//! itself is deleted after `ttlSecondsAfterFinished`, as Kubernetes Jobs are.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use maos_core::api::v1alpha1::Task;
use maos_core::coord::{Pool, PoolUid, TaskUid};

use super::super::{Context, Error};
use super::TaskMemory;
use super::requeue::{after_finish, until};
use crate::lifecycle;

/// Longest a finished Task waits before it looks at its retention again.
const RETENTION_RECHECK: Duration = Duration::from_secs(3600);

/// Looks after a finished Task: its retention, then its TTL.
pub(super) async fn finished(
    task: &Task,
    ctx: &Context,
    memory: &mut TaskMemory,
    now: Timestamp,
) -> Result<Action, Error> {
    let retention_left = retain(task, ctx, memory, now).await?;
    let Some(ttl) = task.spec.ttl_seconds_after_finished else {
        return Ok(after_finish(None, retention_left));
    };
    let expires = lifecycle::ttl_ends(&memory.status, ttl, now);
    if now < expires {
        return Ok(after_finish(Some(until(now, expires)), retention_left));
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
