//! Bounds shared by the CRD schema and the spec validator, so the two can never disagree.
//!
//! Every list and string of the API has a bound: it keeps objects well under etcd's ~1.5 MiB
//! and lets the API server estimate the cost of the CEL rules.

/// Most subtasks one Task may have, planned or manual (the hard cap of `maxSubtasks`).
pub const MAX_SUBTASKS: u32 = 64;
/// Entries of `status.subtasks`: every subtask, plus the planner and the synthesizer.
pub const MAX_STATUS_SUBTASKS: u32 = MAX_SUBTASKS + 2;
/// Longest Task prompt, in bytes (64 KiB).
pub const MAX_PROMPT_LEN: u32 = 65_536;
/// Longest prompt of one manual subtask, in bytes (16 KiB).
pub const MAX_SUBTASK_PROMPT_LEN: u32 = 16_384;
/// Longest DNS-1123 label: subtask names, label values.
pub const MAX_LABEL_LEN: u32 = 63;
/// Longest DNS-1123 subdomain: names of Kubernetes objects.
pub const MAX_SUBDOMAIN_LEN: u32 = 253;
/// Longest Task name: it becomes the value of the `maos.dev/task` label.
pub const MAX_TASK_NAME_LEN: u32 = 63;
/// Longest AgentPool name: agent pods are named `<pool>-<5 characters>` and must stay DNS labels.
pub const MAX_POOL_NAME_LEN: u32 = 57;
/// Most agents that may answer one subtask independently.
pub const MAX_VOTERS: u32 = 5;
/// Most subtasks of one Task running at once.
pub const MAX_PARALLELISM: u32 = 256;
/// Most retries of one failed subtask.
pub const MAX_RETRY_LIMIT: u32 = 10;
/// Longest timeout, deadline or backoff, in seconds (7 days).
pub const MAX_SECONDS: u32 = 604_800;
/// Most agents one pool may run.
pub const MAX_REPLICAS: u32 = 1_000;
/// Most tool-loop turns of one subtask.
pub const MAX_TURNS: u32 = 1_000;
/// Longest model name.
pub const MAX_MODEL_LEN: u32 = 128;
/// Longest container image reference.
pub const MAX_IMAGE_LEN: u32 = 512;
/// Most resource names in `resources.requests` or `resources.limits`.
pub const MAX_RESOURCE_NAMES: u32 = 16;
/// Longest condition or status message; messages are short and fixed in form.
pub const MAX_MESSAGE_LEN: u32 = 1_024;
/// Most bytes of the final result copied into `status.result` (4 KiB); the rest is in a ConfigMap.
pub const MAX_RESULT_LEN: u32 = 4_096;
/// Entries of `status.agents` of a pool.
pub const MAX_STATUS_AGENTS: u32 = MAX_REPLICAS;
/// Entries of `status.usage.byModel`.
pub const MAX_MODELS: u32 = 16;
/// Entries of `status.conditions`.
pub const MAX_CONDITIONS: u32 = 16;
/// Longest decimal string (costs, speedups).
pub const MAX_DECIMAL_LEN: u32 = 24;
/// Longest S3 object prefix.
pub const MAX_PREFIX_LEN: u32 = 512;
/// Longest checkpoint location URL.
pub const MAX_LOCATION_LEN: u32 = 1_024;
/// Most checkpoints a Task keeps.
pub const MAX_CHECKPOINTS_KEPT: u32 = 100;
/// Most MCP servers one pool may offer.
pub const MAX_MCP_SERVERS: u32 = 16;
/// Longest MCP server name: `<server>__<tool>` must leave room for the tool in the model's
/// 64-character tool names.
pub const MAX_MCP_SERVER_NAME_LEN: u32 = 24;
/// Most headers sent to one MCP server.
pub const MAX_MCP_HEADERS: u32 = 16;
/// Most entries of an MCP server's `allowedTools`.
pub const MAX_MCP_TOOLS: u32 = 128;
/// Longest MCP tool name (the MCP specification's bound).
pub const MAX_MCP_TOOL_NAME_LEN: u32 = 128;
/// Longest URL of an MCP server.
pub const MAX_URL_LEN: u32 = 2_048;
/// Longest entry of a Task's `spec.tools` (`<server>/<tool>`).
pub const MAX_TOOL_REF_LEN: u32 = MAX_MCP_SERVER_NAME_LEN + 1 + MAX_MCP_TOOL_NAME_LEN;
/// Most entries of a Task's `spec.tools` (their uniqueness rule is quadratic in CEL).
pub const MAX_TASK_TOOLS: u32 = 32;
