//! When a Task is reconciled again, when nothing (an event, a watch) wakes it sooner: pure
//! choices over the moments something waits for.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;

/// How often a running Task is reconciled even when nothing wakes it.
const SAFETY_REQUEUE: Duration = Duration::from_secs(5);
/// The shortest wait: a moment already passed is looked at again almost at once.
const SHORTEST: Duration = Duration::from_millis(10);

/// How long a running Task waits: until the decision's `wake_at`, the next periodic
/// checkpoint, or the end of the status interval for a status not yet written (last written
/// `unwritten_since` ago), whichever is first, and at most [`SAFETY_REQUEUE`].
pub(super) fn next_wait(
    now: Timestamp,
    wake_at: Option<Timestamp>,
    next_checkpoint: Option<Timestamp>,
    unwritten_since: Option<Duration>,
    status_interval: Duration,
) -> Duration {
    let mut wait = SAFETY_REQUEUE;
    if let Some(at) = wake_at {
        wait = wait.min(until(now, at));
    }
    if let Some(at) = next_checkpoint {
        wait = wait.min(until(now, at));
    }
    if let Some(since) = unwritten_since {
        wait = wait.min(status_interval.saturating_sub(since));
    }
    wait.max(SHORTEST)
}

/// What a finished Task waits for: the sooner of its TTL's end and its retention's, or only a
/// change when it waits for neither.
pub(super) fn after_finish(ttl: Option<Duration>, retention: Option<Duration>) -> Action {
    match (ttl, retention) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Action::requeue(a),
        (None, None) => Action::await_change(),
    }
}

/// How long from `now` until `at` (nothing if it passed).
pub(super) fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).expect("valid")
    }

    const INTERVAL: Duration = Duration::from_secs(1);

    #[test]
    fn a_task_nothing_waits_for_is_looked_at_again_after_the_safety_interval() {
        assert_eq!(next_wait(at(0), None, None, None, INTERVAL), SAFETY_REQUEUE);
        assert_eq!(
            next_wait(at(0), Some(at(60)), Some(at(3600)), None, INTERVAL),
            SAFETY_REQUEUE
        );
    }

    #[test]
    fn a_task_waits_until_the_first_moment_it_waits_for() {
        assert_eq!(
            next_wait(at(0), Some(at(3)), Some(at(2)), None, INTERVAL),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_wait(at(0), Some(at(3)), Some(at(4)), None, INTERVAL),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_status_not_yet_written_is_written_when_the_status_interval_ends() {
        assert_eq!(
            next_wait(
                at(0),
                Some(at(3)),
                None,
                Some(Duration::from_millis(300)),
                INTERVAL
            ),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn a_moment_already_passed_is_looked_at_again_almost_at_once() {
        assert_eq!(
            next_wait(at(10), Some(at(5)), None, None, INTERVAL),
            SHORTEST
        );
        assert_eq!(
            next_wait(at(0), None, None, Some(Duration::from_secs(9)), INTERVAL),
            SHORTEST
        );
    }

    #[test]
    fn a_finished_task_waits_for_the_sooner_of_its_ttl_and_its_retention() {
        let (one, two) = (Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(after_finish(Some(two), Some(one)), Action::requeue(one));
        assert_eq!(after_finish(Some(one), Some(two)), Action::requeue(one));
        assert_eq!(after_finish(None, Some(two)), Action::requeue(two));
        assert_eq!(after_finish(Some(two), None), Action::requeue(two));
        assert_eq!(after_finish(None, None), Action::await_change());
    }
}
