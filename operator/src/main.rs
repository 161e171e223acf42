//! `maos-operator`: the MAOS control plane. `run` reconciles AgentPools and Tasks; `crds`
//! prints the CustomResourceDefinitions.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, WatchStreamExt as _, watcher};
use maos_core::api::v1alpha1::{AgentPool, Checkpoint, Task};
use maos_core::coord::{Redis, RedisConfig, Topology, functions};
use maos_core::price::load_price_table;
use maos_operator::config::{LogFormat, OperatorConfig};
use maos_operator::controller::orphans::{self, Orphans};
use maos_operator::controller::{self, Caches, Context, Settings, checkpoint, pool, task};
use maos_operator::http::{self, HttpState};
use maos_operator::leader::{LeaderElector, LeaseSettings};
use maos_operator::metrics::Metrics;
use maos_operator::pod::AgentEnvironment;

/// How often the leader checks that every Redis master has the function library (one `FCALL`
/// per master).
const LIBRARY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// The MAOS operator.
#[derive(Parser)]
#[command(
    version,
    about = "MAOS: runs many Claude agents in parallel on one goal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile AgentPools and Tasks until SIGTERM or Ctrl-C.
    Run(Box<OperatorConfig>),
    /// Print the CustomResourceDefinitions of every MAOS kind as YAML.
    Crds {
        /// Write one file per CRD (e.g. `tasks.maos.dev.yaml`) into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Crds { dir } => print_crds(dir),
        Command::Run(config) => {
            init_logs(config.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")
                .and_then(|runtime| runtime.block_on(run(*config)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Once, in the log format chosen, with its causes; no backtrace for a user error.
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{err:#}");
            } else {
                eprintln!("maos-operator: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_runtime=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    let prices =
        load_price_table(config.price_table.as_deref()).context("loading the price table")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    check_crds(&client, config.namespaces.first().map(String::as_str)).await?;

    let topology = if config.redis_cluster {
        Topology::Cluster
    } else {
        Topology::Standalone
    };
    let redis_tls = config
        .redis_tls()
        .context("loading the Redis TLS files (MAOS_REDIS_CA_FILE, MAOS_REDIS_CLIENT_*_FILE)")?;
    let mut redis_config =
        RedisConfig::new(topology, config.redis_urls.iter().cloned()).with_tls(redis_tls.clone());
    if let Some(password) = &config.redis_password {
        let user = config
            .redis_username
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        redis_config = redis_config.with_user(user, password.clone());
    }
    let redis = Redis::connect(redis_config)
        .await
        .context("connecting to Redis (MAOS_REDIS_URLS)")?;

    // `maos_leader` starts at 0: a standby serves /metrics (the server starts before the
    // election) and says it does not lead.
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (address, serve) = http::bind(
        config.http_addr,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    )
    .await
    .with_context(|| format!("listening on {}", config.http_addr))?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    let server = tokio::spawn(serve);

    let identity = config.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "maos-operator".to_owned());
        format!("{host}-{}", uuid_suffix())
    });
    // Ready means able to serve: a standby is ready too (it takes over without a restart).
    ready.store(true, Ordering::SeqCst);

    let mut elector = None;
    if config.leader_election {
        let mut settings =
            LeaseSettings::new(&config.lease_name, &config.lease_namespace, &identity);
        settings.lease_duration = std::time::Duration::from_secs(config.lease_duration_seconds);
        settings.renew_every =
            (settings.lease_duration / 5).max(std::time::Duration::from_millis(200));
        let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
        let contender = LeaderElector::new(client.clone(), settings.clone());
        tracing::info!(identity = %identity, lease = %config.lease_name, "waiting to lead");
        let election = tokio::spawn(contender.run(leading_tx));
        tokio::select! {
            changed = leading.wait_for(|l| *l) => { changed.context("leader election stopped")?; }
            _ = shutdown_signal() => { election.abort(); return Ok(()); }
        }
        tracing::info!(identity = %identity, "leading: starting the controllers");
        metrics.set_leading(true);
        elector = Some((
            LeaderElector::new(client.clone(), settings),
            leading,
            election,
        ));
    } else {
        // Without election the single replica leads from the start (the chart refuses more
        // than one replica then).
        metrics.set_leading(true);
    }

    let orphans = Arc::new(Orphans::new(
        client.clone(),
        &config.lease_namespace,
        config.orphans_configmap(),
    ));
    let settings = Settings {
        agents: AgentEnvironment {
            redis_urls: config.agent_redis_urls(),
            redis_cluster: config.redis_cluster,
            anthropic_base_url: config.agent_anthropic_base_url.clone(),
            http_addr: config.agent_http_addr.clone(),
            redis_ca_pem: redis_tls
                .as_ref()
                .and_then(|tls| tls.ca_pem())
                .map(|pem| String::from_utf8_lossy(pem).into_owned()),
            prices: prices.to_line(),
        },
        prices,
        status_interval: config.status_interval(),
        cleanup_grace: std::time::Duration::from_secs(config.cleanup_grace_seconds),
        cleanup_timeout: std::time::Duration::from_secs(config.cleanup_timeout_seconds),
        orphans: orphans.clone(),
        finished_task_retention: std::time::Duration::from_secs(
            config.finished_task_retention_seconds,
        ),
        store: maos_operator::checkpoint::store::Store::new(config.store_config()).await,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One set of controllers per watched namespace (or one for the whole cluster): a Role in
    // each namespace is then all the operator needs.
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shared = Shared {
        client: client.clone(),
        redis,
        settings,
        metrics: metrics.clone(),
        identity,
    };
    let sweep = tokio::spawn(sweep_orphans(
        orphans,
        shared.redis.clone(),
        metrics.clone(),
    ));
    let library = tokio::spawn(keep_library_loaded(shared.redis.clone()));
    let controllers = futures::future::try_join_all(
        scopes
            .into_iter()
            .map(|scope| run_scope(scope, &shared, stop_rx.clone())),
    );
    tokio::pin!(controllers);
    let lost = async {
        match &mut elector {
            Some((_, leading, _)) => {
                let _ = leading.wait_for(|l| !*l).await;
            }
            None => futures::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        finished = &mut controllers => finished.map(|_| ()),
        _ = shutdown_signal() => {
            tracing::info!("stopping: finishing the reconciles in flight");
            let _ = stop_tx.send(true);
            controllers.await.map(|_| ())
        }
        _ = lost => Err(anyhow::anyhow!("lost the leader Lease; exiting so a fresh start contends again")),
    };
    // Controllers stopped (or the Lease was lost): whatever the last scrape sees, this replica
    // no longer leads.
    metrics.set_leading(false);
    sweep.abort();
    library.abort();
    if let Some((elector, _, election)) = elector {
        election.abort();
        if outcome.is_ok() {
            elector.release().await;
        }
    }
    server.abort();
    outcome
}

/// What the controllers of every scope share.
struct Shared {
    client: kube::Client,
    redis: Redis,
    settings: Settings,
    metrics: Arc<Metrics>,
    identity: String,
}

/// Runs the AgentPool, Task and Checkpoint controllers of one namespace (`None`: the whole
/// cluster) until `stop` says so.
async fn run_scope(
    scope: Option<String>,
    shared: &Shared,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    fn api<K>(client: &kube::Client, scope: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = &shared.client;
    let scope = scope.as_deref();
    let checkpoints: Api<Checkpoint> = api(client, scope);
    let tasks: Api<Task> = api(client, scope);
    let pools: Api<AgentPool> = api(client, scope);
    let pods: Api<Pod> = api(client, scope);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // The pools as the Task controller sees them: whether a Task's pool still exists (with the
    // uid it registered under) and can run agents. Complete before any Task is reconciled, so a
    // pool deleted while the operator was down is noticed too.
    let (pool_cache, pool_writer) = kube::runtime::reflector::store::<AgentPool>();
    let pool_reflector = tokio::spawn(
        kube::runtime::reflector(
            pool_writer,
            watcher(pools.clone(), watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| futures::future::ready(())),
    );
    tokio::select! {
        ready = pool_cache.wait_until_ready() => {
            ready.with_context(|| match scope {
                Some(ns) => format!("watching AgentPools in namespace {ns}"),
                None => "watching AgentPools".to_owned(),
            })?;
        }
        _ = stopped(stop.clone()) => { pool_reflector.abort(); return Ok(()); }
    }
    // The agent pods, which the pool controller reads on every heartbeat from this cache and
    // is woken by when they change; its reconciles wait until the first list is in.
    let (pod_cache, pod_writer) = kube::runtime::reflector::store::<Pod>();
    let pod_changes = kube::runtime::reflector(
        pod_writer,
        watcher(
            pods,
            watcher::Config::default().labels(maos_core::meta::LABEL_POOL),
        )
        .default_backoff(),
    )
    .touched_objects();

    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client.clone(),
        shared.redis.clone(),
        shared.settings.clone(),
        shared.metrics.clone(),
        Some(shared.identity.clone()),
        wake_tx,
        Caches {
            pools: pool_cache,
            pods: pod_cache,
        },
    ));

    let wake_ups = tokio::spawn(ctx.wake_ups());

    // The API-key Secret is read by name now and then (see controller::cached_read), so the
    // operator needs no list or watch of Secrets, whose data it must not hold in bulk.
    let pool_controller = Controller::new(pools.clone(), watcher::Config::default())
        .owns_stream(pod_changes)
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            pool::reconcile,
            controller::error_policy::<AgentPool>("pool"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let task_controller = Controller::new(tasks, watcher::Config::default());
    let task_store = task_controller.store();
    let task_controller = task_controller
        .watches(pools, watcher::Config::default(), move |pool| {
            task::tasks_of_pool(&task_store, &pool)
        })
        .watches(
            checkpoints.clone(),
            watcher::Config::default(),
            |checkpoint| task::task_of_checkpoint(&checkpoint),
        )
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            task::reconcile,
            controller::error_policy::<Task>("task"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let checkpoint_controller = Controller::new(checkpoints, watcher::Config::default())
        .graceful_shutdown_on(stopped(stop))
        .run(
            checkpoint::reconcile,
            controller::error_policy::<Checkpoint>("checkpoint"),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    futures::future::join3(pool_controller, task_controller, checkpoint_controller).await;
    wake_ups.abort();
    pool_reflector.abort();
    Ok(())
}

/// Sweeps the keys of objects let go while Redis was unreachable, while this replica leads.
/// Loads the coordination function library on every master, replacing another build's, and
/// then checks now and then that each master still has one (a master that restarted empty, a
/// replica promoted without it): agents can do nothing without it and cannot load it
/// themselves. A call of the operator's own that finds it missing loads it too, at once.
async fn keep_library_loaded(redis: Redis) {
    let mut ticks = tokio::time::interval(LIBRARY_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replace_other_versions = true;
    loop {
        ticks.tick().await;
        match functions::ensure_loaded(&redis, replace_other_versions).await {
            Ok(report) => {
                if report.loaded > 0 {
                    tracing::info!(
                        masters = report.loaded,
                        version = functions::version(),
                        "loaded the Redis function library"
                    );
                }
                if !report.other_versions.is_empty() {
                    let action = if replace_other_versions {
                        "replaced"
                    } else {
                        "left in place"
                    };
                    tracing::warn!(masters = report.other_versions.len(), found = ?report.other_versions, version = functions::version(), action, "a Redis function library of another MAOS build");
                }
                replace_other_versions = false;
            }
            Err(error) => {
                tracing::error!(%error, "cannot load the Redis function library (needs Redis 7.0 or later and FUNCTION LOAD for the operator's user); agents wait until it is loaded")
            }
        }
    }
}

async fn sweep_orphans(orphans: Arc<Orphans>, redis: Redis, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(orphans::SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match orphans.sweep(&redis).await {
            Ok(left) => metrics.set_orphaned(left),
            Err(error) => tracing::warn!(%error, "cannot sweep orphaned Redis keys"),
        }
    }
}

/// Stops with a clear message when the MAOS CRDs are not installed; asks in `namespace` when
/// the operator watches only some (its Roles then grant nothing cluster-wide).
async fn check_crds(client: &kube::Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let probe = ListParams::default().limit(1);
    let (tasks, pools, checkpoints): (Api<Task>, Api<AgentPool>, Api<Checkpoint>) = match namespace
    {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    for (kind, result) in [
        ("Task", tasks.list_metadata(&probe).await.err()),
        ("AgentPool", pools.list_metadata(&probe).await.err()),
        ("Checkpoint", checkpoints.list_metadata(&probe).await.err()),
    ] {
        match result {
            None => {}
            Some(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
                "the MAOS CustomResourceDefinitions are not installed ({kind} is not served): \
                 install them with `kubectl apply -f crds/` or \
                 `maos-operator crds | kubectl apply -f -`, then start the operator again"
            ),
            Some(err) => {
                return Err(err)
                    .with_context(|| format!("checking that the {kind} kind is served"));
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn uuid_suffix() -> String {
    (0..6)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect()
}

fn print_crds(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = maos_core::api::crds();
    match dir {
        None => {
            let documents = crds
                .iter()
                .map(maos_core::api::crd_yaml)
                .collect::<Result<Vec<_>, _>>()?;
            print!("{}", documents.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(maos_core::api::crd_file_name(crd));
                std::fs::write(&path, maos_core::api::crd_yaml(crd)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
