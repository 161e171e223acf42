//! The agent's configuration: flags, each also read from an environment variable (the operator
//! sets the variables in the agent pod), documented in `maos-agent --help`.

use std::time::Duration;

use clap::Parser;

use maos_core::coord::ratelimit::{Bucket, RateLimits};

use crate::claude::types::Thinking;
use maos_core::coord::{RedisTls, TlsError};
use maos_core::price::{PriceTable, PriceTableError, default_price_table, parse_price_table};

/// A MAOS agent: claims subtasks from its AgentPool's queue and works them with Claude.
#[derive(Clone, Debug, Parser)]
#[command(name = "maos-agent", version, about)]
pub struct AgentConfig {
    /// This agent's name (its pod's name).
    #[arg(long, env = "MAOS_AGENT_NAME")]
    pub agent_name: String,

    /// The uid of the AgentPool this agent belongs to.
    #[arg(long, env = "MAOS_POOL_UID")]
    pub pool_uid: String,

    /// Redis URLs (comma-separated); for a cluster, any of its nodes.
    #[arg(long, env = "MAOS_REDIS_URLS", value_delimiter = ',', required = true)]
    pub redis_urls: Vec<String>,

    /// The Redis URLs are nodes of a Redis Cluster.
    #[arg(long, env = "MAOS_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// The pool's Redis ACL user.
    #[arg(long, env = "MAOS_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// The pool's Redis ACL password (from the pool's Secret; never logged).
    #[arg(long, env = "MAOS_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<maos_core::coord::Secret>,

    /// PEM CA bundle file that verifies `rediss://` servers; none: `--redis-ca-pem`, else the
    /// system's roots.
    #[arg(long, env = "MAOS_REDIS_CA_FILE", conflicts_with = "redis_ca_pem")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// The PEM CA bundle itself (the operator sets it in agent pods from its own).
    #[arg(long, env = "MAOS_REDIS_CA_PEM", hide_env_values = true)]
    pub redis_ca_pem: Option<String>,

    /// PEM client certificate for Redis servers that require one.
    #[arg(
        long,
        env = "MAOS_REDIS_CLIENT_CERT_FILE",
        requires = "redis_client_key_file"
    )]
    pub redis_client_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of `--redis-client-cert-file`.
    #[arg(
        long,
        env = "MAOS_REDIS_CLIENT_KEY_FILE",
        requires = "redis_client_cert_file"
    )]
    pub redis_client_key_file: Option<std::path::PathBuf>,

    /// The Claude model.
    #[arg(long, env = "MAOS_MODEL", default_value = "claude-sonnet-4-5")]
    pub model: String,

    /// max_tokens of each model call (reserved against the task's budget before the call).
    #[arg(long, env = "MAOS_MAX_TOKENS", default_value_t = 4096)]
    pub max_tokens: u32,

    /// The pool's extended-thinking budget (tokens, at least 1024) for every model call; a
    /// Task's own budget wins. Unset: no thinking. A call's max_tokens is this plus
    /// `--max-tokens`, so the budget is always below it as the API requires.
    #[arg(long, env = "MAOS_THINKING_BUDGET_TOKENS", value_parser = clap::value_parser!(u32).range(i64::from(Thinking::MIN_BUDGET_TOKENS)..))]
    pub thinking_budget_tokens: Option<u32>,

    /// The most model calls for one subtask.
    #[arg(long, env = "MAOS_MAX_TURNS", default_value_t = 40)]
    pub max_turns: u32,

    /// Seconds between heartbeats; the operator declares an agent dead after three missed.
    #[arg(long, env = "MAOS_HEARTBEAT_SECONDS", default_value_t = 1)]
    pub heartbeat_seconds: u64,

    /// Stream model answers (progress as text arrives).
    #[arg(long, env = "MAOS_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub stream: bool,

    /// The pool's model requests per minute.
    #[arg(long, env = "MAOS_REQUESTS_PER_MINUTE", default_value_t = 50)]
    pub requests_per_minute: u64,

    /// The pool's input tokens per minute.
    #[arg(long, env = "MAOS_INPUT_TOKENS_PER_MINUTE", default_value_t = 40_000)]
    pub input_tokens_per_minute: u64,

    /// The pool's output tokens per minute.
    #[arg(long, env = "MAOS_OUTPUT_TOKENS_PER_MINUTE", default_value_t = 8_000)]
    pub output_tokens_per_minute: u64,

    /// Where `/healthz` and `/metrics` are served (port 0: any free port, logged at start).
    #[arg(long, env = "MAOS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Seconds a shutdown may take before the agent exits regardless (keep it below the pod's
    /// terminationGracePeriodSeconds). A model call in flight may finish during this less 12 s
    /// for the cleanup; then it is dropped and the item released for another agent.
    #[arg(long, env = "MAOS_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,

    /// The model price table (YAML or JSON, as the operator's `--price-table` file), set by the
    /// operator to its own table; without it, the built-in one. A call's worst-case cost is
    /// reserved against the task's cost budget at these prices.
    #[arg(long, env = "MAOS_PRICES")]
    pub prices: Option<String>,

    /// Log as JSON lines (for log collectors) rather than text.
    #[arg(long, env = "MAOS_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl AgentConfig {
    /// The TLS material of the agent's Redis connections: the files named, with the CA bundle
    /// given as text (`--redis-ca-pem`) when no CA file is.
    pub fn redis_tls(&self) -> Result<Option<RedisTls>, TlsError> {
        let files = RedisTls::from_files(
            self.redis_ca_file.as_deref(),
            self.redis_client_cert_file.as_deref(),
            self.redis_client_key_file.as_deref(),
        )?;
        match &self.redis_ca_pem {
            Some(pem) => {
                RedisTls::with_ca_pem(files, pem.as_bytes(), "MAOS_REDIS_CA_PEM").map(Some)
            }
            None => Ok(files),
        }
    }

    /// The heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds.max(1))
    }

    /// How long a shutdown may take.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// The price table: `--prices`, or the built-in one.
    pub fn price_table(&self) -> Result<PriceTable, PriceTableError> {
        match &self.prices {
            Some(text) => parse_price_table(text, "MAOS_PRICES"),
            None => Ok(default_price_table()),
        }
    }

    /// The pool's rate limits.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            requests: Bucket::per_minute(self.requests_per_minute),
            input_tokens: Bucket::per_minute(self.input_tokens_per_minute),
            output_tokens: Bucket::per_minute(self.output_tokens_per_minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let config = AgentConfig::try_parse_from([
            "maos-agent",
            "--agent-name",
            "pool-a-x1",
            "--pool-uid",
            "u-1",
            "--redis-urls",
            "redis://127.0.0.1:1,redis://127.0.0.1:2",
        ])
        .expect("parses");
        assert_eq!(config.redis_urls.len(), 2);
        assert_eq!(config.max_turns, 40);
        assert_eq!(config.thinking_budget_tokens, None);
        assert!(config.stream);
        assert_eq!(config.heartbeat(), Duration::from_secs(1));
        assert_eq!(
            config.price_table().expect("built in"),
            default_price_table()
        );
    }

    #[test]
    fn the_operators_price_table_is_read_from_the_environment_value() {
        let parse = |prices: &str| {
            AgentConfig::try_parse_from([
                "maos-agent",
                "--agent-name",
                "a",
                "--pool-uid",
                "u",
                "--redis-urls",
                "redis://127.0.0.1:1",
                &format!("--prices={prices}"),
            ])
            .expect("parses")
            .price_table()
        };
        let table = parse(r#"[{"model":"claude-x*","input":2,"output":8}]"#).expect("valid");
        assert_eq!(table.price("claude-x-1").map(|p| p.output), Some(8.0));
        assert!(
            table.price("claude-sonnet-4-5").is_none(),
            "only the given table"
        );
        let err = parse("- {model: m, input: -1, output: 1}").expect_err("invalid");
        assert!(err.to_string().contains("MAOS_PRICES"), "{err}");
    }

    #[test]
    fn a_thinking_budget_below_the_apis_minimum_is_refused() {
        let parse = |budget: &str| {
            AgentConfig::try_parse_from([
                "maos-agent",
                "--agent-name",
                "a",
                "--pool-uid",
                "u",
                "--redis-urls",
                "redis://127.0.0.1:1",
                "--thinking-budget-tokens",
                budget,
            ])
        };
        assert_eq!(
            parse("2048").expect("parses").thinking_budget_tokens,
            Some(2048)
        );
        assert!(parse("1023").is_err());
    }

    #[test]
    fn the_redis_password_never_shows_in_debug_output() {
        let config = AgentConfig::try_parse_from([
            "maos-agent",
            "--agent-name",
            "pool-a-x1",
            "--pool-uid",
            "u-1",
            "--redis-urls",
            "redis://127.0.0.1:1",
            "--redis-password",
            "hunter2-pool-password",
        ])
        .expect("parses");
        assert_eq!(
            config.redis_password.as_ref().map(|p| p.expose()),
            Some("hunter2-pool-password")
        );
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
    }
}
