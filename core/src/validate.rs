//! Checks of a Task the CRD schema cannot express, as a pure function with field paths.
//!
//! The API server enforces the schema (types, bounds, CEL rules) at apply time; this module
//! repeats the bounds (so objects that skipped admission, and planner answers, are held to the
//! same rules) and adds what needs a graph: unknown dependencies, self-dependencies and cycles.
//! A Task that fails here ends with `Succeeded=False`, reason `InvalidSpec`, and these messages.

use std::fmt;

use crate::api::v1alpha1::limits::*;
use crate::api::v1alpha1::{SubtaskSpec, Task, TaskSpec};
use crate::dag::{DraftNode, Plan, check_dns_label};
pub use crate::field_error::{FieldError, FieldErrorKind};

/// Every problem found in a spec, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl Task {
    /// Checks the Task's name and spec; returns every problem found.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut errors = Vec::new();
        if let Some(name) = &self.metadata.name {
            max_len(&mut errors, "metadata.name", name, MAX_TASK_NAME_LEN);
        }
        if let Err(SpecErrors(spec_errors)) = self.spec.validate() {
            errors.extend(spec_errors);
        }
        into_result(errors)
    }
}

impl TaskSpec {
    /// Checks the spec; returns every problem found, each with its field path under `spec`.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut errors = Vec::new();
        let e = &mut errors;

        not_blank(e, "spec.prompt", &self.prompt);
        max_len(e, "spec.prompt", &self.prompt, MAX_PROMPT_LEN);
        if let Err(err) = check_dns_label(&self.pool_ref.name, MAX_POOL_NAME_LEN) {
            e.push(crate::dag::field_error_of_name(
                "spec.poolRef.name".into(),
                &err,
            ));
        }

        in_range(
            e,
            "spec.maxSubtasks",
            self.max_subtasks.into(),
            1,
            MAX_SUBTASKS.into(),
        );
        in_range(
            e,
            "spec.parallelism",
            self.parallelism.into(),
            1,
            MAX_PARALLELISM.into(),
        );
        let retry = &self.retry_strategy;
        in_range(
            e,
            "spec.retryStrategy.limit",
            retry.limit.into(),
            0,
            MAX_RETRY_LIMIT.into(),
        );
        in_range(
            e,
            "spec.retryStrategy.backoff.factor",
            retry.backoff.factor.into(),
            1,
            10,
        );
        in_range(
            e,
            "spec.retryStrategy.backoff.durationSeconds",
            retry.backoff.duration_seconds.into(),
            0,
            MAX_SECONDS.into(),
        );
        in_range(
            e,
            "spec.retryStrategy.backoff.maxDurationSeconds",
            retry.backoff.max_duration_seconds.into(),
            0,
            MAX_SECONDS.into(),
        );
        if retry.backoff.max_duration_seconds < retry.backoff.duration_seconds {
            e.push(FieldError::new(
                "spec.retryStrategy.backoff.maxDurationSeconds",
                FieldErrorKind::OutOfRange,
                format!(
                    "must be at least durationSeconds ({}), not {}",
                    retry.backoff.duration_seconds, retry.backoff.max_duration_seconds
                ),
            ));
        }
        in_range(
            e,
            "spec.subtaskTimeoutSeconds",
            self.subtask_timeout_seconds.into(),
            10,
            MAX_SECONDS.into(),
        );
        in_range(
            e,
            "spec.activeDeadlineSeconds",
            self.active_deadline_seconds.into(),
            10,
            MAX_SECONDS.into(),
        );
        if let Some(ttl) = self.ttl_seconds_after_finished {
            in_range(
                e,
                "spec.ttlSecondsAfterFinished",
                ttl.into(),
                0,
                MAX_SECONDS.into(),
            );
        }

        if let Some(budget) = &self.budget {
            if budget.max_tokens.is_none() && budget.max_cost_usd.is_none() {
                e.push(FieldError::new(
                    "spec.budget",
                    FieldErrorKind::Required,
                    "set maxTokens, maxCostUSD or both",
                ));
            }
            if budget.max_tokens == Some(0) {
                e.push(FieldError::new(
                    "spec.budget.maxTokens",
                    FieldErrorKind::OutOfRange,
                    "must be at least 1",
                ));
            }
            if let Some(cost) = &budget.max_cost_usd {
                check_cost(e, "spec.budget.maxCostUSD", cost);
            }
        }

        if let Some(checkpoint) = &self.checkpoint {
            in_range(
                e,
                "spec.checkpoint.intervalSeconds",
                checkpoint.interval_seconds.into(),
                5,
                MAX_SECONDS.into(),
            );
            in_range(
                e,
                "spec.checkpoint.keep",
                checkpoint.keep.into(),
                1,
                MAX_CHECKPOINTS_KEPT.into(),
            );
        }
        if let Some(resume) = &self.resume_from {
            check_subdomain(e, "spec.resumeFrom.checkpoint", &resume.checkpoint);
        }

        if !self.subtasks.is_empty() {
            let limit = self.max_subtasks.min(MAX_SUBTASKS);
            if self.subtasks.len() > limit as usize {
                e.push(FieldError::new(
                    "spec.subtasks",
                    FieldErrorKind::TooMany,
                    format!(
                        "has {} entries, more than maxSubtasks ({limit})",
                        self.subtasks.len()
                    ),
                ));
            }
            if let Err(SpecErrors(plan_errors)) = check_subtasks(&self.subtasks, "spec.subtasks") {
                e.extend(plan_errors);
            }
        }

        into_result(errors)
    }
}

/// Checks a list of subtasks (a manual DAG, or a planner's answer under another `path`) and
/// builds its [`Plan`]. Returns every problem found.
pub fn check_subtasks(subtasks: &[SubtaskSpec], path: &str) -> Result<Plan, SpecErrors> {
    let mut errors = Vec::new();
    for (i, subtask) in subtasks.iter().enumerate() {
        let prompt = format!("{path}[{i}].prompt");
        not_blank(&mut errors, &prompt, &subtask.prompt);
        max_len(
            &mut errors,
            &prompt,
            &subtask.prompt,
            MAX_SUBTASK_PROMPT_LEN,
        );
        if subtask.depends_on.len() > MAX_SUBTASKS as usize {
            errors.push(FieldError::new(
                format!("{path}[{i}].dependsOn"),
                FieldErrorKind::TooMany,
                format!(
                    "has {} entries, more than {MAX_SUBTASKS}",
                    subtask.depends_on.len()
                ),
            ));
        }
        if let Some(voters) = subtask.voters {
            in_range(
                &mut errors,
                &format!("{path}[{i}].voters"),
                voters.into(),
                1,
                MAX_VOTERS.into(),
            );
        }
    }
    let drafts: Vec<DraftNode<'_>> = subtasks
        .iter()
        .map(|s| DraftNode {
            name: &s.name,
            depends_on: &s.depends_on,
        })
        .collect();
    match Plan::new(&drafts, path) {
        Ok(plan) if errors.is_empty() => Ok(plan),
        Ok(_) => Err(SpecErrors(sorted(errors))),
        Err(plan_errors) => {
            errors.extend(plan_errors);
            Err(SpecErrors(sorted(errors)))
        }
    }
}

fn into_result(errors: Vec<FieldError>) -> Result<(), SpecErrors> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}

/// Orders errors by the list positions in their field, so `x[2]` comes before `x[10]`;
/// errors of the same entry keep the order they were found in.
fn sorted(mut errors: Vec<FieldError>) -> Vec<FieldError> {
    errors.sort_by_cached_key(|e| list_positions(&e.field));
    errors
}

fn list_positions(field: &str) -> Vec<usize> {
    field
        .split('[')
        .skip(1)
        .filter_map(|part| part.split_once(']')?.0.parse().ok())
        .collect()
}

fn not_blank(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::Required,
            "must not be empty",
        ));
    }
}

fn max_len(errors: &mut Vec<FieldError>, field: &str, value: &str, max: u32) {
    if value.len() > max as usize {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::TooLong,
            format!("must be at most {max} bytes, not {}", value.len()),
        ));
    }
}

fn in_range(errors: &mut Vec<FieldError>, field: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::OutOfRange,
            format!("must be between {min} and {max}, not {value}"),
        ));
    }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters (Kubernetes object names).
fn check_subdomain(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.len() > MAX_SUBDOMAIN_LEN as usize {
        max_len(errors, field, value, MAX_SUBDOMAIN_LEN);
    } else if value
        .split('.')
        .any(|label| check_dns_label(label, MAX_LABEL_LEN).is_err())
    {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::InvalidName,
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'",
        ));
    }
}

/// A positive decimal of at most 9 integer and 6 fractional digits, e.g. `25.00`.
fn check_cost(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(whole, 9) || !digits(fraction, 6) {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::Invalid,
            format!("must be a decimal number of US dollars like \"25.00\", not \"{value}\""),
        ));
    } else if whole.bytes().chain(fraction.bytes()).all(|b| b == b'0') {
        errors.push(FieldError::new(
            field,
            FieldErrorKind::OutOfRange,
            "must be more than 0",
        ));
    }
}
