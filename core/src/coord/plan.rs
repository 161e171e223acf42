//! What an agent must know to work a subtask: the task's goal and its plan (each subtask's
//! prompt and dependencies), written by the operator into the task's `meta` hash.
//!
//! The operator writes the goal when it registers the task and the subtasks when a plan is
//! accepted (manual or from the planner); an agent reads the one subtask it claimed. Status
//! stays small (summaries only) because the full plan lives here, with the task's other keys,
//! so cleanup and checkpoints cover it too.

use std::collections::HashMap;

use redis::Value;

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::keys::TaskKeys;
use crate::api::v1alpha1::SubtaskSpec;

/// Meta field: the task's goal (its prompt).
const FIELD_GOAL: &str = "goal";
/// Meta field: the planner's bound on the number of subtasks.
const FIELD_MAX_SUBTASKS: &str = "maxSubtasks";
/// Meta field: the MCP tools the task's agents may use (`spec.tools`, a JSON array).
const FIELD_TOOLS: &str = "tools";
/// Meta field: the Task's extended-thinking budget in tokens; empty when it sets none.
const FIELD_THINKING_BUDGET: &str = "thinkingBudgetTokens";
/// Meta field: why the operator rejected the planner's last plan, for the next planner.
const FIELD_PLAN_FEEDBACK: &str = "planFeedback";
/// Meta field prefix: `subtask:<name>` holds the subtask's spec as JSON.
const SUBTASK_PREFIX: &str = "subtask:";

/// The goal of a task as the operator registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goal {
    /// The task's prompt.
    pub prompt: String,
    /// The planner's bound on the number of subtasks.
    pub max_subtasks: u32,
    /// The pool's MCP tools the task's agents may use: `<server>` or `<server>/<tool>`.
    pub tools: Vec<String>,
    /// The Task's extended-thinking budget for its agents' model calls (`spec.thinking`),
    /// overriding its pool's; none: the pool's.
    pub thinking_budget_tokens: Option<u32>,
}

/// A task's goal and plan.
#[derive(Clone, Debug)]
pub struct TaskPlan {
    redis: Redis,
    keys: TaskKeys,
}

impl TaskPlan {
    /// The plan of the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// Records the goal (the operator, at registration). Safe to repeat.
    pub async fn set_goal(&self, goal: &Goal) -> CoordResult<()> {
        let meta = self.keys.meta();
        let tools = serde_json::to_string(&goal.tools)
            .map_err(|e| CoordError::protocol("set goal", e.to_string()))?;
        self.redis
            .run("set goal", |mut c| {
                let (meta, tools) = (&meta, &tools);
                async move {
                    redis::cmd("HSET")
                        .arg(meta)
                        .arg(FIELD_GOAL)
                        .arg(&goal.prompt)
                        .arg(FIELD_MAX_SUBTASKS)
                        .arg(goal.max_subtasks)
                        .arg(FIELD_TOOLS)
                        .arg(tools)
                        // Written empty rather than deleted, so one HSET stays the whole write.
                        .arg(FIELD_THINKING_BUDGET)
                        .arg(
                            goal.thinking_budget_tokens
                                .map(|n| n.to_string())
                                .unwrap_or_default(),
                        )
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// The goal, if the task has one registered.
    pub async fn goal(&self) -> CoordResult<Option<Goal>> {
        let meta = self.keys.meta();
        type Fields = (Option<String>, Option<u32>, Option<String>, Option<String>);
        let (prompt, max, tools, thinking): Fields = self
            .redis
            .run("read goal", |mut c| {
                let meta = &meta;
                async move {
                    redis::cmd("HMGET")
                        .arg(meta)
                        .arg(FIELD_GOAL)
                        .arg(FIELD_MAX_SUBTASKS)
                        .arg(FIELD_TOOLS)
                        .arg(FIELD_THINKING_BUDGET)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        // A task registered before tools existed has none.
        let tools = match tools {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                CoordError::protocol("read goal", format!("the tools field is not a list: {e}"))
            })?,
            None => Vec::new(),
        };
        Ok(prompt.map(|prompt| Goal {
            prompt,
            max_subtasks: max.unwrap_or(crate::api::v1alpha1::limits::MAX_SUBTASKS),
            tools,
            thinking_budget_tokens: thinking.and_then(|n| n.parse().ok()),
        }))
    }

    /// Records the subtasks of an accepted plan, in one write.
    pub async fn set_subtasks(&self, subtasks: &[SubtaskSpec]) -> CoordResult<()> {
        if subtasks.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.meta());
        for subtask in subtasks {
            let json = serde_json::to_string(subtask)
                .map_err(|e| CoordError::protocol("set plan", e.to_string()))?;
            cmd.arg(format!("{SUBTASK_PREFIX}{}", subtask.name))
                .arg(json);
        }
        self.redis
            .run("set plan", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// One subtask's spec, if the plan has it.
    pub async fn subtask(&self, name: &str) -> CoordResult<Option<SubtaskSpec>> {
        let meta = self.keys.meta();
        let field = format!("{SUBTASK_PREFIX}{name}");
        let raw: Option<String> = self
            .redis
            .run("read subtask", |mut c| {
                let (meta, field) = (&meta, &field);
                async move {
                    redis::cmd("HGET")
                        .arg(meta)
                        .arg(field)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        raw.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| CoordError::protocol("read subtask", e.to_string()))
        })
        .transpose()
    }

    /// Records why the last plan was rejected, so the next planner is told (the operator).
    pub async fn set_feedback(&self, feedback: &str) -> CoordResult<()> {
        let meta = self.keys.meta();
        self.redis
            .run("set plan feedback", |mut c| {
                let meta = &meta;
                async move {
                    redis::cmd("HSET")
                        .arg(meta)
                        .arg(FIELD_PLAN_FEEDBACK)
                        .arg(feedback)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Why the last plan was rejected, if one was.
    pub async fn feedback(&self) -> CoordResult<Option<String>> {
        let meta = self.keys.meta();
        self.redis
            .run("read plan feedback", |mut c| {
                let meta = &meta;
                async move {
                    redis::cmd("HGET")
                        .arg(meta)
                        .arg(FIELD_PLAN_FEEDBACK)
                        .query_async(&mut c)
                        .await
                }
            })
            .await
    }

    /// Every subtask of the plan, in name order.
    pub async fn subtasks(&self) -> CoordResult<Vec<SubtaskSpec>> {
        let meta = self.keys.meta();
        let all: HashMap<String, Value> = self
            .redis
            .run("read plan", |mut c| {
                let meta = &meta;
                async move { redis::cmd("HGETALL").arg(meta).query_async(&mut c).await }
            })
            .await?;
        let mut subtasks = Vec::new();
        for (field, value) in all {
            if field.starts_with(SUBTASK_PREFIX) {
                let json: String = redis::FromRedisValue::from_redis_value(value)
                    .map_err(|e| CoordError::protocol("read plan", e.to_string()))?;
                let spec: SubtaskSpec = serde_json::from_str(&json)
                    .map_err(|e| CoordError::protocol("read plan", e.to_string()))?;
                subtasks.push(spec);
            }
        }
        subtasks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(subtasks)
    }
}
