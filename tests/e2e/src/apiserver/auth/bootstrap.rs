//! kube-apiserver's default RBAC policy, as far as a client of this testbed can meet it:
//! `cluster-admin` (bound to `system:masters`), discovery and health for every authenticated
//! user, self access reviews, `system:auth-delegator` (token and access reviews, for servers
//! that authenticate their own clients), and the user-facing `admin`, `edit` and `view`
//! aggregated roles with the core kinds' rules.

use serde_json::{Value, json};

use super::rbac::GROUP;

const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";

fn cluster_role(name: &str, rules: Value, extra_labels: Value) -> Value {
    let mut labels = json!({BOOTSTRAP_LABEL: "rbac-defaults"});
    if let Some(extra) = extra_labels.as_object() {
        for (k, v) in extra {
            labels[k] = v.clone();
        }
    }
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    })
}

fn aggregated(name: &str, to: &str) -> Value {
    let mut role = cluster_role(name, json!([]), json!({}));
    role["aggregationRule"] = json!({"clusterRoleSelectors": [
        {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}
    ]});
    role
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {BOOTSTRAP_LABEL: "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": groups.iter().map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g})).collect::<Vec<_>>(),
    })
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 6] = [
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
    "get",
];

/// The default ClusterRoles, in the order they are created.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
            json!({}),
        ),
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            json!({}),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            json!({}),
        ),
        cluster_role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
            json!({}),
        ),
        cluster_role(
            "system:auth-delegator",
            json!([
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ]),
            json!({}),
        ),
        aggregated("admin", "admin"),
        aggregated("edit", "edit"),
        aggregated("view", "view"),
        cluster_role(
            "system:aggregate-to-admin",
            json!([
                {"apiGroups": [GROUP], "resources": ["roles", "rolebindings"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
            ]),
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        ),
        cluster_role(
            "system:aggregate-to-edit",
            json!([
                {"apiGroups": [""], "resources": ["pods", "configmaps", "secrets", "serviceaccounts", "services", "persistentvolumeclaims"], "verbs": WRITE},
                {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets"], "verbs": WRITE},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": WRITE},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE},
            ]),
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        ),
        cluster_role(
            "system:aggregate-to-view",
            json!([
                {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/status", "configmaps", "events", "serviceaccounts", "services", "endpoints", "persistentvolumeclaims", "namespaces", "namespaces/status"], "verbs": READ},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status", "replicasets", "replicasets/status", "statefulsets"], "verbs": READ},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": READ},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": READ},
            ]),
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true", "rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
    ]
}
