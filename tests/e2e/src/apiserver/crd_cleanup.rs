//! Deleting a CRD as kube-apiserver does: the DELETE only marks it (the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer and a `Terminating` condition),
//! creates of its custom resources are refused from then on, and a controller deletes the
//! custom resources (waiting for their own finalizers) before it lets the CRD go.

use serde_json::{Value, json};

use super::api::{Cluster, DeleteRequest, ListOptions, WriteOptions, now_rfc3339};
use super::resource::{ResourceInfo, str_at};
use super::status::ApiError;
use super::store::UpdateTarget;

/// The finalizer kube-apiserver puts on a CRD being deleted.
pub const FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const GROUP: &str = "apiextensions.k8s.io";

/// Sets (or replaces) the `Terminating` condition of a CRD.
fn set_terminating(crd: &mut Value, reason: &str, message: &str, now: &str) {
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    let conditions = crd["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(conditions)) = conditions else {
        return;
    };
    conditions.retain(|c| c["type"] != "Terminating");
    conditions.push(json!({
        "type": "Terminating", "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": now,
    }));
}

/// What the DELETE of a CRD writes with the deletion mark: the cleanup finalizer and
/// `Terminating` (InstanceDeletionPending), as kube-apiserver's CRD registry does.
pub fn mark(crd: &mut Value) {
    let now = now_rfc3339();
    if let Some(metadata) = crd.get_mut("metadata").and_then(Value::as_object_mut) {
        let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
        if let Value::Array(list) = finalizers
            && !list.iter().any(|f| f == FINALIZER)
        {
            list.push(json!(FINALIZER));
        }
    }
    set_terminating(
        crd,
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        &now,
    );
}

/// Whether a CRD is being deleted (its `Terminating` condition is True).
pub fn is_terminating(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Terminating" && c["status"] == "True")
        })
}

/// Refuses creating a custom resource of `res` while its CRD is terminating (405, as
/// kube-apiserver answers).
pub fn check_create(cluster: &Cluster, res: &ResourceInfo) -> Result<(), ApiError> {
    if res.schema.is_none() {
        return Ok(());
    }
    let Ok(crds) = cluster.resource(GROUP, "v1", "customresourcedefinitions") else {
        return Ok(());
    };
    let name = format!("{}.{}", res.plural, res.group);
    match cluster.get(&crds, "", &name) {
        Ok(crd) if is_terminating(&crd) => Err(ApiError::MethodNotAllowed(
            "create not allowed while custom resource definition is terminating".into(),
        )),
        _ => Ok(()),
    }
}

/// Deletes the custom resources of every CRD being deleted and, once none is left, removes
/// the cleanup finalizer so the CRD goes; what cannot finish yet is retried on the next pass.
pub fn reconcile_all(cluster: &Cluster) {
    let Ok(crds) = cluster.resource(GROUP, "v1", "customresourcedefinitions") else {
        return;
    };
    let Ok((all, _)) = cluster.list(&crds, None, &ListOptions::default()) else {
        return;
    };
    for crd in all.iter().filter(|c| {
        c.pointer("/metadata/deletionTimestamp").is_some()
            && c.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }) {
        if let Err(error) = clean_up(cluster, &crds, crd) {
            tracing::debug!(%error, crd = str_at(crd, "/metadata/name"), "CRD cleanup deferred");
        }
    }
}

fn clean_up(cluster: &Cluster, crds: &ResourceInfo, crd: &Value) -> Result<(), ApiError> {
    let name = str_at(crd, "/metadata/name");
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let version = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|v| v.iter().find(|v| v["served"] == true))
        .map(|v| str_at(v, "/name").to_string())
        .unwrap_or_default();
    let remaining = match cluster.resource(group, &version, plural) {
        Ok(res) => {
            let (items, _) = cluster.list(&res, None, &ListOptions::default())?;
            for item in items
                .iter()
                .filter(|i| i.pointer("/metadata/deletionTimestamp").is_none())
            {
                // Marks those with finalizers; gone already is as good.
                let _ = cluster.delete(
                    &res,
                    str_at(item, "/metadata/namespace"),
                    str_at(item, "/metadata/name"),
                    &DeleteRequest::default(),
                );
            }
            cluster.list(&res, None, &ListOptions::default())?.0.len()
        }
        Err(_) => 0,
    };
    let now = now_rfc3339();
    let (reason, message) = if remaining == 0 {
        ("InstanceDeletionCompleted", "removed all instances")
    } else {
        (
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        )
    };
    let current_reason = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Terminating"))
        .map(|c| str_at(c, "/reason").to_string())
        .unwrap_or_default();
    let mut latest = crd.clone();
    if current_reason != reason {
        set_terminating(&mut latest, reason, message, &now);
        latest = cluster.update(
            crds,
            "",
            name,
            latest,
            UpdateTarget::Status,
            &WriteOptions::default(),
        )?;
    }
    if remaining > 0 {
        return Ok(());
    }
    if let Some(Value::Array(finalizers)) = latest.pointer_mut("/metadata/finalizers") {
        finalizers.retain(|f| f != FINALIZER);
    }
    // Without finalizers left, the update deletes the CRD and stops serving its kinds.
    cluster.update(
        crds,
        "",
        name,
        latest,
        UpdateTarget::Main,
        &WriteOptions::default(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marking_adds_the_finalizer_once_and_a_pending_terminating_condition() {
        let mut crd = json!({"metadata": {"name": "x", "finalizers": ["other"]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        mark(&mut crd);
        mark(&mut crd);
        assert_eq!(crd["metadata"]["finalizers"], json!(["other", FINALIZER]));
        assert!(is_terminating(&crd));
        let conditions = crd["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1]["reason"], "InstanceDeletionPending");
    }
}
