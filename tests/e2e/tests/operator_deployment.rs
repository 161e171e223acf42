//! Deployments as the testbed runs them: a Deployment's ReplicaSet and pods, rolled to a new
//! ReplicaSet when the pod template changes, as kube-controller-manager would (the operator's
//! own Deployment, installed by the chart, is tests/chart_install.rs).

use maos_e2e::stack::{Stack, StackConfig};

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
