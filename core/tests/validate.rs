//! Malformed Tasks: each is rejected by `Task::validate` with the exact field path and kind.

use maos_core::api::v1alpha1::{
    Backoff, Budget, CheckpointPolicy, PoolRef, ResumeFrom, SubtaskSpec, Task, TaskSpec,
};
use maos_core::validate::FieldErrorKind::{self, *};

/// A valid Task with a diamond DAG: a → (b, c) → d.
fn valid_task() -> Task {
    let yaml = r#"
apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: diamond, namespace: default}
spec:
  prompt: Compare three vector databases.
  poolRef: {name: default}
  subtasks:
  - {name: a, prompt: Gather sources.}
  - {name: b, prompt: Benchmark, dependsOn: [a]}
  - {name: c, prompt: Licensing, dependsOn: [a]}
  - {name: d, prompt: Summarize, dependsOn: [b, c]}
"#;
    serde_saphyr::from_str(yaml).expect("the base Task parses")
}

fn subtask(name: &str, depends_on: &[&str]) -> SubtaskSpec {
    SubtaskSpec {
        name: name.to_owned(),
        prompt: format!("do {name}"),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        voters: None,
    }
}

/// Applies `change` to a valid Task and returns the (field, kind) of every error.
fn errors_after(change: impl FnOnce(&mut Task)) -> Vec<(String, FieldErrorKind)> {
    let mut task = valid_task();
    change(&mut task);
    match task.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.0.into_iter().map(|e| (e.field, e.kind)).collect(),
    }
}

/// Asserts the change produces exactly one error, at `field`, of `kind`.
fn assert_single(change: impl FnOnce(&mut Task), field: &str, kind: FieldErrorKind) {
    assert_eq!(errors_after(change), vec![(field.to_owned(), kind)]);
}

fn spec(change: impl FnOnce(&mut TaskSpec)) -> impl FnOnce(&mut Task) {
    move |task| change(&mut task.spec)
}

#[test]
fn the_base_task_is_valid() {
    assert_eq!(errors_after(|_| {}), vec![]);
}

#[test]
fn empty_prompt_is_rejected() {
    assert_single(spec(|s| s.prompt.clear()), "spec.prompt", Required);
}

#[test]
fn blank_prompt_is_rejected() {
    assert_single(spec(|s| s.prompt = " \n\t".into()), "spec.prompt", Required);
}

#[test]
fn prompt_over_64_kib_is_rejected() {
    assert_single(
        spec(|s| s.prompt = "x".repeat(65_537)),
        "spec.prompt",
        TooLong,
    );
}

#[test]
fn empty_pool_name_is_rejected() {
    assert_single(
        spec(|s| {
            s.pool_ref = PoolRef {
                name: String::new(),
            }
        }),
        "spec.poolRef.name",
        Required,
    );
}

#[test]
fn uppercase_pool_name_is_rejected() {
    assert_single(
        spec(|s| s.pool_ref.name = "Default".into()),
        "spec.poolRef.name",
        InvalidName,
    );
}

#[test]
fn pool_name_over_57_characters_is_rejected() {
    assert_single(
        spec(|s| s.pool_ref.name = "p".repeat(58)),
        "spec.poolRef.name",
        TooLong,
    );
}

#[test]
fn task_name_over_63_characters_is_rejected() {
    assert_single(
        |t| t.metadata.name = Some("t".repeat(64)),
        "metadata.name",
        TooLong,
    );
}

#[test]
fn zero_max_subtasks_is_rejected() {
    // Also reports the manual DAG as too large for the new limit.
    assert_eq!(
        errors_after(spec(|s| s.max_subtasks = 0)),
        vec![
            ("spec.maxSubtasks".to_owned(), OutOfRange),
            ("spec.subtasks".to_owned(), TooMany)
        ]
    );
}

#[test]
fn max_subtasks_above_hard_cap_is_rejected() {
    assert_single(
        spec(|s| s.max_subtasks = 65),
        "spec.maxSubtasks",
        OutOfRange,
    );
}

#[test]
fn zero_parallelism_is_rejected() {
    assert_single(spec(|s| s.parallelism = 0), "spec.parallelism", OutOfRange);
}

#[test]
fn retry_limit_above_ten_is_rejected() {
    assert_single(
        spec(|s| s.retry_strategy.limit = 11),
        "spec.retryStrategy.limit",
        OutOfRange,
    );
}

#[test]
fn backoff_factor_zero_is_rejected() {
    assert_single(
        spec(|s| s.retry_strategy.backoff.factor = 0),
        "spec.retryStrategy.backoff.factor",
        OutOfRange,
    );
}

#[test]
fn backoff_cap_below_first_wait_is_rejected() {
    assert_single(
        spec(|s| {
            s.retry_strategy.backoff = Backoff {
                duration_seconds: 60,
                factor: 2,
                max_duration_seconds: 30,
            }
        }),
        "spec.retryStrategy.backoff.maxDurationSeconds",
        OutOfRange,
    );
}

#[test]
fn subtask_timeout_under_ten_seconds_is_rejected() {
    assert_single(
        spec(|s| s.subtask_timeout_seconds = 5),
        "spec.subtaskTimeoutSeconds",
        OutOfRange,
    );
}

#[test]
fn deadline_over_seven_days_is_rejected() {
    assert_single(
        spec(|s| s.active_deadline_seconds = 604_801),
        "spec.activeDeadlineSeconds",
        OutOfRange,
    );
}

#[test]
fn ttl_over_seven_days_is_rejected() {
    assert_single(
        spec(|s| s.ttl_seconds_after_finished = Some(604_801)),
        "spec.ttlSecondsAfterFinished",
        OutOfRange,
    );
}

#[test]
fn empty_budget_is_rejected() {
    assert_single(
        spec(|s| {
            s.budget = Some(Budget {
                max_tokens: None,
                max_cost_usd: None,
            })
        }),
        "spec.budget",
        Required,
    );
}

#[test]
fn zero_token_budget_is_rejected() {
    assert_single(
        spec(|s| {
            s.budget = Some(Budget {
                max_tokens: Some(0),
                max_cost_usd: None,
            })
        }),
        "spec.budget.maxTokens",
        OutOfRange,
    );
}

#[test]
fn cost_that_is_not_a_decimal_is_rejected() {
    for bad in ["abc", "1e3", "-5", "5.", ".5", "1.1234567", "$25"] {
        assert_eq!(
            errors_after(spec(|s| {
                s.budget = Some(Budget {
                    max_tokens: None,
                    max_cost_usd: Some(bad.into()),
                })
            })),
            vec![("spec.budget.maxCostUSD".to_owned(), Invalid)],
            "{bad}"
        );
    }
}

#[test]
fn zero_cost_budget_is_rejected() {
    assert_single(
        spec(|s| {
            s.budget = Some(Budget {
                max_tokens: None,
                max_cost_usd: Some("0.00".into()),
            })
        }),
        "spec.budget.maxCostUSD",
        OutOfRange,
    );
}

#[test]
fn checkpoint_interval_under_five_seconds_is_rejected() {
    assert_single(
        spec(|s| {
            s.checkpoint = Some(CheckpointPolicy {
                interval_seconds: 1,
                keep: 5,
            })
        }),
        "spec.checkpoint.intervalSeconds",
        OutOfRange,
    );
}

#[test]
fn keeping_zero_checkpoints_is_rejected() {
    assert_single(
        spec(|s| {
            s.checkpoint = Some(CheckpointPolicy {
                interval_seconds: 30,
                keep: 0,
            })
        }),
        "spec.checkpoint.keep",
        OutOfRange,
    );
}

#[test]
fn resume_from_an_invalid_checkpoint_name_is_rejected() {
    assert_single(
        spec(|s| {
            s.resume_from = Some(ResumeFrom {
                checkpoint: "Bad_Name".into(),
                allow_spec_change: false,
            })
        }),
        "spec.resumeFrom.checkpoint",
        InvalidName,
    );
}

#[test]
fn uppercase_subtask_name_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[3].name = "Summary".into()),
        "spec.subtasks[3].name",
        InvalidName,
    );
}

#[test]
fn subtask_name_over_63_characters_is_rejected() {
    let long = "s".repeat(64);
    assert_single(
        spec(|s| s.subtasks.push(subtask(&long, &[]))),
        "spec.subtasks[4].name",
        TooLong,
    );
}

#[test]
fn empty_subtask_name_is_rejected() {
    assert_single(
        spec(|s| s.subtasks.push(subtask("", &[]))),
        "spec.subtasks[4].name",
        Required,
    );
}

#[test]
fn duplicate_subtask_name_is_rejected_at_the_second_use() {
    assert_single(
        spec(|s| s.subtasks.push(subtask("b", &[]))),
        "spec.subtasks[4].name",
        Duplicate,
    );
}

#[test]
fn reserved_subtask_names_are_rejected() {
    for reserved in ["plan", "synthesize"] {
        assert_single(
            spec(|s| s.subtasks.push(subtask(reserved, &["d"]))),
            "spec.subtasks[4].name",
            Reserved,
        );
    }
}

#[test]
fn dependency_on_a_missing_subtask_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[1].depends_on = vec!["zz".into()]),
        "spec.subtasks[1].dependsOn[0]",
        UnknownDependency,
    );
}

#[test]
fn self_dependency_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[3].depends_on.push("d".into())),
        "spec.subtasks[3].dependsOn[2]",
        SelfDependency,
    );
}

#[test]
fn dependency_listed_twice_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[3].depends_on.push("b".into())),
        "spec.subtasks[3].dependsOn[2]",
        Duplicate,
    );
}

#[test]
fn two_subtask_cycle_is_rejected_with_its_path() {
    let mut task = valid_task();
    task.spec.subtasks[0].depends_on = vec!["d".into()];
    let errors = task.validate().expect_err("cycle").0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "spec.subtasks[0].dependsOn[0]");
    assert_eq!(errors[0].kind, Cycle);
    assert_eq!(errors[0].detail, "dependency cycle: a -> d -> b -> a");
}

#[test]
fn long_cycle_is_reported_in_dependency_order() {
    let mut task = valid_task();
    task.spec.subtasks = vec![
        subtask("e", &["h"]),
        subtask("f", &["e"]),
        subtask("g", &["f"]),
        subtask("h", &["g"]),
    ];
    let errors = task.validate().expect_err("cycle").0;
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.field.as_str(), e.detail.as_str()))
            .collect::<Vec<_>>(),
        [(
            "spec.subtasks[0].dependsOn[0]",
            "dependency cycle: e -> h -> g -> f -> e"
        )]
    );
}

#[test]
fn empty_subtask_prompt_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[2].prompt.clear()),
        "spec.subtasks[2].prompt",
        Required,
    );
}

#[test]
fn subtask_prompt_over_16_kib_is_rejected() {
    assert_single(
        spec(|s| s.subtasks[2].prompt = "p".repeat(16_385)),
        "spec.subtasks[2].prompt",
        TooLong,
    );
}

#[test]
fn zero_or_too_many_voters_are_rejected() {
    for voters in [0, 6] {
        assert_single(
            spec(|s| s.subtasks[1].voters = Some(voters)),
            "spec.subtasks[1].voters",
            OutOfRange,
        );
    }
}

#[test]
fn more_subtasks_than_max_subtasks_is_rejected() {
    assert_single(spec(|s| s.max_subtasks = 3), "spec.subtasks", TooMany);
}

#[test]
fn more_than_64_subtasks_is_rejected() {
    assert_single(
        spec(|s| {
            s.subtasks = (0..65).map(|i| subtask(&format!("s{i}"), &[])).collect();
        }),
        "spec.subtasks",
        TooMany,
    );
}

#[test]
fn more_than_64_dependencies_are_rejected() {
    assert_eq!(
        errors_after(spec(|s| {
            s.max_subtasks = 64;
            s.subtasks = (0..64).map(|i| subtask(&format!("s{i}"), &[])).collect();
            s.subtasks[0].depends_on = (0..65).map(|i| format!("x{i}")).collect();
        }))[0],
        ("spec.subtasks[0].dependsOn".to_owned(), TooMany)
    );
}

#[test]
fn every_problem_is_reported_in_field_order() {
    let errors = errors_after(|t| {
        t.metadata.name = Some("n".repeat(70));
        t.spec.prompt.clear();
        t.spec.parallelism = 0;
        t.spec.subtasks[2].voters = Some(9);
        t.spec.subtasks.push(subtask("Bad", &["missing"]));
    });
    assert_eq!(
        errors,
        vec![
            ("metadata.name".to_owned(), TooLong),
            ("spec.prompt".to_owned(), Required),
            ("spec.parallelism".to_owned(), OutOfRange),
            ("spec.subtasks[2].voters".to_owned(), OutOfRange),
            ("spec.subtasks[4].name".to_owned(), InvalidName),
            (
                "spec.subtasks[4].dependsOn[0]".to_owned(),
                UnknownDependency
            ),
        ]
    );
}

#[test]
fn planner_answers_are_checked_under_their_own_path() {
    let answer = vec![subtask("x", &["y"]), subtask("y", &["x"])];
    let errors = maos_core::validate::check_subtasks(&answer, "plan.subtasks").expect_err("cycle");
    assert_eq!(errors.0[0].field, "plan.subtasks[0].dependsOn[0]");
    assert_eq!(
        errors.to_string(),
        "plan.subtasks[0].dependsOn[0]: dependency cycle: x -> y -> x"
    );
}

#[test]
fn a_task_without_subtasks_needs_no_dag() {
    let mut task = valid_task();
    task.spec.subtasks.clear();
    task.spec.max_subtasks = 1;
    assert_eq!(task.validate(), Ok(()));
}

#[test]
fn a_valid_spec_builds_the_plan_it_describes() {
    let plan = maos_core::validate::check_subtasks(&valid_task().spec.subtasks, "spec.subtasks")
        .expect("valid");
    assert_eq!(plan.len(), 4);
    assert_eq!(plan.critical_path_len(), 3);
}
