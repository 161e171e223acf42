//! The API's verbs (get, list, create, update, patch, delete) over the store: admission
//! (names, namespaces, schemas), the side effects of CRDs and namespaces, and garbage
//! collection. The HTTP layer only decodes requests and encodes what these return.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine as _;
use serde_json::{Value, json};

use super::apply;
use super::events;
use super::gc::collect_garbage;
use super::managed::{self, Writer};
use super::patch::{PatchType, apply_patch};
use super::resource::{ResourceInfo, ResourceRegistry};
use super::selectors::{FieldSelector, LabelSelector};
use super::services;
use super::status::{ApiError, FieldCause};
use super::store::{DeleteOptions, DeleteOutcome, Graceful, ObjectKey, Store, UpdateTarget};
use super::watch::Hub;

/// The namespaces that exist from the start and, as in a real cluster, cannot be deleted.
const PROTECTED_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// How often a PATCH is re-applied when concurrent writes keep winning the race.
const PATCH_ATTEMPTS: u32 = 16;

/// kube-apiserver's default `terminationGracePeriodSeconds`.
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

/// Options of a write request (query parameters).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: admit but do not store.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error rather than dropped.
    pub strict: bool,
    /// `fieldManager` (for requests other than apply, the User-Agent's product when the
    /// client names none); `None` for the testbed's own writes, which own no fields.
    pub field_manager: Option<String>,
    /// `force` for apply: take the fields other managers own instead of conflicting.
    pub force: bool,
}

/// How a client asked for a delete (its `DeleteOptions` and query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteRequest {
    /// uid and resourceVersion preconditions.
    pub preconditions: DeleteOptions,
    /// `gracePeriodSeconds` (only pods on a node use it).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy: Orphan`: dependents lose their owner reference instead of going.
    pub orphan: bool,
    /// `dryRun=All`: report the object without deleting it.
    pub dry_run: bool,
}

/// Options of a list request (query parameters).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// A PATCH request's body and type.
#[derive(Debug, Clone)]
pub struct Patch {
    /// How to apply it.
    pub patch_type: PatchType,
    /// The decoded body.
    pub body: Value,
}

impl Patch {
    /// A patch of `patch_type` with `body`.
    pub fn new(patch_type: PatchType, body: Value) -> Self {
        Patch { patch_type, body }
    }
}

/// The API server's state: served resources and the store.
pub struct Cluster {
    /// The store and its watch fan-out.
    pub hub: Hub,
    registry: RwLock<ResourceRegistry>,
    patch_lock: std::sync::Mutex<()>,
    control_plane: OnceLock<ControlPlane>,
}

/// Where the API server serves and the CA its certificate chains to, which a cluster
/// publishes to its pods (`kube-root-ca.crt`, the `kubernetes` Service).
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// The API server's address.
    pub addr: std::net::SocketAddr,
    /// The cluster CA, PEM.
    pub ca_pem: String,
}

/// The ConfigMap every namespace gets, holding the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Now, as the second-precision RFC 3339 timestamp Kubernetes stores.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// DNS-1123 subdomain, the rule for most object names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether a PUT without `metadata.resourceVersion` may overwrite whatever is stored
/// (kube-apiserver's `AllowUnconditionalUpdate`): not for custom resources, CRDs and Leases.
fn allows_unconditional_update(res: &ResourceInfo) -> bool {
    res.schema.is_none()
        && !matches!(
            (res.group.as_str(), res.plural.as_str()),
            ("coordination.k8s.io", "leases")
                | ("apiextensions.k8s.io", "customresourcedefinitions")
        )
}

/// Whether an immediate DELETE answers with the deleted object rather than a `Status`
/// (kube-apiserver's `ReturnDeletedObject`, set for pods and ServiceAccounts; a namespace is
/// never deleted immediately).
fn returns_deleted_object(res: &ResourceInfo) -> bool {
    res.group.is_empty()
        && matches!(
            res.plural.as_str(),
            "pods" | "serviceaccounts" | "namespaces"
        )
}

/// A name that can be one path segment, the rule for RBAC objects.
fn valid_path_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let token = json!({"rv": rv, "ns": key.0, "name": key.1});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let bad = || ApiError::BadRequest("continue key is not valid".to_string());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = value.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = value.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

impl Cluster {
    /// A cluster with the built-in resources and the `default` and `kube-system` namespaces.
    pub fn new(history_limit: usize, watch_buffer: usize) -> Self {
        let cluster = Cluster {
            hub: Hub::new(Store::new(history_limit), watch_buffer),
            registry: RwLock::new(ResourceRegistry::with_builtins()),
            patch_lock: std::sync::Mutex::new(()),
            control_plane: OnceLock::new(),
        };
        for ns in PROTECTED_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Ok(namespaces) = cluster.resource("", "v1", "namespaces") {
                // Creating a fresh namespace in an empty store cannot fail.
                let _ = cluster.create(&namespaces, "", body, &WriteOptions::default());
            }
        }
        let rbac = super::auth::rbac::GROUP;
        for (plural, objects) in [
            ("clusterroles", super::auth::bootstrap::cluster_roles()),
            (
                "clusterrolebindings",
                super::auth::bootstrap::cluster_role_bindings(),
            ),
        ] {
            if let Ok(res) = cluster.resource(rbac, "v1", plural) {
                for object in objects {
                    // The defaults are valid and their names distinct: creating them cannot fail.
                    let _ = cluster.create(&res, "", object, &WriteOptions::default());
                }
            }
        }
        cluster
    }

    /// A snapshot of the served resources.
    pub fn registry(&self) -> ResourceRegistry {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The resource served at group/version/plural, or 404.
    pub fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Result<Arc<ResourceInfo>, ApiError> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(group, version, plural)
            .ok_or_else(|| ApiError::NotFound {
                kind: String::new(),
                name: String::new(),
                message: "the server could not find the requested resource".to_string(),
            })
    }

    /// GET one object.
    pub fn get(&self, res: &ResourceInfo, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let object = self.hub.read(|s| s.get(res, namespace, name))?;
        Ok(events::to_view(res, &object))
    }

    /// LIST objects, as a `<Kind>List` (items and list metadata; the caller may render a Table).
    pub fn list(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<(Vec<Arc<Value>>, Value), ApiError> {
        let start = options
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let core_events = events::is_core_view(res);
        let filter = |o: &Value| {
            if core_events {
                let view = events::core_view(o);
                options.labels.matches(&view) && options.fields.matches(&view)
            } else {
                options.labels.matches(o) && options.fields.matches(o)
            }
        };
        let (page, rv) = self.hub.read(|s| {
            let page = s.list(
                &res.storage_key(),
                namespace,
                filter,
                start.as_ref().map(|(_, k)| k),
                options.limit,
            );
            (page, s.resource_version())
        });
        // A continued list reports the first page's version, so a watch from it misses nothing.
        let list_rv = start.map(|(rv, _)| rv).unwrap_or(rv);
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(next) = &page.next {
            metadata["continue"] = json!(encode_continue(list_rv, next));
        }
        let items = if core_events {
            page.items
                .iter()
                .map(|o| Arc::new(events::core_view(o)))
                .collect()
        } else {
            page.items
        };
        Ok((items, metadata))
    }

    /// Checks what every write needs: kind, name, namespace, schema. Returns the admitted object.
    fn admit(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        mut object: Value,
        old: Option<&Value>,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON or YAML object".to_string(),
            ));
        };
        let api_version = res.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), json!(api_version));
            }
            Some(v)
                if v == api_version
                    || (res.group == v.split('/').next().unwrap_or("") && v.contains('/')) =>
            {
                map.insert("apiVersion".into(), json!(api_version));
            }
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), json!(res.kind));
            }
            Some(k) if k == res.kind => {}
            Some(k) => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    res.kind
                )));
            }
        }
        if !map.get("metadata").is_some_and(Value::is_object) {
            map.insert("metadata".into(), json!({}));
        }
        let body_ns = meta_str(&object, "namespace").to_string();
        if res.namespaced {
            if !body_ns.is_empty() && body_ns != namespace {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".to_string(),
                ));
            }
            object["metadata"]["namespace"] = json!(namespace);
        } else if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let name = meta_str(&object, "name").to_string();
        // RBAC objects are named by any valid path segment (`system:discovery`).
        let rbac = res.group == super::auth::rbac::GROUP;
        let valid = if rbac {
            valid_path_segment(&name)
        } else {
            valid_name(&name)
        };
        if !valid {
            let message = if name.is_empty() {
                "Required value: name or generateName is required".to_string()
            } else if rbac {
                format!(
                    "Invalid value: \"{name}\": may not contain '/' or '%', and may not be '.' or '..'"
                )
            } else {
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                )
            };
            return Err(ApiError::invalid(
                &res.kind,
                &name,
                vec![FieldCause {
                    field: "metadata.name".into(),
                    reason: if name.is_empty() {
                        "FieldValueRequired"
                    } else {
                        "FieldValueInvalid"
                    },
                    message,
                }],
            ));
        }
        if res.namespaced && old.is_none() {
            let namespaces = self.resource("", "v1", "namespaces")?;
            if self
                .hub
                .read(|s| s.get(&namespaces, "", namespace))
                .is_err()
            {
                return Err(ApiError::not_found("namespaces", namespace));
            }
        }
        if let Some(schema) = &res.schema {
            let admission = schema.admit(&res.kind, &mut object, old)?;
            if options.strict && !admission.pruned.is_empty() {
                let fields = admission
                    .pruned
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ApiError::BadRequest(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {fields}",
                    res.kind,
                    res.api_version(),
                    res.kind
                )));
            }
        }
        match (res.group.as_str(), res.plural.as_str()) {
            ("", "secrets") => normalize_secret(&mut object)?,
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                super::resource::resources_from_crd(&object)?;
            }
            _ => {}
        }
        super::builtin::check(res, &object)?;
        if let Some(old) = old {
            super::builtin::check_update(res, &object, old)?;
        }
        Ok(object)
    }

    /// POST: creates an object in `namespace` (empty for cluster-scoped kinds); its field
    /// manager owns every field it set.
    pub fn create(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_owned(res, namespace, body, options, true)
    }

    /// [`Cluster::create`]; `record` false when the body's managedFields are already the
    /// server's (an apply that creates).
    fn create_owned(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        mut body: Value,
        options: &WriteOptions,
        record: bool,
    ) -> Result<Value, ApiError> {
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut)
            && metadata
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            && let Some(prefix) = metadata.get("generateName").and_then(Value::as_str)
        {
            let suffix: String = new_uid()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(5)
                .collect();
            let name = format!("{prefix}{suffix}");
            metadata.insert("name".into(), json!(name));
        }
        let mut object = self.admit(res, namespace, body, None, options)?;
        super::crd_cleanup::check_create(self, res)?;
        let now = now_rfc3339();
        if record && let Some(manager) = &options.field_manager {
            if res.status_subresource
                && let Some(map) = object.as_object_mut()
            {
                map.remove("status");
            }
            let api_version = res.api_version();
            let writer = Writer {
                manager,
                operation: "Update",
                subresource: "",
                api_version: &api_version,
                time: &now,
            };
            managed::record_update(&json!({}), &mut object, &writer);
        }
        // Objects whose status the API server itself sets on create: one write, so the first
        // watch event already has it, as kube-apiserver's.
        let initial_status = match (res.group.as_str(), res.plural.as_str()) {
            ("", "namespaces") => Some(json!({"phase": "Active"})),
            ("", "pods") => {
                Some(json!({"phase": "Pending", "qosClass": super::builtin::qos_class(&object)}))
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                Some(crd_status(&object, &now))
            }
            _ => None,
        };
        if options.dry_run {
            if is_services(res) {
                let taken = self
                    .hub
                    .read(|store| taken_cluster_ips(store, res, &object));
                services::admit(&mut object, None, &taken)?;
            }
            if res.status_subresource
                && let Some(map) = object.as_object_mut()
            {
                map.remove("status");
            }
            if let Some(status) = initial_status {
                object["status"] = status;
            }
            return Ok(object);
        }
        let created = self.hub.write(|store| {
            if is_services(res) {
                // Allocated under the store's lock, so two Services never get one address.
                let taken = taken_cluster_ips(store, res, &object);
                services::admit(&mut object, None, &taken)?;
            }
            store.create_with_status(
                res,
                events::to_storage(res, object),
                initial_status,
                &new_uid(),
                &now,
            )
        })?;
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            self.registry
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .add_crd(&created)?;
        }
        if res.group.is_empty() && res.plural == "namespaces" {
            self.populate_namespace(meta_str(&created, "name"));
        }
        Ok(events::to_view(res, &created))
    }

    /// Publishes where the API server is and its CA, as a cluster does: the `kubernetes`
    /// Service and Endpoints in `default` and `kube-root-ca.crt` in every namespace (and in
    /// every namespace created later). Only the first call counts.
    pub fn publish_control_plane(&self, control_plane: ControlPlane) {
        if self.control_plane.set(control_plane.clone()).is_err() {
            return;
        }
        let port = control_plane.addr.port();
        let host = control_plane.addr.ip().to_string();
        for (plural, object) in [
            ("services", services::kubernetes_service(port)),
            ("endpoints", services::kubernetes_endpoints(&host, port)),
        ] {
            if let Ok(res) = self.resource("", "v1", plural) {
                // Fails only if it exists already, which is what was wanted.
                let _ = self.create(&res, "default", object, &WriteOptions::default());
            }
        }
        let namespaces = self
            .resource("", "v1", "namespaces")
            .map(|res| {
                self.hub.read(|s| {
                    s.list(&res.storage_key(), None, |_| true, None, None)
                        .items
                        .iter()
                        .map(|n| meta_str(n, "name").to_string())
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default();
        for namespace in namespaces {
            self.publish_root_ca(&namespace);
        }
    }

    /// `kube-root-ca.crt` in `namespace`, once the CA is known (kube-controller-manager's
    /// root-ca-cert-publisher).
    fn publish_root_ca(&self, namespace: &str) {
        let (Some(control_plane), Ok(res)) = (
            self.control_plane.get(),
            self.resource("", "v1", "configmaps"),
        ) else {
            return;
        };
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                         "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": control_plane.ca_pem}});
        // Fails only if it exists already, which is what was wanted.
        let _ = self.create(&res, namespace, config_map, &WriteOptions::default());
    }

    /// What a cluster's controllers put in every new namespace: the `default` ServiceAccount
    /// (pods without `serviceAccountName` run as it) and `kube-root-ca.crt`.
    fn populate_namespace(&self, namespace: &str) {
        if let Ok(res) = self.resource("", "v1", "serviceaccounts") {
            let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
            // Fails only if it exists already, which is what was wanted.
            let _ = self.create(&res, namespace, account, &WriteOptions::default());
        }
        self.publish_root_ca(namespace);
    }

    /// PUT: replaces an object (or its status).
    pub fn update(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        body: Value,
        target: UpdateTarget,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let stored = self.hub.read(|s| s.get(res, namespace, name))?;
        let old = events::to_view(res, &stored);
        if !meta_str(&body, "name").is_empty() && meta_str(&body, "name") != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&body, "name")
            )));
        }
        if !allows_unconditional_update(res) && meta_str(&body, "resourceVersion").is_empty() {
            return Err(ApiError::invalid(
                &res.kind,
                name,
                vec![FieldCause {
                    field: "metadata.resourceVersion".into(),
                    reason: "FieldValueInvalid",
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
        let mut body = body;
        if body.is_object() && !body.get("metadata").is_some_and(Value::is_object) {
            body["metadata"] = json!({});
        }
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), json!(name));
        }
        self.write_admitted(res, namespace, body, &old, target, options, true)
    }

    /// Admits and stores an update; `record` false when `body`'s managedFields are already
    /// the server's (an apply).
    #[allow(clippy::too_many_arguments)] // one write, unpacked once
    fn write_admitted(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        body: Value,
        old: &Value,
        target: UpdateTarget,
        options: &WriteOptions,
        record: bool,
    ) -> Result<Value, ApiError> {
        // Admission sees the object as it will be stored, so schema rules on status and spec
        // are checked against the whole result of this write.
        let prospective = match target {
            UpdateTarget::Main => body,
            UpdateTarget::Status => {
                let mut merged = old.clone();
                merged["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                if merged["status"].is_null()
                    && let Some(m) = merged.as_object_mut()
                {
                    m.remove("status");
                }
                if !meta_str(&body, "resourceVersion").is_empty() {
                    merged["metadata"]["resourceVersion"] =
                        json!(meta_str(&body, "resourceVersion"));
                }
                if let Some(managed) = body.pointer("/metadata/managedFields") {
                    merged["metadata"]["managedFields"] = managed.clone();
                }
                merged
            }
        };
        let object = self.admit(res, namespace, prospective, Some(old), options)?;
        if options.dry_run {
            return Ok(object);
        }
        let now = now_rfc3339();
        let api_version = res.api_version();
        let writer = options
            .field_manager
            .as_deref()
            .filter(|_| record)
            .map(|manager| Writer {
                manager,
                operation: "Update",
                subresource: match target {
                    UpdateTarget::Main => "",
                    UpdateTarget::Status => "status",
                },
                api_version: &api_version,
                time: &now,
            });
        let updated = self.hub.write(|store| -> Result<Arc<Value>, ApiError> {
            let mut object = object;
            if is_services(res) && target == UpdateTarget::Main {
                let namespace = meta_str(&object, "namespace").to_string();
                let stored = store.get(res, &namespace, meta_str(&object, "name"))?;
                let taken = taken_cluster_ips(store, res, &object);
                services::admit(&mut object, Some(&stored), &taken)?;
            }
            let updated = store.update_by(
                res,
                events::to_storage(res, object),
                target,
                writer.as_ref(),
            )?;
            // When this removed the last finalizer the object is gone, and its dependents go too.
            collect_garbage(store, &now);
            Ok(updated)
        })?;
        if is_crds(res) {
            let mut registry = self.registry.write().unwrap_or_else(|p| p.into_inner());
            let gone = updated.pointer("/metadata/deletionTimestamp").is_some()
                && updated
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if gone {
                // The update removed the last finalizer: the CRD is deleted.
                registry.remove_crd(meta_str(&updated, "name"));
            } else {
                registry.add_crd(&updated)?;
            }
        }
        Ok(events::to_view(res, &updated))
    }

    /// PATCH: applies a patch to an object (or its status); apply creates it when missing.
    pub fn patch(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        patch: Patch,
        target: UpdateTarget,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let Patch {
            patch_type,
            body: patch,
        } = patch;
        if patch_type == PatchType::Apply
            && options.field_manager.as_deref().unwrap_or("").is_empty()
        {
            return Err(ApiError::invalid(
                "PatchOptions",
                "",
                vec![FieldCause {
                    field: "fieldManager".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: is required for apply patch".into(),
                }],
            )
            .in_group("meta.k8s.io"));
        }
        if patch_type != PatchType::Apply && options.force {
            return Err(ApiError::invalid(
                "PatchOptions",
                "",
                vec![FieldCause {
                    field: "force".into(),
                    reason: "FieldValueForbidden",
                    message: "Forbidden: may not be specified for non-apply patch".into(),
                }],
            )
            .in_group("meta.k8s.io"));
        }
        if patch_type == PatchType::Strategic && res.schema.is_some() {
            // Custom resources have no strategic-merge metadata: kube-apiserver refuses it.
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string(),
            ));
        }
        if patch_type != PatchType::Json && !patch.is_object() {
            return Err(ApiError::BadRequest(
                "the patch must be a JSON or YAML object".to_string(),
            ));
        }
        let now = now_rfc3339();
        let api_version = res.api_version();
        let manager = Writer {
            manager: options.field_manager.as_deref().unwrap_or(""),
            operation: "Apply",
            subresource: if target == UpdateTarget::Status {
                "status"
            } else {
                ""
            },
            api_version: &api_version,
            time: &now,
        };
        let sent_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // A patch applies to whatever is current: when another write lands between our read
        // and our write, kube-apiserver re-applies the patch rather than reporting a conflict
        // (unless the patch itself carries a resourceVersion).
        // Patches are serialised among themselves, so only other verbs can race them.
        let _serial = self.patch_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.patch_once(
                res, namespace, name, patch_type, &patch, target, options, &manager, &sent_rv,
            );
            match result {
                Err(ApiError::Conflict { .. } | ApiError::AlreadyExists { .. })
                    if sent_rv.is_empty() && attempts < PATCH_ATTEMPTS =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the parts of one PATCH request, unpacked once
    fn patch_once(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
        target: UpdateTarget,
        options: &WriteOptions,
        manager: &Writer<'_>,
        sent_rv: &str,
    ) -> Result<Value, ApiError> {
        let old = match self.hub.read(|s| s.get(res, namespace, name)) {
            Ok(old) => events::to_view(res, &old),
            Err(ApiError::NotFound { .. })
                if patch_type == PatchType::Apply && target == UpdateTarget::Main =>
            {
                let applied = apply::scope(patch, manager.subresource, res.status_subresource);
                let mut body = apply::apply(&json!({}), &applied, manager, options.force)?;
                body["metadata"]["name"] = json!(name);
                return self.create_owned(res, namespace, body, options, false);
            }
            Err(e) => return Err(e),
        };
        let strategic = res.schema.is_none();
        let patched = if patch_type == PatchType::Apply {
            let applied = apply::scope(patch, manager.subresource, res.status_subresource);
            apply::apply(&old, &applied, manager, options.force)
        } else {
            apply_patch(&old, patch_type, patch, strategic)
        };
        let mut patched = patched.map_err(|e| match e {
            ApiError::Invalid { message, .. } => ApiError::Invalid {
                group: String::new(),
                kind: res.kind.clone(),
                name: name.to_string(),
                causes: Vec::new(),
                message,
            },
            other => other,
        })?;
        if !patched.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::BadRequest(
                "metadata must be an object".to_string(),
            ));
        }
        if meta_str(&patched, "name") != name {
            return Err(ApiError::BadRequest(
                "metadata.name may not be changed by a patch".to_string(),
            ));
        }
        patched["metadata"]["resourceVersion"] = json!(if sent_rv.is_empty() {
            meta_str(&old, "resourceVersion")
        } else {
            sent_rv
        });
        let applied = patch_type == PatchType::Apply;
        self.write_admitted(res, namespace, patched, &old, target, options, !applied)
    }

    /// DELETE: deletes (or, with finalizers, marks) an object; its dependents are collected.
    pub fn delete(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        request: &DeleteRequest,
    ) -> Result<Value, ApiError> {
        let mut options = request.preconditions.clone();
        options.graceful = self.pod_grace(res, namespace, name, request.grace_period_seconds);
        let preconditions = &options;
        if res.group.is_empty()
            && res.plural == "namespaces"
            && PROTECTED_NAMESPACES.contains(&name)
        {
            return Err(ApiError::Forbidden {
                group: String::new(),
                kind: "namespaces".to_string(),
                name: name.to_string(),
                message: format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                ),
            });
        }
        if request.dry_run {
            return self.get(res, namespace, name);
        }
        let now = now_rfc3339();
        let outcome = self.hub.write(|store| -> Result<DeleteOutcome, ApiError> {
            if request.orphan
                && let Ok(owner) = store.get(res, namespace, name)
            {
                let uid = meta_str(&owner, "uid").to_string();
                for (storage_key, key) in store.dependents_of(&uid) {
                    store.remove_owner(&storage_key, &key, &uid);
                }
            }
            let keep = |_: &mut Value| {};
            let prepare: &dyn Fn(&mut Value) = if is_crds(res) {
                &super::crd_cleanup::mark
            } else {
                &keep
            };
            let outcome = store.delete_preparing(
                &res.storage_key(),
                &res.group_resource(),
                namespace,
                name,
                preconditions,
                &now,
                prepare,
            )?;
            if let DeleteOutcome::Deleted(gone) = &outcome {
                cascade_kind_specific(store, res, gone, &now);
                collect_garbage(store, &now);
            }
            Ok(outcome)
        })?;
        if let DeleteOutcome::Deleted(gone) = &outcome
            && res.group == "apiextensions.k8s.io"
            && res.plural == "customresourcedefinitions"
        {
            self.registry
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove_crd(meta_str(gone, "name"));
        }
        match &outcome {
            DeleteOutcome::Deleted(gone) if !returns_deleted_object(res) => Ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": meta_str(gone, "name"),
                    "group": res.group,
                    "kind": res.plural,
                    "uid": meta_str(gone, "uid"),
                },
            })),
            _ => Ok(events::to_view(res, outcome.object())),
        }
    }

    /// A pod on a node terminates gracefully (its kubelet stops it, then deletes it without
    /// grace); unscheduled and finished pods, and every other kind, go at once.
    fn pod_grace(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        requested: Option<i64>,
    ) -> Option<Graceful> {
        if !(res.group.is_empty() && res.plural == "pods") {
            return None;
        }
        let pod = self.hub.read(|s| s.get(res, namespace, name)).ok()?;
        let on_node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if !on_node || finished {
            return None;
        }
        let seconds = requested
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(DEFAULT_POD_GRACE_SECONDS);
        if seconds <= 0 {
            return None;
        }
        let now = jiff::Timestamp::now();
        let deadline = jiff::Timestamp::from_second(now.as_second().saturating_add(seconds))
            .unwrap_or(now)
            .to_string();
        Some(Graceful { seconds, deadline })
    }

    /// `pods/<name>/binding`: assigns the pod to a node, as the scheduler does.
    pub fn bind(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<(), ApiError> {
        if node.is_empty() {
            return Err(ApiError::invalid(
                "Binding",
                name,
                vec![FieldCause {
                    field: "target.name".into(),
                    reason: "FieldValueRequired",
                    message: "Required value".into(),
                }],
            ));
        }
        self.hub.write(|store| {
            let pod = store.get(res, namespace, name)?;
            let current = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::Conflict {
                    kind: res.group_resource(),
                    name: name.to_string(),
                    message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""),
                });
            }
            let mut bound = (*pod).clone();
            bound["spec"]["nodeName"] = json!(node);
            store.update(res, bound, UpdateTarget::Main).map(|_| ())
        })
    }

    /// DELETE on a collection: deletes every object the selectors match.
    pub fn delete_collection(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, _) = self.list(
            res,
            namespace,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..options.clone()
            },
        )?;
        let mut deleted = Vec::new();
        for item in items {
            match self.delete(
                res,
                meta_str(&item, "namespace"),
                meta_str(&item, "name"),
                &DeleteRequest::default(),
            ) {
                Ok(o) => deleted.push(o),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// Deleting a namespace deletes what is in it; deleting a CRD deletes its custom resources.
fn cascade_kind_specific(store: &mut Store, res: &ResourceInfo, gone: &Value, now: &str) {
    let contents: Vec<(String, String, String)> = match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => {
            let ns = meta_str(gone, "name");
            store
                .all_objects()
                .filter(|(_, o)| meta_str(o, "namespace") == ns)
                .map(|(k, o)| {
                    (
                        k.to_string(),
                        ns.to_string(),
                        meta_str(o, "name").to_string(),
                    )
                })
                .collect()
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let key = format!(
                "{}/{}",
                gone.pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                gone.pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            store
                .all_objects()
                .filter(|(k, _)| *k == key)
                .map(|(k, o)| {
                    (
                        k.to_string(),
                        meta_str(o, "namespace").to_string(),
                        meta_str(o, "name").to_string(),
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    };
    for (key, ns, name) in contents {
        // Already gone or finalizing: either way nothing more to do here.
        let _ = store.delete(&key, &key, &ns, &name, &DeleteOptions::default(), now);
    }
}

fn is_crds(res: &ResourceInfo) -> bool {
    res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions"
}

fn is_services(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.plural == "services"
}

/// The cluster IPs held by Services other than `service`.
fn taken_cluster_ips(store: &Store, res: &ResourceInfo, service: &Value) -> BTreeSet<String> {
    let page = store.list(
        &res.storage_key(),
        None,
        |other| {
            meta_str(other, "namespace") != meta_str(service, "namespace")
                || meta_str(other, "name") != meta_str(service, "name")
        },
        None,
        None,
    );
    services::cluster_ips(page.items.iter().map(|s| s.as_ref()))
}

/// The status kube-apiserver gives an accepted CRD: names accepted and established.
fn crd_status(crd: &Value, now: &str) -> Value {
    let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| {
            vs.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()
        }).unwrap_or_default(),
    })
}

/// Secrets store `stringData` base64-encoded into `data`, and default their type.
fn normalize_secret(secret: &mut Value) -> Result<(), ApiError> {
    let Some(map) = secret.as_object_mut() else {
        return Ok(());
    };
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let Some(data) = map
            .entry("data")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        else {
            return Err(ApiError::BadRequest(
                "Secret data must be a map of base64 strings".to_string(),
            ));
        };
        for (key, value) in string_data {
            let text = value.as_str().ok_or_else(|| {
                ApiError::BadRequest(format!("stringData.{key} must be a string"))
            })?;
            data.insert(
                key,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
    map.entry("type").or_insert_with(|| json!("Opaque"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::new(1000, 64)
    }

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "maximum": 10}}},
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
        })
    }

    #[test]
    fn default_namespace_exists_at_start() {
        let c = cluster();
        let ns = c.resource("", "v1", "namespaces").unwrap();
        assert_eq!(
            c.get(&ns, "", "default").unwrap()["status"]["phase"],
            "Active"
        );
    }

    #[test]
    fn creating_a_crd_serves_its_kind_and_validates_objects() {
        let c = cluster();
        let crds = c
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let created = c
            .create(&crds, "", crd(), &WriteOptions::default())
            .unwrap();
        assert_eq!(created["status"]["conditions"][1]["type"], "Established");
        let widgets = c.resource("example.com", "v1", "widgets").unwrap();
        let ok = c
            .create(
                &widgets,
                "default",
                json!({"metadata": {"name": "w"}, "spec": {"size": 3, "junk": 1}}),
                &WriteOptions::default(),
            )
            .unwrap();
        assert!(ok["spec"].get("junk").is_none());
        let err = c
            .create(
                &widgets,
                "default",
                json!({"metadata": {"name": "w2"}, "spec": {"size": 11}}),
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 422);
        let strict = WriteOptions {
            strict: true,
            ..Default::default()
        };
        let err = c
            .create(
                &widgets,
                "default",
                json!({"metadata": {"name": "w3"}, "spec": {"junk": 1}}),
                &strict,
            )
            .unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(
            err.to_string().contains("unknown field \"spec.junk\""),
            "{err}"
        );
    }

    #[test]
    fn deleting_a_crd_stops_serving_it_and_removes_its_objects() {
        let c = cluster();
        let crds = c
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        c.create(&crds, "", crd(), &WriteOptions::default())
            .unwrap();
        let widgets = c.resource("example.com", "v1", "widgets").unwrap();
        c.create(
            &widgets,
            "default",
            json!({"metadata": {"name": "w"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        c.create(
            &widgets,
            "default",
            json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let marked = c
            .delete(&crds, "", "widgets.example.com", &DeleteRequest::default())
            .unwrap();
        // The DELETE only marks the CRD; it still serves its kind, but refuses creates.
        assert_eq!(
            marked["metadata"]["finalizers"],
            json!([super::super::crd_cleanup::FINALIZER])
        );
        assert!(super::super::crd_cleanup::is_terminating(&marked));
        let refused = c
            .create(
                &widgets,
                "default",
                json!({"metadata": {"name": "late"}}),
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(refused.code(), 405);
        assert_eq!(
            refused.to_string(),
            "create not allowed while custom resource definition is terminating"
        );
        // The cleanup deletes the instances and waits for the one a finalizer holds.
        super::super::crd_cleanup::reconcile_all(&c);
        assert!(c.get(&widgets, "default", "w").is_err());
        let held = c.get(&widgets, "default", "held").unwrap();
        assert!(held["metadata"]["deletionTimestamp"].is_string());
        assert!(c.get(&crds, "", "widgets.example.com").is_ok());
        let mut released = held.clone();
        released["metadata"]["finalizers"] = json!([]);
        c.update(
            &widgets,
            "default",
            "held",
            released,
            UpdateTarget::Main,
            &WriteOptions::default(),
        )
        .unwrap();
        super::super::crd_cleanup::reconcile_all(&c);
        assert!(c.get(&crds, "", "widgets.example.com").is_err());
        assert!(c.resource("example.com", "v1", "widgets").is_err());
        let (items, _) = c.list(&widgets, None, &ListOptions::default()).unwrap();
        assert!(items.is_empty());
    }

    #[test]
    fn orphan_deletion_keeps_dependents_without_the_owner_reference() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        let owner = c
            .create(
                &cms,
                "default",
                json!({"metadata": {"name": "owner"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "kept", "ownerReferences": owner_ref}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let orphan = DeleteRequest {
            orphan: true,
            ..Default::default()
        };
        c.delete(&cms, "default", "owner", &orphan).unwrap();
        let kept = c.get(&cms, "default", "kept").unwrap();
        assert!(kept["metadata"].get("ownerReferences").is_none(), "{kept}");
    }

    #[test]
    fn dry_run_delete_leaves_the_object() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "c"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let dry = DeleteRequest {
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(
            c.delete(&cms, "default", "c", &dry).unwrap()["metadata"]["name"],
            "c"
        );
        assert!(c.get(&cms, "default", "c").is_ok());
    }

    #[test]
    fn the_default_namespace_cannot_be_deleted() {
        let c = cluster();
        let ns = c.resource("", "v1", "namespaces").unwrap();
        let err = c
            .delete(&ns, "", "default", &DeleteRequest::default())
            .unwrap_err();
        assert_eq!(err.code(), 403);
    }

    #[test]
    fn deleting_a_namespace_deletes_its_objects() {
        let c = cluster();
        let ns = c.resource("", "v1", "namespaces").unwrap();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        c.create(
            &ns,
            "",
            json!({"metadata": {"name": "scratch"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        c.create(
            &cms,
            "scratch",
            json!({"metadata": {"name": "x"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        c.delete(&ns, "", "scratch", &DeleteRequest::default())
            .unwrap();
        assert_eq!(c.get(&cms, "scratch", "x").unwrap_err().code(), 404);
    }

    #[test]
    fn a_pod_on_a_node_terminates_gracefully_and_an_unscheduled_one_goes_at_once() {
        let c = cluster();
        let pods = c.resource("", "v1", "pods").unwrap();
        let pod = |name: &str| json!({"metadata": {"name": name}, "spec": {"terminationGracePeriodSeconds": 10, "containers": [{"name": "c", "image": "i"}]}});
        c.create(&pods, "default", pod("bound"), &WriteOptions::default())
            .unwrap();
        c.create(&pods, "default", pod("loose"), &WriteOptions::default())
            .unwrap();
        c.bind(&pods, "default", "bound", "testbed").unwrap();
        assert_eq!(
            c.get(&pods, "default", "bound").unwrap()["spec"]["nodeName"],
            "testbed"
        );
        assert_eq!(
            c.bind(&pods, "default", "bound", "other")
                .unwrap_err()
                .code(),
            409
        );

        let marked = c
            .delete(&pods, "default", "bound", &DeleteRequest::default())
            .unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 10);
        assert!(
            c.get(&pods, "default", "bound").is_ok(),
            "it waits for its kubelet"
        );
        c.delete(
            &pods,
            "default",
            "bound",
            &DeleteRequest {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.get(&pods, "default", "bound").unwrap_err().code(), 404);

        c.delete(&pods, "default", "loose", &DeleteRequest::default())
            .unwrap();
        assert_eq!(c.get(&pods, "default", "loose").unwrap_err().code(), 404);
    }

    #[test]
    fn create_in_a_missing_namespace_is_not_found() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        let err = c
            .create(
                &cms,
                "nowhere",
                json!({"metadata": {"name": "x"}}),
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 404);
    }

    #[test]
    fn status_patch_changes_only_status_and_merge_patch_on_main_ignores_status() {
        let c = cluster();
        let crds = c
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        c.create(&crds, "", crd(), &WriteOptions::default())
            .unwrap();
        let widgets = c.resource("example.com", "v1", "widgets").unwrap();
        c.create(
            &widgets,
            "default",
            json!({"metadata": {"name": "w"}, "spec": {"size": 1}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let patched = c
            .patch(
                &widgets,
                "default",
                "w",
                Patch::new(
                    PatchType::Merge,
                    json!({"status": {"phase": "Ready"}, "spec": {"size": 2}}),
                ),
                UpdateTarget::Status,
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(patched["status"]["phase"], "Ready");
        assert_eq!(patched["spec"]["size"], 1);
        let patched = c
            .patch(
                &widgets,
                "default",
                "w",
                Patch::new(
                    PatchType::Merge,
                    json!({"status": {"phase": "Nope"}, "spec": {"size": 2}}),
                ),
                UpdateTarget::Main,
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(patched["status"]["phase"], "Ready");
        assert_eq!(patched["spec"]["size"], 2);
        assert_eq!(patched["metadata"]["generation"], 2);
    }

    #[test]
    fn apply_creates_when_missing_and_requires_a_field_manager() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let err = c
            .patch(
                &cms,
                "default",
                "c",
                Patch::new(PatchType::Apply, body.clone()),
                UpdateTarget::Main,
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 422, "kube-apiserver answers Invalid: {err}");
        let options = WriteOptions {
            field_manager: Some("test".into()),
            ..Default::default()
        };
        let created = c
            .patch(
                &cms,
                "default",
                "c",
                Patch::new(PatchType::Apply, body),
                UpdateTarget::Main,
                &options,
            )
            .unwrap();
        assert_eq!(created["data"]["a"], "1");
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "test");
        let other = WriteOptions {
            field_manager: Some("other".into()),
            ..Default::default()
        };
        let merged = c
            .patch(
                &cms,
                "default",
                "c",
                Patch::new(PatchType::Apply, json!({"data": {"b": "2"}})),
                UpdateTarget::Main,
                &other,
            )
            .unwrap();
        assert_eq!(merged["data"], json!({"a": "1", "b": "2"}));
        let dropped = c
            .patch(
                &cms,
                "default",
                "c",
                Patch::new(PatchType::Apply, json!({"data": {"c": "3"}})),
                UpdateTarget::Main,
                &options,
            )
            .unwrap();
        assert_eq!(
            dropped["data"],
            json!({"b": "2", "c": "3"}),
            "test's a went"
        );
    }

    #[test]
    fn status_apply_records_its_manager_and_removes_what_it_stops_applying() {
        let c = cluster();
        let crds = c
            .resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        c.create(&crds, "", crd(), &WriteOptions::default())
            .unwrap();
        let widgets = c.resource("example.com", "v1", "widgets").unwrap();
        c.create(
            &widgets,
            "default",
            json!({"metadata": {"name": "w"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let options = WriteOptions {
            field_manager: Some("operator".into()),
            ..Default::default()
        };
        let status = |phase: Value| {
            Patch::new(
                PatchType::Apply,
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": phase}),
            )
        };
        let first = c
            .patch(
                &widgets,
                "default",
                "w",
                status(json!({"phase": "Ready"})),
                UpdateTarget::Status,
                &options,
            )
            .unwrap();
        assert_eq!(first["status"]["phase"], "Ready");
        let entry = &first["metadata"]["managedFields"][0];
        assert_eq!(
            (entry["manager"].as_str(), entry["subresource"].as_str()),
            (Some("operator"), Some("status"))
        );
        let second = c
            .patch(
                &widgets,
                "default",
                "w",
                status(json!({})),
                UpdateTarget::Status,
                &options,
            )
            .unwrap();
        assert!(second["status"].get("phase").is_none(), "{second}");
    }

    #[test]
    fn hostile_shapes_are_refused_without_panicking() {
        let c = cluster();
        let secrets = c.resource("", "v1", "secrets").unwrap();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        let options = WriteOptions::default();
        for body in [
            json!({"metadata": {"name": "s"}, "data": "x", "stringData": {"k": "v"}}),
            json!({"metadata": "s"}),
            json!([1, 2]),
            json!({"metadata": {"name": "s", "labels": [1]}}),
        ] {
            assert!(c.create(&secrets, "default", body, &options).is_err());
        }
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "c"}}),
            &options,
        )
        .unwrap();
        for (patch_type, body) in [
            (PatchType::Merge, json!({"metadata": 5})),
            (PatchType::Merge, json!({"metadata": {"name": "other"}})),
            (PatchType::Strategic, json!({"metadata": [1]})),
            (
                PatchType::Json,
                json!([{"op": "replace", "path": "/metadata", "value": 1}]),
            ),
            (PatchType::Json, json!([{"op": "bogus"}])),
        ] {
            let result = c.patch(
                &cms,
                "default",
                "c",
                Patch::new(patch_type, body),
                UpdateTarget::Main,
                &options,
            );
            assert!(result.is_err(), "{patch_type:?} was accepted: {result:?}");
        }
    }

    #[test]
    fn concurrent_patches_to_one_object_all_apply_without_conflicts() {
        let c = std::sync::Arc::new(cluster());
        let cms = c.resource("", "v1", "configmaps").unwrap();
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "c"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (c, cms) = (c.clone(), cms.clone());
                std::thread::spawn(move || {
                    for j in 0..25 {
                        let body = json!({"data": {format!("k{i}-{j}"): "v"}});
                        c.patch(
                            &cms,
                            "default",
                            "c",
                            Patch::new(PatchType::Merge, body),
                            UpdateTarget::Main,
                            &WriteOptions::default(),
                        )
                        .expect("no spurious conflict");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let data = c.get(&cms, "default", "c").unwrap()["data"].clone();
        assert_eq!(data.as_object().unwrap().len(), 200);
    }

    #[test]
    fn a_patch_carrying_a_stale_resource_version_conflicts() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "c"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let body = json!({"metadata": {"resourceVersion": "1"}, "data": {"a": "b"}});
        let err = c
            .patch(
                &cms,
                "default",
                "c",
                Patch::new(PatchType::Merge, body),
                UpdateTarget::Main,
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code(), 409);
    }

    #[test]
    fn secret_string_data_is_stored_base64_encoded() {
        let c = cluster();
        let secrets = c.resource("", "v1", "secrets").unwrap();
        let s = c
            .create(
                &secrets,
                "default",
                json!({"metadata": {"name": "s"}, "stringData": {"k": "hi"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(s["data"]["k"], "aGk=");
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn list_pagination_returns_a_continue_token_with_the_first_page_version() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        for name in ["a", "b", "c"] {
            c.create(
                &cms,
                "default",
                json!({"metadata": {"name": name}}),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        let (first, meta) = c
            .list(
                &cms,
                Some("default"),
                &ListOptions {
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(first.len(), 2);
        let token = meta["continue"].as_str().unwrap().to_string();
        c.create(
            &cms,
            "default",
            json!({"metadata": {"name": "d"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let (second, meta2) = c
            .list(
                &cms,
                Some("default"),
                &ListOptions {
                    limit: Some(2),
                    continue_token: Some(token),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(meta2["resourceVersion"], meta["resourceVersion"]);
        assert!(
            c.list(
                &cms,
                None,
                &ListOptions {
                    continue_token: Some("garbage".into()),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn deleting_an_owner_removes_owned_objects() {
        let c = cluster();
        let cms = c.resource("", "v1", "configmaps").unwrap();
        let pods = c.resource("", "v1", "pods").unwrap();
        let owner = c
            .create(
                &cms,
                "default",
                json!({"metadata": {"name": "owner"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
        c.create(
            &pods,
            "default",
            json!({"metadata": {"name": "p", "ownerReferences": owner_ref}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            &WriteOptions::default(),
        )
        .unwrap();
        c.delete(&cms, "default", "owner", &DeleteRequest::default())
            .unwrap();
        assert_eq!(c.get(&pods, "default", "p").unwrap_err().code(), 404);
    }
}
