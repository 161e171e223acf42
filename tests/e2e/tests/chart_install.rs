//! The chart installed with the real Helm CLI onto the testbed, as a platform team installs it:
//! `helm install` creates the operator's ServiceAccount, RBAC, Deployment (two replicas, one
//! leading through the Lease) and the rest; the testbed's controllers and kubelet run the
//! operator image in-cluster under the chart's ServiceAccount, with the chart's price table
//! mounted from its ConfigMap; the examples then run to completion, priced by that table, with
//! nothing refused; `helm uninstall` removes the operator again.

use std::process::Command;
use std::time::Duration;

use maos_e2e::cluster::{installed_tool, repo_root};
use maos_e2e::stack::{Stack, StackConfig, condition};

const DEADLINE: Duration = Duration::from_secs(120);
const OPERATOR_USER: &str = "system:serviceaccount:maos-system:maos";

fn helm(stack: &Stack, args: &[&str]) -> String {
    let home = tempdir();
    let output = Command::new(installed_tool("helm"))
        .args(args)
        .env("KUBECONFIG", stack.cluster().kubeconfig())
        .env("HOME", &home)
        .env_remove("HELM_NAMESPACE")
        .output()
        .expect("helm runs");
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        output.status.success(),
        "helm {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("maos-helm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_under_the_charts_rbac_and_a_task_succeeds() {
    // No operator processes and no RBAC from the stack: the chart brings both.
    let stack = Stack::start(
        StackConfig::new("e2e-chart")
            .operators(0)
            .operator_as_admin(),
    )
    .await
    .expect("the stack starts without an operator");
    let redis = stack.redis_backend().urls().join(",");
    let cluster =
        (stack.redis_backend().topology() == maos_core::coord::Topology::Cluster).to_string();
    let chart = repo_root().join("charts/maos").display().to_string();
    let set_redis = format!("redis.urls={{{}}}", redis.replace(',', "\\,"));
    let set_base = format!("agents.anthropicBaseUrl={}", stack.standin().base_url());
    let installed = helm(
        &stack,
        &[
            "install",
            "maos",
            &chart,
            "--namespace",
            "maos-system",
            "--create-namespace",
            "--set",
            &set_redis,
            "--set",
            &format!("redis.cluster={cluster}"),
            "--set",
            &set_base,
            // Every testbed pod shares 127.0.0.1: each process takes a free port.
            "--set",
            "agents.httpAddr=127.0.0.1:0",
            "--set-json",
            r#"extraEnv=[{"name":"MAOS_HTTP_ADDR","value":"127.0.0.1:0"}]"#,
            "--set",
            "logFormat=text",
            // A price table of its own, in a ConfigMap the operator reads from its volume: one
            // dollar a token, so the Task's cost is its token count.
            "--set-json",
            r#"priceTable=[{"model":"claude-*","input":1000000,"output":1000000,"cacheRead":1000000,"cacheWrite":1000000}]"#,
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains("kubectl create secret generic anthropic"),
        "NOTES.txt says how to create the API-key Secret: {installed}"
    );

    let pods = stack
        .cluster()
        .run_kubectl(
            &[
                "get",
                "pods",
                "-n",
                "maos-system",
                "-l",
                "app.kubernetes.io/instance=maos",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
        .expect("the operator's pods");
    let pods: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(pods.len(), 2, "the chart runs two replicas: {pods:?}");

    stack
        .apply_file("examples/agentpool.yaml")
        .expect("kubectl apply the example pool");
    stack
        .apply_file("examples/hello-task.yaml")
        .expect("kubectl apply the example task");
    let task = stack.wait_task_finished("hello", DEADLINE).await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded condition");
    assert_eq!(succeeded.status, "True", "{:?}", task.status);
    let usage = task
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .expect("the Task's usage");
    let tokens = usage.input_tokens
        + usage.output_tokens
        + usage.cache_read_input_tokens
        + usage.cache_creation_input_tokens;
    let cost: f64 = usage
        .cost_usd
        .as_deref()
        .and_then(|c| c.parse().ok())
        .expect("a cost");
    assert!(tokens > 0, "{usage:?}");
    assert!(
        (cost - tokens as f64).abs() < 1e-6,
        "the cost comes from the chart's price table (a dollar a token): {usage:?}"
    );

    let holder = stack
        .cluster()
        .run_kubectl(
            &[
                "get",
                "lease",
                "maos",
                "-n",
                "maos-system",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .expect("the operator's Lease");
    assert!(
        pods.contains(&holder.trim()),
        "one of the chart's pods leads, under its own name: {holder} not in {pods:?}"
    );
    let testbed = stack.cluster().testbed().expect("the testbed");
    let log = testbed.auth().access_log();
    let operator: Vec<_> = log.iter().filter(|r| r.user == OPERATOR_USER).collect();
    assert!(
        operator
            .iter()
            .any(|r| r.allowed && r.resource == "tasks" && r.subresource == "status"),
        "the operator wrote status with its pod's ServiceAccount token: {operator:#?}"
    );
    let refused: Vec<_> = operator.iter().filter(|r| !r.allowed).collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC grants everything the operator did: {refused:#?}"
    );

    helm(
        &stack,
        &["uninstall", "maos", "--namespace", "maos-system", "--wait"],
    );
    let left = stack
        .cluster()
        .run_kubectl(
            &[
                "get",
                "deployments,serviceaccounts,clusterroles",
                "-A",
                "-l",
                "app.kubernetes.io/instance=maos",
                "-o",
                "name",
            ],
            None,
        )
        .expect("list what is left");
    assert!(
        left.trim().is_empty(),
        "helm uninstall removes the operator: {left}"
    );
}
