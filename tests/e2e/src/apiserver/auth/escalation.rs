//! RBAC's escalation check: a user may create or change a Role only if it holds every
//! permission the Role grants (or may `escalate`), and may bind a role only if it holds that
//! role's permissions (or may `bind` it) — so RBAC cannot be used to gain what one lacks.

use serde_json::Value;

use super::attributes::Attributes;
use super::rbac::{Policy, Rule, rules_of};
use super::{Auth, UserInfo};
use crate::apiserver::api::Cluster;
use crate::apiserver::resource::ResourceInfo;
use crate::apiserver::status::ApiError;

/// One verb on one resource name or URL: the unit `covers` compares.
fn atoms(rule: &Rule) -> Vec<Rule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let names: Vec<Vec<String>> = if rule.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    rule.resource_names.iter().map(one).collect()
                };
                for names in names {
                    out.push(Rule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: names,
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
        for url in &rule.non_resource_urls {
            out.push(Rule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Rule::default()
            });
        }
    }
    out
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

/// Whether the owner rule covers one atomic rule (kube-apiserver's `ruleCovers`).
fn covers_atom(owner: &Rule, atom: &Rule) -> bool {
    let verb = atom.verbs.first().is_some_and(|v| has(&owner.verbs, v));
    if let Some(url) = atom.non_resource_urls.first() {
        return verb
            && owner.non_resource_urls.iter().any(|o| {
                o == "*" || o == url || o.strip_suffix('*').is_some_and(|p| url.starts_with(p))
            });
    }
    let group = atom
        .api_groups
        .first()
        .is_some_and(|g| has(&owner.api_groups, g));
    let resource = atom.resources.first().is_some_and(|r| {
        owner.resources.iter().any(|o| {
            o == "*"
                || o == r
                || r.split_once('/')
                    .is_some_and(|(_, sub)| o.strip_prefix("*/") == Some(sub))
        })
    });
    let name = owner.resource_names.is_empty()
        || atom
            .resource_names
            .first()
            .is_some_and(|n| owner.resource_names.contains(n));
    verb && group && resource && name
}

/// The rules of `servant` that no rule of `owner` covers, as atoms.
pub fn uncovered(owner: &[Rule], servant: &[Rule]) -> Vec<Rule> {
    servant
        .iter()
        .flat_map(atoms)
        .filter(|atom| !owner.iter().any(|o| covers_atom(o, atom)))
        .collect()
}

fn describe(rule: &Rule) -> String {
    let list = |l: &[String]| {
        format!(
            "[{}]",
            l.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    if !rule.non_resource_urls.is_empty() {
        return format!(
            "{{NonResourceURLs:{}, Verbs:{}}}",
            list(&rule.non_resource_urls),
            list(&rule.verbs)
        );
    }
    let mut text = format!(
        "{{APIGroups:{}, Resources:{}",
        list(&rule.api_groups),
        list(&rule.resources)
    );
    if !rule.resource_names.is_empty() {
        text.push_str(&format!(", ResourceNames:{}", list(&rule.resource_names)));
    }
    text.push_str(&format!(", Verbs:{}}}", list(&rule.verbs)));
    text
}

fn refused(res: &ResourceInfo, name: &str, user: &UserInfo, why: String) -> ApiError {
    ApiError::Forbidden {
        group: res.group.clone(),
        kind: res.plural.clone(),
        name: name.to_string(),
        message: format!(
            "{} {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{why}",
            res.group_resource(),
            user.name,
            user.groups
        ),
    }
}

/// Refuses a write of a Role, ClusterRole or binding (`object`, as it would be stored) that
/// would give someone a permission `user` does not hold; other kinds pass.
pub fn check(
    auth: &Auth,
    cluster: &Cluster,
    user: &UserInfo,
    res: &ResourceInfo,
    namespace: &str,
    object: &Value,
) -> Result<(), ApiError> {
    if res.group != super::rbac::GROUP || user.is_master() {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let policy = cluster.hub.read(Policy::from_store);
    let owner = policy.rules_for(user, namespace);
    let special = |verb: &str, resource: &str, name: &str| {
        auth.authorize(
            cluster,
            user,
            &Attributes::resource(verb, super::rbac::GROUP, resource, "", namespace, name),
        )
    };
    let servant = match res.plural.as_str() {
        "roles" | "clusterroles" => {
            if special("escalate", &res.plural, name) {
                return Ok(());
            }
            if object.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                return Err(ApiError::Forbidden {
                    group: res.group.clone(),
                    kind: res.plural.clone(),
                    name: name.to_string(),
                    message: format!(
                        "{} {name:?} is forbidden: must have cluster-admin privileges to use the aggregationRule",
                        res.group_resource()
                    ),
                });
            }
            rules_of(object)
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role_name = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role_resource = if role_kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if special("bind", role_resource, role_name) {
                return Ok(());
            }
            let rules = if role_kind == "Role" {
                cluster
                    .hub
                    .read(|s| {
                        s.get_by_key(
                            &format!("{}/roles", super::rbac::GROUP),
                            &(namespace.to_string(), role_name.to_string()),
                        )
                    })
                    .map(|r| rules_of(&r))
            } else {
                policy.cluster_role_rules(role_name)
            };
            rules.ok_or_else(|| {
                refused(
                    res,
                    name,
                    user,
                    format!(
                        "{role_resource}.{} {role_name:?} not found",
                        super::rbac::GROUP
                    ),
                )
            })?
        }
        _ => return Ok(()),
    };
    let missing = uncovered(&owner, &servant);
    if missing.is_empty() {
        Ok(())
    } else {
        let why = missing.iter().map(describe).collect::<Vec<_>>().join("\n");
        Err(refused(res, name, user, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(value: Value) -> Vec<Rule> {
        rules_of(&json!({"rules": value}))
    }

    #[test]
    fn a_role_is_covered_only_by_rules_that_grant_each_of_its_permissions() {
        let owner = rules(
            json!([{"verbs": ["get", "list"], "apiGroups": ["maos.dev"], "resources": ["tasks", "*/status"]}]),
        );
        assert!(uncovered(&owner, &rules(json!([{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks", "tasks/status"]}]))).is_empty());
        let missing = uncovered(
            &owner,
            &rules(
                json!([{"verbs": ["get", "delete"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}]),
            ),
        );
        assert_eq!(missing.len(), 1);
        assert_eq!(
            describe(&missing[0]),
            "{APIGroups:[\"maos.dev\"], Resources:[\"tasks\"], Verbs:[\"delete\"]}"
        );
        assert_eq!(
            uncovered(
                &owner,
                &rules(
                    json!([{"verbs": ["*"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}])
                )
            )
            .len(),
            1,
            "a wildcard is covered only by a wildcard"
        );
        let named = rules(
            json!([{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"], "resourceNames": ["t"]}]),
        );
        assert!(uncovered(&named, &rules(json!([{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"], "resourceNames": ["t"]}]))).is_empty());
        assert_eq!(
            uncovered(
                &named,
                &rules(
                    json!([{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}])
                )
            )
            .len(),
            1
        );
    }
}
