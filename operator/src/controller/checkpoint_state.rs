//! What a Checkpoint's status and its stored object say, as pure functions both the
//! Checkpoint controller and the Task controller's checkpoint duties read.

use maos_core::api::v1alpha1::Checkpoint;
use maos_core::api::v1alpha1::conditions::{checkpoint as cond, find_condition};

use crate::checkpoint::store::StoreError;

/// Whether a Checkpoint is Saved.
pub(crate) fn is_saved(checkpoint: &Checkpoint) -> bool {
    checkpoint
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, cond::SUCCEEDED))
        .is_some_and(|c| c.status == "True")
}

/// Whether `err` says the stored object was damaged or unreadable (nothing can come of it).
pub(crate) fn is_corrupt(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Corrupt { .. } | StoreError::Unreadable { .. }
    )
}
