//! The review APIs, answered from the same tokens and RBAC that guard every request:
//! TokenReview and SelfSubjectReview (`authentication.k8s.io/v1`), and SubjectAccessReview,
//! SelfSubjectAccessReview, LocalSubjectAccessReview and SelfSubjectRulesReview
//! (`authorization.k8s.io/v1`). Each is create-only and stores nothing.

use serde_json::{Value, json};

use super::attributes::Attributes;
use super::rbac::Policy;
use super::{Auth, UserInfo};
use crate::apiserver::api::Cluster;
use crate::apiserver::resource::{str_at as text, strings_at};
use crate::apiserver::status::{ApiError, FieldCause};

/// `(group, plural, kind, namespaced)` of every review resource.
pub const RESOURCES: [(&str, &str, &str, bool); 6] = [
    (
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
];

fn invalid(kind: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        kind,
        "",
        vec![FieldCause {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            message,
        }],
    )
}

/// The reply: what was asked, with `status`.
fn answer(kind: &str, group: &str, body: &Value, status: Value) -> Value {
    let mut reply = json!({
        "kind": kind,
        "apiVersion": format!("{group}/v1"),
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": body.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    });
    if reply["metadata"].get("creationTimestamp").is_none() {
        reply["metadata"]["creationTimestamp"] = Value::Null;
    }
    reply
}

/// Handles a create of review `plural` by `user` (in `namespace`, for the local one).
pub fn create(
    auth: &Auth,
    cluster: &Cluster,
    user: &UserInfo,
    plural: &str,
    namespace: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let (group, kind) = RESOURCES
        .iter()
        .find(|(_, p, _, _)| *p == plural)
        .map(|(g, _, k, _)| (*g, *k))
        .ok_or_else(|| ApiError::Internal(format!("{plural} is not a review")))?;
    let status = match plural {
        "tokenreviews" => token_review(auth, cluster, body),
        "selfsubjectreviews" => json!({"userInfo": user.to_json()}),
        "selfsubjectrulesreviews" => rules_review(cluster, user, body),
        _ => {
            let subject = match plural {
                "subjectaccessreviews" => subject_of(kind, body)?,
                _ => user.clone(),
            };
            let attributes = access_attributes(kind, plural, namespace, body)?;
            let allowed = cluster
                .hub
                .read(Policy::from_store)
                .allows(&subject, &attributes);
            json!({"allowed": allowed})
        }
    };
    Ok(answer(kind, group, body, status))
}

fn token_review(auth: &Auth, cluster: &Cluster, body: &Value) -> Value {
    let token = text(body, "/spec/token");
    let mut audiences = strings_at(body, "/spec/audiences");
    if audiences.is_empty() {
        audiences = vec![super::tokens::API_AUDIENCE.to_string()];
    }
    match auth.tokens().authenticate(cluster, token, &audiences) {
        Ok(user) => {
            let held = auth.tokens().audiences_of(token);
            let matched: Vec<&String> = audiences.iter().filter(|a| held.contains(a)).collect();
            json!({"authenticated": true, "user": user.to_json(), "audiences": matched})
        }
        Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
    }
}

fn subject_of(kind: &str, body: &Value) -> Result<UserInfo, ApiError> {
    let name = text(body, "/spec/user").to_string();
    let groups = strings_at(body, "/spec/groups");
    if name.is_empty() && groups.is_empty() {
        return Err(invalid(
            kind,
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified".to_string(),
        ));
    }
    let extra = body
        .pointer("/spec/extra")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    Ok(UserInfo {
        name,
        uid: text(body, "/spec/uid").to_string(),
        groups,
        extra,
    })
}

fn access_attributes(
    kind: &str,
    plural: &str,
    namespace: &str,
    body: &Value,
) -> Result<Attributes, ApiError> {
    let resource = body
        .pointer("/spec/resourceAttributes")
        .filter(|v| !v.is_null());
    let non_resource = body
        .pointer("/spec/nonResourceAttributes")
        .filter(|v| !v.is_null());
    match (resource, non_resource) {
        (Some(_), Some(n)) => Err(invalid(
            kind,
            "spec.nonResourceAttributes",
            format!("Invalid value: {n}: cannot be specified in combination with resourceAttributes"),
        )),
        (None, None) => Err(invalid(
            kind,
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".to_string(),
        )),
        (None, Some(n)) if plural == "localsubjectaccessreviews" => Err(invalid(
            kind,
            "spec.nonResourceAttributes",
            format!("Invalid value: {n}: disallowed on this kind of request"),
        )),
        (None, Some(n)) => Ok(Attributes::non_resource(text(n, "/verb"), text(n, "/path"))),
        (Some(r), None) => {
            let asked_namespace = text(r, "/namespace");
            if plural == "localsubjectaccessreviews" && asked_namespace != namespace {
                return Err(invalid(
                    kind,
                    "spec.resourceAttributes.namespace",
                    format!("Invalid value: {asked_namespace:?}: must match metadata.namespace"),
                ));
            }
            let mut attributes = Attributes::resource(
                text(r, "/verb"),
                text(r, "/group"),
                text(r, "/resource"),
                text(r, "/subresource"),
                asked_namespace,
                text(r, "/name"),
            );
            attributes.api_version = text(r, "/version").to_string();
            Ok(attributes)
        }
    }
}

fn rules_review(cluster: &Cluster, user: &UserInfo, body: &Value) -> Value {
    let namespace = text(body, "/spec/namespace");
    let rules = cluster
        .hub
        .read(Policy::from_store)
        .rules_for(user, namespace);
    let (non_resource, resource): (Vec<_>, Vec<_>) =
        rules.iter().partition(|r| !r.non_resource_urls.is_empty());
    json!({
        "resourceRules": resource.iter().map(|r| {
            let mut rule = r.to_json();
            for key in ["apiGroups", "resources"] {
                if rule.get(key).is_none() {
                    rule[key] = json!([]);
                }
            }
            rule
        }).collect::<Vec<_>>(),
        "nonResourceRules": non_resource.iter().map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})).collect::<Vec<_>>(),
        "incomplete": false,
    })
}
