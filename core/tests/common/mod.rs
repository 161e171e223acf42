//! Helpers shared by the schema, CEL and example tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use maos_core::api::crds;
use serde_json::Value;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ has a parent")
        .to_path_buf()
}

/// The generated openAPIV3Schema of `kind`, as JSON.
pub fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// The schema as `kubectl apply --validate=strict` uses it: an object with declared properties
/// accepts no other field, so a misspelt field fails instead of being silently pruned.
pub fn strict(mut schema: Value) -> Value {
    fn walk(node: &mut Value, is_root: bool) {
        let Value::Object(map) = node else { return };
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !is_root {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (key, child) in map.iter_mut() {
            match key.as_str() {
                "properties" => {
                    if let Value::Object(props) = child {
                        for prop in props.values_mut() {
                            walk(prop, false);
                        }
                    }
                }
                "items" | "additionalProperties" => walk(child, false),
                "anyOf" | "allOf" | "oneOf" => {
                    if let Value::Array(list) = child {
                        for branch in list {
                            walk(branch, false);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // The root also holds apiVersion, kind and metadata, which the API server adds itself.
    walk(&mut schema, true);
    schema
}

/// Parses a YAML document into JSON.
pub fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

/// Checks `object` against the CRD schema's CEL rules; returns each failure's message.
pub fn cel_failures(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match kube_cel::Validator::new().validate(&schema_of(kind), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}
