//! The pieces of an AgentPool working together without the controller yet: the operator's pod
//! template (`maos_operator::pod::agent_pod`), applied to the testbed, runs `maos-agent` on the
//! kubelet with the API key and the pool's Redis ACL credentials from Secrets, and that agent
//! works a queued subtask as the pool's restricted Redis user.

mod coord_common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord_common::eventually;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use maos_core::api::v1alpha1::{AgentPool, SubtaskSpec};
use maos_core::coord::acl::Acl;
use maos_core::coord::plan::Goal;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::{Pool, PoolUid, Redis, RedisConfig, TaskUid, Topology};
use maos_core::dag::SubtaskName;
use maos_e2e::apiserver::{Testbed, TestbedConfig};
use maos_e2e::claude_standin::{ClaudeStandIn, StandInConfig};
use maos_e2e::kubelet::{ImageMap, ImageTarget, Kubelet, KubeletConfig, KubeletLogs};
use maos_e2e::launch::redis::RedisServer;
use maos_operator::pod::{
    AgentEnvironment, CREDENTIALS_PASSWORD_KEY, agent_pod, credentials_secret_name, secret_hash,
};

const KEY: &str = "sk-ant-agent-pod-RECOGNISABLE";

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Secret::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_agent_pod_runs_an_agent_that_works_as_the_pools_redis_user() {
    let root = std::env::temp_dir().join(format!("maos-agent-pod-{}", std::process::id()));
    let testbed = Testbed::start(TestbedConfig {
        logs: Arc::new(KubeletLogs::new(&root)),
        ..TestbedConfig::default()
    })
    .expect("testbed");
    let client = testbed.client().await.expect("client");
    let agent_binary = maos_e2e::binaries::agent().expect("maos-agent is built");
    let kubelet = Kubelet::start(
        client.clone(),
        KubeletConfig {
            images: ImageMap::default().with(
                "ghcr.io/maos/agent-runner:*",
                ImageTarget::Binary(agent_binary),
            ),
            ..KubeletConfig::new(&root)
        },
    )
    .expect("kubelet");
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("thread")
        .expect("redis-server");
    let standin = ClaudeStandIn::start(StandInConfig::new(KEY)).expect("stand-in");

    // The pool, as the API server stores it (with its uid).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in maos_core::api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    let pools: Api<AgentPool> = Api::default_namespaced(client.clone());
    let pool_object: AgentPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "maos.dev/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": "research"},
        "spec": {"apiKeySecretRef": {"name": "anthropic"}}
    }))
    .expect("pool");
    let pool_object = eventually(
        "the AgentPool kind to be served",
        Duration::from_secs(30),
        || async {
            pools
                .create(&PostParams::default(), &pool_object)
                .await
                .ok()
        },
    )
    .await;
    let uid = pool_object.metadata.uid.clone().expect("uid");

    // What the AgentPool controller will do: a Redis user for the pool, its Secret, the key.
    let operator_redis = Redis::connect(RedisConfig::new(Topology::Standalone, [server.url()]))
        .await
        .expect("redis");
    let pool = Pool::new(operator_redis.clone(), &PoolUid::new(&uid).expect("uid"));
    let password = Acl::generate_password();
    Acl::new(operator_redis.clone())
        .create_pool_user(pool.keys(), &password)
        .await
        .expect("ACL user");
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let anthropic = secret("anthropic", "api-key", KEY);
    secrets
        .create(&PostParams::default(), &anthropic)
        .await
        .expect("key secret");
    secrets
        .create(
            &PostParams::default(),
            &secret(
                &credentials_secret_name("research"),
                CREDENTIALS_PASSWORD_KEY,
                password.expose(),
            ),
        )
        .await
        .expect("credentials secret");

    // What the Task controller will do: register a task with its goal and plan, queue a subtask.
    let task = pool.task(&TaskUid::new("task-agent-pod").expect("uid"));
    task.register(None).await.expect("register");
    task.plan()
        .set_goal(&Goal {
            prompt: "Compare vector databases.".into(),
            max_subtasks: 4,
            tools: Vec::new(),
            thinking_budget_tokens: None,
        })
        .await
        .expect("goal");
    task.plan()
        .set_subtasks(&[SubtaskSpec {
            name: "bench".into(),
            prompt: "Benchmark Qdrant.".into(),
            depends_on: vec![],
            voters: None,
        }])
        .await
        .expect("plan");
    pool.queue().ensure_group().await.expect("group");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let subtask = SubtaskName::new("bench").expect("name");
    pool.queue()
        .enqueue(&WorkItem {
            task: task.keys().task().clone(),
            subtask: subtask.clone(),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: now + 120_000,
        })
        .await
        .expect("enqueue");

    let environment = AgentEnvironment {
        redis_ca_pem: None,
        redis_urls: vec![server.url()],
        redis_cluster: false,
        anthropic_base_url: Some(standin.base_url()),
        // Every testbed pod shares 127.0.0.1: let each agent pick a free port.
        http_addr: "127.0.0.1:0".into(),
        prices: maos_core::price::default_price_table().to_line(),
    };
    let hash = secret_hash(anthropic.data.as_ref().expect("data"));
    let pod = agent_pod(&pool_object, "research-x7k2p", &hash, &environment).expect("pod template");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod accepted by the API server");

    let result = eventually("the agent's result", Duration::from_secs(30), || async {
        task.results().get(&subtask).await.ok().flatten()
    })
    .await;
    assert_eq!(result.agent, "research-x7k2p");
    assert_eq!(
        result.result,
        "Stand-in answer to: Compare vector databases."
    );
    let logs = KubeletLogs::new(&root);
    let log = maos_e2e::apiserver::PodLogSource::logs(&logs, "default", "research-x7k2p", None)
        .unwrap_or_default();
    assert!(log.contains("agent ready"), "{log}");
    assert!(
        !log.contains(KEY) && !log.contains(password.expose()),
        "a secret leaked into the agent's log"
    );

    pods.delete("research-x7k2p", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the pod to go", Duration::from_secs(30), || async {
        pods.get_opt("research-x7k2p")
            .await
            .ok()
            .filter(Option::is_none)
            .map(|_| ())
    })
    .await;
    drop(kubelet);
    drop(testbed);
    let _ = std::fs::remove_dir_all(root);
}
