//! A kube-runtime Controller (the shape the MAOS operator uses) against the cluster: it
//! reconciles creates, updates and deletes (through a finalizer), and keeps working after its
//! watches are ended with 410 Gone and it has to relist.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt as _, ResourceExt as _};
use maos_e2e::cluster::TestCluster;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);
const NAMESPACE: &str = "e2e-controller";
const FINALIZER: &str = "e2e.maos.dev/cleanup";

/// A test-only kind whose controller copies spec.size into status.observedSize.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "e2e.maos.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    size: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct WidgetStatus {
    observed_size: i64,
}

struct Context {
    client: kube::Client,
    cleaned_up: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::runtime::finalizer::Error<kube::Error>);

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let action = finalizer(&api, FINALIZER, widget, |event| async {
        match event {
            Event::Apply(widget) => {
                let status = json!({"status": {"observedSize": widget.spec.size}});
                api.patch_status(
                    &widget.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await?;
                Ok::<_, kube::Error>(Action::await_change())
            }
            Event::Cleanup(widget) => {
                ctx.cleaned_up
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(widget.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await?;
    Ok(action)
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn observed_size(api: &Api<Widget>, name: &str) -> Option<i64> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|w| w.status)
        .map(|s| s.observed_size)
}

async fn eventually_observed(api: &Api<Widget>, name: &str, size: i64) {
    let deadline = Instant::now() + DEADLINE;
    while observed_size(api, name).await != Some(size) {
        assert!(
            Instant::now() < deadline,
            "{name} never reconciled to size {size}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn widget(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size })
}

async fn resize(api: &Api<Widget>, name: &str, size: i64) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"size": size}})),
    )
    .await
    .expect("spec update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_create_update_delete_and_survives_410_gone() {
    let cluster = TestCluster::start().expect("cluster starts");
    let client = cluster.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("CRD is created");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("namespace"),
        )
        .await
        .expect("namespace is created");

    let ctx = Arc::new(Context {
        client: client.clone(),
        cleaned_up: Mutex::new(Vec::new()),
    });
    let widgets: Api<Widget> = Api::namespaced(client.clone(), NAMESPACE);
    let controller = tokio::spawn(
        Controller::new(widgets.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );

    widgets
        .create(&PostParams::default(), &widget("a", 1))
        .await
        .expect("create a");
    eventually_observed(&widgets, "a", 1).await;
    let a = widgets.get("a").await.expect("get a");
    assert!(
        a.finalizers().iter().any(|f| f == FINALIZER),
        "the controller added its finalizer"
    );

    resize(&widgets, "a", 2).await;
    eventually_observed(&widgets, "a", 2).await;

    if let Some(testbed) = cluster.testbed() {
        testbed.expire_watches();
    }
    resize(&widgets, "a", 3).await;
    eventually_observed(&widgets, "a", 3).await;
    widgets
        .create(&PostParams::default(), &widget("b", 7))
        .await
        .expect("create b");
    eventually_observed(&widgets, "b", 7).await;

    widgets
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let deadline = Instant::now() + DEADLINE;
    while widgets.get_opt("a").await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "a was never finalized and deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *ctx.cleaned_up.lock().unwrap_or_else(|p| p.into_inner()),
        vec!["a".to_string()]
    );

    controller.abort();
}
