//! The Checkpoint controller: snapshots a Task into object storage once (Pending → Saving →
//! Saved | Failed), and deletes the object when the Checkpoint is deleted.
//!
//! Consistency: the Task's status is read first, then all of its Redis keys in one MULTI/EXEC
//! transaction (they share one cluster slot, so it sees a single instant without pausing the
//! agents; see `maos_core::coord::dump`). The status therefore never claims more than the keys hold; events the status had
//! not folded yet are in the snapshot and are folded after a restore.

use std::sync::Arc;
use std::time::Instant;

use crate::lifecycle::MAX_CONDITION_MESSAGE;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use maos_core::api::v1alpha1::conditions::{checkpoint as cond, condition, reason, set_condition};
use maos_core::api::v1alpha1::{Checkpoint, CheckpointPhase, CheckpointStatus, Task};
use maos_core::coord::dump;
use maos_core::coord::{PoolUid, TaskKeys, TaskUid};
use maos_core::meta::{FIELD_MANAGER, FINALIZER_CHECKPOINT};

use super::newest_checkpoints::{forget, note_saved};
use super::{Context, Error, from_finalizer, now};
use crate::checkpoint::snapshot::{FORMAT, Snapshot, TaskIdentity};
use crate::checkpoint::store::ObjectRef as S3Object;
use crate::status::truncate;

/// Extra time the snapshot read may take beyond a normal reply (hundreds of MiB of state).
const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a Checkpoint of a Task that has not registered yet waits before looking again.
const TASK_NOT_STARTED_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Reconciles one Checkpoint.
pub async fn reconcile(checkpoint: Arc<Checkpoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = super::reconcile_span("checkpoint", checkpoint.as_ref());
    tracing::Instrument::instrument(reconcile_in_span(checkpoint, ctx), span).await
}

async fn reconcile_in_span(
    checkpoint: Arc<Checkpoint>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = checkpoint
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Checkpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = checkpoint.uid();
    let result = finalizer(&api, FINALIZER_CHECKPOINT, checkpoint, |event| async {
        match event {
            Finalize::Apply(checkpoint) => save(&checkpoint, &ctx, &api).await,
            Finalize::Cleanup(checkpoint) => remove(&checkpoint, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer);
    ctx.metrics
        .observe_reconcile("checkpoint", started.elapsed().as_secs_f64());
    super::note_outcome(&ctx, uid.as_deref(), &result);
    result
}

/// The object a Checkpoint is (or will be) stored as.
pub fn object_of(checkpoint: &Checkpoint, ctx: &Context) -> S3Object {
    let storage = checkpoint.spec.storage.as_ref();
    ctx.store().object_for(
        storage.and_then(|s| s.bucket.as_deref()),
        storage.and_then(|s| s.prefix.as_deref()),
        &checkpoint.namespace().unwrap_or_default(),
        &checkpoint.spec.task_ref.name,
        &checkpoint.name_any(),
    )
}

fn set_phase(
    status: &mut CheckpointStatus,
    phase: CheckpointPhase,
    why: &str,
    message: &str,
    generation: Option<i64>,
) {
    let value = match phase {
        CheckpointPhase::Saved => "True",
        CheckpointPhase::Failed => "False",
        CheckpointPhase::Pending | CheckpointPhase::Saving => "Unknown",
    };
    status.phase = Some(phase);
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        condition(
            cond::SUCCEEDED,
            value,
            why,
            truncate(message, MAX_CONDITION_MESSAGE),
            generation,
            Time(now()),
        ),
    );
}

async fn write(
    api: &Api<Checkpoint>,
    checkpoint: &Checkpoint,
    status: &CheckpointStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": Checkpoint::api_version(&()),
        "kind": Checkpoint::kind(&()),
        "status": status,
    });
    api.patch_status(
        &checkpoint.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn fail(
    api: &Api<Checkpoint>,
    ctx: &Context,
    checkpoint: &Checkpoint,
    mut status: CheckpointStatus,
    why: &str,
    message: &str,
) -> Result<Action, Error> {
    set_phase(
        &mut status,
        CheckpointPhase::Failed,
        why,
        message,
        checkpoint.metadata.generation,
    );
    write(api, checkpoint, &status).await?;
    ctx.metrics.checkpoint_finished("failed");
    ctx.event(
        checkpoint,
        EventType::Warning,
        why,
        "Save",
        truncate(message, MAX_CONDITION_MESSAGE),
    )
    .await;
    Ok(Action::await_change())
}

async fn save(
    checkpoint: &Checkpoint,
    ctx: &Arc<Context>,
    api: &Api<Checkpoint>,
) -> Result<Action, Error> {
    let generation = checkpoint.metadata.generation;
    let mut status = checkpoint.status.clone().unwrap_or_default();
    // A Checkpoint is taken once; its spec cannot change.
    if matches!(
        status.phase,
        Some(CheckpointPhase::Saved | CheckpointPhase::Failed)
    ) {
        // Known to this process from here on (after a restart too) for the Task's status.
        note_saved(ctx, checkpoint);
        return Ok(Action::await_change());
    }
    let namespace = checkpoint.namespace().unwrap_or_default();
    let task_name = &checkpoint.spec.task_ref.name;
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &namespace);
    // From before the status is read until the keys are: the Task's events stay untrimmed, so
    // those its status has not folded are all in the snapshot.
    let reading = ctx.checkpoint_read(&namespace, task_name);
    let Some(task) = tasks.get_opt(task_name).await? else {
        let message = format!("Task {task_name} not found in namespace {namespace}");
        return fail(
            api,
            ctx,
            checkpoint,
            status,
            reason::TASK_NOT_FOUND,
            &message,
        )
        .await;
    };
    let task_status = task.status.clone().unwrap_or_default();
    let (Some(pool_uid), Some(task_uid)) = (task_status.pool_uid.clone(), task.uid()) else {
        if crate::lifecycle::is_finished(&task_status) {
            let message =
                format!("Task {task_name} finished without ever running; there is nothing to save");
            return fail(api, ctx, checkpoint, status, "TaskNotStarted", &message).await;
        }
        if status.phase.is_none() {
            set_phase(
                &mut status,
                CheckpointPhase::Pending,
                "TaskNotStarted",
                &format!("waiting for Task {task_name} to be registered with its pool"),
                generation,
            );
            write(api, checkpoint, &status).await?;
        }
        return Ok(Action::requeue(TASK_NOT_STARTED_RECHECK));
    };
    let object = object_of(checkpoint, ctx);
    set_phase(
        &mut status,
        CheckpointPhase::Saving,
        "Saving",
        &format!("saving Task {task_name} to {object}"),
        generation,
    );
    status.location = Some(object.to_string());
    status.task_uid = Some(task_uid.clone());
    write(api, checkpoint, &status).await?;

    let started = Instant::now();
    let keys = TaskKeys::new(&PoolUid::new(&pool_uid)?, &TaskUid::new(&task_uid)?);
    // A connection of its own: a large state's reply would hold up every other request
    // multiplexed on the shared one.
    let redis = ctx.redis.dedicated(DUMP_TIMEOUT).await?;
    let state = dump::read(&redis, &keys).await?;
    drop(reading);
    drop(redis);
    if !state.has_meta() {
        let message = format!(
            "Task {task_name}'s Redis state is gone (its meta key is missing); nothing to save"
        );
        return fail(api, ctx, checkpoint, status, reason::STATE_LOST, &message).await;
    }
    let entries = state.entries();
    let snapshot = Snapshot {
        format: FORMAT,
        task: TaskIdentity {
            namespace: namespace.clone(),
            name: task_name.clone(),
            uid: task_uid,
            pool_uid,
        },
        spec: task.spec.clone(),
        status: task_status,
        state,
    };
    let saved = match ctx.store().save(&object, snapshot).await {
        Ok(saved) => saved,
        Err(err) => {
            let message = err.to_string();
            return fail(api, ctx, checkpoint, status, err.reason(), &message).await;
        }
    };
    let duration = started.elapsed();
    status.size_bytes = Some(saved.size);
    status.sha256 = Some(saved.sha256);
    status.entries = Some(entries);
    status.saved_at = Some(Time(now()));
    status.duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let message = format!("{entries} entries, {} bytes, in {object}", saved.size);
    set_phase(
        &mut status,
        CheckpointPhase::Saved,
        reason::SAVED,
        &message,
        generation,
    );
    // Noted before the write, whose watch event wakes the Task to show it.
    let mut saved_checkpoint = checkpoint.clone();
    saved_checkpoint.status = Some(status.clone());
    note_saved(ctx, &saved_checkpoint);
    write(api, checkpoint, &status).await?;
    ctx.metrics.checkpoint_finished("saved");
    ctx.metrics
        .observe_checkpoint_save(duration.as_secs_f64(), saved.size);
    tracing::info!(checkpoint = %checkpoint.name_any(), task = %task_name, entries, bytes = saved.size, ms = duration.as_millis() as u64, "checkpoint saved");
    ctx.event(
        checkpoint,
        EventType::Normal,
        reason::SAVED,
        "Save",
        message,
    )
    .await;
    Ok(Action::await_change())
}

async fn remove(checkpoint: &Checkpoint, ctx: &Arc<Context>) -> Result<Action, Error> {
    forget(ctx, checkpoint);
    let Some(location) = checkpoint
        .status
        .as_ref()
        .and_then(|s| s.location.as_deref())
    else {
        return Ok(Action::await_change());
    };
    let Some(object) = S3Object::parse(location) else {
        return Ok(Action::await_change());
    };
    match ctx.store().delete(&object).await {
        Ok(()) => Ok(Action::await_change()),
        Err(err) => {
            ctx.event(
                checkpoint,
                EventType::Warning,
                "DeleteFailed",
                "Delete",
                truncate(
                    &format!("{err}; the Checkpoint stays until its object is deleted"),
                    MAX_CONDITION_MESSAGE,
                ),
            )
            .await;
            Err(Error::Store(err))
        }
    }
}
