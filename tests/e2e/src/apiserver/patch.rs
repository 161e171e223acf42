//! PATCH semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
//! for built-in kinds (lists keyed by name and friends), and a simplified server-side apply.

use serde_json::{Map, Value};

use super::status::ApiError;

/// A PATCH body's type, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type named by a Content-Type header, or 415.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, got {other:?}"
            ))),
        }
    }
}

/// Decodes a body as JSON, or as YAML when it is not JSON; a malformed body is a 400.
pub fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::BadRequest("the request body is neither JSON nor UTF-8 YAML".to_string())
    })?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))
}

/// Applies `patch` (the decoded body) of type `patch_type` to `live`.
///
/// `strategic` says whether strategic-merge rules apply (built-in kinds); for custom resources
/// strategic merge patch falls back to merge semantics.
pub fn apply_patch(
    live: &Value,
    patch_type: PatchType,
    patch: &Value,
    strategic: bool,
) -> Result<Value, ApiError> {
    let mut out = live.clone();
    match patch_type {
        PatchType::Merge => json_patch::merge(&mut out, patch),
        PatchType::Json => {
            let mut ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("error decoding JSON patch: {e}")))?;
            // kube-apiserver's JSON patch treats a missing path as null in `test` (kube-runtime's
            // finalizer helper relies on it); the json-patch crate would fail the test.
            ops.0.retain(|op| match op {
                json_patch::PatchOperation::Test(test) if test.value.is_null() => {
                    !out.pointer(test.path.as_str()).is_none_or(Value::is_null)
                }
                _ => true,
            });
            json_patch::patch(&mut out, &ops).map_err(|e| ApiError::Invalid {
                group: String::new(),
                kind: String::new(),
                name: String::new(),
                causes: Vec::new(),
                message: format!(
                    "the server rejected our request due to an error in our request: {e}"
                ),
            })?;
        }
        PatchType::Strategic if strategic => strategic_merge(&mut out, patch),
        PatchType::Strategic => json_patch::merge(&mut out, patch),
        PatchType::Apply => server_side_apply(&mut out, patch),
    }
    Ok(out)
}

/// The merge key of a list field in built-in kinds, as their `patchMergeKey` tags declare.
/// `ports` is keyed by `containerPort` in a container and by `port` in a Service; the
/// elements (`items`) tell which.
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if field == "ports" {
        let container = items.iter().any(|i| i.get("containerPort").is_some());
        return Some(if container { "containerPort" } else { "port" });
    }
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => Some(match field {
            "readinessGates" => "conditionType",
            _ => "name",
        }),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of scalars whose strategic-merge strategy is set union.
pub fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch: merge patch, except that keyed lists merge element-wise and the
/// `$patch`, `$retainKeys`, `$deleteFromPrimitiveList` and `$setElementOrder` directives apply.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if key == "$patch" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if key == "$retainKeys" {
            if let Some(keep) = value.as_array() {
                target_map.retain(|k, _| {
                    keep.iter().any(|r| r.as_str() == Some(k)) || patch_map.contains_key(k)
                });
            }
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) =
                (target_map.get_mut(field), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                target_map.remove(key);
            }
            Value::Array(items) => {
                let existing = target_map.get_mut(key).and_then(Value::as_array_mut);
                let both: Vec<Value> = items
                    .iter()
                    .chain(existing.iter().flat_map(|e| e.iter()))
                    .cloned()
                    .collect();
                match (existing, merge_key(key, &both)) {
                    (Some(existing), Some(merge_key)) => {
                        merge_keyed_list(existing, items, merge_key)
                    }
                    (Some(existing), None) if is_primitive_merge_list(key) => {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                    }
                    _ => {
                        let cleaned = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect();
                        target_map.insert(key.clone(), Value::Array(cleaned));
                    }
                }
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value);
            }
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
    }
}

fn merge_keyed_list(existing: &mut Vec<Value>, patch: &[Value], merge_key: &str) {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    for item in patch {
        let key = item.get(merge_key);
        let position = key.and_then(|k| existing.iter().position(|e| e.get(merge_key) == Some(k)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

/// The merge step of server-side apply (see `apply.rs` for field ownership): the applied
/// configuration is merged into the live object (maps recursively, keyed lists by key, other
/// lists replaced).
pub fn server_side_apply(live: &mut Value, applied: &Value) {
    let mut applied = applied.clone();
    if let Some(map) = applied.as_object_mut() {
        // managedFields are ours to keep (and omitted), never the client's to set.
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            metadata.remove("managedFields");
        }
    }
    strategic_merge(live, &applied);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["f1"]},
               "spec": {"containers": [
                   {"name": "main", "image": "img:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                   {"name": "side", "image": "side:1"}]}})
    }

    #[test]
    fn merge_patch_sets_and_removes_fields_and_replaces_lists() {
        let out = apply_patch(&pod(), PatchType::Merge, &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"containers": [{"name": "only"}]}}), false).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "only"}]));
    }

    #[test]
    fn json_patch_applies_operations_and_a_failed_test_is_refused() {
        let out = apply_patch(&pod(), PatchType::Json, &json!([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}, {"op": "remove", "path": "/metadata/finalizers/0"}]), false).unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "9");
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let err = apply_patch(
            &pod(),
            PatchType::Json,
            &json!([{"op": "test", "path": "/metadata/name", "value": "other"}]),
            false,
        )
        .unwrap_err();
        let added = apply_patch(&pod(), PatchType::Json, &json!([{"op": "test", "path": "/metadata/missing", "value": null}, {"op": "add", "path": "/metadata/missing", "value": ["x"]}]), false).unwrap();
        assert_eq!(
            added["metadata"]["missing"],
            json!(["x"]),
            "a null test passes on a missing path"
        );
        assert_eq!(err.code(), 422);
        assert_eq!(
            apply_patch(&pod(), PatchType::Json, &json!({"not": "a list"}), false)
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let patch = json!({"spec": {"containers": [{"name": "main", "image": "img:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}});
        let out = apply_patch(&pod(), PatchType::Strategic, &patch, true).unwrap();
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2, "the side container is kept");
        assert_eq!(containers[0]["image"], "img:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn strategic_merge_directives_delete_elements_and_primitives() {
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"], "finalizers": ["f2"]},
            "spec": {"$setElementOrder/containers": [{"name": "main"}], "containers": [{"name": "side", "$patch": "delete"}]}
        });
        let out = apply_patch(&pod(), PatchType::Strategic, &patch, true).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["metadata"]["finalizers"], json!(["f2"]));
    }

    #[test]
    fn strategic_merge_on_a_custom_resource_uses_merge_semantics() {
        let live = json!({"spec": {"items": [{"name": "a"}, {"name": "b"}]}});
        let out = apply_patch(
            &live,
            PatchType::Strategic,
            &json!({"spec": {"items": [{"name": "c"}]}}),
            false,
        )
        .unwrap();
        assert_eq!(out["spec"]["items"], json!([{"name": "c"}]));
    }

    #[test]
    fn apply_merges_the_applied_configuration_into_the_live_object() {
        let live = json!({"metadata": {"name": "t", "labels": {"keep": "1"}}, "spec": {"a": 1, "b": 2}, "status": {"phase": "Running"}});
        let applied = json!({"metadata": {"name": "t", "labels": {"new": "2"}, "managedFields": [{}]}, "spec": {"b": 3}});
        let mut out = live.clone();
        server_side_apply(&mut out, &applied);
        assert_eq!(out["metadata"]["labels"], json!({"keep": "1", "new": "2"}));
        assert_eq!(out["spec"], json!({"a": 1, "b": 3}));
        assert_eq!(out["status"]["phase"], "Running");
        assert!(out["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn malformed_bodies_are_bad_requests_and_yaml_is_accepted() {
        assert_eq!(decode_body(b"{not json: [").unwrap_err().code(), 400);
        assert_eq!(
            decode_body(b"a: 1\nb: [x]\n").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert_eq!(
            PatchType::from_content_type("text/plain")
                .unwrap_err()
                .code(),
            415
        );
    }
}
