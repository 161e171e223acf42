//! The agents' events of one Task: read from its stream through the operator's consumer in
//! batches, folded into the working status ([`status::fold_batch`]), and what they showed
//! recorded as metrics and logs. They are acked later, once a status that folded them is
//! written ([`super::status_write`]).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maos_core::api::v1alpha1::Task;
use maos_core::coord::failure::FailReason;
use maos_core::coord::keys::GROUP_OPERATOR;

use super::super::{Context, Error};
use super::TaskMemory;
use crate::status::{self, Sighting};

/// The consumer name the operator reads a Task's events as; fixed, so a new leader inherits
/// what the old one read and never acked.
const EVENT_CONSUMER: &str = "operator";
/// Most events folded in one batch, and batches in one reconcile (more wait for the next one,
/// woken at once).
const EVENT_BATCH: usize = 500;
const EVENT_BATCHES: usize = 8;

/// What this reconcile's events showed that the decision and the dispatch need.
#[derive(Default)]
pub(super) struct Seen {
    /// The stream time (ms) of the newest event folded.
    pub(super) newest_ms: Option<u64>,
    /// An agent's account of why it could not reserve its next call, if one could not.
    pub(super) budget_refused: Option<String>,
}

/// Folds the events delivered since the last reconcile into `memory.status`; each batch's
/// metrics and logs are recorded as soon as it is folded.
pub(super) async fn fold_new(
    task: &Task,
    ctx: &Arc<Context>,
    coord: &maos_core::coord::Task,
    memory: &mut TaskMemory,
    now: Timestamp,
) -> Result<Seen, Error> {
    let retry_limit = task.spec.retry_strategy.limit;
    let mut seen = Seen::default();
    let consumer = memory
        .consumer
        .get_or_insert_with(|| coord.events().consumer(GROUP_OPERATOR, EVENT_CONSUMER));
    for _ in 0..EVENT_BATCHES {
        let batch = consumer.next(EVENT_BATCH, None).await?;
        if batch.is_empty() {
            break;
        }
        let full = batch.len() >= EVENT_BATCH;
        memory
            .unacked
            .extend(batch.iter().map(|delivered| delivered.entry.clone()));
        let observed = status::fold_batch(
            &mut memory.status,
            batch.iter().map(|d| (d.entry.as_str(), &d.event)),
            retry_limit,
            &ctx.settings.prices,
            now,
        );
        record(task, ctx, &observed.sightings);
        seen.newest_ms = observed.newest_ms.or(seen.newest_ms);
        seen.budget_refused = observed.budget_refused.or(seen.budget_refused.take());
        if !full {
            break;
        }
    }
    Ok(seen)
}

/// Records what a batch showed: tokens and cost as metrics, subtask durations, failed attempts
/// in the log.
fn record(task: &Task, ctx: &Context, sightings: &[Sighting]) {
    for sighting in sightings {
        match sighting {
            Sighting::Tokens {
                model,
                input,
                output,
                cache_read,
                cache_creation,
                cost_usd,
            } => {
                ctx.metrics.add_tokens(model, "input", *input);
                ctx.metrics.add_tokens(model, "output", *output);
                ctx.metrics.add_tokens(model, "cache_read", *cache_read);
                ctx.metrics
                    .add_tokens(model, "cache_creation", *cache_creation);
                if let Some(usd) = cost_usd {
                    ctx.metrics.add_cost(*usd);
                }
            }
            Sighting::Succeeded { seconds } => ctx.metrics.observe_subtask(*seconds),
            Sighting::AttemptFailed {
                subtask,
                attempt,
                agent,
                reason,
            } => {
                // The reason's name only: its detail may quote the API's answer.
                tracing::info!(
                    task = %task.name_any(),
                    namespace = %task.namespace().unwrap_or_default(),
                    subtask = %subtask,
                    attempt = *attempt,
                    agent = %agent,
                    reason = reason.map_or("Unknown", FailReason::as_str),
                    "subtask attempt failed"
                );
            }
        }
    }
}
