//! The operator installed as a cluster runs it: a Deployment of the operator image under its
//! ServiceAccount, which the testbed's controllers turn into a ReplicaSet and a pod, and the
//! kubelet starts with the in-cluster configuration a real kubelet gives (service environment,
//! the pod's bound token, CA and namespace at the standard path) — `kube::Client::try_default()`
//! finds it unchanged, elects a leader and runs a Task.

use std::time::Duration;

use maos_e2e::cluster::repo_root;
use maos_e2e::stack::{OperatorAccount, Stack, StackConfig, condition};

const DEADLINE: Duration = Duration::from_secs(120);
const OPERATOR_USER: &str = "system:serviceaccount:maos-system:maos-operator";

fn deployment(stack: &Stack) -> String {
    let redis = stack.redis_backend().urls().join(",");
    let cluster =
        (stack.redis_backend().topology() == maos_core::coord::Topology::Cluster).to_string();
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: maos-operator-leader
  namespace: maos-system
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: maos-operator-leader
  namespace: maos-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: maos-operator-leader
subjects:
  - kind: ServiceAccount
    name: maos-operator
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: maos-operator
  namespace: maos-system
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: maos-operator
  template:
    metadata:
      labels:
        app.kubernetes.io/name: maos-operator
    spec:
      serviceAccountName: maos-operator
      containers:
        - name: operator
          image: ghcr.io/maos/operator:0.1.0
          args: ["run", "--http-addr", "127.0.0.1:0", "--agent-http-addr", "127.0.0.1:0",
                 "--agent-anthropic-base-url", "{base_url}", "--log-format", "text"]
          env:
            - name: MAOS_REDIS_URLS
              value: "{redis}"
            - name: MAOS_REDIS_CLUSTER
              value: "{cluster}"
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
"#,
        base_url = stack.standin().base_url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_from_a_deployment_with_in_cluster_credentials() {
    let rbac =
        std::fs::read_to_string(repo_root().join("tests/e2e/tests/fixtures/rbac/operator.yaml"))
            .expect("the operator's RBAC fixture");
    let stack = Stack::start(
        StackConfig::new("e2e-deployment")
            .operators(0)
            .operator_account(OperatorAccount {
                namespace: "maos-system".into(),
                name: "maos-operator".into(),
                rbac_yaml: rbac,
            }),
    )
    .await
    .expect("the stack starts without an operator process");
    stack
        .cluster()
        .run_kubectl(&["apply", "-f", "-"], Some(&deployment(&stack)))
        .expect("kubectl apply the operator's Deployment");
    stack
        .cluster()
        .run_kubectl(
            &[
                "rollout",
                "status",
                "deployment/maos-operator",
                "-n",
                "maos-system",
                "--timeout=90s",
            ],
            None,
        )
        .expect("the Deployment rolls out");
    let pods = stack
        .cluster()
        .run_kubectl(
            &[
                "get",
                "pods",
                "-n",
                "maos-system",
                "-l",
                "app.kubernetes.io/name=maos-operator",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
        .expect("the operator's pods");
    let pod = pods
        .split_whitespace()
        .next()
        .expect("one operator pod")
        .to_string();
    assert!(pod.starts_with("maos-operator-"), "{pod}");

    stack
        .apply_file("examples/agentpool.yaml")
        .expect("kubectl apply the example pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the example task");
    let task = stack.wait_task_finished("hello", DEADLINE).await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded condition");
    assert_eq!(succeeded.status, "True", "{:?}", task.status);

    let holder = stack
        .cluster()
        .run_kubectl(
            &[
                "get",
                "lease",
                "maos-operator",
                "-n",
                "maos-system",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .expect("the operator's Lease");
    assert_eq!(holder.trim(), pod, "the pod leads, under its own name");
    let testbed = stack.cluster().testbed().expect("the testbed");
    assert!(
        testbed
            .auth()
            .access_log()
            .iter()
            .any(|r| r.user == OPERATOR_USER && r.allowed && r.resource == "tasks"),
        "the operator used its pod's ServiceAccount token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_to_a_new_replica_set_when_its_template_changes() {
    let stack = Stack::start(StackConfig::new("e2e-rollout").operators(0))
        .await
        .expect("the stack starts");
    let manifest = |value: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleeper
spec:
  replicas: 2
  selector:
    matchLabels: {{app: sleeper}}
  template:
    metadata:
      labels: {{app: sleeper}}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: sleep
          image: local/exec
          command: ["/bin/sh", "-c", "test -f /var/run/secrets/kubernetes.io/serviceaccount/token && exit 3; echo {value}; exec sleep 600"]
"#
        )
    };
    stack.apply(&manifest("one")).expect("apply the Deployment");
    stack
        .kubectl(
            &["rollout", "status", "deployment/sleeper", "--timeout=60s"],
            None,
        )
        .expect("the first rollout completes");
    let first = stack
        .kubectl(
            &[
                "get",
                "rs",
                "-l",
                "app=sleeper",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
        .expect("replica sets");
    assert_eq!(first.split_whitespace().count(), 1, "{first}");
    stack.apply(&manifest("two")).expect("change the template");
    stack
        .kubectl(
            &["rollout", "status", "deployment/sleeper", "--timeout=60s"],
            None,
        )
        .expect("the second rollout completes");
    let sets = stack
        .kubectl(
            &[
                "get",
                "rs",
                "-l",
                "app=sleeper",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas}{\"\\n\"}{end}",
            ],
            None,
        )
        .expect("replica sets");
    let lines: Vec<&str> = sets.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "old and new ReplicaSets: {sets}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(first.trim()) && l.ends_with("=0")),
        "the old one is scaled to 0: {sets}"
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.starts_with(first.trim()) && l.ends_with("=2")),
        "the new one has both: {sets}"
    );
    let status = stack
        .kubectl(
            &["get", "deployment", "sleeper", "-o",
              "jsonpath={.status.updatedReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.metadata.annotations}"],
            None,
        )
        .expect("the Deployment's status");
    assert!(status.starts_with("2/2/2"), "{status}");
}
