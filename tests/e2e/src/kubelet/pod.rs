//! One pod's life on the process kubelet: start its containers, restart them as its policy
//! says, publish its status, and stop it gracefully when it is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use super::process::{ContainerProcess, Mount, ProcessSpec, exit_code};
use super::status::{ContainerPhase, ContainerRecord, Termination, pod_status};
use super::{ImageTarget, KubeletConfig, env, pod_dir, serviceaccount, volumes};

/// What the kubelet wants of a pod's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep running them.
    Run,
    /// The pod is being deleted: SIGTERM, then SIGKILL after this long, then remove the object.
    Graceful(Duration),
    /// The object is gone: kill at once.
    Kill,
}

/// How long a deleted pod's containers get between SIGTERM and SIGKILL.
pub(crate) fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The parts of a pod's state its container supervisors share.
struct PodState {
    records: Mutex<Vec<ContainerRecord>>,
    changed: Notify,
    pids: Arc<Mutex<HashMap<String, u32>>>,
    volumes: tokio::sync::Mutex<()>,
}

impl PodState {
    fn update(&self, index: usize, change: impl FnOnce(&mut ContainerRecord)) {
        if let Ok(mut records) = self.records.lock()
            && let Some(record) = records.get_mut(index)
        {
            change(record);
        }
        self.changed.notify_one();
    }

    fn snapshot(&self) -> Vec<ContainerRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Runs a pod until its containers are done and their final status is published (removing a
/// deleted pod's object is up to the caller).
pub(crate) async fn run(
    client: &Client,
    config: &KubeletConfig,
    pod: &Pod,
    stop: watch::Receiver<Stop>,
    pids: Arc<Mutex<HashMap<String, u32>>>,
) {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers: Vec<Container> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let dir = pod_dir(&config.root, &namespace, &name);
    // A new pod of the same name starts with fresh logs.
    let _ = std::fs::remove_dir_all(&dir);

    let state = Arc::new(PodState {
        records: Mutex::new(
            containers
                .iter()
                .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default()))
                .collect(),
        ),
        changed: Notify::new(),
        pids,
        volumes: tokio::sync::Mutex::new(()),
    });
    let start_time = Timestamp::now();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let supervisors = containers.iter().enumerate().map(|(index, container)| {
        supervise(client, config, pod, container, index, &state, stop.clone())
    });
    let all_done = futures::future::join_all(supervisors);
    tokio::pin!(all_done);
    loop {
        publish(&api, &name, &state, start_time).await;
        tokio::select! {
            _ = &mut all_done => break,
            _ = state.changed.notified() => {}
        }
    }
    publish(&api, &name, &state, start_time).await;
}

/// Assigns an unscheduled pod to `node` with a `pods/binding`, as kube-scheduler does.
pub(crate) async fn bind(client: Client, pod: Pod, node: String) {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let binding = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    // A conflict means it is bound already (e.g. a second event for the same pod): fine.
    if let Err(err) = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &kube::api::PostParams::default(),
            &binding,
        )
        .await
    {
        tracing::debug!(pod = %name, error = %err, "binding the pod failed");
    }
}

/// Removes a deleted pod whose containers have stopped, as a kubelet does once it is done.
pub(crate) async fn finish_deletion(client: Client, pod: Pod) {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(err) = api.delete(&name, &params).await {
        tracing::debug!(pod = %name, error = %err, "final delete of a pod failed (it may be gone already)");
    }
}

async fn publish(api: &Api<Pod>, name: &str, state: &PodState, start_time: Timestamp) {
    let status = pod_status(&state.snapshot(), start_time, Timestamp::now());
    let patch = serde_json::json!({ "status": status });
    if let Err(err) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(pod = %name, error = %err, "pod status update failed");
    }
}

/// Runs one container through its restarts until it is done or the pod stops.
async fn supervise(
    client: &Client,
    config: &KubeletConfig,
    pod: &Pod,
    container: &Container,
    index: usize,
    state: &PodState,
    mut stop: watch::Receiver<Stop>,
) {
    let image = container.image.clone().unwrap_or_default();
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_owned());
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dir = pod_dir(&config.root, &namespace, &name);

    let Some(target) = config.images.resolve(&image).cloned() else {
        state.update(index, |r| {
            r.phase = ContainerPhase::Waiting {
                reason: "ImagePullBackOff".to_owned(),
                message: Some(format!(
                    "Back-off pulling image \"{image}\": the testbed maps no local program to it"
                )),
            }
        });
        wait_for_stop(&mut stop).await;
        state.update(index, |r| r.will_restart = false);
        return;
    };

    let mut backoff = config.restart_backoff;
    loop {
        let spec = loop {
            match env::resolve(client, pod, container).await {
                Ok(vars) => match process_spec(&target, container, vars, &dir) {
                    Ok(spec) => break spec,
                    Err(message) => state.update(index, |r| {
                        r.phase = ContainerPhase::Waiting {
                            reason: "CreateContainerError".to_owned(),
                            message: Some(message),
                        }
                    }),
                },
                Err(err) => state.update(index, |r| {
                    r.phase = ContainerPhase::Waiting {
                        reason: "CreateContainerConfigError".to_owned(),
                        message: Some(err.to_string()),
                    }
                }),
            }
            if stopped_within(&mut stop, config.config_retry).await {
                state.update(index, |r| r.will_restart = false);
                return;
            }
        };

        let mut spec = spec;
        let volumes = {
            // The pod's containers share its volumes: one writer at a time.
            let _writing = state.volumes.lock().await;
            volumes::set_up(client, pod, &dir)
                .await
                .and_then(|dirs| volumes::mounts(container, &dirs))
        };
        match volumes {
            Ok(mounts) => spec.mounts.extend(mounts),
            Err(message) => {
                state.update(index, |r| {
                    r.phase = ContainerPhase::Waiting {
                        reason: "ContainerCreating".to_owned(),
                        message: Some(message),
                    }
                });
                if stopped_within(&mut stop, config.config_retry).await {
                    state.update(index, |r| r.will_restart = false);
                    return;
                }
                continue;
            }
        }
        if let Some(cluster) = config.in_cluster.as_ref() {
            spec.env.extend(serviceaccount::env(cluster));
            if serviceaccount::wanted(pod) {
                match serviceaccount::project(client, cluster, pod, &dir).await {
                    Ok(source) => spec.mounts.push(Mount {
                        source,
                        target: serviceaccount::MOUNT_PATH.into(),
                        read_only: true,
                    }),
                    Err(message) => {
                        state.update(index, |r| {
                            r.phase = ContainerPhase::Waiting {
                                reason: "CreateContainerConfigError".to_owned(),
                                message: Some(message),
                            }
                        });
                        if stopped_within(&mut stop, config.config_retry).await {
                            state.update(index, |r| r.will_restart = false);
                            return;
                        }
                        continue;
                    }
                }
            }
        }
        let started_at = Timestamp::now();
        let termination = match ContainerProcess::start(&spec) {
            Err(err) => Termination {
                exit_code: 128,
                signal: None,
                reason: "StartError".to_owned(),
                message: Some(err.to_string()),
                started_at: None,
                finished_at: Timestamp::now(),
            },
            Ok(mut process) => {
                if let (Some(pid), Ok(mut pids)) = (process.pid(), state.pids.lock()) {
                    pids.insert(container.name.clone(), pid);
                }
                state.update(index, |r| {
                    r.phase = ContainerPhase::Running { started_at };
                    r.ever_started = true;
                });
                let status = tokio::select! {
                    status = process.wait() => status,
                    requested = wait_for_stop(&mut stop) => match requested {
                        Stop::Graceful(grace) => process.terminate(grace).await,
                        _ => process.terminate(Duration::ZERO).await,
                    },
                };
                if let Ok(mut pids) = state.pids.lock() {
                    pids.remove(&container.name);
                }
                let (code, signal) = status.map(exit_code).unwrap_or((255, None));
                Termination {
                    exit_code: code,
                    signal,
                    reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
                    message: None,
                    started_at: Some(started_at),
                    finished_at: Timestamp::now(),
                }
            }
        };

        let stopping = *stop.borrow() != Stop::Run;
        let restart = !stopping
            && match restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => termination.exit_code != 0,
                _ => true,
            };
        if !restart {
            state.update(index, |r| {
                r.phase = ContainerPhase::Terminated(termination);
                r.will_restart = false;
            });
            return;
        }
        state.update(index, |r| {
            r.last_termination = Some(termination);
            r.restart_count += 1;
            r.phase = ContainerPhase::Waiting {
                reason: "CrashLoopBackOff".to_owned(),
                message: Some(format!(
                    "back-off {}s restarting failed container={}",
                    backoff.as_secs(),
                    container.name
                )),
            };
        });
        if stopped_within(&mut stop, backoff).await {
            state.update(index, |r| r.will_restart = false);
            return;
        }
        backoff = (backoff * 2).min(config.max_restart_backoff);
    }
}

/// The program and arguments a container runs, or why it cannot run.
fn process_spec(
    target: &ImageTarget,
    container: &Container,
    env: Vec<(String, String)>,
    dir: &std::path::Path,
) -> Result<ProcessSpec, String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let (program, mut argv): (std::path::PathBuf, Vec<String>) = match target {
        // The image's entrypoint is the binary; a `command` would replace it in a real
        // runtime, here its first word stands for the binary and the rest are arguments.
        ImageTarget::Binary(path) => (path.clone(), command.into_iter().skip(1).collect()),
        ImageTarget::PodCommand => {
            let mut words = command.into_iter();
            let Some(program) = words.next() else {
                return Err(format!(
                    "container {} uses {} and so needs a command",
                    container.name,
                    super::EXEC_IMAGE
                ));
            };
            (program.into(), words.collect())
        }
    };
    argv.extend(args);
    // Kubernetes expands `$(VAR)` in command and args with the container's environment.
    let argv = argv.iter().map(|a| env::expand(a, &env)).collect();
    Ok(ProcessSpec {
        program,
        args: argv,
        env,
        workdir: dir.join("work"),
        log: dir.join(format!("{}.log", container.name)),
        mounts: Vec::new(),
    })
}

/// Waits until the pod is told to stop; returns how.
async fn wait_for_stop(stop: &mut watch::Receiver<Stop>) -> Stop {
    match stop.wait_for(|s| *s != Stop::Run).await {
        Ok(value) => *value,
        // The kubelet is gone: stop now.
        Err(_) => Stop::Kill,
    }
}

/// Waits `delay`, or less if the pod is told to stop; returns whether it was.
async fn stopped_within(stop: &mut watch::Receiver<Stop>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = wait_for_stop(stop) => true,
    }
}
