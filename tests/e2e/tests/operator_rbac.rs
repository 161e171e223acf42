//! The operator running as the chart's ServiceAccount under the chart's RBAC, as in a cluster
//! (every stack on the testbed does; these tests look at what that means): with the rights its
//! ClusterRole grants a Task completes and nothing is refused; with one verb missing the
//! refusal shows in the operator's log and in the pool's condition, naming the verb, the
//! resource and the namespace.

use std::time::Duration;

use maos_core::api::v1alpha1::AgentPool;
use maos_e2e::stack::{OperatorAccount, Stack, StackConfig, condition, pool_manifest};

const DEADLINE: Duration = Duration::from_secs(120);
const OPERATOR_USER: &str = "system:serviceaccount:maos-system:maos";

fn chart() -> OperatorAccount {
    OperatorAccount::chart().expect("manifests/base has the chart's RBAC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_completes_with_the_operator_running_as_its_service_account() {
    let stack = Stack::start(StackConfig::new("e2e-rbac-ok").operator_account(chart()))
        .await
        .expect("the stack starts with the operator as a ServiceAccount");
    stack
        .apply_file("examples/agentpool.yaml")
        .expect("kubectl apply the example pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the example task");
    let task = stack.wait_task_finished("hello", DEADLINE).await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded condition");
    assert_eq!(succeeded.status, "True", "{:?}", task.status);

    let testbed = stack.cluster().testbed().expect("runs on the testbed");
    let log = testbed.auth().access_log();
    let operator: Vec<_> = log.iter().filter(|r| r.user == OPERATOR_USER).collect();
    assert!(
        operator.iter().any(|r| r.allowed
            && r.verb == "patch"
            && r.resource == "tasks"
            && r.subresource == "status"),
        "the operator's requests were authorized as its ServiceAccount: {operator:#?}"
    );
    let refused: Vec<_> = operator.iter().filter(|r| !r.allowed).collect();
    assert!(
        refused.is_empty(),
        "the ClusterRole grants everything the operator does: {refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_on_pods_the_pool_is_degraded_with_the_forbidden_message() {
    let mut lacking = chart();
    let granted = lacking.rbac_yaml.clone();
    // The pods rule's verbs, without create.
    let pods_rule = "resources: [\"pods\"]\n    verbs: [";
    let start = granted.find(pods_rule).expect("the chart has a pods rule") + pods_rule.len();
    let end = start + granted[start..].find(']').expect("the verbs end");
    let verbs: Vec<&str> = granted[start..end]
        .split(", ")
        .filter(|v| *v != "\"create\"")
        .collect();
    lacking.rbac_yaml = format!(
        "{}{}{}",
        &granted[..start],
        verbs.join(", "),
        &granted[end..]
    );
    assert_ne!(
        lacking.rbac_yaml, granted,
        "the chart grants create on pods"
    );
    // Not the chart's RBAC any more: what it does is no evidence for the minimality check.
    lacking.record_usage = false;
    let namespace = "e2e-rbac-pods";
    let mut stack = Stack::start(StackConfig::new(namespace).operator_account(lacking))
        .await
        .expect("the stack starts with the operator as a ServiceAccount");
    stack
        .apply(&pool_manifest("research", 1, 1))
        .expect("kubectl apply a pool");
    let pools: kube::Api<AgentPool> = kube::Api::namespaced(stack.client(), namespace);
    let expected = format!(
        "pods is forbidden: User \"{OPERATOR_USER}\" cannot create resource \"pods\" in API group \"\" in the namespace \"{namespace}\""
    );
    let degraded = stack
        .wait_until("the pool says it cannot create pods", DEADLINE, || {
            let pools = pools.clone();
            async move {
                let pool = pools.get("research").await.ok()?;
                let degraded = pool
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded" && c.status == "True")?;
                (degraded.reason == "FailedCreate").then_some(degraded)
            }
        })
        .await;
    assert!(
        degraded.message.contains(&expected),
        "the condition carries the API server's answer: {}",
        degraded.message
    );
    let events = stack
        .events_for("AgentPool", "research")
        .await
        .expect("the pool's Events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedCreate")
                && e.message.as_deref().is_some_and(|n| n.contains(&expected))),
        "a FailedCreate Event says why: {events:#?}"
    );
    let log = stack.operator(0).log();
    let line = log
        .lines()
        .find(|l| l.contains(&expected))
        .unwrap_or_else(|| panic!("the operator logs the refusal:\n{log}"));
    // In the reconcile's span: which controller, which object, and an id for the pass.
    for field in [
        "reconcile{",
        "controller=\"pool\"",
        "object=\"research\"",
        "generation=1",
        "reconcile_id=",
    ] {
        assert!(line.contains(field), "no {field} in the log line: {line}");
    }
    let testbed = stack.cluster().testbed().expect("runs on the testbed");
    assert!(
        testbed
            .auth()
            .access_log()
            .iter()
            .any(|r| r.user == OPERATOR_USER
                && !r.allowed
                && r.verb == "create"
                && r.resource == "pods"
                && r.namespace == namespace),
        "the testbed recorded the refusal"
    );
}
