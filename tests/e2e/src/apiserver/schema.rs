//! Structural-schema admission for custom resources, in kube-apiserver's order: prune unknown
//! fields, apply defaults, validate the OpenAPI v3 constraints, then evaluate the CEL
//! `x-kubernetes-validations` rules (transition rules see the old object on update).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use super::status::{ApiError, FieldCause};

/// A CRD version's `openAPIV3Schema`, with its CEL rules compiled once.
pub struct StructuralSchema {
    raw: Value,
    cel: Option<kube_cel::CompiledSchema>,
}

impl std::fmt::Debug for StructuralSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuralSchema")
            .field("has_cel_rules", &self.cel.is_some())
            .finish()
    }
}

/// What admission did to an object besides accepting it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// Paths of fields that were not in the schema and were dropped.
    pub pruned: Vec<String>,
}

impl StructuralSchema {
    /// Wraps an `openAPIV3Schema`, compiling its CEL rules if it has any.
    pub fn new(raw: Value) -> Self {
        let has_rules = raw.to_string().contains("x-kubernetes-validations");
        let cel = has_rules.then(|| kube_cel::compile_schema(&raw));
        StructuralSchema { raw, cel }
    }

    /// The raw schema, as the CRD declared it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Prunes, defaults and validates `object` in place; refuses it with a 422 naming each field.
    ///
    /// `old` is the stored object on update, for CEL transition rules (`oldSelf`).
    pub fn admit(
        &self,
        kind: &str,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<Admission, ApiError> {
        let mut admission = Admission::default();
        prune(&self.raw, object, "", true, &mut admission.pruned);
        apply_defaults(&self.raw, object);
        let mut causes = Vec::new();
        validate(&self.raw, object, "", true, &mut causes);
        if causes.is_empty()
            && let Some(compiled) = &self.cel
        {
            // kube-apiserver skips rules on null values; kube-cel would evaluate them.
            let current = without_nulls(object);
            let previous = old.map(without_nulls);
            let result = CEL_VALIDATOR.with(|validator| {
                validator.validate_compiled(compiled, &current, previous.as_ref())
            });
            if let Err(errors) = result {
                for error in errors.iter() {
                    let field = error.field_path.trim_start_matches('.').to_string();
                    causes.push(FieldCause {
                        message: format!(
                            "Invalid value: \"{}\": {}",
                            type_name(lookup(object, &field)),
                            error.message
                        ),
                        field,
                        reason: "FieldValueInvalid",
                    });
                }
            }
        }
        if causes.is_empty() {
            Ok(admission)
        } else {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            Err(ApiError::invalid(kind, name, causes))
        }
    }
}

thread_local! {
    // The validator holds the registered CEL function library; building it per call is wasteful
    // and it is not shared across threads.
    static CEL_VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// A copy without null-valued object fields, at any depth.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The value at a field path as kube-apiserver writes them: `spec.subtasks[0].dependsOn`,
/// `spec.resources.limits[memory]`.
fn lookup<'a>(object: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default();
        if !key.is_empty() {
            current = current.get(key)?;
        }
        for index in pieces {
            let index = index.strip_suffix(']')?;
            current = match current {
                Value::Array(items) => items.get(index.parse::<usize>().ok()?)?,
                other => other.get(index)?,
            };
        }
    }
    Some(current)
}

fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        Some(Value::Object(_)) => "object",
        Some(Value::Array(_)) => "array",
        Some(Value::String(_)) => "string",
        Some(Value::Number(_)) => "number",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Null) | None => "null",
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// The schema for the values of a map-typed object, if it is one.
fn additional(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Drops fields the schema does not declare (and nulls of non-nullable fields), recording paths.
fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional_schema = additional(schema);
            let additional_true = flag(schema, "additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let field_path = child(path, &key);
                // apiVersion, kind and metadata are the API machinery's, never the schema's.
                if (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                let sub = properties.and_then(|p| p.get(&key)).or(additional_schema);
                match sub {
                    Some(sub) => {
                        let remove_null =
                            map.get(&key).is_some_and(Value::is_null) && !flag(sub, "nullable");
                        if remove_null {
                            map.remove(&key);
                        } else if let Some(v) = map.get_mut(&key) {
                            prune(sub, v, &field_path, false, pruned);
                        }
                    }
                    None if preserve || additional_true => {}
                    None => {
                        map.remove(&key);
                        pruned.push(field_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills absent fields that declare a `default`, top-down so defaulted objects get their own
/// nested defaults too.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in properties {
                    if !map.contains_key(key)
                        && let Some(default) = sub.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                    if let Some(v) = map.get_mut(key) {
                        apply_defaults(sub, v);
                    }
                }
            }
            if let Some(sub) = additional(schema) {
                for v in map.values_mut() {
                    apply_defaults(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

fn display(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

fn cause(field: &str, reason: &'static str, message: String) -> FieldCause {
    FieldCause {
        field: field.to_string(),
        reason,
        message,
    }
}

fn regex_cached(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .clone()
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// Checks the OpenAPI v3 constraints kube-apiserver enforces, with its message wording.
fn validate(schema: &Value, value: &Value, path: &str, root: bool, causes: &mut Vec<FieldCause>) {
    if value.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            causes.push(cause(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            causes.push(cause(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: {}: {path} in body must be of type integer or string",
                    display(value)
                ),
            ));
            return;
        }
        // The value checks still apply to the form it has (a quantity's pattern to a string).
        match value {
            Value::Number(n) => validate_number(schema, n, value, path, causes),
            Value::String(s) => validate_string(schema, s, value, path, causes),
            _ => {}
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        causes.push(cause(
            path,
            "FieldValueTypeInvalid",
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {expected}: {}",
                type_name(Some(value)),
                display(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported = allowed
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        causes.push(cause(
            path,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {supported}",
                display(value)
            ),
        ));
    }
    match value {
        Value::Number(n) => validate_number(schema, n, value, path, causes),
        Value::String(s) => validate_string(schema, s, value, path, causes),
        Value::Array(items) => validate_array(schema, items, path, causes),
        Value::Object(map) => validate_object(schema, map, path, root, causes),
        _ => {}
    }
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all_of {
            validate(sub, value, path, root, causes);
        }
    }
}

fn validate_number(
    schema: &Value,
    n: &serde_json::Number,
    value: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    let Some(x) = n.as_f64() else { return };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let fmt_bound = |b: f64| {
        if b.fract() == 0.0 && b.abs() < 1e15 {
            format!("{}", b as i64)
        } else {
            b.to_string()
        }
    };
    if let Some(min) = bound("minimum") {
        let exclusive = flag(schema, "exclusiveMinimum");
        if (exclusive && x <= min) || x < min {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {path} in body should be {op} {}",
                    display(value),
                    fmt_bound(min)
                ),
            ));
        }
    }
    if let Some(max) = bound("maximum") {
        let exclusive = flag(schema, "exclusiveMaximum");
        if (exclusive && x >= max) || x > max {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {path} in body should be {op} {}",
                    display(value),
                    fmt_bound(max)
                ),
            ));
        }
    }
    if let Some(multiple) = bound("multipleOf")
        && multiple > 0.0
        && (x / multiple).fract() != 0.0
    {
        causes.push(cause(
            path,
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: {path} in body should be a multiple of {}",
                display(value),
                fmt_bound(multiple)
            ),
        ));
    }
}

fn validate_string(
    schema: &Value,
    s: &str,
    value: &Value,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    let length = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        causes.push(cause(
            path,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        causes.push(cause(
            path,
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: {path} in body should be at least {min} chars long",
                display(value)
            ),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && let Some(re) = regex_cached(pattern)
        && !re.is_match(s)
    {
        causes.push(cause(
            path,
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: {path} in body should match '{pattern}'",
                display(value)
            ),
        ));
    }
}

fn validate_array(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<FieldCause>) {
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        causes.push(cause(
            path,
            "FieldValueTooMany",
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        causes.push(cause(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {count}: {path} in body should have at least {min} items"),
        ));
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    causes.push(cause(
                        &format!("{path}[{i}]"),
                        "FieldValueDuplicate",
                        format!("Duplicate value: {}", display(item)),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect::<Vec<_>>()
            };
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                    let shown = keys
                        .iter()
                        .zip(&key)
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    causes.push(cause(
                        &format!("{path}[{i}]"),
                        "FieldValueDuplicate",
                        format!("Duplicate value: map[string]interface {{}}{{{shown}}}"),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{path}[{i}]"), false, causes);
        }
    }
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<FieldCause>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                causes.push(cause(
                    &child(path, key),
                    "FieldValueRequired",
                    "Required value".to_string(),
                ));
            }
        }
    }
    let count = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        causes.push(cause(
            path,
            "FieldValueTooMany",
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        causes.push(cause(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {count}: {path} in body should have at least {min} properties"),
        ));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional_schema = additional(schema);
    for (key, v) in map {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let sub = properties.and_then(|p| p.get(key)).or(additional_schema);
        if let Some(sub) = sub {
            let field_path = if properties.is_some_and(|p| p.contains_key(key)) {
                child(path, key)
            } else {
                format!("{path}[{key}]")
            };
            validate(sub, v, &field_path, false, causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> StructuralSchema {
        StructuralSchema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["goal"],
                    "properties": {
                        "goal": {"type": "string", "maxLength": 10},
                        "parallelism": {"type": "integer", "minimum": 1, "maximum": 50, "default": 4},
                        "mode": {"type": "string", "enum": ["Auto", "Manual"]},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^[a-z]+$"}},
                        "limits": {"type": "object", "properties": {"tokens": {"type": "integer", "default": 7}}, "default": {}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "budget": {
                            "type": "object",
                            "nullable": true,
                            "properties": {"max": {"type": "integer"}, "cost": {"type": "string"}},
                            "x-kubernetes-validations": [{"rule": "has(self.max) || has(self.cost)", "message": "set max, cost or both"}]
                        },
                        "replicas": {
                            "type": "integer",
                            "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "may not shrink"}]
                        }
                    }
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        }))
    }

    fn object(spec: Value) -> Value {
        json!({"apiVersion": "x/v1", "kind": "T", "metadata": {"name": "t", "anything": 1}, "spec": spec})
    }

    fn refused(spec: Value) -> String {
        let mut obj = object(spec);
        schema().admit("T", &mut obj, None).unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_but_metadata_is_kept() {
        let mut obj =
            object(json!({"goal": "g", "bogus": 1, "free": {"x": 1}, "labels": {"a": "b"}}));
        let admission = schema().admit("T", &mut obj, None).unwrap();
        assert_eq!(admission.pruned, vec!["spec.bogus"]);
        assert!(obj["spec"].get("bogus").is_none());
        assert_eq!(obj["spec"]["free"]["x"], 1);
        assert_eq!(obj["spec"]["labels"]["a"], "b");
        assert_eq!(obj["metadata"]["anything"], 1);
    }

    #[test]
    fn defaults_are_applied_including_nested_defaults_of_defaulted_objects() {
        let mut obj = object(json!({"goal": "g"}));
        schema().admit("T", &mut obj, None).unwrap();
        assert_eq!(obj["spec"]["parallelism"], 4);
        assert_eq!(obj["spec"]["limits"]["tokens"], 7);
    }

    #[test]
    fn wrong_type_is_refused_naming_the_field() {
        let message = refused(json!({"goal": "g", "parallelism": "many"}));
        assert!(
            message.contains("spec.parallelism in body must be of type integer"),
            "{message}"
        );
    }

    #[test]
    fn out_of_range_number_is_refused_naming_the_field() {
        let message = refused(json!({"goal": "g", "parallelism": 51}));
        assert!(message.contains("spec.parallelism: Invalid value: 51: spec.parallelism in body should be less than or equal to 50"), "{message}");
        let message = refused(json!({"goal": "g", "parallelism": 0}));
        assert!(message.contains("greater than or equal to 1"), "{message}");
    }

    #[test]
    fn unknown_enum_value_is_refused_with_the_supported_values() {
        let message = refused(json!({"goal": "g", "mode": "Sometimes"}));
        assert!(message.contains("spec.mode: Unsupported value: \"Sometimes\": supported values: \"Auto\", \"Manual\""), "{message}");
    }

    #[test]
    fn missing_required_field_is_refused() {
        let message = refused(json!({}));
        assert!(message.contains("spec.goal: Required value"), "{message}");
    }

    #[test]
    fn length_item_count_and_pattern_limits_are_enforced() {
        assert!(refused(json!({"goal": "12345678901"})).contains("spec.goal: Too long"));
        assert!(
            refused(json!({"goal": "g", "tags": ["a", "b", "c"]}))
                .contains("spec.tags: Too many: 3")
        );
        assert!(
            refused(json!({"goal": "g", "tags": ["A"]}))
                .contains("spec.tags[0] in body should match")
        );
    }

    #[test]
    fn cel_rule_failure_is_refused_with_its_message_and_field() {
        let message = refused(json!({"goal": "g", "budget": {}}));
        assert!(message.contains("spec.budget"), "{message}");
        assert!(message.contains("set max, cost or both"), "{message}");
    }

    #[test]
    fn cel_transition_rule_sees_the_old_object_on_update_only() {
        let old = object(json!({"goal": "g", "replicas": 3}));
        let mut shrunk = object(json!({"goal": "g", "replicas": 2}));
        let message = schema()
            .admit("T", &mut shrunk, Some(&old))
            .unwrap_err()
            .to_string();
        assert!(message.contains("may not shrink"), "{message}");
        let mut created = object(json!({"goal": "g", "replicas": 2}));
        schema().admit("T", &mut created, None).unwrap();
    }

    #[test]
    fn null_for_a_nullable_field_is_kept_and_for_others_is_dropped_then_defaulted() {
        let mut obj = object(json!({"goal": "g", "budget": null, "parallelism": null}));
        schema().admit("T", &mut obj, None).unwrap();
        assert!(obj["spec"]["budget"].is_null() && obj["spec"].get("budget").is_some());
        assert_eq!(obj["spec"]["parallelism"], 4);
    }
}
