//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors
//! (`=`, `==`, `!=` on dotted paths such as `metadata.name` or `involvedObject.uid`).

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

/// A parsed `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(rest: &str, raw: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unable to parse requirement: {raw}: expected a parenthesised set"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; malformed input is a 400.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let bad =
                || ApiError::BadRequest(format!("unable to parse requirement: found '{part}'"));
            let requirement = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, value)) = part.split_once("!=") {
                LabelRequirement::NotEquals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                LabelRequirement::NotIn(key.trim().to_string(), set_values(rest, part)?)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                LabelRequirement::In(key.trim().to_string(), set_values(rest, part)?)
            } else if part.contains(char::is_whitespace) || part.contains(['(', ')']) {
                return Err(bad());
            } else {
                LabelRequirement::Exists(part.to_string())
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// The selector a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`)
    /// describes; an unknown operator is a 422 naming the field under `field`.
    pub fn from_object(selector: &Value, field: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value.as_str().unwrap_or("").to_string();
                requirements.push(LabelRequirement::Equals(key.clone(), value));
            }
        }
        let expressions = selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, expression) in expressions.iter().enumerate() {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let operator = expression
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("");
            requirements.push(match operator {
                "In" => LabelRequirement::In(key, values),
                "NotIn" => LabelRequirement::NotIn(key, values),
                "Exists" => LabelRequirement::Exists(key),
                "DoesNotExist" => LabelRequirement::DoesNotExist(key),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "{field}.matchExpressions[{i}].operator: Unsupported value: \"{other}\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    )));
                }
            });
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The string form of a field, as kube-apiserver compares it (absent is the empty string).
fn field_value(object: &Value, path: &str) -> String {
    let mut current = Some(object);
    for part in path.split('.') {
        current = current.and_then(|c| c.get(part));
    }
    match current {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter; malformed input is a 400.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in split_top_level(input) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (field_value(object, field) == *value) == *equal)
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_inequality_label_requirements() {
        let obj = pod(json!({"app": "web", "tier": "front"}));
        assert!(
            LabelSelector::parse("app=web,tier==front")
                .unwrap()
                .matches(&obj)
        );
        assert!(!LabelSelector::parse("app!=web").unwrap().matches(&obj));
        assert!(LabelSelector::parse("app!=db").unwrap().matches(&obj));
        assert!(LabelSelector::parse("missing!=x").unwrap().matches(&obj));
    }

    #[test]
    fn set_based_label_requirements() {
        let obj = pod(json!({"app": "web"}));
        assert!(
            LabelSelector::parse("app in (web, db)")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !LabelSelector::parse("app notin (web,db)")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            LabelSelector::parse("other notin (x)")
                .unwrap()
                .matches(&obj)
        );
        assert!(!LabelSelector::parse("other in (x)").unwrap().matches(&obj));
    }

    #[test]
    fn existence_label_requirements() {
        let obj = pod(json!({"app": "web"}));
        assert!(LabelSelector::parse("app").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("!app").unwrap().matches(&obj));
        assert!(
            LabelSelector::parse("!db,app in (web)")
                .unwrap()
                .matches(&obj)
        );
    }

    #[test]
    fn malformed_label_selector_is_a_bad_request() {
        assert_eq!(LabelSelector::parse("app in web").unwrap_err().code(), 400);
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let obj = pod(json!({}));
        assert!(
            FieldSelector::parse("metadata.name=p,metadata.namespace==ns")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("status.phase!=Pending")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("status.phase=Pending")
                .unwrap()
                .matches(&obj)
        );
        let event = json!({"involvedObject": {"uid": "u1", "kind": "Task"}});
        assert!(
            FieldSelector::parse("involvedObject.uid=u1,involvedObject.kind=Task")
                .unwrap()
                .matches(&event)
        );
    }
}
