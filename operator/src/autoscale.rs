//! How many agents a pool should run, and which idle ones to remove: a pure decision over the
//! pool's spec, its queue and its agents.
//!
//! Work that waits gets agents at once (up to `max`); agents are removed only when they have been
//! idle longer than `idleSeconds` and the pool is above what its work and `min` need, the
//! longest-idle first, so a busy agent is never removed.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use maos_core::api::v1alpha1::Replicas;

/// One agent as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// The agent's pod name.
    pub name: String,
    /// Whether it works an item now.
    pub busy: bool,
    /// Since when it has been idle (`None` while busy, or if it never reported).
    pub idle_since: Option<Timestamp>,
}

/// What the autoscaler decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleDecision {
    /// How many agents the pool should have.
    pub target: u32,
    /// Idle agents to remove now (their pods are deleted), longest-idle first.
    pub remove: Vec<String>,
}

/// The decision for a pool with `agents`, `waiting` queued items, at `now`.
pub fn decide(
    replicas: &Replicas,
    idle_seconds: u32,
    agents: &[AgentView],
    waiting: u64,
    now: Timestamp,
) -> ScaleDecision {
    let (min, max) = (replicas.min, replicas.max.max(replicas.min));
    // Every busy agent stays, and every waiting item wants an agent (idle ones claim first).
    let busy = agents.iter().filter(|a| a.busy).count() as u64;
    let needed = u32::try_from(busy.saturating_add(waiting)).unwrap_or(u32::MAX);
    let current = u32::try_from(agents.len()).unwrap_or(u32::MAX);
    let floor = needed.clamp(min, max);

    if floor >= current {
        return ScaleDecision {
            target: floor,
            remove: Vec::new(),
        };
    }
    // Above what is needed: remove idle agents past their idle time, down to the floor.
    let threshold = SignedDuration::from_secs(i64::from(idle_seconds));
    let mut removable: Vec<&AgentView> = agents
        .iter()
        .filter(|a| !a.busy)
        .filter(|a| {
            a.idle_since
                .is_some_and(|since| now.duration_since(since) >= threshold)
        })
        .collect();
    removable.sort_by_key(|a| (a.idle_since, a.name.clone()));
    let excess = (current - floor) as usize;
    let remove: Vec<String> = removable
        .into_iter()
        .take(excess)
        .map(|a| a.name.clone())
        .collect();
    let target = current - u32::try_from(remove.len()).unwrap_or(0);
    ScaleDecision {
        target: target.min(max),
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid")
    }

    fn replicas(min: u32, max: u32) -> Replicas {
        Replicas { min, max }
    }

    fn busy(name: &str) -> AgentView {
        AgentView {
            name: name.into(),
            busy: true,
            idle_since: None,
        }
    }

    fn idle_for(name: &str, seconds: i64) -> AgentView {
        AgentView {
            name: name.into(),
            busy: false,
            idle_since: Some(now() - SignedDuration::from_secs(seconds)),
        }
    }

    #[test]
    fn an_empty_pool_keeps_its_minimum() {
        assert_eq!(
            decide(&replicas(2, 10), 300, &[], 0, now()),
            ScaleDecision {
                target: 2,
                remove: vec![]
            }
        );
    }

    #[test]
    fn waiting_work_scales_up_at_once() {
        let agents = [busy("a"), busy("b")];
        assert_eq!(decide(&replicas(1, 10), 300, &agents, 5, now()).target, 7);
    }

    #[test]
    fn scaling_up_stops_at_max() {
        assert_eq!(
            decide(&replicas(1, 4), 300, &[busy("a")], 50, now()).target,
            4
        );
    }

    #[test]
    fn idle_agents_absorb_waiting_work_before_new_ones_start() {
        let agents = [idle_for("a", 1), idle_for("b", 1)];
        assert_eq!(decide(&replicas(1, 10), 300, &agents, 2, now()).target, 2);
    }

    #[test]
    fn only_agents_idle_past_the_threshold_are_removed_longest_idle_first() {
        let agents = [
            busy("a"),
            idle_for("b", 400),
            idle_for("c", 900),
            idle_for("d", 10),
        ];
        let decision = decide(&replicas(1, 10), 300, &agents, 0, now());
        assert_eq!(decision.remove, vec!["c".to_owned(), "b".to_owned()]);
        assert_eq!(decision.target, 2);
    }

    #[test]
    fn removal_never_goes_below_min() {
        let agents = [idle_for("a", 900), idle_for("b", 900), idle_for("c", 900)];
        let decision = decide(&replicas(2, 10), 300, &agents, 0, now());
        assert_eq!(decision.remove.len(), 1);
        assert_eq!(decision.target, 2);
    }

    #[test]
    fn a_busy_agent_is_never_removed() {
        let agents = [busy("a"), busy("b"), busy("c")];
        let decision = decide(&replicas(0, 10), 0, &agents, 0, now());
        assert!(decision.remove.is_empty());
        assert_eq!(decision.target, 3);
    }
}
