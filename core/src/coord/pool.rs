//! A handle to one AgentPool's keys: its work queue and its rate limits.

use super::conn::Redis;
use super::error::CoordResult;
use super::keys::{PoolKeys, PoolUid, TaskUid};
use super::model_errors::ModelErrors;
use super::queue::{WorkItem, WorkQueue};
use super::ratelimit::{RateLimiter, RateLimits};
use super::task::Task;

/// One pool's coordination keys.
#[derive(Clone, Debug)]
pub struct Pool {
    redis: Redis,
    keys: PoolKeys,
}

impl Pool {
    /// The pool with uid `pool`.
    pub fn new(redis: Redis, pool: &PoolUid) -> Self {
        Self {
            redis,
            keys: PoolKeys::new(pool),
        }
    }

    /// The pool's keys.
    pub fn keys(&self) -> &PoolKeys {
        &self.keys
    }

    /// The pool's work queue.
    pub fn queue(&self) -> WorkQueue {
        WorkQueue::new(self.redis.clone(), self.keys.clone())
    }

    /// The pool's shared rate limiter with `limits`.
    pub fn rate_limiter(&self, limits: RateLimits) -> RateLimiter {
        RateLimiter::new(self.redis.clone(), self.keys.clone(), limits)
    }

    /// The agents' reports of the API refusing the pool's key or model.
    pub fn model_errors(&self) -> ModelErrors {
        ModelErrors::new(self.redis.clone(), &self.keys)
    }

    /// The agents' reports of MCP servers they cannot use.
    pub fn tool_errors(&self) -> super::tool_errors::ToolErrors {
        super::tool_errors::ToolErrors::new(self.redis.clone(), &self.keys)
    }

    /// The handle of task `task` of this pool.
    pub fn task(&self, task: &TaskUid) -> Task {
        Task::new(self.redis.clone(), self.keys.task(task))
    }

    /// The handle of the task a work item belongs to: all an agent may touch while it holds
    /// the item.
    pub fn task_of(&self, item: &WorkItem) -> Task {
        self.task(&item.task)
    }

    /// Removes every trace of task `task`: its queue items and all of its keys (the Task
    /// finalizer's cleanup). Safe to repeat.
    pub async fn delete_task(&self, task: &TaskUid) -> CoordResult<()> {
        // Queue items first: an item left behind would hand an agent a task with no keys.
        self.queue().purge_task(task).await?;
        self.task(task).delete_all().await?;
        Ok(())
    }

    /// Drops what finished task `task` no longer needs (after its retention): queue items
    /// left behind, its enqueue-once markers and [`Task::drop_transient`]'s keys (conversations,
    /// event and bus streams, applied effects). What its status, result and Checkpoints read
    /// stays until the Task is deleted. Safe to repeat; returns how many task keys went.
    pub async fn retire_task(&self, task: &TaskUid) -> CoordResult<u64> {
        self.queue().purge_task(task).await?;
        self.task(task).drop_transient().await
    }

    /// Removes the pool's own keys (queue, heartbeats, rate limits, dispatch markers, model-error
    /// reports) when the AgentPool is deleted; its tasks' keys go with each Task. Returns how
    /// many existed.
    pub async fn delete_keys(&self) -> CoordResult<u64> {
        let keys = [
            self.keys.work(),
            self.keys.heartbeats(),
            self.keys.rate_limit(),
            self.keys.dispatched(),
            self.keys.model_errors(),
            self.keys.tool_errors(),
        ];
        // All carry the pool's hash tag: one slot, one command.
        self.redis
            .run("delete pool keys", |mut c| {
                let keys = &keys;
                async move { redis::cmd("UNLINK").arg(keys).query_async(&mut c).await }
            })
            .await
    }
}
