//! The RBAC authorizer: which stored Roles and ClusterRoles apply to a user through which
//! bindings, and whether one of their rules allows a request — the rules of kube-apiserver's
//! `rbac` authorizer (verbs, apiGroups, resources with `*/sub` and `res/sub`, resourceNames,
//! nonResourceURLs with a trailing `*`), with aggregated ClusterRoles' rules gathered from the
//! roles their selectors pick.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::UserInfo;
use super::attributes::Attributes;
use crate::apiserver::resource::{str_at as text, strings_at};
use crate::apiserver::store::Store;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources` (may be `res/sub`, `*/sub` or `*`).
    pub resources: Vec<String>,
    /// `resourceNames` (empty: any name).
    pub resource_names: Vec<String>,
    /// `nonResourceURLs`.
    pub non_resource_urls: Vec<String>,
}

fn contains_or_all(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

impl Rule {
    /// The rule a stored `PolicyRule` object says.
    pub fn from_json(rule: &Value) -> Self {
        Rule {
            verbs: strings_at(rule, "/verbs"),
            api_groups: strings_at(rule, "/apiGroups"),
            resources: strings_at(rule, "/resources"),
            resource_names: strings_at(rule, "/resourceNames"),
            non_resource_urls: strings_at(rule, "/nonResourceURLs"),
        }
    }

    /// The rule as a `PolicyRule` object.
    pub fn to_json(&self) -> Value {
        let mut rule = json!({"verbs": self.verbs});
        let mut set = |key: &str, list: &Vec<String>| {
            if !list.is_empty() {
                rule[key] = json!(list);
            }
        };
        set("apiGroups", &self.api_groups);
        set("resources", &self.resources);
        set("resourceNames", &self.resource_names);
        set("nonResourceURLs", &self.non_resource_urls);
        rule
    }

    /// Whether this rule allows the request (kube-apiserver's `RuleAllows`).
    pub fn allows(&self, request: &Attributes) -> bool {
        if !contains_or_all(&self.verbs, &request.verb) {
            return false;
        }
        if !request.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == request.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| request.path.starts_with(prefix))
            });
        }
        let combined = request.combined_resource();
        contains_or_all(&self.api_groups, &request.api_group)
            && self.resources.iter().any(|resource| {
                resource == "*"
                    || *resource == combined
                    || (!request.subresource.is_empty()
                        && resource.strip_prefix("*/") == Some(request.subresource.as_str()))
            })
            && (self.resource_names.is_empty() || self.resource_names.contains(&request.name))
    }
}

/// The RBAC objects of a cluster at one moment, indexed for authorization.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Arc<Value>>,
    roles: HashMap<(String, String), Arc<Value>>,
    cluster_bindings: Vec<Arc<Value>>,
    bindings: HashMap<String, Vec<Arc<Value>>>,
}

fn all_of(store: &Store, plural: &str) -> Vec<Arc<Value>> {
    store
        .list(&format!("{GROUP}/{plural}"), None, |_| true, None, None)
        .items
}

impl Policy {
    /// The policy the store holds now.
    pub fn from_store(store: &Store) -> Self {
        let mut policy = Policy::default();
        for role in all_of(store, "clusterroles") {
            policy
                .cluster_roles
                .insert(text(&role, "/metadata/name").to_string(), role);
        }
        for role in all_of(store, "roles") {
            let key = (
                text(&role, "/metadata/namespace").to_string(),
                text(&role, "/metadata/name").to_string(),
            );
            policy.roles.insert(key, role);
        }
        policy.cluster_bindings = all_of(store, "clusterrolebindings");
        for binding in all_of(store, "rolebindings") {
            policy
                .bindings
                .entry(text(&binding, "/metadata/namespace").to_string())
                .or_default()
                .push(binding);
        }
        policy
    }

    /// The rules of a ClusterRole, gathered from the roles it aggregates if it has an
    /// `aggregationRule` (the aggregation controller's result, computed when asked).
    pub fn cluster_role_rules(&self, name: &str) -> Option<Vec<Rule>> {
        let role = self.cluster_roles.get(name)?;
        let selectors = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array);
        let Some(selectors) = selectors else {
            return Some(rules_of(role));
        };
        let mut rules = Vec::new();
        let mut names: Vec<&String> = self.cluster_roles.keys().collect();
        names.sort();
        for other in names {
            let candidate = &self.cluster_roles[other];
            if other == name || candidate.pointer("/aggregationRule").is_some() {
                continue;
            }
            let labels = candidate.pointer("/metadata/labels");
            if selectors.iter().any(|s| selector_matches(s, labels)) {
                for rule in rules_of(candidate) {
                    if !rules.contains(&rule) {
                        rules.push(rule);
                    }
                }
            }
        }
        Some(rules)
    }

    fn role_ref_rules(&self, binding: &Value, namespace: &str) -> Option<Vec<Rule>> {
        let name = text(binding, "/roleRef/name");
        match text(binding, "/roleRef/kind") {
            "ClusterRole" => self.cluster_role_rules(name),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .map(|r| rules_of(r)),
            _ => None,
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones only when empty).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut rules = Vec::new();
        for binding in &self.cluster_bindings {
            if binds(binding, user, "") {
                rules.extend(self.role_ref_rules(binding, "").unwrap_or_default());
            }
        }
        if !namespace.is_empty() {
            for binding in self.bindings.get(namespace).into_iter().flatten() {
                if binds(binding, user, namespace) {
                    rules.extend(self.role_ref_rules(binding, namespace).unwrap_or_default());
                }
            }
        }
        rules
    }

    /// Whether some rule bound to `user` allows the request.
    pub fn allows(&self, user: &UserInfo, request: &Attributes) -> bool {
        if user.is_master() {
            return true;
        }
        self.rules_for(user, &request.namespace)
            .iter()
            .any(|rule| rule.allows(request))
    }
}

/// The rules a Role or ClusterRole object lists.
pub fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Whether a binding's subjects include `user` (`namespace`: the RoleBinding's, which a
/// ServiceAccount subject without one defaults to; empty for ClusterRoleBindings).
fn binds(binding: &Value, user: &UserInfo, namespace: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|subject| {
        let name = text(subject, "/name");
        match text(subject, "/kind") {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let sa_namespace = match text(subject, "/namespace") {
                    "" => namespace,
                    given => given,
                };
                !sa_namespace.is_empty()
                    && user.name == super::service_account_user(sa_namespace, name)
            }
            _ => false,
        }
    })
}

/// Whether a `LabelSelector` object (matchLabels and matchExpressions) selects `labels`.
pub fn selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(key, value)| label(key) == value.as_str());
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|expression| {
            let values = strings_at(expression, "/values");
            let found = label(text(expression, "/key"));
            match text(expression, "/operator") {
                "In" => found.is_some_and(|v| values.iter().any(|w| w == v)),
                "NotIn" => found.is_none_or(|v| !values.iter().any(|w| w == v)),
                "Exists" => found.is_some(),
                "DoesNotExist" => found.is_none(),
                _ => false,
            }
        });
    let empty = selector.get("matchLabels").is_none() && selector.get("matchExpressions").is_none();
    // An empty selector selects nothing in an aggregation rule.
    !empty && match_labels && expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: Value) -> Rule {
        Rule::from_json(&value)
    }

    fn get(resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes::resource("get", "maos.dev", resource, sub, "a", name)
    }

    #[test]
    fn resources_match_by_name_subresource_and_wildcards() {
        let tasks =
            rule(json!({"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}));
        assert!(tasks.allows(&get("tasks", "", "t")));
        assert!(
            !tasks.allows(&get("tasks", "status", "t")),
            "a subresource needs its own rule"
        );
        assert!(!tasks.allows(&Attributes::resource(
            "list", "maos.dev", "tasks", "", "a", ""
        )));
        assert!(!tasks.allows(&Attributes::resource("get", "", "tasks", "", "a", "t")));
        let status = rule(
            json!({"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks/status"]}),
        );
        assert!(status.allows(&get("tasks", "status", "t")));
        assert!(!status.allows(&get("tasks", "", "t")));
        let any_status =
            rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(any_status.allows(&get("agentpools", "status", "p")));
        assert!(!any_status.allows(&get("agentpools", "", "p")));
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"], "resourceNames": ["t"]}),
        );
        assert!(named.allows(&get("tasks", "", "t")));
        assert!(!named.allows(&get("tasks", "", "u")));
        assert!(
            !named.allows(&get("tasks", "", "")),
            "a list has no name to match"
        );
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_a_trailing_star() {
        let discovery = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}));
        assert!(discovery.allows(&Attributes::non_resource("get", "/apis/maos.dev")));
        assert!(discovery.allows(&Attributes::non_resource("get", "/version")));
        assert!(!discovery.allows(&Attributes::non_resource("get", "/versionx")));
        assert!(!discovery.allows(&Attributes::non_resource("post", "/version")));
        assert!(!discovery.allows(&get("tasks", "", "t")));
    }

    fn stored(kind: &str, namespace: Option<&str>, name: &str, rest: Value) -> Value {
        let mut object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        for (k, v) in rest.as_object().unwrap() {
            object[k] = v.clone();
        }
        object
    }

    fn policy(objects: Vec<Value>) -> Policy {
        let mut policy = Policy::default();
        for o in objects {
            let name = text(&o, "/metadata/name").to_string();
            let ns = text(&o, "/metadata/namespace").to_string();
            let o = Arc::new(o);
            match text(&o, "/kind") {
                "ClusterRole" => {
                    policy.cluster_roles.insert(name, o);
                }
                "Role" => {
                    policy.roles.insert((ns, name), o);
                }
                "ClusterRoleBinding" => policy.cluster_bindings.push(o),
                _ => policy.bindings.entry(ns).or_default().push(o),
            }
        }
        policy
    }

    #[test]
    fn bindings_grant_their_role_to_users_groups_and_service_accounts_in_their_namespace() {
        let operator = UserInfo::service_account("maos-system", "op", "u1");
        let p = policy(vec![
            stored(
                "Role",
                Some("a"),
                "reader",
                json!({"rules": [{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}]}),
            ),
            stored(
                "RoleBinding",
                Some("a"),
                "op-reads",
                json!({
                "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "maos-system"}]}),
            ),
            stored(
                "ClusterRole",
                None,
                "lease",
                json!({"rules": [{"verbs": ["*"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}]}),
            ),
            stored(
                "ClusterRoleBinding",
                None,
                "all-sas",
                json!({
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "lease"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:maos-system"}]}),
            ),
        ]);
        assert!(p.allows(&operator, &get("tasks", "", "t")));
        let mut elsewhere = get("tasks", "", "t");
        elsewhere.namespace = "b".into();
        assert!(
            !p.allows(&operator, &elsewhere),
            "a RoleBinding grants in its own namespace only"
        );
        let lease = Attributes::resource("update", "coordination.k8s.io", "leases", "", "b", "l");
        assert!(
            p.allows(&operator, &lease),
            "the group binding applies in every namespace"
        );
        let stranger = UserInfo::service_account("other", "op", "u2");
        assert!(!p.allows(&stranger, &get("tasks", "", "t")));
        assert!(!p.allows(&stranger, &lease));
    }

    #[test]
    fn a_service_account_subject_without_namespace_means_the_bindings_own() {
        let p = policy(vec![
            stored(
                "ClusterRole",
                None,
                "reader",
                json!({"rules": [{"verbs": ["get"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}]}),
            ),
            stored(
                "RoleBinding",
                Some("a"),
                "b",
                json!({
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "op"}]}),
            ),
            stored(
                "ClusterRoleBinding",
                None,
                "c",
                json!({
                "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "x"}]}),
            ),
        ]);
        assert!(p.allows(
            &UserInfo::service_account("a", "op", ""),
            &get("tasks", "", "t")
        ));
        assert!(!p.allows(
            &UserInfo::service_account("a", "x", ""),
            &get("tasks", "", "t")
        ));
    }

    #[test]
    fn an_aggregated_cluster_role_has_the_rules_of_the_roles_its_selectors_pick() {
        let p = policy(vec![
            stored(
                "ClusterRole",
                None,
                "edit",
                json!({
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]},
                "rules": []}),
            ),
            stored(
                "ClusterRole",
                None,
                "maos-edit",
                json!({
                "metadata": {"name": "maos-edit", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                "rules": [{"verbs": ["create"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}]}),
            ),
            stored(
                "ClusterRole",
                None,
                "unrelated",
                json!({
                "rules": [{"verbs": ["delete"], "apiGroups": ["maos.dev"], "resources": ["tasks"]}]}),
            ),
        ]);
        let rules = p.cluster_role_rules("edit").unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].verbs, vec!["create"]);
    }

    #[test]
    fn a_binding_to_a_missing_role_grants_nothing() {
        let p = policy(vec![stored(
            "RoleBinding",
            Some("a"),
            "b",
            json!({
            "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "gone"},
            "subjects": [{"kind": "User", "name": "alice"}]}),
        )]);
        let alice = UserInfo {
            name: "alice".into(),
            ..UserInfo::default()
        };
        assert!(!p.allows(&alice, &get("tasks", "", "t")));
    }
}
