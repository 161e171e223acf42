//! `maos-testbed demo` (what `make demo` runs): the whole system on one machine.
//!
//! It starts the testbed's API server and process kubelet, a 6-node Redis Cluster and the Claude
//! stand-in (or uses the real Claude API when `ANTHROPIC_API_KEY` is set), installs the CRDs and
//! the API-key Secret with the real `kubectl`, runs `maos-operator` as a child process, applies
//! `examples/agentpool.yaml` and `examples/parallel-research.yaml`, and shows the Task's progress
//! live until it finishes. Then it prints the outcome, the speedup, the token usage and the
//! result, and stops everything it started: the operator (SIGTERM, then SIGKILL), the agent pods,
//! Redis, the stand-in and the API server, also on Ctrl-C, SIGTERM or an error.
//!
//! On a terminal the live view is redrawn in place; otherwise (a pipe, a file, CI) it prints a
//! plain line, stamped with the time since the Task was applied, for each thing that changed.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use maos_core::api::v1alpha1::{
    AgentPool, Checkpoint, CheckpointPhase, SubtaskPhase, SubtaskStatus, Task, TaskPhase,
};
use tokio::sync::watch;

use crate::apiserver::{Testbed, TestbedConfig};
use crate::binaries;
use crate::claude_standin::{ClaudeStandIn, FaultMarkers, MaosAgent, StandInConfig};
use crate::cluster::KUBECTL;
use crate::kubelet::{ImageMap, ImageTarget, Kubelet, KubeletConfig, KubeletLogs};
use crate::launch::redis::RedisCluster;
use crate::launch::s3::S3Server;

/// The image reference the operator gives agent pods; the kubelet runs `maos-agent` for it.
pub const AGENT_IMAGE_PATTERN: &str = "ghcr.io/maos/agent-runner:*";
/// The pool the demo applies, relative to the repository.
const POOL_EXAMPLE: &str = "examples/agentpool.yaml";
/// The Task the demo applies, relative to the repository.
const TASK_EXAMPLE: &str = "examples/parallel-research.yaml";
/// The most subtasks a stand-in plan may have: the example Task's `maxSubtasks`, so a plan the
/// Task cannot accept is refused before anything starts (checked against the file in a test).
pub const MAX_PLAN_SIZE: usize = 8;
/// Another example Task to try, relative to the repository.
const HELLO_EXAMPLE: &str = "examples/hello-task.yaml";
/// The CRDs, relative to the repository.
const CRDS: &str = "crds/";
/// The bucket the demo's checkpoints go to (the operator's default).
const CHECKPOINT_BUCKET: &str = "maos-checkpoints";
/// How long the demo waits for the final checkpoint to be saved.
const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);
/// The namespace the examples go to (the kubeconfig's default).
const NAMESPACE: &str = "default";
/// How often the live view is redrawn on a terminal (and the operator checked).
const TICK: Duration = Duration::from_millis(500);
/// How long the operator has to stop after SIGTERM before it is killed.
const OPERATOR_GRACE: Duration = Duration::from_secs(5);
/// Widest line of the live view on a terminal (fits 80 columns).
const FRAME_WIDTH: usize = 79;

/// Which Claude the agents talk to.
#[derive(Clone)]
pub enum ClaudeChoice {
    /// The testbed's stand-in: `latency` per model call, plans of `plan_size` parallel subtasks.
    StandIn {
        /// How long each model call takes.
        latency: Duration,
        /// How many subtasks the stand-in's planner makes.
        plan_size: usize,
    },
    /// The real Claude API with the user's key.
    Real {
        /// The key (never printed).
        api_key: String,
    },
}

impl ClaudeChoice {
    /// The real API when `ANTHROPIC_API_KEY` is set and not empty, else the stand-in.
    pub fn from_env(latency: Duration, plan_size: usize) -> Self {
        match std::env::var("ANTHROPIC_API_KEY") {
            Ok(key) if !key.trim().is_empty() => ClaudeChoice::Real {
                api_key: key.trim().to_owned(),
            },
            _ => ClaudeChoice::StandIn { latency, plan_size },
        }
    }
}

impl std::fmt::Debug for ClaudeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaudeChoice::StandIn { latency, plan_size } => f
                .debug_struct("StandIn")
                .field("latency", latency)
                .field("plan_size", plan_size)
                .finish(),
            // Never print the key.
            ClaudeChoice::Real { .. } => f.debug_struct("Real").finish_non_exhaustive(),
        }
    }
}

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Where the kubeconfig, the operator's log and the pods' logs go; `None`: a new temporary
    /// directory, removed at the end if the Task succeeded.
    pub dir: Option<PathBuf>,
    /// The repository holding `crds/` and `examples/`.
    pub repo: PathBuf,
    /// Which Claude the agents use.
    pub claude: ClaudeChoice,
    /// How long the Task may take.
    pub timeout: Duration,
    /// After the Task, keep everything running until Ctrl-C or SIGTERM.
    pub keep_running: bool,
}

/// How the demo ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Task succeeded.
    Succeeded,
    /// The Task failed.
    Failed,
    /// The Task did not finish in time.
    TimedOut,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl Outcome {
    /// The process exit code: 0 only when the Task succeeded.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed | Outcome::TimedOut => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part of the testbed, a file or a process could not be set up.
    #[error("{what}: {detail}")]
    Setup {
        /// What was being done.
        what: String,
        /// Why it failed.
        detail: String,
    },
    /// A kubectl command failed.
    #[error("`kubectl {args}` failed: {stderr}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// The operator exited while the Task ran.
    #[error("the operator exited ({status}); the end of its log ({log}):\n{tail}")]
    OperatorExited {
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The last lines of the log.
        tail: String,
    },
}

fn setup(what: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> DemoError {
    let what = what.into();
    move |err| DemoError::Setup {
        what,
        detail: err.to_string(),
    }
}

/// Runs the demo: starts everything, applies the examples, shows the Task until it finishes
/// (or `timeout`, or `stop` turns true), prints the outcome and stops everything it started.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    config: &DemoConfig,
    stop: watch::Receiver<bool>,
) -> Result<Outcome, DemoError> {
    let out = Out::stdout();
    let (dir, owned) = match &config.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "maos-demo-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| setup(format!("creating {}", dir.display()))(&e))?;
    let dir = dir.canonicalize().unwrap_or(dir);
    out.line(&format!(
        "MAOS demo: the testbed, the operator, a pool of agents and one Task (files in {})",
        dir.display()
    ));
    match &config.claude {
        ClaudeChoice::StandIn { latency, plan_size } => out.line(&format!(
            "Claude: the stand-in, {} ms per model call, plans of {plan_size} subtasks \
             (set ANTHROPIC_API_KEY to use the real Claude API)",
            latency.as_millis()
        )),
        ClaudeChoice::Real { .. } => out.line(&format!(
            "Claude: the real Claude API with your ANTHROPIC_API_KEY (this costs money; the \
             budget in {TASK_EXAMPLE} ends the Task when it is spent)"
        )),
    }

    let mut stack = Stack::new(out);
    let result = run_with(runtime, config, &dir, &mut stack, &stop, &out);
    stack.stop();
    drop(stack);
    match result {
        Ok(Outcome::Succeeded) if owned => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ if owned => out.line(&format!("logs kept in {}", dir.display())),
        _ => {}
    }
    result
}

fn run_with(
    runtime: &tokio::runtime::Runtime,
    config: &DemoConfig,
    dir: &Path,
    stack: &mut Stack,
    stop: &watch::Receiver<bool>,
    out: &Out,
) -> Result<Outcome, DemoError> {
    let interrupted = || *stop.borrow();
    let pool: AgentPool = read_example(&config.repo.join(POOL_EXAMPLE))?;
    let task: Task = read_example(&config.repo.join(TASK_EXAMPLE))?;
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let task_name = task.metadata.name.clone().unwrap_or_default();
    let operator_bin = binaries::find("maos-operator", "maos-operator")
        .map_err(|e| setup("finding the operator")(&e))?;
    let agent_bin = binaries::agent().map_err(|e| setup("finding the agent")(&e))?;

    // The API server and the kubelet.
    let pods_root = dir.join("pods");
    let testbed = Testbed::start(TestbedConfig {
        dir: Some(dir.to_owned()),
        logs: Arc::new(KubeletLogs::new(&pods_root)),
        ..TestbedConfig::default()
    })
    .map_err(|e| setup("starting the API server")(&e))?;
    let kubeconfig = testbed.kubeconfig_path().to_owned();
    out.line(&format!(
        "  API server     {} (KUBECONFIG={})",
        testbed.url(),
        kubeconfig.display()
    ));
    stack.testbed = Some(testbed);
    let client = runtime
        .block_on(crate::apiserver::client_from_kubeconfig(&kubeconfig))
        .map_err(|e| setup("connecting to the API server")(&e))?;
    let kubelet = Kubelet::start(
        client.clone(),
        KubeletConfig {
            images: ImageMap::default()
                .with(AGENT_IMAGE_PATTERN, ImageTarget::Binary(agent_bin.clone())),
            ..KubeletConfig::new(&pods_root)
        },
    )
    .map_err(|e| setup("starting the kubelet")(&e))?;
    stack.kubelet = Some(kubelet);
    out.line(&format!(
        "  kubelet        agent pods run {} as processes; their logs are in {}",
        agent_bin.display(),
        pods_root.display()
    ));
    if interrupted() {
        return Ok(Outcome::Interrupted);
    }

    // Redis and Claude.
    let redis = RedisCluster::start().map_err(|e| setup("starting the Redis Cluster")(&e))?;
    let redis_urls = redis.urls().join(",");
    out.line(&format!(
        "  Redis Cluster  6 redis-server processes on 127.0.0.1 ports {}",
        redis
            .ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    stack.redis = Some(redis);
    if interrupted() {
        return Ok(Outcome::Interrupted);
    }
    // Object storage for checkpoints: optional, the demo runs without it.
    let mut storage_env = Vec::new();
    match runtime.block_on(async {
        let server = S3Server::start().await?;
        server.create_bucket(CHECKPOINT_BUCKET).await?;
        Ok::<_, crate::launch::LaunchError>(server)
    }) {
        Ok(server) => {
            out.line(&format!(
                "  S3             moto at {} (checkpoints go to bucket {CHECKPOINT_BUCKET})",
                server.endpoint()
            ));
            storage_env = server.operator_env();
            stack.s3 = Some(server);
        }
        Err(err) => out.line(&format!(
            "  S3             not started, so no checkpoint ({err}; `make deps` installs moto)"
        )),
    }
    let (api_key, base_url) = match &config.claude {
        ClaudeChoice::StandIn { latency, plan_size } => {
            let key = format!("sk-ant-standin-{}", uuid::Uuid::new_v4().simple());
            let mut standin = StandInConfig::new(key.clone());
            standin.latency = *latency;
            standin.behaviour = Arc::new(FaultMarkers::new(MaosAgent {
                plan_size: *plan_size,
                ..MaosAgent::default()
            }));
            let standin =
                ClaudeStandIn::start(standin).map_err(|e| setup("starting the stand-in")(&e))?;
            let url = standin.base_url();
            out.line(&format!("  Claude         the stand-in at {url}"));
            stack.standin = Some(standin);
            (key, Some(url))
        }
        ClaudeChoice::Real { api_key } => {
            out.line("  Claude         https://api.anthropic.com (the agents' default)");
            (api_key.clone(), None)
        }
    };

    // The CRDs and the key, with the real kubectl.
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache: dir.join("kube-cache"),
        cwd: config.repo.clone(),
    };
    kubectl.show(out, &["apply", "-f", CRDS], None, None)?;
    let secret = &pool.spec.api_key_secret_ref;
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret.name, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {secret.key.clone(): api_key},
    })
    .to_string();
    let whose = match config.claude {
        ClaudeChoice::StandIn { .. } => "the stand-in's key",
        ClaudeChoice::Real { .. } => "your ANTHROPIC_API_KEY",
    };
    kubectl.show(
        out,
        &["apply", "-f", "-"],
        Some(&manifest),
        Some(&format!(
            "the Secret {} with {whose} as {}",
            secret.name, secret.key
        )),
    )?;
    if interrupted() {
        return Ok(Outcome::Interrupted);
    }

    // The operator.
    let log = dir.join("operator.log");
    let operator = OperatorProcess::start(
        &operator_bin,
        &kubeconfig,
        &redis_urls,
        base_url.as_deref(),
        &storage_env,
        &log,
    )?;
    out.line(&format!(
        "  operator       {} run (pid {}), log in {}",
        operator_bin.display(),
        operator.child.id(),
        log.display()
    ));
    stack.operator = Some(operator);

    // The pool and the Task.
    kubectl.show(
        out,
        &["apply", "-f", POOL_EXAMPLE, "-f", TASK_EXAMPLE],
        None,
        None,
    )?;
    let applied = Instant::now();
    out.line("");
    let end = runtime.block_on(follow(
        &client,
        &task_name,
        &pool_name,
        stack,
        stop.clone(),
        config.timeout,
        out,
        applied,
    ))?;
    out.line("");
    let outcome = match end {
        LiveEnd::Interrupted => {
            out.line("interrupted");
            return Ok(Outcome::Interrupted);
        }
        LiveEnd::TimedOut(task) => {
            let phase = task
                .as_ref()
                .and_then(|t| t.status.as_ref())
                .and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "no status".to_owned());
            out.line(&format!(
                "timed out after {} s; the Task is still {phase}",
                config.timeout.as_secs()
            ));
            Outcome::TimedOut
        }
        LiveEnd::Finished(task) => {
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
            let result = runtime.block_on(full_result(&config_maps, &task));
            for line in summary(&task, applied.elapsed(), result.as_ref()) {
                out.line(&line);
            }
            if matches!(
                task.status.as_ref().and_then(|s| s.phase),
                Some(TaskPhase::Succeeded)
            ) {
                if stack.s3.is_some() {
                    out.line("");
                    checkpoint(runtime, &client, &kubectl, &task_name, out)?;
                }
                Outcome::Succeeded
            } else {
                Outcome::Failed
            }
        }
    };
    if outcome != Outcome::Succeeded {
        out.line(&format!(
            "logs: the operator's in {}, the agents' in {}/{NAMESPACE}/<pod>/agent.log",
            dir.join("operator.log").display(),
            pods_root.display()
        ));
    }
    if config.keep_running {
        out.line("");
        out.line("Everything keeps running. In another shell:");
        out.line(&format!("  export KUBECONFIG={}", kubeconfig.display()));
        let hints = [
            ("kubectl get maos".to_owned(), "the pool and the Task"),
            (
                format!("kubectl get mtask {task_name} -o yaml"),
                "its whole status",
            ),
            (
                format!("kubectl describe apool {pool_name}"),
                "the pool and its Events",
            ),
            (
                "kubectl get pods".to_owned(),
                "the agents, one process each",
            ),
            ("kubectl logs <pod>".to_owned(), "an agent's log"),
            ("kubectl get ckpt".to_owned(), "the Task's checkpoint"),
            (
                format!("kubectl apply -f {}", shown(&config.repo, HELLO_EXAMPLE)),
                "another Task",
            ),
        ];
        let width = hints.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        for (command, what) in hints {
            out.line(&format!("  {command:<width$}   # {what}"));
        }
        out.line("Ctrl-C stops everything.");
        let mut stop = stop.clone();
        runtime.block_on(async {
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
    }
    Ok(outcome)
}

/// Snapshots the finished Task with a Checkpoint (applied with kubectl) and says where it went.
fn checkpoint(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    kubectl: &Kubectl,
    task_name: &str,
    out: &Out,
) -> Result<(), DemoError> {
    let name = format!("{task_name}-final");
    let manifest = serde_json::json!({
        "apiVersion": "maos.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"taskRef": {"name": task_name}},
    })
    .to_string();
    kubectl.show(
        out,
        &["apply", "-f", "-"],
        Some(&manifest),
        Some(&format!("the Checkpoint {name} of the Task")),
    )?;
    let api: Api<Checkpoint> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + CHECKPOINT_PATIENCE;
    let done = runtime.block_on(async {
        loop {
            if let Ok(Some(c)) = api.get_opt(&name).await
                && matches!(
                    c.status.as_ref().and_then(|s| s.phase),
                    Some(CheckpointPhase::Saved | CheckpointPhase::Failed)
                )
            {
                return Some(c);
            }
            if Instant::now() > deadline {
                return None;
            }
            // A poll interval of the wait above, bounded by its deadline.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let line = match done.and_then(|c| c.status) {
        Some(status) if status.phase == Some(CheckpointPhase::Saved) => format!(
            "checkpoint: {} entries, {} bytes compressed, saved in {} ms to {}",
            thousands(status.entries.unwrap_or(0)),
            thousands(status.size_bytes.unwrap_or(0)),
            status.duration_ms.unwrap_or(0),
            status.location.unwrap_or_default()
        ),
        Some(status) => format!(
            "checkpoint failed: {}",
            status
                .conditions
                .first()
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default()
        ),
        None => format!(
            "checkpoint: not saved within {} s",
            CHECKPOINT_PATIENCE.as_secs()
        ),
    };
    out.line(&line);
    Ok(())
}

/// `file` of the repository as the user can type it: relative when they are in the repository.
fn shown(repo: &Path, file: &str) -> String {
    let here = std::env::current_dir().and_then(|d| d.canonicalize()).ok();
    if here.as_deref() == repo.canonicalize().ok().as_deref() {
        file.to_owned()
    } else {
        repo.join(file).display().to_string()
    }
}

/// Reads one example manifest.
fn read_example<K: serde::de::DeserializeOwned>(path: &Path) -> Result<K, DemoError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| setup(format!("reading {}", path.display()))(&e))?;
    serde_saphyr::from_str(&text).map_err(|e| setup(format!("parsing {}", path.display()))(&e))
}

/// Writes the demo's output to stdout; errors (a closed pipe) are ignored.
#[derive(Clone, Copy, Debug)]
struct Out {
    tty: bool,
}

impl Out {
    fn stdout() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
        }
    }

    fn line(&self, text: &str) {
        self.raw(&format!("{text}\n"));
    }

    fn raw(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
}

/// The real kubectl on the demo's cluster.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
    cwd: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl args` (with `stdin`) and prints the command and its output; `note`
    /// describes what stdin holds.
    fn show(
        &self,
        out: &Out,
        args: &[&str],
        stdin: Option<&str>,
        note: Option<&str>,
    ) -> Result<(), DemoError> {
        let note = note.map(|n| format!("   # {n}")).unwrap_or_default();
        out.line(&format!("  $ kubectl {}{note}", args.join(" ")));
        for line in self.run(args, stdin)?.lines() {
            out.line(&format!("    {line}"));
        }
        Ok(())
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, DemoError> {
        let joined = args.join(" ");
        let failed = |stderr: String| DemoError::Kubectl {
            args: joined.clone(),
            stderr,
        };
        let mut child = Command::new(kubectl_program())
            .args(args)
            .current_dir(&self.cwd)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C is the demo's to handle.
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("cannot run kubectl (1.32 or newer is needed): {e}")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| failed(format!("writing its input: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| failed(format!("waiting for it: {e}")))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    }
}

/// The kubectl the e2e tests use, else the one on `PATH`.
fn kubectl_program() -> &'static str {
    if Path::new(KUBECTL).is_file() {
        KUBECTL
    } else {
        "kubectl"
    }
}

/// `maos-operator run` as a child process, its output in a log file.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(
        bin: &Path,
        kubeconfig: &Path,
        redis_urls: &str,
        anthropic_base_url: Option<&str>,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, DemoError> {
        let file = std::fs::File::create(log)
            .map_err(|e| setup(format!("creating {}", log.display()))(&e))?;
        let err_file = file
            .try_clone()
            .map_err(|e| setup(format!("opening {}", log.display()))(&e))?;
        let mut command = Command::new(bin);
        // Only what the demo decides: no MAOS_* settings or API key from the caller's shell
        // (the operator never needs the key: agents read it from the Secret).
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("MAOS_") || name_text.starts_with("ANTHROPIC_") {
                command.env_remove(&name);
            }
        }
        command
            .arg("run")
            .args(["--redis-urls", redis_urls, "--redis-cluster", "true"])
            .args(["--http-addr", "127.0.0.1:0"])
            // Every pod shares 127.0.0.1 on the testbed.
            .args(["--agent-http-addr", "127.0.0.1:0"])
            .args(["--log-format", "text"]);
        if let Some(url) = anthropic_base_url {
            command.args(["--agent-anthropic-base-url", url]);
        }
        let child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            // Its own process group, so Ctrl-C reaches only the demo, which stops it in order.
            .process_group(0)
            .spawn()
            .map_err(|e| setup(format!("running {}", bin.display()))(&e))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// Its exit status, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after [`OPERATOR_GRACE`]; returns how it ended.
    fn stop(mut self) -> String {
        if let Some(status) = self.exited() {
            return format!("had exited ({status})");
        }
        match crate::binaries::terminate(&mut self.child, OPERATOR_GRACE) {
            crate::binaries::Ended::Exited(status) => format!("stopped ({status})"),
            crate::binaries::Ended::Killed => {
                format!("killed after {} s", OPERATOR_GRACE.as_secs())
            }
        }
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Everything the demo started, stopped in order: the operator first (so it makes no new
/// pods), then the agent pods, then the services they use.
struct Stack {
    out: Out,
    operator: Option<OperatorProcess>,
    kubelet: Option<Kubelet>,
    standin: Option<ClaudeStandIn>,
    redis: Option<RedisCluster>,
    s3: Option<S3Server>,
    testbed: Option<Testbed>,
}

impl Stack {
    fn new(out: Out) -> Self {
        Self {
            out,
            operator: None,
            kubelet: None,
            standin: None,
            redis: None,
            s3: None,
            testbed: None,
        }
    }

    /// Stops everything (once; later calls do nothing).
    fn stop(&mut self) {
        if self.testbed.is_none() && self.redis.is_none() && self.operator.is_none() {
            return;
        }
        let started = Instant::now();
        self.out.raw("stopping:");
        if let Some(operator) = self.operator.take() {
            self.out.raw(&format!(" operator {},", operator.stop()));
        }
        // The kubelet kills every agent pod's processes: nothing is kept, so there is no
        // work for the agents to hand back.
        if self.kubelet.take().is_some() {
            self.out.raw(" agent pods,");
        }
        if self.standin.take().is_some() {
            self.out.raw(" stand-in,");
        }
        if self.redis.take().is_some() {
            self.out.raw(" Redis,");
        }
        if self.s3.take().is_some() {
            self.out.raw(" S3,");
        }
        self.testbed = None;
        self.out.line(&format!(
            " API server; all stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the live view ended.
enum LiveEnd {
    Finished(Box<Task>),
    TimedOut(Option<Box<Task>>),
    Interrupted,
}

/// Follows the Task and its pool, drawing the live view, until the Task finishes.
#[allow(clippy::too_many_arguments)]
async fn follow(
    client: &kube::Client,
    task_name: &str,
    pool_name: &str,
    stack: &mut Stack,
    mut stop: watch::Receiver<bool>,
    timeout: Duration,
    out: &Out,
    applied: Instant,
) -> Result<LiveEnd, DemoError> {
    let tasks: Api<Task> = Api::namespaced(client.clone(), NAMESPACE);
    let pools: Api<AgentPool> = Api::namespaced(client.clone(), NAMESPACE);
    let mut task_events = watcher::watch_object(tasks, task_name)
        .default_backoff()
        .boxed();
    let mut pool_events = watcher::watch_object(pools, pool_name)
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut view = LiveView::new(out.tty, task_name, pool_name);
    let mut task: Option<Task> = None;
    let mut pool: Option<AgentPool> = None;
    loop {
        tokio::select! {
            Some(event) = task_events.next() => match event {
                Ok(object) => task = object,
                Err(err) => tracing::debug!(error = %err, "Task watch"),
            },
            Some(event) = pool_events.next() => match event {
                Ok(object) => pool = object,
                Err(err) => tracing::debug!(error = %err, "AgentPool watch"),
            },
            _ = tick.tick() => {
                if let Some(operator) = stack.operator.as_mut()
                    && let Some(status) = operator.exited()
                {
                    return Err(DemoError::OperatorExited {
                        status: status.to_string(),
                        log: operator.log.display().to_string(),
                        tail: operator.tail(20),
                    });
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(LiveEnd::Interrupted);
                }
            }
            _ = &mut deadline => {
                view.draw(out, task.as_ref(), pool.as_ref(), applied.elapsed());
                return Ok(LiveEnd::TimedOut(task.map(Box::new)));
            }
        }
        view.draw(out, task.as_ref(), pool.as_ref(), applied.elapsed());
        if let Some(finished) = task.as_ref().filter(|t| is_finished(t)) {
            return Ok(LiveEnd::Finished(Box::new(finished.clone())));
        }
    }
}

fn is_finished(task: &Task) -> bool {
    matches!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled)
    )
}

/// The live view: redrawn in place on a terminal, else one stamped line per change.
#[derive(Debug)]
pub struct LiveView {
    tty: bool,
    task_name: String,
    pool_name: String,
    /// Lines of the last frame drawn (terminal).
    drawn: usize,
    /// The last frame drawn, without the clock (terminal).
    last_frame: Vec<String>,
    /// The last text printed per key (plain).
    printed: HashMap<String, String>,
}

impl LiveView {
    /// A view of the Task `task_name` and the pool `pool_name`.
    pub fn new(tty: bool, task_name: &str, pool_name: &str) -> Self {
        Self {
            tty,
            task_name: task_name.to_owned(),
            pool_name: pool_name.to_owned(),
            drawn: 0,
            last_frame: Vec::new(),
            printed: HashMap::new(),
        }
    }

    fn draw(&mut self, out: &Out, task: Option<&Task>, pool: Option<&AgentPool>, at: Duration) {
        let text = self.render(task, pool, at);
        if !text.is_empty() {
            out.raw(&text);
        }
    }

    /// What to write for this state: on a terminal the whole frame with the cursor moved back
    /// over the previous one; otherwise only the lines that changed since the last call.
    pub fn render(
        &mut self,
        task: Option<&Task>,
        pool: Option<&AgentPool>,
        at: Duration,
    ) -> String {
        let lines = status_lines(&self.task_name, task, &self.pool_name, pool, self.tty);
        let mut text = String::new();
        if self.tty {
            let mut frame = vec![format!(
                "{}   {:.0} s",
                lines.first().map(|(_, l)| l.as_str()).unwrap_or_default(),
                at.as_secs_f64()
            )];
            if let Some(usage) = task
                .and_then(|t| t.status.as_ref())
                .and_then(|s| s.usage.as_ref())
            {
                frame.push(format!(
                    "  tokens {} in, {} out   cost ${}   speedup {}",
                    thousands(usage.input_tokens),
                    thousands(usage.output_tokens),
                    usage.cost_usd.as_deref().unwrap_or("0"),
                    task.and_then(|t| t.status.as_ref())
                        .and_then(|s| s.speedup.as_deref())
                        .unwrap_or("-"),
                ));
            }
            frame.extend(lines.iter().skip(1).map(|(_, l)| l.clone()));
            // A line that wraps would throw off the cursor movement of the next redraw.
            for line in &mut frame {
                if line.chars().count() > FRAME_WIDTH {
                    *line = line.chars().take(FRAME_WIDTH).collect();
                }
            }
            if frame == self.last_frame {
                return text;
            }
            if self.drawn > 0 {
                text.push_str(&format!("\x1b[{}F", self.drawn));
            }
            for line in &frame {
                text.push_str("\x1b[2K");
                text.push_str(line);
                text.push('\n');
            }
            text.push_str("\x1b[J");
            self.drawn = frame.len();
            self.last_frame = frame;
        } else {
            for (key, line) in lines {
                if self.printed.get(&key) != Some(&line) {
                    text.push_str(&format!("[{:>6.1}s] {line}\n", at.as_secs_f64()));
                    self.printed.insert(key, line);
                }
            }
        }
        text
    }
}

/// The view's lines, each with a key (task, pool, or the subtask's name), without times or
/// counters that change on every status write, so a plain log prints only real changes.
/// `progress_notes` keeps the notes of running subtasks (which change with every model turn).
pub fn status_lines(
    task_name: &str,
    task: Option<&Task>,
    pool_name: &str,
    pool: Option<&AgentPool>,
    progress_notes: bool,
) -> Vec<(String, String)> {
    let status = task.and_then(|t| t.status.as_ref());
    let mut headline = format!("task {task_name}: ");
    match status.and_then(|s| s.phase) {
        None => headline.push_str("waiting for the operator"),
        Some(phase) => {
            headline.push_str(&format!("{phase:?}"));
            if let Some(progress) = status.and_then(|s| s.progress.as_deref()) {
                headline.push_str(&format!(", {progress} subtasks done"));
            }
        }
    }
    let pool_line = match pool.and_then(|p| p.status.as_ref()) {
        None => format!("pool {pool_name}: waiting for the operator"),
        Some(s) => format!(
            "pool {pool_name}: {} agent{} ({} ready, {} busy), {} queued",
            s.replicas,
            if s.replicas == 1 { "" } else { "s" },
            s.ready_agents,
            s.busy_agents,
            s.queue_depth
        ),
    };
    let mut lines = vec![
        ("task".to_owned(), headline),
        ("pool".to_owned(), pool_line),
    ];
    if let Some(status) = status {
        let width = status
            .subtasks
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max(10);
        lines.extend(status.subtasks.iter().map(|s| {
            (
                format!("subtask/{}", s.name),
                subtask_line(s, width, progress_notes),
            )
        }));
    }
    lines
}

fn subtask_line(subtask: &SubtaskStatus, width: usize, progress_notes: bool) -> String {
    let mut line = format!(
        "  {:<width$}  {:<9}",
        subtask.name,
        format!("{:?}", subtask.phase)
    );
    if let Some(agent) = &subtask.agent {
        line.push_str(&format!("  {agent}"));
    }
    if let Some(attempts) = subtask.attempts.filter(|a| *a > 1) {
        line.push_str(&format!("  attempt {attempts}"));
    }
    let in_progress = matches!(subtask.phase, SubtaskPhase::Queued | SubtaskPhase::Running);
    if let Some(message) = subtask
        .message
        .as_deref()
        .filter(|m| !m.is_empty() && (progress_notes || !in_progress))
    {
        line.push_str(&format!("  ({message})"));
    }
    line.trim_end().to_owned()
}

/// The whole result: the ConfigMap the status names, else the status' first 4 KiB.
async fn full_result(config_maps: &Api<ConfigMap>, task: &Task) -> Option<ResultText> {
    let status = task.status.as_ref()?;
    if let Some(reference) = &status.result_ref
        && let Ok(config_map) = config_maps.get(&reference.config_map).await
        && let Some(text) = config_map.data.as_ref().and_then(|d| d.get(&reference.key))
    {
        return Some(ResultText {
            source: format!("ConfigMap {}, key {}", reference.config_map, reference.key),
            text: text.clone(),
        });
    }
    status.result.as_ref().map(|text| ResultText {
        source: "status.result, the first 4 KiB".to_owned(),
        text: text.clone(),
    })
}

/// A Task's result and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultText {
    /// Where it came from.
    pub source: String,
    /// The text.
    pub text: String,
}

/// The lines printed when the Task has finished: outcome, speedup, tokens and cost, result.
pub fn summary(task: &Task, took: Duration, result: Option<&ResultText>) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(status) = task.status.as_ref() else {
        return vec!["the Task has no status".to_owned()];
    };
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "unknown".to_owned());
    let condition = status.conditions.iter().find(|c| c.type_ == "Succeeded");
    let why = condition
        .map(|c| format!(": {} ({})", c.message, c.reason))
        .unwrap_or_default();
    lines.push(format!(
        "{phase} {:.1} s after it was applied{why}",
        took.as_secs_f64()
    ));
    let subtasks = status
        .subtasks
        .iter()
        .filter(|s| s.name != "plan" && s.name != "synthesize")
        .count();
    if let Some(speedup) = status.speedup.as_ref().filter(|_| subtasks > 0) {
        lines.push(format!(
            "speedup {speedup}: the subtasks' run times add up to {speedup} times the wall time \
             ({subtasks} planned subtasks, up to {} at once)",
            task.spec.parallelism
        ));
    }
    if let Some(usage) = &status.usage {
        lines.push(format!(
            "tokens: {} input, {} output, {} cache read, {} cache write; cost ${}{}",
            thousands(usage.input_tokens),
            thousands(usage.output_tokens),
            thousands(usage.cache_read_input_tokens),
            thousands(usage.cache_creation_input_tokens),
            usage.cost_usd.as_deref().unwrap_or("0"),
            if usage.by_model.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    usage
                        .by_model
                        .iter()
                        .map(|m| m.model.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    match result {
        Some(result) => {
            lines.push(format!(
                "result ({}, {} bytes):",
                result.source,
                thousands(result.text.len() as u64)
            ));
            lines.push("────".to_owned());
            lines.extend(result.text.trim_end().lines().map(str::to_owned));
            lines.push("────".to_owned());
        }
        None => lines.push("no result".to_owned()),
    }
    lines
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use maos_core::api::v1alpha1::{AgentPoolStatus, TaskSpec, TaskStatus, Usage};

    #[test]
    fn the_largest_demo_plan_is_what_the_example_task_accepts() {
        let path = crate::cluster::repo_root().join(TASK_EXAMPLE);
        let text = std::fs::read_to_string(&path).expect("the example Task");
        let task: Task = serde_saphyr::from_str(&text).expect("a Task");
        assert_eq!(task.spec.max_subtasks as usize, MAX_PLAN_SIZE);
    }

    fn task(status: Option<TaskStatus>) -> Task {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "prompt": "p", "poolRef": {"name": "default"}, "parallelism": 5
        }))
        .expect("spec");
        let mut task = Task::new("t", spec);
        task.status = status;
        task
    }

    fn subtask(name: &str, phase: SubtaskPhase, agent: Option<&str>) -> SubtaskStatus {
        SubtaskStatus {
            name: name.to_owned(),
            phase,
            depends_on: Vec::new(),
            agent: agent.map(str::to_owned),
            attempts: Some(1),
            started_at: None,
            finished_at: None,
            tokens: None,
            message: None,
        }
    }

    fn running(subtasks: Vec<SubtaskStatus>, input: u64) -> TaskStatus {
        TaskStatus {
            phase: Some(TaskPhase::Running),
            progress: Some("1/3".to_owned()),
            subtasks,
            usage: Some(Usage {
                input_tokens: input,
                ..Usage::default()
            }),
            ..TaskStatus::default()
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn plain_view_prints_only_what_changed_without_escape_codes() {
        let mut view = LiveView::new(false, "t", "default");
        let first = view.render(None, None, Duration::from_millis(100));
        assert_eq!(
            first,
            "[   0.1s] task t: waiting for the operator\n\
             [   0.1s] pool default: waiting for the operator\n"
        );
        assert_eq!(view.render(None, None, Duration::from_secs(1)), "");

        let status = running(
            vec![
                subtask("plan", SubtaskPhase::Succeeded, Some("a-1")),
                subtask("part-1", SubtaskPhase::Running, Some("a-2")),
            ],
            100,
        );
        let t = task(Some(status.clone()));
        let text = view.render(Some(&t), None, Duration::from_secs(2));
        assert!(!text.contains('\x1b'), "{text}");
        assert_eq!(
            text,
            "[   2.0s] task t: Running, 1/3 subtasks done\n\
             [   2.0s]   plan        Succeeded  a-1\n\
             [   2.0s]   part-1      Running    a-2\n"
        );
        // Token counts change on every status write; alone they print nothing.
        let mut more = status;
        more.usage = Some(Usage {
            input_tokens: 5000,
            ..Usage::default()
        });
        let t = task(Some(more.clone()));
        assert_eq!(view.render(Some(&t), None, Duration::from_secs(3)), "");
        // So do a running subtask's progress notes.
        more.subtasks[1].message = Some("turn 2: 16 characters of answer so far".to_owned());
        let t = task(Some(more.clone()));
        assert_eq!(view.render(Some(&t), None, Duration::from_secs(3)), "");
        more.subtasks[1].message = None;
        more.subtasks[1].phase = SubtaskPhase::Succeeded;
        more.subtasks[1].attempts = Some(2);
        let t = task(Some(more));
        assert_eq!(
            view.render(Some(&t), None, Duration::from_secs(4)),
            "[   4.0s]   part-1      Succeeded  a-2  attempt 2\n"
        );
        let pool = AgentPool {
            status: Some(AgentPoolStatus {
                replicas: 2,
                ready_agents: 2,
                busy_agents: 1,
                queue_depth: 3,
                ..AgentPoolStatus::default()
            }),
            ..AgentPool::new(
                "default",
                serde_json::from_value(serde_json::json!({
                    "replicas": {"min": 1, "max": 5},
                    "apiKeySecretRef": {"name": "anthropic", "key": "api-key"}
                }))
                .expect("pool spec"),
            )
        };
        assert_eq!(
            view.render(Some(&t), Some(&pool), Duration::from_secs(5)),
            "[   5.0s] pool default: 2 agents (2 ready, 1 busy), 3 queued\n"
        );
    }

    #[test]
    fn terminal_view_redraws_the_frame_in_place() {
        let mut view = LiveView::new(true, "t", "default");
        let t = task(Some(running(
            vec![subtask("plan", SubtaskPhase::Running, Some("a-1"))],
            1234,
        )));
        let first = view.render(Some(&t), None, Duration::from_secs(1));
        assert!(
            !first.contains("\x1b[4F"),
            "nothing to move back over: {first}"
        );
        assert!(first.contains("task t: Running, 1/3 subtasks done   1 s"));
        assert!(first.contains("tokens 1,234 in, 0 out"));
        assert_eq!(view.render(Some(&t), None, Duration::from_millis(1200)), "");
        let second = view.render(Some(&t), None, Duration::from_secs(2));
        assert!(second.starts_with("\x1b[4F"), "{second:?}");
        assert!(second.ends_with("\x1b[J"));
    }

    #[test]
    fn summary_has_outcome_speedup_tokens_and_result() {
        let mut status = running(
            vec![
                subtask("plan", SubtaskPhase::Succeeded, Some("a-1")),
                subtask("part-1", SubtaskPhase::Succeeded, Some("a-1")),
                subtask("part-2", SubtaskPhase::Succeeded, Some("a-2")),
            ],
            13_421,
        );
        status.phase = Some(TaskPhase::Succeeded);
        status.speedup = Some("2.1".to_owned());
        status.usage = Some(Usage {
            input_tokens: 13_421,
            output_tokens: 1_842,
            cost_usd: Some("0.0768".to_owned()),
            ..Usage::default()
        });
        status.conditions.push(
            serde_json::from_value(serde_json::json!({
                "type": "Succeeded", "status": "True", "reason": "Completed",
                "message": "every subtask succeeded",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }))
            .expect("condition"),
        );
        let t = task(Some(status));
        let result = ResultText {
            source: "ConfigMap t-result, key result".to_owned(),
            text: "line one\nline two\n".to_owned(),
        };
        let lines = summary(&t, Duration::from_millis(52_100), Some(&result));
        assert_eq!(
            lines[0],
            "Succeeded 52.1 s after it was applied: every subtask succeeded (Completed)"
        );
        assert_eq!(
            lines[1],
            "speedup 2.1: the subtasks' run times add up to 2.1 times the wall time \
             (2 planned subtasks, up to 5 at once)"
        );
        assert_eq!(
            lines[2],
            "tokens: 13,421 input, 1,842 output, 0 cache read, 0 cache write; cost $0.0768"
        );
        assert_eq!(
            lines[3..],
            [
                "result (ConfigMap t-result, key result, 18 bytes):",
                "────",
                "line one",
                "line two",
                "────"
            ]
        );
    }

    #[test]
    fn the_key_is_never_in_debug_output() {
        let choice = ClaudeChoice::Real {
            api_key: "sk-ant-secret".to_owned(),
        };
        assert!(!format!("{choice:?}").contains("secret"));
    }
}
