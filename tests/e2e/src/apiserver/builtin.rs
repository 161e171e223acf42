//! Checks on built-in kinds: every object must decode as its k8s-openapi type (a type error
//! is a 400, as kube-apiserver's decoder answers), and pods get the basic validation a real
//! server does on their containers.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::resource::ResourceInfo;
use super::status::{ApiError, FieldCause};

fn decode<K: DeserializeOwned>(res: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    serde_json::from_value::<K>(object.clone())
        .map(drop)
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = res.kind,
                version = res.version
            ))
        })
}

/// Checks a built-in object about to be stored; custom resources pass through.
pub fn check(res: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{apps, coordination, core, events, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => {
            decode::<core::v1::Pod>(res, object)?;
            validate_pod(object)
        }
        ("", "configmaps") => decode::<core::v1::ConfigMap>(res, object),
        ("", "secrets") => decode::<core::v1::Secret>(res, object),
        ("", "namespaces") => decode::<core::v1::Namespace>(res, object),
        ("", "serviceaccounts") => decode::<core::v1::ServiceAccount>(res, object),
        ("", "services") => decode::<core::v1::Service>(res, object),
        ("", "endpoints") => decode::<core::v1::Endpoints>(res, object),
        ("", "events") => decode::<core::v1::Event>(res, object),
        ("events.k8s.io", "events") => decode::<events::v1::Event>(res, object),
        ("policy", "poddisruptionbudgets") => {
            decode::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(res, object)?;
            super::disruption::validate(object)
        }
        ("coordination.k8s.io", "leases") => decode::<coordination::v1::Lease>(res, object),
        ("apps", "deployments") => decode::<apps::v1::Deployment>(res, object),
        ("apps", "replicasets") => decode::<apps::v1::ReplicaSet>(res, object),
        ("rbac.authorization.k8s.io", "roles") => decode::<rbac::v1::Role>(res, object),
        ("rbac.authorization.k8s.io", "clusterroles") => {
            decode::<rbac::v1::ClusterRole>(res, object)
        }
        ("rbac.authorization.k8s.io", "rolebindings") => {
            decode::<rbac::v1::RoleBinding>(res, object)?;
            validate_binding(res, object)
        }
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            decode::<rbac::v1::ClusterRoleBinding>(res, object)?;
            validate_binding(res, object)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            decode::<CustomResourceDefinition>(res, object)
        }
        _ => Ok(()),
    }
}

/// A binding's roleRef and subjects, checked as kube-apiserver's RBAC validation does.
/// Refuses an update kube-apiserver refuses whatever the new object says: a binding's
/// `roleRef` may never change (delete and recreate the binding instead).
pub fn check_update(res: &ResourceInfo, new: &Value, old: &Value) -> Result<(), ApiError> {
    let binding = matches!(res.plural.as_str(), "rolebindings" | "clusterrolebindings")
        && res.group == "rbac.authorization.k8s.io";
    if binding && new.get("roleRef") != old.get("roleRef") {
        let text = |key: &str| {
            new.pointer(&format!("/roleRef/{key}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(ApiError::invalid(
            &res.kind,
            name,
            vec![FieldCause {
                field: "roleRef".into(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}: cannot change roleRef",
                    text("apiGroup"),
                    text("kind"),
                    text("name")
                ),
            }],
        )
        .in_group(&res.group));
    }
    Ok(())
}

fn validate_binding(res: &ResourceInfo, binding: &Value) -> Result<(), ApiError> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let mut causes = Vec::new();
    let role_ref = binding.get("roleRef").cloned().unwrap_or(Value::Null);
    let allowed_kinds: &[&str] = if res.namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = text(&role_ref, "kind");
    if text(&role_ref, "apiGroup") != "rbac.authorization.k8s.io" {
        causes.push(FieldCause {
            field: "roleRef.apiGroup".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {:?}: supported values: \"rbac.authorization.k8s.io\"",
                text(&role_ref, "apiGroup")
            ),
        });
    }
    if !allowed_kinds.contains(&kind.as_str()) {
        causes.push(FieldCause {
            field: "roleRef.kind".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {kind:?}: supported values: {}",
                allowed_kinds
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if text(&role_ref, "name").is_empty() {
        causes.push(FieldCause {
            field: "roleRef.name".into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        });
    }
    let subjects = binding
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, subject) in subjects.iter().enumerate() {
        let kind = text(subject, "kind");
        if text(subject, "name").is_empty() {
            causes.push(FieldCause {
                field: format!("subjects[{i}].name"),
                reason: "FieldValueRequired",
                message: "Required value".into(),
            });
        }
        match kind.as_str() {
            "ServiceAccount" => {
                if !res.namespaced && text(subject, "namespace").is_empty() {
                    causes.push(FieldCause {
                        field: format!("subjects[{i}].namespace"),
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                    });
                }
            }
            "User" | "Group" => {
                if text(subject, "apiGroup") != "rbac.authorization.k8s.io" {
                    causes.push(FieldCause {
                        field: format!("subjects[{i}].apiGroup"),
                        reason: "FieldValueNotSupported",
                        message: format!(
                            "Unsupported value: {:?}: supported values: \"rbac.authorization.k8s.io\"",
                            text(subject, "apiGroup")
                        ),
                    });
                }
            }
            other => causes.push(FieldCause {
                field: format!("subjects[{i}].kind"),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""
                ),
            }),
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let name = binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(ApiError::invalid(&res.kind, name, causes))
    }
}

/// A pod's quality-of-service class, as kube-apiserver sets it on create: `Guaranteed` when
/// every container limits CPU and memory and requests what it limits, `BestEffort` when none
/// requests or limits anything, `Burstable` otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let spec = pod.get("spec");
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|key| spec.and_then(|s| s.get(*key)).and_then(Value::as_array))
        .flatten()
        .collect();
    let resources = |c: &Value, kind: &str, name: &str| {
        c.pointer(&format!("/resources/{kind}/{name}")).cloned()
    };
    let any = containers.iter().any(|c| {
        ["cpu", "memory"]
            .iter()
            .any(|r| resources(c, "requests", r).is_some() || resources(c, "limits", r).is_some())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = resources(c, "limits", r);
            let request = resources(c, "requests", r);
            limit.is_some() && (request.is_none() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// RFC 1123 label: what container names must be.
fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn validate_pod(pod: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let mut cause = |field: String, reason: &'static str, message: String| {
        causes.push(FieldCause {
            field,
            reason,
            message,
        })
    };
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        cause(
            "spec.containers".into(),
            "FieldValueRequired",
            "Required value".into(),
        );
    }
    let mut seen = Vec::new();
    for (i, container) in containers.iter().enumerate() {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            cause(
                format!("spec.containers[{i}].name"),
                "FieldValueRequired",
                "Required value".into(),
            );
        } else if !dns_label(name) {
            cause(
                format!("spec.containers[{i}].name"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
                ),
            );
        } else if seen.contains(&name) {
            cause(
                format!("spec.containers[{i}].name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{name}\""),
            );
        }
        seen.push(name);
        if container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            cause(
                format!("spec.containers[{i}].image"),
                "FieldValueRequired",
                "Required value".into(),
            );
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(ApiError::invalid("Pod", name, causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;
    use serde_json::json;

    fn resource(plural: &str) -> ResourceInfo {
        builtin_resources()
            .into_iter()
            .find(|r| r.plural == plural && r.group.is_empty())
            .unwrap()
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_valid_pod_passes() {
        let ok = pod(json!({"containers": [{"name": "main", "image": "busybox"}]}));
        assert!(check(&resource("pods"), &ok).is_ok());
    }

    #[test]
    fn a_type_error_in_a_builtin_kind_is_a_bad_request() {
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": 1}});
        let err = check(&resource("configmaps"), &bad).unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.to_string().contains("cannot be handled as a ConfigMap"),
            "{err}"
        );
    }

    #[test]
    fn pods_need_named_containers_with_images() {
        let err = check(&resource("pods"), &pod(json!({"containers": []}))).unwrap_err();
        assert!(
            err.to_string().contains("spec.containers: Required value"),
            "{err}"
        );
        let err = check(
            &resource("pods"),
            &pod(json!({"containers": [{"name": "a", "image": "i"}, {"name": "a", "image": ""}]})),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("spec.containers[1].name: Duplicate value"),
            "{message}"
        );
        assert!(
            message.contains("spec.containers[1].image: Required value"),
            "{message}"
        );
    }
}
