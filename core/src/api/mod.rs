//! The MAOS custom resources and their generated CustomResourceDefinitions.

pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs of every MAOS kind, in the order `kubectl apply -f crds/` should see them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        v1alpha1::AgentPool::crd(),
        v1alpha1::Checkpoint::crd(),
        v1alpha1::Task::crd(),
    ]
}

/// The file a CRD is written to under `crds/`: its full name, e.g. `tasks.maos.dev.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Why a CRD could not be rendered as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {name} as YAML: {message}")]
pub struct RenderError {
    /// The CRD's name.
    pub name: String,
    /// What the YAML serializer said.
    pub message: String,
}

/// One CRD as the YAML document `make crds` writes, with a header saying it is generated.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    let body = serde_saphyr::to_string(crd).map_err(|err| RenderError {
        name: crd.metadata.name.clone().unwrap_or_default(),
        message: err.to_string(),
    })?;
    Ok(format!(
        "# Generated from core/src/api/v1alpha1 by `make crds`; do not edit.\n{body}"
    ))
}
