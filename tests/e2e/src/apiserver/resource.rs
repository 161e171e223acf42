//! What the API server serves: one [`ResourceInfo`] per group/version/resource, the built-in
//! kinds, and the ones a CustomResourceDefinition adds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::schema::StructuralSchema;
use super::status::ApiError;

/// One `additionalPrinterColumns` entry of a CRD version (or a built-in's default column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// Optional OpenAPI format.
    pub format: String,
    /// Help text.
    pub description: String,
    /// A simple JSONPath such as `.status.phase`.
    pub json_path: String,
    /// 0 shows by default; higher only with `-o wide`.
    pub priority: i64,
}

/// A served resource and everything the server needs to know to handle it.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Object kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short_names: Vec<String>,
    /// Categories such as `all` or `maos`.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (status ignored on the main endpoint).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub generation: bool,
    /// Columns for server-side printing (empty: NAME and AGE only).
    pub printer_columns: Vec<PrinterColumn>,
    /// The validation/pruning/defaulting schema of a custom resource.
    pub schema: Option<Arc<StructuralSchema>>,
    /// The raw openAPIV3Schema, for /openapi/v3.
    pub openapi_schema: Option<Value>,
    /// Whether the resource is only ever created and never stored (the access and token
    /// reviews): `create` is its one verb.
    pub create_only: bool,
}

impl ResourceInfo {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as kube-apiserver names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The storage key shared by every version of the resource.
    pub fn storage_key(&self) -> String {
        if self.plural == "events" && (self.group.is_empty() || self.group == "events.k8s.io") {
            return super::events::STORAGE_KEY.to_string();
        }
        format!("{}/{}", self.group, self.plural)
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    fn builtin(
        group: &str,
        plural: &str,
        singular: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
    ) -> Self {
        ResourceInfo {
            group: group.to_string(),
            version: "v1".to_string(),
            plural: plural.to_string(),
            singular: singular.to_string(),
            kind: kind.to_string(),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status_subresource: false,
            generation: false,
            printer_columns: Vec::new(),
            schema: None,
            openapi_schema: None,
            create_only: false,
        }
    }
}

/// The built-in resources every testbed serves.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    let mut namespaces =
        ResourceInfo::builtin("", "namespaces", "namespace", "Namespace", false, &["ns"]);
    namespaces.status_subresource = true;
    let mut pods = ResourceInfo::builtin("", "pods", "pod", "Pod", true, &["po"]);
    pods.status_subresource = true;
    pods.generation = true;
    pods.categories = vec!["all".to_string()];
    pods.printer_columns = vec![
        column("Ready", "string", super::table::POD_READY),
        column("Status", "string", super::table::POD_STATUS),
        column("Restarts", "integer", super::table::POD_RESTARTS),
        column("Age", "date", ".metadata.creationTimestamp"),
        PrinterColumn {
            priority: 1,
            ..column("IP", "string", ".status.podIP")
        },
        PrinterColumn {
            priority: 1,
            ..column("Node", "string", ".spec.nodeName")
        },
    ];
    let mut core_events = ResourceInfo::builtin("", "events", "event", "Event", true, &["ev"]);
    core_events.printer_columns = vec![
        column("Type", "string", ".type"),
        column("Reason", "string", ".reason"),
        column("Object", "string", super::table::EVENT_OBJECT),
        column("Message", "string", ".message"),
        column("Age", "date", ".metadata.creationTimestamp"),
    ];
    let mut services = ResourceInfo::builtin("", "services", "service", "Service", true, &["svc"]);
    services.status_subresource = true;
    services.categories = vec!["all".to_string()];
    let mut budgets = ResourceInfo::builtin(
        super::disruption::GROUP,
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
    );
    budgets.status_subresource = true;
    budgets.generation = true;
    let mut crds = ResourceInfo::builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
    );
    crds.status_subresource = true;
    crds.generation = true;
    let rbac = |plural: &str, singular: &str, kind: &str, namespaced: bool| {
        ResourceInfo::builtin(
            super::auth::rbac::GROUP,
            plural,
            singular,
            kind,
            namespaced,
            &[],
        )
    };
    let reviews =
        super::auth::reviews::RESOURCES
            .iter()
            .map(|(group, plural, kind, namespaced)| {
                let mut review = ResourceInfo::builtin(group, plural, "", kind, *namespaced, &[]);
                review.create_only = true;
                review
            });
    let apps = |plural: &str, singular: &str, kind: &str, short: &str| {
        let mut info = ResourceInfo::builtin("apps", plural, singular, kind, true, &[short]);
        info.status_subresource = true;
        info.generation = true;
        info.categories = vec!["all".to_string()];
        info
    };
    let mut all = vec![
        namespaces,
        pods,
        ResourceInfo::builtin("", "secrets", "secret", "Secret", true, &[]),
        ResourceInfo::builtin("", "configmaps", "configmap", "ConfigMap", true, &["cm"]),
        core_events,
        ResourceInfo::builtin(
            "",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
        ),
        services,
        ResourceInfo::builtin("", "endpoints", "endpoints", "Endpoints", true, &["ep"]),
        ResourceInfo::builtin("events.k8s.io", "events", "event", "Event", true, &["ev"]),
        ResourceInfo::builtin("coordination.k8s.io", "leases", "lease", "Lease", true, &[]),
        crds,
        budgets,
        apps("deployments", "deployment", "Deployment", "deploy"),
        apps("replicasets", "replicaset", "ReplicaSet", "rs"),
        rbac("roles", "role", "Role", true),
        rbac("rolebindings", "rolebinding", "RoleBinding", true),
        rbac("clusterroles", "clusterrole", "ClusterRole", false),
        rbac(
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
        ),
    ];
    all.extend(reviews);
    all
}

fn column(name: &str, type_: &str, json_path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: String::new(),
        json_path: json_path.to_string(),
        priority: 0,
    }
}

/// The string at `pointer`, or empty.
pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The strings of the array at `pointer` (none if it is missing).
pub(crate) fn strings_at(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The resources (one per served version) a CustomResourceDefinition object defines.
///
/// Refuses a CRD whose names or versions are missing, with the field named.
pub fn resources_from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, ApiError> {
    let name = str_at(crd, "/metadata/name");
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(
            "CustomResourceDefinition",
            name,
            vec![super::status::FieldCause {
                field: field.to_string(),
                reason: "FieldValueRequired",
                message: message.to_string(),
            }],
        )
    };
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    if group.is_empty() {
        return Err(invalid("spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(invalid("spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(invalid("spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            name,
            vec![super::status::FieldCause {
                field: "metadata.name".to_string(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                ),
            }],
        ));
    }
    let singular = match str_at(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let namespaced = str_at(crd, "/spec/scope") != "Cluster";
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("spec.versions", "Required value"))?;
    let mut out = Vec::new();
    for version in versions {
        if version.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version_name = str_at(version, "/name");
        let openapi_schema = version.pointer("/schema/openAPIV3Schema").cloned();
        let schema = openapi_schema
            .as_ref()
            .map(|s| Arc::new(StructuralSchema::new(s.clone())));
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: str_at(c, "/name").to_string(),
                        type_: str_at(c, "/type").to_string(),
                        format: str_at(c, "/format").to_string(),
                        description: str_at(c, "/description").to_string(),
                        json_path: str_at(c, "/jsonPath").to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.to_string(),
            version: version_name.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            namespaced,
            short_names: strings_at(crd, "/spec/names/shortNames"),
            categories: strings_at(crd, "/spec/names/categories"),
            status_subresource: version.pointer("/subresources/status").is_some(),
            generation: true,
            printer_columns,
            schema,
            openapi_schema,
            create_only: false,
        });
    }
    Ok(out)
}

/// Every served resource, looked up by group, version and plural.
#[derive(Debug, Clone, Default)]
pub struct ResourceRegistry {
    by_gvr: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// Which CRD (by name) added which group/version/resources, to remove them with it.
    by_crd: BTreeMap<String, Vec<(String, String, String)>>,
}

impl ResourceRegistry {
    /// A registry with the built-in resources.
    pub fn with_builtins() -> Self {
        let mut registry = ResourceRegistry::default();
        for info in builtin_resources() {
            registry.insert(info);
        }
        registry
    }

    fn insert(&mut self, info: ResourceInfo) {
        let key = (
            info.group.clone(),
            info.version.clone(),
            info.plural.clone(),
        );
        self.by_gvr.insert(key, Arc::new(info));
    }

    /// The resource served at group/version/plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Serves (or re-serves, after an update) what the CRD defines.
    pub fn add_crd(&mut self, crd: &Value) -> Result<(), ApiError> {
        let resources = resources_from_crd(crd)?;
        let name = str_at(crd, "/metadata/name").to_string();
        self.remove_crd(&name);
        let keys = resources
            .iter()
            .map(|r| (r.group.clone(), r.version.clone(), r.plural.clone()))
            .collect();
        for info in resources {
            self.insert(info);
        }
        self.by_crd.insert(name, keys);
        Ok(())
    }

    /// Stops serving what the CRD named `name` defined.
    pub fn remove_crd(&mut self, name: &str) {
        for key in self.by_crd.remove(name).unwrap_or_default() {
            self.by_gvr.remove(&key);
        }
    }

    /// Every served resource, sorted by group, version and plural.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.by_gvr.values()
    }

    /// The versions served for `group`, in preference order (the order they were added).
    pub fn versions_of(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for info in self.by_gvr.values().filter(|r| r.group == group) {
            if !versions.contains(&info.version) {
                versions.push(info.version.clone());
            }
        }
        versions
    }

    /// Every served group (core excluded), sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .by_gvr
            .keys()
            .map(|(g, _, _)| g.clone())
            .filter(|g| !g.is_empty())
            .collect();
        groups.dedup();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["toys"]},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                    "schema": {"openAPIV3Schema": {"type": "object"}}
                }]
            }
        })
    }

    #[test]
    fn crd_adds_a_served_resource_with_names_columns_and_status_subresource() {
        let mut registry = ResourceRegistry::with_builtins();
        registry.add_crd(&crd()).unwrap();
        let info = registry.get("example.com", "v1", "widgets").unwrap();
        assert_eq!(info.kind, "Widget");
        assert_eq!(info.singular, "widget");
        assert_eq!(info.short_names, vec!["wd"]);
        assert_eq!(info.categories, vec!["toys"]);
        assert!(info.status_subresource && info.namespaced && info.generation);
        assert_eq!(info.printer_columns[0].json_path, ".spec.size");
    }

    #[test]
    fn removing_a_crd_stops_serving_its_resources() {
        let mut registry = ResourceRegistry::with_builtins();
        registry.add_crd(&crd()).unwrap();
        registry.remove_crd("widgets.example.com");
        assert!(registry.get("example.com", "v1", "widgets").is_none());
        assert!(registry.get("", "v1", "pods").is_some());
    }

    #[test]
    fn crd_whose_name_does_not_match_plural_and_group_is_invalid() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("gadgets.example.com");
        let err = resources_from_crd(&bad).unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(err.to_string().contains("metadata.name"));
    }
}
