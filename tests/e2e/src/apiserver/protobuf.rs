//! Decoding of the Kubernetes protobuf envelope for the built-in kinds kubectl's typed
//! subcommands send that way (`kubectl create namespace|configmap|secret|serviceaccount|
//! role|rolebinding|clusterrole|clusterrolebinding|token`, `kubectl auth can-i|whoami`).
//! Responses are always JSON, which kubectl also accepts.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::status::ApiError;

/// The media type of protobuf-encoded bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

fn malformed(what: &str) -> ApiError {
    ApiError::BadRequest(format!("malformed protobuf body: {what}"))
}

/// One decoded field: its number and either a varint or a length-delimited payload.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .0
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint too long"))
    }

    fn next(&mut self) -> Result<Option<Field<'a>>, ApiError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed("field number"))?;
        match key & 7 {
            0 => Ok(Some(Field::Varint(number, self.varint()?))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed("length"))?;
                if len > self.0.len() {
                    return Err(malformed("truncated field"));
                }
                let (payload, rest) = self.0.split_at(len);
                self.0 = rest;
                Ok(Some(Field::Bytes(number, payload)))
            }
            1 => self.skip(8).map(|()| Some(Field::Varint(number, 0))),
            5 => self.skip(4).map(|()| Some(Field::Varint(number, 0))),
            _ => Err(malformed("unsupported wire type")),
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), ApiError> {
        if n > self.0.len() {
            return Err(malformed("truncated fixed field"));
        }
        self.0 = &self.0[n..];
        Ok(())
    }
}

fn fields(bytes: &[u8]) -> Result<Vec<Field<'_>>, ApiError> {
    let mut reader = Reader(bytes);
    let mut out = Vec::new();
    while let Some(field) = reader.next()? {
        out.push(field);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not UTF-8"))
}

/// A `map<string, string>` (or bytes, base64-encoded as JSON has them) entry.
fn map_entry(bytes: &[u8], base64_values: bool) -> Result<(String, Value), ApiError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for field in fields(bytes)? {
        match field {
            Field::Bytes(1, k) => key = text(k)?,
            Field::Bytes(2, v) if base64_values => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
            Field::Bytes(2, v) => value = json!(text(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(map: &mut Map<String, Value>, field: &str, entry: (String, Value)) {
    let slot = map.entry(field.to_string()).or_insert_with(|| json!({}));
    slot[entry.0.as_str()] = entry.1;
}

fn push(map: &mut Map<String, Value>, field: &str, value: Value) {
    if let Value::Array(items) = map.entry(field.to_string()).or_insert_with(|| json!([])) {
        items.push(value);
    }
}

fn owner_reference(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for field in fields(bytes)? {
        match field {
            Field::Bytes(1, v) => {
                out.insert("kind".into(), json!(text(v)?));
            }
            Field::Bytes(3, v) => {
                out.insert("name".into(), json!(text(v)?));
            }
            Field::Bytes(4, v) => {
                out.insert("uid".into(), json!(text(v)?));
            }
            Field::Bytes(5, v) => {
                out.insert("apiVersion".into(), json!(text(v)?));
            }
            Field::Varint(6, v) => {
                out.insert("controller".into(), json!(v != 0));
            }
            Field::Varint(7, v) => {
                out.insert("blockOwnerDeletion".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for field in fields(bytes)? {
        match field {
            Field::Bytes(1, v) => {
                out.insert("name".into(), json!(text(v)?));
            }
            Field::Bytes(2, v) => {
                out.insert("generateName".into(), json!(text(v)?));
            }
            Field::Bytes(3, v) => {
                out.insert("namespace".into(), json!(text(v)?));
            }
            Field::Bytes(11, v) => insert_entry(&mut out, "labels", map_entry(v, false)?),
            Field::Bytes(12, v) => insert_entry(&mut out, "annotations", map_entry(v, false)?),
            Field::Bytes(13, v) => push(&mut out, "ownerReferences", owner_reference(v)?),
            Field::Bytes(14, v) => push(&mut out, "finalizers", json!(text(v)?)),
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

/// How a field of a message decodes.
enum Type {
    /// A string.
    Text,
    /// A repeated string.
    Texts,
    /// An integer (varint).
    Int,
    /// A boolean (varint 0 or 1).
    Bool,
    /// `ObjectMeta`.
    Meta,
    /// A nested message.
    Message(&'static [Slot]),
    /// A repeated nested message.
    Messages(&'static [Slot]),
}

/// A field of a message: its number, its JSON name and how it decodes.
struct Slot(u32, &'static str, Type);

const POLICY_RULE: &[Slot] = &[
    Slot(1, "verbs", Type::Texts),
    Slot(2, "apiGroups", Type::Texts),
    Slot(3, "resources", Type::Texts),
    Slot(4, "resourceNames", Type::Texts),
    Slot(5, "nonResourceURLs", Type::Texts),
];
const SUBJECT: &[Slot] = &[
    Slot(1, "kind", Type::Text),
    Slot(2, "apiGroup", Type::Text),
    Slot(3, "name", Type::Text),
    Slot(4, "namespace", Type::Text),
];
const ROLE_REF: &[Slot] = &[
    Slot(1, "apiGroup", Type::Text),
    Slot(2, "kind", Type::Text),
    Slot(3, "name", Type::Text),
];
const ROLE: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(2, "rules", Type::Messages(POLICY_RULE)),
];
const BINDING: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(2, "subjects", Type::Messages(SUBJECT)),
    Slot(3, "roleRef", Type::Message(ROLE_REF)),
];
const BOUND_OBJECT: &[Slot] = &[
    Slot(1, "kind", Type::Text),
    Slot(2, "apiVersion", Type::Text),
    Slot(3, "name", Type::Text),
    Slot(4, "uid", Type::Text),
];
/// meta/v1 DeleteOptions, as Helm's (client-go's) deletes send it.
const DELETE_OPTIONS: &[Slot] = &[
    Slot(1, "gracePeriodSeconds", Type::Int),
    Slot(
        2,
        "preconditions",
        Type::Message(&[
            Slot(1, "uid", Type::Text),
            Slot(2, "resourceVersion", Type::Text),
        ]),
    ),
    Slot(3, "orphanDependents", Type::Bool),
    Slot(4, "propagationPolicy", Type::Text),
    Slot(5, "dryRun", Type::Texts),
];
const TOKEN_REQUEST: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(
        2,
        "spec",
        Type::Message(&[
            Slot(1, "audiences", Type::Texts),
            Slot(4, "expirationSeconds", Type::Int),
            Slot(3, "boundObjectRef", Type::Message(BOUND_OBJECT)),
        ]),
    ),
];
const TOKEN_REVIEW: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(
        2,
        "spec",
        Type::Message(&[
            Slot(1, "token", Type::Text),
            Slot(2, "audiences", Type::Texts),
        ]),
    ),
];
const SELF_SUBJECT_REVIEW: &[Slot] = &[Slot(1, "metadata", Type::Meta)];
const RESOURCE_ATTRIBUTES: &[Slot] = &[
    Slot(1, "namespace", Type::Text),
    Slot(2, "verb", Type::Text),
    Slot(3, "group", Type::Text),
    Slot(4, "version", Type::Text),
    Slot(5, "resource", Type::Text),
    Slot(6, "subresource", Type::Text),
    Slot(7, "name", Type::Text),
];
const NON_RESOURCE_ATTRIBUTES: &[Slot] =
    &[Slot(1, "path", Type::Text), Slot(2, "verb", Type::Text)];
const SELF_ACCESS_REVIEW: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(
        2,
        "spec",
        Type::Message(&[
            Slot(1, "resourceAttributes", Type::Message(RESOURCE_ATTRIBUTES)),
            Slot(
                2,
                "nonResourceAttributes",
                Type::Message(NON_RESOURCE_ATTRIBUTES),
            ),
        ]),
    ),
];
const ACCESS_REVIEW: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(
        2,
        "spec",
        Type::Message(&[
            Slot(1, "resourceAttributes", Type::Message(RESOURCE_ATTRIBUTES)),
            Slot(
                2,
                "nonResourceAttributes",
                Type::Message(NON_RESOURCE_ATTRIBUTES),
            ),
            Slot(3, "user", Type::Text),
            Slot(4, "groups", Type::Texts),
            Slot(6, "uid", Type::Text),
        ]),
    ),
];
const RULES_REVIEW: &[Slot] = &[
    Slot(1, "metadata", Type::Meta),
    Slot(
        2,
        "spec",
        Type::Message(&[Slot(1, "namespace", Type::Text)]),
    ),
];

/// The schema of a kind decoded by [`message`], if it is one of those.
fn schema_of(api_version: &str, kind: &str) -> Option<&'static [Slot]> {
    Some(match (api_version, kind) {
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => DELETE_OPTIONS,
        ("authentication.k8s.io/v1", "TokenReview") => TOKEN_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            ACCESS_REVIEW
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => RULES_REVIEW,
        _ => return None,
    })
}

/// Decodes a message by its schema; fields it does not name are dropped.
fn message(bytes: &[u8], schema: &[Slot]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for field in fields(bytes)? {
        let (number, payload, varint) = match field {
            Field::Bytes(n, b) => (n, Some(b), None),
            Field::Varint(n, v) => (n, None, Some(v)),
        };
        let Some(Slot(_, name, ty)) = schema.iter().find(|f| f.0 == number) else {
            continue;
        };
        let name = name.to_string();
        match (ty, payload, varint) {
            (Type::Text, Some(b), _) => {
                out.insert(name, json!(text(b)?));
            }
            (Type::Texts, Some(b), _) => push(&mut out, &name, json!(text(b)?)),
            (Type::Int, _, Some(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Type::Bool, _, Some(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Type::Meta, Some(b), _) => {
                out.insert(name, object_meta(b)?);
            }
            (Type::Message(inner), Some(b), _) => {
                out.insert(name, Value::Object(message(b, inner)?));
            }
            (Type::Messages(inner), Some(b), _) => {
                push(&mut out, &name, Value::Object(message(b, inner)?))
            }
            _ => {
                return Err(malformed(&format!(
                    "field {number} has the wrong wire type"
                )));
            }
        }
    }
    Ok(out)
}

/// Decodes a protobuf body of a supported built-in kind into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s envelope"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for field in fields(unknown)? {
        match field {
            Field::Bytes(1, type_meta) => {
                for f in fields(type_meta)? {
                    match f {
                        Field::Bytes(1, v) => api_version = text(v)?,
                        Field::Bytes(2, v) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            Field::Bytes(2, bytes) => raw = bytes,
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if let Some(schema) = schema_of(&api_version, &kind) {
        out.extend(message(raw, schema)?);
        return Ok(Value::Object(out));
    }
    let supported = matches!(
        (api_version.as_str(), kind.as_str()),
        (
            "v1",
            "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
        )
    );
    if !supported {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the testbed decodes protobuf only for v1 Namespace, ConfigMap, Secret and ServiceAccount, the RBAC kinds, TokenRequest, the reviews and DeleteOptions, not {api_version} {kind}; send application/json"
        )));
    }
    for field in fields(raw)? {
        match (kind.as_str(), field) {
            (_, Field::Bytes(1, v)) => {
                out.insert("metadata".into(), object_meta(v)?);
            }
            ("Namespace", Field::Bytes(2, spec)) => {
                let mut spec_out = Map::new();
                for f in fields(spec)? {
                    if let Field::Bytes(1, v) = f {
                        push(&mut spec_out, "finalizers", json!(text(v)?));
                    }
                }
                out.insert("spec".into(), Value::Object(spec_out));
            }
            ("ConfigMap", Field::Bytes(2, v)) => {
                insert_entry(&mut out, "data", map_entry(v, false)?)
            }
            ("ConfigMap", Field::Bytes(3, v)) => {
                insert_entry(&mut out, "binaryData", map_entry(v, true)?)
            }
            ("ConfigMap" | "Secret", Field::Varint(n, v))
                if (kind == "ConfigMap" && n == 4) || (kind == "Secret" && n == 5) =>
            {
                out.insert("immutable".into(), json!(v != 0));
            }
            ("Secret", Field::Bytes(2, v)) => insert_entry(&mut out, "data", map_entry(v, true)?),
            ("Secret", Field::Bytes(3, v)) => {
                out.insert("type".into(), json!(text(v)?));
            }
            ("Secret", Field::Bytes(4, v)) => {
                insert_entry(&mut out, "stringData", map_entry(v, false)?)
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    #[test]
    fn namespace_with_labels_decodes_to_json() {
        let label = [field(1, b"team"), field(2, b"maos")].concat();
        let meta = [field(1, b"work"), field(11, &label)].concat();
        let decoded = decode(&envelope("Namespace", &field(1, &meta))).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "work", "labels": {"team": "maos"}}})
        );
    }

    #[test]
    fn secret_data_is_base64_encoded_as_in_json() {
        let entry = [field(1, b"api-key"), field(2, b"hi")].concat();
        let raw = [
            field(1, &field(1, b"s")),
            field(2, &entry),
            field(3, b"Opaque"),
        ]
        .concat();
        let decoded = decode(&envelope("Secret", &raw)).unwrap();
        assert_eq!(decoded["data"]["api-key"], "aGk=");
        assert_eq!(decoded["type"], "Opaque");
    }

    #[test]
    fn unsupported_kinds_and_garbage_are_refused_without_panicking() {
        assert_eq!(decode(&envelope("Pod", &[])).unwrap_err().code(), 415);
        assert_eq!(decode(b"not protobuf").unwrap_err().code(), 400);
        assert_eq!(
            decode(&[MAGIC, &[0x0a, 0xff]].concat()).unwrap_err().code(),
            400
        );
    }
}
