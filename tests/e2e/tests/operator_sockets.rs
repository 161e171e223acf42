//! The operator's Redis connections do not grow with the number of running Tasks: one
//! subscription hears every Task's wake-ups, where a blocking read per Task used to hold a
//! connection (three on a cluster) each.

use std::time::Duration;

use kube::api::{Api, ListParams};
use maos_core::api::v1alpha1::{SubtaskPhase, Task};
use maos_e2e::procfs;
use maos_e2e::stack::{Stack, StackConfig, pool_manifest, subtask};

/// Enough running Tasks that a connection each could not pass for a constant.
const TASKS: usize = 40;
const PATIENCE: Duration = Duration::from_secs(180);
/// A cluster's masters in the testbed.
const MASTERS: usize = 3;

fn waiting_task(name: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: {name}
spec:
  prompt: Wait.
  poolRef: {{name: default}}
  synthesize: false
  subtasks:
  - {{name: wait, prompt: Take your time.}}
"
    )
}

/// The operator's established connections to any node of the stack's Redis.
fn redis_sockets(stack: &mut Stack) -> usize {
    let ports = stack.redis_backend().ports();
    let pid = stack.operator(0).pid().expect("the operator runs");
    procfs::loopback_peer_ports(pid)
        .into_iter()
        .filter(|port| ports.contains(port))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_running_tasks_hold_no_more_redis_connections_than_the_masters_allow() {
    // Model calls that outlast the test: every Task stays running with its subtask in flight
    // or queued behind it.
    let mut stack =
        Stack::start(StackConfig::new("e2e-sockets").claude_latency(Duration::from_secs(900)))
            .await
            .expect("stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    let idle = redis_sockets(&mut stack);
    for index in 0..TASKS {
        stack
            .apply(&waiting_task(&format!("wait-{index:02}")))
            .expect("kubectl apply a Task");
    }
    let tasks: Api<Task> = Api::namespaced(stack.client(), stack.namespace());
    stack
        .wait_until("every Task to run", PATIENCE, || async {
            let list = tasks.list(&ListParams::default()).await.ok()?;
            let running = list
                .items
                .iter()
                .filter(|t| {
                    subtask(t, "wait").is_some_and(|s| {
                        matches!(s.phase, SubtaskPhase::Queued | SubtaskPhase::Running)
                    })
                })
                .count();
            (running == TASKS).then_some(())
        })
        .await;
    // Every Task was reconciled past dispatch, where its events began to be listened for.
    let busy = redis_sockets(&mut stack);
    eprintln!("operator sockets to Redis: {idle} idle, {busy} with {TASKS} running Tasks");
    let allowed = 4 * MASTERS + 4;
    assert!(
        busy <= allowed,
        "{busy} Redis connections with {TASKS} running Tasks (at most {allowed}; {idle} idle)"
    );
}
