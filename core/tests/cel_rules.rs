//! The CEL rules in the generated CRDs, evaluated as the API server does at apply time (with
//! kube-cel, which implements the Kubernetes CEL libraries), including transition rules.

mod common;

use common::{cel_failures, yaml_to_json};
use serde_json::{Value, json};

fn task() -> Value {
    yaml_to_json(
        r#"
apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: t}
spec:
  prompt: goal
  poolRef: {name: default}
  subtasks:
  - {name: a, prompt: x}
  - {name: b, prompt: why, dependsOn: [a]}
"#,
    )
}

fn pool() -> Value {
    yaml_to_json(
        r#"
apiVersion: maos.dev/v1alpha1
kind: AgentPool
metadata: {name: p}
spec:
  replicas: {min: 1, max: 3}
  apiKeySecretRef: {name: anthropic}
"#,
    )
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} exists")) = value;
    object
}

fn assert_rejected_with(failures: Vec<String>, message: &str) {
    assert!(
        failures.iter().any(|f| f.contains(message)),
        "expected a failure containing {message:?}, got {failures:#?}"
    );
}

#[test]
fn valid_objects_pass_every_rule() {
    assert_eq!(cel_failures("Task", &task(), None), Vec::<String>::new());
    assert_eq!(
        cel_failures("AgentPool", &pool(), None),
        Vec::<String>::new()
    );
}

#[test]
fn pool_min_above_max_is_rejected() {
    let bad = with(pool(), "/spec/replicas", json!({"min": 5, "max": 2}));
    assert_rejected_with(
        cel_failures("AgentPool", &bad, None),
        "replicas.min must not exceed replicas.max",
    );
}

#[test]
fn duplicate_subtask_names_are_rejected() {
    let bad = with(task(), "/spec/subtasks/1/name", json!("a"));
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        "spec.subtasks: subtask names must be unique: a appears more than once",
    );
}

#[test]
fn self_dependency_is_rejected() {
    let bad = with(task(), "/spec/subtasks/1/dependsOn", json!(["b"]));
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        "spec.subtasks[1].dependsOn: subtask b cannot depend on itself",
    );
}

#[test]
fn checks_the_operator_made_at_run_time_are_refused_at_apply_time_naming_field_and_value() {
    let cases = [
        (
            with(task(), "/spec/subtasks/1/dependsOn", json!(["a", "a"])),
            "spec.subtasks[1].dependsOn: subtask b lists a more than once in dependsOn",
        ),
        (
            with(task(), "/spec/subtasks/0/name", json!("plan")),
            "spec.subtasks[0].name: subtask name plan is reserved for MAOS",
        ),
        (
            with(task(), "/spec/subtasks/1/name", json!("synthesize")),
            "spec.subtasks[1].name: subtask name synthesize is reserved for MAOS",
        ),
        (
            with(task(), "/spec/prompt", json!("  \n\t ")),
            "spec.prompt: spec.prompt must not be blank",
        ),
        (
            with(task(), "/spec/subtasks/0/prompt", json!("   ")),
            "spec.subtasks[0].prompt: the prompt of subtask a must not be blank",
        ),
    ];
    for (bad, message) in cases {
        assert_rejected_with(cel_failures("Task", &bad, None), message);
    }
}

#[test]
fn more_manual_subtasks_than_max_subtasks_is_rejected() {
    let mut bad = task();
    bad["spec"]["maxSubtasks"] = json!(1);
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        "more entries than spec.maxSubtasks",
    );
}

#[test]
fn budget_without_a_limit_is_rejected() {
    let mut bad = task();
    bad["spec"]["budget"] = json!({});
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        "set maxTokens, maxCostUSD or both",
    );
}

#[test]
fn backoff_cap_below_first_wait_is_rejected() {
    let mut bad = task();
    bad["spec"]["retryStrategy"] =
        json!({"backoff": {"durationSeconds": 60, "maxDurationSeconds": 10}});
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        "maxDurationSeconds must be at least durationSeconds",
    );
}

#[test]
fn long_task_name_is_rejected() {
    let bad = with(task(), "/metadata/name", json!("t".repeat(64)));
    assert_rejected_with(
        cel_failures("Task", &bad, None),
        &format!(
            "metadata.name: {} has 64 characters; Task names are at most 63",
            "t".repeat(64)
        ),
    );
}

#[test]
fn long_pool_name_is_rejected() {
    let bad = with(pool(), "/metadata/name", json!("p".repeat(58)));
    assert_rejected_with(
        cel_failures("AgentPool", &bad, None),
        "at most 57 characters",
    );
}

#[test]
fn changing_the_prompt_is_rejected() {
    let new = with(task(), "/spec/prompt", json!("another goal"));
    assert_rejected_with(
        cel_failures("Task", &new, Some(&task())),
        "prompt is immutable",
    );
}

#[test]
fn changing_the_pool_is_rejected() {
    let new = with(task(), "/spec/poolRef/name", json!("other"));
    assert_rejected_with(
        cel_failures("Task", &new, Some(&task())),
        "poolRef is immutable",
    );
}

#[test]
fn changing_or_removing_subtasks_is_rejected() {
    let changed = with(task(), "/spec/subtasks/0/prompt", json!("changed"));
    assert_rejected_with(
        cel_failures("Task", &changed, Some(&task())),
        "subtasks are immutable",
    );
    let mut removed = task();
    removed["spec"]
        .as_object_mut()
        .expect("object")
        .remove("subtasks");
    assert_rejected_with(
        cel_failures("Task", &removed, Some(&task())),
        "subtasks are immutable",
    );
}

#[test]
fn suspending_and_shutting_down_are_allowed_updates() {
    let mut new = task();
    new["spec"]["suspend"] = json!(true);
    new["spec"]["parallelism"] = json!(2);
    new["spec"]["shutdown"] = json!("Graceful");
    assert_eq!(
        cel_failures("Task", &new, Some(&task())),
        Vec::<String>::new()
    );
}

#[test]
fn changing_a_checkpoint_spec_is_rejected() {
    let old = yaml_to_json(
        "apiVersion: maos.dev/v1alpha1\nkind: Checkpoint\nmetadata: {name: c}\nspec: {taskRef: {name: t}}\n",
    );
    let new = with(old.clone(), "/spec/taskRef/name", json!("other"));
    assert_eq!(
        cel_failures("Checkpoint", &old, Some(&old)),
        Vec::<String>::new()
    );
    assert_rejected_with(
        cel_failures("Checkpoint", &new, Some(&old)),
        "spec is immutable",
    );
}

#[test]
fn a_thinking_budget_outside_what_the_api_accepts_is_refused_naming_the_bound() {
    for (kind, object) in [("Task", task()), ("AgentPool", pool())] {
        let mut ok = object.clone();
        ok["spec"]["thinking"] = json!({"budgetTokens": 2048});
        assert_eq!(
            cel_failures(kind, &ok, None),
            Vec::<String>::new(),
            "{kind}"
        );
        let mut low = object.clone();
        low["spec"]["thinking"] = json!({"budgetTokens": 1000});
        assert_rejected_with(
            cel_failures(kind, &low, None),
            "spec.thinking.budgetTokens: thinking.budgetTokens is 1000; the Claude API needs at least 1024",
        );
        let mut high = object;
        high["spec"]["thinking"] = json!({"budgetTokens": 60000});
        assert_rejected_with(
            cel_failures(kind, &high, None),
            "thinking.budgetTokens is 60000; at most 59904",
        );
    }
}
