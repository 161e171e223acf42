//! The operator's configuration: flags, each also read from an environment variable
//! (`maos-operator run --help` lists them), and the model price table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use serde::Deserialize;

use crate::status::{Price, PriceTable};

/// How the operator runs.
#[derive(Args, Clone, Debug)]
pub struct OperatorConfig {
    /// Redis URLs the operator uses (any nodes of a cluster), comma-separated.
    #[arg(long, env = "MAOS_REDIS_URLS", value_delimiter = ',', required = true)]
    pub redis_urls: Vec<String>,

    /// Whether the Redis URLs are nodes of a Redis Cluster.
    #[arg(long, env = "MAOS_REDIS_CLUSTER", default_value_t = false, action = ArgAction::Set)]
    pub redis_cluster: bool,

    /// The operator's Redis user (it must reach every key and manage ACL users); none: the
    /// default user.
    #[arg(long, env = "MAOS_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// The operator's Redis password.
    #[arg(long, env = "MAOS_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<maos_core::coord::Secret>,

    /// Redis URLs agent pods use, if they differ from the operator's (e.g. a Service name).
    #[arg(long, env = "MAOS_AGENT_REDIS_URLS", value_delimiter = ',')]
    pub agent_redis_urls: Vec<String>,

    /// `ANTHROPIC_BASE_URL` for agent pods (e.g. a proxy or the testbed's stand-in); none:
    /// the public Claude API.
    #[arg(long, env = "MAOS_AGENT_ANTHROPIC_BASE_URL")]
    pub agent_anthropic_base_url: Option<String>,

    /// Where agent pods serve `/healthz` and `/metrics` (on a cluster `0.0.0.0:8080`; on the
    /// testbed, where every pod shares 127.0.0.1, `127.0.0.1:0`).
    #[arg(long, env = "MAOS_AGENT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub agent_http_addr: String,

    /// Where the operator serves `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "MAOS_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,

    /// Watch only these namespaces (comma-separated or repeated); none: every namespace.
    #[arg(
        long = "namespace",
        env = "MAOS_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Elect a leader with a Lease so only one of several replicas reconciles.
    #[arg(long, env = "MAOS_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "MAOS_LEASE_NAME", default_value = "maos-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (in a cluster: the operator's own, from the
    /// downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Seconds a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "MAOS_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease; none: the pod name (`POD_NAME`) or host name
    /// plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// A YAML price table (`- {model: "claude-sonnet-4*", input: 3, output: 15, cacheRead:
    /// 0.3, cacheWrite: 3.75}`, US dollars per million tokens; a trailing `*` matches a
    /// prefix); none: the built-in table.
    #[arg(long, env = "MAOS_PRICE_TABLE")]
    pub price_table: Option<PathBuf>,

    /// Shortest time between two status writes of one Task, in milliseconds (phase changes
    /// are written at once).
    #[arg(long, env = "MAOS_STATUS_INTERVAL_MS", default_value_t = 1000)]
    pub status_interval_ms: u64,

    /// How long a deleted Task waits for agents still working it before its keys go anyway,
    /// in seconds.
    #[arg(long, env = "MAOS_CLEANUP_GRACE_SECONDS", default_value_t = 30)]
    pub cleanup_grace_seconds: u64,

    /// How long a finished Task keeps its conversations (journals), events, messages and
    /// dispatch markers in Redis, in seconds; its status, result, shared state, results and
    /// budget stay until it is deleted (Checkpoints of it still work).
    #[arg(
        long,
        env = "MAOS_FINISHED_TASK_RETENTION_SECONDS",
        default_value_t = 3600
    )]
    pub finished_task_retention_seconds: u64,

    /// S3 endpoint for checkpoints, for S3-compatible storage (MinIO, Ceph); unset is AWS S3.
    /// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// a profile, web identity, or instance metadata).
    #[arg(long, env = "MAOS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region checkpoint requests are signed for.
    #[arg(long, env = "MAOS_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Bucket for checkpoints a Checkpoint does not name one for.
    #[arg(long, env = "MAOS_S3_BUCKET", default_value = "maos-checkpoints")]
    pub s3_bucket: String,

    /// Key prefix for checkpoints a Checkpoint does not name one for, e.g. `prod/`.
    #[arg(long, env = "MAOS_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// Address buckets by path (`<endpoint>/<bucket>`), as most S3-compatible servers need.
    #[arg(long, env = "MAOS_S3_FORCE_PATH_STYLE", default_value_t = false, action = ArgAction::Set)]
    pub s3_force_path_style: bool,

    /// Log format.
    #[arg(long, env = "MAOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

impl OperatorConfig {
    /// The status write interval.
    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.status_interval_ms)
    }

    /// Where checkpoints are stored.
    pub fn store_config(&self) -> crate::checkpoint::store::StoreConfig {
        crate::checkpoint::store::StoreConfig {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            bucket: self.s3_bucket.clone(),
            prefix: self.s3_prefix.clone(),
            force_path_style: self.s3_force_path_style,
        }
    }

    /// The Redis URLs agent pods use.
    pub fn agent_redis_urls(&self) -> Vec<String> {
        if self.agent_redis_urls.is_empty() {
            self.redis_urls.clone()
        } else {
            self.agent_redis_urls.clone()
        }
    }
}

/// Why the price table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PriceTableError {
    /// The file could not be read.
    #[error("cannot read the price table {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid price table.
    #[error("the price table {path} is not valid: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PriceEntry {
    model: String,
    input: f64,
    output: f64,
    #[serde(default)]
    cache_read: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
}

/// Parses a YAML price table; cache prices default to 10 % (reads) and 125 % (writes) of
/// the input price, as Anthropic bills them.
pub fn parse_price_table(yaml: &str, path: &str) -> Result<PriceTable, PriceTableError> {
    let entries: Vec<PriceEntry> =
        serde_saphyr::from_str(yaml).map_err(|e| PriceTableError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let mut prices = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let values = [
            entry.input,
            entry.output,
            entry.cache_read.unwrap_or(0.0),
            entry.cache_write.unwrap_or(0.0),
        ];
        if entry.model.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(PriceTableError::Invalid {
                path: path.to_owned(),
                detail: format!(
                    "entry {i}: model must be non-empty and prices non-negative numbers"
                ),
            });
        }
        prices.push(Price {
            model: entry.model,
            input: entry.input,
            output: entry.output,
            cache_read: entry.cache_read.unwrap_or(entry.input * 0.1),
            cache_write: entry.cache_write.unwrap_or(entry.input * 1.25),
        });
    }
    Ok(PriceTable(prices))
}

/// Reads the price table at `path`, or the built-in one.
pub fn load_price_table(path: Option<&std::path::Path>) -> Result<PriceTable, PriceTableError> {
    let Some(path) = path else {
        return Ok(default_price_table());
    };
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|source| PriceTableError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_price_table(&yaml, &shown)
}

/// Anthropic's list prices (US dollars per million tokens) for the Claude models MAOS is
/// likely to run; more specific entries first.
pub fn default_price_table() -> PriceTable {
    let price = |model: &str, input: f64, output: f64| Price {
        model: model.to_owned(),
        input,
        output,
        cache_read: input * 0.1,
        cache_write: input * 1.25,
    };
    PriceTable(vec![
        price("claude-opus-4-5*", 5.0, 25.0),
        price("claude-opus-4*", 15.0, 75.0),
        price("claude-sonnet-4*", 3.0, 15.0),
        price("claude-3-7-sonnet*", 3.0, 15.0),
        price("claude-haiku-4-5*", 1.0, 5.0),
        price("claude-3-5-haiku*", 0.8, 4.0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_password_never_shows_in_debug_output() {
        #[derive(clap::Parser, Debug)]
        struct Wrapper {
            #[command(flatten)]
            config: OperatorConfig,
        }
        let parsed = <Wrapper as clap::Parser>::try_parse_from([
            "maos-operator",
            "--redis-urls",
            "redis://127.0.0.1:1",
            "--redis-password",
            "hunter2-operator-password",
        ])
        .expect("parses");
        assert_eq!(
            parsed.config.redis_password.as_ref().map(|p| p.expose()),
            Some("hunter2-operator-password")
        );
        assert!(!format!("{parsed:?}").contains("hunter2"), "{parsed:?}");
    }

    #[test]
    fn a_price_table_parses_with_default_cache_prices() {
        let table = parse_price_table(
            "- {model: \"claude-sonnet-4*\", input: 3, output: 15}\n",
            "prices.yaml",
        )
        .expect("valid");
        let price = table.price("claude-sonnet-4-5").expect("priced");
        assert_eq!((price.input, price.output), (3.0, 15.0));
        assert!((price.cache_read - 0.3).abs() < 1e-9);
        assert!((price.cache_write - 3.75).abs() < 1e-9);
    }

    #[test]
    fn a_bad_price_table_names_the_file_and_the_problem() {
        let err = parse_price_table("- {model: m, input: -1, output: 2}\n", "p.yaml")
            .expect_err("negative price");
        assert!(err.to_string().contains("p.yaml"), "{err}");
        assert!(err.to_string().contains("entry 0"), "{err}");
        let err = parse_price_table("- {model: m, inptu: 1, output: 2}\n", "p.yaml")
            .expect_err("unknown field");
        assert!(err.to_string().contains("inptu"), "{err}");
    }

    #[test]
    fn the_built_in_table_prices_the_default_model() {
        let table = default_price_table();
        let price = table
            .price(maos_core::api::v1alpha1::DEFAULT_MODEL)
            .expect("default model priced");
        assert_eq!(price.input, 3.0);
        assert_eq!(
            table.price("claude-opus-4-5-20251101").map(|p| p.input),
            Some(5.0)
        );
        assert_eq!(table.price("claude-opus-4-1").map(|p| p.input), Some(15.0));
    }
}
