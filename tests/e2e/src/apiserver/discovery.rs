//! Discovery as kube-apiserver serves it: `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<group>` and `/apis/<group>/<version>` in the plain form, and `/api` and `/apis` in
//! the aggregated form (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) that current clients
//! ask for first; kept current as CRDs come and go.

use serde_json::{Value, json};

use super::resource::{ResourceInfo, ResourceRegistry};

/// One subresource of a resource, as both discovery forms list it.
struct Subresource {
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: String,
    verbs: &'static [&'static str],
}

fn subresources_of(info: &ResourceInfo) -> Vec<Subresource> {
    let mut out = Vec::new();
    if info.status_subresource {
        out.push(Subresource {
            name: "status",
            group: "",
            version: "",
            kind: info.kind.clone(),
            verbs: &["get", "patch", "update"],
        });
    }
    if info.group.is_empty() && info.plural == "serviceaccounts" {
        out.push(Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest".into(),
            verbs: &["create"],
        });
    }
    if info.group.is_empty() && info.plural == "pods" {
        out.push(Subresource {
            name: "log",
            group: "",
            version: "",
            kind: "Pod".into(),
            verbs: &["get"],
        });
        out.push(Subresource {
            name: "binding",
            group: "",
            version: "",
            kind: "Binding".into(),
            verbs: &["create"],
        });
    }
    out
}

/// Which aggregated discovery version an `Accept` header asks for first, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    accept.split(',').find_map(|media| {
        if !media.contains("as=APIGroupDiscoveryList") || !media.contains("g=apidiscovery.k8s.io") {
            return None;
        }
        if media.contains("v=v2beta1") {
            Some("v2beta1")
        } else if media.contains("v=v2") {
            Some("v2")
        } else {
            None
        }
    })
}

/// The aggregated discovery document: of the core group (`/api`) or of every other (`/apis`).
pub fn aggregated(registry: &ResourceRegistry, core: bool, version: &str) -> Value {
    let groups: Vec<String> = if core {
        vec![String::new()]
    } else {
        registry.groups()
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = registry
                .versions_of(group)
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .all()
                        .filter(|r| r.group == *group && r.version == *v)
                        .map(|info| {
                            let response_kind = json!({"group": info.group, "version": info.version, "kind": info.kind});
                            let subresources: Vec<Value> = subresources_of(info)
                                .into_iter()
                                .map(|sub| {
                                    let kind = if sub.group.is_empty() {
                                        json!({"group": info.group, "version": info.version, "kind": sub.kind})
                                    } else {
                                        json!({"group": sub.group, "version": sub.version, "kind": sub.kind})
                                    };
                                    json!({"subresource": sub.name, "responseKind": kind, "verbs": sub.verbs})
                                })
                                .collect();
                            let mut resource = json!({
                                "resource": info.plural,
                                "responseKind": response_kind,
                                "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": info.singular,
                                "verbs": info.verbs(),
                            });
                            if !info.short_names.is_empty() {
                                resource["shortNames"] = json!(info.short_names);
                            }
                            if !info.categories.is_empty() {
                                resource["categories"] = json!(info.categories);
                            }
                            if !subresources.is_empty() {
                                resource["subresources"] = json!(subresources);
                            }
                            resource
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

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
        for sub in subresources_of(info) {
            let mut entry = json!({
                "name": format!("{}/{}", info.plural, sub.name), "singularName": "",
                "namespaced": info.namespaced, "kind": sub.kind, "verbs": sub.verbs,
            });
            if !sub.group.is_empty() {
                entry["group"] = json!(sub.group);
                entry["version"] = json!(sub.version);
            }
            list.push(entry);
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
    fn aggregated_discovery_nests_subresources_and_is_chosen_by_accept() {
        let registry = ResourceRegistry::with_builtins();
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(accept), Some("v2"));
        assert_eq!(aggregated_version("application/json"), None);
        let core = aggregated(&registry, true, "v2");
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let resources = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = resources.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(subs, vec!["status", "log", "binding"]);
        let token = resources
            .iter()
            .find(|r| r["resource"] == "serviceaccounts")
            .unwrap()["subresources"][0]
            .clone();
        assert_eq!(token["responseKind"]["kind"], "TokenRequest");
        let groups = aggregated(&registry, false, "v2");
        assert!(
            groups["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "rbac.authorization.k8s.io")
        );
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
                "apps",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "coordination.k8s.io",
                "events.k8s.io",
                "policy",
                "rbac.authorization.k8s.io"
            ]
        );
        assert!(resources(&registry, "maos.dev", "v1alpha1").is_none());
        assert!(group(&registry, "maos.dev").is_none());
    }
}
