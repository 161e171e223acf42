//! Server-side apply's field ownership, as kube-apiserver keeps it, through the real kubectl
//! and kube-rs: every write records its field manager in managedFields, an update takes the
//! fields it changes, and an apply that would change another manager's field is a 409
//! conflict naming the manager and the field until it is forced.

use kube::api::{Api, Patch, PatchParams};
use kube::core::Status;
use maos_core::api::v1alpha1::Task;
use maos_e2e::cluster::TestCluster;
use serde_json::{Value, json};

const NS: &str = "ownership";

fn setup() -> TestCluster {
    let cluster = TestCluster::start().expect("the testbed starts");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("namespace");
    cluster
}

/// Manager → the fields it owns, of the object kubectl prints as JSON.
fn owners(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn get_json(cluster: &TestCluster, args: &[&str]) -> Value {
    let mut all = vec!["get", "-n", NS, "-o", "json", "--show-managed-fields"];
    all.extend_from_slice(args);
    let out = cluster.run_kubectl(&all, None).expect("kubectl get");
    serde_json::from_str(&out).expect("JSON")
}

const APPLIED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: ownership
data:
  a: "applied"
  b: "2"
"#;

#[test]
fn applying_over_another_managers_field_conflicts_until_forced() {
    let cluster = setup();
    cluster
        .run_kubectl(
            &[
                "create",
                "configmap",
                "settings",
                "-n",
                NS,
                "--from-literal=a=1",
                "--from-literal=b=2",
            ],
            None,
        )
        .expect("create");
    let created = get_json(&cluster, &["configmap", "settings"]);
    assert_eq!(
        owners(&created),
        vec![(
            "kubectl-create".into(),
            "Update".into(),
            json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})
        )],
        "a create owns every field it set"
    );

    let refused = cluster
        .run_kubectl(&["apply", "--server-side", "-f", "-"], Some(APPLIED))
        .expect_err("changing kubectl-create's field conflicts");
    let time = created["metadata"]["managedFields"][0]["time"]
        .as_str()
        .unwrap_or("");
    assert!(
        refused.stderr().contains(&format!(
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1 at {time}: .data.a"
        )),
        "kubectl shows kube-apiserver's conflict message: {}",
        refused.stderr()
    );
    let unchanged = get_json(&cluster, &["configmap", "settings"]);
    assert_eq!(
        unchanged["data"]["a"], "1",
        "a refused apply changes nothing"
    );
    assert_eq!(
        unchanged["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    cluster
        .run_kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(APPLIED),
        )
        .expect("a forced apply takes the field");
    let forced = get_json(&cluster, &["configmap", "settings"]);
    assert_eq!(forced["data"]["a"], "applied");
    assert_eq!(
        owners(&forced),
        vec![
            (
                "kubectl-create".into(),
                "Update".into(),
                json!({"f:data": {".": {}, "f:b": {}}})
            ),
            (
                "kubectl".into(),
                "Apply".into(),
                json!({"f:data": {"f:a": {}, "f:b": {}}})
            ),
        ],
        "the applier took .data.a and shares .data.b, whose value it did not change"
    );

    // An update never conflicts: it takes the field, and the applier's next apply of its old
    // value conflicts with the updater.
    cluster
        .run_kubectl(
            &[
                "patch",
                "configmap",
                "settings",
                "-n",
                NS,
                "--type=merge",
                "-p",
                r#"{"data":{"a":"patched"}}"#,
            ],
            None,
        )
        .expect("a patch takes an applied field without conflict");
    let patched = get_json(&cluster, &["configmap", "settings"]);
    let patch_entry = owners(&patched)
        .into_iter()
        .find(|(m, _, _)| m == "kubectl-patch")
        .expect("the patch's manager owns what it changed");
    assert_eq!(patch_entry.2, json!({"f:data": {"f:a": {}}}));
    let again = cluster
        .run_kubectl(&["apply", "--server-side", "-f", "-"], Some(APPLIED))
        .expect_err("re-applying the old value conflicts with the patch");
    assert!(
        again
            .stderr()
            .contains("conflict with \"kubectl-patch\" using v1 at"),
        "{}",
        again.stderr()
    );
    assert!(again.stderr().contains(": .data.a"), "{}", again.stderr());

    // Dropping a field another manager still owns keeps it.
    cluster
        .run_kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&APPLIED.replace("  a: \"applied\"\n", "")),
        )
        .expect("an apply without .data.a");
    let dropped = get_json(&cluster, &["configmap", "settings"]);
    assert_eq!(
        dropped["data"],
        json!({"a": "patched", "b": "2"}),
        "kubectl-patch still owns .data.a, so it stays"
    );
}

fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_spec_owners_do_not_conflict_and_a_second_status_writer_does() {
    let cluster = setup();
    cluster
        .install_crds()
        .expect("the CRDs are installed and Established");
    let manifest = r#"
apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: t
  namespace: ownership
spec:
  prompt: Say hello.
  poolRef:
    name: default
  subtasks:
  - name: greet
    prompt: Greet.
  synthesize: false
status:
  phase: Succeeded
"#;
    cluster
        .run_kubectl(&["apply", "--server-side", "-f", "-"], Some(manifest))
        .expect("the user's apply");
    let client = cluster.client().await.expect("a client");
    let tasks: Api<Task> = Api::namespaced(client, NS);
    let status = json!({"apiVersion": "maos.dev/v1alpha1", "kind": "Task",
                        "status": {"phase": "Running", "message": "working"}});
    tasks
        .patch_status(
            "t",
            &PatchParams::apply("maos-operator"),
            &Patch::Apply(&status),
        )
        .await
        .expect("the operator's status apply does not conflict with the user's spec");
    let task = get_json(&cluster, &["task", "t"]);
    assert_eq!(
        task["status"]["phase"], "Running",
        "the user's main-resource apply never set status"
    );
    let user = owners(&task)
        .into_iter()
        .find(|(m, _, _)| m == "kubectl")
        .expect("the user's apply is recorded");
    assert!(
        user.2.get("f:status").is_none(),
        "a main-resource apply owns no status: {}",
        user.2
    );

    cluster
        .run_kubectl(&["apply", "--server-side", "-f", "-"], Some(manifest))
        .expect("re-applying the manifest after the operator wrote status does not conflict");

    let rival = json!({"apiVersion": "maos.dev/v1alpha1", "kind": "Task",
                       "status": {"phase": "Failed"}});
    let refused = status_of(
        tasks
            .patch_status("t", &PatchParams::apply("rival"), &Patch::Apply(&rival))
            .await,
    );
    assert_eq!(refused.code, 409);
    assert_eq!(refused.reason, "Conflict");
    assert_eq!(
        refused.message,
        "Apply failed with 1 conflict: conflict with \"maos-operator\" with subresource \"status\": .status.phase"
    );
    let cause = refused
        .details
        .as_ref()
        .and_then(|d| d.causes.first())
        .expect("a cause");
    assert_eq!(cause.reason, "FieldManagerConflict");
    assert_eq!(cause.field, ".status.phase");
    assert_eq!(
        get_json(&cluster, &["task", "t"])["status"]["phase"],
        "Running",
        "a refused apply writes nothing"
    );
    tasks
        .patch_status(
            "t",
            &PatchParams::apply("rival").force(),
            &Patch::Apply(&rival),
        )
        .await
        .expect("forced");
}
