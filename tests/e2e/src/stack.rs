//! The whole MAOS stack for one end-to-end test or benchmark, started with one call.
//!
//! [`Stack::start`] brings up, in order: the cluster ([`TestCluster`]: a fresh testbed, or the
//! real cluster `MAOS_E2E_KUBECONFIG` names), on the testbed a process kubelet that runs
//! `maos-agent` for the agent image, Redis (a 6-node Redis Cluster by default, or one server),
//! the Claude stand-in, the CRDs from `crds/` (installed with the real `kubectl`), the stack's
//! namespace with the `anthropic` Secret holding the stand-in's key, and N `maos-operator run`
//! processes whose output goes to files in the stack's directory. It returns once one operator
//! leads.
//!
//! The helpers are what a test needs around that: `kubectl` in the stack's namespace, typed
//! reads of Tasks, polling with deadlines that fail with the Task's status and the operators'
//! logs, the operator's view of Redis, Events, and the crash hooks (SIGKILL an agent pod or an
//! operator, restart an operator). Dropping the stack stops everything: operators first (so
//! nothing reacts to the rest going away), then the kubelet with every agent pod, then Redis,
//! the stand-in and the API server. The directory is removed, unless the test is failing, in
//! which case its path is printed so the logs can be read.
//!
//! On a real cluster the stack cannot run agent processes itself: the agent pods must be able to
//! reach this machine's Redis and stand-in (set `MAOS_E2E_AGENT_REDIS_URLS` and
//! `MAOS_E2E_AGENT_ANTHROPIC_BASE_URL` to addresses they can reach), the operators watch only
//! the stack's namespace and hold their Lease there (so stacks of parallel tests do not meet),
//! and [`Stack::kill_agent_pod`] deletes the pod without grace instead of killing its process.

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use maos_core::api::v1alpha1::{SubtaskStatus, Task};
use maos_core::coord::keys::field;
use maos_core::coord::{
    CoordError, PoolKeys, PoolUid, Redis, RedisConfig, RedisTls, TaskUid, Topology,
};
use serde_json::Value;

use crate::apiserver::{TestbedConfig, TestbedError};
use crate::binaries::MissingBinary;
use crate::claude_standin::{
    Behaviour, ClaudeStandIn, FaultMarkers, MaosAgent, PlanShape, RecordedRequest, StandInConfig,
    StandInError, parse_request,
};
use crate::cluster::{KubectlError, TestCluster, repo_root};
use crate::kubelet::serviceaccount::InCluster;
use crate::kubelet::{ImageMap, ImageTarget, Kubelet, KubeletConfig, KubeletError, KubeletLogs};
use crate::launch::LaunchError;
use crate::launch::redis::{RedisCluster, RedisServer};
use crate::launch::redis_tls::TlsFiles;
use crate::launch::s3::S3Server;

/// The image reference agent pods get; the testbed kubelet runs `maos-agent` for it.
pub const AGENT_IMAGE_PATTERN: &str = "ghcr.io/maos/agent-runner:*";
/// The operator's image, which the stack's kubelet runs as the built `maos-operator`.
pub const OPERATOR_IMAGE_PATTERN: &str = "ghcr.io/maos/operator:*";
/// The Secret (and its key) that holds the API key agents send to the stand-in.
pub const API_KEY_SECRET: &str = "anthropic";
/// The Lease the operators contend for.
pub const OPERATOR_LEASE: &str = "maos-operator";
/// What an operator logs once it leads and starts its controllers.
pub const LEADING_LOG_LINE: &str = "leading: starting the controllers";
/// What an operator logs once its HTTP server listens (with `address=<addr>`).
pub const SERVING_LOG_LINE: &str = "serving /healthz, /readyz and /metrics";
/// Redis URLs agent pods use on a real cluster, when this machine's loopback is not theirs.
pub const AGENT_REDIS_URLS_ENV: &str = "MAOS_E2E_AGENT_REDIS_URLS";
/// The stand-in's base URL as agent pods on a real cluster reach it.
pub const AGENT_ANTHROPIC_BASE_URL_ENV: &str = "MAOS_E2E_AGENT_ANTHROPIC_BASE_URL";
/// `RUST_LOG` for the operators (default `info,kube_runtime=warn`, the operator's own).
pub const OPERATOR_LOG_ENV: &str = "MAOS_E2E_OPERATOR_LOG";

/// How long the stack waits for an operator to lead when it starts.
const LEADER_PATIENCE: Duration = Duration::from_secs(60);
/// How often polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Lines of each operator's log a failure message shows.
const LOG_TAIL_LINES: usize = 60;
/// Prefix of the line written into an operator's log file before each start.
const START_MARKER: &str = "=== maos-e2e: starting operator";

/// Which Redis the stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisMode {
    /// A 6-node Redis Cluster (3 masters, 3 replicas), as production runs it.
    Cluster,
    /// One `redis-server`: faster to start.
    Standalone,
    /// One `redis-server` that speaks only TLS (certificates generated for the run); the
    /// operator verifies it with `--redis-ca-file` and hands the CA to its agents.
    StandaloneTls,
}

/// How much Redis holds: [`Stack::redis_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisUsage {
    /// `used_memory` of `INFO memory`, in bytes.
    pub used_memory: u64,
    /// Keys (`DBSIZE`).
    pub keys: u64,
}

/// What to start.
#[derive(Clone)]
pub struct StackConfig {
    /// The namespace the stack creates and the test's objects live in.
    pub namespace: String,
    /// Redis Cluster or a single server.
    pub redis: RedisMode,
    /// How many operator replicas run (they elect a leader).
    pub operators: usize,
    /// The stand-in's latency per model call.
    pub claude_latency: Duration,
    /// What the stand-in model says.
    pub claude_behaviour: Arc<dyn Behaviour>,
    /// `--lease-duration-seconds` of the operators; `None`: the operator's default.
    pub lease_duration_seconds: Option<u64>,
    /// Further arguments for `maos-operator run`.
    pub operator_args: Vec<String>,
    /// Start an S3-compatible server (moto) with bucket [`CHECKPOINT_BUCKET`] and point the
    /// operators at it.
    pub s3: bool,
    /// Further environment for the operators (set after everything else, so it overrides).
    pub operator_env: Vec<(String, String)>,
    /// Run the operators as this ServiceAccount; `None`: the chart's ([`OperatorAccount::chart`])
    /// on the testbed, the admin on a real cluster.
    pub operator_account: Option<OperatorAccount>,
    /// Run the operators as the admin even on the testbed.
    pub operator_as_admin: bool,
}

/// The ServiceAccount the operators run as, and the RBAC objects that grant it its rights.
#[derive(Debug, Clone)]
pub struct OperatorAccount {
    /// The ServiceAccount's namespace (created if missing).
    pub namespace: String,
    /// The ServiceAccount's name.
    pub name: String,
    /// YAML the admin applies first: the ServiceAccount, its roles and their bindings.
    pub rbac_yaml: String,
    /// The Lease the operators elect with, as (namespace, name): where the RBAC allows it.
    pub lease: (String, String),
    /// Record what the operators did with these rights (for the chart's minimality check,
    /// which reads [`rbac_usage_dir`]); only for the chart's own, unmodified RBAC.
    pub record_usage: bool,
}

/// The namespace `manifests/base` (the chart rendered with its defaults) installs into.
pub const CHART_NAMESPACE: &str = "maos-system";
/// The release name `manifests/base` is rendered with: the ServiceAccount's, roles' and
/// Lease's name.
pub const CHART_RELEASE: &str = "maos";

impl OperatorAccount {
    /// The ServiceAccount and RBAC of the chart's default install, as `manifests/base`
    /// renders them (the chart is their one source).
    pub fn chart() -> Result<Self, StackError> {
        let path = repo_root().join("manifests/base/maos.yaml");
        let rendered = std::fs::read_to_string(&path)
            .map_err(|e| StackError::Operator(format!("reading {}: {e}", path.display())))?;
        Ok(OperatorAccount {
            namespace: CHART_NAMESPACE.to_owned(),
            name: CHART_RELEASE.to_owned(),
            rbac_yaml: rbac_documents(&rendered),
            lease: (CHART_NAMESPACE.to_owned(), CHART_RELEASE.to_owned()),
            record_usage: true,
        })
    }
}

/// The ServiceAccount and RBAC documents of a multi-document manifest.
pub fn rbac_documents(manifest: &str) -> String {
    const KINDS: [&str; 5] = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    manifest
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| KINDS.iter().any(|k| l.trim_end() == format!("kind: {k}")))
        })
        .collect::<Vec<_>>()
        .join("\n---")
}

/// Where stacks running the chart's RBAC record the operator's API usage, one file per stack:
/// `<target dir>/rbac-usage`.
pub fn rbac_usage_dir() -> PathBuf {
    crate::cluster::target_dir().join("rbac-usage")
}

/// The bucket a stack with S3 creates for checkpoints (the operator's default bucket).
pub const CHECKPOINT_BUCKET: &str = "maos-checkpoints";

impl std::fmt::Debug for StackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackConfig")
            .field("namespace", &self.namespace)
            .field("redis", &self.redis)
            .field("operators", &self.operators)
            .field("claude_latency", &self.claude_latency)
            .field("lease_duration_seconds", &self.lease_duration_seconds)
            .field("operator_args", &self.operator_args)
            .field("s3", &self.s3)
            .finish_non_exhaustive()
    }
}

impl StackConfig {
    /// One operator, a Redis Cluster, and a stand-in that answers at once as [`MaosAgent`]
    /// (planning 4 parallel subtasks) with `[[fault:…]]` prompt markers honoured; objects in
    /// `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            redis: RedisMode::Cluster,
            operators: 1,
            claude_latency: Duration::ZERO,
            claude_behaviour: Arc::new(FaultMarkers::new(MaosAgent::default())),
            lease_duration_seconds: None,
            operator_args: Vec::new(),
            s3: false,
            operator_env: Vec::new(),
            operator_account: None,
            operator_as_admin: false,
        }
    }

    /// Runs the operators as the admin rather than under the chart's RBAC.
    pub fn operator_as_admin(mut self) -> Self {
        self.operator_as_admin = true;
        self
    }

    /// Runs the operators with a token of `account`'s ServiceAccount, after the admin applied
    /// its RBAC objects, so they have exactly the rights those grant.
    pub fn operator_account(mut self, account: OperatorAccount) -> Self {
        self.operator_account = Some(account);
        self
    }

    /// Starts an S3-compatible server for checkpoints.
    pub fn s3(mut self) -> Self {
        self.s3 = true;
        self
    }

    /// Sets `name=value` in the operators' environment, over the stack's own settings.
    pub fn operator_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.operator_env.push((name.into(), value.into()));
        self
    }

    /// Runs one Redis server instead of a cluster.
    pub fn standalone_redis(mut self) -> Self {
        self.redis = RedisMode::Standalone;
        self
    }

    /// Runs one TLS-only `redis-server` (see [`RedisMode::StandaloneTls`]).
    pub fn tls_redis(mut self) -> Self {
        self.redis = RedisMode::StandaloneTls;
        self
    }

    /// Runs `count` operator replicas.
    pub fn operators(mut self, count: usize) -> Self {
        self.operators = count;
        self
    }

    /// Delays every model answer by `latency`.
    pub fn claude_latency(mut self, latency: Duration) -> Self {
        self.claude_latency = latency;
        self
    }

    /// The stand-in model says what `behaviour` decides.
    pub fn claude_behaviour(mut self, behaviour: impl Behaviour + 'static) -> Self {
        self.claude_behaviour = Arc::new(behaviour);
        self
    }

    /// The stand-in plans `size` subtasks of `shape` (fault markers still honoured).
    pub fn plan(self, size: usize, shape: PlanShape) -> Self {
        self.claude_behaviour(FaultMarkers::new(MaosAgent {
            plan_size: size,
            plan_shape: shape,
            ..MaosAgent::default()
        }))
    }

    /// The operators' Lease lasts `seconds` without renewal.
    pub fn lease_duration_seconds(mut self, seconds: u64) -> Self {
        self.lease_duration_seconds = Some(seconds);
        self
    }

    /// Adds an argument to every `maos-operator run`.
    pub fn operator_arg(mut self, arg: impl Into<String>) -> Self {
        self.operator_args.push(arg.into());
        self
    }
}

/// Why the stack, or one of its helpers, failed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The cluster could not be started or reached.
    #[error("the cluster: {0}")]
    Cluster(#[from] TestbedError),
    /// The process kubelet could not start.
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    /// Redis could not be started.
    #[error("starting Redis: {0}")]
    RedisLaunch(#[from] LaunchError),
    /// The Claude stand-in could not start.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// A workspace binary is not built.
    #[error(transparent)]
    Binary(#[from] MissingBinary),
    /// A kubectl command failed.
    #[error(transparent)]
    Kubectl(#[from] KubectlError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The coordination layer failed.
    #[error("Redis: {0}")]
    Coord(#[from] CoordError),
    /// A raw Redis command failed.
    #[error("Redis command: {0}")]
    RedisCommand(#[from] redis::RedisError),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An operator did not start or lead.
    #[error("operator: {0}")]
    Operator(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// The Redis processes of a stack.
#[derive(Debug)]
pub enum RedisBackend {
    /// One server.
    Standalone(RedisServer),
    /// Six cluster nodes.
    Cluster(RedisCluster),
    /// One TLS-only server and its certificates.
    StandaloneTls(Box<(TlsFiles, RedisServer)>),
}

impl RedisBackend {
    async fn start(mode: RedisMode) -> Result<Self, StackError> {
        // The launchers block while they wait for the servers.
        let started = tokio::task::spawn_blocking(move || match mode {
            RedisMode::Standalone => RedisServer::start().map(RedisBackend::Standalone),
            RedisMode::Cluster => RedisCluster::start().map(RedisBackend::Cluster),
            RedisMode::StandaloneTls => TlsFiles::generate(false).and_then(|files| {
                let server = RedisServer::start_tls(&files)?;
                Ok(RedisBackend::StandaloneTls(Box::new((files, server))))
            }),
        })
        .await
        .map_err(|e| StackError::Operator(format!("the Redis launcher thread failed: {e}")))?;
        Ok(started?)
    }

    /// Every node's `redis://` (or `rediss://`) URL.
    pub fn urls(&self) -> Vec<String> {
        match self {
            RedisBackend::Standalone(server) => vec![server.url()],
            RedisBackend::Cluster(cluster) => cluster.urls(),
            RedisBackend::StandaloneTls(tls) => vec![tls.1.url()],
        }
    }

    /// Every node's port on 127.0.0.1.
    pub fn ports(&self) -> Vec<u16> {
        self.urls()
            .iter()
            .filter_map(|url| url.rsplit(':').next()?.trim_end_matches('/').parse().ok())
            .collect()
    }

    /// The certificates of a TLS-only server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        match self {
            RedisBackend::StandaloneTls(tls) => Some(&tls.0),
            _ => None,
        }
    }

    /// The coordination layer's TLS material for this backend (its CA).
    pub fn tls(&self) -> Option<RedisTls> {
        let files = self.tls_files()?;
        RedisTls::from_files(Some(&files.ca), None, None)
            .ok()
            .flatten()
    }

    /// A redis-rs client for the node at `url`, over TLS when the backend speaks it.
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match self.tls_files() {
            Some(files) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&files.ca)?),
                },
            ),
            None => redis::Client::open(url),
        }
    }

    /// Standalone or cluster.
    pub fn topology(&self) -> Topology {
        match self {
            RedisBackend::Standalone(_) | RedisBackend::StandaloneTls(_) => Topology::Standalone,
            RedisBackend::Cluster(_) => Topology::Cluster,
        }
    }
}

/// The stack's directory: operator logs and agent pods' working directories and logs. Removed
/// on drop unless the thread is panicking (a failing test), so its logs stay readable.
#[derive(Debug)]
struct StackDir {
    path: PathBuf,
}

impl StackDir {
    fn new(namespace: &str) -> Result<Self, StackError> {
        let path = std::env::temp_dir().join(format!(
            "maos-stack-{namespace}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).map_err(io_error(format!("creating {}", path.display())))?;
        Ok(Self { path })
    }
}

impl Drop for StackDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "maos-e2e: the stack's logs are kept in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One `maos-operator run` process, with its output in a log file; killable and restartable
/// under the same identity (as a container restarted in its pod).
#[derive(Debug)]
pub struct OperatorProcess {
    identity: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl OperatorProcess {
    fn start(
        identity: String,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Result<Self, StackError> {
        let mut operator = Self {
            identity,
            program,
            args,
            env,
            log,
            child: None,
            starts: 0,
        };
        operator.spawn()?;
        Ok(operator)
    }

    fn spawn(&mut self) -> Result<(), StackError> {
        self.starts += 1;
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_error(format!("opening {}", self.log.display())))?;
        {
            use std::io::Write as _;
            writeln!(file, "{START_MARKER} {} ({})", self.identity, self.starts)
                .map_err(io_error(format!("writing {}", self.log.display())))?;
        }
        let stderr = file
            .try_clone()
            .map_err(io_error(format!("opening {}", self.log.display())))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            // A clean environment: only what the stack decides reaches the operator.
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(io_error(format!("running {}", self.program.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// The identity it holds the Lease under (`--identity`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Its log file (stdout and stderr of every start).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Its whole log, every start included, without terminal colours.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| strip_ansi(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// What the current (or last) start logged.
    pub fn log_since_start(&self) -> String {
        let log = self.log();
        match log.rfind(START_MARKER) {
            Some(at) => log[at..].to_owned(),
            None => log,
        }
    }

    /// Whether the current start leads (it logged [`LEADING_LOG_LINE`] and still runs).
    pub fn leads(&mut self) -> bool {
        self.is_running() && self.log_since_start().contains(LEADING_LOG_LINE)
    }

    /// The address its `/healthz`, `/readyz` and `/metrics` are served on, once logged.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.log_since_start()
            .lines()
            .filter(|line| line.contains(SERVING_LOG_LINE))
            .find_map(|line| {
                let value = line.split("address=").nth(1)?;
                let value = value.trim_start_matches('"');
                let end = value
                    .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
                    .unwrap_or(value.len());
                value[..end].parse().ok()
            })
    }

    /// Kills the process with SIGKILL (a crash: no Lease release, nothing finished) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then kills it.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            crate::binaries::terminate(&mut child, grace);
        }
    }

    /// Starts the process again (killing it first if it runs), same identity and flags.
    pub fn restart(&mut self) -> Result<(), StackError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes terminal colour sequences (`ESC [ … m`) from log text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running MAOS stack; see the module documentation. Fields drop in declaration order:
/// operators, kubelet, Redis, stand-in, cluster, directory.
pub struct Stack {
    operators: Vec<OperatorProcess>,
    kubelet: Option<Kubelet>,
    redis: RedisBackend,
    s3: Option<S3Server>,
    standin: ClaudeStandIn,
    client: kube::Client,
    cluster: TestCluster,
    namespace: String,
    api_key: String,
    extra_env: Vec<(String, String)>,
    /// The kubeconfig the operators use when it is not the admin's.
    operator_kubeconfig: Option<PathBuf>,
    /// The ServiceAccount the operators run as, if not the admin.
    account: Option<OperatorAccount>,
    dir: StackDir,
}

impl Drop for Stack {
    /// Records what the operators did under the chart's RBAC, for the minimality check.
    fn drop(&mut self) {
        let (Some(account), Some(testbed)) = (&self.account, self.cluster.testbed()) else {
            return;
        };
        if !account.record_usage {
            return;
        }
        let user = format!(
            "system:serviceaccount:{}:{}",
            account.namespace, account.name
        );
        let lines: String = testbed
            .auth()
            .access_log()
            .into_iter()
            .filter(|r| r.user == user)
            .map(|r| {
                let record = serde_json::json!({
                    "verb": r.verb, "group": r.group, "resource": r.resource,
                    "subresource": r.subresource, "namespace": r.namespace, "name": r.name,
                    "path": r.path, "allowed": r.allowed,
                });
                format!("{record}\n")
            })
            .collect();
        let dir = rbac_usage_dir();
        let file = dir.join(format!(
            "{}-{}.jsonl",
            self.namespace,
            uuid::Uuid::new_v4().simple()
        ));
        // Best effort: a test that cannot record leaves the check with less evidence, and the
        // check says how many stacks it saw.
        let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(file, lines));
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("namespace", &self.namespace)
            .field("dir", &self.dir.path)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Starts everything `config` asks for and returns once an operator leads.
    pub async fn start(config: StackConfig) -> Result<Self, StackError> {
        let dir = StackDir::new(&config.namespace)?;
        let pods_root = dir.path.join("pods");
        let cluster = TestCluster::start_with(TestbedConfig {
            logs: Arc::new(KubeletLogs::new(&pods_root)),
            ..TestbedConfig::default()
        })?;
        let client = cluster.client().await?;
        let kubelet = match cluster.testbed() {
            Some(testbed) => {
                let agent = crate::binaries::agent()?;
                let operator = crate::binaries::find("maos-operator", "maos-operator")?;
                Some(Kubelet::start(
                    client.clone(),
                    KubeletConfig {
                        images: ImageMap::default()
                            .with(AGENT_IMAGE_PATTERN, ImageTarget::Binary(agent))
                            .with(OPERATOR_IMAGE_PATTERN, ImageTarget::Binary(operator)),
                        in_cluster: Some(InCluster {
                            host: "127.0.0.1".to_owned(),
                            port: testbed.addr().port(),
                            ca_pem: testbed.ca_pem().to_owned(),
                        }),
                        ..KubeletConfig::new(&pods_root)
                    },
                )?)
            }
            None => None,
        };
        let redis = RedisBackend::start(config.redis).await?;
        let s3 = if config.s3 {
            let server = S3Server::start().await?;
            server.create_bucket(CHECKPOINT_BUCKET).await?;
            Some(server)
        } else {
            None
        };
        let api_key = format!("sk-ant-standin-{}", uuid::Uuid::new_v4().simple());
        let standin = ClaudeStandIn::start(StandInConfig {
            latency: config.claude_latency,
            behaviour: config.claude_behaviour.clone(),
            ..StandInConfig::new(api_key.clone())
        })?;
        let mut stack = Stack {
            operators: Vec::new(),
            kubelet,
            redis,
            s3,
            standin,
            client,
            cluster,
            namespace: config.namespace.clone(),
            api_key,
            extra_env: config.operator_env.clone(),
            operator_kubeconfig: None,
            account: None,
            dir,
        };
        stack.install()?;
        let account = match &config.operator_account {
            Some(account) => Some(account.clone()),
            None if stack.cluster.testbed().is_some() && !config.operator_as_admin => {
                Some(OperatorAccount::chart()?)
            }
            None => None,
        };
        if let Some(account) = account {
            stack.operator_kubeconfig = Some(stack.install_account(&account)?);
            stack.account = Some(account);
        }
        let program = crate::binaries::find("maos-operator", "maos-operator")?;
        for index in 0..config.operators {
            let identity = format!("operator-{index}");
            let args = stack.operator_args(&config, &identity);
            let env = stack.operator_env();
            let log = stack.dir.path.join(format!("{identity}.log"));
            stack.operators.push(OperatorProcess::start(
                identity,
                program.clone(),
                args,
                env,
                log,
            )?);
        }
        if config.operators > 0 {
            stack.await_leader(LEADER_PATIENCE).await?;
        }
        Ok(stack)
    }

    /// CRDs, the namespace and the API key Secret, as a user would install them.
    fn install(&self) -> Result<(), StackError> {
        self.cluster.install_crds()?;
        if self.namespace != "default" {
            self.cluster
                .run_kubectl(&["create", "namespace", &self.namespace], None)?;
        }
        let literal = format!("--from-literal=api-key={}", self.api_key);
        self.kubectl(
            &["create", "secret", "generic", API_KEY_SECRET, &literal],
            None,
        )?;
        Ok(())
    }

    /// Applies the account's RBAC as the admin and writes a kubeconfig with a token of it.
    fn install_account(&self, account: &OperatorAccount) -> Result<PathBuf, StackError> {
        let testbed = self.cluster.testbed().ok_or_else(|| {
            StackError::Operator(
                "running the operator as a ServiceAccount needs the testbed".to_owned(),
            )
        })?;
        if self
            .cluster
            .run_kubectl(&["get", "namespace", &account.namespace], None)
            .is_err()
        {
            self.cluster
                .run_kubectl(&["create", "namespace", &account.namespace], None)?;
        }
        self.cluster
            .run_kubectl(&["apply", "-f", "-"], Some(&account.rbac_yaml))?;
        let token = self.cluster.run_kubectl(
            &[
                "create",
                "token",
                &account.name,
                "-n",
                &account.namespace,
                "--duration=24h",
            ],
            None,
        )?;
        let path = self.dir.path.join("operator.kubeconfig");
        testbed.write_kubeconfig_for(&path, token.trim())?;
        Ok(path)
    }

    fn operator_args(&self, config: &StackConfig, identity: &str) -> Vec<String> {
        let base_url = std::env::var(AGENT_ANTHROPIC_BASE_URL_ENV)
            .ok()
            .filter(|_| self.kubelet.is_none())
            .unwrap_or_else(|| self.standin.base_url());
        let mut args: Vec<String> = [
            "run",
            "--http-addr",
            "127.0.0.1:0",
            // Every testbed pod shares 127.0.0.1: each agent takes a free port.
            "--agent-http-addr",
            "127.0.0.1:0",
            "--agent-anthropic-base-url",
            &base_url,
            "--log-format",
            "text",
            "--identity",
            identity,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if let Some(account) = &self.account {
            let (namespace, name) = &account.lease;
            args.extend([
                "--lease-namespace".to_owned(),
                namespace.clone(),
                "--lease-name".to_owned(),
                name.clone(),
            ]);
        }
        if let Some(files) = self.redis.tls_files() {
            args.push("--redis-ca-file".into());
            args.push(files.ca.display().to_string());
        }
        if let Some(seconds) = config.lease_duration_seconds {
            args.push("--lease-duration-seconds".into());
            args.push(seconds.to_string());
        }
        if self.kubelet.is_none() {
            // A shared real cluster: watch only this stack's namespace and elect there.
            args.push("--namespace".into());
            args.push(self.namespace.clone());
            if let Ok(urls) = std::env::var(AGENT_REDIS_URLS_ENV) {
                args.push("--agent-redis-urls".into());
                args.push(urls);
            }
        }
        args.extend(config.operator_args.iter().cloned());
        args
    }

    fn operator_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "KUBECONFIG".to_owned(),
                self.operator_kubeconfig
                    .as_deref()
                    .unwrap_or(self.cluster.kubeconfig())
                    .display()
                    .to_string(),
            ),
            ("MAOS_REDIS_URLS".to_owned(), self.redis.urls().join(",")),
            (
                "MAOS_REDIS_CLUSTER".to_owned(),
                (self.redis.topology() == Topology::Cluster).to_string(),
            ),
            (
                "RUST_LOG".to_owned(),
                std::env::var(OPERATOR_LOG_ENV)
                    .unwrap_or_else(|_| "info,kube_runtime=warn".to_owned()),
            ),
            ("RUST_BACKTRACE".to_owned(), "1".to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
            ("HOME".to_owned(), self.dir.path.display().to_string()),
        ];
        if let Ok(path) = std::env::var("PATH") {
            env.push(("PATH".to_owned(), path));
        }
        if self.kubelet.is_none() {
            env.push(("POD_NAMESPACE".to_owned(), self.namespace.clone()));
        }
        if let Some(s3) = &self.s3 {
            env.extend(s3.operator_env());
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// The S3-compatible server, when the stack was started with [`StackConfig::s3`].
    pub fn s3(&self) -> Option<&S3Server> {
        self.s3.as_ref()
    }

    /// The namespace the stack's objects live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The stack's directory (operator logs, agent pods' logs under `pods/`).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The cluster.
    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// A kube-rs client for the cluster.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The Claude stand-in (its `requests()` log every model call the agents made).
    pub fn standin(&self) -> &ClaudeStandIn {
        &self.standin
    }

    /// The API key the stand-in accepts (in the `anthropic` Secret).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The Redis processes.
    pub fn redis_backend(&self) -> &RedisBackend {
        &self.redis
    }

    /// The process kubelet, on the testbed.
    pub fn kubelet(&self) -> Option<&Kubelet> {
        self.kubelet.as_ref()
    }

    /// The operator replicas, in start order.
    pub fn operators(&mut self) -> &mut [OperatorProcess] {
        &mut self.operators
    }

    /// Operator replica `index`.
    ///
    /// # Panics
    /// If there is no such replica (a mistake in the test).
    pub fn operator(&mut self, index: usize) -> &mut OperatorProcess {
        let count = self.operators.len();
        self.operators
            .get_mut(index)
            .unwrap_or_else(|| panic!("the stack runs {count} operators, not {}", index + 1))
    }

    /// Runs the real kubectl in the stack's namespace with `args` (and `stdin`); its stdout.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, KubectlError> {
        let mut all = vec!["--namespace", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.cluster.run_kubectl(&all, stdin)
    }

    /// `kubectl apply -f -` of `yaml` in the stack's namespace.
    pub fn apply(&self, yaml: &str) -> Result<String, KubectlError> {
        self.kubectl(&["apply", "-f", "-"], Some(yaml))
    }

    /// `kubectl apply -f <repo>/<path>` (e.g. `examples/hello-task.yaml`) in the namespace.
    pub fn apply_file(&self, path: &str) -> Result<String, KubectlError> {
        let file = repo_root().join(path);
        self.kubectl(&["apply", "-f", &file.to_string_lossy()], None)
    }

    /// The Task `name` as the API server has it.
    pub async fn task(&self, name: &str) -> Result<Task, StackError> {
        Ok(self.tasks().get(name).await?)
    }

    /// The Task `name`, or `None` if it does not exist.
    pub async fn task_opt(&self, name: &str) -> Result<Option<Task>, StackError> {
        Ok(self.tasks().get_opt(name).await?)
    }

    fn tasks(&self) -> Api<Task> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Polls the Task `name` until `predicate` holds and returns it.
    ///
    /// # Panics
    /// After `deadline`, with `what` it waited for, the Task's status and the operators' logs.
    pub async fn wait_task(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        predicate: impl Fn(&Task) -> bool,
    ) -> Task {
        let tasks = self.tasks();
        let predicate = &predicate;
        self.wait_until(&format!("Task {name}: {what}"), deadline, || {
            let tasks = tasks.clone();
            async move {
                match tasks.get_opt(name).await {
                    Ok(Some(task)) if predicate(&task) => Some(task),
                    _ => None,
                }
            }
        })
        .await
    }

    /// Polls until the Task `name` has finished (`Succeeded` is True or False).
    pub async fn wait_task_finished(&self, name: &str, deadline: Duration) -> Task {
        self.wait_task(name, "finished", deadline, |task| {
            condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
        })
        .await
    }

    /// Polls `probe` until it returns `Some`, and returns its value.
    ///
    /// # Panics
    /// After `deadline`, with `what` and [`Stack::diagnostics`].
    pub async fn wait_until<T, F, Fut>(&self, what: &str, deadline: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if started.elapsed() >= deadline {
                panic!(
                    "timed out after {deadline:?} waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// What a failing test shows: the Tasks, pools and pods, and the tail of every operator's
    /// log.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        let tasks = self
            .kubectl(&["get", "tasks", "-o", "yaml"], None)
            .unwrap_or_else(|e| e.to_string());
        let _ = writeln!(text, "--- kubectl get tasks -o yaml\n{tasks}");
        let objects = self
            .kubectl(&["get", "agentpools,pods", "-o", "wide"], None)
            .unwrap_or_else(|e| e.to_string());
        let _ = writeln!(text, "--- kubectl get agentpools,pods\n{objects}");
        for operator in &self.operators {
            let _ = writeln!(
                text,
                "--- tail of {} ({})\n{}",
                operator.identity,
                operator.log.display(),
                tail(&operator.log(), LOG_TAIL_LINES)
            );
        }
        text
    }

    /// Waits until one running operator leads and returns its index.
    ///
    /// # Panics
    /// After `deadline`, with the operators' logs.
    pub async fn wait_leader(&mut self, deadline: Duration) -> usize {
        match self.await_leader(deadline).await {
            Ok(index) => index,
            Err(err) => panic!("{err}\n{}", self.diagnostics()),
        }
    }

    async fn await_leader(&mut self, deadline: Duration) -> Result<usize, StackError> {
        let started = Instant::now();
        loop {
            if let Some(index) = self.operators.iter_mut().position(|o| o.leads()) {
                return Ok(index);
            }
            if !self.operators.iter_mut().any(|o| o.is_running()) {
                let logs: Vec<String> = self
                    .operators
                    .iter()
                    .map(|o| format!("{}:\n{}", o.identity, tail(&o.log(), LOG_TAIL_LINES)))
                    .collect();
                return Err(StackError::Operator(format!(
                    "every operator exited before leading:\n{}",
                    logs.join("\n")
                )));
            }
            if started.elapsed() >= deadline {
                return Err(StackError::Operator(format!(
                    "no operator led within {deadline:?}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The identity holding the operators' Lease, as the cluster records it.
    pub fn lease_holder(&self) -> Result<Option<String>, KubectlError> {
        let (namespace, lease) = match (&self.account, &self.kubelet) {
            (Some(account), _) => (account.lease.0.as_str(), account.lease.1.as_str()),
            (None, Some(_)) => ("default", OPERATOR_LEASE),
            (None, None) => (self.namespace.as_str(), OPERATOR_LEASE),
        };
        let holder = self.cluster.run_kubectl(
            &[
                "get",
                "lease",
                lease,
                "--namespace",
                namespace,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )?;
        let holder = holder.trim();
        Ok((!holder.is_empty()).then(|| holder.to_owned()))
    }

    /// A connection to Redis as the operator's user (which reaches every key).
    pub async fn redis(&self) -> Result<Redis, StackError> {
        let config =
            RedisConfig::new(self.redis.topology(), self.redis.urls()).with_tls(self.redis.tls());
        Ok(Redis::connect(config).await?)
    }

    /// Every key matching the glob `pattern`, found with SCAN on every master, sorted.
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, StackError> {
        let mut keys = Vec::new();
        for mut connection in self.masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Redis's `used_memory` and key count (`DBSIZE`), summed over every master.
    pub async fn redis_usage(&self) -> Result<RedisUsage, StackError> {
        let mut usage = RedisUsage::default();
        for mut connection in self.masters().await? {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut connection)
                .await?;
            usage.used_memory += info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let keys: u64 = redis::cmd("DBSIZE").query_async(&mut connection).await?;
            usage.keys += keys;
        }
        Ok(usage)
    }

    /// A connection to every master (replicas hold copies of their masters' keys).
    async fn masters(&self) -> Result<Vec<redis::aio::MultiplexedConnection>, StackError> {
        let mut masters = Vec::new();
        for url in self.redis.urls() {
            let mut connection = self
                .redis
                .client(&url)?
                .get_multiplexed_async_connection()
                .await?;
            let role: redis::Value = redis::cmd("ROLE").query_async(&mut connection).await?;
            let is_master = matches!(&role, redis::Value::Array(items)
                if matches!(items.first(), Some(redis::Value::BulkString(b)) if b == b"master"));
            if is_master {
                masters.push(connection);
            }
        }
        Ok(masters)
    }

    /// `FLUSHALL` on every master: Redis loses every key at once (ACL users stay), as a
    /// restarted Redis without persistence would.
    pub async fn flush_redis(&self) -> Result<(), StackError> {
        for mut connection in self.masters().await? {
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut connection)
                .await?;
        }
        Ok(())
    }

    /// The work items of task `task_uid` in the queue of pool `pool_uid` (waiting or claimed),
    /// as stream entry ids, and the task's enqueue-once markers.
    pub async fn queue_entries_of_task(
        &self,
        pool_uid: &str,
        task_uid: &str,
    ) -> Result<(Vec<String>, Vec<String>), StackError> {
        let redis = self.redis().await?;
        let mut connection = redis.connection();
        let keys = PoolKeys::new(&PoolUid::new(pool_uid)?);
        let (work, dispatched) = (keys.work(), keys.dispatched());
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&work)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await?;
        let items = entries
            .ids
            .into_iter()
            .filter(|entry| {
                entry
                    .get::<String>(field::TASK)
                    .is_some_and(|task| task == task_uid)
            })
            .map(|entry| entry.id)
            .collect();
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(&dispatched)
            .query_async(&mut connection)
            .await?;
        let prefix = format!("{task_uid}/");
        let markers = fields
            .into_iter()
            .filter(|f| f.starts_with(&prefix))
            .collect();
        Ok((items, markers))
    }

    /// The agents' events of task `task_uid` of pool `pool_uid`, oldest first, as JSON.
    pub async fn task_events(
        &self,
        pool_uid: &str,
        task_uid: &str,
    ) -> Result<Vec<Value>, StackError> {
        let redis = self.redis().await?;
        let mut connection = redis.connection();
        let key = PoolKeys::new(&PoolUid::new(pool_uid)?)
            .task(&TaskUid::new(task_uid)?)
            .events();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await?;
        Ok(entries
            .ids
            .into_iter()
            .filter_map(|entry| entry.get::<String>(field::EVENT))
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    /// The Events (core/v1 view) about the object of `kind` named `name` in the namespace.
    pub async fn events_for(&self, kind: &str, name: &str) -> Result<Vec<Event>, StackError> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
        Ok(events
            .list(&ListParams::default().fields(&selector))
            .await?
            .items)
    }

    /// The requests the operators made so far under their ServiceAccount, per distinct
    /// authorization decision, with how many requests each was; empty when they run as the
    /// admin or against a real cluster.
    pub fn operator_requests(&self) -> Vec<(crate::apiserver::auth::AccessRecord, u64)> {
        let (Some(account), Some(testbed)) = (&self.account, self.cluster.testbed()) else {
            return Vec::new();
        };
        let user = format!(
            "system:serviceaccount:{}:{}",
            account.namespace, account.name
        );
        testbed
            .auth()
            .request_counts()
            .into_iter()
            .filter(|(record, _)| record.user == user)
            .collect()
    }

    /// The names of the running (not terminating) agent pods of pool `pool`.
    pub fn agent_pods(&self, pool: &str) -> Result<Vec<String>, KubectlError> {
        let selector = format!("{}={pool}", maos_core::meta::LABEL_POOL);
        let out = self.kubectl(
            &[
                "get",
                "pods",
                "-l",
                &selector,
                "-o",
                "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ],
            None,
        )?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let name = parts.next()?;
                // A second word is a deletionTimestamp: the pod is going.
                parts.next().is_none().then(|| name.to_owned())
            })
            .collect())
    }

    /// Crashes agent pod `name`: on the testbed its processes get SIGKILL (the kubelet then
    /// applies the restart policy); on a real cluster the pod is deleted without grace.
    /// Returns whether anything was killed.
    pub fn kill_agent_pod(&self, name: &str) -> Result<bool, KubectlError> {
        match &self.kubelet {
            Some(kubelet) => Ok(kubelet.kill_pod_processes(&self.namespace, name) > 0),
            None => {
                self.kubectl(
                    &["delete", "pod", name, "--grace-period=0", "--force"],
                    None,
                )?;
                Ok(true)
            }
        }
    }

    /// Freezes agent pod `name` with SIGSTOP to its process group, as a hung process: it keeps
    /// its pod and its claimed work but stops heartbeating. Testbed only: returns `false` on a
    /// real cluster, or if the pod has no running process.
    pub fn freeze_agent_pod(&self, name: &str) -> bool {
        let Some(pid) = self
            .kubelet
            .as_ref()
            .and_then(|kubelet| kubelet.pid(&self.namespace, name, None))
            .and_then(|pid| i32::try_from(pid).ok())
        else {
            return false;
        };
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .is_ok()
    }

    /// The stand-in's requests whose conversation text (system prompt and first user message)
    /// contains `needle`, in arrival order.
    pub fn model_requests_mentioning(&self, needle: &str) -> Vec<RecordedRequest> {
        self.standin
            .requests()
            .into_iter()
            .filter(|request| conversation_text(request).contains(needle))
            .collect()
    }
}

/// The system prompt and first user message of a recorded model request ("" if unreadable).
pub fn conversation_text(request: &RecordedRequest) -> String {
    request
        .body
        .as_ref()
        .and_then(|body| parse_request(body.to_string().as_bytes()).ok())
        .map(|parsed| format!("{}\n{}", parsed.system, parsed.first_user_text()))
        .unwrap_or_default()
}

/// The condition `type_` of a Task, if set.
pub fn condition<'a>(task: &'a Task, type_: &str) -> Option<&'a Condition> {
    task.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the Task's condition `type_` has `status` (and, if given, `reason`).
pub fn has_condition(task: &Task, type_: &str, status: &str, reason: Option<&str>) -> bool {
    condition(task, type_)
        .is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
}

/// The status entry of subtask `name` of a Task.
pub fn subtask<'a>(task: &'a Task, name: &str) -> Option<&'a SubtaskStatus> {
    task.status
        .as_ref()?
        .subtasks
        .iter()
        .find(|s| s.name == name)
}

/// An AgentPool manifest named `name` with `min`..`max` agents, using the `anthropic` Secret,
/// with rate limits high enough never to slow a test down.
pub fn pool_manifest(name: &str, min: u32, max: u32) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: AgentPool
metadata:
  name: {name}
spec:
  replicas: {{min: {min}, max: {max}}}
  apiKeySecretRef: {{name: {API_KEY_SECRET}, key: api-key}}
  rateLimits:
    requestsPerMinute: 100000
    inputTokensPerMinute: 100000000
    outputTokensPerMinute: 100000000
"
    )
}
