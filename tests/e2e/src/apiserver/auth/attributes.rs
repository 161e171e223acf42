//! What a request asks to do, in the terms RBAC rules use: kube-apiserver's `RequestInfo`
//! (verb, API group, resource, subresource, namespace, name, or a non-resource path), and the
//! 403 it answers when the answer is no.

use std::collections::HashMap;

use http::Method;

use crate::apiserver::status::ApiError;

/// The subresources of a namespace that stay on the namespace itself.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// A request's authorization attributes (kube-apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Whether it is about an API resource (`/api/...`, `/apis/...` past the version).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or a
    /// special verb (`impersonate`, `bind`, `escalate`); the lower-case method for non-resource
    /// requests.
    pub verb: String,
    /// API group (empty for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, or empty.
    pub subresource: String,
    /// Namespace, or empty.
    pub namespace: String,
    /// Object name, or empty.
    pub name: String,
}

impl Attributes {
    /// The attributes of a resource request made some other way than by URL (the special
    /// verbs, and access reviews).
    pub fn resource(
        verb: &str,
        api_group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            resource_request: true,
            path: String::new(),
            verb: verb.to_string(),
            api_group: api_group.to_string(),
            api_version: String::new(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The attributes of a request for a path that is not an API resource.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes {
            resource_request: false,
            path: path.to_string(),
            verb: verb.to_string(),
            ..Attributes::default()
        }
    }

    /// What an HTTP request asks, parsed as kube-apiserver's `RequestInfoFactory` does.
    pub fn of_request(method: &Method, path: &str, query: &HashMap<String, String>) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let non_resource = || Attributes::non_resource(&method.as_str().to_lowercase(), path);
        let (api_group, api_version, mut rest) = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest.to_vec()),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                (*group, *version, rest.to_vec())
            }
            _ => return non_resource(),
        };
        let mut verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        // The deprecated /watch/ prefix.
        if rest.first() == Some(&"watch") {
            rest.remove(0);
            verb = "watch".to_string();
        }
        let mut namespace = String::new();
        if rest.first() == Some(&"namespaces")
            && let Some(ns) = rest.get(1)
        {
            namespace = ns.to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest.drain(..2);
            }
        }
        let resource = rest.first().copied().unwrap_or("").to_string();
        let mut name = rest.get(1).copied().unwrap_or("").to_string();
        let subresource = rest.get(2).copied().unwrap_or("").to_string();
        if name.is_empty() && verb == "get" {
            verb = if watching(query) { "watch" } else { "list" }.to_string();
            // A list or watch of one object by field selector is about that object, so a rule
            // naming it by resourceNames allows it.
            if let Some(selected) = query.get("fieldSelector").and_then(|s| exact_name(s)) {
                name = selected.to_string();
            }
        } else if name.is_empty() && verb == "delete" {
            verb = "deletecollection".to_string();
        }
        Attributes {
            resource_request: true,
            path: path.to_string(),
            verb,
            api_group: api_group.to_string(),
            api_version: api_version.to_string(),
            resource,
            subresource,
            namespace,
            name,
        }
    }

    /// `resource` or `resource/subresource`, as RBAC rules and messages name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The 403 kube-apiserver answers: `<resource>.<group> "<name>" is forbidden: User "<u>"
    /// cannot <verb> resource "<r>" in API group "<g>" in the namespace "<ns>"`, with `reason`
    /// (an authorizer's explanation) appended when there is one.
    pub fn forbidden(&self, user: &str, reason: &str) -> ApiError {
        let mut message = if !self.resource_request {
            format!("User {user:?} cannot {} path {:?}", self.verb, self.path)
        } else if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                self.verb,
                self.combined_resource(),
                self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                self.verb,
                self.combined_resource(),
                self.api_group,
                self.namespace
            )
        };
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        let qualified = match (self.resource.as_str(), self.api_group.as_str()) {
            ("", _) => String::new(),
            (resource, "") => resource.to_string(),
            (resource, group) => format!("{resource}.{group}"),
        };
        let full = match (qualified.is_empty(), self.name.is_empty()) {
            (true, _) => format!("forbidden: {message}"),
            (false, true) => format!("{qualified} is forbidden: {message}"),
            (false, false) => format!("{qualified} {:?} is forbidden: {message}", self.name),
        };
        ApiError::Forbidden {
            group: self.api_group.clone(),
            kind: self.resource.clone(),
            name: self.name.clone(),
            message: full,
        }
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`), if it does.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        let valid =
            !value.is_empty() && value != "." && value != ".." && !value.contains(['/', '%']);
        valid.then_some(value)
    })
}

fn watching(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: &[(&str, &str)]) -> Attributes {
        let query = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Attributes::of_request(&method, path, &query)
    }

    #[test]
    fn verbs_come_from_the_method_and_whether_a_name_is_given() {
        let list = of(
            Method::GET,
            "/apis/maos.dev/v1alpha1/namespaces/a/tasks",
            &[],
        );
        assert_eq!(
            (
                list.verb.as_str(),
                list.namespace.as_str(),
                list.name.as_str()
            ),
            ("list", "a", "")
        );
        assert_eq!(
            of(Method::GET, "/api/v1/pods", &[("watch", "true")]).verb,
            "watch"
        );
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/a/pods", &[]).verb,
            "deletecollection"
        );
        let patch = of(
            Method::PATCH,
            "/apis/maos.dev/v1alpha1/namespaces/a/tasks/t/status",
            &[],
        );
        assert_eq!(patch.verb, "patch");
        assert_eq!(patch.combined_resource(), "tasks/status");
        assert_eq!(patch.api_group, "maos.dev");
        assert_eq!(
            of(
                Method::POST,
                "/api/v1/namespaces/a/serviceaccounts/s/token",
                &[]
            )
            .combined_resource(),
            "serviceaccounts/token"
        );
        assert_eq!(
            of(Method::GET, "/api/v1/watch/namespaces/a/pods", &[]).verb,
            "watch"
        );
        let one = of(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/a/leases",
            &[
                ("watch", "true"),
                ("fieldSelector", "metadata.name=maos-operator"),
            ],
        );
        assert_eq!(
            (one.verb.as_str(), one.name.as_str()),
            ("watch", "maos-operator")
        );
    }

    #[test]
    fn a_namespace_is_its_own_namespace_and_discovery_is_not_a_resource() {
        let ns = of(Method::GET, "/api/v1/namespaces/a", &[]);
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "a", "a")
        );
        let finalize = of(Method::PUT, "/api/v1/namespaces/a/finalize", &[]);
        assert_eq!(finalize.combined_resource(), "namespaces/finalize");
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/maos.dev/v1alpha1",
            "/version",
        ] {
            let attributes = of(Method::GET, path, &[]);
            assert!(!attributes.resource_request, "{path}");
            assert_eq!(attributes.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages_have_kube_apiservers_shape() {
        let user = "system:serviceaccount:a:op";
        let get = Attributes::resource("get", "maos.dev", "tasks", "", "a", "t");
        assert_eq!(
            get.forbidden(user, "").to_string(),
            "tasks.maos.dev \"t\" is forbidden: User \"system:serviceaccount:a:op\" cannot get resource \"tasks\" in API group \"maos.dev\" in the namespace \"a\""
        );
        let list = Attributes::resource("list", "", "nodes", "", "", "");
        assert_eq!(
            list.forbidden(user, "").to_string(),
            "nodes is forbidden: User \"system:serviceaccount:a:op\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let status = Attributes::resource("patch", "maos.dev", "tasks", "status", "a", "t");
        let status = status.forbidden(user, "").to_status();
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["details"]["group"], "maos.dev");
        assert_eq!(status["details"]["kind"], "tasks");
        assert_eq!(status["details"]["name"], "t");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("cannot patch resource \"tasks/status\""),
            "{status}"
        );
        assert_eq!(
            Attributes::non_resource("get", "/metrics")
                .forbidden("alice", "")
                .to_string(),
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }
}
