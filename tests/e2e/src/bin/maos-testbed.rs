//! `maos-testbed`: the local stand-in cluster for humans and `make demo`.
//!
//! `up` starts the Kubernetes API server and the process kubelet (and, on request, Redis, an
//! S3-compatible server and the Claude stand-in), prints the kubeconfig and the environment to
//! use them, and runs until Ctrl-C or SIGTERM, then stops everything it started. `claude` runs
//! the Claude stand-in alone. `demo` (what `make demo` runs) adds the operator, the example pool
//! and Task, and shows the Task live until it finishes (see `maos_e2e::demo`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use maos_e2e::apiserver::{Testbed, TestbedConfig};
use maos_e2e::claude_standin::{ClaudeStandIn, StandInConfig};
use maos_e2e::demo::{AGENT_IMAGE_PATTERN, ClaudeChoice, DemoConfig, MAX_PLAN_SIZE};
use maos_e2e::kubelet::serviceaccount::InCluster;
use maos_e2e::kubelet::{ImageMap, ImageTarget, Kubelet, KubeletConfig, KubeletLogs};
use maos_e2e::launch::redis::{RedisCluster, RedisServer};
use maos_e2e::launch::s3::S3Server;
use maos_e2e::stack::OPERATOR_IMAGE_PATTERN;

/// A local stand-in cluster for MAOS.
#[derive(Parser)]
#[command(name = "maos-testbed", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API server and the kubelet (plus Redis, S3 and the Claude stand-in if asked).
    Up(UpOptions),
    /// Run the whole system on this machine with the example pool and Task, showing the Task
    /// live until it finishes; exits 0 only if it succeeded. Uses the real Claude API when
    /// ANTHROPIC_API_KEY is set, else the stand-in.
    Demo {
        /// Directory for the kubeconfig, the operator's log and the pods' logs (default: a new
        /// temporary one, removed at the end if the Task succeeded).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The stand-in's latency per model call, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        latency_ms: u64,
        /// How many subtasks the stand-in's planner makes: 1 to 8 (the example Task's
        /// maxSubtasks; a larger plan would be refused).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=MAX_PLAN_SIZE as i64))]
        plan_size: u16,
        /// How long the Task may take, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout_seconds: u64,
        /// After the Task, keep everything running for kubectl until Ctrl-C or SIGTERM.
        #[arg(long)]
        keep_running: bool,
        /// The repository holding crds/ and examples/ (default: the one this was built from).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Run only the Claude stand-in and print its base URL and API key.
    Claude {
        /// Latency per model call, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// The API key it accepts (default: a generated one).
        #[arg(long)]
        api_key: Option<String>,
    },
}

/// What `up` starts, and where.
#[derive(clap::Args)]
struct UpOptions {
    /// API server port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Directory for the kubeconfig, pod logs and working directories (default: a new
    /// temporary one, removed on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also start Redis: one server, or a 6-node cluster.
    #[arg(long, value_enum, default_value_t = RedisMode::None)]
    redis: RedisMode,
    /// Also start an S3-compatible server (moto, from `make deps`) with the bucket
    /// `maos-checkpoints`.
    #[arg(long)]
    s3: bool,
    /// Also start the Claude stand-in.
    #[arg(long)]
    claude: bool,
    /// The stand-in's latency per model call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    claude_latency_ms: u64,
    /// The `maos-agent` binary agent pods run (default: beside this binary).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RedisMode {
    /// No Redis.
    None,
    /// One redis-server.
    Standalone,
    /// A 6-node Redis Cluster (3 masters, 3 replicas).
    Cluster,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The demo's own output is the view; its parts log only warnings unless RUST_LOG says more.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Up(options) => up(&runtime, options).map(|()| ExitCode::SUCCESS),
        Command::Demo {
            dir,
            latency_ms,
            plan_size,
            timeout_seconds,
            keep_running,
            repo,
        } => {
            let config = DemoConfig {
                dir,
                repo: {
                    let repo = repo.unwrap_or_else(maos_e2e::cluster::repo_root);
                    repo.canonicalize().unwrap_or(repo)
                },
                claude: ClaudeChoice::from_env(
                    Duration::from_millis(latency_ms),
                    usize::from(plan_size),
                ),
                timeout: Duration::from_secs(timeout_seconds),
                keep_running,
            };
            // Ctrl-C, SIGTERM and SIGHUP only set this flag: the demo then stops everything in order.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let terminated = termination(&runtime)?;
            runtime.spawn(async move {
                terminated.await;
                let _ = stop_tx.send(true);
            });
            let outcome = maos_e2e::demo::run(&runtime, &config, stop_rx)?;
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Command::Claude {
            latency_ms,
            api_key,
        } => {
            let terminated = termination(&runtime)?;
            let key = api_key.unwrap_or_else(generated_key);
            let standin = start_standin(&key, latency_ms)?;
            println!("export ANTHROPIC_BASE_URL={}", standin.base_url());
            println!("export ANTHROPIC_API_KEY={key}");
            runtime.block_on(terminated);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn up(runtime: &tokio::runtime::Runtime, options: UpOptions) -> anyhow::Result<()> {
    let UpOptions {
        port,
        dir,
        redis,
        s3,
        claude,
        claude_latency_ms,
        agent_bin,
    } = options;
    // Signals that come during start-up stop the testbed once it is up.
    let terminated = termination(runtime)?;
    let testbed_dir = dir.clone();
    let pods_root = match &dir {
        Some(dir) => dir.join("pods"),
        None => std::env::temp_dir().join(format!("maos-testbed-pods-{}", std::process::id())),
    };
    let testbed = Testbed::start(TestbedConfig {
        port,
        dir: testbed_dir,
        logs: Arc::new(KubeletLogs::new(&pods_root)),
        ..TestbedConfig::default()
    })
    .context("starting the API server")?;
    let kubeconfig = testbed.kubeconfig_path().display().to_string();
    // The first two lines are the kubeconfig and its export, for scripts that read them.
    println!("{kubeconfig}");
    println!("export KUBECONFIG={kubeconfig}");

    let mut images = ImageMap::default();
    match agent_bin
        .map(Ok)
        .unwrap_or_else(|| maos_e2e::binaries::agent().map_err(anyhow::Error::from))
    {
        Ok(path) => images = images.with(AGENT_IMAGE_PATTERN, ImageTarget::Binary(path)),
        Err(err) => tracing::warn!(error = %err, "agent pods will wait in ImagePullBackOff"),
    }
    // So an operator installed from manifests (a Deployment of the operator image) runs too.
    match maos_e2e::binaries::find("maos-operator", "maos-operator") {
        Ok(path) => images = images.with(OPERATOR_IMAGE_PATTERN, ImageTarget::Binary(path)),
        Err(err) => tracing::warn!(error = %err, "operator pods will wait in ImagePullBackOff"),
    }
    let in_cluster = InCluster {
        host: "127.0.0.1".to_owned(),
        port: testbed.addr().port(),
        ca_pem: testbed.ca_pem().to_owned(),
    };
    let client = runtime
        .block_on(testbed.client())
        .context("connecting the kubelet")?;
    let kubelet = Kubelet::start(
        client,
        KubeletConfig {
            images,
            in_cluster: Some(in_cluster),
            ..KubeletConfig::new(&pods_root)
        },
    )
    .context("starting the kubelet")?;

    let (_server, _cluster) = match redis {
        RedisMode::None => (None, None),
        RedisMode::Standalone => {
            let server = RedisServer::start().context("starting redis-server")?;
            println!("export MAOS_REDIS_URLS={}", server.url());
            println!("export MAOS_REDIS_CLUSTER=false");
            (Some(server), None)
        }
        RedisMode::Cluster => {
            let cluster = RedisCluster::start().context("starting the Redis Cluster")?;
            println!("export MAOS_REDIS_URLS={}", cluster.urls().join(","));
            println!("export MAOS_REDIS_CLUSTER=true");
            (None, Some(cluster))
        }
    };
    let _s3 = if s3 {
        let server = runtime
            .block_on(start_s3())
            .context("starting the S3 server")?;
        for (name, value) in server.operator_env() {
            println!("export {name}={value}");
        }
        Some(server)
    } else {
        None
    };
    let _standin = if claude {
        let key = generated_key();
        let standin = start_standin(&key, claude_latency_ms)?;
        println!("export ANTHROPIC_BASE_URL={}", standin.base_url());
        println!("export ANTHROPIC_API_KEY={key}");
        // Agents reach the stand-in through the operator, which passes this to their pods.
        println!(
            "export MAOS_AGENT_ANTHROPIC_BASE_URL={}",
            standin.base_url()
        );
        Some(standin)
    } else {
        None
    };
    // What an operator started by hand needs besides the above: every pod and the operator
    // share 127.0.0.1 here, so each serves on a free loopback port.
    println!("export MAOS_HTTP_ADDR=127.0.0.1:0");
    println!("export MAOS_AGENT_HTTP_ADDR=127.0.0.1:0");
    println!("export MAOS_LOG_FORMAT=text");
    println!(
        "# then: kubectl apply -f crds/ && kubectl create secret generic anthropic --from-literal=api-key=\"$ANTHROPIC_API_KEY\" && maos-operator run"
    );
    println!("{UP_MARKER}");
    tracing::info!("testbed up; Ctrl-C stops it");
    runtime.block_on(terminated);
    // The kubelet first: it stops every pod process before the services they use go.
    drop(kubelet);
    if dir.is_none() {
        remove_quietly(&pods_root);
    }
    Ok(())
}

/// The last line `up` prints: everything before it is the kubeconfig and the environment.
const UP_MARKER: &str = "# testbed up; Ctrl-C or SIGTERM stops it";

/// The bucket the operator's checkpoints go to.
const CHECKPOINT_BUCKET: &str = "maos-checkpoints";

async fn start_s3() -> anyhow::Result<S3Server> {
    let server = S3Server::start().await?;
    server.create_bucket(CHECKPOINT_BUCKET).await?;
    Ok(server)
}

fn start_standin(key: &str, latency_ms: u64) -> anyhow::Result<ClaudeStandIn> {
    let mut config = StandInConfig::new(key);
    config.latency = Duration::from_millis(latency_ms);
    ClaudeStandIn::start(config).context("starting the Claude stand-in")
}

/// A fresh key for the stand-in, shaped like a real one so clients treat it the same.
fn generated_key() -> String {
    format!("sk-ant-standin-{}", uuid::Uuid::new_v4().simple())
}

/// Ctrl-C, SIGTERM or SIGHUP (the terminal closed): the future completes on the first of them,
/// so the caller can stop what it started rather than leave it running. The handlers are
/// installed before this returns.
fn termination(
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let _context = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
    })
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_demo_refuses_a_plan_size_the_example_task_cannot_accept() {
        for refused in ["0", "9", "20"] {
            let err = Cli::try_parse_from(["maos-testbed", "demo", "--plan-size", refused])
                .err()
                .unwrap_or_else(|| panic!("--plan-size {refused} was accepted"));
            assert!(
                err.to_string().contains("--plan-size"),
                "the error names the option: {err}"
            );
        }
        for accepted in ["1", "8"] {
            assert!(Cli::try_parse_from(["maos-testbed", "demo", "--plan-size", accepted]).is_ok());
        }
        let mut cli = Cli::command();
        let demo = cli.find_subcommand_mut("demo").expect("demo");
        let help = demo.render_long_help().to_string();
        assert!(help.contains("1 to 8"), "{help}");
    }
}
