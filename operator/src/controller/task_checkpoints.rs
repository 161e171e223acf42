//! The Task controller's checkpoint duties: periodic Checkpoints with pruning, resuming a new
//! Task from a Checkpoint, recovering a running Task whose Redis state vanished, and the
//! `status.lastCheckpoint` summary.

use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use maos_core::api::v1alpha1::conditions::reason;
use maos_core::api::v1alpha1::{
    Checkpoint, CheckpointPhase, CheckpointSpec, Task, TaskRef, TaskStatus,
};
use maos_core::coord::dump;
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::{TaskKeys, queue::EntryId};
use maos_core::meta::LABEL_TASK;

use super::checkpoint_state::{is_corrupt, is_saved};
use super::owned::child_meta;
use super::{Context, Error};
use crate::checkpoint::resume::{self, Restored};
use crate::checkpoint::snapshot::Snapshot;
use crate::checkpoint::store::{ObjectRef as S3Object, StoreError};

/// What resuming a new Task from its `spec.resumeFrom` came to.
pub(crate) enum Resume {
    /// The state is restored; continue from this.
    Restored(Box<Restored>),
    /// Not possible yet (the Checkpoint is missing or still saving, storage unreachable).
    Wait {
        /// Condition reason.
        why: &'static str,
        /// Condition message.
        message: String,
    },
    /// Never possible (the Checkpoint failed, its object is corrupt).
    Fail {
        /// Condition reason.
        why: &'static str,
        /// Condition message.
        message: String,
    },
}

/// The Task a Checkpoint belongs to, to wake it when the Checkpoint changes.
pub fn task_of_checkpoint(checkpoint: &Checkpoint) -> Option<ObjectRef<Task>> {
    let namespace = checkpoint.namespace()?;
    Some(ObjectRef::new(&checkpoint.spec.task_ref.name).within(&namespace))
}

/// Loads `checkpoint`'s snapshot (checking its sha256) and writes its state under `keys`.
/// `fresh` (a resume into a new Task) drops the old Task's cancel mark.
async fn restore(
    ctx: &Context,
    checkpoint: &Checkpoint,
    keys: &TaskKeys,
    fresh: bool,
) -> Result<Result<Snapshot, StoreError>, Error> {
    match load(ctx, checkpoint).await {
        Ok(snapshot) => write_back(ctx, snapshot, keys, fresh).await.map(Ok),
        Err(err) => Ok(Err(err)),
    }
}

/// Reads and checks the snapshot a Saved Checkpoint points at; writes nothing.
async fn load(ctx: &Context, checkpoint: &Checkpoint) -> Result<Snapshot, StoreError> {
    let status = checkpoint.status.clone().unwrap_or_default();
    let (Some(location), Some(sha256)) = (status.location, status.sha256) else {
        return Err(StoreError::ObjectNotFound {
            location: format!(
                "Checkpoint {} (no location recorded)",
                checkpoint.name_any()
            ),
        });
    };
    let Some(object) = S3Object::parse(&location) else {
        return Err(StoreError::ObjectNotFound { location });
    };
    ctx.store().load(&object, &sha256).await
}

/// Writes a snapshot's Redis state under `keys` (a `fresh` Task does not inherit a cancel).
async fn write_back(
    ctx: &Context,
    mut snapshot: Snapshot,
    keys: &TaskKeys,
    fresh: bool,
) -> Result<Snapshot, Error> {
    if fresh {
        snapshot.state.keys.remove("cancel");
    }
    // Events past the newest one the snapshot's status folded are delivered again.
    let folded = snapshot
        .status
        .last_event_id
        .clone()
        .unwrap_or_else(|| EntryId::zero().to_string());
    snapshot
        .state
        .set_group_position("events", GROUP_OPERATOR, &folded);
    dump::restore(&ctx.redis, keys, &snapshot.state).await?;
    Ok(snapshot)
}

/// Resumes a new Task from the Checkpoint its `spec.resumeFrom` names.
pub(crate) async fn resume(
    task: &Task,
    ctx: &Context,
    keys: &TaskKeys,
    now: Timestamp,
) -> Result<Resume, Error> {
    let Some(from) = &task.spec.resume_from else {
        return Ok(Resume::Fail {
            why: reason::INVALID_SPEC,
            message: "no spec.resumeFrom".to_owned(),
        });
    };
    let namespace = task.namespace().unwrap_or_default();
    let checkpoints: Api<Checkpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(checkpoint) = checkpoints.get_opt(&from.checkpoint).await? else {
        return Ok(Resume::Wait {
            why: reason::CHECKPOINT_NOT_FOUND,
            message: format!(
                "Checkpoint {} not found in namespace {namespace}; waiting for it",
                from.checkpoint
            ),
        });
    };
    match checkpoint.status.as_ref().and_then(|s| s.phase) {
        Some(CheckpointPhase::Saved) => {}
        Some(CheckpointPhase::Failed) => {
            return Ok(Resume::Fail {
                why: reason::CHECKPOINT_FAILED,
                message: format!(
                    "Checkpoint {} failed; there is nothing to resume from",
                    from.checkpoint
                ),
            });
        }
        _ => {
            return Ok(Resume::Wait {
                why: reason::CHECKPOINT_NOT_FOUND,
                message: format!("waiting for Checkpoint {} to be saved", from.checkpoint),
            });
        }
    }
    let snapshot = match load(ctx, &checkpoint).await {
        // Checked before anything is written: a refused resume leaves Redis untouched.
        Ok(snapshot) => {
            let fields = resume::mismatched_fields(&snapshot.spec, &task.spec);
            if !fields.is_empty() && !from.allow_spec_change {
                return Ok(Resume::Fail {
                    why: reason::CHECKPOINT_MISMATCH,
                    message: format!(
                        "Checkpoint {} was taken of Task {}, whose {} differ from this Task's; set spec.resumeFrom.allowSpecChange: true to resume anyway",
                        from.checkpoint,
                        snapshot.task.name,
                        fields.join(", ")
                    ),
                });
            }
            write_back(ctx, snapshot, keys, true).await?
        }
        Err(err) if is_corrupt(&err) => {
            return Ok(Resume::Fail {
                why: if matches!(err, StoreError::Corrupt { .. }) {
                    reason::CHECKPOINT_CORRUPT
                } else {
                    err.reason()
                },
                message: format!("{err}; nothing was restored"),
            });
        }
        Err(err) => {
            return Ok(Resume::Wait {
                why: err.reason(),
                message: format!("cannot read Checkpoint {}: {err}", from.checkpoint),
            });
        }
    };
    ctx.metrics.state_restored("resume");
    Ok(Resume::Restored(Box::new(resume::resumed(
        &snapshot.status,
        &from.checkpoint,
        task.metadata.generation,
        now,
    ))))
}

/// Restores a registered Task whose Redis state is gone from its newest Saved Checkpoint that
/// can be read (a corrupt one is skipped, with a Warning). `None` when there is none.
pub(crate) async fn recover(
    task: &Task,
    ctx: &Context,
    keys: &TaskKeys,
    current: &TaskStatus,
) -> Result<Option<(String, Restored)>, Error> {
    let uid = task.uid().unwrap_or_default();
    let namespace = task.namespace().unwrap_or_default();
    let checkpoints: Api<Checkpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut candidates: Vec<Checkpoint> = checkpoints
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(is_saved)
        .filter(|c| c.status.as_ref().and_then(|s| s.task_uid.as_deref()) == Some(uid.as_str()))
        .collect();
    candidates.sort_by_key(|c| {
        std::cmp::Reverse(
            c.status
                .as_ref()
                .and_then(|s| s.saved_at.as_ref().map(|t| t.0)),
        )
    });
    for checkpoint in candidates {
        match restore(ctx, &checkpoint, keys, false).await? {
            Ok(snapshot) => {
                ctx.metrics.state_restored("recovery");
                return Ok(Some((
                    checkpoint.name_any(),
                    resume::recovered(current, &snapshot.status),
                )));
            }
            Err(err) => {
                ctx.event(
                    task,
                    EventType::Warning,
                    "CheckpointUnusable",
                    "Restore",
                    format!(
                        "Checkpoint {} cannot be restored: {err}",
                        checkpoint.name_any()
                    ),
                )
                .await;
                if !is_corrupt(&err) && !matches!(err, StoreError::ObjectNotFound { .. }) {
                    // Storage trouble, not a bad checkpoint: try again rather than fall back
                    // to an older one or give up.
                    return Err(Error::Store(err));
                }
            }
        }
    }
    Ok(None)
}

/// The index in a periodic Checkpoint's name `<task>-ckpt-<n>`.
fn index_of(task: &str, checkpoint: &str) -> Option<u64> {
    checkpoint
        .strip_prefix(task)?
        .strip_prefix("-ckpt-")?
        .parse()
        .ok()
}

/// The checkpoint timing of one reconcile of a live Task: a periodic Checkpoint when one is
/// due (for a Task that asks for them and has not finished; `next` is when the next one is),
/// and the newest Saved one in `status.lastCheckpoint`.
pub(crate) async fn keep_up(
    task: &Task,
    ctx: &Arc<Context>,
    uid: &str,
    status: &mut TaskStatus,
    next: &mut Option<Timestamp>,
    accepted_at: Timestamp,
    now: Timestamp,
) -> Result<(), Error> {
    if task.spec.checkpoint.is_some() && !crate::lifecycle::is_finished(status) {
        *next = Some(periodic(task, ctx, *next, accepted_at, now).await?);
    }
    let newest = super::newest_checkpoints::last_checkpoint(ctx, uid);
    if newest.is_some() && newest != status.last_checkpoint {
        status.last_checkpoint = newest;
    }
    Ok(())
}

/// Takes a periodic Checkpoint when `due` has come and prunes the old ones beyond `keep`.
/// Returns when the next one is due.
pub(crate) async fn periodic(
    task: &Task,
    ctx: &Arc<Context>,
    due: Option<Timestamp>,
    accepted_at: Timestamp,
    now: Timestamp,
) -> Result<Timestamp, Error> {
    let Some(policy) = &task.spec.checkpoint else {
        return Ok(Timestamp::MAX);
    };
    let interval = SignedDuration::from_secs(i64::from(policy.interval_seconds));
    let name = task.name_any();
    let uid = task.uid().unwrap_or_default();
    let namespace = task.namespace().unwrap_or_default();
    let api: Api<Checkpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = |list: Vec<Checkpoint>| -> Vec<(u64, Checkpoint)> {
        let mut owned: Vec<(u64, Checkpoint)> = list
            .into_iter()
            .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
            .filter_map(|c| Some((index_of(&name, &c.name_any())?, c)))
            .collect();
        owned.sort_by_key(|(n, _)| *n);
        owned
    };
    let selector = ListParams::default().labels(&format!("{LABEL_TASK}={name}"));
    let mut listed = None;
    let due = match due {
        Some(due) => due,
        None => {
            // First look in this process: continue the schedule the Checkpoints show.
            let existing = owned(api.list(&selector).await?.items);
            let base = existing
                .last()
                .and_then(|(_, c)| c.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(accepted_at);
            listed = Some(existing);
            base.checked_add(interval).unwrap_or(Timestamp::MAX)
        }
    };
    if now < due {
        return Ok(due);
    }
    let existing = match listed {
        Some(existing) => existing,
        None => owned(api.list(&selector).await?.items),
    };
    let next = existing.last().map_or(1, |(n, _)| n + 1);
    let checkpoint_name = format!("{name}-ckpt-{next:05}");
    let mut checkpoint = Checkpoint::new(
        &checkpoint_name,
        CheckpointSpec {
            task_ref: TaskRef { name: name.clone() },
            storage: None,
        },
    );
    checkpoint.metadata = child_meta(task, &checkpoint_name)?;
    match api.create(&PostParams::default(), &checkpoint).await {
        Ok(_) => {}
        // Created by an earlier reconcile whose list was stale: the schedule goes on.
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(err.into()),
    }
    tracing::info!(task = %name, checkpoint = %checkpoint_name, "periodic checkpoint requested");
    let mut all: Vec<(u64, Checkpoint)> = existing;
    all.push((next, checkpoint));
    for name in surplus(&all, policy.keep as usize) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(now.checked_add(interval).unwrap_or(Timestamp::MAX))
}

/// The periodic Checkpoints (sorted by index) to delete so that the newest `keep` remain,
/// counting the ones still saving. A failed one never displaces a saved one: it is deleted
/// unless it is the newest (which stays to show why). One still saving is never deleted.
fn surplus(all: &[(u64, Checkpoint)], keep: usize) -> Vec<String> {
    let newest = all.last().map(|(n, _)| *n);
    let mut kept = 0;
    let mut doomed = Vec::new();
    for (n, checkpoint) in all.iter().rev() {
        match checkpoint.status.as_ref().and_then(|s| s.phase) {
            Some(CheckpointPhase::Failed) => {
                if Some(*n) != newest {
                    doomed.push(checkpoint.name_any());
                }
            }
            Some(CheckpointPhase::Saved) => {
                kept += 1;
                if kept > keep {
                    doomed.push(checkpoint.name_any());
                }
            }
            _ => kept += 1,
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64, phase: Option<CheckpointPhase>) -> (u64, Checkpoint) {
        let mut c = Checkpoint::new(
            &format!("t-ckpt-{n:05}"),
            CheckpointSpec {
                task_ref: TaskRef { name: "t".into() },
                storage: None,
            },
        );
        c.status = phase.map(|phase| maos_core::api::v1alpha1::CheckpointStatus {
            phase: Some(phase),
            ..Default::default()
        });
        (n, c)
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_lets_failures_push_out_saved_ones() {
        use CheckpointPhase::{Failed, Saved, Saving};
        let names = |v: Vec<String>| v.into_iter().collect::<Vec<_>>();
        // 4 saved and a new one: the oldest two go, so 3 remain with the new one.
        let all = [
            at(1, Some(Saved)),
            at(2, Some(Saved)),
            at(3, Some(Saved)),
            at(4, Some(Saved)),
            at(5, None),
        ];
        assert_eq!(names(surplus(&all, 3)), ["t-ckpt-00002", "t-ckpt-00001"]);
        // Failures: older ones go, none counts against the saved ones.
        let all = [
            at(1, Some(Saved)),
            at(2, Some(Saved)),
            at(3, Some(Failed)),
            at(4, Some(Failed)),
            at(5, Some(Failed)),
        ];
        assert_eq!(names(surplus(&all, 2)), ["t-ckpt-00004", "t-ckpt-00003"]);
        // One still saving is never deleted, even beyond `keep`.
        let all = [at(1, Some(Saving)), at(2, Some(Saved)), at(3, None)];
        assert_eq!(names(surplus(&all, 1)), ["t-ckpt-00002"]);
    }

    #[test]
    fn periodic_names_carry_their_index() {
        assert_eq!(index_of("t", "t-ckpt-00012"), Some(12));
        assert_eq!(index_of("t", "t-ckpt-x"), None);
        assert_eq!(index_of("t", "other-ckpt-00001"), None);
        assert_eq!(index_of("t-ckpt", "t-ckpt-ckpt-00003"), Some(3));
    }
}
