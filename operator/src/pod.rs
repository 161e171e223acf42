//! The agent pod of an AgentPool, built as a pure function of the pool and the operator's
//! settings: what the AgentPool controller creates, and what tests check without a cluster.
//!
//! Agents run locked down (non-root, read-only root filesystem, no privilege escalation, every
//! capability dropped, seccomp RuntimeDefault, no service-account token); the API key reaches
//! them only through a `secretKeyRef`, and a hash of the Secret's data in an annotation rolls the
//! agents when the key is rotated.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource as _;
use maos_core::api::v1alpha1::AgentPool;
use maos_core::coord::{PoolKeys, PoolUid};
use maos_core::mcp;
use maos_core::meta::{
    ANNOTATION_TEMPLATE_HASH, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY,
};

/// The agent container's name.
pub const AGENT_CONTAINER: &str = "agent";
/// Port of the agent's `/healthz` and `/metrics`.
pub const AGENT_HTTP_PORT: i32 = 8080;
/// Key of the pool's Redis password in its credentials Secret.
pub const CREDENTIALS_PASSWORD_KEY: &str = "password";
/// Key of the pool's Redis user name in its credentials Secret.
pub const CREDENTIALS_USERNAME_KEY: &str = "username";
/// The unprivileged user agents run as (the distroless `nonroot` user).
const AGENT_UID: i64 = 65_532;

/// The name of the Secret holding a pool's Redis credentials (owned by the pool).
pub fn credentials_secret_name(pool: &str) -> String {
    format!("{pool}-redis")
}

/// A stable hash of a Secret's data, for the annotation that rolls agents on a key rotation.
pub fn secret_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (key, value) in data {
        // Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
        context.update(&(key.len() as u64).to_be_bytes());
        context.update(key.as_bytes());
        context.update(&(value.0.len() as u64).to_be_bytes());
        context.update(&value.0);
    }
    crate::checkpoint::store::hex(context.finish().as_ref())
}

/// The hash in each agent pod's [`ANNOTATION_TEMPLATE_HASH`]: the API-key Secret's data hash
/// and the pod spec the pool's agents get (as a Deployment's pod-template-hash), so a rotated
/// key or any change that reaches the pods (model, image, resources, limits, the operator's
/// agent settings) rolls them; scaling fields (replicas, idleSeconds) do not.
pub fn template_hash(
    secret_hash: &str,
    pool: &AgentPool,
    env: &AgentEnvironment,
) -> Result<String, PodError> {
    let template = agent_pod(pool, "template", "", env)?;
    // Serializing a Pod spec cannot fail (string keys, no non-finite floats).
    let spec = serde_json::to_vec(&template.spec).unwrap_or_default();
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(secret_hash.as_bytes());
    context.update(&spec);
    Ok(crate::checkpoint::store::hex(context.finish().as_ref()))
}

/// Where and how agents reach shared services, from the operator's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEnvironment {
    /// Redis URLs (any nodes of a cluster).
    pub redis_urls: Vec<String>,
    /// Whether they are a Redis Cluster.
    pub redis_cluster: bool,
    /// `ANTHROPIC_BASE_URL` for the agents, if not the public API (e.g. a stand-in).
    pub anthropic_base_url: Option<String>,
    /// `MAOS_HTTP_ADDR` for the agents (on a real cluster `0.0.0.0:8080`).
    pub http_addr: String,
    /// The PEM CA bundle agents verify `rediss://` servers with, as `MAOS_REDIS_CA_PEM`
    /// (certificates are public, and an agent pod in another namespace could mount no Secret
    /// of the operator's).
    pub redis_ca_pem: Option<String>,
    /// `MAOS_PRICES` for the agents: the operator's price table
    /// ([`maos_core::price::PriceTable::to_line`]), so they reserve a call's cost at the prices
    /// status charges.
    pub prices: String,
}

/// Why a pod cannot be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The pool has no uid, name or namespace yet (it was not read from the API server).
    #[error("the AgentPool has no {0}; it must be read from the API server first")]
    MissingMetadata(&'static str),
    /// The pool's uid cannot be used in Redis keys.
    #[error("the AgentPool's uid cannot name Redis keys: {0}")]
    BadUid(String),
}

/// The agent pod `name` of `pool`.
pub fn agent_pod(
    pool: &AgentPool,
    name: &str,
    template_hash: &str,
    env: &AgentEnvironment,
) -> Result<Pod, PodError> {
    let pool_name = pool
        .metadata
        .name
        .clone()
        .ok_or(PodError::MissingMetadata("name"))?;
    let namespace = pool
        .metadata
        .namespace
        .clone()
        .ok_or(PodError::MissingMetadata("namespace"))?;
    let uid = pool
        .metadata
        .uid
        .clone()
        .ok_or(PodError::MissingMetadata("uid"))?;
    let keys = PoolKeys::new(&PoolUid::new(&uid).map_err(|e| PodError::BadUid(e.to_string()))?);
    let spec = &pool.spec;

    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let from_secret = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    };
    let mut environment = vec![
        EnvVar {
            name: "MAOS_AGENT_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        value("MAOS_POOL_UID", uid.clone()),
        value("MAOS_REDIS_URLS", env.redis_urls.join(",")),
        value("MAOS_REDIS_CLUSTER", env.redis_cluster.to_string()),
        value("MAOS_REDIS_USERNAME", keys.acl_user()),
        from_secret(
            "MAOS_REDIS_PASSWORD",
            &credentials_secret_name(&pool_name),
            CREDENTIALS_PASSWORD_KEY,
        ),
        value("MAOS_MODEL", spec.model.clone()),
        value("MAOS_MAX_TURNS", spec.max_turns.to_string()),
        value("MAOS_HEARTBEAT_SECONDS", spec.heartbeat_seconds.to_string()),
        value(
            "MAOS_REQUESTS_PER_MINUTE",
            spec.rate_limits.requests_per_minute.to_string(),
        ),
        value(
            "MAOS_INPUT_TOKENS_PER_MINUTE",
            spec.rate_limits.input_tokens_per_minute.to_string(),
        ),
        value(
            "MAOS_OUTPUT_TOKENS_PER_MINUTE",
            spec.rate_limits.output_tokens_per_minute.to_string(),
        ),
        value("MAOS_HTTP_ADDR", env.http_addr.clone()),
        value("MAOS_PRICES", env.prices.clone()),
        value("MAOS_LOG_JSON", "true".into()),
        from_secret(
            "ANTHROPIC_API_KEY",
            &spec.api_key_secret_ref.name,
            &spec.api_key_secret_ref.key,
        ),
    ];
    if let Some(thinking) = &spec.thinking {
        environment.push(value(
            "MAOS_THINKING_BUDGET_TOKENS",
            thinking.budget_tokens.to_string(),
        ));
    }
    if let Some(base) = &env.anthropic_base_url {
        environment.push(value("ANTHROPIC_BASE_URL", base.clone()));
    }
    if let Some(ca) = &env.redis_ca_pem {
        environment.push(value("MAOS_REDIS_CA_PEM", ca.clone()));
    }
    if let Some(tools) = spec.tools.as_ref().filter(|t| !t.mcp_servers.is_empty()) {
        // Serializing plain strings and numbers cannot fail.
        let servers = serde_json::to_string(&mcp::server_configs(tools)).unwrap_or_default();
        environment.push(value(mcp::MCP_SERVERS_ENV, servers));
        for (i, server) in tools.mcp_servers.iter().enumerate() {
            for (j, header) in server.headers.iter().enumerate() {
                let secret = &header.value_from.secret_key_ref;
                environment.push(from_secret(
                    &mcp::header_env(i, j),
                    &secret.name,
                    &secret.key,
                ));
            }
        }
    }

    let labels: BTreeMap<String, String> = [
        (LABEL_POOL.to_owned(), pool_name.clone()),
        (LABEL_COMPONENT.to_owned(), "agent".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]
    .into();
    let probe = |initial: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(AGENT_HTTP_PORT),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let resources = spec.resources.as_ref().map(|r| ResourceRequirements {
        limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
        requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
        claims: None,
    });

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(
                [(
                    ANNOTATION_TEMPLATE_HASH.to_owned(),
                    template_hash.to_owned(),
                )]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: AgentPool::api_version(&()).into_owned(),
                kind: AgentPool::kind(&()).into_owned(),
                name: pool_name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            // Above the agent's own 25 s shutdown grace: it finishes its turn and releases work.
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(AGENT_UID),
                run_as_group: Some(AGENT_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: AGENT_CONTAINER.into(),
                image: Some(spec.image.clone()),
                env: Some(environment),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: AGENT_HTTP_PORT,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                resources,
                readiness_probe: Some(probe(1)),
                liveness_probe: Some(probe(10)),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> AgentPool {
        let mut pool: AgentPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "maos.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": "research", "namespace": "team-a", "uid": "6f1c2a7e-0000-4000-8000-000000000001"},
            "spec": {"apiKeySecretRef": {"name": "anthropic"}, "resources": {"limits": {"memory": "512Mi"}}}
        }))
        .expect("valid pool");
        pool.spec.model = "claude-sonnet-4-5".into();
        pool
    }

    fn environment() -> AgentEnvironment {
        AgentEnvironment {
            redis_ca_pem: None,
            redis_urls: vec!["redis://a:6379".into(), "redis://b:6379".into()],
            redis_cluster: true,
            anthropic_base_url: None,
            http_addr: "0.0.0.0:8080".into(),
            prices: maos_core::price::default_price_table().to_line(),
        }
    }

    fn env_of(pod: &Pod) -> Vec<EnvVar> {
        pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .expect("env")
    }

    fn find<'a>(env: &'a [EnvVar], name: &str) -> &'a EnvVar {
        env.iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} is set"))
    }

    #[test]
    fn the_pod_is_owned_by_its_pool_and_labelled() {
        let pod = agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod");
        let owner = &pod.metadata.owner_references.as_ref().expect("owners")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("AgentPool", "research", Some(true))
        );
        assert_eq!(
            pod.metadata.labels.as_ref().expect("labels")[LABEL_POOL],
            "research"
        );
        assert_eq!(
            pod.metadata.annotations.as_ref().expect("annotations")[ANNOTATION_TEMPLATE_HASH],
            "abc"
        );
        assert_eq!(pod.metadata.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn the_pools_thinking_budget_reaches_its_agents_only_when_set() {
        let pod = agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod");
        assert!(
            !env_of(&pod)
                .iter()
                .any(|e| e.name == "MAOS_THINKING_BUDGET_TOKENS"),
            "no thinking unless the pool asks"
        );
        let mut thinking = pool();
        thinking.spec.thinking = Some(maos_core::api::v1alpha1::ThinkingConfig {
            budget_tokens: 2048,
        });
        let pod = agent_pod(&thinking, "research-x7k2p", "abc", &environment()).expect("pod");
        assert_eq!(
            find(&env_of(&pod), "MAOS_THINKING_BUDGET_TOKENS")
                .value
                .as_deref(),
            Some("2048")
        );
    }

    #[test]
    fn the_pod_runs_locked_down() {
        let pod = agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_security = spec.security_context.expect("pod security");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".into())
        );
        let container = spec.containers[0]
            .security_context
            .clone()
            .expect("container security");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(
            container.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn secrets_reach_the_agent_only_through_secret_key_refs() {
        let pod = agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod");
        let env = env_of(&pod);
        let key = find(&env, "ANTHROPIC_API_KEY");
        assert_eq!(key.value, None);
        let selector = key
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("anthropic", "api-key")
        );
        let password = find(&env, "MAOS_REDIS_PASSWORD");
        let selector = password
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("research-redis", CREDENTIALS_PASSWORD_KEY)
        );
        assert_eq!(
            find(&env, "MAOS_REDIS_USERNAME").value.as_deref(),
            Some("maos-pool-6f1c2a7e-0000-4000-8000-000000000001")
        );
    }

    #[test]
    fn mcp_servers_reach_the_agent_with_header_values_only_from_secrets() {
        let mut with_tools = pool();
        with_tools.spec.tools = Some(
            serde_json::from_value(serde_json::json!({"mcpServers": [{
                "name": "search", "url": "http://search:8080/mcp", "timeoutSeconds": 5,
                "headers": [{"name": "Authorization",
                             "valueFrom": {"secretKeyRef": {"name": "search-token", "key": "token"}}}]
            }]}))
            .expect("tools"),
        );
        let env =
            env_of(&agent_pod(&with_tools, "research-x7k2p", "abc", &environment()).expect("pod"));
        let servers: Vec<mcp::ServerConfig> = serde_json::from_str(
            find(&env, mcp::MCP_SERVERS_ENV)
                .value
                .as_deref()
                .expect("json"),
        )
        .expect("servers");
        assert_eq!(
            (servers[0].name.as_str(), servers[0].timeout_seconds),
            ("search", 5)
        );
        let header = find(&env, &servers[0].headers[0].env);
        assert_eq!(header.value, None);
        let selector = header
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("search-token", "token")
        );
        // A pool without servers gives its agents none, and a new server rolls the agents.
        let plain =
            env_of(&agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod"));
        assert!(!plain.iter().any(|e| e.name.starts_with("MAOS_MCP_")));
        assert_ne!(
            template_hash("s", &pool(), &environment()).expect("hash"),
            template_hash("s", &with_tools, &environment()).expect("hash")
        );
    }

    #[test]
    fn the_agent_is_configured_from_the_pool() {
        let env =
            env_of(&agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod"));
        assert_eq!(
            find(&env, "MAOS_REDIS_URLS").value.as_deref(),
            Some("redis://a:6379,redis://b:6379")
        );
        assert_eq!(
            find(&env, "MAOS_REDIS_CLUSTER").value.as_deref(),
            Some("true")
        );
        assert_eq!(find(&env, "MAOS_MAX_TURNS").value.as_deref(), Some("40"));
        assert_eq!(
            find(&env, "MAOS_OUTPUT_TOKENS_PER_MINUTE").value.as_deref(),
            Some("8000")
        );
        assert!(
            env.iter().all(|e| e.name != "ANTHROPIC_BASE_URL"),
            "the public API by default"
        );
        let agent_name = find(&env, "MAOS_AGENT_NAME")
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .expect("fieldRef");
        assert_eq!(agent_name.field_path, "metadata.name");
    }

    #[test]
    fn agents_get_the_operators_price_table_and_a_new_table_rolls_them() {
        let env =
            env_of(&agent_pod(&pool(), "research-x7k2p", "abc", &environment()).expect("pod"));
        let line = find(&env, "MAOS_PRICES").value.clone().expect("a value");
        assert_eq!(
            maos_core::price::parse_price_table(&line, "MAOS_PRICES").expect("parses"),
            maos_core::price::default_price_table()
        );
        let mut dearer = environment();
        let mut table = maos_core::price::default_price_table();
        table.0[0].output *= 2.0;
        dearer.prices = table.to_line();
        assert_ne!(
            template_hash("s", &pool(), &environment()).expect("hash"),
            template_hash("s", &pool(), &dearer).expect("hash"),
            "agents priced with an old table would reserve too little"
        );
    }

    #[test]
    fn a_pool_not_read_from_the_api_server_is_refused() {
        let mut pool = pool();
        pool.metadata.uid = None;
        assert_eq!(
            agent_pod(&pool, "p", "h", &environment()),
            Err(PodError::MissingMetadata("uid"))
        );
    }

    #[test]
    fn the_template_hash_rolls_agents_on_what_reaches_the_pods_and_only_that() {
        let hash =
            |pool: &AgentPool, key: &str| template_hash(key, pool, &environment()).expect("hash");
        let base = pool();
        assert_eq!(hash(&base, "k1"), hash(&base, "k1"));
        assert_ne!(hash(&base, "k1"), hash(&base, "k2"), "a rotated key");
        let mut model = pool();
        model.spec.model = "claude-opus-4-1".into();
        assert_ne!(hash(&base, "k1"), hash(&model, "k1"), "another model");
        let mut image = pool();
        image.spec.image = "ghcr.io/maos/agent-runner:0.2.0".into();
        assert_ne!(hash(&base, "k1"), hash(&image, "k1"), "another image");
        let mut scaled = pool();
        scaled.spec.replicas.max = 7;
        scaled.spec.idle_seconds = 9;
        assert_eq!(
            hash(&base, "k1"),
            hash(&scaled, "k1"),
            "scaling rolls nothing"
        );
    }

    #[test]
    fn the_secret_hash_changes_with_any_byte_and_only_then() {
        let data =
            |v: &str| BTreeMap::from([("api-key".to_owned(), ByteString(v.as_bytes().to_vec()))]);
        assert_eq!(secret_hash(&data("one")), secret_hash(&data("one")));
        assert_ne!(secret_hash(&data("one")), secret_hash(&data("onf")));
        assert_eq!(secret_hash(&data("one")).len(), 64);
        let split =
            |a: &str, b: &str| BTreeMap::from([(a.to_owned(), ByteString(b.as_bytes().to_vec()))]);
        assert_ne!(
            secret_hash(&split("ab", "c")),
            secret_hash(&split("a", "bc"))
        );
    }
}
