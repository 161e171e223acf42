//! The process kubelet: runs the testbed's pods as local processes, as a node would run them as
//! containers, and reports their real status and logs through the API server.
//!
//! It is an ordinary API client (a kube-runtime watcher on pods plus status patches), so it
//! talks to the testbed's API server exactly as a kubelet talks to kube-apiserver. An image is
//! mapped to something runnable by an [`ImageMap`]; a pod with an unmapped image waits in
//! `ImagePullBackOff`, as on a node that cannot pull it.

mod env;
mod pod;
mod process;
pub mod serviceaccount;
mod status;
mod volumes;

pub use env::EnvError;
pub use process::{ContainerProcess, Mount, ProcessSpec, StartError, exit_code};
pub use status::{ContainerPhase, ContainerRecord, POD_IP, Termination, pod_phase, pod_status};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use nix::sys::signal::Signal;

use crate::apiserver::PodLogSource;

/// The image that runs a pod's own `command` and `args` as given (e.g. `sh -c '...'`).
pub const EXEC_IMAGE: &str = "local/exec";

/// What a container image runs on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageTarget {
    /// A local binary, the image's entrypoint; the container's `args` are its arguments.
    Binary(PathBuf),
    /// The container's own `command` and `args`.
    PodCommand,
}

/// Maps image references to what they run; the first matching rule wins.
#[derive(Clone, Debug)]
pub struct ImageMap {
    rules: Vec<(String, ImageTarget)>,
}

impl Default for ImageMap {
    fn default() -> Self {
        Self {
            rules: vec![(EXEC_IMAGE.to_owned(), ImageTarget::PodCommand)],
        }
    }
}

impl ImageMap {
    /// Adds a rule: `pattern` is an exact image reference, or a prefix ending in `*`
    /// (e.g. `ghcr.io/maos/agent-runner:*`).
    pub fn with(mut self, pattern: &str, target: ImageTarget) -> Self {
        self.rules.push((pattern.to_owned(), target));
        self
    }

    /// What `image` runs, if it is mapped.
    pub fn resolve(&self, image: &str) -> Option<&ImageTarget> {
        self.rules
            .iter()
            .find(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => image.starts_with(prefix),
                None => image == pattern,
            })
            .map(|(_, target)| target)
    }
}

/// How the kubelet runs pods.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// What each image runs.
    pub images: ImageMap,
    /// Where pods get their working directories and logs (`<root>/<namespace>/<pod>/`).
    pub root: PathBuf,
    /// Pods bound to another node (`spec.nodeName`) are left alone.
    pub node_name: String,
    /// The first wait before a crashed container is restarted; it doubles per restart.
    pub restart_backoff: Duration,
    /// The longest wait before a restart.
    pub max_restart_backoff: Duration,
    /// How often a container whose Secret or ConfigMap is missing is tried again.
    pub config_retry: Duration,
    /// The API server pods reach in-cluster, with their ServiceAccount's credentials mounted
    /// (needs root for the mount namespace); `None`: pods get neither.
    pub in_cluster: Option<serviceaccount::InCluster>,
}

impl KubeletConfig {
    /// Defaults for a kubelet keeping its pods under `root`. The restart back-off starts at
    /// 1 s and stops at 30 s (a real kubelet's: 10 s and 5 min), so tests see restarts quickly.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            images: ImageMap::default(),
            root: root.into(),
            node_name: "testbed".to_owned(),
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(30),
            config_retry: Duration::from_secs(1),
            in_cluster: None,
        }
    }
}

/// Pod logs as the kubelet writes them, for the API server's `pods/<name>/log`.
#[derive(Clone, Debug)]
pub struct KubeletLogs {
    root: PathBuf,
}

impl KubeletLogs {
    /// Logs kept under `root` (the same root as the kubelet's).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl PodLogSource for KubeletLogs {
    fn logs(&self, namespace: &str, pod: &str, container: Option<&str>) -> Option<String> {
        let dir = pod_dir(&self.root, namespace, pod);
        let file = match container {
            Some(name) => dir.join(format!("{name}.log")),
            None => {
                let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .ok()?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|e| e == "log"))
                    .collect();
                logs.sort();
                logs.into_iter().next()?
            }
        };
        std::fs::read(file)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The directory of one pod: its containers' logs and a working directory.
pub(crate) fn pod_dir(root: &Path, namespace: &str, pod: &str) -> PathBuf {
    root.join(namespace).join(pod)
}

/// What the kubelet knows of a pod it runs or has run.
#[derive(Debug)]
struct PodHandle {
    namespace: String,
    name: String,
    stop: tokio::sync::watch::Sender<pod::Stop>,
    /// Container name → process group id, while the process runs.
    pids: Arc<Mutex<HashMap<String, u32>>>,
    /// Its worker is done: the containers terminated for good and the final status is
    /// published. The handle stays until the object is deleted, because the watch may still
    /// deliver events written before that final status (phase `Pending` or `Running`); a pod
    /// UID runs once, as on a real node, and is never started again from such a stale event.
    finished: bool,
}

/// State shared by the watch loop and the pod workers.
struct Shared {
    client: Client,
    config: KubeletConfig,
    /// Pod UID → handle, from the first event for the pod until its deletion.
    pods: Mutex<HashMap<String, PodHandle>>,
}

/// A running kubelet; dropping it stops every pod process it started.
pub struct Kubelet {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("root", &self.shared.config.root)
            .finish_non_exhaustive()
    }
}

/// Why the kubelet could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the kubelet runtime: {0}")]
pub struct KubeletError(#[from] std::io::Error);

impl Kubelet {
    /// Starts watching pods on a runtime of its own thread, so callers may block (e.g. on
    /// kubectl) without starving it.
    pub fn start(client: Client, config: KubeletConfig) -> Result<Self, KubeletError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("maos-kubelet")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            client,
            config,
            pods: Mutex::new(HashMap::new()),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("maos-kubelet".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    tokio::select! {
                        _ = watch_pods(thread_shared.clone()) => {}
                        _ = shutdown_rx => {}
                    }
                    stop_all_pods(&thread_shared).await;
                });
                // Dropping the runtime here, outside any async context, ends the workers.
            })?;
        Ok(Self {
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The log source to hand to the API server.
    pub fn logs(&self) -> KubeletLogs {
        KubeletLogs::new(&self.shared.config.root)
    }

    /// The process id of a pod's container while it runs (the first container if `None`).
    pub fn pid(&self, namespace: &str, pod: &str, container: Option<&str>) -> Option<u32> {
        let pods = self.shared.pods.lock().ok()?;
        // A finished pod of the same name may still be known until its deletion is seen.
        pods.values()
            .filter(|h| h.namespace == namespace && h.name == pod)
            .find_map(|handle| {
                let pids = handle.pids.lock().ok()?;
                match container {
                    Some(name) => pids.get(name).copied(),
                    None => pids.values().next().copied(),
                }
            })
    }

    /// SIGKILLs every process of a pod, as a crash would; the pod's restart policy then applies.
    /// Returns how many container processes were killed.
    pub fn kill_pod_processes(&self, namespace: &str, pod: &str) -> usize {
        let Ok(pods) = self.shared.pods.lock() else {
            return 0;
        };
        let mut killed = 0;
        for handle in pods
            .values()
            .filter(|h| h.namespace == namespace && h.name == pod)
        {
            if let Ok(pids) = handle.pids.lock() {
                for pid in pids.values() {
                    if let Ok(raw) = i32::try_from(*pid) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(raw),
                            Signal::SIGKILL,
                        );
                        killed += 1;
                    }
                }
            }
        }
        killed
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Kills every pod's processes and waits (briefly) for the workers to record it.
async fn stop_all_pods(shared: &Shared) {
    if let Ok(mut pods) = shared.pods.lock() {
        pods.retain(|_, handle| !handle.finished);
        for handle in pods.values() {
            let _ = handle.stop.send(pod::Stop::Kill);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.pods.lock().map(|p| !p.is_empty()).unwrap_or(false)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Follows every pod and starts, stops or forgets its worker.
async fn watch_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                on_apply(&shared, pod);
            }
            Ok(Event::InitDone) => {
                // A pod missing from a relist was deleted while we were not watching.
                if let Ok(mut pods) = shared.pods.lock() {
                    pods.retain(|uid, handle| listed.contains(uid) || kill_if_running(handle));
                }
            }
            Ok(Event::Apply(pod)) => on_apply(&shared, pod),
            Ok(Event::Delete(pod)) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Ok(mut pods) = shared.pods.lock()
                    && let Some(handle) = pods.get(&uid)
                    && !kill_if_running(handle)
                {
                    pods.remove(&uid);
                }
            }
            Err(err) => tracing::warn!(error = %err, "kubelet pod watch failed; retrying"),
        }
    }
}

/// For a pod whose object is gone: kills its processes if it still runs and says so (its
/// worker drops the handle once they have stopped); a finished pod's handle can go now.
fn kill_if_running(handle: &PodHandle) -> bool {
    if handle.finished {
        return false;
    }
    let _ = handle.stop.send(pod::Stop::Kill);
    true
}

fn on_apply(shared: &Arc<Shared>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    match node {
        // Unscheduled: this kubelet is the testbed's only node, so it schedules the pod onto
        // itself with a Binding, as kube-scheduler would; the bound pod comes back as an update.
        None | Some("") if pod.metadata.deletion_timestamp.is_none() => {
            tokio::spawn(pod::bind(
                shared.client.clone(),
                pod,
                shared.config.node_name.clone(),
            ));
            return;
        }
        Some(n) if n != shared.config.node_name => return,
        _ => {}
    }
    let Ok(mut pods) = shared.pods.lock() else {
        return;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod::grace_period(&pod);
        match pods.get(&uid) {
            Some(handle) if !handle.finished => {
                let _ = handle.stop.send(pod::Stop::Graceful(grace));
            }
            // Nothing runs for it (finished, or never started): let it go now.
            _ => {
                tokio::spawn(pod::finish_deletion(shared.client.clone(), pod));
            }
        }
        return;
    }
    // A pod seen before (running, or finished: a late event from before its final status
    // must not start it again) or finished before this kubelet saw it is left as it is.
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if finished || pods.contains_key(&uid) {
        return;
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(pod::Stop::Run);
    let pids = Arc::new(Mutex::new(HashMap::new()));
    pods.insert(
        uid.clone(),
        PodHandle {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            stop,
            pids: pids.clone(),
            finished: false,
        },
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        pod::run(&shared.client, &shared.config, &pod, stop_rx, pids).await;
        // Decided under the lock, so a deletion seen concurrently is either sent to this
        // worker (and handled here) or finds the pod finished (and is handled by `on_apply`).
        let mut deleting = false;
        if let Ok(mut pods) = shared.pods.lock()
            && let Some(handle) = pods.get_mut(&uid)
        {
            let stop = *handle.stop.borrow();
            match stop {
                // The object is gone (or the kubelet stops): nothing more will be heard of it.
                pod::Stop::Kill => {
                    pods.remove(&uid);
                }
                pod::Stop::Graceful(_) => {
                    handle.finished = true;
                    deleting = true;
                }
                pod::Stop::Run => handle.finished = true,
            }
        }
        if deleting {
            pod::finish_deletion(shared.client.clone(), pod).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_by_exact_name_or_prefix() {
        let map = ImageMap::default().with(
            "ghcr.io/maos/agent-runner:*",
            ImageTarget::Binary("/bin/maos-agent".into()),
        );
        assert_eq!(map.resolve(EXEC_IMAGE), Some(&ImageTarget::PodCommand));
        assert_eq!(
            map.resolve("ghcr.io/maos/agent-runner:0.1.0"),
            Some(&ImageTarget::Binary("/bin/maos-agent".into()))
        );
        assert_eq!(map.resolve("ghcr.io/maos/other:1"), None);
        assert_eq!(map.resolve("local/exec:v2"), None);
    }
}
