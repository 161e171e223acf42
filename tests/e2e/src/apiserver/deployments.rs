//! The Deployment and ReplicaSet controllers, as much of kube-controller-manager's as an
//! operator's install needs: a Deployment owns one ReplicaSet per pod template (named and
//! labelled by the template's hash), rolls from the old to the new one within `maxSurge` and
//! `maxUnavailable` (or all at once with `Recreate`), and reports replicas, updated, ready and
//! available counts with the `Available` and `Progressing` conditions; a ReplicaSet keeps its
//! number of pods. They run inside the testbed, on its store, after every change of those kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::api::{Cluster, DeleteRequest, ListOptions, WriteOptions, now_rfc3339};
use super::store::UpdateTarget;

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The annotation numbering a Deployment's rollouts.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// How many old ReplicaSets a Deployment keeps when it does not say.
const DEFAULT_HISTORY: usize = 10;

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, pointer: &str, default: i64) -> i64 {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// The kinds whose changes can call for a reconcile.
pub fn relevant(storage_key: &str) -> bool {
    matches!(
        storage_key,
        "apps/deployments" | "apps/replicasets" | "/pods"
    )
}

/// A short stable hash of a pod template (FNV-1a over its JSON), as the name suffix and label.
pub fn template_hash(template: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The alphabet kube-controller-manager's names use (no vowels, no confusable digits).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char);
        hash /= ALPHABET.len() as u64;
    }
    out
}

/// `maxSurge`/`maxUnavailable`: an integer, or a percentage of `desired` (surge rounds up,
/// unavailability down).
fn absolute(value: Option<&Value>, desired: i64, default: &str, round_up: bool) -> i64 {
    let resolve = |v: &Value| -> Option<i64> {
        if let Some(n) = v.as_i64() {
            return Some(n);
        }
        let percent: f64 = v.as_str()?.strip_suffix('%')?.parse().ok()?;
        let exact = percent * desired as f64 / 100.0;
        Some(if round_up {
            exact.ceil()
        } else {
            exact.floor()
        } as i64)
    };
    value
        .and_then(resolve)
        .or_else(|| resolve(&json!(default)))
        .unwrap_or(0)
        .max(0)
}

fn controlled_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("uid").and_then(Value::as_str) == Some(uid) && r["controller"] == true
            })
        })
}

fn owner_ref(kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "name": text(owner, "/metadata/name"), "uid": text(owner, "/metadata/uid"),
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Whether an object is being deleted.
pub fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// Reconciles every Deployment and ReplicaSet; errors (a write racing another) are left for
/// the next change to retry.
pub fn reconcile_all(cluster: &Cluster) {
    let Ok(deployments) = cluster.resource("apps", "v1", "deployments") else {
        return;
    };
    let Ok(sets) = cluster.resource("apps", "v1", "replicasets") else {
        return;
    };
    let Ok(pods) = cluster.resource("", "v1", "pods") else {
        return;
    };
    let everything = ListOptions::default();
    let Ok((all_deployments, _)) = cluster.list(&deployments, None, &everything) else {
        return;
    };
    for deployment in &all_deployments {
        if let Err(error) = reconcile_deployment(cluster, &deployments, &sets, deployment) {
            tracing::debug!(%error, "deployment reconcile deferred");
        }
    }
    let Ok((all_sets, _)) = cluster.list(&sets, None, &everything) else {
        return;
    };
    for set in &all_sets {
        if let Err(error) = reconcile_replica_set(cluster, &sets, &pods, set) {
            tracing::debug!(%error, "replicaset reconcile deferred");
        }
    }
}

type Result<T> = std::result::Result<T, super::status::ApiError>;

fn owned(
    cluster: &Cluster,
    res: &super::resource::ResourceInfo,
    namespace: &str,
    uid: &str,
) -> Result<Vec<Arc<Value>>> {
    let (items, _) = cluster.list(res, Some(namespace), &ListOptions::default())?;
    Ok(items
        .into_iter()
        .filter(|o| controlled_by(o, uid))
        .collect())
}

fn write_status(
    cluster: &Cluster,
    res: &super::resource::ResourceInfo,
    object: &Value,
    status: Value,
) -> Result<()> {
    if object.get("status") == Some(&status) {
        return Ok(());
    }
    let mut updated = object.clone();
    updated["status"] = status;
    cluster.update(
        res,
        text(object, "/metadata/namespace"),
        text(object, "/metadata/name"),
        updated,
        UpdateTarget::Status,
        &WriteOptions::default(),
    )?;
    Ok(())
}

fn set_replicas(
    cluster: &Cluster,
    res: &super::resource::ResourceInfo,
    set: &Value,
    replicas: i64,
) -> Result<()> {
    if int(set, "/spec/replicas", 1) == replicas {
        return Ok(());
    }
    let mut updated = set.clone();
    updated["spec"]["replicas"] = json!(replicas);
    cluster.update(
        res,
        text(set, "/metadata/namespace"),
        text(set, "/metadata/name"),
        updated,
        UpdateTarget::Main,
        &WriteOptions::default(),
    )?;
    Ok(())
}

fn reconcile_deployment(
    cluster: &Cluster,
    deployments: &super::resource::ResourceInfo,
    sets: &super::resource::ResourceInfo,
    deployment: &Value,
) -> Result<()> {
    if terminating(deployment) {
        return Ok(());
    }
    let namespace = text(deployment, "/metadata/namespace");
    let name = text(deployment, "/metadata/name");
    let uid = text(deployment, "/metadata/uid");
    let desired = int(deployment, "/spec/replicas", 1).max(0);
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let hash = template_hash(&template);
    let revision = |s: &Value| {
        text(
            s,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        )
        .parse::<i64>()
        .unwrap_or(0)
    };
    let mut owned_sets = owned(cluster, sets, namespace, uid)?;
    owned_sets.sort_by_key(|s| revision(s));
    let paused = deployment.pointer("/spec/paused") == Some(&json!(true));
    let mut new_set = owned_sets
        .iter()
        .find(|s| text(s, "/metadata/labels/pod-template-hash") == hash)
        .cloned();
    if new_set.is_none() && !paused {
        let next = owned_sets.iter().map(|s| revision(s)).max().unwrap_or(0) + 1;
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        labels[TEMPLATE_HASH_LABEL] = json!(hash);
        let mut pod_template = template.clone();
        pod_template["metadata"]["labels"] = labels.clone();
        let mut selector = deployment
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(json!({}));
        selector["matchLabels"][TEMPLATE_HASH_LABEL] = json!(hash);
        let set = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{name}-{hash}"), "namespace": namespace, "labels": labels,
                "annotations": {REVISION_ANNOTATION: next.to_string()},
                "ownerReferences": [owner_ref("Deployment", deployment)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": pod_template},
        });
        let created = cluster.create(sets, namespace, set, &WriteOptions::default())?;
        owned_sets.push(Arc::new(created.clone()));
        new_set = Some(Arc::new(created));
    }
    let old: Vec<&Arc<Value>> = owned_sets
        .iter()
        .filter(|s| {
            Some(text(s, "/metadata/uid")) != new_set.as_ref().map(|n| text(n, "/metadata/uid"))
        })
        .collect();
    let status_of = |s: &Value, key: &str| int(s, &format!("/status/{key}"), 0);
    let old_replicas: i64 = old.iter().map(|s| int(s, "/spec/replicas", 0)).sum();
    let old_running: i64 = old.iter().map(|s| status_of(s, "replicas")).sum();
    let old_ready: i64 = old.iter().map(|s| status_of(s, "readyReplicas")).sum();
    let recreate = text(deployment, "/spec/strategy/type") == "Recreate";
    let surge = absolute(
        deployment.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        desired,
        "25%",
        true,
    );
    let mut unavailable = absolute(
        deployment.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        desired,
        "25%",
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if let (Some(new), false) = (&new_set, paused) {
        let new_replicas = int(new, "/spec/replicas", 0);
        let new_ready = status_of(new, "readyReplicas");
        if recreate {
            for set in &old {
                set_replicas(cluster, sets, set, 0)?;
            }
            if old_running == 0 {
                set_replicas(cluster, sets, new, desired)?;
            }
        } else {
            // Scale up within the surge, then down the old ones as far as availability allows.
            let room = desired + surge - old_replicas - new_replicas;
            let target = if new_replicas > desired {
                desired
            } else {
                (new_replicas + room.max(0)).min(desired)
            };
            set_replicas(cluster, sets, new, target)?;
            let mut removable = (old_ready + new_ready) - (desired - unavailable);
            // Old pods that are not ready cost no availability: they go first.
            removable += old_running - old_ready;
            for set in &old {
                let current = int(set, "/spec/replicas", 0);
                let cut = current.min(removable.max(0));
                if cut > 0 {
                    set_replicas(cluster, sets, set, current - cut)?;
                    removable -= cut;
                }
            }
        }
        // Old ReplicaSets beyond the history limit, once empty, go.
        let limit = usize::try_from(int(
            deployment,
            "/spec/revisionHistoryLimit",
            DEFAULT_HISTORY as i64,
        ))
        .unwrap_or(DEFAULT_HISTORY);
        let empty: Vec<&&Arc<Value>> = old
            .iter()
            .filter(|s| int(s, "/spec/replicas", 0) == 0 && status_of(s, "replicas") == 0)
            .collect();
        for set in empty.iter().take(empty.len().saturating_sub(limit)) {
            cluster.delete(
                sets,
                namespace,
                text(set, "/metadata/name"),
                &DeleteRequest::default(),
            )?;
        }
    }
    // Status, from what the ReplicaSets report.
    let sum = |key: &str| owned_sets.iter().map(|s| status_of(s, key)).sum::<i64>();
    let (replicas, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let updated = new_set
        .as_ref()
        .map(|s| status_of(s, "replicas"))
        .unwrap_or(0);
    let now = now_rfc3339();
    let previous: BTreeMap<String, Value> = deployment
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("type")?.as_str()?.to_string(), c.clone())))
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let since = previous
            .get(type_)
            .filter(|c| c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastUpdateTime": since, "lastTransitionTime": since})
    };
    let set_name = new_set
        .as_ref()
        .map(|s| text(s, "/metadata/name").to_string())
        .unwrap_or_default();
    let available_condition = if available >= desired - unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let complete = updated == desired && replicas == desired && available >= desired;
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{set_name}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{set_name}\" is progressing."),
        )
    };
    let mut status = json!({
        "observedGeneration": int(deployment, "/metadata/generation", 1),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (desired - available).max(0),
        "conditions": [available_condition, progressing],
    });
    if let Some(map) = status.as_object_mut() {
        // kube-controller-manager leaves zero counts out.
        map.retain(|_, v| v.as_i64() != Some(0));
    }
    write_status(cluster, deployments, deployment, status)
}

fn reconcile_replica_set(
    cluster: &Cluster,
    sets: &super::resource::ResourceInfo,
    pods: &super::resource::ResourceInfo,
    set: &Value,
) -> Result<()> {
    if terminating(set) {
        return Ok(());
    }
    let namespace = text(set, "/metadata/namespace");
    let name = text(set, "/metadata/name");
    let uid = text(set, "/metadata/uid");
    let desired = int(set, "/spec/replicas", 1).max(0);
    let mut live: Vec<Arc<Value>> = owned(cluster, pods, namespace, uid)?
        .into_iter()
        .filter(|p| !terminating(p) && !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
        .collect();
    let count = live.len() as i64;
    if count < desired {
        let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in count..desired {
            let suffix: String = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .filter(char::is_ascii_lowercase)
                .take(5)
                .collect();
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("{name}-{suffix}"), "namespace": namespace,
                    "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                    "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
                    "ownerReferences": [owner_ref("ReplicaSet", set)],
                },
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
            });
            live.push(Arc::new(cluster.create(
                pods,
                namespace,
                pod,
                &WriteOptions::default(),
            )?));
        }
    } else if count > desired {
        // Not-ready and newest pods go first, as the ReplicaSet controller ranks them.
        live.sort_by_key(|p| {
            (
                pod_ready(p),
                std::cmp::Reverse(text(p, "/metadata/creationTimestamp").to_string()),
            )
        });
        for pod in live.drain(..(count - desired) as usize) {
            cluster.delete(
                pods,
                namespace,
                text(&pod, "/metadata/name"),
                &DeleteRequest::default(),
            )?;
        }
    }
    // Failed pods are replaced; finished ones are gone from the count already.
    let ready = live.iter().filter(|p| pod_ready(p)).count() as i64;
    let mut status = json!({
        "replicas": live.len(), "fullyLabeledReplicas": live.len(), "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": int(set, "/metadata/generation", 1),
    });
    if let Some(map) = status.as_object_mut() {
        map.retain(|k, v| k == "replicas" || v.as_i64() != Some(0));
    }
    write_status(cluster, sets, set, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        assert_eq!(absolute(None, 3, "25%", true), 1);
        assert_eq!(absolute(None, 3, "25%", false), 0);
        assert_eq!(absolute(Some(&json!(2)), 3, "25%", true), 2);
        assert_eq!(absolute(Some(&json!("50%")), 3, "25%", false), 1);
    }
}
