//! `Task`: one goal, planned into a DAG of subtasks and worked by an AgentPool.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::schema;

/// The desired state of a Task: the goal, the pool that works it, and the limits it runs under.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "maos.dev",
    version = "v1alpha1",
    kind = "Task",
    plural = "tasks",
    namespaced,
    status = "TaskStatus",
    derive = "PartialEq",
    shortname = "mtask",
    category = "maos",
    doc = "A Task is one goal that MAOS plans into a DAG of subtasks and works with a pool of Claude agents in parallel; progress and the result are written to its status.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Summary of the Task's conditions"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress", description = "The goal's succeeded subtasks out of all of them (planner and synthesizer not counted)"),
    printcolumn(name = "Speedup", type_ = "string", json_path = ".status.speedup", description = "Sum of subtask durations divided by wall time"),
    printcolumn(name = "Cost", type_ = "string", json_path = ".status.usage.costUSD", description = "Model cost so far, in US dollars"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63").message(kube::core::Message::Expression("'metadata.name: ' + self.metadata.name + ' has ' + string(size(self.metadata.name)) + ' characters; Task names are at most 63: they are used as label values'".into()))
)]
#[x_kube(
    validation = Rule::new("self.prompt.trim().size() > 0").message("spec.prompt must not be blank").field_path(".prompt"),
    validation = Rule::new("!has(self.subtasks) || size(self.subtasks) <= self.maxSubtasks").message("spec.subtasks has more entries than spec.maxSubtasks").field_path(".subtasks"),
    validation = Rule::new("self.prompt == oldSelf.prompt").message("prompt is immutable: create a new Task for a new goal").field_path(".prompt"),
    validation = Rule::new("self.poolRef == oldSelf.poolRef").message("poolRef is immutable").field_path(".poolRef"),
    validation = Rule::new("has(self.subtasks) == has(oldSelf.subtasks) && (!has(self.subtasks) || self.subtasks == oldSelf.subtasks)").message("subtasks are immutable").field_path(".subtasks"),
    validation = Rule::new("has(self.resumeFrom) == has(oldSelf.resumeFrom) && (!has(self.resumeFrom) || self.resumeFrom == oldSelf.resumeFrom)").message("resumeFrom is immutable").field_path(".resumeFrom"),
    validation = Rule::new("has(self.tools) == has(oldSelf.tools) && (!has(self.tools) || self.tools == oldSelf.tools)").message("tools are immutable: agents already work with the tools the Task was accepted with").field_path(".tools")
)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// The goal, in plain language. The planner agent splits it into subtasks; every agent sees it.
    #[schemars(length(min = 1, max = MAX_PROMPT_LEN))]
    pub prompt: String,

    /// The AgentPool (in the Task's namespace) whose agents plan and work this Task.
    pub pool_ref: PoolRef,

    /// An explicit DAG of subtasks. When empty, a planner agent decides the subtasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SUBTASKS))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message(kube::core::Message::Expression("'subtask names must be unique: ' + self.map(s, s.name).filter(n, self.filter(t, t.name == n).size() > 1)[0] + ' appears more than once'".into())))]
    pub subtasks: Vec<SubtaskSpec>,

    /// The most subtasks the planner may create (hard cap 64). Default: 12.
    #[serde(default = "default_max_subtasks")]
    #[schemars(range(min = 1, max = MAX_SUBTASKS))]
    pub max_subtasks: u32,

    /// The most subtasks of this Task running at once. Default: 8.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = MAX_PARALLELISM))]
    pub parallelism: u32,

    /// How a failed subtask is retried. Default: limit 2, backoff 5 s × 2 up to 120 s.
    #[serde(default)]
    pub retry_strategy: RetryStrategy,

    /// How long one attempt of one subtask may run before it is failed, in seconds. Default: 600.
    #[serde(default = "default_subtask_timeout_seconds")]
    #[schemars(range(min = 10, max = MAX_SECONDS))]
    pub subtask_timeout_seconds: u32,

    /// How long the whole Task may run before it fails with DeadlineExceeded, in seconds.
    /// Default: 3600.
    #[serde(default = "default_active_deadline_seconds")]
    #[schemars(range(min = 10, max = MAX_SECONDS))]
    pub active_deadline_seconds: u32,

    /// Limits on tokens and cost, enforced by the control plane before every model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,

    /// Add a final subtask that receives every result and writes the answer. Default: true.
    #[serde(default = "default_true")]
    pub synthesize: bool,

    /// Periodic checkpoints of this Task to object storage; omit to disable them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointPolicy>,

    /// Start from a saved Checkpoint instead of from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<ResumeFrom>,

    /// While true, no new subtask is dispatched; running subtasks finish (Kueue-compatible).
    /// Default: false.
    #[serde(default)]
    pub suspend: bool,

    /// Stop the Task: Graceful dispatches nothing new and ends Cancelled once running subtasks
    /// finish; Terminate stops the agents at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<Shutdown>,

    /// Extended thinking for this Task's model calls, overriding its pool's; omit for the
    /// pool's. Read when the Task is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<super::ThinkingConfig>,

    /// Delete the Task this many seconds after it finished; omit to keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_SECONDS))]
    pub ttl_seconds_after_finished: Option<u32>,

    /// The pool's MCP tools this Task's agents may use: a server's name (all the tools the pool
    /// allows of it) or <server>/<tool>. Default: none, so a server added to a pool changes
    /// nothing for the Tasks on it. A name the pool does not offer holds the Task with
    /// condition Accepted=False, reason ToolsUnavailable, until the pool offers it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TASK_TOOLS), inner(length(min = 1, max = MAX_TOOL_REF_LEN), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)?$")))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u == t))").message(kube::core::Message::Expression("'spec.tools must not list ' + self.filter(t, self.filter(u, u == t).size() > 1)[0] + ' twice'".into())))]
    pub tools: Vec<String>,
}

/// A reference to an AgentPool in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolRef {
    /// Name of the AgentPool: a DNS-1123 subdomain, as every object name.
    #[schemars(
        length(min = 1, max = MAX_POOL_NAME_LEN),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// One subtask of a manual DAG.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!has(self.dependsOn) || !(self.name in self.dependsOn)").message(kube::core::Message::Expression("'subtask ' + self.name + ' cannot depend on itself'".into())).field_path(".dependsOn"),
    validation = Rule::new("!has(self.dependsOn) || self.dependsOn.all(d, self.dependsOn.exists_one(e, e == d))").message(kube::core::Message::Expression("'subtask ' + self.name + ' lists ' + self.dependsOn.filter(d, self.dependsOn.filter(e, e == d).size() > 1)[0] + ' more than once in dependsOn'".into())).field_path(".dependsOn"),
    validation = Rule::new("!(self.name in ['plan', 'synthesize'])").message(kube::core::Message::Expression("'subtask name ' + self.name + ' is reserved for MAOS (its planner and synthesizer)'".into())).field_path(".name"),
    validation = Rule::new("self.prompt.trim().size() > 0").message(kube::core::Message::Expression("'the prompt of subtask ' + self.name + ' must not be blank'".into())).field_path(".prompt")
)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskSpec {
    /// Name of the subtask: a DNS-1123 label, unique in the Task. `plan` and `synthesize` are reserved.
    #[schemars(length(min = 1, max = MAX_LABEL_LEN), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// What the agent working this subtask should do.
    #[schemars(length(min = 1, max = MAX_SUBTASK_PROMPT_LEN))]
    pub prompt: String,

    /// Subtasks whose results this one needs; it starts once all of them succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SUBTASKS), inner(length(min = 1, max = MAX_LABEL_LEN)))]
    pub depends_on: Vec<String>,

    /// How many agents answer this subtask independently; the answers are merged into one. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_VOTERS))]
    pub voters: Option<u32>,
}

/// How a failed subtask is retried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    /// How many times a failed subtask is retried before the Task fails. Default: 2.
    #[serde(default = "default_retry_limit")]
    #[schemars(range(min = 0, max = MAX_RETRY_LIMIT))]
    pub limit: u32,

    /// The wait between attempts. Default: 5 s, × 2 each time, at most 120 s.
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for RetryStrategy {
    fn default() -> Self {
        Self {
            limit: default_retry_limit(),
            backoff: Backoff::default(),
        }
    }
}

/// Exponential backoff between attempts: duration × factor^(attempt-1), at most maxDuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.maxDurationSeconds >= self.durationSeconds").message("maxDurationSeconds must be at least durationSeconds").field_path(".maxDurationSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The wait before the first retry, in seconds. Default: 5.
    #[serde(default = "default_backoff_seconds")]
    #[schemars(range(min = 0, max = MAX_SECONDS))]
    pub duration_seconds: u32,

    /// How much longer each further wait is than the one before. Default: 2.
    #[serde(default = "default_backoff_factor")]
    #[schemars(range(min = 1, max = 10))]
    pub factor: u32,

    /// The longest wait, in seconds. Default: 120.
    #[serde(default = "default_backoff_max_seconds")]
    #[schemars(range(min = 0, max = MAX_SECONDS))]
    pub max_duration_seconds: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            duration_seconds: default_backoff_seconds(),
            factor: default_backoff_factor(),
            max_duration_seconds: default_backoff_max_seconds(),
        }
    }
}

/// Limits on what a Task may spend. Every model call reserves its max_tokens first, so a Task
/// overshoots by at most the calls already in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.maxTokens) || has(self.maxCostUSD)").message("set maxTokens, maxCostUSD or both"))]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The most tokens the Task may use, every token the API bills counted once: input, output,
    /// and prompt-cache reads and writes (`status.budget` shows what is spent and reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub max_tokens: Option<u64>,

    /// The most the Task may cost, in US dollars, as a decimal string (e.g. "25.00").
    #[serde(
        default,
        rename = "maxCostUSD",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = MAX_DECIMAL_LEN), pattern(r"^[0-9]{1,9}(\.[0-9]{1,6})?$"))]
    pub max_cost_usd: Option<String>,
}

/// When and how many periodic checkpoints a Task takes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointPolicy {
    /// Seconds between two checkpoints of a running Task. Default: 30.
    #[serde(default = "default_checkpoint_interval_seconds")]
    #[schemars(range(min = 5, max = MAX_SECONDS))]
    pub interval_seconds: u32,

    /// How many of the newest checkpoints are kept; older ones are deleted. Default: 5.
    #[serde(default = "default_checkpoints_kept")]
    #[schemars(range(min = 1, max = MAX_CHECKPOINTS_KEPT))]
    pub keep: u32,
}

/// Where a resumed Task starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeFrom {
    /// Name of a Checkpoint in the Task's namespace.
    #[schemars(length(min = 1, max = MAX_SUBDOMAIN_LEN))]
    pub checkpoint: String,

    /// Resume even though this Task's prompt, subtasks, maxSubtasks or synthesize differ from
    /// those of the Task the Checkpoint was taken of (default false: such a resume fails with
    /// reason CheckpointMismatch, naming the fields). The pool may always differ.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_spec_change: bool,
}

/// How a Task is stopped before it finishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Shutdown {
    /// Dispatch nothing new; end Cancelled once the running subtasks finish.
    Graceful,
    /// Stop the agents working this Task now and end Cancelled.
    Terminate,
}

/// The observed state of a Task, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// A one-word summary of the conditions, for printer columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,

    /// The goal's succeeded subtasks out of all of them, e.g. "5/8". The planner and the
    /// synthesizer are not counted, so the total is fixed from the start for a manual DAG and
    /// set once a plan is accepted; empty while planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub progress: Option<String>,

    /// Increases each time a new plan is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_revision: Option<u32>,

    /// How many subtasks are in each phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<SubtaskCounts>,

    /// One short summary per subtask; full results are in the result ConfigMap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_SUBTASKS))]
    pub subtasks: Vec<SubtaskStatus>,

    /// Tokens and cost used so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,

    /// The token budget as the agents account it, when `spec.budget.maxTokens` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,

    /// When the first subtask started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub started_at: Option<Time>,

    /// When the Task finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub completed_at: Option<Time>,

    /// Sum of subtask durations divided by wall time: the parallelism actually won, e.g. "4.6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DECIMAL_LEN))]
    pub speedup: Option<String>,

    /// The first 4 KiB of the final result; the whole result is in resultRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_RESULT_LEN))]
    pub result: Option<String>,

    /// Where the whole final result is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<ResultRef>,

    /// The newest Checkpoint saved of this Task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<LastCheckpoint>,

    /// The uid of the AgentPool the Task is registered with: its Redis keys live under it.
    #[serde(default, rename = "poolUID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_LEN))]
    pub pool_uid: Option<String>,

    /// The newest entry of the Task's event stream folded into this status, so an operator
    /// that restarts folds every event exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 48))]
    pub last_event_id: Option<String>,

    /// Accepted, Planned, Suspended and Succeeded, in the standard Kubernetes form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A one-word summary of a Task's conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaskPhase {
    /// Not yet accepted (e.g. waiting for its pool to exist, or for the checkpoint it resumes from).
    Pending,
    /// A planner agent is splitting the goal into subtasks.
    Planning,
    /// Subtasks are being worked.
    Running,
    /// `spec.suspend` holds new dispatch; subtasks already running finish.
    Suspended,
    /// Its AgentPool cannot run agents (no API key, a key or model the API refuses, agents
    /// that cannot start); the Progressing condition says why. It goes on when the pool does.
    Blocked,
    /// The final subtask is merging the results.
    Synthesizing,
    /// The Task finished with a result.
    Succeeded,
    /// The Task finished without a result; the Succeeded condition says why.
    Failed,
    /// A user stopped the Task with `spec.shutdown` before it finished.
    Cancelled,
}

/// How many subtasks are in each phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskCounts {
    /// Subtasks waiting for their dependencies or for a free slot.
    #[serde(default)]
    pub pending: u32,
    /// Subtasks queued or being worked.
    #[serde(default)]
    pub running: u32,
    /// Subtasks that finished with a result.
    #[serde(default)]
    pub succeeded: u32,
    /// Subtasks that failed after their last retry.
    #[serde(default)]
    pub failed: u32,
}

/// A short summary of one subtask.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskStatus {
    /// Name of the subtask (`plan` for the planner, `synthesize` for the final merge).
    #[schemars(length(max = MAX_LABEL_LEN))]
    pub name: String,

    /// Where the subtask is in its life.
    pub phase: SubtaskPhase,

    /// Subtasks it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SUBTASKS), inner(length(max = MAX_LABEL_LEN)))]
    pub depends_on: Vec<String>,

    /// The agent working it now, or that worked it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBDOMAIN_LEN))]
    pub agent: Option<String>,

    /// How many attempts were started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,

    /// When its current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub started_at: Option<Time>,

    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub finished_at: Option<Time>,

    /// Input plus output tokens it used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,

    /// A short, fixed-form note on its state (never a prompt or a model answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_LEN))]
    pub message: Option<String>,
}

/// Where one subtask is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubtaskPhase {
    /// Waiting for its dependencies or for a free slot.
    Pending,
    /// In the pool's work queue, not yet claimed.
    Queued,
    /// An agent is working it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed after its last retry.
    Failed,
    /// Not run because the Task stopped first.
    Cancelled,
}

/// Tokens and cost a Task used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Cost in US dollars, as a decimal string.
    #[serde(default, rename = "costUSD", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DECIMAL_LEN))]
    pub cost_usd: Option<String>,
    /// Tokens per model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MODELS))]
    pub by_model: Vec<ModelUsage>,
}

/// A Task's token budget: its limit, what finished model calls spent, and what calls in flight
/// hold (each call reserves its `max_tokens` plus its input before it is made).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// `spec.budget.maxTokens`.
    pub max_tokens: u64,
    /// Tokens spent: input, output and prompt-cache reads and writes of finished calls.
    pub spent_tokens: u64,
    /// Tokens reserved by calls in flight.
    pub reserved_tokens: u64,
}

/// Tokens one model used for a Task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// The model's name.
    #[schemars(length(max = MAX_MODEL_LEN))]
    pub model: String,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
}

/// Where a Task's whole result is stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultRef {
    /// The ConfigMap holding the result, named `<task>-result`, owned by the Task.
    #[schemars(length(max = MAX_SUBDOMAIN_LEN))]
    pub config_map: String,
    /// The ConfigMap key holding the result.
    #[schemars(length(max = MAX_SUBDOMAIN_LEN))]
    pub key: String,
}

/// The newest Checkpoint saved of a Task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    /// Name of the Checkpoint.
    #[schemars(length(max = MAX_SUBDOMAIN_LEN))]
    pub name: String,
    /// When it was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub time: Option<Time>,
}

fn default_max_subtasks() -> u32 {
    12
}
fn default_parallelism() -> u32 {
    8
}
fn default_subtask_timeout_seconds() -> u32 {
    600
}
fn default_active_deadline_seconds() -> u32 {
    3_600
}
fn default_true() -> bool {
    true
}
fn default_retry_limit() -> u32 {
    2
}
fn default_backoff_seconds() -> u32 {
    5
}
fn default_backoff_factor() -> u32 {
    2
}
fn default_backoff_max_seconds() -> u32 {
    120
}
fn default_checkpoint_interval_seconds() -> u32 {
    30
}
fn default_checkpoints_kept() -> u32 {
    5
}
