//! The process kubelet against the testbed API server, driven by kube-rs and the real kubectl:
//! pods run as processes with their env, report real status and logs, restart per policy, and
//! stop with SIGTERM on deletion.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use maos_e2e::apiserver::{Testbed, TestbedConfig};
use maos_e2e::cluster::TestCluster;
use maos_e2e::kubelet::{Kubelet, KubeletConfig, KubeletLogs};
use serde_json::json;

/// A testbed API server with a process kubelet attached.
struct Node {
    cluster: TestCluster,
    kubelet: Kubelet,
    root: PathBuf,
    client: kube::Client,
}

impl Node {
    async fn start(name: &str) -> Node {
        let root =
            std::env::temp_dir().join(format!("maos-kubelet-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let testbed = Testbed::start(TestbedConfig {
            logs: Arc::new(KubeletLogs::new(&root)),
            ..TestbedConfig::default()
        })
        .expect("testbed starts");
        let client = testbed.client().await.expect("client");
        let kubelet =
            Kubelet::start(client.clone(), KubeletConfig::new(&root)).expect("kubelet starts");
        Node {
            cluster: TestCluster::Testbed(Box::new(testbed)),
            kubelet,
            root,
            client,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_pod(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("valid pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created")
    }

    /// Polls the pod until `done` holds, for at most 30 s.
    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pod = self.pods().get_opt(name).await.expect("get pod");
            if let Some(pod) = pod.filter(|p| done(p)) {
                return pod;
            }
            assert!(Instant::now() < deadline, "pod {name} never became {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(
            self.root
                .join("default")
                .join(pod)
                .join(format!("{container}.log")),
        )
        .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn exec_pod(name: &str, script: &str, restart: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "main", "image": "local/exec", "command": ["sh", "-c", script]}]
        }
    })
}

fn container_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pod_reports_its_exit_code_and_kubectl_logs_shows_its_secret_env() {
    let node = Node::start("exit").await;
    let secrets: Api<Secret> = Api::namespaced(node.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"foo": "dmFsdWUtZnJvbS1zZWNyZXQ="}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    let mut pod = exec_pod("exits", "echo $FOO; exit 3", "Never");
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "foo"}}}]);
    node.create_pod(pod).await;

    let pod = node
        .wait_for("exits", "Failed", |p| phase(p) == "Failed")
        .await;
    let terminated = container_state(&pod)
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated state");
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));

    let logs = node
        .cluster
        .run_kubectl(&["logs", "exits"], None)
        .expect("kubectl logs");
    assert_eq!(logs, "value-from-secret\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_stops_the_process_with_sigterm_within_the_grace_period() {
    let node = Node::start("term").await;
    node.create_pod(exec_pod(
        "server",
        // The process needs a moment to shut down: only a graceful stop lets it finish.
        "trap 'echo got-sigterm; sleep 1; echo clean-exit; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
        "Always",
    ))
    .await;
    node.wait_for("server", "Running", |p| phase(p) == "Running")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log("server", "main").contains("ready") {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    node.cluster
        .run_kubectl(&["delete", "pod", "server", "--timeout=60s"], None)
        .expect("kubectl delete");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a process that exits on SIGTERM must not wait out its 30 s grace period"
    );
    assert!(
        node.pods().get_opt("server").await.expect("get").is_none(),
        "the pod is gone"
    );
    let log = node.log("server", "main");
    assert!(
        log.contains("got-sigterm"),
        "the process saw SIGTERM: {log:?}"
    );
    assert!(
        log.contains("clean-exit"),
        "the process was given time to exit cleanly: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_image_waits_in_image_pull_back_off() {
    let node = Node::start("pull").await;
    let mut pod = exec_pod("unpullable", "true", "Always");
    pod["spec"]["containers"][0]["image"] = json!("registry.example/not-mapped:1");
    node.create_pod(pod).await;
    let pod = node
        .wait_for("unpullable", "ImagePullBackOff", |p| {
            container_state(p)
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("ImagePullBackOff")
        })
        .await;
    assert_eq!(phase(&pod), "Pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_restarted_under_restart_policy_always() {
    let node = Node::start("restart").await;
    node.create_pod(exec_pod(
        "worker",
        "echo up; while :; do sleep 0.1; done",
        "Always",
    ))
    .await;
    node.wait_for("worker", "Running", |p| phase(p) == "Running")
        .await;
    let first_pid = node
        .kubelet
        .pid("default", "worker", None)
        .expect("the process runs");

    assert_eq!(node.kubelet.kill_pod_processes("default", "worker"), 1);

    let pod = node
        .wait_for("worker", "restarted", |p| {
            let status = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first());
            status.is_some_and(|c| {
                c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
        .await;
    let last = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .expect("last state");
    assert_eq!(last.exit_code, 137);
    assert_eq!(last.signal, Some(9));
    let second_pid = node
        .kubelet
        .pid("default", "worker", None)
        .expect("runs again");
    assert_ne!(first_pid, second_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_holds_the_container_until_the_secret_appears() {
    let node = Node::start("config").await;
    let mut pod = exec_pod("waits", "echo $TOKEN", "Never");
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]);
    node.create_pod(pod).await;
    let pod = node
        .wait_for("waits", "CreateContainerConfigError", |p| {
            container_state(p)
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CreateContainerConfigError")
        })
        .await;
    let message = container_state(&pod)
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(message.contains("\"late\" not found"), "{message}");

    let secrets: Api<Secret> = Api::namespaced(node.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"}, "data": {"token": "dG9rZW4tMQ=="}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    node.wait_for("waits", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(node.log("waits", "main"), "token-1\n");
}

/// A burst of short-lived pods: the watch delivers each pod's `Pending` and `Running` status
/// events while the kubelet is busy with the others, often after the pod's worker has already
/// published `Succeeded`. Such a stale event must not start the pod again: that re-ran
/// `restartPolicy: Never` containers and wiped the log of a pod already reported `Succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_pods_never_run_again_and_keep_their_logs() {
    let node = Node::start("burst").await;
    // Outside the pods' own directories, which a (wrongly) restarted pod would wipe.
    let runs = node.root.join("runs");
    std::fs::create_dir_all(&runs).expect("runs dir");
    let names: Vec<String> = (0..40).map(|i| format!("burst-{i}")).collect();
    for name in &names {
        let script = format!("echo run >> {}/{name}; echo out-{name}", runs.display());
        node.create_pod(exec_pod(name, &script, "Never")).await;
    }

    let mut wrong = Vec::new();
    for name in &names {
        node.wait_for(name, "Succeeded", |p| phase(p) == "Succeeded")
            .await;
        // Complete as soon as the pod says so, as `kubectl logs` expects.
        let log = node.log(name, "main");
        if log != format!("out-{name}\n") {
            wrong.push(format!("{name}: log {log:?}"));
        }
    }

    // Deleting the finished pods lets them go (the kubelet still knows them until then).
    let pods = node.pods();
    for name in &names {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("pod deleted");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the finished pods were never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for name in &names {
        let count = std::fs::read_to_string(runs.join(name)).unwrap_or_default();
        if count != "run\n" {
            wrong.push(format!("{name}: ran {} times", count.lines().count()));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Volumes as a kubelet mounts them: a ConfigMap's chosen keys at their paths and modes behind
/// the kubelet's `..data` symlink, read-only; a Secret's data; one key by `subPath`; an
/// `emptyDir` two containers share. A missing ConfigMap holds the pod in `ContainerCreating`,
/// naming the volume, until it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_mount_config_maps_secrets_and_empty_dirs_as_a_kubelet_does() {
    let node = Node::start("volumes").await;
    let at = |p: &str| node.root.join("mounted").join(p).display().to_string();
    let script = format!(
        "set -e
         show() {{ echo \"$(cat \"$1\")\"; }}
         show {conf}/greeting
         stat -c %a {conf}/..data/greeting
         test -L {conf}/greeting
         test ! -e {conf}/ignored
         show {secret}/password
         show {one}
         if (echo x > {conf}/new) 2>/dev/null; then echo conf-writable; else echo conf-read-only; fi
         until test -f {scratch}/from-sidecar; do sleep 0.05; done
         show {scratch}/from-sidecar",
        conf = at("conf"),
        secret = at("secret"),
        one = at("one.txt"),
        scratch = at("scratch"),
    );
    let mut pod = exec_pod("mounts", &script, "Never");
    pod["spec"]["volumes"] = json!([
        {"name": "conf", "configMap": {"name": "late-config", "defaultMode": 0o644,
            "items": [{"key": "hello", "path": "greeting", "mode": 0o600}]}},
        {"name": "whole", "configMap": {"name": "late-config"}},
        {"name": "secret", "secret": {"secretName": "vol-secret"}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "conf", "mountPath": at("conf"), "readOnly": true},
        {"name": "secret", "mountPath": at("secret"), "readOnly": true},
        {"name": "whole", "mountPath": at("one.txt"), "subPath": "one.txt"},
        {"name": "scratch", "mountPath": at("scratch")},
    ]);
    pod["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({
            "name": "sidecar", "image": "local/exec",
            "command": ["sh", "-c", format!("echo shared > {}/from-sidecar", at("scratch-side"))],
            "volumeMounts": [{"name": "scratch", "mountPath": at("scratch-side")}],
        }));
    let secrets: Api<Secret> = Api::namespaced(node.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vol-secret"},
        "data": {"password": "czNjcjN0"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");
    node.create_pod(pod).await;

    let pod = node
        .wait_for("mounts", "ContainerCreating", |p| {
            container_state(p)
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("ContainerCreating")
        })
        .await;
    let message = container_state(&pod)
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("volume \"conf\"")
            && message.contains("configmap \"late-config\" not found"),
        "{message}"
    );

    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(node.client.clone(), "default");
    let map = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late-config"},
        "data": {"hello": "hi from the map", "ignored": "not projected", "one.txt": "just one"}
    }))
    .expect("config map");
    maps.create(&PostParams::default(), &map)
        .await
        .expect("config map created");
    let pod = node
        .wait_for("mounts", "finished", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
    assert_eq!(
        node.log("mounts", "main"),
        "hi from the map\n600\ns3cr3t\njust one\nconf-read-only\nshared\n",
        "{:?}",
        pod.status
    );
    assert_eq!(phase(&pod), "Succeeded");
}
