//! The real kubectl against the cluster (a testbed, or a real cluster with
//! `MAOS_E2E_KUBECONFIG`): applying the CRDs and manifests, server-side printing, watching,
//! explain, and schema validation errors that name the field.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use maos_e2e::cluster::{TestCluster, repo_root};

const DEADLINE: Duration = Duration::from_secs(20);

fn crds() -> String {
    repo_root().join("crds").display().to_string()
}

/// The example manifests, or this crate's fixtures while examples/ does not exist.
fn manifests() -> PathBuf {
    let examples = repo_root().join("examples");
    if examples.is_dir() {
        examples
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }
}

fn fixtures() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .display()
        .to_string()
}

/// A cluster with the MAOS CRDs applied and a fresh namespace for the test's objects.
fn cluster_with_crds(namespace: &str) -> TestCluster {
    let cluster = TestCluster::start().expect("cluster starts");
    cluster
        .run_kubectl(&["apply", "-f", &crds()], None)
        .expect("CRDs apply");
    cluster
        .run_kubectl(&["create", "namespace", namespace], None)
        .expect("namespace is created");
    cluster
}

/// Retries a kubectl call until it succeeds (discovery of new CRDs is eventually consistent).
fn eventually_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cluster.run_kubectl(args, None) {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn crds_then_examples_apply_and_get_prints_the_task_columns() {
    let cluster = cluster_with_crds("e2e-apply");
    let applied = cluster
        .run_kubectl(
            &[
                "apply",
                "-n",
                "e2e-apply",
                "-f",
                &manifests().display().to_string(),
            ],
            None,
        )
        .expect("manifests apply");
    assert!(applied.contains("created"), "{applied}");

    let tasks = eventually_ok(&cluster, &["get", "mtask", "-n", "e2e-apply"]);
    let header = tasks.lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "PROGRESS", "SPEEDUP", "COST", "AGE"] {
        assert!(header.contains(column), "column {column} missing: {tasks}");
    }
    assert!(tasks.lines().count() > 1, "no tasks listed: {tasks}");

    let again = cluster
        .run_kubectl(
            &[
                "apply",
                "-n",
                "e2e-apply",
                "-f",
                &manifests().display().to_string(),
            ],
            None,
        )
        .expect("re-applying is accepted");
    assert!(again.contains("unchanged"), "{again}");
}

#[test]
fn get_by_category_lists_all_three_kinds() {
    let cluster = cluster_with_crds("e2e-category");
    cluster
        .run_kubectl(&["apply", "-n", "e2e-category", "-f", &fixtures()], None)
        .expect("fixtures apply");
    let all = eventually_ok(&cluster, &["get", "maos", "-n", "e2e-category"]);
    for kind in [
        "task.maos.dev/fixture-task",
        "agentpool.maos.dev/fixture-pool",
        "checkpoint.maos.dev/fixture-checkpoint",
    ] {
        assert!(all.contains(kind), "{kind} missing from: {all}");
    }
}

#[test]
fn api_resources_lists_the_maos_kinds_with_short_names() {
    let cluster = cluster_with_crds("e2e-resources");
    let resources = eventually_ok(&cluster, &["api-resources", "--api-group=maos.dev"]);
    for (plural, short) in [
        ("tasks", "mtask"),
        ("agentpools", "apool"),
        ("checkpoints", "ckpt"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(plural))
            .unwrap_or_else(|| panic!("{plural} missing: {resources}"));
        assert!(line.contains(short), "{line}");
    }
}

#[test]
fn explain_shows_the_task_spec_schema() {
    let cluster = cluster_with_crds("e2e-explain");
    eventually_ok(&cluster, &["get", "mtask", "-n", "e2e-explain"]);
    let explained = eventually_ok(&cluster, &["explain", "mtask.spec.budget"]);
    assert!(explained.contains("KIND:       Task"), "{explained}");
    assert!(explained.contains("maxTokens"), "{explained}");
    let parallelism = eventually_ok(&cluster, &["explain", "mtask.spec.parallelism"]);
    assert!(parallelism.contains("Default: 8."), "{parallelism}");
    let model = eventually_ok(&cluster, &["explain", "apool.spec.model"]);
    assert!(model.contains("Default: claude-sonnet-4-5."), "{model}");
}

#[test]
fn watch_sees_a_status_change_made_through_the_status_subresource() {
    let cluster = cluster_with_crds("e2e-watch");
    cluster
        .run_kubectl(&["apply", "-n", "e2e-watch", "-f", &fixtures()], None)
        .expect("fixtures apply");
    eventually_ok(
        &cluster,
        &["get", "mtask", "fixture-task", "-n", "e2e-watch"],
    );

    let mut watcher = cluster
        .kubectl()
        .args(["get", "mtask", "-n", "e2e-watch", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w starts");
    let stdout = watcher.stdout.take().expect("stdout is piped");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the watch never printed {needle:?}"),
            }
        }
    };
    wait_for("fixture-task");

    cluster
        .run_kubectl(
            &[
                "patch",
                "mtask",
                "fixture-task",
                "-n",
                "e2e-watch",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running","progress":"0/1"}}"#,
            ],
            None,
        )
        .expect("status patch is accepted");
    let line = wait_for("Running");
    assert!(
        line.contains("fixture-task") && line.contains("0/1"),
        "{line}"
    );
    // Stop the background kubectl we started (by its own handle, i.e. its PID).
    let _ = watcher.kill();
    let _ = watcher.wait();
}

fn invalid_task(spec_field: &str) -> String {
    format!(
        r#"{{"apiVersion":"maos.dev/v1alpha1","kind":"Task","metadata":{{"name":"invalid"}},"spec":{{"prompt":"x","poolRef":{{"name":"p"}},{spec_field}}}}}"#
    )
}

fn refusal(cluster: &TestCluster, spec_field: &str) -> String {
    let err = cluster
        .run_kubectl(
            &["apply", "-n", "e2e-invalid", "-f", "-"],
            Some(&invalid_task(spec_field)),
        )
        .expect_err("the invalid Task is refused");
    err.stderr().to_string()
}

#[test]
fn apply_refuses_invalid_tasks_naming_the_field() {
    let cluster = cluster_with_crds("e2e-invalid");
    eventually_ok(&cluster, &["get", "mtask", "-n", "e2e-invalid"]);

    let wrong_type = refusal(&cluster, r#""parallelism":"many""#);
    assert!(
        wrong_type.contains("spec.parallelism") && wrong_type.contains("must be of type integer"),
        "{wrong_type}"
    );

    let out_of_range = refusal(&cluster, r#""parallelism":100000"#);
    assert!(
        out_of_range.contains("spec.parallelism") && out_of_range.contains("less than or equal to"),
        "{out_of_range}"
    );

    let unknown_enum = refusal(&cluster, r#""shutdown":"Sometimes""#);
    assert!(
        unknown_enum.contains("spec.shutdown") && unknown_enum.contains("Unsupported value"),
        "{unknown_enum}"
    );

    let cel = refusal(&cluster, r#""budget":{}"#);
    assert!(cel.contains("spec.budget"), "{cel}");

    let missing = cluster.run_kubectl(&["get", "mtask", "invalid", "-n", "e2e-invalid"], None);
    assert!(missing.is_err(), "no invalid Task was stored");
}

#[test]
fn kubectl_with_a_wrong_token_is_unauthorized() {
    let cluster = TestCluster::start().expect("cluster starts");
    let err = cluster
        .run_kubectl(&["--token=not-the-token", "get", "configmaps"], None)
        .expect_err("a wrong token is refused");
    assert!(
        err.stderr().contains("You must be logged in to the server"),
        "{err}"
    );
}

#[test]
fn typed_create_subcommands_work_over_protobuf() {
    let cluster = TestCluster::start().expect("cluster starts");
    cluster
        .run_kubectl(&["create", "namespace", "e2e-typed"], None)
        .expect("create namespace");
    cluster
        .run_kubectl(
            &[
                "create",
                "secret",
                "generic",
                "key",
                "-n",
                "e2e-typed",
                "--from-literal=api-key=hi",
            ],
            None,
        )
        .expect("create secret");
    cluster
        .run_kubectl(
            &[
                "create",
                "configmap",
                "settings",
                "-n",
                "e2e-typed",
                "--from-literal=mode=fast",
            ],
            None,
        )
        .expect("create configmap");
    let secret = cluster
        .run_kubectl(
            &[
                "get",
                "secret",
                "key",
                "-n",
                "e2e-typed",
                "-o",
                "jsonpath={.data.api-key}",
            ],
            None,
        )
        .expect("get secret");
    assert_eq!(secret, "aGk=");
    let mode = cluster
        .run_kubectl(
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "e2e-typed",
                "-o",
                "jsonpath={.data.mode}",
            ],
            None,
        )
        .expect("get configmap");
    assert_eq!(mode, "fast");
}

#[test]
fn server_side_apply_removes_fields_the_manager_stops_applying() {
    let cluster = TestCluster::start().expect("cluster starts");
    cluster
        .run_kubectl(&["create", "namespace", "e2e-ssa"], None)
        .expect("namespace");
    let config = |data: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: e2e-ssa\ndata:\n{data}"
        )
    };
    cluster
        .run_kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&config("  a: \"1\"\n  b: \"2\"\n")),
        )
        .expect("first apply");
    cluster
        .run_kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&config("  a: \"1\"\n")),
        )
        .expect("second apply");
    let data = cluster
        .run_kubectl(
            &[
                "get",
                "configmap",
                "ssa",
                "-n",
                "e2e-ssa",
                "-o",
                "jsonpath={.data}",
            ],
            None,
        )
        .expect("get");
    assert_eq!(data, r#"{"a":"1"}"#);
}

#[test]
fn apply_refuses_a_quantity_that_is_not_one_and_a_prefix_that_escapes_the_bucket() {
    let cluster = cluster_with_crds("e2e-patterns");
    eventually_ok(&cluster, &["get", "apool,ckpt", "-n", "e2e-patterns"]);
    let pool = r#"{"apiVersion":"maos.dev/v1alpha1","kind":"AgentPool","metadata":{"name":"p"},
        "spec":{"apiKeySecretRef":{"name":"anthropic"},"resources":{"limits":{"memory":"lots"}}}}"#;
    let refused = cluster
        .run_kubectl(&["apply", "-n", "e2e-patterns", "-f", "-"], Some(pool))
        .expect_err("a memory limit of \"lots\" is refused");
    assert!(
        refused.stderr().contains("spec.resources.limits[memory]")
            && refused.stderr().contains("lots"),
        "{refused}"
    );
    let checkpoint = r#"{"apiVersion":"maos.dev/v1alpha1","kind":"Checkpoint","metadata":{"name":"c"},
        "spec":{"taskRef":{"name":"t"},"storage":{"prefix":"../../etc/"}}}"#;
    let refused = cluster
        .run_kubectl(
            &["apply", "-n", "e2e-patterns", "-f", "-"],
            Some(checkpoint),
        )
        .expect_err("a prefix with .. is refused");
    assert!(
        refused.stderr().contains("spec.storage.prefix"),
        "{refused}"
    );
    let stored = cluster.run_kubectl(
        &["get", "apool,ckpt", "-n", "e2e-patterns", "-o", "name"],
        None,
    );
    assert_eq!(
        stored.map(|s| s.trim().to_owned()).ok().as_deref(),
        Some("")
    );
}

#[test]
fn cel_refusals_name_the_field_and_the_value() {
    let cluster = cluster_with_crds("e2e-invalid");
    eventually_ok(&cluster, &["get", "mtask", "-n", "e2e-invalid"]);

    let itself = refusal(
        &cluster,
        r#""subtasks":[{"name":"a","prompt":"x","dependsOn":["a"]}]"#,
    );
    assert!(
        itself.contains("spec.subtasks[0].dependsOn: Invalid value: \"array\": subtask a cannot depend on itself"),
        "{itself}"
    );
    let twice = refusal(
        &cluster,
        r#""subtasks":[{"name":"a","prompt":"x"},{"name":"a","prompt":"y"}]"#,
    );
    assert!(
        twice.contains("spec.subtasks: Invalid value: \"array\": subtask names must be unique: a appears more than once"),
        "{twice}"
    );
    let reserved = refusal(&cluster, r#""subtasks":[{"name":"plan","prompt":"x"}]"#);
    assert!(
        reserved.contains(
            "spec.subtasks[0].name: Invalid value: \"string\": subtask name plan is reserved"
        ),
        "{reserved}"
    );
    let blank = refusal(&cluster, r#""subtasks":[{"name":"a","prompt":"   "}]"#);
    assert!(blank.contains("spec.subtasks[0].prompt"), "{blank}");
    let pool = refusal(
        &cluster,
        r#""maxSubtasks":4,"poolRef":{"name":"Not_A_Name"}"#,
    );
    assert!(pool.contains("spec.poolRef.name"), "{pool}");
}
