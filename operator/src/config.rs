//! The operator's configuration: flags, each also read from an environment variable
//! (`maos-operator run --help` lists them). The model price table is read with
//! [`maos_core::price::load_price_table`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

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

    /// PEM CA bundle that verifies `rediss://` servers; none: the system's roots. Agent pods
    /// get the same bundle (in their environment, as `MAOS_REDIS_CA_PEM`).
    #[arg(long, env = "MAOS_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM client certificate the operator presents to Redis servers that require one.
    #[arg(
        long,
        env = "MAOS_REDIS_CLIENT_CERT_FILE",
        requires = "redis_client_key_file"
    )]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of `--redis-client-cert-file`.
    #[arg(
        long,
        env = "MAOS_REDIS_CLIENT_KEY_FILE",
        requires = "redis_client_cert_file"
    )]
    pub redis_client_key_file: Option<PathBuf>,

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

    /// How long a deleted Task or AgentPool waits for an unreachable Redis before it is let go,
    /// in seconds; what it left is written down in `--orphans-configmap` and swept once Redis
    /// answers.
    #[arg(long, env = "MAOS_CLEANUP_TIMEOUT_SECONDS", default_value_t = 600)]
    pub cleanup_timeout_seconds: u64,

    /// The ConfigMap, in the operator's namespace (`POD_NAMESPACE`), where objects let go while
    /// Redis was unreachable are written down until their keys are swept; none:
    /// `<lease name>-orphans`.
    #[arg(long, env = "MAOS_ORPHANS_CONFIGMAP")]
    pub orphans_configmap: Option<String>,
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

    /// The TLS material of the operator's Redis connections, read from the files named.
    pub fn redis_tls(
        &self,
    ) -> Result<Option<maos_core::coord::RedisTls>, maos_core::coord::TlsError> {
        maos_core::coord::RedisTls::from_files(
            self.redis_ca_file.as_deref(),
            self.redis_client_cert_file.as_deref(),
            self.redis_client_key_file.as_deref(),
        )
    }

    /// The orphans ConfigMap's name: `--orphans-configmap`, else `<lease name>-orphans`.
    pub fn orphans_configmap(&self) -> String {
        self.orphans_configmap
            .clone()
            .unwrap_or_else(|| format!("{}-orphans", self.lease_name))
    }

    /// Redis URLs for agent pods: `--agent-redis-urls`, else the operator's own.
    pub fn agent_redis_urls(&self) -> Vec<String> {
        if self.agent_redis_urls.is_empty() {
            self.redis_urls.clone()
        } else {
            self.agent_redis_urls.clone()
        }
    }
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
}
