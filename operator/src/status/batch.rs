//! Folding one delivered batch of a Task's events: each entry, in stream order, through
//! [`fold`], and what the batch showed beyond the status it changed (tokens and cost used, how
//! long succeeded subtasks ran, failed attempts, a budget refusal), for the reconciler to
//! record as metrics and logs and to hand to the decision.

use k8s_openapi::jiff::Timestamp;
use maos_core::api::v1alpha1::TaskStatus;
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::failure::FailReason;
use maos_core::price::PriceTable;

use super::{EntryPosition, Folded, cost_usd, fold};

/// What folding a batch showed, beyond the status it changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The stream time (ms since the epoch) of the newest entry folded, if one was.
    pub newest_ms: Option<u64>,
    /// The reason of the last `BudgetExceeded: …` failure folded: an agent could not reserve
    /// its next model call.
    pub budget_refused: Option<String>,
    /// What to record, in stream order.
    pub sightings: Vec<Sighting>,
}

/// One thing a folded event showed that the status does not keep as such.
#[derive(Clone, Debug, PartialEq)]
pub enum Sighting {
    /// A model call's tokens, and the cost they added to `status.usage` (if they added any).
    Tokens {
        /// The model.
        model: String,
        /// Input tokens.
        input: u64,
        /// Output tokens.
        output: u64,
        /// Input tokens read from the prompt cache.
        cache_read: u64,
        /// Input tokens written to the prompt cache.
        cache_creation: u64,
        /// USD added to the Task's cost, when more than nothing.
        cost_usd: Option<f64>,
    },
    /// A subtask succeeded after running this long (since its attempt started).
    Succeeded {
        /// Seconds, never negative.
        seconds: f64,
    },
    /// An attempt failed, and the status shows it.
    AttemptFailed {
        /// The subtask.
        subtask: String,
        /// The attempt.
        attempt: u32,
        /// The agent that reported it.
        agent: String,
        /// The reason's kind, if it names one.
        reason: Option<FailReason>,
    },
}

/// Folds `events` (stream entry id, event), in order, into `status`, skipping entries at or
/// before `status.lastEventId` and ids that are not stream ids, and moving `lastEventId` to
/// the newest folded; returns what they showed.
pub fn fold_batch<'a>(
    status: &mut TaskStatus,
    events: impl IntoIterator<Item = (&'a str, &'a Event)>,
    retry_limit: u32,
    prices: &PriceTable,
    now: Timestamp,
) -> Observed {
    let mut observed = Observed::default();
    for (id, event) in events {
        let Some(position) = EntryPosition::parse(id) else {
            continue;
        };
        let last = status
            .last_event_id
            .as_deref()
            .and_then(EntryPosition::parse);
        let cost_before = cost_usd(status);
        let started_before = status
            .subtasks
            .iter()
            .find(|s| s.name == event.subtask)
            .and_then(|s| s.started_at.clone());
        let folded = fold(
            status,
            &position,
            last.as_ref(),
            event,
            retry_limit,
            prices,
            now,
        );
        if folded == Folded::AlreadyFolded {
            continue;
        }
        status.last_event_id = Some(id.to_owned());
        observed.newest_ms = Some(position.millis());
        match &event.kind {
            EventKind::TokensUsed {
                model,
                input,
                output,
                cache_read,
                cache_creation,
            } => {
                let added = cost_usd(status) - cost_before;
                observed.sightings.push(Sighting::Tokens {
                    model: model.clone(),
                    input: *input,
                    output: *output,
                    cache_read: *cache_read,
                    cache_creation: *cache_creation,
                    cost_usd: (added > 0.0).then_some(added),
                });
            }
            EventKind::SubtaskSucceeded if folded == Folded::Changed => {
                if let Some(started) = started_before {
                    let seconds = now.duration_since(started.0).as_secs_f64();
                    observed.sightings.push(Sighting::Succeeded {
                        seconds: seconds.max(0.0),
                    });
                }
            }
            EventKind::SubtaskFailed { reason } => {
                let why = FailReason::of_message(reason);
                if why == Some(FailReason::BudgetExceeded) {
                    observed.budget_refused = Some(reason.clone());
                }
                if folded == Folded::Changed {
                    observed.sightings.push(Sighting::AttemptFailed {
                        subtask: event.subtask.clone(),
                        attempt: event.attempt,
                        agent: event.agent.clone(),
                        reason: why,
                    });
                }
            }
            _ => {}
        }
    }
    observed
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, event, prices, status_with};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use maos_core::api::v1alpha1::SubtaskPhase;

    fn id(n: u64) -> String {
        format!("1700000000{n:03}-0")
    }

    fn tokens(input: u64, output: u64) -> EventKind {
        EventKind::TokensUsed {
            model: "claude-sonnet-4-5".into(),
            input,
            output,
            cache_read: 0,
            cache_creation: 0,
        }
    }

    fn fold_ids(status: &mut TaskStatus, events: &[(String, Event)], now: Timestamp) -> Observed {
        fold_batch(
            status,
            events.iter().map(|(id, e)| (id.as_str(), e)),
            2,
            &prices(),
            now,
        )
    }

    #[test]
    fn tokens_are_seen_with_the_cost_they_added() {
        let mut status = status_with(&["a"]);
        let seen = fold_ids(
            &mut status,
            &[(id(1), event("a", 1, tokens(1_000_000, 0)))],
            at(0),
        );
        assert_eq!(
            seen.sightings,
            vec![Sighting::Tokens {
                model: "claude-sonnet-4-5".into(),
                input: 1_000_000,
                output: 0,
                cache_read: 0,
                cache_creation: 0,
                cost_usd: Some(3.0),
            }]
        );
    }

    #[test]
    fn tokens_of_a_model_without_a_price_are_seen_with_no_cost() {
        let mut status = status_with(&["a"]);
        let mut call = event("a", 1, tokens(10, 5));
        if let EventKind::TokensUsed { model, .. } = &mut call.kind {
            *model = "unpriced".into();
        }
        let seen = fold_ids(&mut status, &[(id(1), call)], at(0));
        assert!(
            matches!(
                seen.sightings.as_slice(),
                [Sighting::Tokens {
                    cost_usd: None,
                    input: 10,
                    output: 5,
                    ..
                }]
            ),
            "{seen:?}"
        );
    }

    #[test]
    fn a_succeeded_subtask_is_seen_with_how_long_its_attempt_ran() {
        let mut status = status_with(&["a"]);
        fold_ids(
            &mut status,
            &[(id(1), event("a", 1, EventKind::SubtaskStarted))],
            at(0),
        );
        let seen = fold_ids(
            &mut status,
            &[(id(2), event("a", 1, EventKind::SubtaskSucceeded))],
            at(30),
        );
        assert_eq!(seen.sightings, vec![Sighting::Succeeded { seconds: 30.0 }]);
    }

    #[test]
    fn a_success_already_shown_is_not_seen_again() {
        let mut status = status_with(&["a"]);
        let events = [
            (id(1), event("a", 1, EventKind::SubtaskStarted)),
            (id(2), event("a", 1, EventKind::SubtaskSucceeded)),
            (id(3), event("a", 1, EventKind::SubtaskSucceeded)),
        ];
        let seen = fold_ids(&mut status, &events, at(5));
        assert_eq!(seen.sightings, vec![Sighting::Succeeded { seconds: 0.0 }]);
    }

    #[test]
    fn a_failed_attempt_is_seen_with_its_reason_and_who_reported_it() {
        let mut status = status_with(&["a"]);
        let failed = event(
            "a",
            1,
            EventKind::SubtaskFailed {
                reason: FailReason::DeadlineExceeded.with_detail("the agent ran out of time"),
            },
        );
        let seen = fold_ids(&mut status, &[(id(1), failed)], at(0));
        assert_eq!(
            seen.sightings,
            vec![Sighting::AttemptFailed {
                subtask: "a".into(),
                attempt: 1,
                agent: "agent-a".into(),
                reason: Some(FailReason::DeadlineExceeded),
            }]
        );
        assert_eq!(seen.budget_refused, None);
    }

    #[test]
    fn a_budget_refusal_is_kept_even_when_the_status_does_not_show_the_failure() {
        let mut status = status_with(&["a"]);
        let refused = FailReason::BudgetExceeded.with_detail("no tokens left");
        // From a subtask not in the plan: the status changes nothing, the refusal still counts.
        let seen = fold_ids(
            &mut status,
            &[(
                id(1),
                event(
                    "gone",
                    1,
                    EventKind::SubtaskFailed {
                        reason: refused.clone(),
                    },
                ),
            )],
            at(0),
        );
        assert_eq!(seen.budget_refused, Some(refused));
        assert!(seen.sightings.is_empty(), "{seen:?}");
    }

    #[test]
    fn entries_already_folded_are_skipped_and_show_nothing() {
        let mut status = status_with(&["a"]);
        status.last_event_id = Some(id(5));
        let seen = fold_ids(
            &mut status,
            &[
                (id(4), event("a", 1, tokens(10, 10))),
                (id(5), event("a", 1, EventKind::SubtaskStarted)),
            ],
            at(0),
        );
        assert_eq!(seen, Observed::default());
        assert_eq!(status.last_event_id, Some(id(5)));
        assert_eq!(status.subtasks[0].phase, SubtaskPhase::Queued);
        assert_eq!(status.usage, None);
    }

    #[test]
    fn the_newest_folded_entry_is_remembered_in_the_status_and_its_time_returned() {
        let mut status = status_with(&["a"]);
        let seen = fold_ids(
            &mut status,
            &[
                (id(1), event("a", 1, EventKind::SubtaskStarted)),
                ("not-an-id".to_owned(), event("a", 1, tokens(1, 1))),
                (id(7), event("other", 1, EventKind::SubtaskStarted)),
            ],
            at(0),
        );
        assert_eq!(status.last_event_id, Some(id(7)));
        assert_eq!(seen.newest_ms, Some(1_700_000_000_007));
        assert_eq!(
            status.subtasks[0].tokens, None,
            "an entry whose id is not a stream id is not folded"
        );
        assert_eq!(status.subtasks[0].started_at, Some(Time(at(0))));
    }
}
