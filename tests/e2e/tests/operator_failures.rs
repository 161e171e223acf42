//! How Tasks fail, end to end: a subtask retried per its retryStrategy, a subtask that keeps
//! failing, the active deadline, a subtask deadline that passes mid-call, the token and cost
//! budgets, and specs only the operator can reject.
//! Faults come from `[[fault:…]]` markers in subtask prompts, which the Claude stand-in honours
//! for the first calls of that subtask's conversation.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use maos_core::api::v1alpha1::{SubtaskPhase, Task};
use maos_e2e::stack::{
    Stack, StackConfig, condition, conversation_text, has_condition, pool_manifest, subtask,
};

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(120);

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

/// A stack with one pool `default` of `agents` agents.
/// The Task's `Succeeded` condition, asserted to be False with `reason`.
fn failed_with(task: &Task, reason: &str) -> Condition {
    let succeeded = condition(task, "Succeeded")
        .expect("Succeeded condition")
        .clone();
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", reason),
        "{succeeded:?}"
    );
    succeeded
}

async fn stack_with_pool(namespace: &str, agents: u32) -> Stack {
    let stack = Stack::start(StackConfig::new(namespace))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", agents, agents))
        .expect("kubectl apply the pool");
    stack
}

/// A Task on pool `default` with a manual DAG (`subtasks` is the YAML list) and `extra` spec
/// lines.
fn task_manifest(name: &str, extra: &str, subtasks: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: {name}
spec:
  prompt: Write a short report.
  poolRef: {{name: default}}
  synthesize: false
{extra}  subtasks:
{subtasks}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtask_failing_twice_then_succeeding_is_retried_to_success_in_three_attempts() {
    let stack = stack_with_pool("e2e-retry", 1).await;
    stack
        .apply(&task_manifest(
            "flaky",
            "  retryStrategy: {limit: 2, backoff: {durationSeconds: 1, factor: 1}}\n",
            "  - {name: shaky, prompt: 'Fetch the figures. [[fault:malformed*2]]'}\n",
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("flaky", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
    let shaky = subtask(&task, "shaky").expect("status entry");
    assert_eq!(shaky.phase, SubtaskPhase::Succeeded);
    assert_eq!(shaky.attempts, Some(3), "{shaky:?}");
    // Two attempts got unreadable answers; each retry started a fresh conversation that says
    // why the one before failed, and none was refused (no replayed turn, no two of one role).
    let requests = stack.model_requests_mentioning("Fetch the figures.");
    assert!(
        requests.iter().all(|r| r.status == 200),
        "{:?}",
        requests.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let told: Vec<bool> = requests
        .iter()
        .map(|r| conversation_text(r).contains("# The previous attempt failed\nModelError"))
        .collect();
    assert_eq!(
        told.first(),
        Some(&false),
        "the first attempt has nothing to be told"
    );
    assert_eq!(
        told.iter().filter(|t| !**t).count(),
        1,
        "every later call is a retry told why: {told:?}"
    );
    assert!(told.len() >= 3, "attempt 3 worked the subtask: {told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtask_failing_past_its_retries_fails_the_task_naming_the_subtask() {
    let stack = stack_with_pool("e2e-exhausted", 2).await;
    stack
        .apply(&task_manifest(
            "doomed",
            "  retryStrategy: {limit: 1, backoff: {durationSeconds: 0}}\n",
            "  - {name: broken-step, prompt: 'Query the archive. [[fault:malformed*5]]'}
  - {name: after-broken, prompt: Summarise the archive., dependsOn: [broken-step]}
",
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("doomed", "finished", TASK_DEADLINE, finished)
        .await;
    let succeeded = failed_with(&task, "SubtaskFailed");
    assert!(
        succeeded.message.contains("broken-step"),
        "the message names the subtask: {}",
        succeeded.message
    );
    let broken = subtask(&task, "broken-step").expect("status entry");
    assert_eq!(broken.phase, SubtaskPhase::Failed);
    assert_eq!(broken.attempts, Some(2), "1 retry after the first attempt");
    let after = subtask(&task, "after-broken").expect("status entry");
    assert_eq!(after.phase, SubtaskPhase::Cancelled, "{after:?}");
    assert!(after.started_at.is_none(), "the dependent never started");
    assert!(
        stack
            .model_requests_mentioning("Summarise the archive.")
            .is_empty(),
        "no agent worked on the dependent subtask"
    );
    assert_eq!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(maos_core::api::v1alpha1::TaskPhase::Failed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_running_past_its_active_deadline_fails_with_deadline_exceeded() {
    let stack = stack_with_pool("e2e-deadline", 1).await;
    stack
        .apply(&task_manifest(
            "late",
            "  activeDeadlineSeconds: 10\n",
            "  - {name: stuck, prompt: 'Wait for the slow source. [[fault:slow*5]]'}\n",
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("late", "finished", Duration::from_secs(60), finished)
        .await;
    failed_with(&task, "DeadlineExceeded");
    let stuck = subtask(&task, "stuck").expect("status entry");
    assert_eq!(stuck.phase, SubtaskPhase::Cancelled, "{stuck:?}");
    // It ended at the deadline, not after the hung model call (30 s) came back.
    let status = task.status.as_ref().expect("status");
    let (created, completed) = (
        task.metadata
            .creation_timestamp
            .as_ref()
            .expect("creationTimestamp")
            .0,
        status.completed_at.as_ref().expect("completedAt").0,
    );
    let took = completed.duration_since(created).as_secs_f64();
    assert!(
        (10.0..28.0).contains(&took),
        "finished {took:.1} s after creation; the deadline was 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_over_its_token_budget_fails_with_budget_exceeded() {
    let stack = stack_with_pool("e2e-budget", 1).await;
    stack
        .apply(&task_manifest(
            "thrifty",
            "  budget: {maxTokens: 2000}\n",
            "  - {name: expensive, prompt: Write a long essay.}\n",
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("thrifty", "finished", TASK_DEADLINE, finished)
        .await;
    failed_with(&task, "BudgetExceeded");
    let expensive = subtask(&task, "expensive").expect("status entry");
    assert_ne!(expensive.phase, SubtaskPhase::Succeeded, "{expensive:?}");
    assert!(
        task.status
            .as_ref()
            .and_then(|s| s.result.as_ref())
            .is_none(),
        "no result"
    );
    // Enforced before the call: a call reserves its max_tokens (4096) first, which a budget of
    // 2000 cannot cover, so the model was never called.
    assert!(
        stack.standin().requests().is_empty(),
        "{} model calls were made past the budget",
        stack.standin().requests().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtask_whose_deadline_passes_mid_call_fails_with_deadline_exceeded_and_drops_the_call() {
    let stack = stack_with_pool("e2e-subtask-deadline", 1).await;
    // The stand-in hangs 30 s on the first call; the subtask may take 10 s.
    stack
        .apply(&task_manifest(
            "overdue",
            "  subtaskTimeoutSeconds: 10
  retryStrategy: {limit: 0}
",
            "  - {name: stalled, prompt: 'Query the slow archive. [[fault:slow]]'}
",
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("overdue", "finished", Duration::from_secs(60), finished)
        .await;
    let succeeded = failed_with(&task, "SubtaskFailed");
    let stalled = subtask(&task, "stalled").expect("status entry");
    assert_eq!(stalled.phase, SubtaskPhase::Failed, "{stalled:?}");
    let message = stalled.message.clone().unwrap_or_default();
    // The agent's own account (the operator's timeout, 30 s later, would say otherwise).
    assert!(
        message.starts_with("DeadlineExceeded") && message.contains("during a model call"),
        "{message} / {}",
        succeeded.message
    );
    // The hung call was given up by the client, never answered: the 30 s hang had not ended.
    let calls = stack.model_requests_mentioning("Query the slow archive.");
    assert_eq!(calls.len(), 1, "no retry of the dropped call");
    assert_eq!(
        calls[0].status, 0,
        "the hang never answered: {:?}",
        calls[0]
    );
    let abandoned = calls[0]
        .abandoned_at
        .expect("the agent closed the connection");
    eprintln!(
        "subtask deadline: call dropped {:?} after it was sent",
        abandoned.duration_since(calls[0].at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_with_only_a_cost_budget_stops_with_budget_exceeded_within_the_calls_in_flight() {
    let stack = stack_with_pool("e2e-cost-budget", 1).await;
    let limit = 0.12;
    let subtasks: String = (1..=10)
        .map(|i| format!("  - {{name: part-{i}, prompt: Write section {i} of the survey.}}\n"))
        .collect();
    stack
        .apply(&task_manifest(
            "priced",
            &format!("  budget: {{maxCostUSD: \"{limit}\"}}\n  parallelism: 1\n"),
            &subtasks,
        ))
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("priced", "finished", TASK_DEADLINE, finished)
        .await;
    let succeeded = failed_with(&task, "BudgetExceeded");
    // Refused at the reservation, before a call was made, not noticed after the spending.
    assert!(
        succeeded
            .message
            .contains("could not reserve its next model call: the task's cost budget is spent"),
        "{}",
        succeeded.message
    );
    let status = task.status.as_ref().expect("status");
    let cost: f64 = status
        .usage
        .as_ref()
        .and_then(|u| u.cost_usd.as_deref())
        .and_then(|c| c.parse().ok())
        .expect("usage.costUSD");
    // One agent: at most one call in flight, whose worst case is max_tokens (4096) of output
    // and its input at the dearest input rate, at the operator's (default) prices.
    let sonnet = maos_core::price::default_price_table()
        .price("claude-sonnet-4-5")
        .expect("priced")
        .clone();
    let largest_input = stack
        .standin()
        .requests()
        .iter()
        .filter_map(|r| r.body.as_ref())
        .map(|b| b.to_string().len() as u64 / 4)
        .max()
        .expect("some calls were made");
    let in_flight = sonnet.worst_case_micro_usd(largest_input, 4096) as f64 / 1e6;
    eprintln!("cost budget ${limit}: spent ${cost:.4}, one call's worst case ${in_flight:.4}");
    assert!(cost > 0.0, "the budget allowed some calls");
    assert!(
        cost <= limit + in_flight,
        "spent ${cost} over a ${limit} budget with at most ${in_flight} in flight"
    );
    let parts_done = status
        .subtasks
        .iter()
        .filter(|s| s.phase == SubtaskPhase::Succeeded)
        .count();
    assert!(
        parts_done < 10,
        "the budget stopped the Task early: {parts_done} done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_in_status_counts_every_billed_token_as_usage_shows_them() {
    let stack = stack_with_pool("e2e-budget-status", 1).await;
    stack
        .apply(&task_manifest(
            "counted",
            "  budget: {maxTokens: 500000}\n",
            "  - {name: essay, prompt: Write a short essay.}\n",
        ))
        .expect("kubectl apply the task");
    let task = stack
        .wait_task("counted", "finished", TASK_DEADLINE, finished)
        .await;
    let status = task.status.as_ref().expect("status");
    let usage = status.usage.as_ref().expect("usage");
    let budget = status.budget.expect("status.budget");
    assert!(
        usage.cache_read_input_tokens + usage.cache_creation_input_tokens > 0,
        "{usage:?}"
    );
    assert_eq!(budget.max_tokens, 500_000);
    assert_eq!(
        budget.spent_tokens,
        usage.input_tokens
            + usage.output_tokens
            + usage.cache_read_input_tokens
            + usage.cache_creation_input_tokens,
        "the budget and status.usage count the same tokens: {budget:?} {usage:?}"
    );
    assert_eq!(budget.reserved_tokens, 0, "no call is in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_dag_with_an_unknown_dependency_fails_as_invalid_spec_naming_the_field() {
    let stack = stack_with_pool("e2e-unknown-dep", 1).await;
    stack
        .apply(&task_manifest(
            "dangling",
            "",
            "  - {name: a, prompt: Gather the facts.}
  - {name: b, prompt: Analyse them., dependsOn: [a, ghost]}
",
        ))
        .expect("kubectl apply accepts what the schema cannot reject");

    let task = stack
        .wait_task("dangling", "finished", Duration::from_secs(60), finished)
        .await;
    let succeeded = failed_with(&task, "InvalidSpec");
    assert!(
        succeeded.message.contains("spec.subtasks[1].dependsOn[1]"),
        "the message names the field: {}",
        succeeded.message
    );
    assert!(succeeded.message.contains("ghost"), "{}", succeeded.message);
    assert!(
        stack.standin().requests().is_empty(),
        "no agent worked on an invalid Task"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_dag_with_a_cycle_fails_as_invalid_spec_naming_the_cycle() {
    let stack = stack_with_pool("e2e-cycle", 1).await;
    stack
        .apply(&task_manifest(
            "circular",
            "",
            "  - {name: a, prompt: Gather the facts., dependsOn: [c]}
  - {name: b, prompt: Analyse them., dependsOn: [a]}
  - {name: c, prompt: Check the analysis., dependsOn: [b]}
",
        ))
        .expect("kubectl apply accepts what the schema cannot reject");

    let task = stack
        .wait_task("circular", "finished", Duration::from_secs(60), finished)
        .await;
    let succeeded = failed_with(&task, "InvalidSpec");
    assert!(
        succeeded.message.contains("spec.subtasks"),
        "the message names the field: {}",
        succeeded.message
    );
    // The cycle's path, e.g. "a -> c -> b -> a".
    let path: Vec<&str> = succeeded
        .message
        .split("dependency cycle: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no cycle path in: {}", succeeded.message))
        .split(';')
        .next()
        .unwrap_or_default()
        .split(" -> ")
        .map(str::trim)
        .collect();
    let mut nodes = path.clone();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes, ["a", "b", "c"], "{path:?}");
    assert_eq!(path.first(), path.last(), "a closed path: {path:?}");
    assert!(
        stack.standin().requests().is_empty(),
        "no agent worked on an invalid Task"
    );
}
