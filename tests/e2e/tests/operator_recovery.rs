//! Crashes the operator recovers from, end to end: an agent pod killed in the middle of a model
//! call, the operator itself killed mid-task and restarted, and the leader of two operator
//! replicas killed so the standby takes over. In every case the work completes, and no subtask
//! result is recorded twice.

use std::collections::BTreeMap;
use std::time::Duration;

use maos_core::api::v1alpha1::{SubtaskPhase, Task};
use maos_e2e::stack::{Stack, StackConfig, condition, has_condition, pool_manifest, subtask};
use serde_json::Value;

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(120);
/// The stand-in's latency where a crash must land in the middle of a model call.
const CALL_LATENCY: Duration = Duration::from_secs(2);

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

fn uids(task: &Task) -> (String, String) {
    let pool = task
        .status
        .as_ref()
        .and_then(|s| s.pool_uid.clone())
        .expect("status.poolUID");
    (pool, task.metadata.uid.clone().expect("uid"))
}

/// How many `SubtaskSucceeded` events each subtask of the Task has in its event stream.
async fn successes(stack: &Stack, task: &Task) -> BTreeMap<String, usize> {
    let (pool, uid) = uids(task);
    let events: Vec<Value> = stack.task_events(&pool, &uid).await.expect("read events");
    let mut counts = BTreeMap::new();
    for event in events.iter().filter(|e| e["type"] == "SubtaskSucceeded") {
        let name = event["subtask"].as_str().unwrap_or_default().to_owned();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// How an agent is taken down in the middle of a model call.
enum Crash {
    /// SIGKILL to its processes; the kubelet restarts the container under the same pod name.
    KillProcess,
    /// `kubectl delete pod --grace-period=0 --force`: the pod vanishes.
    DeletePod,
    /// SIGSTOP: the process hangs, holding its work, and stops heartbeating.
    Freeze,
}

/// Runs a one-subtask Task on a pool of two agents, crashes the working agent in the middle
/// of a model call, and checks that the subtask completes once — resumed from its journal by the
/// restarted agent, or taken over by another agent — and that the pool reports what happened.
async fn agent_crash_mid_subtask_is_recovered(namespace: &str, crash: Crash) {
    let stack = Stack::start(StackConfig::new(namespace).claude_latency(CALL_LATENCY))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: survivor
spec:
  prompt: Summarise the archive.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: long-read, prompt: Read the long document.}
",
        )
        .expect("kubectl apply the task");

    let prompt = "Read the long document.";
    let task = stack
        .wait_task(
            "survivor",
            "long-read running mid-call",
            TASK_DEADLINE,
            |t| {
                subtask(t, "long-read")
                    .is_some_and(|s| s.phase == SubtaskPhase::Running && s.agent.is_some())
                    && stack
                        .model_requests_mentioning(prompt)
                        .iter()
                        // Answers stream over the latency: a call this recent is still going.
                        .any(|r| r.at.elapsed() < CALL_LATENCY / 2)
            },
        )
        .await;
    let victim = subtask(&task, "long-read")
        .and_then(|s| s.agent.clone())
        .expect("the working agent");
    match crash {
        Crash::KillProcess => assert!(
            stack.kill_agent_pod(&victim).expect("kill the pod"),
            "agent pod {victim} had no process to kill"
        ),
        Crash::DeletePod => {
            stack
                .kubectl(
                    &["delete", "pod", &victim, "--grace-period=0", "--force"],
                    None,
                )
                .expect("kubectl delete the pod");
        }
        Crash::Freeze => assert!(
            stack.freeze_agent_pod(&victim),
            "agent pod {victim} had no process to freeze"
        ),
    }

    let task = stack
        .wait_task("survivor", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
    let entry = subtask(&task, "long-read").expect("status entry");
    // A killed agent's container is restarted under the same pod name at once (as a kubelet
    // does): the restarted agent resumes the item it held from the journal, before anyone
    // could call it dead. Otherwise another agent takes the item over with the next attempt.
    let resumed_in_place =
        matches!(crash, Crash::KillProcess) && entry.agent.as_deref() == Some(victim.as_str());
    if resumed_in_place {
        assert_eq!(entry.attempts, Some(1), "resumed, not retried: {entry:?}");
        let restarts = stack
            .kubectl(
                &[
                    "get",
                    "pod",
                    &victim,
                    "-o",
                    "jsonpath={.status.containerStatuses[0].restartCount}",
                ],
                None,
            )
            .expect("kubectl get the pod");
        assert_ne!(restarts.trim(), "0", "{victim} was restarted");
    } else {
        assert!(
            entry.attempts.unwrap_or(0) >= 2 && entry.agent.as_deref() != Some(victim.as_str()),
            "the subtask was not taken over by another agent: {entry:?}"
        );
    }
    let (pool_uid, task_uid) = uids(&task);
    let redis = stack.redis().await.expect("redis");
    let results = maos_core::coord::Pool::new(
        redis,
        &maos_core::coord::PoolUid::new(&pool_uid).expect("pool uid"),
    )
    .task(&maos_core::coord::TaskUid::new(&task_uid).expect("task uid"))
    .results()
    .all()
    .await
    .expect("read results");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results[0].1.agent,
        entry.agent.clone().unwrap_or_default(),
        "the recorded result is the new agent's"
    );
    assert_eq!(
        successes(&stack, &task).await.get("long-read"),
        Some(&1),
        "the result was recorded exactly once"
    );

    // The Event says what happened: restarted in place, the pod vanished, or the agent
    // stopped heartbeating. Events are written asynchronously: poll for it.
    let (reason, why) = match crash {
        Crash::KillProcess if resumed_in_place => ("AgentRestarted", "restarted"),
        Crash::KillProcess => ("AgentReplaced", ""),
        Crash::DeletePod => ("AgentReplaced", "lost its pod"),
        Crash::Freeze => ("AgentReplaced", "missed 3 heartbeats"),
    };
    stack
        .wait_until(
            "the pool's Event about the crashed agent",
            Duration::from_secs(30),
            || async {
                let events = stack.events_for("AgentPool", "default").await.ok()?;
                events
                    .iter()
                    .any(|e| {
                        let note = e.message.as_deref().unwrap_or_default();
                        e.reason.as_deref() == Some(reason)
                            && note.contains(&victim)
                            && note.contains(why)
                    })
                    .then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_subtask_resumes_from_its_journal_and_completes_once() {
    agent_crash_mid_subtask_is_recovered("e2e-agent-kill", Crash::KillProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pod_deleted_mid_subtask_is_replaced_and_the_subtask_completes_once_elsewhere() {
    agent_crash_mid_subtask_is_recovered("e2e-agent-gone", Crash::DeletePod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_agent_missing_heartbeats_is_replaced_and_its_subtask_completes_once_elsewhere() {
    agent_crash_mid_subtask_is_recovered("e2e-agent-hung", Crash::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_task_and_restarted_completes_it_without_repeating_work() {
    let mut stack = Stack::start(
        StackConfig::new("e2e-operator-kill").claude_latency(Duration::from_millis(500)),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: resilient
spec:
  prompt: Compare four key-value stores.
  poolRef: {name: default}
  parallelism: 2
  synthesize: true
",
        )
        .expect("kubectl apply the task");
    // Kill at a part's first model call, seen at the stand-in as it arrives: the status the
    // operator reports lags by its event pump, and a part is only 4 calls, so waiting for
    // `Running` there could leave the agents with nothing left to do while it is down.
    stack
        .wait_until("a part's first model call", TASK_DEADLINE, || async {
            (!stack.model_requests_mentioning("Work on part").is_empty()).then_some(())
        })
        .await;

    stack.operator(0).kill();
    // The agents work on without the operator: wait until they made more model calls.
    let calls_at_kill = stack.standin().requests().len();
    stack
        .wait_until(
            "the agents to keep working while the operator is down",
            Duration::from_secs(30),
            || async { (stack.standin().requests().len() >= calls_at_kill + 3).then_some(()) },
        )
        .await;
    stack.operator(0).restart().expect("restart the operator");
    stack.wait_leader(Duration::from_secs(60)).await;

    let task = stack
        .wait_task("resilient", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.subtasks.len(), 6, "plan, 4 parts, synthesize");
    for entry in &status.subtasks {
        assert_eq!(entry.phase, SubtaskPhase::Succeeded, "{entry:?}");
        assert_eq!(
            entry.attempts,
            Some(1),
            "a restart repeated work: {entry:?}"
        );
    }
    let successes = successes(&stack, &task).await;
    assert_eq!(successes.len(), 6, "{successes:?}");
    assert!(
        successes.values().all(|n| *n == 1),
        "a result was recorded twice: {successes:?}"
    );
    // Each part's conversation was opened once: no part was dispatched twice.
    for part in 1..=4 {
        let openings = stack
            .model_requests_mentioning(&format!("Work on part {part} of 4"))
            .iter()
            .filter(|r| {
                r.body
                    .as_ref()
                    .and_then(|b| b["messages"].as_array())
                    .is_some_and(|m| m.len() == 1)
            })
            .count();
        assert_eq!(openings, 1, "part-{part} was started {openings} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_operator_takes_over_when_the_leader_is_killed_and_runs_new_tasks() {
    let mut stack = Stack::start(
        StackConfig::new("e2e-failover")
            .operators(2)
            .lease_duration_seconds(3),
    )
    .await
    .expect("the stack starts");
    let leader = stack.wait_leader(Duration::from_secs(60)).await;
    let mut leaders = 0;
    for operator in stack.operators() {
        leaders += usize::from(operator.leads());
    }
    assert_eq!(leaders, 1, "exactly one operator leads");
    let leader_identity = stack.operator(leader).identity().to_owned();
    assert_eq!(
        stack.lease_holder().expect("read the lease").as_deref(),
        Some(leader_identity.as_str())
    );

    stack.operator(leader).kill();
    let successor = stack.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(successor, leader);
    let successor_identity = stack.operator(successor).identity().to_owned();
    assert_eq!(
        stack.lease_holder().expect("read the lease").as_deref(),
        Some(successor_identity.as_str())
    );

    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the task");
    let task = stack
        .wait_task("hello", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
}

/// The value of `maos_tasks{phase="<phase>"}` on the operator's `/metrics`.
async fn tasks_in_phase(address: std::net::SocketAddr, phase: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = format!("maos_tasks{{phase=\"{phase}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_counts_every_task_by_phase_not_only_those_that_changed() {
    let mut stack = Stack::start(StackConfig::new("e2e-metrics-restart"))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("kubectl apply the pool");
    for (name, prompt) in [
        ("done-a", "Name a prime."),
        ("done-b", "Name a colour."),
        ("broken", "Name a planet. [[fault:400]]"),
    ] {
        stack
            .apply(&format!(
                "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {{name: {name}}}
spec:
  prompt: {prompt}
  poolRef: {{name: default}}
  synthesize: false
  subtasks:
  - {{name: only, prompt: '{prompt}'}}
"
            ))
            .expect("kubectl apply a task");
    }
    for name in ["done-a", "done-b", "broken"] {
        stack
            .wait_task(name, "finished", TASK_DEADLINE, finished)
            .await;
    }

    stack.operator(0).restart().expect("restart the operator");
    stack.wait_leader(Duration::from_secs(60)).await;
    // The leader logged its address before it led (wait_leader saw it lead).
    let address = stack
        .operator(0)
        .http_address()
        .expect("the metrics address");
    let counts = stack
        .wait_until(
            "every Task counted",
            Duration::from_secs(60),
            || async move {
                let succeeded = tasks_in_phase(address, "Succeeded").await?;
                let failed = tasks_in_phase(address, "Failed").await?;
                (succeeded == 2 && failed == 1).then_some((succeeded, failed))
            },
        )
        .await;
    assert_eq!(counts, (2, 1));
    assert_eq!(tasks_in_phase(address, "Running").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_whose_pod_is_force_deleted_is_replaced_though_no_work_waits() {
    let stack = Stack::start(
        StackConfig::new("e2e-idle-replaced").claude_latency(Duration::from_millis(300)),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 3))
        .expect("kubectl apply the pool");
    // Three parallel subtasks scale the pool to three agents.
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: widen}
spec:
  prompt: Three things at once.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: one, prompt: First thing.}
  - {name: two, prompt: Second thing.}
  - {name: three, prompt: Third thing.}
",
        )
        .expect("kubectl apply the task");
    stack
        .wait_task("widen", "finished", TASK_DEADLINE, finished)
        .await;
    let before = stack
        .wait_until("three agents", TASK_DEADLINE, || async {
            stack
                .agent_pods("default")
                .ok()
                .filter(|pods| pods.len() == 3)
        })
        .await;

    // Idle, above min, nothing waiting: only the replacement brings the pool back to three.
    let victim = before[0].clone();
    stack
        .kubectl(
            &["delete", "pod", &victim, "--grace-period=0", "--force"],
            None,
        )
        .expect("kubectl delete the pod");
    let after = stack
        .wait_until("a replacement agent", TASK_DEADLINE, || async {
            stack
                .agent_pods("default")
                .ok()
                .filter(|pods| pods.len() == 3 && !pods.contains(&victim))
        })
        .await;
    assert_eq!(
        after.iter().filter(|p| !before.contains(p)).count(),
        1,
        "one new agent: {before:?} -> {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_the_autoscaler_removes_are_not_replaced() {
    let stack =
        Stack::start(StackConfig::new("e2e-scale-down").claude_latency(Duration::from_millis(300)))
            .await
            .expect("the stack starts");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: AgentPool
metadata: {name: default}
spec:
  replicas: {min: 1, max: 3}
  idleSeconds: 1
  apiKeySecretRef: {name: anthropic, key: api-key}
  rateLimits: {requestsPerMinute: 100000, inputTokensPerMinute: 100000000, outputTokensPerMinute: 100000000}
",
        )
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: widen}
spec:
  prompt: Three things at once.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: one, prompt: First thing.}
  - {name: two, prompt: Second thing.}
  - {name: three, prompt: Third thing.}
",
        )
        .expect("kubectl apply the task");
    stack
        .wait_task("widen", "finished", TASK_DEADLINE, finished)
        .await;
    stack
        .wait_until("the pool back at min", TASK_DEADLINE, || async {
            stack
                .agent_pods("default")
                .ok()
                .filter(|pods| pods.len() == 1)
        })
        .await;
    // Watched for a while: a removed agent must not come back as a "lost" one.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let pods = stack.agent_pods("default").expect("pods");
        assert!(pods.len() <= 1, "the pool grew back: {pods:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
