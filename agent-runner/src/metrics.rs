//! The agent's Prometheus metrics (`maos_agent_*`), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of a model-call outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, or the error's reason (e.g. `ModelUnavailable`).
    pub outcome: String,
}

/// Label of a token count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    /// `input`, `output`, `cache_read` or `cache_creation`.
    pub kind: String,
}

/// Label of a tool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    /// The tool's name.
    pub tool: String,
}

/// Label of an MCP tool call: its server and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct McpCallLabel {
    /// The pool's name for the server.
    pub server: String,
    /// `ok`, `error`, `timeout`, `unavailable` or `failed`.
    pub outcome: String,
}

/// Label of an MCP server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// The pool's name for the server.
    pub server: String,
}

/// Every metric the agent keeps.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    /// Model calls by outcome.
    pub model_requests: Family<OutcomeLabel, Counter>,
    /// Model calls retried after a transient failure.
    pub model_retries: Counter,
    /// Tokens by type.
    pub tokens: Family<TokenLabel, Counter>,
    /// Tool calls refused or failed, by tool.
    pub tool_errors: Family<ToolLabel, Counter>,
    /// Work items finished, by outcome (`Finished` or a failure reason).
    pub subtasks: Family<OutcomeLabel, Counter>,
    /// How long work items took, in seconds.
    pub subtask_seconds: Histogram,
    /// 1 while the agent works an item.
    pub busy: Gauge,
    /// MCP tool calls, by server and outcome.
    pub mcp_calls: Family<McpCallLabel, Counter>,
    /// How long MCP tool calls took, by server, in seconds.
    pub mcp_call_seconds: Family<ServerLabel, Histogram, fn() -> Histogram>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("maos_agent");
        let model_requests = Family::<OutcomeLabel, Counter>::default();
        let model_retries = Counter::default();
        let tokens = Family::<TokenLabel, Counter>::default();
        let tool_errors = Family::<ToolLabel, Counter>::default();
        let subtasks = Family::<OutcomeLabel, Counter>::default();
        let subtask_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        let busy = Gauge::default();
        let mcp_calls = Family::<McpCallLabel, Counter>::default();
        let mcp_call_seconds = Family::<ServerLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "mcp_calls",
            "MCP tool calls, by server and outcome",
            mcp_calls.clone(),
        );
        registry.register(
            "mcp_call_duration_seconds",
            "Time of one MCP tool call, by server",
            mcp_call_seconds.clone(),
        );
        registry.register(
            "model_requests",
            "Model calls, by outcome",
            model_requests.clone(),
        );
        registry.register(
            "model_retries",
            "Model calls retried after a transient failure",
            model_retries.clone(),
        );
        registry.register("tokens", "Tokens used, by type", tokens.clone());
        registry.register(
            "tool_errors",
            "Tool calls refused or failed, by tool",
            tool_errors.clone(),
        );
        registry.register("subtasks", "Work items ended, by outcome", subtasks.clone());
        registry.register(
            "subtask_duration_seconds",
            "Time to work one item",
            subtask_seconds.clone(),
        );
        registry.register("busy", "1 while the agent works an item", busy.clone());
        Self {
            registry,
            model_requests,
            model_retries,
            tokens,
            tool_errors,
            subtasks,
            subtask_seconds,
            busy,
            mcp_calls,
            mcp_call_seconds,
        }
    }
}

impl AgentMetrics {
    /// Counts one model call.
    pub fn model_request(&self, outcome: &str) {
        self.model_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Adds the tokens of one answer.
    pub fn add_tokens(&self, input: u64, output: u64, cache_read: u64, cache_creation: u64) {
        for (kind, n) in [
            ("input", input),
            ("output", output),
            ("cache_read", cache_read),
            ("cache_creation", cache_creation),
        ] {
            self.tokens
                .get_or_create(&TokenLabel {
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Counts one MCP tool call and its time.
    pub fn mcp_call(&self, server: &str, outcome: &str, took: std::time::Duration) {
        self.mcp_calls
            .get_or_create(&McpCallLabel {
                server: server.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.mcp_call_seconds
            .get_or_create(&ServerLabel {
                server: server.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a refused or failed tool call.
    pub fn tool_error(&self, tool: &str) {
        self.tool_errors
            .get_or_create(&ToolLabel {
                tool: tool.to_owned(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
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

    #[test]
    fn counts_appear_in_the_text_format_with_the_maos_prefix() {
        let metrics = AgentMetrics::default();
        metrics.model_request("ok");
        metrics.add_tokens(10, 5, 0, 0);
        metrics.tool_error("write_state");
        let text = metrics.encode();
        assert!(
            text.contains("maos_agent_model_requests_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("maos_agent_tokens_total{kind=\"input\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("maos_agent_tool_errors_total{tool=\"write_state\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
