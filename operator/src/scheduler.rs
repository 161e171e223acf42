//! Which subtasks to dispatch next: a pure decision over the plan and the Task's status.
//!
//! A subtask is ready when every dependency succeeded; ready subtasks go out up to the Task's
//! `parallelism`, those with the longest chain of dependents first (so the critical path is never
//! the one kept waiting), and a failed attempt is retried after the `retryStrategy` backoff.
//! The Task's status is the scheduler's whole memory, so an operator restarted mid-task makes
//! the same decisions.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use maos_core::api::v1alpha1::{RetryStrategy, SubtaskPhase, SubtaskStatus};
use maos_core::dag::{Plan, SubtaskName};

/// One subtask to put on the pool's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The subtask.
    pub subtask: SubtaskName,
    /// The attempt this dispatch starts (1 for the first).
    pub attempt: u32,
}

/// What the scheduler decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Subtasks to dispatch now, most urgent first.
    pub dispatch: Vec<Dispatch>,
    /// The earliest moment a subtask waiting out a retry backoff becomes ready: reconcile then.
    pub wake_at: Option<Timestamp>,
}

/// The wait before retry number `failures` (1 after the first failure): `duration ×
/// factor^(failures-1)`, at most `maxDuration`.
pub fn retry_delay(retry: &RetryStrategy, failures: u32) -> Duration {
    let backoff = &retry.backoff;
    let exponent = failures.saturating_sub(1);
    let seconds = u64::from(backoff.duration_seconds)
        .saturating_mul(u64::from(backoff.factor).saturating_pow(exponent))
        .min(u64::from(backoff.max_duration_seconds));
    Duration::from_secs(seconds)
}

/// Picks the subtasks of `plan` to dispatch at `now`, given their statuses.
///
/// Statuses are read as: absent or `Pending` with no attempt → never started; `Pending` with
/// attempts → failed, waiting to be retried (since `finishedAt`); `Queued`/`Running` → holds a
/// slot; `Succeeded`, `Failed`, `Cancelled` → done.
pub fn next_dispatch(
    plan: &Plan,
    statuses: &[SubtaskStatus],
    parallelism: u32,
    retry: &RetryStrategy,
    now: Timestamp,
) -> Decision {
    let by_name: HashMap<&str, &SubtaskStatus> =
        statuses.iter().map(|s| (s.name.as_str(), s)).collect();
    let phase = |name: &str| by_name.get(name).map(|s| s.phase);
    let in_flight = plan
        .names()
        .filter(|n| {
            matches!(
                phase(n.as_str()),
                Some(SubtaskPhase::Queued | SubtaskPhase::Running)
            )
        })
        .count();
    let slots = (parallelism as usize).saturating_sub(in_flight);

    let mut decision = Decision::default();
    let mut ready: Vec<(usize, usize, Dispatch)> = Vec::new();
    for (position, (name, depth)) in plan.downstream_depths().into_iter().enumerate() {
        let status = by_name.get(name.as_str());
        let attempts = status.and_then(|s| s.attempts).unwrap_or(0);
        let waiting = match status.map(|s| s.phase) {
            None | Some(SubtaskPhase::Pending) => true,
            Some(_) => false,
        };
        if !waiting {
            continue;
        }
        let dependencies_done = plan
            .dependencies_of(name.as_str())
            .into_iter()
            .flatten()
            .all(|d| phase(d.as_str()) == Some(SubtaskPhase::Succeeded));
        if !dependencies_done {
            continue;
        }
        if attempts > 0 {
            // A failed attempt waits out its backoff from when it ended.
            let failed_at = status
                .and_then(|s| s.finished_at.as_ref())
                .map(|t| t.0)
                .unwrap_or(now);
            let delay = SignedDuration::try_from(retry_delay(retry, attempts))
                .unwrap_or(SignedDuration::MAX);
            let ready_at = failed_at.checked_add(delay).unwrap_or(Timestamp::MAX);
            if ready_at > now {
                decision.wake_at = Some(decision.wake_at.map_or(ready_at, |w| w.min(ready_at)));
                continue;
            }
        }
        ready.push((
            depth,
            position,
            Dispatch {
                subtask: name.clone(),
                attempt: attempts + 1,
            },
        ));
    }
    // Deepest chain first; ties keep plan order.
    ready.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    decision.dispatch = ready.into_iter().take(slots).map(|(_, _, d)| d).collect();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use maos_core::api::v1alpha1::SubtaskSpec;
    use maos_core::validate::check_subtasks;

    fn plan(spec: &[(&str, &[&str])]) -> Plan {
        let subtasks: Vec<SubtaskSpec> = spec
            .iter()
            .map(|(name, deps)| SubtaskSpec {
                name: (*name).to_owned(),
                prompt: "p".to_owned(),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                voters: None,
            })
            .collect();
        check_subtasks(&subtasks, "spec.subtasks").expect("valid plan")
    }

    fn status(
        name: &str,
        phase: SubtaskPhase,
        attempts: u32,
        finished: Option<Timestamp>,
    ) -> SubtaskStatus {
        SubtaskStatus {
            name: name.to_owned(),
            phase,
            depends_on: vec![],
            agent: None,
            attempts: (attempts > 0).then_some(attempts),
            started_at: None,
            finished_at: finished.map(Time),
            tokens: None,
            message: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid")
    }

    fn names(decision: &Decision) -> Vec<(&str, u32)> {
        decision
            .dispatch
            .iter()
            .map(|d| (d.subtask.as_str(), d.attempt))
            .collect()
    }

    fn diamond() -> Plan {
        plan(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])])
    }

    #[test]
    fn only_subtasks_without_pending_dependencies_start() {
        let decision = next_dispatch(&diamond(), &[], 8, &RetryStrategy::default(), now());
        assert_eq!(names(&decision), [("a", 1)]);
        assert_eq!(decision.wake_at, None);
    }

    #[test]
    fn a_succeeded_dependency_releases_its_dependents() {
        let statuses = [status("a", SubtaskPhase::Succeeded, 1, Some(now()))];
        let decision = next_dispatch(&diamond(), &statuses, 8, &RetryStrategy::default(), now());
        assert_eq!(names(&decision), [("b", 1), ("c", 1)]);
    }

    #[test]
    fn parallelism_counts_what_is_already_running() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])]);
        let statuses = [
            status("a", SubtaskPhase::Running, 1, None),
            status("b", SubtaskPhase::Queued, 1, None),
        ];
        let decision = next_dispatch(&p, &statuses, 3, &RetryStrategy::default(), now());
        assert_eq!(names(&decision), [("c", 1)]);
        let full = next_dispatch(&p, &statuses, 2, &RetryStrategy::default(), now());
        assert!(full.dispatch.is_empty());
    }

    #[test]
    fn the_start_of_the_longest_chain_goes_first() {
        // "leaf" comes first in the plan, but "chain" has two subtasks waiting on it.
        let p = plan(&[
            ("leaf", &[]),
            ("chain", &[]),
            ("mid", &["chain"]),
            ("end", &["mid"]),
        ]);
        let decision = next_dispatch(&p, &[], 1, &RetryStrategy::default(), now());
        assert_eq!(names(&decision), [("chain", 1)]);
    }

    #[test]
    fn a_failed_attempt_is_retried_after_its_backoff() {
        let p = plan(&[("a", &[])]);
        let retry = RetryStrategy::default(); // 5 s, ×2, at most 120 s
        let failed_3s_ago = [status(
            "a",
            SubtaskPhase::Pending,
            1,
            Some(now() - SignedDuration::from_secs(3)),
        )];
        let waiting = next_dispatch(&p, &failed_3s_ago, 8, &retry, now());
        assert!(waiting.dispatch.is_empty());
        assert_eq!(waiting.wake_at, Some(now() + SignedDuration::from_secs(2)));
        let failed_6s_ago = [status(
            "a",
            SubtaskPhase::Pending,
            1,
            Some(now() - SignedDuration::from_secs(6)),
        )];
        assert_eq!(
            names(&next_dispatch(&p, &failed_6s_ago, 8, &retry, now())),
            [("a", 2)]
        );
    }

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_cap() {
        let retry = RetryStrategy::default();
        assert_eq!(retry_delay(&retry, 1), Duration::from_secs(5));
        assert_eq!(retry_delay(&retry, 2), Duration::from_secs(10));
        assert_eq!(retry_delay(&retry, 3), Duration::from_secs(20));
        assert_eq!(retry_delay(&retry, 10), Duration::from_secs(120));
        assert_eq!(retry_delay(&retry, u32::MAX), Duration::from_secs(120));
    }

    #[test]
    fn nothing_behind_a_failed_or_cancelled_subtask_starts() {
        let statuses = [
            status("a", SubtaskPhase::Succeeded, 1, Some(now())),
            status("b", SubtaskPhase::Failed, 3, Some(now())),
            status("c", SubtaskPhase::Succeeded, 1, Some(now())),
        ];
        let decision = next_dispatch(&diamond(), &statuses, 8, &RetryStrategy::default(), now());
        assert!(decision.dispatch.is_empty(), "{decision:?}");
    }

    #[test]
    fn finished_and_running_subtasks_are_never_dispatched_again() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let statuses = [
            status("a", SubtaskPhase::Succeeded, 1, Some(now())),
            status("b", SubtaskPhase::Running, 2, None),
        ];
        assert!(
            next_dispatch(&p, &statuses, 8, &RetryStrategy::default(), now())
                .dispatch
                .is_empty()
        );
    }
}
