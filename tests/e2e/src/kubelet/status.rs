//! What a pod's status says, as a pure function of its containers' states (as a kubelet
//! computes it): phase, Ready and ContainersReady conditions, and containerStatuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The address every testbed pod reports: the processes run on this machine's loopback.
pub const POD_IP: &str = "127.0.0.1";

/// Where one container is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerPhase {
    /// Not running: image pull, configuration error, or back-off before a restart.
    Waiting {
        /// CamelCase reason, e.g. `ContainerCreating`, `ImagePullBackOff`, `CrashLoopBackOff`.
        reason: String,
        /// Details for humans.
        message: Option<String>,
    },
    /// The process runs.
    Running {
        /// When it started.
        started_at: Timestamp,
    },
    /// The process exited.
    Terminated(Termination),
}

/// How a container's process ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    /// Exit code; 128 + signal number for a process killed by a signal, as container runtimes report.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`-style reason.
    pub reason: String,
    /// Details for humans (e.g. why the process could not start).
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// One container as the kubelet tracks it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    /// The container's name in the pod spec.
    pub name: String,
    /// The image it was started from.
    pub image: String,
    /// Its current state.
    pub phase: ContainerPhase,
    /// How often it was restarted.
    pub restart_count: i32,
    /// How its previous run ended, after a restart.
    pub last_termination: Option<Termination>,
    /// Whether the kubelet will start it again (restart policy and no deletion in progress).
    pub will_restart: bool,
    /// Whether it ever started a process.
    pub ever_started: bool,
}

impl ContainerRecord {
    /// A container that has not started yet.
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            phase: ContainerPhase::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            restart_count: 0,
            last_termination: None,
            will_restart: true,
            ever_started: false,
        }
    }
}

/// The pod phase a kubelet reports for these containers.
pub fn pod_phase(containers: &[ContainerRecord]) -> &'static str {
    let finished =
        |c: &ContainerRecord| matches!(c.phase, ContainerPhase::Terminated(_)) && !c.will_restart;
    if !containers.is_empty() && containers.iter().all(finished) {
        let all_ok = containers.iter().all(|c| match &c.phase {
            ContainerPhase::Terminated(t) => t.exit_code == 0,
            _ => false,
        });
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    if containers.iter().any(|c| c.ever_started) {
        "Running"
    } else {
        "Pending"
    }
}

/// The whole pod status for these containers.
pub fn pod_status(
    containers: &[ContainerRecord],
    start_time: Timestamp,
    now: Timestamp,
) -> PodStatus {
    let all_running = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.phase, ContainerPhase::Running { .. }));
    let ready = if all_running { "True" } else { "False" };
    let condition = |type_: &str, status: &str| PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    };
    PodStatus {
        phase: Some(pod_phase(containers).to_owned()),
        host_ip: Some(POD_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: POD_IP.to_owned(),
        }]),
        pod_ip: Some(POD_IP.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: POD_IP.to_owned(),
        }]),
        start_time: Some(Time(start_time)),
        conditions: Some(vec![
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ]),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

fn container_status(record: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        name: record.name.clone(),
        image: record.image.clone(),
        image_id: record.image.clone(),
        container_id: Some(format!("process://{}", record.name)),
        ready: matches!(record.phase, ContainerPhase::Running { .. }),
        started: Some(matches!(record.phase, ContainerPhase::Running { .. })),
        restart_count: record.restart_count,
        state: Some(state(&record.phase)),
        last_state: record.last_termination.as_ref().map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn state(phase: &ContainerPhase) -> ContainerState {
    match phase {
        ContainerPhase::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerPhase::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        ContainerPhase::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    }
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: Some(Time(t.finished_at)),
        container_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32, will_restart: bool) -> ContainerRecord {
        ContainerRecord {
            phase: ContainerPhase::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
                message: None,
                started_at: None,
                finished_at: Timestamp::UNIX_EPOCH,
            }),
            will_restart,
            ever_started: true,
            ..ContainerRecord::new("c", "local/exec")
        }
    }

    fn running() -> ContainerRecord {
        ContainerRecord {
            phase: ContainerPhase::Running {
                started_at: Timestamp::UNIX_EPOCH,
            },
            ever_started: true,
            ..ContainerRecord::new("c", "local/exec")
        }
    }

    #[test]
    fn a_container_that_never_started_leaves_the_pod_pending() {
        assert_eq!(pod_phase(&[ContainerRecord::new("c", "x")]), "Pending");
    }

    #[test]
    fn a_running_container_makes_the_pod_running_and_ready() {
        let status = pod_status(&[running()], Timestamp::UNIX_EPOCH, Timestamp::UNIX_EPOCH);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        assert_eq!(ready, Some("True"));
        assert_eq!(status.pod_ip.as_deref(), Some(POD_IP));
    }

    #[test]
    fn a_failed_exit_without_restart_fails_the_pod() {
        assert_eq!(pod_phase(&[exited(3, false)]), "Failed");
        assert_eq!(pod_phase(&[exited(0, false), exited(1, false)]), "Failed");
    }

    #[test]
    fn clean_exits_without_restart_succeed_the_pod() {
        assert_eq!(
            pod_phase(&[exited(0, false), exited(0, false)]),
            "Succeeded"
        );
    }

    #[test]
    fn a_container_waiting_to_restart_keeps_the_pod_running_but_not_ready() {
        let status = pod_status(
            &[exited(1, true)],
            Timestamp::UNIX_EPOCH,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
    }
}
