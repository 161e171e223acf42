//! `AgentPool`: a pool of long-lived agent pods that claim and work subtasks.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::schema;

/// The model an agent uses when its pool names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// The agent-runner image a pool runs when it names none.
pub const DEFAULT_AGENT_IMAGE: &str = "ghcr.io/maos/agent-runner:0.1.0";

/// The desired state of an AgentPool: how many agents, which model, and the limits they share.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "maos.dev",
    version = "v1alpha1",
    kind = "AgentPool",
    plural = "agentpools",
    namespaced,
    status = "AgentPoolStatus",
    derive = "PartialEq",
    shortname = "apool",
    category = "maos",
    doc = "An AgentPool is a pool of Claude agent pods that claim subtasks of Tasks from a shared queue; the operator scales it between min and max on queue depth.",
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyAgents", description = "Agents with a recent heartbeat"),
    printcolumn(name = "Busy", type_ = "integer", json_path = ".status.busyAgents", description = "Agents working a subtask"),
    printcolumn(name = "Queue", type_ = "integer", json_path = ".status.queueDepth", description = "Work items waiting for an agent"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.replicas.min"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.replicas.max"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 57").message("AgentPool names are at most 57 characters: agent pods are named <pool>-<5 characters>")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentPoolSpec {
    /// How many agents the pool runs; it is scaled between min and max on queue depth.
    /// Default: min 1, max 20.
    #[serde(default)]
    pub replicas: Replicas,

    /// The Claude model this pool's agents use. Default: claude-sonnet-4-5.
    #[serde(default = "default_model")]
    #[schemars(length(min = 1, max = MAX_MODEL_LEN))]
    pub model: String,

    /// The Secret key holding the Anthropic API key; only agent pods ever see it.
    pub api_key_secret_ref: SecretKeyRef,

    /// The agent-runner container image. Default: ghcr.io/maos/agent-runner:0.1.0.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = MAX_IMAGE_LEN))]
    pub image: String,

    /// CPU and memory for each agent pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<AgentResources>,

    /// The most tool-loop turns an agent takes on one subtask. Default: 40.
    #[serde(default = "default_max_turns")]
    #[schemars(range(min = 1, max = MAX_TURNS))]
    pub max_turns: u32,

    /// Seconds between two heartbeats of an agent; an agent that misses three is dead.
    /// Default: 1.
    #[serde(default = "default_heartbeat_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub heartbeat_seconds: u32,

    /// Seconds an agent above min may stay idle before it is removed. Default: 300.
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 0, max = MAX_SECONDS))]
    pub idle_seconds: u32,

    /// Model rate limits, one token bucket in Redis shared by every agent of the pool.
    /// Default: 50 requests, 40000 input and 8000 output tokens per minute.
    #[serde(default)]
    pub rate_limits: RateLimits,

    /// Tools the agents may use besides MAOS's own: remote MCP servers. A Task's agents get
    /// only those the Task names in its spec.tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<super::PoolTools>,
    /// Extended thinking for this pool's agents (a Task's own `thinking` wins); omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<super::ThinkingConfig>,
}

/// The range the autoscaler keeps a pool's agent count in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max").field_path(".min"))]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// The fewest agents, kept even when idle. Default: 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub min: u32,

    /// The most agents, reached when work waits. Default: 20.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max: u32,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: default_min_replicas(),
            max: default_max_replicas(),
        }
    }
}

/// A key of a Secret in the pool's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = MAX_SUBDOMAIN_LEN))]
    pub name: String,

    /// Key in the Secret's data. Default: api-key.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = MAX_SUBDOMAIN_LEN), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Compute resources of one agent pod, as in a container's `resources` (without `claims`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentResources {
    /// The most of each resource the agent may use, e.g. `{cpu: "1", memory: 512Mi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::quantities")]
    pub limits: BTreeMap<String, Quantity>,

    /// The resources the scheduler reserves for the agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::quantities")]
    pub requests: BTreeMap<String, Quantity>,
}

/// A pool's model rate limits, per minute, shared by all its agents.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Model requests per minute. Default: 50.
    #[serde(default = "default_requests_per_minute")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: u32,

    /// Input tokens per minute. Default: 40000.
    #[serde(default = "default_input_tokens_per_minute")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub input_tokens_per_minute: u32,

    /// Output tokens per minute. Default: 8000.
    #[serde(default = "default_output_tokens_per_minute")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub output_tokens_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: default_requests_per_minute(),
            input_tokens_per_minute: default_input_tokens_per_minute(),
            output_tokens_per_minute: default_output_tokens_per_minute(),
        }
    }
}

/// The observed state of an AgentPool, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentPoolStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Agent pods that exist.
    #[serde(default)]
    pub replicas: u32,

    /// Agents with a recent heartbeat.
    #[serde(default)]
    pub ready_agents: u32,

    /// Agents working a subtask.
    #[serde(default)]
    pub busy_agents: u32,

    /// Work items waiting for an agent.
    #[serde(default)]
    pub queue_depth: u64,

    /// Each agent's state (at most 1000 entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_AGENTS))]
    pub agents: Vec<AgentStatus>,

    /// Ready, Scaling and Degraded, in the standard Kubernetes form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// The state of one agent of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Name of the agent's pod.
    #[schemars(length(max = MAX_SUBDOMAIN_LEN))]
    pub name: String,

    /// What the agent is doing.
    pub phase: AgentPhase,

    /// The subtask it works, as `<task>/<subtask>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub subtask: Option<String>,

    /// When it last sent a heartbeat, as of the last status write: while nothing else about
    /// the pool changes it is refreshed every 5 minutes (an agent that stops beating shows as
    /// Dead at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub last_heartbeat: Option<Time>,
}

/// What one agent is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AgentPhase {
    /// Its pod is starting; no heartbeat yet.
    Starting,
    /// Beating and waiting for work.
    Idle,
    /// Working a subtask.
    Busy,
    /// Missed three heartbeats; its work is being reclaimed.
    Dead,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}
fn default_image() -> String {
    DEFAULT_AGENT_IMAGE.to_owned()
}
fn default_api_key_key() -> String {
    "api-key".to_owned()
}
fn default_min_replicas() -> u32 {
    1
}
fn default_max_replicas() -> u32 {
    20
}
fn default_max_turns() -> u32 {
    40
}
fn default_heartbeat_seconds() -> u32 {
    1
}
fn default_idle_seconds() -> u32 {
    300
}
fn default_requests_per_minute() -> u32 {
    50
}
fn default_input_tokens_per_minute() -> u32 {
    40_000
}
fn default_output_tokens_per_minute() -> u32 {
    8_000
}
