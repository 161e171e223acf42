//! Server-side apply, simplified: the applied configuration is merged into the live object,
//! the manager owns what it applied (`metadata.managedFields`, FieldsV1), fields it applied
//! before and no longer applies are removed unless another manager still owns them, and an
//! apply that would change another manager's field is a conflict (managed.rs).

use serde_json::{Map, Value, json};

use super::managed::{self, FieldSet, Writer};
use super::patch::{is_primitive_merge_list, merge_key, strategic_merge};
use super::status::ApiError;

/// The field set (FieldsV1) a value claims under a field named `field`.
fn set_of(value: &Value, field: &str) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() => Value::Object(
            map.iter()
                .map(|(k, v)| (format!("f:{k}"), set_of(v, k)))
                .collect(),
        ),
        Value::Array(items) if is_primitive_merge_list(field) => Value::Object(
            items
                .iter()
                .map(|item| (format!("v:{item}"), json!({})))
                .collect(),
        ),
        Value::Array(items) => match merge_key(field, items) {
            Some(key) => {
                let mut out = Map::new();
                for item in items {
                    if let Some(id) = item.get(key) {
                        let mut element = match set_of(item, "") {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        element.insert(".".into(), json!({}));
                        out.insert(format!("k:{}", json!({ key: id })), Value::Object(element));
                    }
                }
                Value::Object(out)
            }
            None => json!({}),
        },
        _ => json!({}),
    }
}

/// The fields an applied configuration claims: everything but identity and server-set metadata.
pub fn field_set(applied: &Value) -> Value {
    let mut out = Map::new();
    let Some(map) = applied.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let mut metadata = Map::new();
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(v) = value.get(field) {
                        metadata.insert(format!("f:{field}"), set_of(v, field));
                    }
                }
                if !metadata.is_empty() {
                    out.insert("f:metadata".into(), Value::Object(metadata));
                }
            }
            _ => {
                out.insert(format!("f:{key}"), set_of(value, key));
            }
        }
    }
    Value::Object(out)
}

/// Removes from `target` what `old` claimed and `new` no longer does, unless `others` claim it.
fn remove_dropped(target: &mut Value, old: &Value, new: &Value, others: &[&Value]) {
    let Some(old_map) = old.as_object() else {
        return;
    };
    for (key, old_child) in old_map {
        if key == "." {
            continue;
        }
        let others_child: Vec<&Value> = others.iter().filter_map(|o| o.get(key)).collect();
        match new.get(key) {
            None if others_child.is_empty() => remove_member(target, key),
            None => {
                if let Some(sub) = member_mut(target, key) {
                    remove_dropped(sub, old_child, &json!({}), &others_child);
                }
            }
            Some(new_child) => {
                if let Some(sub) = member_mut(target, key) {
                    remove_dropped(sub, old_child, new_child, &others_child);
                }
            }
        }
    }
}

/// The list element a `k:{...}` key names, as an index.
fn keyed_index(items: &[Value], key: &str) -> Option<usize> {
    let id: Map<String, Value> = serde_json::from_str(key).ok()?;
    items
        .iter()
        .position(|item| id.iter().all(|(k, v)| item.get(k) == Some(v)))
}

fn member_mut<'a>(target: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    if let Some(field) = key.strip_prefix("f:") {
        return target.get_mut(field);
    }
    let id = key.strip_prefix("k:")?;
    let items = target.as_array_mut()?;
    let index = keyed_index(items, id)?;
    items.get_mut(index)
}

fn remove_member(target: &mut Value, key: &str) {
    if let Some(field) = key.strip_prefix("f:") {
        if let Some(map) = target.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(value) = key.strip_prefix("v:")
        && let Ok(value) = serde_json::from_str::<Value>(value)
        && let Some(items) = target.as_array_mut()
    {
        items.retain(|item| *item != value);
    } else if let Some(id) = key.strip_prefix("k:")
        && let Some(items) = target.as_array_mut()
        && let Some(index) = keyed_index(items, id)
    {
        items.remove(index);
    }
}

/// What of an applied configuration a write to `subresource` may set: a main-resource apply
/// never sets a status kept by the status subresource, and a status apply sets only status.
pub fn scope(applied: &Value, subresource: &str, status_subresource: bool) -> Value {
    let mut applied = applied.clone();
    let Some(map) = applied.as_object_mut() else {
        return applied;
    };
    if subresource == "status" {
        map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            metadata.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
        }
    } else if status_subresource {
        map.remove("status");
    }
    applied
}

/// Applies `applied` to `live` for `writer`; returns the new object with its managedFields,
/// or the conflicts with other managers when not `force`d.
pub fn apply(
    live: &Value,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let mut applied = applied.clone();
    if let Some(Value::Object(metadata)) = applied.get_mut("metadata") {
        // managedFields are the server's record, never the client's to set.
        metadata.remove("managedFields");
    }
    let entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let applier = Writer {
        operation: "Apply",
        ..*writer
    };
    let is_mine = |e: &Value| applier.wrote(e);
    let old_set = entries
        .iter()
        .find(|e| is_mine(e))
        .and_then(|e| e.get("fieldsV1").cloned())
        .unwrap_or_else(|| json!({}));
    let new_set = field_set(&applied);
    let others: Vec<&Value> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .filter_map(|e| e.get("fieldsV1"))
        .collect();
    let mut out = live.clone();
    strategic_merge(&mut out, &applied);
    remove_dropped(&mut out, &old_set, &new_set, &others);
    managed::record_apply(
        live,
        &mut out,
        &FieldSet::from_fields_v1(&new_set),
        &applier,
        force,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(name: &str) -> Writer<'_> {
        Writer {
            manager: name,
            operation: "Apply",
            subresource: "",
            api_version: "v1",
            time: "t",
        }
    }

    fn apply(live: &Value, applied: &Value, writer: &Writer<'_>) -> Value {
        super::apply(live, applied, writer, false).unwrap()
    }

    #[test]
    fn the_field_set_claims_applied_fields_and_keyed_list_elements() {
        let set = field_set(&json!({
            "apiVersion": "v1", "kind": "X",
            "metadata": {"name": "x", "labels": {"a": "1"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        assert_eq!(
            set,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}},
                "f:status": {"f:phase": {}, "f:conditions": {
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}
                }}
            })
        );
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed() {
        let first = apply(
            &json!({}),
            &json!({"spec": {"a": 1, "b": 2}}),
            &manager("m"),
        );
        let second = apply(&first, &json!({"spec": {"a": 1}}), &manager("m"));
        assert_eq!(second["spec"], json!({"a": 1}));
        assert_eq!(
            second["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn fields_another_applier_claims_are_kept() {
        let first = apply(
            &json!({}),
            &json!({"spec": {"a": 1, "b": 2}}),
            &manager("m"),
        );
        let shared = apply(&first, &json!({"spec": {"b": 2}}), &manager("other"));
        let dropped = apply(&shared, &json!({"spec": {"a": 1}}), &manager("m"));
        assert_eq!(dropped["spec"], json!({"a": 1, "b": 2}));
    }

    #[test]
    fn keyed_list_elements_a_manager_stops_applying_are_removed() {
        let both = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Stale", "status": "True"}]}});
        let first = apply(&json!({}), &both, &manager("m"));
        let second = apply(
            &first,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            &manager("m"),
        );
        assert_eq!(
            second["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}])
        );
    }

    #[test]
    fn fields_set_by_updates_are_not_removed_by_apply() {
        let live = json!({"spec": {"manual": true}});
        let first = apply(&live, &json!({"spec": {"a": 1}}), &manager("m"));
        let second = apply(&first, &json!({"spec": {}}), &manager("m"));
        assert_eq!(second["spec"], json!({"manual": true}));
    }
}
