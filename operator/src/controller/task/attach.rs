//! What must hold before a Task's next step is decided: its spec is valid, its pool exists and
//! lives, and its Redis state is registered (fresh, or resumed from a Checkpoint) and still
//! there. Otherwise the step stops here, with the condition that says why or with what
//! [`super::lost`] makes of a pool or state gone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use maos_core::api::v1alpha1::conditions::{reason, task as cond};
use maos_core::api::v1alpha1::{AgentPool, SubtaskPhase, Task, TaskPhase, unserved_tools};
use maos_core::coord::budget::Limits;
use maos_core::coord::plan::Goal;
use maos_core::coord::{Pool, PoolUid, TaskUid};
use maos_core::price::micro_usd;

use super::super::task_checkpoints::{self, Resume};
use super::super::{Context, Error};
use super::TaskMemory;
use super::effects::enqueue;
use super::lost;
use super::status_write::write_status;
use crate::checkpoint::resume::Restored;
use crate::lifecycle::{self, Refusal, accepted_at, refuse};

/// How long a Task whose pool is missing waits before it looks again (the pool's creation
/// also wakes it).
const POOL_RECHECK: Duration = Duration::from_secs(10);

/// A live Task's place in Redis, and its pool as the cache shows it.
pub(super) struct Live {
    /// The Task's pool in Redis.
    pub(super) pool: Pool,
    /// The Task in Redis.
    pub(super) coord: maos_core::coord::Task,
    /// The Task's AgentPool from the watch cache (for whether it can run agents).
    pub(super) cached_pool: Option<Arc<AgentPool>>,
}

/// What [`attach`] came to.
pub(super) enum Attached {
    /// The Task runs: decide its next step.
    Live(Live),
    /// The step ended here (its status written): reconcile again as this says.
    Stopped(Action),
}

/// Checks the spec, finds the pool, and registers the Task in Redis (or checks it still is).
pub(super) async fn attach(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    now: Timestamp,
) -> Result<Attached, Error> {
    if let Err(errors) = task.validate() {
        let refused = Refused::new(reason::INVALID_SPEC, errors.to_string(), Refusal::Permanent);
        return refused.show(task, ctx, api, memory, before, now).await;
    }
    // The pool: looked up until the Task is registered; its uid then names the Task's keys.
    let pool_uid = match memory.status.pool_uid.clone() {
        Some(uid) => uid,
        None => match find_pool(task, ctx).await? {
            Some(pool) => {
                // Checked until the Task is accepted: an edit of the pool wakes it.
                if let Some(message) = unserved_tools(&task.spec.tools, pool.spec.tools.as_ref()) {
                    let refused = Refused::new(reason::TOOLS_UNAVAILABLE, message, Refusal::Wait);
                    return refused.show(task, ctx, api, memory, before, now).await;
                }
                pool.uid().ok_or(Error::MissingMetadata("pool uid"))?
            }
            None => {
                let message = format!(
                    "AgentPool {} not found in namespace {}; waiting for it",
                    task.spec.pool_ref.name,
                    task.namespace().unwrap_or_default()
                );
                let refused = Refused::new(reason::POOL_NOT_FOUND, message, Refusal::Wait);
                return refused.show(task, ctx, api, memory, before, now).await;
            }
        },
    };
    let live = Live::of(task, ctx, &pool_uid)?;
    if memory.status.pool_uid.is_some()
        && pool_gone(task, ctx, live.cached_pool.as_deref(), &pool_uid).await?
    {
        let action =
            lost::pool_deleted(task, ctx, api, memory, before, &live.pool, &live.coord).await?;
        return Ok(Attached::Stopped(action));
    }
    if memory.status.pool_uid.is_none() {
        return register_and_accept(task, ctx, api, memory, before, live, pool_uid, now).await;
    }
    // Registered before (by this process, or by one that wrote this status): still there?
    if !live.coord.exists().await? {
        let action =
            lost::state_lost(task, ctx, api, memory, before, &live.pool, &live.coord).await?;
        return Ok(Attached::Stopped(action));
    }
    if !memory.registered {
        // A status from before this process: registration is safe to repeat.
        register_and_accept(task, ctx, api, memory, before, live, pool_uid, now).await
    } else {
        Ok(Attached::Live(live))
    }
}

impl Live {
    /// The Task's place in the pool with uid `pool_uid`.
    fn of(task: &Task, ctx: &Context, pool_uid: &str) -> Result<Self, Error> {
        let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;
        let pool = Pool::new(ctx.redis.clone(), &PoolUid::new(pool_uid)?);
        let coord = pool.task(&TaskUid::new(&uid)?);
        let cached_pool = ctx.pool_cache.get(
            &ObjectRef::new(&task.spec.pool_ref.name).within(&task.namespace().unwrap_or_default()),
        );
        Ok(Self {
            pool,
            coord,
            cached_pool,
        })
    }
}

/// Registers the Task (resumed from its `spec.resumeFrom` when it is new and has one), accepts
/// it, and dispatches again what a resumed Checkpoint had in flight.
#[allow(clippy::too_many_arguments)]
async fn register_and_accept(
    task: &Task,
    ctx: &Arc<Context>,
    api: &Api<Task>,
    memory: &mut TaskMemory,
    before: TaskPhase,
    live: Live,
    pool_uid: String,
    now: Timestamp,
) -> Result<Attached, Error> {
    let start = if memory.status.pool_uid.is_none() && task.spec.resume_from.is_some() {
        match resume(task, ctx, &live.coord, memory, now).await? {
            Ok(resumed) => resumed,
            Err(refused) => return refused.show(task, ctx, api, memory, before, now).await,
        }
    } else {
        Start::fresh(task)
    };
    register(task, &live.pool, &live.coord).await?;
    memory.registered = true;
    memory.status.pool_uid = Some(pool_uid);
    lifecycle::set(
        &mut memory.status,
        cond::ACCEPTED,
        "True",
        start.why,
        &start.message,
        task.metadata.generation,
        now,
    );
    let accepted_at = accepted_at(&memory.status, now);
    enqueue(
        task,
        &live.pool,
        &live.coord,
        start.redispatch,
        accepted_at,
        now,
    )
    .await?;
    Ok(Attached::Live(live))
}

/// How a Task is accepted: fresh, or resumed from a Checkpoint with work to dispatch again.
struct Start {
    /// `Accepted` reason.
    why: &'static str,
    /// `Accepted` message.
    message: String,
    /// The work the Checkpoint had in flight.
    redispatch: Vec<lifecycle::WorkOrder>,
}

impl Start {
    fn fresh(task: &Task) -> Self {
        Self {
            why: "Registered",
            message: format!("registered with AgentPool {}", task.spec.pool_ref.name),
            redispatch: Vec::new(),
        }
    }
}

/// A Task not accepted (yet, or ever): the condition to show, and when to look again.
struct Refused {
    why: &'static str,
    message: String,
    refusal: Refusal,
}

impl Refused {
    fn new(why: &'static str, message: String, refusal: Refusal) -> Self {
        Self {
            why,
            message,
            refusal,
        }
    }

    /// Shows the refusal in the status, writes it at once, and says when to look again.
    async fn show(
        self,
        task: &Task,
        ctx: &Arc<Context>,
        api: &Api<Task>,
        memory: &mut TaskMemory,
        before: TaskPhase,
        now: Timestamp,
    ) -> Result<Attached, Error> {
        refuse(
            &mut memory.status,
            self.why,
            &self.message,
            self.refusal,
            task.metadata.generation,
            now,
        );
        write_status(task, ctx, api, memory, before, true).await?;
        Ok(Attached::Stopped(match self.refusal {
            Refusal::Permanent => Action::await_change(),
            Refusal::Wait => Action::requeue(POOL_RECHECK),
        }))
    }
}

/// The Task's AgentPool, if it exists.
async fn find_pool(task: &Task, ctx: &Context) -> Result<Option<AgentPool>, Error> {
    let pools: Api<AgentPool> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    Ok(pools.get_opt(&task.spec.pool_ref.name).await?)
}

/// Whether the Task's pool (uid `pool_uid`) is gone: the cache says so and the API server
/// agrees (the cache may lag a pool just created).
async fn pool_gone(
    task: &Task,
    ctx: &Context,
    cached: Option<&AgentPool>,
    pool_uid: &str,
) -> Result<bool, Error> {
    if pool_lives(cached, pool_uid) {
        return Ok(false);
    }
    let pools: Api<AgentPool> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    let current = pools.get_opt(&task.spec.pool_ref.name).await?;
    Ok(!pool_lives(current.as_ref(), pool_uid))
}

/// Whether `pool` is the live AgentPool with uid `uid` (not gone, not replaced by a namesake,
/// not being deleted).
fn pool_lives(pool: Option<&AgentPool>, uid: &str) -> bool {
    pool.is_some_and(|p| {
        p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()
    })
}

/// Resumes a new Task from its `spec.resumeFrom`: adopts the restored status and tells the user
/// (an Event), or says why it cannot be (yet).
async fn resume(
    task: &Task,
    ctx: &Context,
    coord: &maos_core::coord::Task,
    memory: &mut TaskMemory,
    now: Timestamp,
) -> Result<Result<Start, Refused>, Error> {
    let Some(from) = &task.spec.resume_from else {
        return Ok(Ok(Start::fresh(task)));
    };
    let restored = match task_checkpoints::resume(task, ctx, coord.keys(), now).await? {
        Resume::Restored(restored) => restored,
        Resume::Wait { why, message } => {
            return Ok(Err(Refused::new(why, message, Refusal::Wait)));
        }
        Resume::Fail { why, message } => {
            return Ok(Err(Refused::new(why, message, Refusal::Permanent)));
        }
    };
    let Restored {
        status, redispatch, ..
    } = *restored;
    memory.adopt(status);
    let done = memory
        .status
        .subtasks
        .iter()
        .filter(|s| s.phase == SubtaskPhase::Succeeded)
        .count();
    let note = format!(
        "resumed from Checkpoint {}: {done} of {} subtask(s) already done",
        from.checkpoint,
        memory.status.subtasks.len(),
    );
    ctx.event(task, EventType::Normal, reason::RESUMED, "Resume", note)
        .await;
    Ok(Ok(Start {
        why: reason::RESUMED,
        message: format!(
            "resumed from Checkpoint {} in AgentPool {}",
            from.checkpoint, task.spec.pool_ref.name
        ),
        redispatch,
    }))
}

/// Registers the Task in Redis (identity, event groups, token and cost budget, goal) and makes
/// sure its pool's queue group exists (after a flushed Redis it is gone too). Safe to repeat.
pub(super) async fn register(
    task: &Task,
    pool: &Pool,
    coord: &maos_core::coord::Task,
) -> Result<(), Error> {
    let budget = task.spec.budget.as_ref();
    coord
        .register(Limits {
            tokens: budget.and_then(|b| b.max_tokens),
            // The schema admits only amounts micro_usd reads exactly.
            cost_micro_usd: budget
                .and_then(|b| b.max_cost_usd.as_deref())
                .and_then(micro_usd),
        })
        .await?;
    coord
        .plan()
        .set_goal(&Goal {
            prompt: task.spec.prompt.clone(),
            max_subtasks: task.spec.max_subtasks,
            tools: task.spec.tools.clone(),
            thinking_budget_tokens: task.spec.thinking.as_ref().map(|t| t.budget_tokens),
        })
        .await?;
    pool.queue().ensure_group().await?;
    Ok(())
}
