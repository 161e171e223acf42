//! The generated CRDs: committed copies are current, every field is described and bounded, and
//! names, status subresource, printer columns and CEL rules are what users rely on.

mod common;

use std::collections::BTreeSet;

use common::{repo_root, schema_of};
use maos_core::api::{crd_file_name, crd_yaml, crds};
use serde_json::Value;

const KINDS: [&str; 3] = ["Task", "AgentPool", "Checkpoint"];

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = repo_root().join("crds");
    let mut expected_files = BTreeSet::new();
    for crd in crds() {
        let file = crd_file_name(&crd);
        let generated = crd_yaml(&crd).expect("renders");
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("crds/{file} is missing ({err}): run `make crds`"));
        assert!(
            committed == generated,
            "crds/{file} differs from what core/src/api generates: run `make crds` and commit it"
        );
        expected_files.insert(file);
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present, expected_files,
        "crds/ holds files no kind generates"
    );
}

#[test]
fn generated_yaml_parses_back_into_the_same_crd() {
    for crd in crds() {
        let yaml = crd_yaml(&crd).expect("renders");
        let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).expect("parses");
        assert_eq!(parsed, crd);
    }
}

/// Calls `visit(path, node)` on every schema node below `node`.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), values, visit);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for (i, branch) in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(&format!("{path}<{key}{i}>"), branch, visit);
        }
    }
}

/// How a default reads in a description: `default 5`, `default "Ready"`, `default {...}`.
fn default_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(_) | Value::Array(_) => String::new(),
        other => other.to_string(),
    }
}

/// `kubectl explain` shows descriptions, not schema defaults: each default is in its field's
/// description ("Default: 5.", or for an object of defaults, "Default: ..." naming them).
#[test]
fn every_default_is_in_its_description() {
    let mut missing = Vec::new();
    for kind in KINDS {
        walk(kind, &schema_of(kind), &mut |path, node| {
            for (name, prop) in node
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                // Status is the operator's; its zeros need no words.
                let Some(default) = prop.get("default").filter(|_| path.contains(".spec")) else {
                    continue;
                };
                let description = prop
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let text = default_text(default);
                if !description.contains("Default") || !description.contains(&text) {
                    missing.push(format!("{path}.{name} (default {default})"));
                }
            }
        });
    }
    assert!(
        missing.is_empty(),
        "defaults missing from descriptions: {missing:#?}"
    );
}

#[test]
fn every_property_has_a_description() {
    let mut missing = Vec::new();
    for kind in KINDS {
        let schema = schema_of(kind);
        walk(kind, &schema, &mut |path, node| {
            for (name, prop) in node
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let described = prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(format!("{path}.{name}"));
                }
            }
        });
        assert!(
            schema.get("description").is_some(),
            "{kind} has no description"
        );
    }
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:#?}"
    );
}

#[test]
fn every_string_list_and_map_is_bounded() {
    let mut unbounded = Vec::new();
    for kind in KINDS {
        walk(kind, &schema_of(kind), &mut |path, node| {
            let has = |key: &str| node.get(key).is_some();
            match node.get("type").and_then(Value::as_str) {
                Some("string")
                    if !has("maxLength")
                        && !has("enum")
                        && node.get("format") != Some(&"date-time".into()) =>
                {
                    unbounded.push(format!("{path}: string without maxLength"));
                }
                Some("array") if !has("maxItems") => {
                    unbounded.push(format!("{path}: array without maxItems"));
                }
                Some("object")
                    if node
                        .get("additionalProperties")
                        .is_some_and(Value::is_object)
                        && !has("maxProperties") =>
                {
                    unbounded.push(format!("{path}: map without maxProperties"));
                }
                _ => {}
            }
        });
    }
    assert!(unbounded.is_empty(), "unbounded fields: {unbounded:#?}");
}

#[test]
fn kinds_have_short_names_category_and_status_subresource() {
    let expected = [
        ("Task", "tasks", "mtask"),
        ("AgentPool", "agentpools", "apool"),
        ("Checkpoint", "checkpoints", "ckpt"),
    ];
    for (kind, plural, short) in expected {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("kind exists");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.maos.dev").as_str())
        );
        assert_eq!(crd.spec.group, "maos.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["maos".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has no status subresource"
        );
    }
}

#[test]
fn printer_columns_are_the_documented_ones() {
    let expected = [
        ("Task", vec!["Phase", "Progress", "Speedup", "Cost", "Age"]),
        (
            "AgentPool",
            vec!["Ready", "Busy", "Queue", "Min", "Max", "Age"],
        ),
        ("Checkpoint", vec!["Task", "Phase", "Size", "Age"]),
    ];
    for (kind, columns) in expected {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("kind exists");
        let names: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, columns, "{kind}");
    }
}

#[test]
fn printer_column_paths_exist_in_the_schema() {
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&kind);
        for column in crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
        {
            if column.json_path.starts_with(".metadata.") {
                continue;
            }
            let mut node = &schema;
            for part in column.json_path.trim_start_matches('.').split('.') {
                node = node
                    .get("properties")
                    .and_then(|p| p.get(part))
                    .unwrap_or_else(|| panic!("{kind} column {} names no field", column.json_path));
            }
        }
    }
}

#[test]
fn every_cel_rule_compiles() {
    for kind in KINDS {
        let compiled = kube_cel::compile_schema(&schema_of(kind));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
    }
}
