//! Bearer tokens: the admin's (from the kubeconfig) and ServiceAccount tokens issued by
//! TokenRequest (`kubectl create token`, the kubelet's projected tokens), each bound to its
//! ServiceAccount's uid (and a pod or Secret when asked), with an expiry and audiences.
//!
//! Unlike kube-apiserver's, the tokens are opaque random strings, not signed JWTs: a client can
//! only learn who a token is by asking the API (TokenReview), which is what a correct client does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::UserInfo;
use crate::apiserver::api::Cluster;
use crate::apiserver::resource::{str_at as text, strings_at};
use crate::apiserver::status::{ApiError, FieldCause};

/// The audience of tokens meant for this API server (kube-apiserver's default issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The lifetime of a requested token when the request names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime TokenRequest accepts.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime TokenRequest accepts (2^32 seconds, as kube-apiserver).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

const TOKEN_PREFIX: &str = "maos-testbed-sa.";

/// An object a token is bound to: it stops being valid when that object goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BoundObject {
    kind: String,
    name: String,
    uid: String,
}

#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    service_account: String,
    uid: String,
    expires: jiff::Timestamp,
    audiences: Vec<String>,
    bound: Option<BoundObject>,
    credential_id: String,
}

/// Every token this server accepts.
pub struct Tokens {
    admin: String,
    issued: Mutex<HashMap<String, Issued>>,
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn stored_uid(cluster: &Cluster, plural: &str, namespace: &str, name: &str) -> Option<String> {
    cluster.hub.read(|store| {
        store
            .get_by_key(
                &format!("/{plural}"),
                &(namespace.to_string(), name.to_string()),
            )
            .map(|object| text(&object, "/metadata/uid").to_string())
    })
}

impl Tokens {
    /// A store that accepts `admin` as the admin's token.
    pub fn new(admin: String) -> Self {
        Tokens {
            admin,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Answers a TokenRequest for the ServiceAccount `service_account` (a stored object): the
    /// TokenRequest with `status.token` and `status.expirationTimestamp`.
    pub fn request(
        &self,
        cluster: &Cluster,
        service_account: &Value,
        request: &Value,
    ) -> Result<Value, ApiError> {
        let namespace = text(service_account, "/metadata/namespace").to_string();
        let name = text(service_account, "/metadata/name").to_string();
        let invalid = |field: &str, message: String| {
            ApiError::invalid(
                "TokenRequest",
                &name,
                vec![FieldCause {
                    field: field.to_string(),
                    reason: "FieldValueInvalid",
                    message,
                }],
            )
            .in_group("authentication.k8s.io")
        };
        let seconds = match request.pointer("/spec/expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(value) => value.as_i64().ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: {value} is not an integer"
                ))
            })?,
        };
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if seconds > MAX_EXPIRATION_SECONDS {
            return Err(invalid(
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
                ),
            ));
        }
        let mut audiences = strings_at(request, "/spec/audiences");
        if audiences.is_empty() {
            audiences = vec![API_AUDIENCE.to_string()];
        }
        let bound = match request.pointer("/spec/boundObjectRef") {
            None | Some(Value::Null) => None,
            Some(reference) => Some(bound_object(cluster, &namespace, &name, reference)?),
        };
        let token = format!(
            "{TOKEN_PREFIX}{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = jiff::Timestamp::now();
        let expires = jiff::Timestamp::from_second(now.as_second() + seconds).unwrap_or(now);
        let issued = Issued {
            namespace: namespace.clone(),
            service_account: name.clone(),
            uid: text(service_account, "/metadata/uid").to_string(),
            expires,
            audiences: audiences.clone(),
            bound: bound.clone(),
            credential_id: uuid::Uuid::new_v4().to_string(),
        };
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), issued);
        let bound_json = bound
            .map(|b| json!({"kind": b.kind, "apiVersion": "v1", "name": b.name, "uid": b.uid}));
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": super::super::api::now_rfc3339()},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound_json},
            "status": {"token": token, "expirationTimestamp": expires.to_string()},
        }))
    }

    /// Who `token` is, if it is valid for one of `audiences`; otherwise the reason it is not
    /// (kube-apiserver's TokenReview error texts).
    pub fn authenticate(
        &self,
        cluster: &Cluster,
        token: &str,
        audiences: &[String],
    ) -> Result<UserInfo, String> {
        if token_matches(token.as_bytes(), self.admin.as_bytes()) {
            return Ok(UserInfo::admin());
        }
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
            .ok_or_else(|| {
                "[invalid bearer token, square/go-jose: compact JWS format must have three parts]"
                    .to_string()
            })?;
        if jiff::Timestamp::now() >= issued.expires {
            return Err("[invalid bearer token, service account token has expired]".to_string());
        }
        if !issued.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(
                "[invalid bearer token, token audiences is invalid for the current authenticator]"
                    .to_string(),
            );
        }
        let current = stored_uid(
            cluster,
            "serviceaccounts",
            &issued.namespace,
            &issued.service_account,
        );
        if current.as_deref() != Some(issued.uid.as_str()) {
            return Err(format!(
                "[invalid bearer token, service account {}/{} has been deleted]",
                issued.namespace, issued.service_account
            ));
        }
        let mut extra = BTreeMap::new();
        if let Some(bound) = &issued.bound {
            let plural = if bound.kind == "Pod" {
                "pods"
            } else {
                "secrets"
            };
            if stored_uid(cluster, plural, &issued.namespace, &bound.name).as_deref()
                != Some(bound.uid.as_str())
            {
                return Err(format!(
                    "[invalid bearer token, {} {}/{} has been deleted]",
                    plural.trim_end_matches('s'),
                    issued.namespace,
                    bound.name
                ));
            }
            if bound.kind == "Pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec![bound.name.clone()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".to_string(),
                    vec![bound.uid.clone()],
                );
            }
        }
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!("JTI={}", issued.credential_id)],
        );
        let mut user =
            UserInfo::service_account(&issued.namespace, &issued.service_account, &issued.uid);
        user.extra = extra;
        Ok(user)
    }

    /// The audiences of a token this store issued (the admin token has the API's).
    pub fn audiences_of(&self, token: &str) -> Vec<String> {
        if token_matches(token.as_bytes(), self.admin.as_bytes()) {
            return vec![API_AUDIENCE.to_string()];
        }
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .map(|i| i.audiences.clone())
            .unwrap_or_default()
    }
}

/// The pod or Secret a TokenRequest binds its token to, which must exist in the namespace.
fn bound_object(
    cluster: &Cluster,
    namespace: &str,
    service_account: &str,
    reference: &Value,
) -> Result<BoundObject, ApiError> {
    let kind = text(reference, "/kind");
    let name = text(reference, "/name");
    let plural = match kind {
        "Pod" => "pods",
        "Secret" => "secrets",
        other => {
            return Err(ApiError::invalid(
                "TokenRequest",
                service_account,
                vec![FieldCause {
                    field: "spec.boundObjectRef.kind".to_string(),
                    reason: "FieldValueNotSupported",
                    message: format!(
                        "Unsupported value: \"{other}\": supported values: \"Pod\", \"Secret\""
                    ),
                }],
            ));
        }
    };
    let uid = stored_uid(cluster, plural, namespace, name)
        .ok_or_else(|| ApiError::not_found(plural, name))?;
    let wanted = text(reference, "/uid");
    if !wanted.is_empty() && wanted != uid {
        return Err(ApiError::Conflict {
            kind: plural.to_string(),
            name: name.to_string(),
            message: format!(
                "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        });
    }
    Ok(BoundObject {
        kind: kind.to_string(),
        name: name.to_string(),
        uid,
    })
}
