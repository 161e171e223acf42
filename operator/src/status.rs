//! Folding agent events into a Task's status: a pure function over the status and one event
//! ([`fold`]), and over a delivered batch with what it showed for metrics and logs
//! ([`fold_batch`]).
//!
//! Events arrive at least once, in stream order, each with its stream entry id; the fold is
//! told the id of the last entry already folded and skips anything at or before it, so a
//! redelivery after an operator restart changes nothing. Messages written into status are
//! short and fixed in form: reasons and counts, never model output.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use maos_core::api::v1alpha1::limits::MAX_MODELS;
use maos_core::api::v1alpha1::{
    ModelUsage, SubtaskCounts, SubtaskPhase, SubtaskStatus, TaskStatus, Usage,
};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::failure::FailReason;
use maos_core::price::{BilledTokens, PriceTable};

use crate::lifecycle::{PLAN, SYNTHESIZE};

mod batch;
pub use batch::{Observed, Sighting, fold_batch};

/// Longest subtask message kept in status.
const MAX_SUBTASK_MESSAGE: usize = 200;

/// Where an event stream entry stands relative to what status already holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryPosition {
    millis: u64,
    sequence: u64,
}

impl EntryPosition {
    /// The entry's time, in milliseconds since the Unix epoch (Redis's clock).
    pub fn millis(&self) -> u64 {
        self.millis
    }

    /// Parses a Redis stream id (`<ms>-<seq>`).
    pub fn parse(id: &str) -> Option<Self> {
        let (millis, sequence) = id.split_once('-')?;
        Some(Self {
            millis: millis.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    }
}

/// What folding one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folded {
    /// The event was at or before the last folded entry: nothing changed.
    AlreadyFolded,
    /// Status changed.
    Changed,
    /// The event changes nothing in status (e.g. a message sent).
    NoChange,
}

/// Folds one event (stream entry `entry`) into `status`.
///
/// `last_folded` is the position of the newest entry already in status; `retry_limit` decides
/// whether a failed attempt is retried (`Pending`) or final (`Failed`); `prices` turns tokens
/// into cost.
pub fn fold(
    status: &mut TaskStatus,
    entry: &EntryPosition,
    last_folded: Option<&EntryPosition>,
    event: &Event,
    retry_limit: u32,
    prices: &PriceTable,
    now: Timestamp,
) -> Folded {
    if last_folded.is_some_and(|last| entry <= last) {
        return Folded::AlreadyFolded;
    }
    let Some(subtask) = status.subtasks.iter_mut().find(|s| s.name == event.subtask) else {
        // Not a subtask of the current plan (e.g. from a rejected plan): nothing to show.
        return Folded::NoChange;
    };
    // An event of an older attempt than the one status shows is stale.
    let current_attempt = subtask.attempts.unwrap_or(0);
    let stale = event.attempt < current_attempt;
    match &event.kind {
        EventKind::SubtaskStarted => {
            if stale || is_done(subtask.phase) {
                return Folded::NoChange;
            }
            subtask.phase = SubtaskPhase::Running;
            subtask.agent = Some(event.agent.clone());
            subtask.attempts = Some(event.attempt.max(current_attempt));
            subtask.started_at = Some(Time(now));
            subtask.finished_at = None;
            subtask.message = None;
        }
        EventKind::Progress { message } => {
            if stale || is_done(subtask.phase) {
                return Folded::NoChange;
            }
            subtask.message = Some(truncate(message, MAX_SUBTASK_MESSAGE));
        }
        EventKind::TokensUsed {
            model,
            input,
            output,
            cache_read,
            cache_creation,
        } => {
            // Tokens were spent whatever became of the attempt: always counted.
            subtask.tokens = Some(subtask.tokens.unwrap_or(0) + input + output);
            add_usage(
                status,
                model,
                *input,
                *output,
                *cache_read,
                *cache_creation,
                prices,
            );
        }
        EventKind::SubtaskSucceeded => {
            if is_done(subtask.phase) {
                return Folded::NoChange;
            }
            subtask.phase = SubtaskPhase::Succeeded;
            subtask.agent = Some(event.agent.clone());
            subtask.attempts = Some(event.attempt.max(current_attempt));
            subtask.finished_at = Some(Time(now));
            subtask.message = None;
        }
        EventKind::SubtaskFailed { reason } => {
            if stale || is_done(subtask.phase) {
                return Folded::NoChange;
            }
            fail_attempt(
                subtask,
                event.attempt.max(current_attempt),
                reason,
                retry_limit,
                now,
            );
        }
        EventKind::PlanSubmitted { .. }
        | EventKind::MessageSent { .. }
        | EventKind::ToolCalled { .. } => return Folded::NoChange,
    }
    summarize(status, now);
    Folded::Changed
}

/// The Task's cost so far in USD (`status.usage.costUSD`), 0 when none is recorded.
pub fn cost_usd(status: &TaskStatus) -> f64 {
    status
        .usage
        .as_ref()
        .and_then(|u| u.cost_usd.as_deref())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0.0)
}

/// Ends attempt `attempts` of `subtask` as failed: it waits for a retry (`Pending`) while
/// `retry_limit` retries remain and the reason is not permanent (a refused key, model or
/// request would be refused again), else it is `Failed` for good.
pub fn fail_attempt(
    subtask: &mut SubtaskStatus,
    attempts: u32,
    reason: &str,
    retry_limit: u32,
    now: Timestamp,
) {
    subtask.attempts = Some(attempts);
    subtask.finished_at = Some(Time(now));
    // `limit` retries after the first attempt.
    let permanent = FailReason::of_message(reason).is_some_and(FailReason::is_permanent);
    if attempts <= retry_limit && !permanent {
        subtask.phase = SubtaskPhase::Pending;
        subtask.message = Some(truncate(
            &format!("attempt {attempts} failed{WILL_RETRY}{reason}"),
            MAX_SUBTASK_MESSAGE,
        ));
    } else {
        subtask.phase = SubtaskPhase::Failed;
        subtask.message = Some(truncate(reason, MAX_SUBTASK_MESSAGE));
    }
}

/// What [`fail_attempt`] puts between the attempt and its reason when a retry follows.
const WILL_RETRY: &str = ", will retry: ";

/// Why the last attempt of `subtask` failed, from its status message (for the retry).
pub fn last_failure(subtask: &SubtaskStatus) -> Option<&str> {
    let message = subtask.message.as_deref()?;
    Some(
        message
            .split_once(WILL_RETRY)
            .map_or(message, |(_, why)| why),
    )
}

/// Whether a subtask in `phase` is finished for good.
pub fn is_done(phase: SubtaskPhase) -> bool {
    matches!(
        phase,
        SubtaskPhase::Succeeded | SubtaskPhase::Failed | SubtaskPhase::Cancelled
    )
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

fn add_usage(
    status: &mut TaskStatus,
    model: &str,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
    prices: &PriceTable,
) {
    let usage = status.usage.get_or_insert_with(Usage::default);
    usage.input_tokens += input;
    usage.output_tokens += output;
    usage.cache_read_input_tokens += cache_read;
    usage.cache_creation_input_tokens += cache_creation;
    let known = usage.by_model.iter().position(|m| m.model == model);
    match known {
        Some(index) => {
            usage.by_model[index].input_tokens += input;
            usage.by_model[index].output_tokens += output;
        }
        // Bounded: a model past the limit still counts in the totals above.
        None if usage.by_model.len() < MAX_MODELS as usize => usage.by_model.push(ModelUsage {
            model: model.to_owned(),
            input_tokens: input,
            output_tokens: output,
        }),
        None => {}
    }
    let previous: f64 = usage
        .cost_usd
        .as_deref()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0.0);
    if let Some(price) = prices.price(model) {
        let cost = price.cost_usd(BilledTokens {
            input,
            output,
            cache_read,
            cache_write: cache_creation,
        });
        usage.cost_usd = Some(format!("{:.4}", previous + cost));
    }
}

/// Recomputes what is derived from the subtasks: counts, progress, start and speedup.
pub fn summarize(status: &mut TaskStatus, now: Timestamp) {
    let mut counts = SubtaskCounts::default();
    for subtask in &status.subtasks {
        match subtask.phase {
            SubtaskPhase::Pending => counts.pending += 1,
            SubtaskPhase::Queued | SubtaskPhase::Running => counts.running += 1,
            SubtaskPhase::Succeeded => counts.succeeded += 1,
            SubtaskPhase::Failed | SubtaskPhase::Cancelled => counts.failed += 1,
        }
    }
    // The goal's subtasks only: the planner and the synthesizer would make the total jump as
    // they come and go (0/1 while planning, 7/8 while merging).
    let goal = status
        .subtasks
        .iter()
        .filter(|s| s.name != PLAN && s.name != SYNTHESIZE);
    let (done, total) = goal.fold((0, 0), |(done, total), s| {
        (
            done + usize::from(s.phase == SubtaskPhase::Succeeded),
            total + 1,
        )
    });
    status.progress = (total > 0).then(|| format!("{done}/{total}"));
    status.counts = Some(counts);
    if status.started_at.is_none() {
        status.started_at = status
            .subtasks
            .iter()
            .filter_map(|s| s.started_at.as_ref())
            .map(|t| t.0)
            .min()
            .map(Time);
    }
    status.speedup = speedup(
        &status.subtasks,
        status.started_at.as_ref().map(|t| t.0),
        status.completed_at.as_ref().map_or(now, |t| t.0),
    );
}

/// Sum of the finished subtasks' durations divided by the wall time since the Task started: the
/// parallelism actually won.
fn speedup(
    subtasks: &[SubtaskStatus],
    started: Option<Timestamp>,
    until: Timestamp,
) -> Option<String> {
    let started = started?;
    let wall = until.duration_since(started).as_secs_f64();
    if wall <= 0.0 {
        return None;
    }
    let work: f64 = subtasks
        .iter()
        .filter_map(|s| {
            Some(
                s.finished_at
                    .as_ref()?
                    .0
                    .duration_since(s.started_at.as_ref()?.0)
                    .as_secs_f64(),
            )
        })
        .filter(|d| *d > 0.0)
        .sum();
    (work > 0.0).then(|| format!("{:.1}", work / wall))
}

/// The tests' fixtures, shared with [`batch`]'s.
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;
    use maos_core::price::Price;

    pub(super) fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).expect("valid")
    }

    fn entry(n: u64) -> EntryPosition {
        EntryPosition::parse(&format!("1700000000000-{n}")).expect("id")
    }

    pub(super) fn status_with(names: &[&str]) -> TaskStatus {
        TaskStatus {
            subtasks: names
                .iter()
                .map(|n| SubtaskStatus {
                    name: (*n).to_owned(),
                    phase: SubtaskPhase::Queued,
                    depends_on: vec![],
                    agent: None,
                    attempts: Some(1),
                    started_at: None,
                    finished_at: None,
                    tokens: None,
                    message: None,
                })
                .collect(),
            ..TaskStatus::default()
        }
    }

    pub(super) fn event(subtask: &str, attempt: u32, kind: EventKind) -> Event {
        Event {
            id: format!("e-{subtask}-{attempt}"),
            agent: "agent-a".into(),
            subtask: subtask.into(),
            attempt,
            kind,
        }
    }

    pub(super) fn prices() -> PriceTable {
        PriceTable(vec![Price {
            model: "claude-sonnet-*".into(),
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        }])
    }

    fn fold_all(status: &mut TaskStatus, events: &[(i64, Event)]) {
        for (i, (second, event)) in events.iter().enumerate() {
            fold(
                status,
                &entry(i as u64 + 1),
                None,
                event,
                2,
                &prices(),
                at(*second),
            );
        }
    }

    #[test]
    fn progress_counts_the_goals_subtasks_not_the_planner_or_the_synthesizer() {
        let mut status = status_with(&["plan"]);
        summarize(&mut status, at(0));
        assert_eq!(status.progress, None, "nothing to count while planning");
        let mut status = status_with(&["plan", "a", "b", "synthesize"]);
        status.subtasks[0].phase = SubtaskPhase::Succeeded;
        status.subtasks[1].phase = SubtaskPhase::Succeeded;
        summarize(&mut status, at(0));
        assert_eq!(status.progress.as_deref(), Some("1/2"));
        for s in &mut status.subtasks {
            s.phase = SubtaskPhase::Succeeded;
        }
        summarize(&mut status, at(0));
        assert_eq!(status.progress.as_deref(), Some("2/2"));
        assert_eq!(status.counts.as_ref().map(|c| c.succeeded), Some(4));
    }

    #[test]
    fn a_subtask_runs_then_succeeds_and_progress_follows() {
        let mut status = status_with(&["a", "b"]);
        fold_all(
            &mut status,
            &[
                (0, event("a", 1, EventKind::SubtaskStarted)),
                (10, event("a", 1, EventKind::SubtaskSucceeded)),
            ],
        );
        let a = &status.subtasks[0];
        assert_eq!(a.phase, SubtaskPhase::Succeeded);
        assert_eq!(a.agent.as_deref(), Some("agent-a"));
        assert_eq!(status.progress.as_deref(), Some("1/2"));
        assert_eq!(
            status.counts,
            Some(SubtaskCounts {
                pending: 0,
                running: 1,
                succeeded: 1,
                failed: 0
            })
        );
        assert_eq!(status.started_at, Some(Time(at(0))));
    }

    #[test]
    fn an_entry_already_folded_changes_nothing() {
        let mut status = status_with(&["a"]);
        let tokens = event(
            "a",
            1,
            EventKind::TokensUsed {
                model: "claude-sonnet-4-5".into(),
                input: 100,
                output: 10,
                cache_read: 0,
                cache_creation: 0,
            },
        );
        assert_eq!(
            fold(&mut status, &entry(5), None, &tokens, 2, &prices(), at(0)),
            Folded::Changed
        );
        assert_eq!(
            fold(
                &mut status,
                &entry(5),
                Some(&entry(5)),
                &tokens,
                2,
                &prices(),
                at(0)
            ),
            Folded::AlreadyFolded
        );
        assert_eq!(status.usage.as_ref().map(|u| u.input_tokens), Some(100));
    }

    #[test]
    fn tokens_add_up_by_model_with_their_cost() {
        let mut status = status_with(&["a"]);
        let used = |input, output| {
            event(
                "a",
                1,
                EventKind::TokensUsed {
                    model: "claude-sonnet-4-5".into(),
                    input,
                    output,
                    cache_read: 1_000_000,
                    cache_creation: 0,
                },
            )
        };
        fold_all(
            &mut status,
            &[(0, used(1_000_000, 0)), (1, used(0, 1_000_000))],
        );
        let usage = status.usage.expect("usage");
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (1_000_000, 1_000_000)
        );
        assert_eq!(
            usage.by_model,
            vec![ModelUsage {
                model: "claude-sonnet-4-5".into(),
                input_tokens: 1_000_000,
                output_tokens: 1_000_000
            }]
        );
        // 3 + 15 + 2 × 0.3 (cache reads) dollars.
        assert_eq!(usage.cost_usd.as_deref(), Some("18.6000"));
        assert_eq!(status.subtasks[0].tokens, Some(2_000_000));
    }

    #[test]
    fn a_failure_within_the_retry_limit_waits_for_a_retry() {
        let mut status = status_with(&["a"]);
        fold_all(
            &mut status,
            &[
                (0, event("a", 1, EventKind::SubtaskStarted)),
                (
                    5,
                    event(
                        "a",
                        1,
                        EventKind::SubtaskFailed {
                            reason: "ModelError: 500".into(),
                        },
                    ),
                ),
            ],
        );
        let a = &status.subtasks[0];
        assert_eq!(a.phase, SubtaskPhase::Pending);
        assert_eq!(a.finished_at, Some(Time(at(5))));
        assert!(
            a.message
                .as_deref()
                .is_some_and(|m| m.contains("will retry"))
        );
    }

    #[test]
    fn a_refused_key_model_or_request_fails_the_subtask_at_once() {
        for reason in [
            "ModelAuthFailed: the Claude API answered 401 authentication_error: invalid x-api-key",
            "ModelNotFound: the Claude API answered 404 not_found_error: model: claude-nope",
            "ModelRequestRejected: the Claude API answered 400 invalid_request_error: too long",
        ] {
            let mut status = status_with(&["a"]);
            fold_all(
                &mut status,
                &[(
                    0,
                    event(
                        "a",
                        1,
                        EventKind::SubtaskFailed {
                            reason: reason.into(),
                        },
                    ),
                )],
            );
            let a = &status.subtasks[0];
            assert_eq!(
                a.phase,
                SubtaskPhase::Failed,
                "{reason}: retries left, none used"
            );
            assert_eq!(a.message.as_deref(), Some(reason));
        }
    }

    #[test]
    fn a_retry_reads_back_why_the_attempt_before_it_failed() {
        let mut status = status_with(&["a"]);
        fail_attempt(&mut status.subtasks[0], 1, "ModelError: 500", 2, at(1));
        assert_eq!(last_failure(&status.subtasks[0]), Some("ModelError: 500"));
        status.subtasks[0].message = None;
        assert_eq!(last_failure(&status.subtasks[0]), None);
    }

    #[test]
    fn a_failure_past_the_retry_limit_is_final() {
        let mut status = status_with(&["a"]);
        fold_all(
            &mut status,
            &[(
                0,
                event(
                    "a",
                    3,
                    EventKind::SubtaskFailed {
                        reason: "MaxTurnsExceeded: no result after 40 model calls".into(),
                    },
                ),
            )],
        );
        assert_eq!(status.subtasks[0].phase, SubtaskPhase::Failed);
        assert_eq!(status.counts.as_ref().map(|c| c.failed), Some(1));
    }

    #[test]
    fn events_of_an_older_attempt_do_not_undo_a_newer_one() {
        let mut status = status_with(&["a"]);
        fold_all(
            &mut status,
            &[
                (0, event("a", 2, EventKind::SubtaskStarted)),
                (
                    1,
                    event(
                        "a",
                        1,
                        EventKind::SubtaskFailed {
                            reason: "old".into(),
                        },
                    ),
                ),
            ],
        );
        assert_eq!(status.subtasks[0].phase, SubtaskPhase::Running);
        assert_eq!(status.subtasks[0].attempts, Some(2));
    }

    #[test]
    fn a_late_success_of_a_duplicate_is_kept_once() {
        let mut status = status_with(&["a"]);
        fold_all(
            &mut status,
            &[
                (0, event("a", 1, EventKind::SubtaskSucceeded)),
                (1, event("a", 2, EventKind::SubtaskStarted)),
            ],
        );
        assert_eq!(status.subtasks[0].phase, SubtaskPhase::Succeeded);
    }

    #[test]
    fn progress_messages_are_bounded() {
        let mut status = status_with(&["a"]);
        fold_all(
            &mut status,
            &[(
                0,
                event(
                    "a",
                    1,
                    EventKind::Progress {
                        message: "x".repeat(500),
                    },
                ),
            )],
        );
        assert_eq!(
            status.subtasks[0]
                .message
                .as_ref()
                .map(|m| m.chars().count()),
            Some(MAX_SUBTASK_MESSAGE + 1)
        );
    }

    #[test]
    fn speedup_is_work_over_wall_time() {
        let mut status = status_with(&["a", "b", "c", "d"]);
        let mut events = Vec::new();
        for name in ["a", "b", "c", "d"] {
            events.push((0, event(name, 1, EventKind::SubtaskStarted)));
        }
        for name in ["a", "b", "c", "d"] {
            events.push((10, event(name, 1, EventKind::SubtaskSucceeded)));
        }
        fold_all(&mut status, &events);
        status.completed_at = Some(Time(at(0) + SignedDuration::from_secs(10)));
        summarize(&mut status, at(10));
        assert_eq!(status.speedup.as_deref(), Some("4.0"));
    }

    #[test]
    fn events_for_unknown_subtasks_are_ignored() {
        let mut status = status_with(&["a"]);
        let outcome = fold(
            &mut status,
            &entry(1),
            None,
            &event("zz", 1, EventKind::SubtaskSucceeded),
            2,
            &prices(),
            at(0),
        );
        assert_eq!(outcome, Folded::NoChange);
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(EntryPosition::parse("10-5") < EntryPosition::parse("11-0"));
        assert!(EntryPosition::parse("10-5") < EntryPosition::parse("10-6"));
        assert_eq!(EntryPosition::parse("garbage"), None);
    }
}
