//! Values the API server must refuse at apply time because the schema's patterns say so: storage
//! prefixes that escape their place in the bucket, and resource quantities that are not
//! quantities.

mod common;

use common::{schema_of, strict};
use serde_json::{Value, json};

fn valid(kind: &str, object: &Value) -> Result<(), Vec<String>> {
    let schema = strict(schema_of(kind));
    let validator = jsonschema::validator_for(&schema).expect("the generated schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn checkpoint_with_prefix(prefix: &str) -> Value {
    json!({"spec": {"taskRef": {"name": "t"}, "storage": {"bucket": "maos-checkpoints", "prefix": prefix}}})
}

#[test]
fn a_checkpoint_prefix_stays_inside_its_place_in_the_bucket() {
    for good in ["", "prod/", "team-a/nightly/", "v1.2_backups/", "flat"] {
        assert!(
            valid("Checkpoint", &checkpoint_with_prefix(good)).is_ok(),
            "{good:?} refused"
        );
    }
    for bad in [
        "../../etc/",
        "/abs/",
        "a//b/",
        "a/../b/",
        "./x/",
        "sp ace/",
        "a\\b/",
    ] {
        let errors = valid("Checkpoint", &checkpoint_with_prefix(bad))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert!(
            errors.iter().any(|e| e.contains("/spec/storage/prefix")),
            "{bad:?}: {errors:?}"
        );
    }
}

fn pool_with_memory(memory: Value) -> Value {
    json!({"spec": {"apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
                    "resources": {"limits": {"memory": memory}}}})
}

#[test]
fn a_resource_quantity_must_be_a_quantity() {
    for good in [
        json!("512Mi"),
        json!("1.5Gi"),
        json!("500m"),
        json!(2),
        json!("1e3"),
    ] {
        assert!(
            valid("AgentPool", &pool_with_memory(good.clone())).is_ok(),
            "{good} refused"
        );
    }
    for bad in [json!("lots"), json!("12 GB"), json!(""), json!("1Gb")] {
        let errors = valid("AgentPool", &pool_with_memory(bad.clone()))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("/spec/resources/limits/memory")),
            "{bad}: {errors:?}"
        );
    }
}
