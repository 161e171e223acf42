//! The object store: every object by resource, namespace and name, one global resourceVersion
//! counter, and the retained history of changes that watches resume from.
//!
//! It owns the write semantics of the Kubernetes object model that do not depend on a kind's
//! schema: optimistic concurrency, `generation`, the status subresource split, finalizers and
//! `deletionTimestamp`. It is plain data behind `&mut self`: time and uids come from the caller.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::managed::{self, Writer};
use super::resource::ResourceInfo;
use super::status::ApiError;

/// An object's address within one resource: namespace (empty if cluster-scoped) and name.
pub type ObjectKey = (String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches deliver it.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The resource's storage key (`group/plural`).
    pub storage_key: String,
    /// The object's namespace (empty if cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before removal for `Deleted`, with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change (`None` for `Added`), so selector watches can tell when an
    /// object starts or stops matching.
    pub previous: Option<Arc<Value>>,
    /// The JSON watch frame, encoded once however many watches send it.
    encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl WatchEvent {
    /// The event as a watch frame (`{"type":...,"object":...}` and a newline).
    pub fn frame(&self) -> bytes::Bytes {
        self.encoded
            .get_or_init(|| encode_frame(self.event_type.as_str(), &self.object))
            .clone()
    }
}

/// One watch frame: a JSON object and a newline.
pub fn encode_frame(event_type: &str, object: &Value) -> bytes::Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    bytes::Bytes::from(line)
}

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateTarget {
    /// The main endpoint: everything but status when the kind has a status subresource.
    Main,
    /// The `/status` subresource: status only.
    Status,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum DeleteOutcome {
    /// The object is gone; this is its last state.
    Deleted(Arc<Value>),
    /// The object has finalizers or is terminating gracefully: it is marked with a
    /// deletionTimestamp and stays until they go or it is deleted without grace.
    Finalizing(Arc<Value>),
}

impl DeleteOutcome {
    /// The object as the delete left it.
    pub fn object(&self) -> &Arc<Value> {
        match self {
            DeleteOutcome::Deleted(o) | DeleteOutcome::Finalizing(o) => o,
        }
    }
}

/// How a delete is to be carried out (`DeleteOptions`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Precondition: the required current uid.
    pub uid: Option<String>,
    /// Precondition: the required current resourceVersion.
    pub resource_version: Option<String>,
    /// Graceful deletion (pods on a node): the object stays, marked, until deleted again with
    /// no grace period (by its kubelet).
    pub graceful: Option<Graceful>,
}

/// A graceful deletion's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graceful {
    /// The grace period in seconds (greater than zero).
    pub seconds: i64,
    /// `deletionTimestamp`: when the grace period ends.
    pub deadline: String,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The matching objects, in namespace/name order.
    pub items: Vec<Arc<Value>>,
    /// The key to continue after, when `limit` cut the list short.
    pub next: Option<ObjectKey>,
}

/// The store. See the module docs.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    tables: HashMap<String, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Changes at or below this resourceVersion are no longer retained.
    compacted: u64,
    pending: Vec<Arc<WatchEvent>>,
    /// Where each uid lives, for garbage collection.
    uids: HashMap<String, (String, ObjectKey)>,
    /// The objects that name each uid as an owner.
    dependents: HashMap<String, BTreeSet<(String, ObjectKey)>>,
    /// Uids of objects removed since the last [`Store::take_removed_uids`].
    removed: Vec<String>,
}

/// The uids an object's ownerReferences name.
pub fn owner_uids(object: &Value) -> Vec<&str> {
    meta(object)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    meta(object)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // The branch above just made metadata an object.
        _ => unreachable!("metadata is an object"),
    }
}

fn has_finalizers(object: &Value) -> bool {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Whether anything outside metadata and status differs (what bumps `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(old) != strip(new)
}

impl Store {
    /// An empty store retaining up to `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 1,
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            pending: Vec::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            removed: Vec::new(),
        }
    }

    /// Stores `object` at `key`, keeping the uid and owner indexes current.
    fn put(&mut self, storage_key: &str, key: ObjectKey, object: Arc<Value>) {
        let entry = (storage_key.to_string(), key.clone());
        let previous = self
            .tables
            .entry(storage_key.to_string())
            .or_default()
            .insert(key, object.clone());
        if let Some(previous) = previous {
            self.unindex_owners(&entry, &previous);
        }
        for owner in owner_uids(&object) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(entry.clone());
        }
        self.uids
            .insert(meta_str(&object, "uid").to_string(), entry);
    }

    /// Removes the object at `key`, recording its uid as gone.
    fn take(&mut self, storage_key: &str, key: &ObjectKey) {
        let Some(object) = self.tables.get_mut(storage_key).and_then(|t| t.remove(key)) else {
            return;
        };
        let entry = (storage_key.to_string(), key.clone());
        self.unindex_owners(&entry, &object);
        let uid = meta_str(&object, "uid").to_string();
        self.uids.remove(&uid);
        self.removed.push(uid);
    }

    fn unindex_owners(&mut self, entry: &(String, ObjectKey), object: &Value) {
        for owner in owner_uids(object) {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(entry);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Whether an object with this uid exists.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// The objects (storage key and address) that name `uid` as an owner.
    pub fn dependents_of(&self, uid: &str) -> Vec<(String, ObjectKey)> {
        self.dependents
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The object at an address, by storage key.
    pub fn get_by_key(&self, storage_key: &str, key: &ObjectKey) -> Option<Arc<Value>> {
        self.tables
            .get(storage_key)
            .and_then(|t| t.get(key))
            .cloned()
    }

    /// Drops the owner reference to `owner_uid` from the object at `key` (orphaning it).
    pub fn remove_owner(&mut self, storage_key: &str, key: &ObjectKey, owner_uid: &str) {
        let Some(old) = self.get_by_key(storage_key, key) else {
            return;
        };
        let mut orphaned = (*old).clone();
        let metadata = meta_mut(&mut orphaned);
        if let Some(Value::Array(refs)) = metadata.get_mut("ownerReferences") {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            if refs.is_empty() {
                metadata.remove("ownerReferences");
            }
        }
        self.rv += 1;
        meta_mut(&mut orphaned).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let orphaned = Arc::new(orphaned);
        self.put(storage_key, key.clone(), orphaned.clone());
        self.record(storage_key, EventType::Modified, orphaned, Some(old));
    }

    /// The uids of objects removed since the last call, for garbage collection.
    pub fn take_removed_uids(&mut self) -> Vec<String> {
        std::mem::take(&mut self.removed)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still resume from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    fn record(
        &mut self,
        storage_key: &str,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(WatchEvent {
            rv: self.rv,
            storage_key: storage_key.to_string(),
            namespace: meta_str(&object, "namespace").to_string(),
            event_type,
            object,
            previous,
            encoded: std::sync::OnceLock::new(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        self.pending.push(event);
    }

    /// The changes recorded since the last call, for fan-out to live watches.
    pub fn take_pending(&mut self) -> Vec<Arc<WatchEvent>> {
        std::mem::take(&mut self.pending)
    }

    /// Every retained change after `rv`, or 410 Gone when some were already dropped.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<WatchEvent>>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::Gone(format!(
                "too old resource version: {rv} ({})",
                self.compacted + 1
            )));
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.iter().skip(start).cloned().collect())
    }

    /// Drops the whole watch history, as an etcd compaction would: watches from any earlier
    /// resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// The object, or 404.
    pub fn get(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.tables
            .get(&res.storage_key())
            .and_then(|t| t.get(&(namespace.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group_resource(), name))
    }

    /// Objects of `storage_key` in `namespace` (all namespaces if `None`) that `filter` keeps,
    /// starting after `after`, at most `limit`.
    pub fn list(
        &self,
        storage_key: &str,
        namespace: Option<&str>,
        filter: impl Fn(&Value) -> bool,
        after: Option<&ObjectKey>,
        limit: Option<usize>,
    ) -> ListPage {
        use std::ops::Bound;
        let mut page = ListPage {
            items: Vec::new(),
            next: None,
        };
        let Some(table) = self.tables.get(storage_key) else {
            return page;
        };
        let lower = match (after, namespace) {
            (Some(key), _) => Bound::Excluded(key.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        for (key, object) in table.range((lower, Bound::Unbounded)) {
            if let Some(ns) = namespace
                && key.0 != ns
            {
                break;
            }
            if !filter(object) {
                continue;
            }
            if limit.is_some_and(|l| page.items.len() >= l) {
                page.next = page.items.last().map(|o| {
                    (
                        meta_str(o, "namespace").to_string(),
                        meta_str(o, "name").to_string(),
                    )
                });
                break;
            }
            page.items.push(object.clone());
        }
        page
    }

    /// Every stored object with its storage key, for garbage collection.
    pub fn all_objects(&self) -> impl Iterator<Item = (&str, &Arc<Value>)> {
        self.tables
            .iter()
            .flat_map(|(k, t)| t.values().map(move |o| (k.as_str(), o)))
    }

    /// Stores a new object: stamps uid, creationTimestamp, resourceVersion and generation.
    ///
    /// The caller has set metadata.name (and namespace for namespaced kinds).
    pub fn create(
        &mut self,
        res: &ResourceInfo,
        object: Value,
        uid: &str,
        now: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.create_with_status(res, object, None, uid, now)
    }

    /// [`Store::create`], with the status the API server itself gives a new object (a pod's
    /// `Pending`), stored in the same write.
    pub fn create_with_status(
        &mut self,
        res: &ResourceInfo,
        mut object: Value,
        status: Option<Value>,
        uid: &str,
        now: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let namespace = meta_str(&object, "namespace").to_string();
        let name = meta_str(&object, "name").to_string();
        let key = (namespace, name.clone());
        let storage_key = res.storage_key();
        if self
            .tables
            .get(&storage_key)
            .is_some_and(|t| t.contains_key(&key))
        {
            return Err(ApiError::already_exists(&res.group_resource(), &name));
        }
        if res.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            // kube-apiserver drops status on create when /status is a subresource.
            map.remove("status");
        }
        if let (Some(status), Some(map)) = (status, object.as_object_mut()) {
            map.insert("status".into(), status);
        }
        self.rv += 1;
        let rv = self.rv;
        let metadata = meta_mut(&mut object);
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(now));
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        if res.generation {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
        let object = Arc::new(object);
        self.put(&storage_key, key, object.clone());
        self.record(&storage_key, EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// Replaces an object (or its status), checking resourceVersion and keeping what the
    /// client may not change. A no-op update returns the stored object without a new version.
    pub fn update(
        &mut self,
        res: &ResourceInfo,
        object: Value,
        target: UpdateTarget,
    ) -> Result<Arc<Value>, ApiError> {
        self.update_by(res, object, target, None)
    }

    /// [`Store::update`] by `writer`, who then owns the fields it changed (managedFields).
    pub fn update_by(
        &mut self,
        res: &ResourceInfo,
        object: Value,
        target: UpdateTarget,
        writer: Option<&Writer<'_>>,
    ) -> Result<Arc<Value>, ApiError> {
        let namespace = meta_str(&object, "namespace").to_string();
        let name = meta_str(&object, "name").to_string();
        let old = self.get(res, &namespace, &name)?;
        let sent_rv = meta_str(&object, "resourceVersion");
        if !sent_rv.is_empty() && sent_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&res.group_resource(), &name));
        }
        let sent_uid = meta_str(&object, "uid");
        if !sent_uid.is_empty() && sent_uid != meta_str(&old, "uid") {
            return Err(ApiError::Conflict {
                kind: res.group_resource(),
                name: name.clone(),
                message: format!(
                    "Precondition failed: UID in precondition: {sent_uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            });
        }
        let mut merged = match target {
            UpdateTarget::Main => {
                let mut merged = object;
                if res.status_subresource
                    && let Some(map) = merged.as_object_mut()
                {
                    match old.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                merged
            }
            UpdateTarget::Status => {
                let mut merged = (*old).clone();
                if let Some(map) = merged.as_object_mut() {
                    match object.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                // Server-side apply to /status records its field ownership too.
                if let Some(managed) = object.pointer("/metadata/managedFields") {
                    meta_mut(&mut merged).insert("managedFields".into(), managed.clone());
                }
                merged
            }
        };
        {
            let old_meta = meta(&old).cloned().unwrap_or_default();
            let metadata = meta_mut(&mut merged);
            for key in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(key) {
                    Some(v) => metadata.insert(key.into(), v.clone()),
                    None => metadata.remove(key),
                };
            }
            // An update that omits managedFields keeps them, as kube-apiserver does.
            if !metadata.contains_key("managedFields")
                && let Some(managed) = old_meta.get("managedFields")
            {
                metadata.insert("managedFields".into(), managed.clone());
            }
            if old_meta.contains_key("deletionTimestamp") {
                // Finalizers may only be removed once deletion has started.
                let old_finalizers = old_meta
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Array(new)) = metadata.get_mut("finalizers") {
                    new.retain(|f| old_finalizers.contains(f));
                }
            }
        }
        if let Some(writer) = writer {
            managed::record_update(&old, &mut merged, writer);
        }
        if res.generation && spec_changed(&old, &merged) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut merged).insert("generation".into(), json!(generation));
        }
        if merged == *old {
            return Ok(old);
        }
        self.rv += 1;
        meta_mut(&mut merged).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let storage_key = res.storage_key();
        let key = (namespace, name);
        let merged = Arc::new(merged);
        if meta(&merged).is_some_and(|m| m.contains_key("deletionTimestamp"))
            && !has_finalizers(&merged)
        {
            self.take(&storage_key, &key);
            self.record(&storage_key, EventType::Deleted, merged.clone(), Some(old));
            return Ok(merged);
        }
        self.put(&storage_key, key, merged.clone());
        self.record(&storage_key, EventType::Modified, merged.clone(), Some(old));
        Ok(merged)
    }

    /// Deletes an object, or marks it with `deletionTimestamp` while it has finalizers.
    pub fn delete(
        &mut self,
        storage_key: &str,
        group_resource: &str,
        namespace: &str,
        name: &str,
        preconditions: &DeleteOptions,
        now: &str,
    ) -> Result<DeleteOutcome, ApiError> {
        let keep = |_: &mut Value| {};
        self.delete_preparing(
            storage_key,
            group_resource,
            namespace,
            name,
            preconditions,
            now,
            &keep,
        )
    }

    /// [`Store::delete`], with `prepare` applied in the same write to an object not yet marked
    /// (the API server's own finalizer and condition on a CRD it starts to delete).
    #[allow(clippy::too_many_arguments)] // one delete, unpacked once
    pub fn delete_preparing(
        &mut self,
        storage_key: &str,
        group_resource: &str,
        namespace: &str,
        name: &str,
        preconditions: &DeleteOptions,
        now: &str,
        prepare: &dyn Fn(&mut Value),
    ) -> Result<DeleteOutcome, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let old = self
            .tables
            .get(storage_key)
            .and_then(|t| t.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(group_resource, name))?;
        if let Some(uid) = &preconditions.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::Conflict {
                kind: group_resource.to_string(),
                name: name.to_string(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            });
        }
        if let Some(rv) = &preconditions.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(group_resource, name));
        }
        let marked_at = meta(&old).and_then(|m| m.get("deletionTimestamp")).cloned();
        let mut base = (*old).clone();
        if marked_at.is_none() {
            prepare(&mut base);
        }
        let marked_grace = old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        let (grace, deadline) = match &preconditions.graceful {
            Some(g) if g.seconds > 0 => (g.seconds, json!(g.deadline)),
            _ => (0, json!(now)),
        };
        // A graceful delete, or any delete of an object with finalizers, only marks it; a later
        // delete may shorten the grace period, and one without grace removes it.
        if grace > 0 || has_finalizers(&base) {
            if marked_grace.is_some_and(|g| g <= grace) {
                return Ok(DeleteOutcome::Finalizing(old));
            }
            let first_mark = marked_at.is_none();
            let deletion_timestamp = match marked_at {
                Some(at) if grace == 0 => at,
                _ => deadline,
            };
            let mut marked = base;
            self.rv += 1;
            let metadata = meta_mut(&mut marked);
            // The first mark changes what controllers of the object should do: like
            // kube-apiserver, it bumps the generation of kinds that keep one.
            if first_mark
                && let Some(generation) = metadata.get("generation").and_then(Value::as_i64)
                && generation > 0
            {
                metadata.insert("generation".into(), json!(generation + 1));
            }
            metadata.insert("deletionTimestamp".into(), deletion_timestamp);
            metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
            metadata.insert("resourceVersion".into(), json!(self.rv.to_string()));
            let marked = Arc::new(marked);
            self.put(storage_key, key, marked.clone());
            self.record(storage_key, EventType::Modified, marked.clone(), Some(old));
            return Ok(DeleteOutcome::Finalizing(marked));
        }
        self.take(storage_key, &key);
        self.rv += 1;
        let mut last = (*old).clone();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let last = Arc::new(last);
        self.record(storage_key, EventType::Deleted, last.clone(), Some(old));
        Ok(DeleteOutcome::Deleted(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;

    fn resource(plural: &str) -> ResourceInfo {
        builtin_resources()
            .into_iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    fn task_like() -> ResourceInfo {
        let mut res = resource("configmaps");
        res.group = "maos.dev".into();
        res.plural = "tasks".into();
        res.status_subresource = true;
        res.generation = true;
        res
    }

    fn object(name: &str, extra: Value) -> Value {
        let mut o = json!({"metadata": {"name": name, "namespace": "default"}});
        if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        o
    }

    fn rv_of(o: &Value) -> u64 {
        meta_str(o, "resourceVersion").parse().unwrap()
    }

    #[test]
    fn create_stamps_uid_time_version_and_generation() {
        let mut store = Store::new(100);
        let created = store
            .create(
                &task_like(),
                object("a", json!({"spec": {"x": 1}})),
                "u1",
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        assert_eq!(created["metadata"]["uid"], "u1");
        assert_eq!(
            created["metadata"]["creationTimestamp"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(created["metadata"]["generation"], 1);
        assert_eq!(rv_of(&created), store.resource_version());
    }

    #[test]
    fn creating_an_existing_name_is_already_exists() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        store
            .create(&cm, object("a", json!({})), "u1", "t")
            .unwrap();
        let err = store
            .create(&cm, object("a", json!({})), "u2", "t")
            .unwrap_err();
        assert_eq!(err.reason(), "AlreadyExists");
    }

    #[test]
    fn one_counter_orders_writes_across_resources() {
        let mut store = Store::new(100);
        let a = store
            .create(&resource("configmaps"), object("a", json!({})), "u1", "t")
            .unwrap();
        let b = store
            .create(&resource("secrets"), object("a", json!({})), "u2", "t")
            .unwrap();
        assert!(rv_of(&b) > rv_of(&a));
    }

    #[test]
    fn update_with_a_stale_resource_version_is_a_conflict() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        let created = store
            .create(&cm, object("a", json!({"data": {"k": "1"}})), "u1", "t")
            .unwrap();
        let mut first = (*created).clone();
        first["data"]["k"] = json!("2");
        store.update(&cm, first, UpdateTarget::Main).unwrap();
        let mut stale = (*created).clone();
        stale["data"]["k"] = json!("3");
        let err = store.update(&cm, stale, UpdateTarget::Main).unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(err.reason(), "Conflict");
    }

    #[test]
    fn generation_bumps_on_spec_changes_only() {
        let mut store = Store::new(100);
        let res = task_like();
        let created = store
            .create(&res, object("a", json!({"spec": {"x": 1}})), "u1", "t")
            .unwrap();
        let mut labelled = (*created).clone();
        labelled["metadata"]["labels"] = json!({"l": "v"});
        let labelled = store.update(&res, labelled, UpdateTarget::Main).unwrap();
        assert_eq!(labelled["metadata"]["generation"], 1);
        let mut with_status = (*labelled).clone();
        with_status["status"] = json!({"phase": "Running"});
        let with_status = store
            .update(&res, with_status, UpdateTarget::Status)
            .unwrap();
        assert_eq!(with_status["metadata"]["generation"], 1);
        let mut respec = (*with_status).clone();
        respec["spec"]["x"] = json!(2);
        let respec = store.update(&res, respec, UpdateTarget::Main).unwrap();
        assert_eq!(respec["metadata"]["generation"], 2);
    }

    #[test]
    fn main_endpoint_ignores_status_and_status_endpoint_ignores_the_rest() {
        let mut store = Store::new(100);
        let res = task_like();
        let created = store
            .create(
                &res,
                object(
                    "a",
                    json!({"spec": {"x": 1}, "status": {"phase": "Sneaky"}}),
                ),
                "u1",
                "t",
            )
            .unwrap();
        assert!(
            created.get("status").is_none(),
            "status is dropped on create"
        );
        let mut both = (*created).clone();
        both["spec"]["x"] = json!(2);
        both["status"] = json!({"phase": "Ignored"});
        let after_main = store
            .update(&res, both.clone(), UpdateTarget::Main)
            .unwrap();
        assert!(after_main.get("status").is_none());
        assert_eq!(after_main["spec"]["x"], 2);
        let mut status_write = (*after_main).clone();
        status_write["spec"]["x"] = json!(3);
        status_write["status"] = json!({"phase": "Running"});
        let after_status = store
            .update(&res, status_write, UpdateTarget::Status)
            .unwrap();
        assert_eq!(after_status["spec"]["x"], 2);
        assert_eq!(after_status["status"]["phase"], "Running");
    }

    #[test]
    fn no_op_update_keeps_the_resource_version() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        let created = store
            .create(&cm, object("a", json!({"data": {"k": "1"}})), "u1", "t")
            .unwrap();
        let same = store
            .update(&cm, (*created).clone(), UpdateTarget::Main)
            .unwrap();
        assert_eq!(rv_of(&same), rv_of(&created));
    }

    #[test]
    fn finalizer_blocks_deletion_until_it_is_removed() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        store.create(&cm, object("a", json!({"metadata": {"name": "a", "namespace": "default", "finalizers": ["x/y"]}})), "u1", "t0").unwrap();
        let outcome = store
            .delete(
                &cm.storage_key(),
                "configmaps",
                "default",
                "a",
                &DeleteOptions::default(),
                "t1",
            )
            .unwrap();
        let DeleteOutcome::Finalizing(marked) = outcome else {
            panic!("expected finalizing")
        };
        assert_eq!(marked["metadata"]["deletionTimestamp"], "t1");
        assert!(store.get(&cm, "default", "a").is_ok());
        let mut released = (*marked).clone();
        released["metadata"]["finalizers"] = json!([]);
        store.update(&cm, released, UpdateTarget::Main).unwrap();
        assert_eq!(store.get(&cm, "default", "a").unwrap_err().code(), 404);
        let last = store.events_since(0).unwrap().pop().unwrap();
        assert_eq!(last.event_type, EventType::Deleted);
    }

    #[test]
    fn graceful_delete_marks_until_a_delete_without_grace() {
        let mut store = Store::new(100);
        let pods = resource("pods");
        store
            .create(&pods, object("p", json!({})), "u1", "t0")
            .unwrap();
        let graceful = DeleteOptions {
            graceful: Some(Graceful {
                seconds: 30,
                deadline: "t30".into(),
            }),
            ..Default::default()
        };
        let marked = store
            .delete(&pods.storage_key(), "pods", "default", "p", &graceful, "t0")
            .unwrap();
        let DeleteOutcome::Finalizing(marked) = marked else {
            panic!("expected a marked pod")
        };
        assert_eq!(marked["metadata"]["deletionTimestamp"], "t30");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        let again = store
            .delete(&pods.storage_key(), "pods", "default", "p", &graceful, "t1")
            .unwrap();
        assert_eq!(
            rv_of(again.object()),
            rv_of(&marked),
            "repeating the delete changes nothing"
        );
        let gone = store
            .delete(
                &pods.storage_key(),
                "pods",
                "default",
                "p",
                &DeleteOptions::default(),
                "t2",
            )
            .unwrap();
        assert!(matches!(gone, DeleteOutcome::Deleted(_)));
        assert_eq!(store.get(&pods, "default", "p").unwrap_err().code(), 404);
    }

    #[test]
    fn finalizers_cannot_be_added_once_deletion_started() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        store.create(&cm, object("a", json!({"metadata": {"name": "a", "namespace": "default", "finalizers": ["x/y"]}})), "u1", "t0").unwrap();
        let marked = store
            .delete(
                &cm.storage_key(),
                "configmaps",
                "default",
                "a",
                &DeleteOptions::default(),
                "t1",
            )
            .unwrap();
        let mut sneaky = (**marked.object()).clone();
        sneaky["metadata"]["finalizers"] = json!(["x/y", "new/one"]);
        let updated = store.update(&cm, sneaky, UpdateTarget::Main).unwrap();
        assert_eq!(updated["metadata"]["finalizers"], json!(["x/y"]));
    }

    #[test]
    fn watch_history_replays_changes_after_a_version() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        let a = store
            .create(&cm, object("a", json!({})), "u1", "t")
            .unwrap();
        store
            .create(&cm, object("b", json!({})), "u2", "t")
            .unwrap();
        let events = store.events_since(rv_of(&a)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].object["metadata"]["name"], "b");
        assert_eq!(store.take_pending().len(), 2);
    }

    #[test]
    fn versions_older_than_the_retained_history_are_gone() {
        let mut store = Store::new(2);
        let cm = resource("configmaps");
        let first = store
            .create(&cm, object("a", json!({})), "u1", "t")
            .unwrap();
        for name in ["b", "c", "d"] {
            store
                .create(&cm, object(name, json!({})), name, "t")
                .unwrap();
        }
        assert_eq!(store.events_since(rv_of(&first)).unwrap_err().code(), 410);
        assert_eq!(
            store
                .events_since(store.resource_version() - 2)
                .unwrap()
                .len(),
            2
        );
        store.compact();
        assert_eq!(
            store
                .events_since(store.resource_version() - 1)
                .unwrap_err()
                .code(),
            410
        );
        assert!(
            store
                .events_since(store.resource_version())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn list_pages_continue_after_the_last_key_within_a_namespace() {
        let mut store = Store::new(100);
        let cm = resource("configmaps");
        for name in ["a", "b", "c"] {
            store
                .create(&cm, object(name, json!({})), name, "t")
                .unwrap();
        }
        let mut other = object("z", json!({}));
        other["metadata"]["namespace"] = json!("other");
        store.create(&cm, other, "z", "t").unwrap();
        let first = store.list(&cm.storage_key(), Some("default"), |_| true, None, Some(2));
        assert_eq!(first.items.len(), 2);
        let next = first.next.clone().unwrap();
        let second = store.list(
            &cm.storage_key(),
            Some("default"),
            |_| true,
            Some(&next),
            Some(2),
        );
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0]["metadata"]["name"], "c");
        assert!(second.next.is_none());
        assert_eq!(
            store
                .list(&cm.storage_key(), None, |_| true, None, None)
                .items
                .len(),
            4
        );
    }
}
