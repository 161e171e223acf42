//! Places where the testbed once answered differently from kube-apiserver, each pinned to
//! kube-apiserver's answer through the real kube-rs client (or a raw request where kube-rs
//! cannot send the malformed form): unconditional updates, strategic merge on custom
//! resources, what a DELETE returns, generation on deletion, pods created in one write with
//! their status, group-qualified 422s, apply, force and dryRun validation, and metadata-only
//! reads.

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use maos_core::api::v1alpha1::Task;
use maos_e2e::cluster::TestCluster;
use serde_json::{Value, json};

const NS: &str = "fidelity";

async fn setup() -> (TestCluster, kube::Client) {
    let cluster = TestCluster::start().expect("the testbed starts");
    cluster
        .install_crds()
        .expect("the CRDs are installed and Established");
    cluster
        .run_kubectl(&["create", "namespace", NS], None)
        .expect("namespace");
    let client = cluster.client().await.expect("a client");
    (cluster, client)
}

fn task(name: &str) -> Task {
    serde_json::from_value(json!({
        "apiVersion": "maos.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name},
        "spec": {"prompt": "Say hello.", "poolRef": {"name": "default"},
                 "subtasks": [{"name": "greet", "prompt": "Greet."}], "synthesize": false},
    }))
    .expect("a Task")
}

fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_resource_version_is_refused_where_kube_apiserver_refuses_it() {
    let (_cluster, client) = setup().await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    let mut created = tasks
        .create(&PostParams::default(), &task("t"))
        .await
        .expect("create");
    created.metadata.resource_version = None;
    let refused = status_of(tasks.replace("t", &PostParams::default(), &created).await);
    assert_eq!(refused.code, 422);
    assert_eq!(
        refused.message,
        "Task.maos.dev \"t\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    assert_eq!(
        refused.details.as_ref().map(|d| d.group.as_str()),
        Some("maos.dev")
    );
    created.metadata.resource_version = None;
    let refused = status_of(
        tasks
            .replace_status("t", &PostParams::default(), &created)
            .await,
    );
    assert_eq!(refused.code, 422, "{refused:?}");

    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let refused = status_of(leases.replace("l", &PostParams::default(), &lease).await);
    assert_eq!(
        refused.code, 422,
        "a Lease needs a resourceVersion too: {refused:?}"
    );

    let maps: Api<ConfigMap> = Api::namespaced(client, NS);
    maps.create(&PostParams::default(), &configmap("c"))
        .await
        .expect("create");
    maps.replace("c", &PostParams::default(), &configmap("c"))
        .await
        .expect("a ConfigMap may be updated unconditionally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_is_unsupported_on_custom_resources() {
    let (_cluster, client) = setup().await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    tasks
        .create(&PostParams::default(), &task("t"))
        .await
        .expect("create");
    let patch = json!({"metadata": {"labels": {"a": "b"}}});
    let refused = status_of(
        tasks
            .patch("t", &PatchParams::default(), &Patch::Strategic(&patch))
            .await,
    );
    assert_eq!(refused.code, 415, "{refused:?}");
    assert_eq!(refused.reason, "UnsupportedMediaType");
    tasks
        .patch("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch works");
    let maps: Api<ConfigMap> = Api::namespaced(client, NS);
    maps.create(&PostParams::default(), &configmap("c"))
        .await
        .expect("create");
    maps.patch("c", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("built-in kinds take strategic merge patches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_says_gone_with_a_status_or_started_with_the_object() {
    let (_cluster, client) = setup().await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let created = maps
        .create(&PostParams::default(), &configmap("c"))
        .await
        .expect("create");
    let deleted = maps
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    let status = deleted
        .right()
        .expect("an immediate delete answers with a Status");
    let details = status.details.expect("details");
    assert_eq!(details.name, "c");
    assert_eq!(details.kind, "configmaps");
    assert_eq!(Some(details.uid), created.metadata.uid);

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let deleted = pods
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete pod");
    assert!(deleted.is_left(), "pods answer with the deleted object");

    let tasks: Api<Task> = Api::namespaced(client, NS);
    let mut held = task("held");
    held.metadata.finalizers = Some(vec!["maos.dev/test".into()]);
    let created = tasks
        .create(&PostParams::default(), &held)
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let marked = tasks
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete")
        .left()
        .expect("a delete held by a finalizer answers with the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.generation,
        Some(2),
        "marking for deletion bumps the generation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_created_in_one_write_with_its_pending_status() {
    let (_cluster, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let rv = pods
        .list(&Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list version");
    let mut events = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})).expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let status = created
        .status
        .clone()
        .expect("the create's answer has a status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("Guaranteed"));
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event")
        .expect("the stream is open")
        .expect("a decodable event");
    let WatchEvent::Added(added) = first else {
        panic!("first event: {first:?}")
    };
    assert_eq!(
        added.metadata.resource_version, created.metadata.resource_version,
        "one write"
    );
    assert_eq!(
        added.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let dry: Pod = serde_json::from_value(
        json!({"metadata": {"name": "dry"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("pod");
    let dry_run = pods
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &dry,
        )
        .await
        .expect("dry run");
    assert_eq!(
        dry_run.status.and_then(|s| s.qos_class).as_deref(),
        Some("BestEffort")
    );
    assert!(pods.get_opt("dry").await.expect("get").is_none());
}

async fn raw(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Value,
) -> Result<Value, kube::Error> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(serde_json::to_vec(&body).expect("json"))
        .expect("a request");
    client.request::<Value>(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_kube_apiservers_422s_and_change_nothing() {
    let (_cluster, client) = setup().await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), NS);
    let mut bad = task("bad");
    bad.spec.parallelism = 0;
    let refused = status_of(tasks.create(&PostParams::default(), &bad).await);
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .starts_with("Task.maos.dev \"bad\" is invalid: "),
        "{}",
        refused.message
    );
    assert_eq!(
        refused.details.map(|d| d.group),
        Some("maos.dev".to_string())
    );

    let path = format!("/api/v1/namespaces/{NS}/configmaps/applied");
    let apply = raw(
        &client,
        http::Method::PATCH,
        &path,
        "application/apply-patch+yaml",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}}),
    )
    .await;
    let refused = status_of(apply);
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused
            .message
            .contains("fieldManager: Required value: is required for apply patch"),
        "{}",
        refused.message
    );

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    maps.create(&PostParams::default(), &configmap("kept"))
        .await
        .expect("create");
    let delete = raw(
        &client,
        http::Method::DELETE,
        &format!("/api/v1/namespaces/{NS}/configmaps/kept?dryRun=Yes"),
        "application/json",
        json!({}),
    )
    .await;
    let refused = status_of(delete);
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused.message.contains("Unsupported value"),
        "{}",
        refused.message
    );
    assert!(
        maps.get_opt("kept").await.expect("get").is_some(),
        "an invalid dryRun deletes nothing"
    );
    let forced_merge = raw(
        &client,
        http::Method::PATCH,
        &format!("/api/v1/namespaces/{NS}/configmaps/kept?force=true"),
        "application/merge-patch+json",
        json!({"data": {"k": "changed"}}),
    )
    .await;
    let refused = status_of(forced_merge);
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused
            .message
            .contains("force: Forbidden: may not be specified for non-apply patch"),
        "{}",
        refused.message
    );
    let kept = maps.get("kept").await.expect("get");
    assert_eq!(
        kept.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("v"),
        "a refused patch changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_reads_carry_no_data() {
    let (_cluster, client) = setup().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let metadata: Api<kube::core::PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), NS);
    let watcher = kube::runtime::watcher(metadata, kube::runtime::watcher::Config::default());
    let mut watcher = watcher.boxed();
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s", "labels": {"a": "b"}}, "stringData": {"key": "hush"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create");

    let request = http::Request::builder()
        .uri(format!("/api/v1/namespaces/{NS}/secrets"))
        .header(
            http::header::ACCEPT,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())
        .expect("a request");
    let list: Value = client.request(request).await.expect("a metadata list");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["labels"]["a"], "b");
    assert!(
        !list.to_string().contains("aHVzaA"),
        "no Secret data: {list}"
    );

    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watcher.next().await {
            if let Ok(
                kube::runtime::watcher::Event::InitApply(object)
                | kube::runtime::watcher::Event::Apply(object),
            ) = event
                && object.metadata.name.as_deref() == Some("s")
            {
                return object;
            }
        }
        panic!("the metadata watcher ended")
    })
    .await
    .expect("the metadata watcher sees the Secret");
    assert_eq!(
        seen.metadata
            .labels
            .and_then(|l| l.get("a").cloned())
            .as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_lists_the_crds_kinds_with_their_subresources() {
    let (_cluster, client) = setup().await;
    let request = http::Request::builder()
        .uri("/apis")
        .header(
            http::header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .body(Vec::new())
        .expect("a request");
    let document: Value = client.request(request).await.expect("aggregated discovery");
    assert_eq!(document["kind"], "APIGroupDiscoveryList");
    assert_eq!(document["apiVersion"], "apidiscovery.k8s.io/v2");
    let maos = document["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "maos.dev")
        .expect("the maos.dev group");
    let tasks = maos["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "tasks")
        .expect("tasks");
    assert_eq!(tasks["responseKind"]["kind"], "Task");
    assert_eq!(tasks["scope"], "Namespaced");
    assert_eq!(tasks["subresources"][0]["subresource"], "status");
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_is_deleted_after_its_custom_resources_and_a_later_watch_sees_it_go() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let (cluster, client) = setup().await;
    cluster
        .run_kubectl(&["apply", "-f", "-"], Some(WIDGETS))
        .expect("apply the CRD");
    cluster
        .run_kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/widgets.example.com",
            ],
            None,
        )
        .expect("established");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let widget = |name: &str, finalizers: Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "finalizers": finalizers}}))
        .expect("a widget")
    };
    widgets
        .create(
            &PostParams::default(),
            &widget("held", json!(["example.com/hold"])),
        )
        .await
        .expect("create held");
    widgets
        .create(&PostParams::default(), &widget("free", json!([])))
        .await
        .expect("create free");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let marked = crds
        .delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("delete the CRD")
        .left()
        .expect("a CRD delete answers with the marked CRD, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".to_string())
    );
    let terminating = marked
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Terminating")
        .expect("a Terminating condition");
    assert_eq!(terminating.status, "True");

    // A watch started after the DELETE still sees the CRD go, once its instances are gone.
    let version = crds
        .get("widgets.example.com")
        .await
        .expect("still there")
        .metadata
        .resource_version
        .expect("a version");
    let mut events = crds
        .watch(
            &WatchParams::default().fields("metadata.name=widgets.example.com"),
            &version,
        )
        .await
        .expect("watch")
        .boxed();

    let refused = status_of(
        widgets
            .create(&PostParams::default(), &widget("late", json!([])))
            .await,
    );
    assert_eq!(refused.code, 405);
    assert_eq!(
        refused.message,
        "create not allowed while custom resource definition is terminating"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let free = widgets.get_opt("free").await.expect("get");
        let held = widgets
            .get("held")
            .await
            .expect("held stays while its finalizer does");
        if free.is_none() && held.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cleanup never deleted the instances"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release the held widget");

    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Deleted(crd) = event.expect("a watch event") {
                return Some(crd);
            }
        }
        None
    })
    .await
    .expect("the CRD is deleted within 20 s")
    .expect("the watch sees DELETED");
    assert_eq!(gone.metadata.name.as_deref(), Some("widgets.example.com"));
    let listed = cluster
        .run_kubectl(
            &["api-resources", "--api-group=example.com", "-o", "name"],
            None,
        )
        .expect("api-resources");
    assert!(
        !listed.contains("widgets"),
        "discovery no longer serves the kind: {listed}"
    );
}
