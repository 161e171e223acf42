//! The newest Saved Checkpoint of each Task, kept in memory by the Checkpoint controller for
//! the Tasks' `status.lastCheckpoint`.

use kube::ResourceExt;
use maos_core::api::v1alpha1::{Checkpoint, LastCheckpoint};

use super::Context;

/// The newest Saved Checkpoint of the Task with `uid` this process has seen.
pub(crate) fn last_checkpoint(ctx: &Context, uid: &str) -> Option<LastCheckpoint> {
    ctx.newest_checkpoints.lock().ok()?.get(uid).cloned()
}

/// Notes a Saved Checkpoint for its Task's `status.lastCheckpoint`, if it is the newest.
pub(crate) fn note_saved(ctx: &Context, checkpoint: &Checkpoint) {
    let Some(status) = checkpoint.status.as_ref() else {
        return;
    };
    let Some(uid) = status.task_uid.clone() else {
        return;
    };
    let saved = LastCheckpoint {
        name: checkpoint.name_any(),
        time: status.saved_at.clone(),
    };
    let key = |l: &LastCheckpoint| (l.time.as_ref().map(|t| t.0), l.name.clone());
    if let Ok(mut newest) = ctx.newest_checkpoints.lock() {
        let entry = newest.entry(uid).or_insert_with(|| saved.clone());
        if key(&saved) > key(entry) {
            *entry = saved;
        }
    }
}

/// Forgets a deleted Checkpoint if it was its Task's newest.
pub(crate) fn forget(ctx: &Context, checkpoint: &Checkpoint) {
    let Some(uid) = checkpoint
        .status
        .as_ref()
        .and_then(|s| s.task_uid.as_deref())
    else {
        return;
    };
    if let Ok(mut newest) = ctx.newest_checkpoints.lock()
        && newest
            .get(uid)
            .is_some_and(|l| l.name == checkpoint.name_any())
    {
        newest.remove(uid);
    }
}
