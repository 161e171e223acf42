//! The operator's Prometheus metrics (`maos_*`), served on `/metrics`: whether this replica
//! leads, Tasks by phase, agents and queues by pool, tokens and cost, dispatch and subtask
//! durations, reconcile health.
//!
//! A pool is labelled `pool` (its name) and `pool_namespace` (its namespace): one operator may
//! watch several namespaces, and pools of the same name in two of them are two series. The label
//! is not called `namespace` because the scrape adds `namespace` itself, set to the operator
//! pod's namespace (prometheus-operator's ServiceMonitor and PodMonitor); with `honorLabels:
//! false`, the chart's default, Prometheus would rename ours to `exported_namespace`, and the
//! alerts' `by (namespace)` would then group by the operator's namespace, not the pool's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use maos_core::api::v1alpha1::TaskPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every Task phase, in lifecycle order: each gets a `maos_tasks` series from the start.
const PHASES: [TaskPhase; 9] = [
    TaskPhase::Pending,
    TaskPhase::Planning,
    TaskPhase::Running,
    TaskPhase::Suspended,
    TaskPhase::Blocked,
    TaskPhase::Synthesizing,
    TaskPhase::Succeeded,
    TaskPhase::Failed,
    TaskPhase::Cancelled,
];

/// Buckets from 1 ms to 10 s, for dispatch latency and reconcile duration.
const FAST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label value of a Task phase, as the API spells it.
fn phase_name(phase: TaskPhase) -> &'static str {
    match phase {
        TaskPhase::Pending => "Pending",
        TaskPhase::Planning => "Planning",
        TaskPhase::Running => "Running",
        TaskPhase::Suspended => "Suspended",
        TaskPhase::Blocked => "Blocked",
        TaskPhase::Synthesizing => "Synthesizing",
        TaskPhase::Succeeded => "Succeeded",
        TaskPhase::Failed => "Failed",
        TaskPhase::Cancelled => "Cancelled",
    }
}

/// Label of the Task-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// Labels of the agent gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    pool: String,
    /// Not `namespace`: see the module doc.
    pool_namespace: String,
    state: String,
}

/// Labels of the queue-depth gauge: the pool's name and namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    /// Not `namespace`: see the module doc.
    pool_namespace: String,
}

impl PoolLabels {
    fn new(namespace: &str, pool: &str) -> Self {
        Self {
            pool: pool.to_owned(),
            pool_namespace: namespace.to_owned(),
        }
    }
}

/// Labels of the token counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    r#type: String,
}

/// Label of the reconcile-duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// Label of the checkpoint counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Labels of the reconcile-error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileErrorLabels {
    controller: String,
    reason: String,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

/// Every metric the operator keeps, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    orphaned: Gauge,
    tasks: Family<PhaseLabel, Gauge>,
    /// The phase each live Task was last counted in, so the gauge stays exact however often a
    /// phase is reported again.
    task_phases: Mutex<HashMap<String, TaskPhase>>,
    subtask_duration: Histogram,
    dispatch_latency: Histogram,
    agents: Family<AgentLabels, Gauge>,
    /// The agent states reported per pool (by namespace and name), so `forget_pool` can remove
    /// every series of a pool.
    pool_states: Mutex<HashMap<PoolLabels, BTreeSet<String>>>,
    queue_depth: Family<PoolLabels, Gauge>,
    tokens: Family<TokenLabels, Counter>,
    cost_usd: Counter<f64, AtomicU64>,
    reconcile_duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    agent_recoveries: Counter,
    checkpoints: Family<OutcomeLabel, Counter>,
    checkpoint_save: Histogram,
    checkpoint_bytes: Histogram,
    restores: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every `maos_*` metric registered, each Task phase at zero and the
    /// replica not leading.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("maos");
        // Registered at 0 so a standby has the series from its first scrape: "no replica
        // leads" is then `max(maos_leader) == 0`, not the absence of a series.
        let leader = Gauge::default();
        let orphaned = Gauge::default();
        let tasks = Family::<PhaseLabel, Gauge>::default();
        for phase in PHASES {
            tasks
                .get_or_create(&PhaseLabel {
                    phase: phase_name(phase),
                })
                .set(0);
        }
        // Subtasks are model-driven work: from a second to a few hours.
        let subtask_duration = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let dispatch_latency = Histogram::new(FAST_BUCKETS);
        let agents = Family::<AgentLabels, Gauge>::default();
        let queue_depth = Family::<PoolLabels, Gauge>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost_usd = Counter::<f64, AtomicU64>::default();
        let reconcile_duration =
            Family::<ControllerLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                reconcile_histogram,
            );
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        let agent_recoveries = Counter::default();
        let checkpoints = Family::<OutcomeLabel, Counter>::default();
        let checkpoint_save = Histogram::new(FAST_BUCKETS);
        // 1 KiB to 1 GiB.
        let checkpoint_bytes = Histogram::new(exponential_buckets(1024.0, 4.0, 11));
        let restores = Family::<OutcomeLabel, Counter>::default();

        registry.register(
            "leader",
            "Whether this replica holds the leader Lease (1) or is a standby (0)",
            leader.clone(),
        );
        registry.register(
            "orphaned_objects",
            "Deleted Tasks and AgentPools let go while Redis was unreachable whose keys are not yet swept",
            orphaned.clone(),
        );
        registry.register("tasks", "Tasks, by phase", tasks.clone());
        registry.register(
            "subtask_duration_seconds",
            "Time from a subtask's dispatch to its completion",
            subtask_duration.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "Time from a subtask becoming ready to its dispatch",
            dispatch_latency.clone(),
        );
        registry.register(
            "agents",
            "Agents, by pool, pool namespace and state",
            agents.clone(),
        );
        registry.register(
            "queue_depth",
            "Work items waiting in a pool's queue, by pool and pool namespace",
            queue_depth.clone(),
        );
        registry.register(
            "tokens",
            "Model tokens used, by model and type",
            tokens.clone(),
        );
        registry.register("cost_usd", "Model cost in US dollars", cost_usd.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller and error reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "agent_recoveries",
            "Dead agents whose work was reclaimed",
            agent_recoveries.clone(),
        );
        registry.register(
            "checkpoints",
            "Checkpoints finished, by outcome (saved, failed)",
            checkpoints.clone(),
        );
        registry.register(
            "checkpoint_save_duration_seconds",
            "Time to snapshot a Task and store it",
            checkpoint_save.clone(),
        );
        registry.register(
            "checkpoint_size_bytes",
            "Size of stored checkpoints (compressed)",
            checkpoint_bytes.clone(),
        );
        registry.register(
            "state_restores",
            "Task states restored from a checkpoint, by cause (resume, recovery)",
            restores.clone(),
        );
        Self {
            registry,
            leader,
            orphaned,
            tasks,
            task_phases: Mutex::new(HashMap::new()),
            subtask_duration,
            dispatch_latency,
            agents,
            pool_states: Mutex::new(HashMap::new()),
            queue_depth,
            tokens,
            cost_usd,
            reconcile_duration,
            reconcile_errors,
            agent_recoveries,
            checkpoints,
            checkpoint_save,
            checkpoint_bytes,
            restores,
        }
    }

    /// Records whether this replica leads (runs the controllers) or stands by.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records how many deleted objects' Redis keys wait for the orphan sweep.
    pub fn set_orphaned(&self, n: usize) {
        self.orphaned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records the phase of the Task with this uid; `None` when the Task is gone.
    pub fn set_task_phase(&self, uid: &str, phase: Option<TaskPhase>) {
        let mut phases = self.task_phases.lock().unwrap_or_else(|p| p.into_inner());
        let previous = match phase {
            Some(phase) => phases.insert(uid.to_owned(), phase),
            None => phases.remove(uid),
        };
        if previous == phase {
            return;
        }
        // Both moves happen under the lock, so the gauge always sums to the number of Tasks.
        if let Some(previous) = previous {
            self.tasks
                .get_or_create(&PhaseLabel {
                    phase: phase_name(previous),
                })
                .dec();
        }
        if let Some(phase) = phase {
            self.tasks
                .get_or_create(&PhaseLabel {
                    phase: phase_name(phase),
                })
                .inc();
        }
    }

    /// Records how long one subtask took, from dispatch to completion.
    pub fn observe_subtask(&self, seconds: f64) {
        self.subtask_duration.observe(seconds);
    }

    /// Records how long a ready subtask waited before it was dispatched.
    pub fn observe_dispatch(&self, seconds: f64) {
        self.dispatch_latency.observe(seconds);
    }

    /// Sets how many agents of the pool `namespace`/`pool` are in `state` (`starting`, `idle`,
    /// `busy` or `dead`).
    pub fn set_agents(&self, namespace: &str, pool: &str, state: &str, n: i64) {
        self.pool_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(PoolLabels::new(namespace, pool))
            .or_default()
            .insert(state.to_owned());
        self.agents
            .get_or_create(&AgentLabels {
                pool: pool.to_owned(),
                pool_namespace: namespace.to_owned(),
                state: state.to_owned(),
            })
            .set(n);
    }

    /// Sets how many work items wait in the queue of the pool `namespace`/`pool`.
    pub fn set_queue_depth(&self, namespace: &str, pool: &str, n: i64) {
        self.queue_depth
            .get_or_create(&PoolLabels::new(namespace, pool))
            .set(n);
    }

    /// Removes every series of the deleted pool `namespace`/`pool`; pools of the same name in
    /// other namespaces keep theirs.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        let key = PoolLabels::new(namespace, pool);
        let states = self
            .pool_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .unwrap_or_default();
        for state in states {
            self.agents.remove(&AgentLabels {
                pool: pool.to_owned(),
                pool_namespace: namespace.to_owned(),
                state,
            });
        }
        self.queue_depth.remove(&key);
    }

    /// Adds `n` tokens of `kind` (`input`, `output`, `cache_read` or `cache_creation`).
    pub fn add_tokens(&self, model: &str, kind: &str, n: u64) {
        self.tokens
            .get_or_create(&TokenLabels {
                model: model.to_owned(),
                r#type: kind.to_owned(),
            })
            .inc_by(n);
    }

    /// Adds model cost in US dollars.
    pub fn add_cost(&self, usd: f64) {
        self.cost_usd.inc_by(usd);
    }

    /// Records how long one reconcile of `controller` took.
    pub fn observe_reconcile(&self, controller: &str, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: controller.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a failed reconcile of `controller`; `reason` is the error's variant name.
    pub fn reconcile_error(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a dead agent whose work was reclaimed.
    pub fn agent_recovered(&self) {
        self.agent_recoveries.inc();
    }

    /// Counts a finished checkpoint (`saved` or `failed`).
    pub fn checkpoint_finished(&self, outcome: &'static str) {
        self.checkpoints
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Records how long a checkpoint took to save and how large it was.
    pub fn observe_checkpoint_save(&self, seconds: f64, bytes: u64) {
        self.checkpoint_save.observe(seconds);
        self.checkpoint_bytes.observe(bytes as f64);
    }

    /// Counts a Task state restored from a checkpoint (`resume` or `recovery`).
    pub fn state_restored(&self, outcome: &'static str) {
        self.restores.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    fn assert_series(text: &str, line: &str) {
        assert!(series(text, line), "missing `{line}` in:\n{text}");
    }

    #[test]
    fn checkpoints_and_restores_are_counted_by_outcome() {
        let metrics = Metrics::new();
        metrics.checkpoint_finished("saved");
        metrics.checkpoint_finished("saved");
        metrics.checkpoint_finished("failed");
        metrics.observe_checkpoint_save(0.2, 6_000);
        metrics.state_restored("recovery");
        let text = metrics.encode();
        assert_series(&text, "maos_checkpoints_total{outcome=\"saved\"} 2");
        assert_series(&text, "maos_checkpoints_total{outcome=\"failed\"} 1");
        assert_series(&text, "maos_checkpoint_save_duration_seconds_count 1");
        assert_series(&text, "maos_checkpoint_size_bytes_count 1");
        assert_series(&text, "maos_state_restores_total{outcome=\"recovery\"} 1");
    }

    #[test]
    fn every_task_phase_is_reported_at_zero_before_any_task() {
        let text = Metrics::new().encode();
        for phase in [
            "Pending",
            "Planning",
            "Running",
            "Synthesizing",
            "Succeeded",
            "Failed",
        ] {
            assert_series(&text, &format!("maos_tasks{{phase=\"{phase}\"}} 0"));
        }
    }

    #[test]
    fn task_phase_gauge_moves_a_task_between_phases() {
        let metrics = Metrics::new();
        metrics.set_task_phase("a", Some(TaskPhase::Pending));
        metrics.set_task_phase("b", Some(TaskPhase::Pending));
        metrics.set_task_phase("a", Some(TaskPhase::Running));
        let text = metrics.encode();
        assert_series(&text, "maos_tasks{phase=\"Pending\"} 1");
        assert_series(&text, "maos_tasks{phase=\"Running\"} 1");
    }

    #[test]
    fn task_phase_reported_again_is_counted_once() {
        let metrics = Metrics::new();
        metrics.set_task_phase("a", Some(TaskPhase::Running));
        metrics.set_task_phase("a", Some(TaskPhase::Running));
        assert_series(&metrics.encode(), "maos_tasks{phase=\"Running\"} 1");
    }

    #[test]
    fn deleted_task_leaves_the_gauge_and_unknown_deletes_are_ignored() {
        let metrics = Metrics::new();
        metrics.set_task_phase("a", Some(TaskPhase::Succeeded));
        metrics.set_task_phase("a", None);
        metrics.set_task_phase("never-seen", None);
        let text = metrics.encode();
        assert_series(&text, "maos_tasks{phase=\"Succeeded\"} 0");
        assert!(
            !text.contains("maos_tasks{phase=\"Succeeded\"} -"),
            "{text}"
        );
    }

    #[test]
    fn standby_reports_not_leading_from_the_start_and_leading_once_it_leads() {
        let metrics = Metrics::new();
        assert_series(&metrics.encode(), "maos_leader 0");
        metrics.set_leading(true);
        let text = metrics.encode();
        assert_series(&text, "maos_leader 1");
        assert!(!series(&text, "maos_leader 0"), "{text}");
    }

    #[test]
    fn leader_that_steps_down_reports_not_leading() {
        let metrics = Metrics::new();
        metrics.set_leading(true);
        metrics.set_leading(false);
        assert_series(&metrics.encode(), "maos_leader 0");
    }

    #[test]
    fn agents_and_queue_depth_are_reported_per_pool() {
        let metrics = Metrics::new();
        metrics.set_agents("team-a", "coders", "idle", 3);
        metrics.set_agents("team-a", "coders", "busy", 2);
        metrics.set_queue_depth("team-a", "coders", 7);
        let text = metrics.encode();
        assert_series(
            &text,
            "maos_agents{pool=\"coders\",pool_namespace=\"team-a\",state=\"idle\"} 3",
        );
        assert_series(
            &text,
            "maos_agents{pool=\"coders\",pool_namespace=\"team-a\",state=\"busy\"} 2",
        );
        assert_series(
            &text,
            "maos_queue_depth{pool=\"coders\",pool_namespace=\"team-a\"} 7",
        );
    }

    #[test]
    fn pools_of_the_same_name_in_two_namespaces_are_two_series() {
        let metrics = Metrics::new();
        metrics.set_agents("team-a", "default", "busy", 2);
        metrics.set_agents("team-b", "default", "busy", 5);
        metrics.set_queue_depth("team-a", "default", 1);
        metrics.set_queue_depth("team-b", "default", 9);
        let text = metrics.encode();
        assert_series(
            &text,
            "maos_agents{pool=\"default\",pool_namespace=\"team-a\",state=\"busy\"} 2",
        );
        assert_series(
            &text,
            "maos_agents{pool=\"default\",pool_namespace=\"team-b\",state=\"busy\"} 5",
        );
        assert_series(
            &text,
            "maos_queue_depth{pool=\"default\",pool_namespace=\"team-a\"} 1",
        );
        assert_series(
            &text,
            "maos_queue_depth{pool=\"default\",pool_namespace=\"team-b\"} 9",
        );
    }

    #[test]
    fn forgotten_pool_loses_its_series_and_other_pools_keep_theirs() {
        let metrics = Metrics::new();
        metrics.set_agents("team-a", "coders", "idle", 3);
        metrics.set_agents("team-a", "coders", "dead", 1);
        metrics.set_queue_depth("team-a", "coders", 7);
        metrics.set_agents("team-a", "writers", "busy", 1);
        metrics.forget_pool("team-a", "coders");
        let text = metrics.encode();
        assert!(!text.contains("pool=\"coders\""), "{text}");
        assert_series(
            &text,
            "maos_agents{pool=\"writers\",pool_namespace=\"team-a\",state=\"busy\"} 1",
        );
    }

    #[test]
    fn forgotten_pool_leaves_its_namesake_in_another_namespace() {
        let metrics = Metrics::new();
        metrics.set_agents("team-a", "default", "idle", 3);
        metrics.set_queue_depth("team-a", "default", 7);
        metrics.set_agents("team-b", "default", "idle", 4);
        metrics.set_queue_depth("team-b", "default", 2);
        metrics.forget_pool("team-a", "default");
        let text = metrics.encode();
        assert!(!text.contains("pool_namespace=\"team-a\""), "{text}");
        assert_series(
            &text,
            "maos_agents{pool=\"default\",pool_namespace=\"team-b\",state=\"idle\"} 4",
        );
        assert_series(
            &text,
            "maos_queue_depth{pool=\"default\",pool_namespace=\"team-b\"} 2",
        );
    }

    #[test]
    fn tokens_and_cost_accumulate() {
        let metrics = Metrics::new();
        metrics.add_tokens("claude-sonnet-4-5", "input", 100);
        metrics.add_tokens("claude-sonnet-4-5", "input", 20);
        metrics.add_tokens("claude-sonnet-4-5", "cache_read", 5);
        metrics.add_cost(0.25);
        metrics.add_cost(0.5);
        let text = metrics.encode();
        assert_series(
            &text,
            "maos_tokens_total{model=\"claude-sonnet-4-5\",type=\"input\"} 120",
        );
        assert_series(
            &text,
            "maos_tokens_total{model=\"claude-sonnet-4-5\",type=\"cache_read\"} 5",
        );
        assert_series(&text, "maos_cost_usd_total 0.75");
    }

    #[test]
    fn reconcile_durations_and_errors_are_labelled_by_controller() {
        let metrics = Metrics::new();
        metrics.observe_reconcile("task", 0.003);
        metrics.observe_reconcile("task", 0.2);
        metrics.reconcile_error("task", "PoolNotFound");
        let text = metrics.encode();
        assert_series(
            &text,
            "maos_reconcile_duration_seconds_count{controller=\"task\"} 2",
        );
        assert_series(
            &text,
            "maos_reconcile_duration_seconds_bucket{le=\"0.005\",controller=\"task\"} 1",
        );
        assert_series(
            &text,
            "maos_reconcile_errors_total{controller=\"task\",reason=\"PoolNotFound\"} 1",
        );
    }

    #[test]
    fn dispatch_latency_buckets_span_a_millisecond_to_ten_seconds() {
        let metrics = Metrics::new();
        metrics.observe_dispatch(0.0005);
        metrics.observe_dispatch(9.0);
        let text = metrics.encode();
        assert_series(
            &text,
            "maos_dispatch_latency_seconds_bucket{le=\"0.001\"} 1",
        );
        assert_series(&text, "maos_dispatch_latency_seconds_bucket{le=\"10.0\"} 2");
        assert_series(&text, "maos_dispatch_latency_seconds_count 2");
    }

    #[test]
    fn subtask_durations_and_recoveries_are_counted() {
        let metrics = Metrics::new();
        metrics.observe_subtask(42.0);
        metrics.agent_recovered();
        let text = metrics.encode();
        assert_series(&text, "maos_subtask_duration_seconds_count 1");
        assert_series(&text, "maos_subtask_duration_seconds_sum 42.0");
        assert_series(&text, "maos_agent_recoveries_total 1");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
