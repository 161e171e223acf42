//! Field ownership (`metadata.managedFields`) as structured-merge-diff keeps it: every write
//! names a field manager; an update takes ownership of the fields it changes, away from
//! everyone else; an apply owns exactly what it applied and conflicts (409) when it would change
//! a field another manager owns, unless forced, which moves the ownership to the applier.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::apply::field_set;
use super::status::ApiError;

/// A field's path as FieldsV1 spells its steps: `f:name`, `k:{"type":"Ready"}`, `v:"x"`.
pub type Path = Vec<String>;

/// A set of owned fields: leaves, and list elements (FieldsV1's `.`) owned as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    /// The set a FieldsV1 value describes.
    pub fn from_fields_v1(fields: &Value) -> Self {
        let mut set = BTreeSet::new();
        collect(fields, &mut Vec::new(), &mut set);
        FieldSet(set)
    }

    /// Every field an object (or applied configuration) sets, as an apply would claim them.
    pub fn of_object(object: &Value) -> Self {
        Self::from_fields_v1(&field_set(object))
    }

    /// The FieldsV1 form.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for step in path {
                let child = node.entry(step.clone()).or_insert_with(|| json!({}));
                let Value::Object(child) = child else {
                    break;
                };
                node = child;
            }
        }
        // An owned node that also has owned children says so with `.`.
        mark_members(&mut root, &self.0, &mut Vec::new());
        Value::Object(root)
    }

    /// Whether nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The paths in both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The paths in `self` but not `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// The paths in either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// The paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }
}

fn collect(fields: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    if (map.is_empty() || map.contains_key(".")) && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (key, child) in map {
        if key == "." {
            continue;
        }
        prefix.push(key.clone());
        collect(child, prefix, out);
        prefix.pop();
    }
}

fn mark_members(node: &mut Map<String, Value>, set: &BTreeSet<Path>, prefix: &mut Path) {
    for (key, child) in node.iter_mut() {
        if key == "." {
            continue;
        }
        prefix.push(key.clone());
        if let Value::Object(child) = child {
            if !child.is_empty() && set.contains(prefix.as_slice()) {
                child.insert(".".into(), json!({}));
            }
            mark_members(child, set, prefix);
        }
        prefix.pop();
    }
}

/// The value an object holds at `path`, if any.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for step in path {
        current = if let Some(field) = step.strip_prefix("f:") {
            current.get(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(key).ok()?;
            current
                .as_array()?
                .iter()
                .find(|item| id.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(value) = step.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).ok()?;
            current.as_array()?.iter().find(|item| **item == value)?
        } else {
            return None;
        };
    }
    Some(current)
}

/// How two versions of an object differ, field by field.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Fields only the new version sets.
    pub added: FieldSet,
    /// Fields both set, to different values.
    pub modified: FieldSet,
    /// Fields only the old version sets.
    pub removed: FieldSet,
}

impl Comparison {
    /// The fields the new version sets differently from the old (added or modified).
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

/// The maps an object holds below its top level (FieldsV1 nodes with children), which an
/// update that adds one owns as a whole (`.`), as kube-apiserver records it.
fn maps_of(object: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = node.as_object() else {
            return;
        };
        if prefix.len() > 1 && !map.is_empty() {
            out.insert(prefix.clone());
        }
        for (key, child) in map {
            prefix.push(key.clone());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    let fields = field_set(object);
    if let Some(map) = fields.as_object() {
        for (key, child) in map {
            let mut prefix = vec![key.clone()];
            // A top-level map (`data`, `spec`) is itself a field; `metadata` never is.
            if key != "f:metadata" && child.as_object().is_some_and(|m| !m.is_empty()) {
                out.insert(prefix.clone());
            }
            walk(child, &mut prefix, &mut out);
        }
    }
    FieldSet(out)
}

/// Compares `old` and `new` field by field (metadata beyond labels, annotations, finalizers
/// and owner references is the server's and never owned).
pub fn compare(old: &Value, new: &Value) -> Comparison {
    let before = FieldSet::of_object(old).union(&maps_of(old));
    let after = FieldSet::of_object(new).union(&maps_of(new));
    let modified = before
        .intersection(&after)
        .0
        .into_iter()
        .filter(|path| match (value_at(old, path), value_at(new, path)) {
            // A list element owned as a whole changes only through its fields.
            (Some(Value::Object(_)), Some(Value::Object(_))) => false,
            (a, b) => a != b,
        })
        .collect();
    Comparison {
        added: after.difference(&before),
        modified: FieldSet(modified),
        removed: before.difference(&after),
    }
}

/// A writer of an object: its name, and what it wrote with.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `Apply` or `Update`.
    pub operation: &'a str,
    /// `""` or `"status"`.
    pub subresource: &'a str,
    /// The apiVersion of the request.
    pub api_version: &'a str,
    /// When (RFC 3339).
    pub time: &'a str,
}

impl Writer<'_> {
    /// Whether the `managedFields` entry `entry` is this writer's: same manager, operation and
    /// subresource (kube-apiserver keeps one entry per such triple).
    pub fn wrote(&self, entry: &Value) -> bool {
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
        field("manager") == self.manager
            && field("operation") == self.operation
            && field("subresource") == self.subresource
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    raw: Value,
    fields: FieldSet,
}

impl Entry {
    fn decode(raw: &Value) -> Self {
        Entry {
            fields: FieldSet::from_fields_v1(raw.get("fieldsV1").unwrap_or(&Value::Null)),
            raw: raw.clone(),
        }
    }

    fn str(&self, key: &str) -> &str {
        self.raw.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn is(&self, writer: &Writer<'_>) -> bool {
        writer.wrote(&self.raw)
    }

    fn encode(mut self) -> Value {
        self.raw["fieldsType"] = json!("FieldsV1");
        self.raw["fieldsV1"] = self.fields.to_fields_v1();
        self.raw
    }

    /// How kube-apiserver names this manager in a conflict.
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.str("manager"));
        if !self.str("subresource").is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.str("subresource")));
        }
        if self.str("operation") == "Update" {
            out.push_str(&format!(" using {}", self.str("apiVersion")));
            if !self.str("time").is_empty() {
                out.push_str(&format!(" at {}", self.str("time")));
            }
        }
        out
    }
}

fn entries_of(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().map(Entry::decode).collect())
        .unwrap_or_default()
}

fn new_entry(writer: &Writer<'_>, fields: FieldSet) -> Entry {
    let mut raw = json!({
        "manager": writer.manager,
        "operation": writer.operation,
        "apiVersion": writer.api_version,
        "time": writer.time,
    });
    if !writer.subresource.is_empty() {
        raw["subresource"] = json!(writer.subresource);
    }
    Entry { raw, fields }
}

fn store_entries(object: &mut Value, entries: Vec<Entry>) {
    let entries: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::encode)
        .collect();
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object["metadata"].as_object_mut() {
        Some(metadata) if entries.is_empty() => {
            metadata.remove("managedFields");
        }
        Some(metadata) => {
            metadata.insert("managedFields".into(), Value::Array(entries));
        }
        None => {}
    }
}

/// Records a create or update by `writer` in `new`'s managedFields (which hold the entries
/// before this write): it takes ownership of every field it changed, away from all other
/// managers, and fields it removed are nobody's. A write that changes nothing changes none.
pub fn record_update(old: &Value, new: &mut Value, writer: &Writer<'_>) {
    let comparison = compare(old, new);
    let changed = comparison.changed();
    if changed.is_empty() && comparison.removed.is_empty() {
        return;
    }
    let mut entries = entries_of(new);
    for entry in entries.iter_mut().filter(|e| !e.is(writer)) {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let mine = entries.iter().position(|e| e.is(writer));
    let previous = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let fields = previous.union(&changed).difference(&comparison.removed);
    let entry = new_entry(writer, fields);
    match mine {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    store_entries(new, entries);
}

/// Sets the managedFields of `merged`, the result of `writer` applying `applied` to `live`:
/// the applier owns what it applied; a field it changed that another manager owns is a
/// conflict, refused unless `force` (which takes the field from that manager).
pub fn record_apply(
    live: &Value,
    merged: &mut Value,
    applied: &FieldSet,
    writer: &Writer<'_>,
    force: bool,
) -> Result<(), ApiError> {
    let comparison = compare(live, merged);
    let changed = comparison.changed();
    let mut entries = entries_of(live);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    let mut describe: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries.iter_mut().filter(|e| !e.is(writer)) {
        let clash = entry.fields.intersection(&changed);
        if clash.is_empty() {
            continue;
        }
        let who = entry.describe();
        for path in clash.paths() {
            conflicts.push((who.clone(), path.clone()));
        }
        describe.insert(who.clone(), who);
        entry.fields = entry.fields.difference(&clash);
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&comparison.removed);
    }
    let entry = new_entry(writer, applied.clone());
    match entries.iter().position(|e| e.is(writer)) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    store_entries(merged, entries);
    Ok(())
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="app"].image`.
pub fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(field) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = step.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = id.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = step.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else {
            out.push_str(&format!("[{step}]"));
        }
    }
    out
}

/// kube-apiserver's 409 for an apply that conflicts (its message and `details.causes`).
fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let causes: Vec<(String, String)> = conflicts
        .iter()
        .map(|(who, path)| (path_string(path), format!("conflict with {who}")))
        .collect();
    let message = if let [(who, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {who}: {}",
            path_string(path)
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (who, path) in conflicts {
            by_manager.entry(who).or_default().push(path_string(path));
        }
        let mut lines = Vec::new();
        for (who, paths) in by_manager {
            lines.push(format!("conflicts with {who}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::ApplyConflict { message, causes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(manager: &'a str, operation: &'a str) -> Writer<'a> {
        Writer {
            manager,
            operation,
            subresource: "",
            api_version: "v1",
            time: "2026-12-03T09:00:00Z",
        }
    }

    fn owners(object: &Value) -> Vec<(String, Value)> {
        object["metadata"]["managedFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap_or("").to_string(),
                            e["fieldsV1"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn fields_v1_round_trips_with_member_markers() {
        let fields = json!({
            "f:data": {"f:a": {}},
            "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}},
            "f:metadata": {"f:finalizers": {"v:\"x\"": {}}}
        });
        assert_eq!(FieldSet::from_fields_v1(&fields).to_fields_v1(), fields);
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_from_other_managers() {
        let old = json!({"data": {"a": "1", "b": "2"}});
        let mut created = old.clone();
        record_update(
            &json!({}),
            &mut created,
            &writer("kubectl-create", "Update"),
        );
        assert_eq!(
            owners(&created),
            vec![(
                "kubectl-create".into(),
                json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})
            )]
        );
        let mut edited = created.clone();
        edited["data"]["a"] = json!("changed");
        record_update(&created, &mut edited, &writer("kubectl-edit", "Update"));
        assert_eq!(
            owners(&edited),
            vec![
                (
                    "kubectl-create".into(),
                    json!({"f:data": {".": {}, "f:b": {}}})
                ),
                ("kubectl-edit".into(), json!({"f:data": {"f:a": {}}})),
            ]
        );
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let old = json!({"data": {"a": "1"}});
        let mut same = old.clone();
        record_update(&old, &mut same, &writer("x", "Update"));
        assert!(same.pointer("/metadata/managedFields").is_none());
    }

    #[test]
    fn an_apply_conflicts_on_a_field_another_manager_owns_and_force_takes_it() {
        let mut live = json!({"spec": {"replicas": 1, "image": "a"}});
        record_update(&json!({}), &mut live, &writer("kubectl-create", "Update"));
        let applied = json!({"spec": {"replicas": 3}});
        let mut merged = live.clone();
        merged["spec"]["replicas"] = json!(3);
        let set = FieldSet::of_object(&applied);
        let refused = record_apply(
            &live,
            &mut merged.clone(),
            &set,
            &writer("me", "Apply"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1 at 2026-12-03T09:00:00Z: .spec.replicas"
        );
        assert_eq!(refused.code(), 409);
        let status = refused.to_status();
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");

        record_apply(&live, &mut merged, &set, &writer("me", "Apply"), true).unwrap();
        assert_eq!(
            owners(&merged),
            vec![
                (
                    "kubectl-create".into(),
                    json!({"f:spec": {".": {}, "f:image": {}}})
                ),
                ("me".into(), json!({"f:spec": {"f:replicas": {}}})),
            ]
        );
    }

    #[test]
    fn applying_the_value_another_manager_set_shares_the_field() {
        let mut live = json!({"spec": {"replicas": 1}});
        record_update(&json!({}), &mut live, &writer("kubectl-create", "Update"));
        let mut merged = live.clone();
        let set = FieldSet::of_object(&json!({"spec": {"replicas": 1}}));
        record_apply(&live, &mut merged, &set, &writer("me", "Apply"), false).unwrap();
        assert_eq!(owners(&merged).len(), 2);
    }

    #[test]
    fn conflicts_with_several_managers_are_listed_by_manager() {
        let error = conflict_error(&[
            ("\"b\"".into(), vec!["f:x".into()]),
            (
                "\"a\"".into(),
                vec!["f:y".into(), "k:{\"name\":\"c\"}".into()],
            ),
        ]);
        assert_eq!(
            error.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .y[name=\"c\"]\nconflicts with \"b\":\n- .x"
        );
    }
}
