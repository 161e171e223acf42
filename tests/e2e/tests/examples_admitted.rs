//! Every custom resource under examples/ (recursively) is admitted by the API server with the
//! CRDs of crds/: each maos.dev document is sent as a server-side dry-run create
//! (`kubectl create --dry-run=server`, which asks for strict field validation), so the CRDs'
//! OpenAPI schemas, defaults and CEL rules (`x-kubernetes-validations`) run on it as on a real
//! cluster, and nothing is stored. Documents of other groups (the Secret in examples/secrets/,
//! the Argo CD Application in examples/argocd/) are skipped, each named in the output.
//! core/tests/examples.rs checks the same files offline against the generated schema; this test
//! goes through the API server (the testbed, or a real cluster with `MAOS_E2E_KUBECONFIG`).
//! Copies of examples with one invalid field are refused, so the check can fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maos_e2e::cluster::{TestCluster, repo_root};
use serde_json::{Value, json};

const NS: &str = "examples-admitted";
const GROUP: &str = "maos.dev";
const DEADLINE: Duration = Duration::from_secs(30);

/// A cluster with the CRDs applied and Established, the test namespace, and kubectl's discovery
/// knowing the maos.dev kinds.
fn cluster_with_crds() -> TestCluster {
    let cluster = TestCluster::start().expect("the cluster starts");
    cluster
        .install_crds()
        .expect("the CRDs are installed and Established");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("the namespace is created");
    // Discovery of new CRDs is eventually consistent.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cluster.run_kubectl(&["get", "tasks,agentpools,checkpoints", "-n", NS], None) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("the maos.dev kinds never served: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    cluster
}

/// Every YAML file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One YAML document of an example file.
struct Document {
    /// "examples/<file>" and, for a file of several documents, "#<index>".
    origin: String,
    object: Value,
}

impl Document {
    fn group(&self) -> &str {
        let api_version = self.object["apiVersion"].as_str().unwrap_or_default();
        api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group)
    }

    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} {}/{}",
            self.origin,
            self.object["apiVersion"]
                .as_str()
                .unwrap_or("<no apiVersion>"),
            self.kind(),
            self.object["metadata"]["name"]
                .as_str()
                .unwrap_or("<no name>"),
        )
    }
}

/// Every non-empty document of every YAML file under examples/.
fn example_documents() -> Vec<Document> {
    let root = repo_root().join("examples");
    let mut documents = Vec::new();
    for path in yaml_files(&root) {
        let name = path
            .strip_prefix(&root)
            .expect("under examples/")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("a readable example");
        let objects: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("examples/{name} is not valid YAML: {e}"));
        let objects: Vec<Value> = objects.into_iter().filter(|o| !o.is_null()).collect();
        let several = objects.len() > 1;
        for (index, object) in objects.into_iter().enumerate() {
            let origin = if several {
                format!("examples/{name}#{index}")
            } else {
                format!("examples/{name}")
            };
            documents.push(Document { origin, object });
        }
    }
    documents
}

/// A server-side dry-run create of `object` in the test namespace: Ok(what kubectl printed) or
/// Err(its stderr).
fn dry_run_create(cluster: &TestCluster, object: &Value) -> Result<String, String> {
    cluster
        .run_kubectl(
            &[
                "create",
                "--dry-run=server",
                "-n",
                NS,
                "-o",
                "name",
                "-f",
                "-",
            ],
            Some(&object.to_string()),
        )
        .map_err(|e| e.stderr().trim().to_owned())
}

#[test]
fn every_maos_example_is_admitted_by_a_server_side_dry_run() {
    let cluster = cluster_with_crds();
    let documents = example_documents();
    assert!(!documents.is_empty(), "examples/ holds no YAML document");

    let mut admitted_kinds = BTreeSet::new();
    let mut refused = Vec::new();
    let mut skipped = Vec::new();
    for document in &documents {
        if document.group() != GROUP {
            skipped.push(document.describe());
            continue;
        }
        match dry_run_create(&cluster, &document.object) {
            Ok(out) => {
                println!("admitted: {} ({})", document.describe(), out.trim());
                admitted_kinds.insert(document.kind().to_owned());
            }
            Err(stderr) => refused.push(format!("{}\n    {stderr}", document.describe())),
        }
    }
    for line in &skipped {
        println!("skipped (not {GROUP}): {line}");
    }
    assert!(
        refused.is_empty(),
        "examples the API server refuses:\n{}",
        refused.join("\n")
    );
    assert_eq!(
        admitted_kinds,
        ["AgentPool", "Checkpoint", "Task"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        "every maos.dev kind has an admitted example"
    );

    // A dry run stores nothing.
    let stored = cluster
        .run_kubectl(
            &[
                "get",
                "tasks,agentpools,checkpoints",
                "-n",
                NS,
                "-o",
                "name",
            ],
            None,
        )
        .expect("list");
    assert_eq!(stored.trim(), "", "a dry run stored an object");
}

/// The example of `origin` (relative to examples/), as JSON.
fn example(origin: &str) -> Value {
    let origin = format!("examples/{origin}");
    example_documents()
        .into_iter()
        .find(|d| d.origin == origin)
        .unwrap_or_else(|| panic!("{origin} exists"))
        .object
}

#[test]
fn copies_of_examples_with_an_invalid_field_are_refused() {
    let cluster = cluster_with_crds();

    // The unchanged copies are admitted, so each refusal below is the changed field's.
    for origin in ["hello-task.yaml", "manual-dag.yaml", "agentpool.yaml"] {
        dry_run_create(&cluster, &example(origin))
            .unwrap_or_else(|e| panic!("examples/{origin} is admitted: {e}"));
    }

    // The OpenAPI schema: a type.
    let mut wrong_type = example("hello-task.yaml");
    wrong_type["spec"]["parallelism"] = json!("many");
    let err = dry_run_create(&cluster, &wrong_type).expect_err("parallelism: many is refused");
    assert!(
        err.contains("spec.parallelism") && err.contains("must be of type integer"),
        "{err}"
    );

    // A CEL rule (x-kubernetes-validations): a subtask that depends on itself.
    let mut cycle = example("manual-dag.yaml");
    cycle["spec"]["subtasks"][1]["dependsOn"] = json!(["features"]);
    let err = dry_run_create(&cluster, &cycle).expect_err("a self-dependency is refused");
    assert!(
        err.contains("spec.subtasks[1].dependsOn") && err.contains("cannot depend on itself"),
        "{err}"
    );

    // Strict field validation: a misspelt field.
    let mut misspelt = example("agentpool.yaml");
    misspelt["spec"]["replicaz"] = json!({"min": 1});
    let err = dry_run_create(&cluster, &misspelt).expect_err("an unknown field is refused");
    assert!(err.contains("unknown field \"spec.replicaz\""), "{err}");
}
