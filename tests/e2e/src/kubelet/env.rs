//! A container's environment, resolved as a kubelet does: `env` values with `$(VAR)` expansion,
//! `secretKeyRef`, `configMapKeyRef`, `fieldRef`, and `envFrom` Secrets and ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::{Api, Client};

use super::status::POD_IP;

/// Why a container's environment could not be built; the kubelet reports it as the waiting
/// reason `CreateContainerConfigError` and tries again, as a real kubelet does.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A referenced Secret or ConfigMap does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A referenced key is not in the Secret or ConfigMap.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// `Secret` or `ConfigMap`.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Its name.
        name: String,
        /// The key.
        key: String,
    },
    /// A `fieldRef` names a field the testbed does not provide.
    #[error("unsupported fieldRef {0}")]
    UnsupportedField(String),
    /// A `resourceFieldRef` (not provided by the testbed).
    #[error("resourceFieldRef is not supported by the testbed kubelet (variable {0})")]
    UnsupportedResourceField(String),
    /// A Secret value is not UTF-8 text.
    #[error("the value of {0} is not UTF-8 text")]
    NotText(String),
    /// The API server failed.
    #[error("reading {kind} {name}: {source}")]
    Api {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The client error.
        source: kube::Error,
    },
}

/// Builds the environment of `container` in `pod`, in declaration order (`envFrom` first, then
/// `env`, later entries overriding earlier ones).
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let mut sources = Sources::new(client.clone(), namespace);
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(existing) = vars.iter_mut().find(|(n, _)| *n == name) {
            existing.1 = value;
        } else {
            vars.push((name, value));
        }
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let sources_named = [
            from.secret_ref
                .as_ref()
                .map(|r| (Kind::Secret, &r.name, r.optional)),
            from.config_map_ref
                .as_ref()
                .map(|r| (Kind::ConfigMap, &r.name, r.optional)),
        ];
        for (kind, name, optional) in sources_named.into_iter().flatten() {
            let data = sources.data(kind, name).await?;
            for (key, value) in required(kind, data, name, optional)?.unwrap_or_default() {
                set(&mut vars, format!("{prefix}{key}"), value);
            }
        }
    }

    for var in container.env.iter().flatten() {
        if let Some(value) = value_of(&mut sources, pod, var, &vars).await? {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

async fn value_of(
    sources: &mut Sources,
    pod: &Pod,
    var: &EnvVar,
    earlier: &[(String, String)],
) -> Result<Option<String>, EnvError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), earlier)));
    };
    let key_refs = [
        from.secret_key_ref
            .as_ref()
            .map(|r| (Kind::Secret, &r.name, &r.key, r.optional)),
        from.config_map_key_ref
            .as_ref()
            .map(|r| (Kind::ConfigMap, &r.name, &r.key, r.optional)),
    ];
    if let Some((kind, name, key, optional)) = key_refs.into_iter().flatten().next() {
        let data = sources.data(kind, name).await?;
        return match required(kind, data, name, optional)? {
            None => Ok(None),
            Some(data) => match data.get(key) {
                Some(value) => Ok(Some(value.clone())),
                None if optional.unwrap_or(false) => Ok(None),
                None => Err(sources.missing_key(kind.title(), name, key)),
            },
        };
    }
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path).map(Some);
    }
    if from.resource_field_ref.is_some() {
        return Err(EnvError::UnsupportedResourceField(var.name.clone()));
    }
    Ok(Some(String::new()))
}

/// Where a referenced value lives.
#[derive(Clone, Copy)]
enum Kind {
    Secret,
    ConfigMap,
}

impl Kind {
    /// How errors name an object of this kind.
    fn lower(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
        }
    }

    /// How errors name this kind in a missing-key message.
    fn title(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

/// A referenced object's data (`None` if it is missing): a missing object is an error unless the
/// reference is optional, as the kubelet treats it.
fn required(
    kind: Kind,
    data: Option<BTreeMap<String, String>>,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, String>>, EnvError> {
    match data {
        Some(data) => Ok(Some(data)),
        None if optional.unwrap_or(false) => Ok(None),
        None => Err(EnvError::NotFound {
            kind: kind.lower(),
            name: name.to_owned(),
        }),
    }
}

/// The value of a `fieldRef` path of the downward API.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "status.podIP" | "status.hostIP" => POD_IP.to_owned(),
        "status.podIPs" | "status.hostIPs" => POD_IP.to_owned(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        other => {
            let quoted_key = |prefix: &str| {
                other
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("']"))
                    .map(str::to_owned)
            };
            if let Some(key) = quoted_key("metadata.labels['") {
                from_map(meta.labels.as_ref(), &key)
            } else if let Some(key) = quoted_key("metadata.annotations['") {
                from_map(meta.annotations.as_ref(), &key)
            } else {
                return Err(EnvError::UnsupportedField(other.to_owned()));
            }
        }
    };
    Ok(value)
}

/// Expands `$(NAME)` with the variables defined before, as Kubernetes does: `$$` escapes a `$`,
/// and a reference to an undefined variable stays as written.
pub fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match earlier.iter().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Secrets and ConfigMaps of one namespace, each read at most once per resolution.
struct Sources {
    client: Client,
    namespace: String,
    secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
    config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    fn new(client: Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    fn missing_key(&self, kind: &'static str, name: &str, key: &str) -> EnvError {
        EnvError::MissingKey {
            kind,
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            key: key.to_owned(),
        }
    }

    async fn data(
        &mut self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        match kind {
            Kind::Secret => self.secret(name).await,
            Kind::ConfigMap => self.config_map(name).await,
        }
    }

    async fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(cached) = self.secrets.get(name) {
            return Ok(cached.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api.get_opt(name).await.map_err(|source| EnvError::Api {
            kind: "secret",
            name: name.to_owned(),
            source,
        })?;
        let data = match found {
            None => None,
            Some(secret) => {
                let mut data = BTreeMap::new();
                for (key, bytes) in secret.data.unwrap_or_default() {
                    let text = String::from_utf8(bytes.0)
                        .map_err(|_| EnvError::NotText(format!("{name}/{key}")))?;
                    data.insert(key, text);
                }
                // The API server folds stringData into data; accept it unfolded too.
                data.extend(secret.string_data.unwrap_or_default());
                Some(data)
            }
        };
        self.secrets.insert(name.to_owned(), data.clone());
        Ok(data)
    }

    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, EnvError> {
        if let Some(cached) = self.config_maps.get(name) {
            return Ok(cached.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api.get_opt(name).await.map_err(|source| EnvError::Api {
            kind: "configmap",
            name: name.to_owned(),
            source,
        })?;
        let data = found.map(|map| map.data.unwrap_or_default());
        self.config_maps.insert(name.to_owned(), data.clone());
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn references_to_earlier_variables_are_expanded() {
        let earlier = vars(&[("HOST", "redis"), ("PORT", "6379")]);
        assert_eq!(expand("$(HOST):$(PORT)", &earlier), "redis:6379");
    }

    #[test]
    fn escaped_and_unknown_references_stay_as_written() {
        let earlier = vars(&[("A", "x")]);
        assert_eq!(expand("$$(A) $(B) $A $", &earlier), "$(A) $(B) $A $");
    }

    #[test]
    fn downward_api_fields_come_from_the_pod() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("agent-1".into()),
                namespace: Some("team".into()),
                uid: Some("u-1".into()),
                labels: Some([("maos.dev/pool".to_owned(), "default".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            field_value(&pod, "metadata.name").ok().as_deref(),
            Some("agent-1")
        );
        assert_eq!(
            field_value(&pod, "metadata.namespace").ok().as_deref(),
            Some("team")
        );
        assert_eq!(
            field_value(&pod, "metadata.uid").ok().as_deref(),
            Some("u-1")
        );
        assert_eq!(
            field_value(&pod, "status.podIP").ok().as_deref(),
            Some(POD_IP)
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['maos.dev/pool']")
                .ok()
                .as_deref(),
            Some("default")
        );
        assert!(matches!(
            field_value(&pod, "spec.nope"),
            Err(EnvError::UnsupportedField(f)) if f == "spec.nope"
        ));
    }
}
