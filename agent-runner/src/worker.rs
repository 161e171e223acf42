//! The agent's outer loop: beat, claim one work item at a time, work it, report how it ended,
//! ack it; on shutdown, stop claiming, release what is held and leave the heartbeats.

use std::sync::Arc;
use std::time::Duration;

use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::model_errors::{ModelErrorReport, ModelErrors};
use maos_core::coord::queue::{Claimed, WorkItem, WorkKind};
use maos_core::coord::tool_errors::ServerDown;
use maos_core::coord::{AgentName, CoordError, Pool, PoolUid, Redis, RedisConfig, Task, Topology};
use tokio::sync::watch;

use crate::agent::{self, AgentError, Brief, Ending, ModelSettings, WorkItemRun};
use crate::claude::{ClaudeClient, ClaudeError, ClientConfig};
use crate::config::AgentConfig;
use crate::mcp::McpTools;
use crate::metrics::{AgentMetrics, OutcomeLabel};

/// How long one claim waits for work before the loop checks for shutdown again.
const CLAIM_BLOCK: Duration = Duration::from_secs(1);
/// How long an agent waits at start for its MCP servers' first connection before it claims work.
const MCP_FIRST_CONNECT: Duration = Duration::from_secs(20);
/// How long each shutdown step (release, leave the heartbeats) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most items held before a restart that are resumed at start.
const RESUME_BATCH: usize = 16;
/// The pause after a coordination failure before the loop goes on.
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// What a shutdown keeps back from its grace for the cleanup after the call in flight: the
/// release and the leaving of the heartbeats, and a margin for settling the call.
const CLEANUP_RESERVE: Duration = Duration::from_secs(2 * CLEANUP_TIMEOUT.as_secs() + 2);

/// How long a model call in flight may still finish once a shutdown begins: what the grace
/// leaves after the cleanup, so the call's answer (already paid for) is journaled for the
/// agent that continues the item, and a call that runs on is dropped and settled in time.
fn drain_on_stop(grace: Duration) -> Duration {
    grace.saturating_sub(CLEANUP_RESERVE)
}

/// The plan item's instructions.
const PLAN_PROMPT: &str = "Split the goal into subtasks that agents can work on in parallel; give each a self-contained prompt and list only the dependencies it really needs.";
/// The synthesize item's instructions.
const SYNTHESIZE_PROMPT: &str =
    "Merge the results of every subtask into one complete, well-organised answer to the goal.";

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Redis could not be reached at start.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// The Claude client could not be built.
    #[error(transparent)]
    Claude(#[from] ClaudeError),
}

/// Runs the agent until `shutdown` turns true; then releases its item and returns.
pub async fn run(
    config: AgentConfig,
    claude: ClientConfig,
    metrics: Arc<AgentMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let agent = AgentName::new(&config.agent_name)
        .map_err(|e| WorkerError::Config(format!("agent name: {e}")))?;
    let pool_uid = PoolUid::new(&config.pool_uid)
        .map_err(|e| WorkerError::Config(format!("pool uid: {e}")))?;
    let topology = if config.redis_cluster {
        Topology::Cluster
    } else {
        Topology::Standalone
    };
    let tls = config
        .redis_tls()
        .map_err(|e| WorkerError::Config(format!("Redis TLS: {e}")))?;
    let mut redis_config =
        RedisConfig::new(topology, config.redis_urls.iter().cloned()).with_tls(tls);
    if let (Some(user), Some(password)) = (&config.redis_username, &config.redis_password) {
        redis_config = redis_config.with_user(user.clone(), password.clone());
    }
    let redis = Redis::connect(redis_config).await?;
    let pool = Pool::new(redis.clone(), &pool_uid);
    let queue = pool.queue();
    until_library_loaded(|| queue.ensure_group(), &mut shutdown).await?;
    // Blocking claims get a connection of their own, so they never hold up anything else.
    let claimer = Pool::new(redis.dedicated(CLAIM_BLOCK).await?, &pool_uid).queue();
    let client = ClaudeClient::new(claude)?.with_retry_counter(metrics.model_retries.clone());
    let limiter = pool.rate_limiter(config.rate_limits());
    let prices = config
        .price_table()
        .map_err(|err| WorkerError::Config(err.to_string()))?;
    if prices.price(&config.model).is_none() {
        tracing::warn!(model = %config.model, "the model has no price: a Task with a cost budget cannot run on this pool");
    }
    let settings = ModelSettings {
        model: config.model.clone(),
        max_tokens: config.max_tokens,
        thinking_budget_tokens: config.thinking_budget_tokens,
        max_turns: config.max_turns,
        stream: config.stream,
        prices,
        drain_on_stop: drain_on_stop(config.shutdown_grace()),
    };

    // Connecting goes on in the background: a server that is down never holds up the agent.
    let mcp = McpTools::from_env().map_err(|e| WorkerError::Config(e.to_string()))?;

    let model_errors = pool.model_errors();
    // Whether this agent's report of a refused key or model is in the pool's status.
    let mut reported_model_error = false;

    until_library_loaded(|| queue.heartbeat(&agent), &mut shutdown).await?;
    let beats = tokio::spawn(beat(
        queue.clone(),
        agent.clone(),
        config.heartbeat(),
        shutdown.clone(),
    ));
    let tool_reports = tokio::spawn(report_tools(
        mcp.clone(),
        pool.tool_errors(),
        agent.clone(),
        config.heartbeat(),
        shutdown.clone(),
    ));
    // Work claimed before the servers answered would be offered none of their tools. A server
    // that takes longer is down for now (its tools come with later items once it is up).
    if tokio::time::timeout(MCP_FIRST_CONNECT, mcp.settled())
        .await
        .is_err()
    {
        tracing::warn!("MCP servers still connecting; claiming work without their tools");
    }
    tracing::info!(agent = %agent, pool = %pool_uid, "agent ready");

    // First what this agent held before a restart under the same name (a container restart
    // keeps the pod name): never redelivered by a plain claim, it is resumed from its journal.
    let mut resume = true;
    while !*shutdown.borrow() {
        let claimed = if resume {
            let held = claimer.claim_own_pending(&agent, RESUME_BATCH).await;
            if let Ok(items) = &held {
                resume = false;
                if !items.is_empty() {
                    tracing::info!(items = items.len(), "resuming work held before a restart");
                }
            }
            held
        } else {
            tokio::select! {
                claimed = claimer.claim(&agent, 1, Some(CLAIM_BLOCK)) => claimed,
                _ = shutdown.changed() => break,
            }
        };
        let items = match claimed {
            Ok(items) => items,
            Err(err) => {
                tracing::warn!(error = %err, "claiming work failed; retrying");
                pause(FAILURE_PAUSE, &mut shutdown).await;
                continue;
            }
        };
        for Claimed { id, item } in items {
            tracing::info!(task = %item.task, subtask = %item.subtask, attempt = item.attempt, kind = ?item.kind, "claimed a work item");
            let task = pool.task(&item.task);
            metrics.busy.set(1);
            let started = std::time::Instant::now();
            let outcome = match brief(&task, &item).await {
                Err(err) => Err(AgentError::from(err)),
                Ok(Err(ending)) => Ok(Some(ending)),
                Ok(Ok(brief)) => {
                    let run = WorkItemRun {
                        item: &item,
                        task: &task,
                        agent: &agent,
                        brief: &brief,
                        limiter: &limiter,
                        client: &client,
                        settings: &settings,
                        stop: Some(&shutdown),
                        metrics: &metrics,
                        mcp: &mcp,
                    };
                    match agent::run(run).await {
                        // Interrupted by shutdown: released below.
                        Ok(Ending::Interrupted) => Ok(None),
                        other => other.map(Some),
                    }
                }
            };
            metrics.busy.set(0);
            match outcome {
                Ok(Some(ending)) => {
                    let label = match &ending {
                        Ending::Failed { reason, .. } => reason.as_str(),
                        _ => "Finished",
                    };
                    metrics
                        .subtasks
                        .get_or_create(&OutcomeLabel {
                            outcome: label.to_owned(),
                        })
                        .inc();
                    metrics
                        .subtask_seconds
                        .observe(started.elapsed().as_secs_f64());
                    report(&task, &agent, &item, &ending).await;
                    note_model_health(&model_errors, &agent, &ending, &mut reported_model_error)
                        .await;
                    if let Err(err) = queue.ack(&[id]).await {
                        tracing::warn!(error = %err, "acking a finished item failed; it may be redelivered");
                    }
                }
                // Interrupted by shutdown: released below.
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, subtask = %item.subtask, "work item interrupted by a coordination failure; releasing it");
                    release(&queue, &agent).await;
                    pause(FAILURE_PAUSE, &mut shutdown).await;
                }
            }
        }
    }

    // Bounded: with Redis down, each call would retry for a while; the operator reclaims
    // whatever is left once the heartbeats stop.
    let _ = tokio::time::timeout(CLEANUP_TIMEOUT, release(&queue, &agent)).await;
    beats.abort();
    tool_reports.abort();
    match tokio::time::timeout(CLEANUP_TIMEOUT, queue.forget(&agent)).await {
        Ok(Ok(())) => {}
        _ => tracing::warn!(
            "leaving the heartbeats failed; the operator will see this agent as dead"
        ),
    }
    tracing::info!(agent = %agent, "agent stopped");
    Ok(())
}

/// What the agent is told about `item`: the goal, the subtask's prompt and the results it
/// builds on. A task without a goal or a subtask missing from its plan fails the item.
pub async fn brief(task: &Task, item: &WorkItem) -> Result<Result<Brief, Ending>, CoordError> {
    let missing = |what: &str| {
        Err(Ending::Failed {
            reason: agent::FailReason::NoAnswer,
            detail: format!("the task has no {what}; was it deleted?"),
        })
    };
    let plan = task.plan();
    let Some(goal) = plan.goal().await? else {
        return Ok(missing("goal"));
    };
    let (prompt, dependencies) = match item.kind {
        WorkKind::Plan => match plan.feedback().await? {
            // A retry after the operator rejected the last plan: say why.
            Some(feedback) => (
                format!(
                    "{PLAN_PROMPT}\n\nYour previous plan was rejected: {feedback}\nSubmit a corrected plan."
                ),
                Vec::new(),
            ),
            None => (PLAN_PROMPT.to_owned(), Vec::new()),
        },
        WorkKind::Synthesize => (
            SYNTHESIZE_PROMPT.to_owned(),
            plan.subtasks().await?.into_iter().map(|s| s.name).collect(),
        ),
        WorkKind::Work => match plan.subtask(item.subtask.as_str()).await? {
            Some(spec) => (spec.prompt, spec.depends_on),
            None => return Ok(missing(&format!("subtask {} in its plan", item.subtask))),
        },
    };
    let results = task.results();
    let mut dependency_results = Vec::with_capacity(dependencies.len());
    for name in dependencies {
        let Ok(subtask) = maos_core::dag::SubtaskName::new(&name) else {
            continue;
        };
        if let Some(result) = results.get(&subtask).await? {
            dependency_results.push((name, result.result));
        }
    }
    Ok(Ok(Brief {
        goal: goal.prompt,
        prompt,
        dependency_results,
        max_subtasks: goal.max_subtasks,
        tools: goal.tools,
        thinking_budget_tokens: goal.thinking_budget_tokens,
    }))
}

/// Publishes how the item ended, for the operator to fold into status (which ends a failed
/// attempt in the journal before it dispatches the retry).
async fn report(task: &Task, agent: &AgentName, item: &WorkItem, ending: &Ending) {
    let kind = match ending {
        Ending::Finished => {
            tracing::info!(task = %item.task, subtask = %item.subtask, attempt = item.attempt, kind = ?item.kind, "work item finished");
            EventKind::SubtaskSucceeded
        }
        Ending::Failed { reason, detail } => {
            tracing::info!(task = %item.task, subtask = %item.subtask, attempt = item.attempt, kind = ?item.kind, reason = reason.as_str(), "work item failed");
            EventKind::SubtaskFailed {
                reason: reason.with_detail(detail),
            }
        }
        Ending::Interrupted => return,
    };
    if let Err(err) = task
        .events()
        .publish(&Event::new(
            agent,
            item.subtask.as_str(),
            item.attempt,
            kind,
        ))
        .await
    {
        tracing::warn!(error = %err, "publishing the item's ending failed");
    }
}

/// Tells the pool when the API refused its key or model, and when a call went through again.
async fn note_model_health(
    model_errors: &ModelErrors,
    agent: &AgentName,
    ending: &Ending,
    reported: &mut bool,
) {
    let result = match ending {
        Ending::Failed { reason, detail } if ModelErrorReport::concerns_pool(*reason) => {
            let report = ModelErrorReport {
                reason: *reason,
                message: detail.clone(),
                at_ms: agent::now_ms(),
            };
            *reported = true;
            model_errors.report(agent, &report).await
        }
        Ending::Finished if *reported => {
            *reported = false;
            model_errors.clear(&[agent.as_str()]).await
        }
        _ => Ok(()),
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, "reporting the model's health to the pool failed");
    }
}

/// Moves this agent's unacked items back to the queue for another agent.
async fn release(queue: &maos_core::coord::queue::WorkQueue, agent: &AgentName) {
    match queue.reclaim(agent).await {
        Ok(released) if !released.is_empty() => {
            tracing::info!(items = released.len(), "released held work items")
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "releasing held work failed; the operator will reclaim it")
        }
    }
}

async fn beat(
    queue: maos_core::coord::queue::WorkQueue,
    agent: AgentName,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(err) = queue.heartbeat(&agent).await {
                    tracing::warn!(error = %err, "heartbeat failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Keeps the pool's view of this agent's MCP servers current: on each beat, when the set of
/// servers it cannot use changed, it reports them (none: its report goes), for the pool's
/// `ToolsDegraded` condition. Nothing is sent while the set stays the same.
async fn report_tools(
    mcp: McpTools,
    reports: maos_core::coord::tool_errors::ToolErrors,
    agent: AgentName,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Vec<ServerDown> = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let down: Vec<ServerDown> = mcp
            .down()
            .into_iter()
            .map(|(server, why)| ServerDown { server, why })
            .collect();
        if down == reported {
            continue;
        }
        match reports.report(&agent, &down).await {
            Ok(()) => reported = down,
            Err(err) => tracing::warn!(error = %err, "reporting MCP servers failed; retrying"),
        }
    }
}

/// Runs `step` again while it fails for want of the Redis function library: an agent may start
/// before the operator has loaded it (a Redis that restarted empty) and waits rather than exit.
async fn until_library_loaded<T, F, Fut>(
    mut step: F,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<T, CoordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CoordError>>,
{
    loop {
        match step().await {
            Err(err @ CoordError::FunctionsNotLoaded { .. }) if !*shutdown.borrow() => {
                tracing::warn!(error = %err, "waiting for the operator to load the Redis function library");
                pause(FAILURE_PAUSE, shutdown).await;
            }
            other => return other,
        }
    }
}

async fn pause(delay: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_flight_at_shutdown_may_finish_in_what_the_grace_leaves_after_the_cleanup() {
        // The default grace (25 s) leaves 13 s, as the operator's README says.
        assert_eq!(
            drain_on_stop(Duration::from_secs(25)),
            Duration::from_secs(13)
        );
        assert_eq!(
            drain_on_stop(Duration::from_secs(5)),
            Duration::ZERO,
            "a short grace drops the call at once"
        );
    }
}
