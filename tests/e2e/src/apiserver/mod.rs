//! A stand-in Kubernetes API server for the testbed: HTTPS on loopback with a generated CA and
//! a bearer token, discovery, OpenAPI, built-in kinds and CRD-served custom resources with
//! schema validation, watches, patches, finalizers and garbage collection.
//!
//! [`Testbed::start`] runs it on its own thread and runtime, so callers may block (for example
//! on `kubectl`) without starving it; dropping the handle stops it.

pub mod api;
pub mod apply;
pub mod auth;
pub mod builtin;
pub mod crd_cleanup;
pub mod deployments;
pub mod discovery;
pub mod disruption;
pub mod events;
pub mod faults;
pub mod gc;
pub mod managed;
pub mod openapi;
pub mod partial;
pub mod patch;
pub mod protobuf;
pub mod resource;
pub mod routes;
pub mod schema;
pub mod selectors;
pub mod services;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use api::Cluster;
use routes::ServerState;

/// How long a client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `pods/<name>/log` gets its text (the process kubelet provides one).
pub trait PodLogSource: Send + Sync {
    /// The log of `container` (or the only/first one) of the pod, if there is any.
    fn logs(&self, namespace: &str, pod: &str, container: Option<&str>) -> Option<String>;
}

/// The log source used until a kubelet is attached: every pod's log is empty.
#[derive(Debug, Default)]
pub struct NoLogs;

impl PodLogSource for NoLogs {
    fn logs(&self, _: &str, _: &str, _: Option<&str>) -> Option<String> {
        None
    }
}

/// How to start a testbed API server.
#[derive(Clone)]
pub struct TestbedConfig {
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// Directory for the kubeconfig; `None` makes a fresh one under the temp dir, removed on drop.
    pub dir: Option<PathBuf>,
    /// How many changes watches can resume from before they get 410 Gone.
    pub history_limit: usize,
    /// How many changes a slow watch may fall behind before it is ended.
    pub watch_buffer: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Where pod logs come from.
    pub logs: Arc<dyn PodLogSource>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            port: 0,
            dir: None,
            history_limit: 10_000,
            watch_buffer: 8192,
            bookmark_interval: Duration::from_secs(5),
            logs: Arc::new(NoLogs),
        }
    }
}

impl std::fmt::Debug for TestbedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestbedConfig")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("history_limit", &self.history_limit)
            .field("watch_buffer", &self.watch_buffer)
            .field("bookmark_interval", &self.bookmark_interval)
            .finish_non_exhaustive()
    }
}

/// Why the testbed could not start or give a client.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// Certificates or kubeconfig.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding the port, making the directory or starting the runtime.
    #[error("starting the API server: {0}")]
    Io(#[from] std::io::Error),
    /// The server thread stopped before it was listening.
    #[error("the API server thread stopped during start-up")]
    ThreadDied,
    /// The kubeconfig could not be turned into a client.
    #[error("building a client from the kubeconfig: {0}")]
    Client(String),
}

/// A running API server; stops when dropped.
pub struct Testbed {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    owned_dir: Option<PathBuf>,
    cluster: Arc<Cluster>,
    auth: Arc<auth::Auth>,
    faults: Arc<faults::Faults>,
    ca_pem: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("addr", &self.addr)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Starts the API server and writes its kubeconfig.
    pub fn start(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        let certificates = tls::generate()?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (dir, owned_dir) = match &config.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("maos-testbed-{}", uuid::Uuid::new_v4().simple()));
                (dir.clone(), Some(dir))
            }
        };
        std::fs::create_dir_all(&dir)?;
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let kubeconfig = dir.join("kubeconfig");
        tls::write_kubeconfig(
            &kubeconfig,
            &tls::kubeconfig_yaml(addr, &certificates.ca_pem, &token),
        )?;

        let cluster = Arc::new(Cluster::new(config.history_limit, config.watch_buffer));
        cluster.publish_control_plane(api::ControlPlane {
            addr,
            ca_pem: certificates.ca_pem.clone(),
        });
        let auth = Arc::new(auth::Auth::new(token));
        let faults = Arc::new(faults::Faults::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let state = Arc::new(ServerState {
            cluster: cluster.clone(),
            auth: auth.clone(),
            faults: faults.clone(),
            bookmark_interval: config.bookmark_interval,
            logs: config.logs.clone(),
            shutdown: stopped.clone(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("maos-apiserver")
            .enable_all()
            .build()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
        let acceptor = tokio_rustls::TlsAcceptor::from(certificates.server_config);
        let thread = std::thread::Builder::new()
            .name("maos-apiserver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::spawn(run_controllers(state.cluster.clone(), stopped.clone()));
                    serve(listener, acceptor, state, stopped).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        ready_rx.recv().map_err(|_| TestbedError::ThreadDied)??;
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "testbed API server listening");
        Ok(Testbed {
            addr,
            kubeconfig,
            owned_dir,
            cluster,
            auth,
            faults,
            ca_pem: certificates.ca_pem.clone(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The kubeconfig that `kubectl` and `kube::Client` use unchanged.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's `https://127.0.0.1:<port>` URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's state, for in-process collaborators such as the kubelet.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The faults injected into this server's answers.
    pub fn faults(&self) -> &Arc<faults::Faults> {
        &self.faults
    }

    /// Who may do what: tokens, and the record of RBAC decisions about users outside
    /// `system:masters`.
    pub fn auth(&self) -> &Arc<auth::Auth> {
        &self.auth
    }

    /// Writes a kubeconfig at `path` for this server that presents `token` (a ServiceAccount's,
    /// say) instead of the admin's.
    pub fn write_kubeconfig_for(&self, path: &Path, token: &str) -> Result<(), TestbedError> {
        tls::write_kubeconfig(path, &tls::kubeconfig_yaml(self.addr, &self.ca_pem, token))?;
        Ok(())
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kube-rs client configured from the kubeconfig (call inside a tokio runtime).
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Test hook: forgets the watch history and ends every open watch with 410 Gone, so
    /// watchers must relist, as after an etcd compaction.
    pub fn expire_watches(&self) {
        self.cluster.hub.expire_watches();
    }
}

/// A kube-rs client for the cluster a kubeconfig file describes.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, TestbedError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| TestbedError::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| TestbedError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| TestbedError::Client(e.to_string()))
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(dir) = self.owned_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the in-testbed controllers (Deployments, ReplicaSets) after each change of the kinds
/// they act on, and once a second besides.
async fn run_controllers(cluster: Arc<Cluster>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let Ok(mut subscription) = cluster.hub.subscribe(None) else {
        return;
    };
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Which controllers the changes since the last pass concern (all of them, once a
        // second and after missed changes).
        let mut due = Due::default();
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => due = Due::ALL,
            received = subscription.live.recv() => match received {
                Ok(event) => due.add(&event.storage_key),
                Err(RecvError::Lagged(_)) => due = Due::ALL,
                Err(RecvError::Closed) => return,
            },
        }
        // Coalesce a burst of changes into one pass.
        loop {
            match subscription.live.try_recv() {
                Ok(event) => due.add(&event.storage_key),
                Err(TryRecvError::Lagged(_)) => due = Due::ALL,
                Err(_) => break,
            }
        }
        if due.workloads {
            deployments::reconcile_all(&cluster);
        }
        if due.budgets {
            disruption::reconcile_all(&cluster);
        }
        if due.crds {
            crd_cleanup::reconcile_all(&cluster);
        }
    }
}

/// The in-server controllers a batch of changes calls for.
#[derive(Debug, Default, Clone, Copy)]
struct Due {
    workloads: bool,
    budgets: bool,
    crds: bool,
}

impl Due {
    const ALL: Due = Due {
        workloads: true,
        budgets: true,
        crds: true,
    };

    fn add(&mut self, storage_key: &str) {
        self.workloads |= deployments::relevant(storage_key);
        self.budgets |= disruption::relevant(storage_key);
        // A CRD's change, or one of a custom resource (whose deletion a CRD may wait for).
        self.crds |= !storage_key.starts_with('/')
            && !deployments::relevant(storage_key)
            && !disruption::relevant(storage_key);
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ServerState>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let state = state.clone();
                connections.spawn(async move {
                    // A client that never finishes its handshake must not hold a task forever.
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = match handshake.await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |request| routes::handle(state.clone(), request));
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .serve_connection(TokioIo::new(tls), service);
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}
