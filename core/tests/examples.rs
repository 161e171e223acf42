//! Every manifest in examples/ parses into the Rust types, satisfies the generated schema
//! strictly (no unknown field), passes the CEL rules and, for Tasks, the spec validator.

mod common;

use std::collections::BTreeSet;

use common::{cel_failures, repo_root, schema_of, strict, yaml_to_json};
use k8s_openapi::api::core::v1::Secret;
use maos_core::api::v1alpha1::{AgentPool, Checkpoint, Task};
use serde_json::Value;

/// The examples the README and the issue promise; a missing one fails the test.
const PROMISED: [&str; 8] = [
    "agentpool.yaml",
    "secrets/anthropic-secret.yaml",
    "hello-task.yaml",
    "parallel-research.yaml",
    "manual-dag.yaml",
    "checkpointed-task.yaml",
    "resumed-task.yaml",
    "checkpoint.yaml",
];

/// The manifests of `examples/` (what `kubectl apply -f examples/` applies) and of
/// `examples/secrets/` (applied only by hand, after editing), named relative to `examples/`.
fn examples() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for sub in ["", "secrets/"] {
        files.extend(manifests_in(sub));
    }
    files.sort();
    files
}

fn manifests_in(sub: &str) -> Vec<(String, String)> {
    let dir = repo_root().join("examples").join(sub);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("examples/{sub} exists: {e}"))
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("file")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            (format!("{sub}{name}"), text)
        })
        .collect()
}

#[test]
fn applying_the_examples_directory_never_touches_a_secret() {
    for (name, text) in manifests_in("") {
        let object = yaml_to_json(&text);
        assert_ne!(
            object["kind"], "Secret",
            "examples/{name}: `kubectl apply -f examples/` would overwrite the user's Secret"
        );
    }
}

/// Validates `object` against the strict schema of `kind`; returns "path: problem" lines.
fn schema_errors(kind: &str, object: &Value) -> Vec<String> {
    let schema = strict(schema_of(kind));
    let validator = jsonschema::validator_for(&schema).expect("the generated schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_promised_example_exists() {
    let present: BTreeSet<String> = examples().into_iter().map(|(name, _)| name).collect();
    for name in PROMISED {
        assert!(present.contains(name), "examples/{name} is missing");
    }
}

#[test]
fn every_example_is_valid() {
    let mut kinds_seen = BTreeSet::new();
    for (name, text) in examples() {
        let object = yaml_to_json(&text);
        let kind = object["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no kind"))
            .to_owned();
        kinds_seen.insert(kind.clone());
        match kind.as_str() {
            "Secret" => {
                let secret: Secret =
                    serde_json::from_value(object).unwrap_or_else(|e| panic!("{name}: {e}"));
                let placeholder = secret.string_data.and_then(|d| d.get("api-key").cloned());
                assert_eq!(
                    placeholder.as_deref(),
                    Some("sk-ant-REPLACE-ME"),
                    "{name} must hold a placeholder, never a key"
                );
                continue;
            }
            "Task" => {
                let task: Task = serde_json::from_value(object.clone())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                if let Err(errors) = task.validate() {
                    panic!("{name}: {errors}");
                }
            }
            "AgentPool" => {
                serde_json::from_value::<AgentPool>(object.clone())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "Checkpoint" => {
                serde_json::from_value::<Checkpoint>(object.clone())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            other => panic!("{name}: unexpected kind {other}"),
        }
        assert_eq!(object["apiVersion"], "maos.dev/v1alpha1", "{name}");
        assert_eq!(
            schema_errors(&kind, &object),
            Vec::<String>::new(),
            "{name} breaks the schema"
        );
        assert_eq!(
            cel_failures(&kind, &object, None),
            Vec::<String>::new(),
            "{name} breaks a CEL rule"
        );
    }
    assert_eq!(
        kinds_seen,
        ["AgentPool", "Checkpoint", "Secret", "Task"]
            .map(String::from)
            .into_iter()
            .collect(),
        "every kind has an example"
    );
}

#[test]
fn the_strict_schema_catches_a_misspelt_field() {
    let object = yaml_to_json(
        "apiVersion: maos.dev/v1alpha1\nkind: Task\nmetadata: {name: t}\nspec: {prompt: p, poolRef: {name: d}, paralelism: 3}\n",
    );
    let errors = schema_errors("Task", &object);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("/spec:") && errors[0].contains("paralelism"),
        "{errors:#?}"
    );
}

#[test]
fn the_schema_rejects_bad_types_ranges_and_enums() {
    let cases = [
        (
            "spec: {prompt: p, poolRef: {name: d}, parallelism: many}",
            "/spec/parallelism",
        ),
        (
            "spec: {prompt: p, poolRef: {name: d}, parallelism: 0}",
            "/spec/parallelism",
        ),
        (
            "spec: {prompt: p, poolRef: {name: d}, shutdown: Now}",
            "/spec/shutdown",
        ),
        (
            "spec: {prompt: p, poolRef: {name: d}, subtasks: [{name: Bad_Name, prompt: x}]}",
            "/spec/subtasks/0/name",
        ),
        ("spec: {prompt: '', poolRef: {name: d}}", "/spec/prompt"),
        ("spec: {poolRef: {name: d}}", "/spec"),
    ];
    for (spec, path) in cases {
        let object = yaml_to_json(&format!(
            "apiVersion: maos.dev/v1alpha1\nkind: Task\nmetadata: {{name: t}}\n{spec}\n"
        ));
        let errors = schema_errors("Task", &object);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{path}:"))),
            "{spec}: {errors:#?}"
        );
    }
}

#[test]
fn serialization_omits_unset_fields() {
    let (_, text) = examples()
        .into_iter()
        .find(|(name, _)| name == "hello-task.yaml")
        .expect("exists");
    let task: Task = serde_saphyr::from_str(&text).expect("parses");
    let json = serde_json::to_value(&task).expect("serializes");
    let spec = json["spec"].as_object().expect("object");
    for absent in [
        "checkpoint",
        "resumeFrom",
        "shutdown",
        "ttlSecondsAfterFinished",
    ] {
        assert!(
            !spec.contains_key(absent),
            "{absent} should be omitted: {spec:?}"
        );
    }
    assert!(json.get("status").is_none_or(Value::is_null), "{json}");
}
