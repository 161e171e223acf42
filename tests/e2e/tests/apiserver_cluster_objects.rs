//! What every cluster has and an install relies on, through the real kubectl and kube-rs: the
//! `kubernetes` Service and its Endpoints in `default`, `kube-root-ca.crt` in every namespace,
//! Services with allocated cluster IPs, and evictions that respect PodDisruptionBudgets.

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use maos_e2e::cluster::TestCluster;
use serde_json::{Value, json};

const NS: &str = "objects";

fn get_json(cluster: &TestCluster, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    let out = cluster.run_kubectl(&all, None).expect("kubectl get");
    serde_json::from_str(&out).expect("JSON")
}

fn kubeconfig_field(cluster: &TestCluster, path: &str) -> String {
    cluster
        .run_kubectl(
            &[
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
            ],
            None,
        )
        .expect("kubectl config view")
}

#[test]
fn default_has_the_kubernetes_service_and_every_namespace_the_root_ca() {
    let cluster = TestCluster::start().expect("the testbed starts");
    let server = kubeconfig_field(&cluster, "server");
    let port: i64 = server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the server URL has a port");

    let service = get_json(&cluster, &["service", "kubernetes", "-n", "default"]);
    assert_eq!(service["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["name"], "https");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["metadata"]["labels"]["component"], "apiserver");
    let endpoints = get_json(&cluster, &["endpoints", "kubernetes", "-n", "default"]);
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"], port,
        "the Endpoints say where the API server listens"
    );

    let ca = base64::engine::general_purpose::STANDARD
        .decode(kubeconfig_field(&cluster, "certificate-authority-data"))
        .expect("base64 CA");
    let ca = String::from_utf8(ca).expect("PEM");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("namespace");
    for namespace in ["default", "kube-system", NS] {
        let root = get_json(
            &cluster,
            &["configmap", "kube-root-ca.crt", "-n", namespace],
        );
        assert_eq!(
            root["data"]["ca.crt"].as_str(),
            Some(ca.as_str()),
            "{namespace}'s kube-root-ca.crt holds the CA the kubeconfig trusts"
        );
    }
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: objects
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

#[test]
fn a_service_gets_a_cluster_ip_that_it_keeps() {
    let cluster = TestCluster::start().expect("the testbed starts");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("namespace");
    cluster
        .run_kubectl(&["apply", "-f", "-"], Some(SERVICE))
        .expect("apply a Service");
    let web = get_json(&cluster, &["service", "web", "-n", NS]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(
        ip.starts_with("10."),
        "a cluster IP from the service range: {web}"
    );
    assert_ne!(ip, "10.96.0.1", "not the kubernetes Service's");
    assert_eq!(web["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(web["spec"]["sessionAffinity"], "None");

    cluster
        .run_kubectl(
            &["apply", "-f", "-"],
            Some(&SERVICE.replace("port: 80", "port: 81")),
        )
        .expect("re-apply with another port");
    let again = get_json(&cluster, &["service", "web", "-n", NS]);
    assert_eq!(
        again["spec"]["clusterIP"],
        ip.as_str(),
        "the address is kept"
    );
    assert_eq!(again["spec"]["ports"][0]["port"], 81);

    let moved = cluster
        .run_kubectl(
            &["apply", "-f", "-"],
            Some(&SERVICE.replace("spec:\n", "spec:\n  clusterIP: 10.96.0.250\n")),
        )
        .expect_err("a cluster IP never changes");
    assert!(
        moved.stderr().contains("may not change once set"),
        "{}",
        moved.stderr()
    );
    let taken = cluster
        .run_kubectl(
            &["apply", "-f", "-"],
            Some(
                &SERVICE
                    .replace("name: web", "name: other")
                    .replace("spec:\n", &format!("spec:\n  clusterIP: {ip}\n")),
            ),
        )
        .expect_err("an address in use is refused");
    assert!(
        taken.stderr().contains("provided IP is already allocated"),
        "{}",
        taken.stderr()
    );
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }))
    .expect("a pod")
}

/// Marks a pod Ready, as its kubelet would.
async fn make_ready(pods: &Api<Pod>, name: &str) {
    let status = json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
}

async fn budget_when(
    budgets: &Api<PodDisruptionBudget>,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let budget = serde_json::to_value(budgets.get("web").await.expect("budget")).expect("json");
        if done(&budget["status"]) {
            return budget;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never showed {what}: {budget}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_deletes_a_pod_only_while_its_disruption_budget_allows() {
    let cluster = TestCluster::start().expect("the testbed starts");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("namespace");
    // kube-rs retries a 429 (up to 15 times, backing off) unless told not to; this test wants
    // to see the refusal itself.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("a client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for name in ["a", "b", "loner"] {
        let mut p = pod(name);
        if name == "loner" {
            p.metadata.labels = None;
        }
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
        make_ready(&pods, name).await;
    }
    cluster
        .run_kubectl(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: objects\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n",
            ),
        )
        .expect("apply a budget");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    let budget = budget_when(&budgets, "one disruption allowed", |s| {
        s["disruptionsAllowed"] == 1
    })
    .await;
    assert_eq!(budget["status"]["currentHealthy"], 2);
    assert_eq!(budget["status"]["desiredHealthy"], 1);
    assert_eq!(budget["status"]["expectedPods"], 2);
    assert_eq!(
        budget["status"]["conditions"][0]["reason"],
        "SufficientPods"
    );

    pods.evict("a", &EvictParams::default())
        .await
        .expect("the budget allows one eviction");
    assert!(
        pods.get_opt("a").await.expect("get").is_none(),
        "the evicted pod is deleted"
    );
    budget_when(&budgets, "no disruption allowed", |s| {
        s["disruptionsAllowed"] == 0 && s["currentHealthy"] == 1
    })
    .await;

    let refused = match pods.evict("b", &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused.code, 429);
    assert_eq!(refused.reason, "TooManyRequests");
    assert_eq!(
        refused.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = refused
        .details
        .as_ref()
        .and_then(|d| d.causes.first())
        .expect("a cause");
    assert_eq!(cause.reason, "DisruptionBudget");
    assert_eq!(
        cause.message,
        "The disruption budget web needs 1 healthy pods and has 1 currently"
    );
    assert!(
        pods.get_opt("b").await.expect("get").is_some(),
        "a refused eviction deletes nothing"
    );

    pods.evict("loner", &EvictParams::default())
        .await
        .expect("a pod no budget selects is evicted");
    assert!(pods.get_opt("loner").await.expect("get").is_none());
}
