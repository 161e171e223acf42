//! What the decision reads besides the Task and the events folded into its status: the
//! planner's answer once it succeeded, the token budget as the agents account it in Redis,
//! whether the budget is spent, when the Task was accepted, and whether its pool can run agents.

use k8s_openapi::jiff::Timestamp;
use maos_core::api::v1alpha1::{BudgetStatus, SubtaskPhase, Task, TaskStatus};
use maos_core::dag::SubtaskName;

use super::super::Error;
use super::attach::Live;
use crate::lifecycle::{self, Facts, PLAN, accepted_at};
use crate::status::cost_usd;

/// The facts as read, owned; [`Read::facts`] lends them to the decision.
pub(super) struct Read {
    plan_result: Option<String>,
    budget_exhausted: Option<String>,
    pool_blocker: Option<String>,
    /// When the Task was accepted: `activeDeadlineSeconds` counts from then.
    pub(super) accepted_at: Timestamp,
}

impl Read {
    /// The facts for [`lifecycle::advance`].
    pub(super) fn facts(&self, generation: Option<i64>, now: Timestamp) -> Facts<'_> {
        Facts {
            now,
            accepted_at: self.accepted_at,
            plan_result: self.plan_result.as_deref(),
            budget_exhausted: self.budget_exhausted.clone(),
            generation,
            pool_blocker: self.pool_blocker.as_deref(),
        }
    }
}

/// Reads the facts; the token budget goes into `status.budget` on the way (the decision reads
/// it there, and the user sees it there).
pub(super) async fn read(
    task: &Task,
    live: &Live,
    status: &mut TaskStatus,
    budget_refused: Option<&str>,
    now: Timestamp,
) -> Result<Read, Error> {
    let plan_result = if awaits_plan_review(status) {
        live.coord
            .results()
            .get(&SubtaskName::new(PLAN)?)
            .await?
            .map(|r| r.result)
    } else {
        None
    };
    status.budget = token_budget(task, &live.coord).await?;
    Ok(Read {
        plan_result,
        budget_exhausted: budget_exhausted(task, status, budget_refused),
        pool_blocker: live
            .cached_pool
            .as_deref()
            .and_then(lifecycle::pool_blocker),
        accepted_at: accepted_at(status, now),
    })
}

/// Whether the planner succeeded and its plan is not accepted yet: the decision reviews its
/// answer.
fn awaits_plan_review(status: &TaskStatus) -> bool {
    status.plan_revision.is_none()
        && status
            .subtasks
            .iter()
            .any(|s| s.name == PLAN && s.phase == SubtaskPhase::Succeeded)
}

/// The Task's token budget as the agents account it in Redis, when it has one.
async fn token_budget(
    task: &Task,
    coord: &maos_core::coord::Task,
) -> Result<Option<BudgetStatus>, Error> {
    let Some(limit) = task.spec.budget.as_ref().and_then(|b| b.max_tokens) else {
        return Ok(None);
    };
    let usage = coord.budget().usage().await?;
    Ok(Some(BudgetStatus {
        max_tokens: limit,
        spent_tokens: usage.spent,
        reserved_tokens: usage.reserved,
    }))
}

/// Whether the Task's budget is spent: tokens (`status.budget`), cost (`status.usage`), or an
/// agent that could not reserve its next call (`refused`: its `BudgetExceeded: …` reason).
fn budget_exhausted(task: &Task, status: &TaskStatus, refused: Option<&str>) -> Option<String> {
    let budget = task.spec.budget.as_ref()?;
    if let Some(tokens) = status.budget.filter(|b| b.spent_tokens >= b.max_tokens) {
        return Some(format!(
            "the token budget ({}) is spent: {} tokens used",
            tokens.max_tokens, tokens.spent_tokens
        ));
    }
    if let Some(max) = budget
        .max_cost_usd
        .as_deref()
        .and_then(|c| c.parse::<f64>().ok())
    {
        let cost = cost_usd(status);
        if cost >= max {
            return Some(format!(
                "the cost budget (${max:.2}) is spent: ${cost:.4} used"
            ));
        }
    }
    refused.map(|reason| {
        let detail = reason
            .split_once(':')
            .map_or(reason, |(_, detail)| detail)
            .trim();
        format!("an agent could not reserve its next model call: {detail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maos_core::api::v1alpha1::{SubtaskStatus, Usage};

    fn task(budget: serde_json::Value) -> Task {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "maos.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": {
                "prompt": "Compare vector databases.",
                "poolRef": {"name": "default"},
                "budget": budget,
            },
        }))
        .expect("task")
    }

    fn spent(tokens: u64, max: u64) -> TaskStatus {
        TaskStatus {
            budget: Some(BudgetStatus {
                max_tokens: max,
                spent_tokens: tokens,
                reserved_tokens: 0,
            }),
            ..TaskStatus::default()
        }
    }

    fn costing(usd: &str) -> TaskStatus {
        TaskStatus {
            usage: Some(Usage {
                cost_usd: Some(usd.to_owned()),
                ..Usage::default()
            }),
            ..TaskStatus::default()
        }
    }

    fn planner(phase: SubtaskPhase) -> SubtaskStatus {
        SubtaskStatus {
            name: PLAN.to_owned(),
            phase,
            depends_on: vec![],
            agent: None,
            attempts: Some(1),
            started_at: None,
            finished_at: None,
            tokens: None,
            message: None,
        }
    }

    #[test]
    fn a_task_without_a_budget_is_never_out_of_budget() {
        let mut task = task(serde_json::Value::Null);
        task.spec.budget = None;
        assert_eq!(
            budget_exhausted(&task, &spent(10, 5), Some("BudgetExceeded: no tokens left")),
            None
        );
    }

    #[test]
    fn the_token_budget_is_spent_once_the_agents_used_it_all() {
        let task = task(serde_json::json!({"maxTokens": 1000}));
        assert_eq!(budget_exhausted(&task, &spent(999, 1000), None), None);
        assert_eq!(
            budget_exhausted(&task, &spent(1000, 1000), None).as_deref(),
            Some("the token budget (1000) is spent: 1000 tokens used")
        );
    }

    #[test]
    fn the_cost_budget_is_spent_once_the_usage_costs_as_much() {
        let task = task(serde_json::json!({"maxCostUSD": "0.50"}));
        assert_eq!(budget_exhausted(&task, &costing("0.4999"), None), None);
        assert_eq!(
            budget_exhausted(&task, &costing("0.5"), None).as_deref(),
            Some("the cost budget ($0.50) is spent: $0.5000 used")
        );
    }

    #[test]
    fn an_agent_refused_a_reservation_spends_the_budget_saying_why() {
        let task = task(serde_json::json!({"maxTokens": 1000}));
        assert_eq!(
            budget_exhausted(
                &task,
                &spent(10, 1000),
                Some("BudgetExceeded: 900 tokens reserved by others")
            )
            .as_deref(),
            Some("an agent could not reserve its next model call: 900 tokens reserved by others")
        );
    }

    #[test]
    fn the_planners_answer_is_reviewed_once_it_succeeded_and_until_a_plan_is_accepted() {
        let mut status = TaskStatus {
            subtasks: vec![planner(SubtaskPhase::Running)],
            ..TaskStatus::default()
        };
        assert!(!awaits_plan_review(&status), "still planning");
        status.subtasks[0].phase = SubtaskPhase::Succeeded;
        assert!(awaits_plan_review(&status));
        status.plan_revision = Some(1);
        assert!(!awaits_plan_review(&status), "already accepted");
    }
}
