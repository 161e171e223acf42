//! The metadata of the objects a Task owns (its result ConfigMap, its periodic Checkpoints):
//! the Task controller and its checkpoint duties both create them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use maos_core::api::v1alpha1::Task;
use maos_core::meta::{LABEL_MANAGED_BY, LABEL_TASK, MANAGED_BY};

use super::Error;

/// The metadata of an object `name` the Task owns (its result ConfigMap, its periodic
/// Checkpoints): our labels and a controller reference, so it goes with the Task.
pub(crate) fn child_meta(task: &Task, name: &str) -> Result<ObjectMeta, Error> {
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
    Ok(ObjectMeta {
        name: Some(name.to_owned()),
        namespace: task.namespace(),
        labels: Some(
            [
                (LABEL_TASK.to_owned(), task.name_any()),
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            ]
            .into(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: Task::api_version(&()).into_owned(),
            kind: Task::kind(&()).into_owned(),
            name: task.name_any(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    })
}
