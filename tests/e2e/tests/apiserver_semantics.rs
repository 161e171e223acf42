//! Object-model semantics through the real kube-rs client: optimistic concurrency, finalizers,
//! owner-reference garbage collection, selectors and error Statuses.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Status;
use maos_e2e::cluster::TestCluster;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

async fn setup(namespace: &str) -> (TestCluster, kube::Client) {
    let cluster = TestCluster::start().expect("cluster starts");
    let client = cluster.client().await.expect("client from kubeconfig");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}}))
                .expect("namespace object"),
        )
        .await
        .expect("namespace is created");
    (cluster, client)
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

async fn eventually_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + DEADLINE;
    while api.get_opt(name).await.expect("get succeeds").is_some() {
        assert!(Instant::now() < deadline, "{name} was never deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_a_409_conflict() {
    let (_cluster, client) = setup("e2e-conflict").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "e2e-conflict");
    let created = api
        .create(&PostParams::default(), &configmap("c"))
        .await
        .expect("create");
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "first".to_string())].into());
    api.replace("c", &PostParams::default(), &first)
        .await
        .expect("first update wins");

    let mut stale = created;
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    let status = api_error(api.replace("c", &PostParams::default(), &stale).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        api.get("c").await.expect("get").data.expect("data")["k"],
        "first"
    );
}

#[tokio::test]
async fn finalizer_blocks_deletion_until_it_is_removed() {
    let (_cluster, client) = setup("e2e-finalizer").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "e2e-finalizer");
    let mut cm = configmap("f");
    cm.metadata.finalizers = Some(vec!["e2e.maos.dev/hold".to_string()]);
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    api.delete("f", &DeleteParams::default())
        .await
        .expect("delete is accepted");
    let held = api.get("f").await.expect("the object is still there");
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp is set"
    );

    let release = json!({"metadata": {"finalizers": null}});
    api.patch("f", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("finalizer removal");
    eventually_gone(&api, "f").await;
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_owned_configmap_and_pod() {
    let (_cluster, client) = setup("e2e-gc").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "e2e-gc");
    let pods: Api<Pod> = Api::namespaced(client, "e2e-gc");
    let owner = configmaps
        .create(&PostParams::default(), &configmap("owner"))
        .await
        .expect("owner");
    let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]);
    let mut owned = configmap("owned");
    owned.metadata.owner_references =
        Some(serde_json::from_value(owner_ref.clone()).expect("ownerReferences"));
    configmaps
        .create(&PostParams::default(), &owned)
        .await
        .expect("owned configmap");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "owned-pod", "ownerReferences": owner_ref},
        "spec": {"containers": [{"name": "main", "image": "local/exec"}]}
    }))
    .expect("pod object");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("owned pod");
    configmaps
        .create(&PostParams::default(), &configmap("bystander"))
        .await
        .expect("bystander");

    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("owner deleted");
    eventually_gone(&configmaps, "owned").await;
    eventually_gone(&pods, "owned-pod").await;
    assert!(
        configmaps
            .get_opt("bystander")
            .await
            .expect("get")
            .is_some(),
        "unrelated objects stay"
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_cluster, client) = setup("e2e-select").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "e2e-select");
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "cache")] {
        let mut cm = configmap(name);
        cm.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let names = |list: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier in (web,db)"))
                .await
                .expect("list")
        ),
        vec!["a", "b"]
    );
    assert_eq!(
        names(
            // `tier` too: every namespace also holds kube-root-ca.crt, which has no tier.
            api.list(&ListParams::default().labels("tier,tier!=web"))
                .await
                .expect("list")
        ),
        vec!["b", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .expect("list")
        ),
        vec!["c"]
    );
    let paged = api
        .list(&ListParams::default().labels("tier").limit(2))
        .await
        .expect("first page");
    assert_eq!(paged.items.len(), 2);
    let token = paged.metadata.continue_.clone().expect("a continue token");
    let rest = api
        .list(
            &ListParams::default()
                .labels("tier")
                .limit(2)
                .continue_token(&token),
        )
        .await
        .expect("second page");
    assert_eq!(names(rest), vec!["c"]);
}

#[tokio::test]
async fn errors_are_statuses_with_kubernetes_reasons() {
    let (_cluster, client) = setup("e2e-errors").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "e2e-errors");
    let missing = api_error(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    api.create(&PostParams::default(), &configmap("dup"))
        .await
        .expect("create");
    let duplicate = api_error(api.create(&PostParams::default(), &configmap("dup")).await);
    assert_eq!(
        (duplicate.code, duplicate.reason.as_str()),
        (409, "AlreadyExists")
    );

    let bad_name = api_error(
        api.create(&PostParams::default(), &configmap("Not_A_Name"))
            .await,
    );
    assert_eq!((bad_name.code, bad_name.reason.as_str()), (422, "Invalid"));

    let request = http::Request::post("/api/v1/namespaces/e2e-errors/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .expect("request");
    let malformed = client.request_text(request).await;
    let status = api_error(malformed);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn hostile_requests_get_statuses_and_the_server_keeps_serving() {
    let (cluster, client) = setup("e2e-hostile").await;
    let requests: Vec<(http::Method, &str, &str, &[u8], u16)> = vec![
        (
            http::Method::GET,
            "/apis/nope.example/v1/things",
            "",
            b"",
            404,
        ),
        (http::Method::DELETE, "/version", "", b"", 405),
        (
            http::Method::GET,
            "/api/v1/namespaces/e2e-hostile/configmaps/a/b/c/d",
            "",
            b"",
            404,
        ),
        (
            http::Method::GET,
            "/api/v1/namespaces/e2e-hostile/configmaps?labelSelector=app%20in%20web",
            "",
            b"",
            400,
        ),
        (
            http::Method::GET,
            "/api/v1/namespaces/e2e-hostile/configmaps?continue=garbage",
            "",
            b"",
            400,
        ),
        (
            http::Method::GET,
            "/api/v1/namespaces/e2e-hostile/configmaps?watch=true&resourceVersion=abc",
            "",
            b"",
            400,
        ),
        (
            http::Method::POST,
            "/api/v1/namespaces/e2e-hostile/configmaps",
            "application/yaml",
            b"a: [unclosed",
            400,
        ),
        (
            http::Method::POST,
            "/api/v1/namespaces/e2e-hostile/configmaps",
            "application/json",
            b"[1,2,3]",
            400,
        ),
        (
            http::Method::POST,
            "/api/v1/namespaces/e2e-hostile/configmaps",
            "application/vnd.kubernetes.protobuf",
            b"k8s\0\x0a\xff\xff",
            400,
        ),
        (
            http::Method::PATCH,
            "/api/v1/namespaces/e2e-hostile/configmaps/x",
            "text/plain",
            b"{}",
            415,
        ),
    ];
    for (method, uri, content_type, body, code) in requests {
        let mut request = http::Request::builder().method(method.clone()).uri(uri);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let result = client
            .request_text(request.body(body.to_vec()).expect("request"))
            .await;
        let status = api_error(result);
        assert_eq!(status.code, code, "{method} {uri}: {}", status.message);
    }
    if let Some(testbed) = cluster.testbed() {
        // Plain HTTP and garbage on the TLS port only cost that connection.
        use std::io::{Read as _, Write as _};
        for garbage in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0][..],
        ] {
            let mut socket = std::net::TcpStream::connect(testbed.addr()).expect("connect");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            socket.write_all(garbage).expect("write");
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink);
        }
    }
    let api: Api<ConfigMap> = Api::namespaced(client, "e2e-hostile");
    api.create(&PostParams::default(), &configmap("still-serving"))
        .await
        .expect("the server still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_are_visible_as_core_events_with_their_series() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::Resource as _;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let (cluster, client) = setup("e2e-events").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "e2e-events");
    let subject = configmaps
        .create(&PostParams::default(), &configmap("subject"))
        .await
        .expect("subject");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "maos-e2e".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = subject.object_ref(&());
    recorder
        .publish(&event, &reference)
        .await
        .expect("first publish creates");
    recorder
        .publish(&event, &reference)
        .await
        .expect("second publish patches the series");

    let core: Api<CoreEvent> = Api::namespaced(client, "e2e-events");
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=subject"))
        .await
        .expect("core/v1 list");
    assert_eq!(found.items.len(), 1, "{found:?}");
    let seen = &found.items[0];
    assert_eq!(seen.message.as_deref(), Some("all good"));
    assert_eq!(seen.reason.as_deref(), Some("Reconciled"));
    assert_eq!(seen.series.as_ref().and_then(|s| s.count), Some(2));

    let printed = cluster
        .run_kubectl(&["get", "events", "-n", "e2e-events"], None)
        .expect("kubectl get events");
    assert!(
        printed.contains("Reconciled") && printed.contains("configmap/subject"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_the_objects_then_init_done_then_changes() {
    use futures::StreamExt as _;
    use kube::runtime::watcher::{self, Event};

    let (_cluster, client) = setup("e2e-streaming").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "e2e-streaming");
    api.create(&PostParams::default(), &configmap("before"))
        .await
        .expect("create");
    let mut events =
        watcher::watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            // Every namespace also holds kube-root-ca.crt, as on a real cluster.
            Ok(Some(Ok(Event::InitApply(cm)))) => {
                initial.extend(cm.metadata.name.filter(|n| n != "kube-root-ca.crt"))
            }
            Ok(Some(Ok(Event::InitDone))) => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("the initial events never ended: {other:?}"),
        }
    }
    assert_eq!(initial, vec!["before".to_string()]);

    api.create(&PostParams::default(), &configmap("after"))
        .await
        .expect("create");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Ok(Event::Apply(cm)))) if cm.metadata.name.as_deref() == Some("after") => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("the new object never arrived: {other:?}"),
        }
    }
}

#[tokio::test]
async fn watches_that_allow_bookmarks_get_them_with_the_current_version() {
    use futures::StreamExt as _;
    use kube::api::{WatchEvent, WatchParams};
    use maos_e2e::apiserver::TestbedConfig;

    let config = TestbedConfig {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let cluster = TestCluster::start_with(config).expect("cluster starts");
    if cluster.testbed().is_none() {
        return; // a real server sends bookmarks about once a minute
    }
    let client = cluster.client().await.expect("client");
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &configmap("marked"))
        .await
        .expect("create");
    let created_rv: u64 = created
        .metadata
        .resource_version
        .expect("rv")
        .parse()
        .expect("numeric rv");
    let mut stream = api
        .watch(
            &WatchParams::default(), // allowWatchBookmarks is on by default
            &created_rv.to_string(),
        )
        .await
        .expect("watch")
        .boxed();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(WatchEvent::Bookmark(bookmark)))) => {
                let rv: u64 = bookmark
                    .metadata
                    .resource_version
                    .parse()
                    .expect("numeric rv");
                assert!(rv >= created_rv, "bookmark {rv} is behind {created_rv}");
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no bookmark arrived: {other:?}"),
        }
    }
}
