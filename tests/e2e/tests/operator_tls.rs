//! The whole stack over TLS: Redis speaks only `rediss://` (certificates generated for the
//! run), the operator verifies it with `--redis-ca-file`, and the agent pods it starts get the
//! same CA in their environment, so a Task runs end to end with nothing in plain text.

use std::time::Duration;

use maos_e2e::stack::{Stack, StackConfig, condition, has_condition};

const TASK_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_with_the_operator_and_agents_on_tls_only_redis() {
    let stack = Stack::start(StackConfig::new("e2e-tls").tls_redis())
        .await
        .expect("the stack starts");
    let ca = std::fs::read_to_string(&stack.redis_backend().tls_files().expect("a TLS backend").ca)
        .expect("the CA file");
    assert!(
        stack
            .redis_backend()
            .urls()
            .iter()
            .all(|u| u.starts_with("rediss://")),
        "{:?}",
        stack.redis_backend().urls()
    );
    stack
        .apply_file("examples/agentpool.yaml")
        .expect("kubectl apply the example pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the example task");

    let task = stack
        .wait_task("hello", "Succeeded=True", TASK_DEADLINE, |t| {
            condition(t, "Succeeded").is_some_and(|c| c.status != "Unknown")
        })
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "the Task did not succeed over TLS: {:?}\n{}",
        task.status,
        stack.diagnostics()
    );

    // The agents got the operator's CA, not a file of their own.
    let pods = stack.agent_pods("default").expect("the pool's pods");
    let pod = pods.first().expect("an agent pod");
    let given = stack
        .kubectl(
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.spec.containers[0].env[?(@.name==\"MAOS_REDIS_CA_PEM\")].value}",
            ],
            None,
        )
        .expect("kubectl get the agent pod");
    assert_eq!(given.trim(), ca.trim());
}
