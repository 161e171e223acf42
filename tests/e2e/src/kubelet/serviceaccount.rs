//! What a real kubelet gives every pod so that in-cluster clients (`kube::Client::try_default`)
//! work unchanged: `KUBERNETES_SERVICE_HOST`/`_PORT`, and at
//! `/var/run/secrets/kubernetes.io/serviceaccount` the pod's ServiceAccount token (a
//! TokenRequest bound to the pod), the cluster's CA and the namespace — mounted into the
//! container's own mount namespace, so each pod sees its own.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{Api, Client};
use serde_json::{Value, json};

/// Where in-cluster clients read the pod's credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long a projected token lasts (the kubelet's default, 1 h and 7 s).
const TOKEN_SECONDS: i64 = 3607;

/// The API server pods are told to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InCluster {
    /// `KUBERNETES_SERVICE_HOST`.
    pub host: String,
    /// `KUBERNETES_SERVICE_PORT`.
    pub port: u16,
    /// The CA that signed the API server's certificate (`ca.crt`).
    pub ca_pem: String,
}

/// Whether the pod wants its ServiceAccount's credentials (`automountServiceAccountToken`).
pub fn wanted(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        != Some(false)
}

/// The service environment every container gets.
pub fn env(cluster: &InCluster) -> Vec<(String, String)> {
    let port = cluster.port.to_string();
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), cluster.host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        (
            "KUBERNETES_PORT".into(),
            format!("tcp://{}:{port}", cluster.host),
        ),
    ]
}

/// Requests the pod's token and writes the three files under `pod_dir`; the directory to
/// mount at [`MOUNT_PATH`], or why it cannot be had (a missing ServiceAccount, say).
pub async fn project(
    client: &Client,
    cluster: &InCluster,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<PathBuf, String> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let answer: Value = accounts
        .create_subresource(
            "token",
            &account,
            &kube::api::PostParams::default(),
            &request,
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        })?;
    let token = answer
        .pointer("/status/token")
        .and_then(Value::as_str)
        .ok_or("the TokenRequest answer has no token")?;
    let dir = pod_dir.join("serviceaccount");
    let write = |name: &str, text: &str| {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(name), text))
            .map_err(|e| format!("writing {name} for the pod: {e}"))
    };
    write("token", token)?;
    write("ca.crt", &cluster.ca_pem)?;
    write("namespace", &namespace)?;
    Ok(dir)
}
