//! Discovery as kube-apiserver serves it in the plain (non-aggregated) form: `/version`,
//! `/api`, `/api/v1`, `/apis`, `/apis/<group>` and `/apis/<group>/<version>`, kept current as
//! CRDs come and go.

use serde_json::{Value, json};

use super::resource::ResourceRegistry;

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-maos-testbed",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_json(registry: &ResourceRegistry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .versions_of(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "preferredVersion": versions.first().cloned().unwrap_or(json!({})),
        "versions": versions,
    })
}

/// `/apis`: every non-core group.
pub fn groups(registry: &ResourceRegistry) -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": registry.groups().iter().map(|g| group_json(registry, g)).collect::<Vec<_>>(),
    })
}

/// `/apis/<group>`, or `None` if no version of it is served.
pub fn group(registry: &ResourceRegistry, group: &str) -> Option<Value> {
    if registry.versions_of(group).is_empty() {
        return None;
    }
    let mut value = group_json(registry, group);
    value["kind"] = json!("APIGroup");
    value["apiVersion"] = json!("v1");
    Some(value)
}

/// `/api/v1` or `/apis/<group>/<version>`: the resource list, or `None` if not served.
pub fn resources(registry: &ResourceRegistry, group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for info in registry
        .all()
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs(),
            "shortNames": info.short_names,
            "categories": info.categories,
            "storageVersionHash": "",
        }));
        if info.status_subresource {
            list.push(json!({
                "name": format!("{}/status", info.plural), "singularName": "",
                "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if info.group.is_empty() && info.plural == "serviceaccounts" {
            list.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
        if info.group.is_empty() && info.plural == "pods" {
            list.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
            list.push(json!({
                "name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"],
            }));
        }
    }
    if list.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_pods_with_status_and_log_subresources() {
        let registry = ResourceRegistry::with_builtins();
        let list = resources(&registry, "", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for expected in [
            "pods",
            "pods/status",
            "pods/log",
            "pods/binding",
            "namespaces",
            "secrets",
            "configmaps",
            "events",
            "serviceaccounts",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn groups_list_the_builtin_api_groups() {
        let registry = ResourceRegistry::with_builtins();
        let all = groups(&registry);
        let names: Vec<&str> = all["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "apiextensions.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "coordination.k8s.io",
                "events.k8s.io",
                "rbac.authorization.k8s.io"
            ]
        );
        assert!(resources(&registry, "maos.dev", "v1alpha1").is_none());
        assert!(group(&registry, "maos.dev").is_none());
    }
}
