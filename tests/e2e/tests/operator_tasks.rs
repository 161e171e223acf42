//! Tasks end to end on the whole stack (operator, agent pods, Redis Cluster, Claude stand-in),
//! driven with the real kubectl: a Task completes with its result, a planned Task runs its
//! subtasks in parallel and synthesizes, and a manual DAG runs in dependency order.

use std::time::Duration;

use maos_core::api::v1alpha1::{SubtaskPhase, Task};
use maos_e2e::claude_standin::PlanShape;
use maos_e2e::stack::{Stack, StackConfig, condition, has_condition, pool_manifest, subtask};

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(120);

fn succeeded(task: &Task) -> bool {
    has_condition(task, "Succeeded", "True", Some("Completed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_task_completes_with_its_result_in_status_and_the_configmap() {
    let stack = Stack::start(StackConfig::new("e2e-hello"))
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
            condition(t, "Succeeded").is_some_and(|c| c.status != "Unknown")
        })
        .await;
    assert!(
        succeeded(&task),
        "the Task did not succeed: {:?}",
        task.status
    );
    let status = task.status.as_ref().expect("status");
    let result = status.result.as_deref().expect("status.result");
    assert!(
        result.contains("Stand-in answer to:"),
        "status.result is the agent's answer: {result}"
    );
    let greet = subtask(&task, "greet").expect("the greet subtask is in status");
    assert_eq!(greet.phase, SubtaskPhase::Succeeded);
    assert_eq!(status.progress.as_deref(), Some("1/1"));

    let from_config_map = stack
        .kubectl(
            &[
                "get",
                "configmap",
                "hello-result",
                "-o",
                "jsonpath={.data.result}",
            ],
            None,
        )
        .expect("kubectl get the result ConfigMap");
    assert_eq!(from_config_map.trim(), result.trim());
    let columns = stack
        .kubectl(&["get", "mtask", "hello"], None)
        .expect("kubectl get mtask");
    assert!(columns.contains("Succeeded"), "{columns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_task_runs_five_subtasks_in_parallel_then_synthesizes() {
    let stack = Stack::start(
        StackConfig::new("e2e-planned")
            .plan(5, PlanShape::Parallel)
            // Calls that take a while, so parallel subtasks visibly overlap.
            .claude_latency(Duration::from_millis(300)),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("research", 5, 5))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: survey
spec:
  prompt: Compare five open-source vector databases.
  poolRef: {name: research}
  maxSubtasks: 8
  parallelism: 5
  synthesize: true
",
        )
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("survey", "finished", TASK_DEADLINE, |t| {
            condition(t, "Succeeded").is_some_and(|c| c.status != "Unknown")
        })
        .await;
    assert!(
        succeeded(&task),
        "the Task did not succeed: {:?}",
        task.status
    );
    let status = task.status.as_ref().expect("status");
    let names: Vec<&str> = status.subtasks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "plan",
            "part-1",
            "part-2",
            "part-3",
            "part-4",
            "part-5",
            "synthesize"
        ],
        "status.subtasks: the planner, its 5 subtasks, the synthesizer"
    );
    assert!(
        status
            .subtasks
            .iter()
            .all(|s| s.phase == SubtaskPhase::Succeeded),
        "{:?}",
        status.subtasks
    );
    let synthesize = subtask(&task, "synthesize").expect("synthesize entry");
    assert_eq!(synthesize.depends_on.len(), 5, "{synthesize:?}");
    assert_eq!(
        status.progress.as_deref(),
        Some("5/5"),
        "progress counts the goal's subtasks, not the planner or the synthesizer"
    );
    let usage = status.usage.as_ref().expect("status.usage");
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "usage counts tokens: {usage:?}"
    );
    assert!(
        status.result.as_deref().is_some_and(|r| !r.is_empty()),
        "the synthesizer's answer is the result"
    );

    assert_eq!(
        stack
            .agent_pods("research")
            .expect("kubectl get pods")
            .len(),
        5,
        "the pool runs its 5 agents"
    );
    // Parallel: some two parts ran at the same time, or on different agents.
    let parts: Vec<_> = status
        .subtasks
        .iter()
        .filter(|s| s.name.starts_with("part-"))
        .collect();
    let overlapped = parts.iter().any(|a| {
        parts.iter().any(|b| {
            a.name != b.name
                && match (&a.started_at, &a.finished_at, &b.started_at) {
                    (Some(a_start), Some(a_end), Some(b_start)) => {
                        a_start.0 <= b_start.0 && b_start.0 < a_end.0
                    }
                    _ => false,
                }
        })
    });
    let agents: std::collections::BTreeSet<_> =
        parts.iter().filter_map(|s| s.agent.as_deref()).collect();
    assert!(
        overlapped || agents.len() > 1,
        "the parts ran one after another on one agent: {parts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_diamond_dag_runs_in_dependency_order() {
    let stack = Stack::start(StackConfig::new("e2e-diamond"))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 3, 3))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: diamond
spec:
  prompt: Write a short report.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: a, prompt: Gather the facts.}
  - {name: b, prompt: Analyse the first half., dependsOn: [a]}
  - {name: c, prompt: Analyse the second half., dependsOn: [a]}
  - {name: d, prompt: Assemble the report., dependsOn: [b, c]}
",
        )
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("diamond", "finished", TASK_DEADLINE, |t| {
            condition(t, "Succeeded").is_some_and(|c| c.status != "Unknown")
        })
        .await;
    assert!(
        succeeded(&task),
        "the Task did not succeed: {:?}",
        task.status
    );

    // The stand-in's log: each subtask's model calls, in arrival order.
    let calls = |prompt: &str| stack.model_requests_mentioning(prompt);
    let first_call = |prompt: &str| {
        calls(prompt)
            .first()
            .map(|r| r.at)
            .unwrap_or_else(|| panic!("no model call for {prompt}"))
    };
    let last_answer = |prompt: &str| {
        calls(prompt)
            .iter()
            .filter_map(|r| r.answered_at)
            .max()
            .unwrap_or_else(|| panic!("no model answer for {prompt}"))
    };
    let (a, b, c, d) = (
        "Gather the facts.",
        "Analyse the first half.",
        "Analyse the second half.",
        "Assemble the report.",
    );
    assert!(
        first_call(b) > last_answer(a),
        "b started before a finished"
    );
    assert!(
        first_call(c) > last_answer(a),
        "c started before a finished"
    );
    assert!(
        first_call(d) > last_answer(b) && first_call(d) > last_answer(c),
        "d started before b and c finished"
    );
    // The same order in status.
    let entry = |name: &str| subtask(&task, name).expect("subtask entry").clone();
    let started = |name: &str| entry(name).started_at.expect("startedAt").0;
    let finished = |name: &str| entry(name).finished_at.expect("finishedAt").0;
    assert!(started("d") >= finished("b") && started("d") >= finished("c"));
    assert!(started("b") >= finished("a") && started("c") >= finished("a"));
}
