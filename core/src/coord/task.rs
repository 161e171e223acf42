//! A handle to one task's keys: registration, cancellation, cleanup, and the per-task parts
//! (shared state, results, budget, events, messages, journals).
//!
//! An agent builds it from the work item it holds, so everything it does addresses only that
//! task's keys; nothing the model says can name a Redis key.

use super::budget::{Budget, Limits};
use super::conn::Redis;
use super::error::CoordResult;
use super::events::EventLog;
use super::journal::Journal;
use super::keys::{EVENT_GROUPS, TaskKeys, field};
use super::mailbox::Mailbox;
use super::results::Results;
use super::state::SharedState;
use crate::dag::SubtaskName;

/// One task's coordination keys.
#[derive(Clone, Debug)]
pub struct Task {
    redis: Redis,
    keys: TaskKeys,
}

impl Task {
    /// The task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// The task's keys.
    pub fn keys(&self) -> &TaskKeys {
        &self.keys
    }

    /// Registers the task: writes its identity, creates its event groups and sets the limits
    /// of its budget that are given (tokens, cost). Safe to repeat.
    pub async fn register(&self, budget: impl Into<Limits>) -> CoordResult<()> {
        let budget = budget.into();
        let (meta, events) = (self.keys.meta(), self.keys.events());
        let pool_uid = self.keys.pool().as_str();
        let task_uid = self.keys.task().as_str();
        self.redis
            .run("register task", |mut c| {
                let (meta, events) = (&meta, &events);
                async move {
                    redis::cmd("HSET")
                        .arg(meta)
                        .arg(field::META_POOL)
                        .arg(pool_uid)
                        .arg(field::META_TASK)
                        .arg(task_uid)
                        .query_async::<()>(&mut c)
                        .await?;
                    for group in EVENT_GROUPS {
                        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                            .arg("CREATE")
                            .arg(events)
                            .arg(group)
                            .arg("0")
                            .arg("MKSTREAM")
                            .query_async(&mut c)
                            .await;
                        match created {
                            Err(e) if e.code() == Some("BUSYGROUP") => {}
                            other => other?,
                        }
                    }
                    Ok(())
                }
            })
            .await?;
        self.budget().set_limits(&budget).await
    }

    /// Whether the task's identity is in Redis; `false` after a registration means its state
    /// was lost (a Redis without persistence restarted).
    pub async fn exists(&self) -> CoordResult<bool> {
        let meta = self.keys.meta();
        self.redis
            .run("task exists", |mut c| {
                let meta = &meta;
                async move { redis::cmd("EXISTS").arg(meta).query_async(&mut c).await }
            })
            .await
    }

    /// Marks the task cancelled with `reason`; agents drop the model call they are in (they
    /// poll [`Task::cancelled`] while it runs) and stop.
    pub async fn cancel(&self, reason: &str) -> CoordResult<()> {
        let key = self.keys.cancel();
        self.redis
            .run("cancel task", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(reason)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Why the task was cancelled, if it was.
    pub async fn cancelled(&self) -> CoordResult<Option<String>> {
        let key = self.keys.cancel();
        self.redis
            .run("task cancelled", |mut c| {
                let key = &key;
                async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
            })
            .await
    }

    /// Deletes every key of the task (the Task finalizer's cleanup); returns how many existed.
    pub async fn delete_all(&self) -> CoordResult<u64> {
        let mut keys = self.journals().await?;
        keys.extend(self.keys.fixed());
        self.unlink("delete task keys", &keys).await
    }

    /// Makes the keys a finished task no longer needs ([`TaskKeys::transient`] and every
    /// journal) expire at `at_ms` (milliseconds since the Unix epoch; a moment passed deletes
    /// them now). An absolute time, so repeating it (after an operator restart) never pushes
    /// the expiry out; Redis drops them even if no operator is running then. Returns how many
    /// keys exist to expire.
    pub async fn expire_transient_at(&self, at_ms: u64) -> CoordResult<u64> {
        let mut keys = self.journals().await?;
        keys.extend(self.keys.transient());
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("PEXPIREAT").arg(key).arg(at_ms);
        }
        let set: Vec<u64> = self
            .redis
            .run("expire finished task keys", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(set.into_iter().sum())
    }

    /// Deletes the keys a finished task no longer needs now (what [`Self::expire_transient_at`]
    /// expires, including any an agent wrote after that); the retained keys stay. Returns how
    /// many existed.
    pub async fn drop_transient(&self) -> CoordResult<u64> {
        let mut keys = self.journals().await?;
        keys.extend(self.keys.transient());
        self.unlink("drop finished task keys", &keys).await
    }

    /// The keys of the journals the journal index lists.
    async fn journals(&self) -> CoordResult<Vec<String>> {
        let index = self.keys.journal_index();
        let subtasks: Vec<String> = self
            .redis
            .run("list journals", |mut c| {
                let index = &index;
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await?;
        Ok(subtasks
            .iter()
            .filter_map(|s| SubtaskName::new(s).ok())
            .map(|s| self.keys.journal(&s))
            .collect())
    }

    async fn unlink(&self, op: &'static str, keys: &[String]) -> CoordResult<u64> {
        // All keys share the task's slot, so one UNLINK removes them atomically.
        self.redis
            .run(op, |mut c| async move {
                redis::cmd("UNLINK").arg(keys).query_async(&mut c).await
            })
            .await
    }

    /// The task's goal and plan.
    pub fn plan(&self) -> super::plan::TaskPlan {
        super::plan::TaskPlan::new(self.redis.clone(), self.keys.clone())
    }

    /// The task's shared state.
    pub fn state(&self) -> SharedState {
        SharedState::new(self.redis.clone(), self.keys.clone())
    }

    /// The task's subtask results.
    pub fn results(&self) -> Results {
        Results::new(self.redis.clone(), self.keys.clone())
    }

    /// The task's budget (tokens and cost).
    pub fn budget(&self) -> Budget {
        Budget::new(self.redis.clone(), self.keys.clone())
    }

    /// The task's agent → operator event log.
    pub fn events(&self) -> EventLog {
        EventLog::new(self.redis.clone(), self.keys.clone())
    }

    /// The task's inter-agent message bus.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox::new(self.redis.clone(), self.keys.clone())
    }

    /// The conversation journal of `subtask`.
    pub fn journal(&self, subtask: &SubtaskName) -> Journal {
        Journal::new(self.redis.clone(), self.keys.clone(), subtask.clone())
    }
}
