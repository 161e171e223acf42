//! Attempts that cannot succeed by trying again, end to end: a plan `submit_plan` refuses on
//! every attempt, an API key or model the Claude API refuses, and the example placeholder key.
//! Each fails fast, says why in the Task's and the pool's conditions, and a retry never replays
//! a failed attempt's conversation (the stand-in refuses two turns of one role in a row).

use std::time::Duration;

use maos_core::api::v1alpha1::{AgentPool, SubtaskPhase, Task, TaskPhase};
use maos_e2e::claude_standin::PlanShape;
use maos_e2e::stack::{Stack, StackConfig, condition, conversation_text, pool_manifest, subtask};

/// Long enough for a whole Task on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

fn pool_condition(pool: &AgentPool, type_: &str) -> Option<(String, String, String)> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_whose_plans_are_too_big_fails_the_task_as_plan_rejected_saying_why() {
    // The stand-in plans 6 subtasks whatever it is told; the Task allows 3.
    let stack = Stack::start(StackConfig::new("e2e-plan-too-big").plan(6, PlanShape::Parallel))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: too-big}
spec:
  prompt: Survey the field of vector databases.
  poolRef: {name: default}
  maxSubtasks: 3
  retryStrategy: {limit: 1, backoff: {durationSeconds: 0}}
",
        )
        .expect("kubectl apply the task");

    let task = stack
        .wait_task("too-big", "finished", DEADLINE, finished)
        .await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded").clone();
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "PlanRejected"),
        "{succeeded:?}"
    );
    assert!(
        succeeded
            .message
            .contains("PlanRejected: the plan has 6 subtasks; at most 3 are allowed"),
        "the condition names the last attempt's reason: {}",
        succeeded.message
    );
    assert_eq!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Failed)
    );
    let plan = subtask(&task, "plan").expect("the plan entry");
    assert_eq!(plan.attempts, Some(2), "{plan:?}");

    let requests = stack.model_requests_mentioning("Survey the field of vector databases.");
    assert!(
        requests.iter().all(|r| r.status == 200),
        "no request was refused: {:?}",
        requests.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let openings: Vec<String> = requests.iter().map(conversation_text).collect();
    assert!(
        openings.iter().all(|o| o.contains("at most 3 subtasks")),
        "the planner is told the limit up front"
    );
    assert!(
        openings.iter().any(|o| o.contains(
            "# The previous attempt failed\nPlanRejected: the plan has 6 subtasks; at most 3 are allowed"
        )),
        "the retry is told why the first attempt failed"
    );
}

/// A pool named `name` whose key comes from Secret `secret` and whose model is `model`.
fn pool_with(name: &str, secret: &str, model: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: AgentPool
metadata: {{name: {name}}}
spec:
  replicas: {{min: 1, max: 1}}
  model: {model}
  apiKeySecretRef: {{name: {secret}, key: api-key}}
"
    )
}

fn secret(name: &str, key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
type: Opaque
stringData: {{api-key: {key}}}
"
    )
}

fn task_on(name: &str, pool: &str, prompt: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {{name: {name}}}
spec:
  prompt: {prompt}
  poolRef: {{name: {pool}}}
  synthesize: false
  retryStrategy: {{limit: 2, backoff: {{durationSeconds: 0}}}}
  subtasks:
  - {{name: only, prompt: {prompt}}}
"
    )
}

async fn wait_pool(
    stack: &Stack,
    name: &str,
    what: &str,
    probe: impl Fn(&AgentPool) -> bool,
) -> AgentPool {
    let api: kube::Api<AgentPool> = kube::Api::namespaced(stack.client(), stack.namespace());
    let probe = &probe;
    stack
        .wait_until(what, DEADLINE, || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|pool| probe(pool))
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_or_model_fails_at_once_marks_the_pool_and_clears_when_fixed() {
    let stack = Stack::start(StackConfig::new("e2e-refused"))
        .await
        .expect("the stack starts");
    stack
        .apply(&secret("wrong-key", "sk-ant-not-the-right-one"))
        .expect("kubectl apply the wrong key");
    stack
        .apply(&pool_with("wrong-key", "wrong-key", "claude-sonnet-4-5"))
        .expect("kubectl apply the pool with a wrong key");
    stack
        .apply(&pool_with("wrong-model", "anthropic", "gpt-4o"))
        .expect("kubectl apply the pool with an unknown model");
    stack
        .apply(&secret("placeholder", "sk-ant-REPLACE-ME"))
        .expect("kubectl apply the placeholder");
    stack
        .apply(&pool_with(
            "placeholder",
            "placeholder",
            "claude-sonnet-4-5",
        ))
        .expect("kubectl apply the pool with the placeholder");
    stack
        .apply(&task_on(
            "keyless",
            "wrong-key",
            "Count the moons of Jupiter.",
        ))
        .expect("kubectl apply a task on the wrong key");
    stack
        .apply(&task_on(
            "modelless",
            "wrong-model",
            "Count the moons of Saturn.",
        ))
        .expect("kubectl apply a task on the unknown model");

    // Retries were allowed, but none was made: the same key or model would be refused again.
    for (task, reason) in [
        ("keyless", "ModelAuthFailed"),
        ("modelless", "ModelNotFound"),
    ] {
        let done = stack.wait_task(task, "finished", DEADLINE, finished).await;
        let only = subtask(&done, "only").expect("status entry");
        assert_eq!(only.phase, SubtaskPhase::Failed, "{only:?}");
        assert_eq!(only.attempts, Some(1), "{task}: {only:?}");
        let message = only.message.clone().unwrap_or_default();
        assert!(message.starts_with(&format!("{reason}: ")), "{message}");
        assert!(
            !message.contains("sk-ant-not-the-right-one"),
            "a key never reaches status: {message}"
        );
        let succeeded = condition(&done, "Succeeded").expect("Succeeded");
        assert!(succeeded.message.contains(reason), "{succeeded:?}");
    }
    let refused: Vec<u16> = stack
        .standin()
        .requests()
        .iter()
        .map(|r| r.status)
        .filter(|s| *s == 401 || *s == 404)
        .collect();
    assert_eq!(
        refused,
        [401, 404],
        "one call each, never retried: {refused:?}"
    );

    // Each pool says so, so the next Task on it need not find out alone.
    for (pool, reason, hint) in [
        ("wrong-key", "ModelAuthFailed", "apiKeySecretRef"),
        ("wrong-model", "ModelNotFound", "spec.model"),
    ] {
        let marked = wait_pool(&stack, pool, "the pool marked degraded", |p| {
            pool_condition(p, "Degraded").is_some_and(|(s, r, _)| s == "True" && r == reason)
        })
        .await;
        let (_, _, message) = pool_condition(&marked, "Degraded").expect("Degraded");
        assert!(message.contains(hint), "{message}");
        assert!(!message.contains("sk-ant-not-the-right-one"), "{message}");
        let (ready, ready_reason, _) = pool_condition(&marked, "Ready").expect("Ready");
        assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", reason));
    }
    let placeholder = wait_pool(&stack, "placeholder", "the placeholder refused", |p| {
        pool_condition(p, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "APIKeyPlaceholder")
    })
    .await;
    let (_, _, message) = pool_condition(&placeholder, "Degraded").expect("Degraded");
    assert!(message.contains("placeholder"), "{message}");
    assert!(
        stack.agent_pods("placeholder").expect("pods").is_empty(),
        "no agent starts on a placeholder key"
    );

    // A Task on a pool that cannot run agents is Blocked, saying why, not Running 0/1.
    stack
        .apply(&task_on(
            "waiting",
            "placeholder",
            "Count the moons of Uranus.",
        ))
        .expect("kubectl apply a task on the placeholder pool");
    let blocked = stack
        .wait_task("waiting", "Blocked", DEADLINE, |t| {
            task_phase(t) == Some(TaskPhase::Blocked)
        })
        .await;
    let progressing = condition(&blocked, "Progressing").expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "PoolNotReady")
    );
    assert!(
        progressing
            .message
            .contains("AgentPool placeholder cannot run agents: APIKeyPlaceholder"),
        "{}",
        progressing.message
    );
    let listed = stack
        .kubectl(&["get", "mtask", "waiting"], None)
        .expect("kubectl get");
    assert!(listed.contains("Blocked"), "{listed}");
    let events = stack.events_for("Task", "waiting").await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("PoolNotReady")
                && e.type_.as_deref() == Some("Warning")),
        "{events:?}"
    );
    // Fixed, the pool starts agents and the Task runs to the end.
    stack
        .apply(&secret("placeholder", stack.api_key()))
        .expect("kubectl apply a real key");
    let waited = stack
        .wait_task("waiting", "finished", DEADLINE, finished)
        .await;
    assert_eq!(
        task_phase(&waited),
        Some(TaskPhase::Succeeded),
        "{:?}",
        waited.status
    );
    let events = stack.events_for("Task", "waiting").await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("PoolReady")),
        "{events:?}"
    );

    // The key fixed: the pool rolls its agents onto it, the report of the old ones goes, and
    // a Task on the pool succeeds.
    stack
        .apply(&secret("wrong-key", stack.api_key()))
        .expect("kubectl apply the right key");
    wait_pool(&stack, "wrong-key", "the pool healthy again", |p| {
        pool_condition(p, "Degraded").is_some_and(|(s, _, _)| s == "False")
            && pool_condition(p, "Ready").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    // The model fixed: the pool rolls its agents onto the new spec, and it is healthy again.
    stack
        .apply(&pool_with("wrong-model", "anthropic", "claude-sonnet-4-5"))
        .expect("kubectl apply the pool with a known model");
    wait_pool(
        &stack,
        "wrong-model",
        "the pool healthy with the new model",
        |p| {
            pool_condition(p, "Degraded").is_some_and(|(s, _, _)| s == "False")
                && pool_condition(p, "Ready").is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    stack
        .apply(&task_on(
            "modelled",
            "wrong-model",
            "Count the moons of Neptune.",
        ))
        .expect("kubectl apply a task on the fixed model");
    let modelled = stack
        .wait_task("modelled", "finished", DEADLINE, finished)
        .await;
    assert_eq!(
        task_phase(&modelled),
        Some(TaskPhase::Succeeded),
        "the agents use the new model: {:?}",
        modelled.status
    );
    stack
        .apply(&task_on("keyed", "wrong-key", "Count the moons of Mars."))
        .expect("kubectl apply a task on the fixed key");
    let keyed = stack
        .wait_task("keyed", "finished", DEADLINE, finished)
        .await;
    assert_eq!(
        task_phase(&keyed),
        Some(TaskPhase::Succeeded),
        "{:?}",
        keyed.status
    );
}

fn task_phase(task: &Task) -> Option<TaskPhase> {
    task.status.as_ref().and_then(|s| s.phase)
}
