//! A deleted Task whose Redis does not answer: after the cleanup timeout it is let go (its
//! finalizer does not hold it, and its namespace, until Redis returns), what it left is written
//! down in the operator's orphans ConfigMap with a Warning Event, and once Redis answers again
//! the sweep removes its keys and the entry.

use std::time::Duration;

use maos_e2e::stack::{
    CHART_NAMESPACE, CHART_RELEASE, RedisBackend, Stack, StackConfig, condition,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const TASK_DEADLINE: Duration = Duration::from_secs(120);

fn signal_redis(stack: &Stack, signal: Signal) {
    let RedisBackend::Standalone(server) = stack.redis_backend() else {
        panic!("the test runs a standalone Redis");
    };
    let pid = server.pid().expect("redis-server runs");
    kill(Pid::from_raw(i32::try_from(pid).expect("pid")), signal).expect("signal redis-server");
}

fn orphans(stack: &Stack) -> String {
    stack
        .kubectl(
            &[
                "-n",
                CHART_NAMESPACE,
                "get",
                "configmap",
                &format!("{CHART_RELEASE}-orphans"),
                "-o",
                "jsonpath={.data}",
                "--ignore-not-found",
            ],
            None,
        )
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_deleted_while_redis_is_frozen_goes_after_the_timeout_and_its_keys_are_swept() {
    let stack = Stack::start(
        StackConfig::new("e2e-orphans")
            .standalone_redis()
            .operator_arg("--cleanup-timeout-seconds")
            .operator_arg("2"),
    )
    .await
    .expect("the stack starts");
    stack
        .apply_file("examples/agentpool.yaml")
        .expect("kubectl apply the example pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the example task");
    let task = stack
        .wait_task("hello", "Succeeded=True", TASK_DEADLINE, |t| {
            condition(t, "Succeeded").is_some_and(|c| c.status == "True")
        })
        .await;
    let uid = task.metadata.uid.clone().expect("uid");
    let pattern = format!("*{{task:{uid}}}*");
    assert!(
        !stack
            .keys_matching(&pattern)
            .await
            .expect("scan")
            .is_empty(),
        "the finished Task has keys to remove"
    );

    // Redis stops answering (its process stopped, connections open): the cleanup cannot run.
    signal_redis(&stack, Signal::SIGSTOP);
    stack
        .kubectl(&["delete", "mtask", "hello", "--wait=false"], None)
        .expect("kubectl delete the task");
    stack
        .wait_until("the Task let go", TASK_DEADLINE, || async {
            stack.task_opt("hello").await.ok()?.is_none().then_some(())
        })
        .await;
    let written = orphans(&stack);
    assert!(
        written.contains(&format!("task.{uid}")) && written.contains("\"pool"),
        "the orphans ConfigMap names the Task and its pool: {written}"
    );
    let events = stack.events_for("Task", "hello").await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CleanupAbandoned")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref().is_some_and(|n| n.contains("let go"))),
        "a Warning Event says the Task was let go: {events:#?}"
    );

    // Redis answers again, with the keys it had: the sweep removes them and the entry.
    signal_redis(&stack, Signal::SIGCONT);
    stack
        .wait_until("the orphaned keys swept", TASK_DEADLINE, || async {
            let keys = stack.keys_matching(&pattern).await.ok()?;
            (keys.is_empty() && !orphans(&stack).contains(&uid)).then_some(())
        })
        .await;
}
