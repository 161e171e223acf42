//! OpenAPI v3 as kube-apiserver publishes it per group-version, with the real schemas of the
//! custom resources (so `kubectl explain` works and `kubectl apply` finds what it fetches).

use serde_json::{Value, json};

use super::resource::ResourceRegistry;

/// A short content hash for the `?hash=` kubectl caches OpenAPI documents by.
fn content_hash(document: &Value) -> String {
    // FNV-1a: stable across runs, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016X}")
}

/// The component name kube-apiserver gives a kind, e.g. `dev.maos.v1alpha1.Task`.
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    let string = |d: &str| json!({"type": "string", "description": d});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": {
            "name": string("Name must be unique within a namespace."),
            "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name."),
            "namespace": string("Namespace defines the space within which each name must be unique."),
            "uid": string("UID is the unique in time and space value for this object."),
            "resourceVersion": string("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": string("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": string("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "List of objects depended by this object."},
        },
    })
}

/// The group-versions with a document, as paths relative to `/openapi/v3/`.
fn documented(registry: &ResourceRegistry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = registry
        .all()
        .filter(|r| r.openapi_schema.is_some())
        .map(|r| (r.group.clone(), r.version.clone()))
        .collect();
    out.dedup();
    out
}

/// `/openapi/v3/apis/<group>/<version>`, or `None` if that group-version has no document.
pub fn group_version_document(
    registry: &ResourceRegistry,
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for info in registry
        .all()
        .filter(|r| r.group == group && r.version == version)
    {
        let Some(raw) = &info.openapi_schema else {
            continue;
        };
        // kubectl explain finds a resource's kind through the GVK on its path's operations.
        let name = schema_name(group, version, &info.kind);
        let list_name = format!("{name}List");
        let gvk = json!({"group": group, "version": version, "kind": info.kind});
        let list_gvk =
            json!({"group": group, "version": version, "kind": format!("{}List", info.kind)});
        let prefix = if info.namespaced {
            format!(
                "/apis/{group}/{version}/namespaces/{{namespace}}/{}",
                info.plural
            )
        } else {
            format!("/apis/{group}/{version}/{}", info.plural)
        };
        let operation = |action: &str, gvk: &Value, schema: &str| {
            json!({"get": {
                "operationId": format!("{action}{}", info.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}},
            }})
        };
        paths.insert(prefix.clone(), operation("list", &list_gvk, &list_name));
        paths.insert(format!("{prefix}/{{name}}"), operation("get", &gvk, &name));
        schemas.insert(list_name, json!({
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                "metadata": {"type": "object"},
            },
            "x-kubernetes-group-version-kind": [list_gvk],
        }));
        let mut schema = raw.clone();
        if !schema.get("properties").is_some_and(Value::is_object) {
            schema["properties"] = json!({});
        }
        schema["properties"]["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
        schema["properties"]["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
        schema["properties"]["metadata"] = json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "default": {}, "description": "Standard object's metadata."});
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": group, "version": version, "kind": info.kind}]);
        schemas.insert(schema_name(group, version, &info.kind), schema);
    }
    if schemas.is_empty() {
        return None;
    }
    schemas.insert(OBJECT_META.to_string(), object_meta_schema());
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v3`: where each group-version's document is.
pub fn root(registry: &ResourceRegistry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in documented(registry) {
        let path = format!("apis/{group}/{version}");
        let hash = group_version_document(registry, &group, &version)
            .map(|d| content_hash(&d))
            .unwrap_or_default();
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ResourceRegistry {
        let mut registry = ResourceRegistry::with_builtins();
        registry
            .add_crd(&json!({
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "description": "the spec"}}}}}]}
            }))
            .unwrap();
        registry
    }

    #[test]
    fn root_points_at_each_custom_group_version_with_a_hash() {
        let root = root(&registry());
        let url = root["paths"]["apis/example.com/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/example.com/v1?hash="));
    }

    #[test]
    fn group_version_document_carries_the_crd_schema_and_its_gvk() {
        let doc = group_version_document(&registry(), "example.com", "v1").unwrap();
        let widget = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(widget["properties"]["spec"]["description"], "the spec");
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
        assert!(doc["components"]["schemas"][OBJECT_META].is_object());
    }
}
