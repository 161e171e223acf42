//! The AgentPool controller: the pool's Redis ACL user and its credentials Secret, the agent
//! pods (created from [`crate::pod::agent_pod`], scaled by [`crate::autoscale::decide`]), the
//! health of the agents (a dead agent's work is reclaimed and its pod replaced), and the pool's
//! status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use maos_core::api::v1alpha1::conditions::{condition, pool as cond, reason, set_condition};
use maos_core::api::v1alpha1::limits::MAX_STATUS_AGENTS;
use maos_core::api::v1alpha1::{AgentPhase, AgentPool, AgentPoolStatus, AgentStatus};
use maos_core::coord::acl::Acl;
use maos_core::coord::failure::FailReason;
use maos_core::coord::model_errors::ModelErrorReport;
use maos_core::coord::tool_errors::ServerDown;
use maos_core::coord::{AgentName, Pool, PoolUid, Secret as Password};
use maos_core::meta::{
    ANNOTATION_TEMPLATE_HASH, FIELD_MANAGER, FINALIZER_POOL, LABEL_MANAGED_BY, LABEL_POOL,
    MANAGED_BY,
};

use super::cached_read::CachedRead;
use super::expectations::{Cached, Expectations};
use super::{Context, Error, from_finalizer, now};
use crate::autoscale::{self, AgentView};
use crate::pod::{
    CREDENTIALS_PASSWORD_KEY, CREDENTIALS_USERNAME_KEY, agent_pod, credentials_secret_name,
    secret_hash, template_hash,
};

/// How often the pool's ACL user is re-applied (it is lost if Redis restarts without
/// persistence).
const ACL_REFRESH: Duration = Duration::from_secs(60);
/// How often a pool's status is written when only heartbeat times changed: as the kubelet's
/// node status report, rarely, since a change of an agent's phase is written at once.
const HEARTBEAT_STATUS_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a pool is looked at again while its pod cache has not caught up.
const CACHE_WAIT: Duration = Duration::from_secs(1);
/// Characters of generated pod-name suffixes (as Kubernetes' generateName: no vowels).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Container waiting reasons that mean an agent cannot start.
const STUCK_REASONS: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
];

/// What the controller keeps about one pool between reconciles.
#[derive(Default)]
pub(crate) struct PoolMemory {
    /// Since when each idle agent has been idle.
    idle_since: HashMap<String, Timestamp>,
    /// Container restarts seen per agent pod, to report each new one once.
    restarts: HashMap<String, i32>,
    /// When the ACL user was last applied.
    acl_applied: Option<Instant>,
    /// The status last written and when.
    written: Option<(AgentPoolStatus, Instant)>,
    /// Agents the autoscaler removed: one whose heartbeat outlives its pod is not lost.
    scaled_down: HashSet<String>,
    /// The agent pods that were live at the end of the last pass.
    live: HashSet<String>,
    /// Pod creations and deletions the pod cache does not show yet.
    expect: Expectations,
    /// The hash of the API-key Secret's data, as last read while it held a usable key.
    api_key: Option<CachedRead<String>>,
    /// The pool's Redis password, as last read from or written to its credentials Secret.
    password: Option<CachedRead<Password>>,
}

/// Reconciles one AgentPool.
pub async fn reconcile(pool: Arc<AgentPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = super::reconcile_span("pool", pool.as_ref());
    tracing::Instrument::instrument(reconcile_in_span(pool, ctx), span).await
}

async fn reconcile_in_span(pool: Arc<AgentPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<AgentPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = pool.uid();
    let result = finalizer(&api, FINALIZER_POOL, pool, |event| async {
        match event {
            Finalize::Apply(pool) => apply(&pool, &ctx, &api).await,
            Finalize::Cleanup(pool) => cleanup(&pool, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer);
    ctx.metrics
        .observe_reconcile("pool", started.elapsed().as_secs_f64());
    super::note_outcome(&ctx, uid.as_deref(), &result);
    result
}

async fn apply(
    pool: &AgentPool,
    ctx: &Arc<Context>,
    api: &Api<AgentPool>,
) -> Result<Action, Error> {
    let uid = pool.uid().ok_or(Error::MissingMetadata("uid"))?;
    let mut memory = ctx
        .pools
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&uid))
        .unwrap_or_default();
    let result = step(pool, ctx, api, &mut memory).await;
    if let Ok(mut pools) = ctx.pools.lock() {
        pools.insert(uid, memory);
    }
    result
}

async fn step(
    pool: &AgentPool,
    ctx: &Arc<Context>,
    api: &Api<AgentPool>,
    memory: &mut PoolMemory,
) -> Result<Action, Error> {
    let now = now();
    let generation = pool.metadata.generation;
    let uid = pool.uid().ok_or(Error::MissingMetadata("uid"))?;
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    let coord = Pool::new(ctx.redis.clone(), &PoolUid::new(&uid)?);
    let queue = coord.queue();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = pool.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let set =
        |status: &mut AgentPoolStatus, type_: &str, value: &str, why: &str, message: String| {
            set_condition(
                &mut status.conditions,
                condition(type_, value, why, message, generation, Time(now)),
            );
        };

    // The pool's Redis user and the Secret agents read its password from.
    ensure_credentials(pool, ctx, &coord, &secrets, memory).await?;
    queue.ensure_group().await?;

    // The API key: without it no agent can work, so none is started.
    let key_hash = match api_key_hash(pool, &secrets, memory).await? {
        Ok(hash) => hash,
        Err((why, message)) => {
            set(&mut status, cond::READY, "False", why, message.clone());
            set(&mut status, cond::DEGRADED, "True", why, message);
            set(
                &mut status,
                cond::SCALING,
                "False",
                why,
                "no agents start without the API key".into(),
            );
            write_status(pool, api, memory, status, true).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let hash = template_hash(&key_hash, pool, &ctx.settings.agents)?;

    // The agents as Kubernetes and Redis see them: the pods from the cache, corrected by the
    // writes it does not show yet.
    if ctx.pod_cache.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let owned: Vec<Arc<Pod>> = ctx
        .pod_cache
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && p.labels().get(LABEL_POOL) == Some(&name)
                && p.owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    let monotonic = Instant::now();
    memory.expect.observe(
        owned.iter().map(|p| Cached {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            deleting: p.metadata.deletion_timestamp.is_some(),
        }),
        monotonic,
    );
    let snapshot = queue.agents().await?;
    let heartbeats: HashMap<&str, (Option<u64>, u64)> = snapshot
        .agents
        .iter()
        .map(|a| (a.name.as_str(), (a.last_heartbeat_ms, a.pending)))
        .collect();
    // A pod created but not yet seen exists: its agent may already beat.
    let pod_names: HashSet<String> = owned
        .iter()
        .map(|p| p.name_any())
        .chain(memory.expect.pending_creates().map(str::to_owned))
        .collect();
    let threshold_ms = u64::from(pool.spec.heartbeat_seconds) * 3 * 1000;
    let mut degraded: Vec<String> = Vec::new();
    let mut replaced: HashSet<String> = HashSet::new();

    // Dead agents: missed three heartbeats, or their pod is gone. Their work goes back to the
    // queue (attempt+1) and their pods are replaced.
    for agent in &snapshot.agents {
        let Some(last) = agent.last_heartbeat_ms else {
            continue;
        };
        let silent = snapshot.now_ms.saturating_sub(last) > threshold_ms;
        let gone = !pod_names.contains(&agent.name);
        if !silent && !gone {
            continue;
        }
        let Ok(agent_name) = AgentName::new(&agent.name) else {
            continue;
        };
        // Also drops the agent from the heartbeats, in the same script.
        let reclaimed = queue.reclaim(&agent_name).await?;
        let why = if gone { "PodGone" } else { "MissedHeartbeats" };
        if pod_names.contains(&agent.name) {
            delete_pod(&pods, &agent.name, Some(0)).await?;
            memory.expect.deleted(&agent.name, monotonic);
        }
        replaced.insert(agent.name.clone());
        memory.idle_since.remove(&agent.name);
        ctx.metrics.agent_recovered();
        let note = format!(
            "agent {} {}; {} work item(s) requeued with the next attempt",
            agent.name,
            if gone {
                "lost its pod"
            } else {
                "missed 3 heartbeats"
            },
            reclaimed.len()
        );
        tracing::info!(pool = %name, agent = %agent.name, reason = why, items = reclaimed.len(), "agent replaced");
        ctx.event(pool, EventType::Warning, "AgentReplaced", why, note.clone())
            .await;
        degraded.push(note);
    }

    // Reports of agents that are gone (dead, or a pool rolled onto a new key) say nothing.
    let is_live = |agent: &String| {
        pod_names.contains(agent)
            && heartbeats.contains_key(agent.as_str())
            && !replaced.contains(agent)
    };
    let model_errors = coord.model_errors();
    let (reports, gone) = split_live(model_errors.all().await?, is_live);
    model_errors.clear(&as_strs(&gone)).await?;
    let has_servers = pool
        .spec
        .tools
        .as_ref()
        .is_some_and(|t| !t.mcp_servers.is_empty());
    let tools_down = if has_servers {
        let tool_errors = coord.tool_errors();
        let (down, gone) = split_live(tool_errors.all().await?, is_live);
        tool_errors.clear(&as_strs(&gone)).await?;
        Some(down)
    } else {
        None
    };

    // Pods: finished or stuck ones are replaced; pods of an old API key roll once idle.
    let mut live: Vec<&Pod> = Vec::new();
    // Agents lost this pass (dead, or their pod ended): each gets a new pod, as the Events say.
    let mut lost = replaced
        .iter()
        .filter(|agent| !memory.scaled_down.contains(*agent))
        .count();
    // And an agent whose pod vanished without the operator deleting it (force-deleted, evicted)
    // after it had time to clean up after itself: its heartbeat is gone too, so the dead-agent
    // pass above does not see it, yet the pool lost an agent.
    lost += memory
        .live
        .iter()
        .filter(|agent| {
            !pod_names.contains(*agent)
                && !replaced.contains(*agent)
                && !memory.scaled_down.contains(*agent)
                && !memory.expect.is_deleted(agent)
        })
        .count();
    for pod in &owned {
        let pod_name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some()
            || replaced.contains(&pod_name)
            || memory.expect.is_deleted(&pod_name)
        {
            continue;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let busy = heartbeats
            .get(pod_name.as_str())
            .is_some_and(|(_, p)| *p > 0);
        if matches!(phase, "Failed" | "Succeeded") {
            delete_pod(&pods, &pod_name, None).await?;
            memory.expect.deleted(&pod_name, monotonic);
            lost += 1;
            let note = format!("agent pod {pod_name} ended ({phase}); starting another");
            ctx.event(
                pool,
                EventType::Warning,
                "AgentReplaced",
                "PodFailed",
                note.clone(),
            )
            .await;
            ctx.metrics.agent_recovered();
            degraded.push(note);
            continue;
        }
        let stale = pod
            .annotations()
            .get(ANNOTATION_TEMPLATE_HASH)
            .is_none_or(|h| *h != hash);
        if stale && !busy {
            delete_pod(&pods, &pod_name, None).await?;
            memory.expect.deleted(&pod_name, monotonic);
            ctx.event(
                pool,
                EventType::Normal,
                "AgentRolled",
                "RollAgents",
                format!(
                    "agent pod {pod_name} runs an old API key or pool spec (model, image, resources, limits); replacing it"
                ),
            )
            .await;
            continue;
        }
        if let Some((count, how)) = restart_of(pod)
            && memory
                .restarts
                .insert(pod_name.clone(), count)
                .is_some_and(|seen| seen < count)
        {
            // The kubelet restarted the agent in place (same name): it resumes the items it
            // held from their journals, so nothing is reclaimed; say so.
            let note = format!(
                "agent {pod_name} restarted ({how}); it resumes the work it held from the journal"
            );
            ctx.event(
                pool,
                EventType::Warning,
                "AgentRestarted",
                "Recover",
                note.clone(),
            )
            .await;
            ctx.metrics.agent_recovered();
            degraded.push(note);
        }
        if let Some(reason) = stuck_reason(pod) {
            // Perhaps a Secret it reads was deleted or changed: read them again.
            if reason == "CreateContainerConfigError" {
                memory.api_key = None;
                memory.password = None;
            }
            degraded.push(format!("agent pod {pod_name} cannot start: {reason}"));
        }
        live.push(pod.as_ref());
    }

    // Scale: work that waits gets agents at once; agents idle too long above min go.
    let stats = queue.stats().await?;
    let views: Vec<AgentView> = live
        .iter()
        .map(|pod| {
            let pod_name = pod.name_any();
            let busy = heartbeats
                .get(pod_name.as_str())
                .is_some_and(|(_, p)| *p > 0);
            let idle_since = if busy {
                memory.idle_since.remove(&pod_name);
                None
            } else {
                Some(*memory.idle_since.entry(pod_name.clone()).or_insert(now))
            };
            AgentView {
                name: pod_name,
                busy,
                idle_since,
            }
        })
        .collect();
    let decision = autoscale::decide(
        &pool.spec.replicas,
        pool.spec.idle_seconds,
        &views,
        stats.waiting,
        now,
    );
    for removed in &decision.remove {
        delete_pod(&pods, removed, None).await?;
        memory.expect.deleted(removed, monotonic);
        memory.idle_since.remove(removed);
        memory.scaled_down.insert(removed.clone());
    }
    // Pods created earlier that the cache does not show yet count as there: created again,
    // they would be too many.
    let remaining = (live.len() + memory.expect.pending_creates().count())
        .saturating_sub(decision.remove.len());
    // A lost agent is replaced even when no work waits: the pool keeps its size until the
    // autoscaler, not a crash, decides it is too big.
    let wanted = if decision.remove.is_empty() {
        (decision.target as usize).max((remaining + lost).min(pool.spec.replicas.max as usize))
    } else {
        decision.target as usize
    };
    let mut created = 0;
    let mut failed_create: Option<String> = None;
    for _ in remaining..wanted {
        let pod_name = format!("{name}-{}", suffix());
        let pod = agent_pod(pool, &pod_name, &hash, &ctx.settings.agents)?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                created += 1;
                memory.expect.created(&pod_name, monotonic);
            }
            // As a ReplicaSet does: the API's refusal (a quota, RBAC, admission) goes into an
            // Event and the Degraded condition, and the next pass tries again.
            Err(kube::Error::Api(refusal)) => {
                let message = format!("Error creating: {}", refusal.message);
                tracing::warn!(pool = %name, code = refusal.code, reason = %refusal.reason, "{message}");
                ctx.event(
                    pool,
                    EventType::Warning,
                    reason::FAILED_CREATE,
                    "CreatePod",
                    message.clone(),
                )
                .await;
                failed_create = Some(message);
                break;
            }
            Err(err) => return Err(err.into()),
        }
    }
    if created > 0 || !decision.remove.is_empty() {
        tracing::info!(pool = %name, created, removed = decision.remove.len(), target = wanted, "scaled the pool");
    }
    memory
        .idle_since
        .retain(|agent, _| live.iter().any(|p| p.name_any() == *agent));
    memory.live = live.iter().map(|p| p.name_any()).collect();
    memory.restarts.retain(|agent, _| pod_names.contains(agent));
    // Forgotten once neither its pod nor its heartbeat is left.
    memory
        .scaled_down
        .retain(|agent| pod_names.contains(agent) || heartbeats.contains_key(agent.as_str()));

    // Status.
    let agents: Vec<AgentStatus> = live
        .iter()
        .filter(|p| !decision.remove.contains(&p.name_any()))
        .take(MAX_STATUS_AGENTS as usize)
        .map(|pod| {
            let pod_name = pod.name_any();
            let (last, pending) = heartbeats
                .get(pod_name.as_str())
                .copied()
                .unwrap_or((None, 0));
            let phase = match last {
                None => AgentPhase::Starting,
                Some(ms) if snapshot.now_ms.saturating_sub(ms) > threshold_ms => AgentPhase::Dead,
                Some(_) if pending > 0 => AgentPhase::Busy,
                Some(_) => AgentPhase::Idle,
            };
            AgentStatus {
                name: pod_name,
                phase,
                subtask: None,
                last_heartbeat: last
                    .and_then(|ms| i64::try_from(ms).ok())
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                    .map(Time),
            }
        })
        .collect();
    let count = |phase: AgentPhase| agents.iter().filter(|a| a.phase == phase).count() as u32;
    let (idle, busy, starting, dead) = (
        count(AgentPhase::Idle),
        count(AgentPhase::Busy),
        count(AgentPhase::Starting),
        count(AgentPhase::Dead),
    );
    status.replicas = (remaining + created) as u32;
    status.ready_agents = idle + busy;
    status.busy_agents = busy;
    status.queue_depth = stats.waiting;
    status.agents = agents;
    for (state, n) in [
        ("idle", idle),
        ("busy", busy),
        ("starting", starting + created as u32),
        ("dead", dead),
    ] {
        ctx.metrics
            .set_agents(&namespace, &name, state, i64::from(n));
    }
    ctx.metrics
        .set_queue_depth(&namespace, &name, stats.waiting as i64);

    let min = pool.spec.replicas.min;
    let ready = status.ready_agents;
    let refusal = model_refusal(&reports);
    if refusal.is_some() {
        // Someone is likely fixing the key right now: look at it again on every beat.
        memory.api_key = None;
    }
    if let Some((why, message)) = &refusal {
        set(&mut status, cond::READY, "False", why, message.clone());
    } else if ready >= min {
        set(
            &mut status,
            cond::READY,
            "True",
            "AgentsReady",
            format!("{ready} agent(s) ready, {busy} busy"),
        );
    } else {
        set(
            &mut status,
            cond::READY,
            "False",
            "AgentsStarting",
            format!("{ready} of at least {min} agent(s) ready"),
        );
    }
    let scaling = created > 0 || !decision.remove.is_empty() || starting > 0;
    set(
        &mut status,
        cond::SCALING,
        if scaling { "True" } else { "False" },
        if scaling { "ScalingTo" } else { "Stable" },
        format!("target {} agent(s)", decision.target),
    );
    match (refusal, failed_create, degraded.first()) {
        (Some((why, message)), _, _) => set(&mut status, cond::DEGRADED, "True", why, message),
        (None, Some(message), _) => set(
            &mut status,
            cond::DEGRADED,
            "True",
            reason::FAILED_CREATE,
            message,
        ),
        (None, None, Some(first)) => set(
            &mut status,
            cond::DEGRADED,
            "True",
            if replaced.is_empty() {
                "AgentsNotStarting"
            } else {
                "AgentReplaced"
            },
            first.clone(),
        ),
        (None, None, None) => set(
            &mut status,
            cond::DEGRADED,
            "False",
            "AgentsHealthy",
            String::new(),
        ),
    }
    match tools_down.as_deref().map(tools_degraded) {
        Some(Some(message)) => set(
            &mut status,
            cond::TOOLS_DEGRADED,
            "True",
            "ServersUnavailable",
            message,
        ),
        Some(None) => set(
            &mut status,
            cond::TOOLS_DEGRADED,
            "False",
            "ServersReachable",
            String::new(),
        ),
        None => status
            .conditions
            .retain(|c| c.type_ != cond::TOOLS_DEGRADED),
    }
    write_status(pool, api, memory, status, false).await?;
    let beat = Duration::from_secs(u64::from(pool.spec.heartbeat_seconds.max(1)));
    Ok(Action::requeue(beat))
}

/// Why no agent can work with a pool's API key: a condition reason and a message.
type KeyProblem = (&'static str, String);

/// The hash of the API-key Secret's data (it is in the pods' template hash, so a new key rolls
/// the agents), read again only when the cached read is stale; a [`KeyProblem`] when the
/// Secret holds no usable key (then it is read again on every pass until it does).
async fn api_key_hash(
    pool: &AgentPool,
    secrets: &Api<Secret>,
    memory: &mut PoolMemory,
) -> Result<Result<String, KeyProblem>, Error> {
    let generation = pool.metadata.generation;
    if let Some(hash) = memory
        .api_key
        .as_ref()
        .and_then(|read| read.fresh(Instant::now(), generation))
    {
        return Ok(Ok(hash.clone()));
    }
    let key_ref = &pool.spec.api_key_secret_ref;
    let namespace = pool.namespace().unwrap_or_default();
    let secret = secrets.get_opt(&key_ref.name).await?;
    let problem = match &secret {
        None => Some((
            reason::SECRET_NOT_FOUND,
            format!("Secret {} not found in namespace {namespace}", key_ref.name),
        )),
        Some(secret) if !has_key(secret, &key_ref.key) => Some((
            "SecretKeyNotFound",
            format!("Secret {} has no key {}", key_ref.name, key_ref.key),
        )),
        // Every call would be refused: say so before any agent makes one.
        Some(secret) if is_placeholder(secret, &key_ref.key) => Some((
            reason::API_KEY_PLACEHOLDER,
            format!(
                "key {} of Secret {} is the example placeholder {PLACEHOLDER_API_KEY}; put a Claude API key in it",
                key_ref.key, key_ref.name
            ),
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        memory.api_key = None;
        return Ok(Err(problem));
    }
    let hash = secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .map(secret_hash)
        .unwrap_or_default();
    memory.api_key = Some(CachedRead::new(hash.clone(), Instant::now(), generation));
    Ok(Ok(hash))
}

/// The pool's Redis user and its credentials Secret; the user is re-applied now and then so a
/// Redis that lost it (a restart without persistence) gets it back.
async fn ensure_credentials(
    pool: &AgentPool,
    ctx: &Context,
    coord: &Pool,
    secrets: &Api<Secret>,
    memory: &mut PoolMemory,
) -> Result<(), Error> {
    let acl = Acl::new(ctx.redis.clone());
    let generation = pool.metadata.generation;
    let refresh_acl = |memory: &PoolMemory| {
        memory
            .acl_applied
            .is_none_or(|at| at.elapsed() >= ACL_REFRESH)
    };
    if let Some(password) = memory
        .password
        .as_ref()
        .and_then(|read| read.fresh(Instant::now(), generation))
    {
        if refresh_acl(memory) {
            acl.create_pool_user(coord.keys(), password).await?;
            memory.acl_applied = Some(Instant::now());
        }
        return Ok(());
    }
    let secret_name = credentials_secret_name(&pool.name_any());
    let existing = secrets.get_opt(&secret_name).await?;
    let password = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(CREDENTIALS_PASSWORD_KEY))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .map(Password::new);
    match password {
        Some(password) => {
            if refresh_acl(memory) {
                acl.create_pool_user(coord.keys(), &password).await?;
                memory.acl_applied = Some(Instant::now());
            }
            memory.password = Some(CachedRead::new(password, Instant::now(), generation));
        }
        None => {
            let password = Acl::generate_password();
            // The user first: an agent that reads the Secret can then always log in.
            let credentials = acl.create_pool_user(coord.keys(), &password).await?;
            memory.acl_applied = Some(Instant::now());
            let secret = credentials_secret(pool, &secret_name, &credentials.username, &password)?;
            match existing {
                // The Secret exists but lost its password: rewrite it.
                Some(_) => {
                    secrets
                        .patch(
                            &secret_name,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&secret),
                        )
                        .await?;
                    memory.password = Some(CachedRead::new(password, Instant::now(), generation));
                }
                None => match secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        memory.password =
                            Some(CachedRead::new(password, Instant::now(), generation));
                    }
                    // Another reconcile created it first: use theirs next time.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        memory.acl_applied = None;
                    }
                    Err(err) => return Err(err.into()),
                },
            }
        }
    }
    Ok(())
}

fn credentials_secret(
    pool: &AgentPool,
    name: &str,
    username: &str,
    password: &Password,
) -> Result<Secret, Error> {
    let uid = pool.uid().ok_or(Error::MissingMetadata("uid"))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: pool.namespace(),
            labels: Some(
                [
                    (LABEL_POOL.to_owned(), pool.name_any()),
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: AgentPool::api_version(&()).into_owned(),
                kind: AgentPool::kind(&()).into_owned(),
                name: pool.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                CREDENTIALS_USERNAME_KEY.to_owned(),
                ByteString(username.as_bytes().to_vec()),
            ),
            (
                CREDENTIALS_PASSWORD_KEY.to_owned(),
                ByteString(password.expose().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    })
}

/// The API key of the example Secret (examples/secrets/), which the Claude API always refuses.
const PLACEHOLDER_API_KEY: &str = "sk-ant-REPLACE-ME";

/// Whether `key` of `secret` is the example's placeholder rather than an API key.
fn is_placeholder(secret: &Secret, key: &str) -> bool {
    key_value(secret, key).is_some_and(|v| v.trim_ascii() == PLACEHOLDER_API_KEY.as_bytes())
}

/// The value of `key` in `secret`, from `data` or (not yet merged by an API server) `stringData`.
fn key_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.as_bytes())
        })
}

/// What the pool's status says about the agents' reports of a refused key or model: the
/// reason and a message naming the agents, or nothing when no live agent reports one.
fn model_refusal(reports: &[(String, ModelErrorReport)]) -> Option<(&'static str, String)> {
    let (agent, first) = reports.first()?;
    let others = reports.len() - 1;
    let fix = match first.reason {
        FailReason::ModelNotFound => "check spec.model",
        _ => "check the API key in spec.apiKeySecretRef",
    };
    let also = if others > 0 {
        format!(" (and {others} more agent(s))")
    } else {
        String::new()
    };
    Some((
        first.reason.as_str(),
        format!(
            "agent {agent}{also}: {}; every Task on this pool fails until it is fixed: {fix}",
            first.message
        ),
    ))
}

/// Agents' reports split into those of live agents and the names of the agents that are gone.
fn split_live<T>(
    reports: Vec<(String, T)>,
    is_live: impl Fn(&String) -> bool,
) -> (Vec<(String, T)>, Vec<String>) {
    let (live, gone): (Vec<_>, Vec<_>) = reports.into_iter().partition(|(agent, _)| is_live(agent));
    (live, gone.into_iter().map(|(agent, _)| agent).collect())
}

fn as_strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// What `ToolsDegraded` says about live agents' reports of MCP servers they cannot use: each
/// server, how many agents report it and the first one's reason; nothing when none does.
fn tools_degraded(reports: &[(String, Vec<ServerDown>)]) -> Option<String> {
    let mut servers: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for (_, down) in reports {
        for server in down {
            let entry = servers.entry(&server.server).or_insert((0, &server.why));
            entry.0 += 1;
        }
    }
    if servers.is_empty() {
        return None;
    }
    let parts: Vec<String> = servers
        .iter()
        .map(|(server, (agents, why))| {
            format!("MCP server {server} unavailable to {agents} agent(s): {why}")
        })
        .collect();
    let message = format!(
        "{}; its tools are not offered until it is reachable",
        parts.join("; ")
    );
    Some(crate::status::truncate(&message, 900))
}

fn has_key(secret: &Secret, key: &str) -> bool {
    key_value(secret, key).is_some()
}

/// The agent container's restart count and how it last ended, once it restarted.
fn restart_of(pod: &Pod) -> Option<(i32, String)> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let how = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map_or_else(
            || "no exit status".to_owned(),
            |t| match &t.reason {
                Some(reason) => format!("{reason}, exit code {}", t.exit_code),
                None => format!("exit code {}", t.exit_code),
            },
        );
    Some((status.restart_count, how))
}

fn stuck_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|r| STUCK_REASONS.contains(&r.as_str()))
}

async fn delete_pod(pods: &Api<Pod>, name: &str, grace: Option<u32>) -> Result<(), Error> {
    let params = DeleteParams {
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

fn suffix() -> String {
    (0..5)
        .map(|_| NAME_ALPHABET[fastrand::usize(..NAME_ALPHABET.len())] as char)
        .collect()
}

/// Writes the status when it changed in more than heartbeat times, or now and then.
async fn write_status(
    pool: &AgentPool,
    api: &Api<AgentPool>,
    memory: &mut PoolMemory,
    status: AgentPoolStatus,
    force: bool,
) -> Result<(), Error> {
    let without_beats = |s: &AgentPoolStatus| {
        let mut s = s.clone();
        for agent in &mut s.agents {
            agent.last_heartbeat = None;
        }
        s
    };
    if let Some((written, at)) = &memory.written {
        let same = *written == status;
        let only_beats = without_beats(written) == without_beats(&status);
        if same || (!force && only_beats && at.elapsed() < HEARTBEAT_STATUS_INTERVAL) {
            return Ok(());
        }
    }
    let patch = serde_json::json!({
        "apiVersion": AgentPool::api_version(&()),
        "kind": AgentPool::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    memory.written = Some((status, Instant::now()));
    Ok(())
}

/// Deletion: the pool's Redis user and keys go; its pods and Secret go with it (owned). While
/// Redis does not answer the pool waits, up to the cleanup timeout: then it is let go and what
/// it left is written down for the orphan sweep.
async fn cleanup(pool: &AgentPool, ctx: &Context) -> Result<Action, Error> {
    let uid = pool.uid().ok_or(Error::MissingMetadata("uid"))?;
    if let Ok(mut pools) = ctx.pools.lock() {
        pools.remove(&uid);
    }
    ctx.metrics
        .forget_pool(&pool.namespace().unwrap_or_default(), &pool.name_any());
    let orphan = super::orphans::Orphan::Pool {
        namespace: pool.namespace().unwrap_or_default(),
        name: pool.name_any(),
        pool_uid: uid.clone(),
        since: now(),
    };
    let work = async {
        super::orphans::remove_pool_keys(&ctx.redis, &uid).await?;
        tracing::info!(pool = %pool.name_any(), "removed the pool's Redis user and keys");
        Ok(Action::await_change())
    };
    super::orphans::clean_or_let_go(ctx, pool, orphan, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_degraded_names_each_server_once_with_how_many_agents_miss_it() {
        let down = |server: &str, why: &str| ServerDown {
            server: server.into(),
            why: why.into(),
        };
        assert_eq!(tools_degraded(&[]), None);
        assert_eq!(tools_degraded(&[("a".into(), vec![])]), None);
        let message = tools_degraded(&[
            ("a".into(), vec![down("search", "connection refused")]),
            (
                "b".into(),
                vec![down("search", "timed out"), down("wiki", "401")],
            ),
        ])
        .expect("degraded");
        assert!(
            message.starts_with(
                "MCP server search unavailable to 2 agent(s): connection refused; MCP server wiki unavailable to 1 agent(s): 401"
            ),
            "{message}"
        );
        let long =
            tools_degraded(&[("a".into(), vec![down("s", &"x".repeat(5_000))])]).expect("degraded");
        assert!(long.chars().count() <= 901, "bounded: {}", long.len());
    }

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            string_data: Some(
                string_data
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_example_placeholder_is_not_an_api_key() {
        assert!(is_placeholder(
            &secret(&[("api-key", "sk-ant-REPLACE-ME\n")], &[]),
            "api-key"
        ));
        assert!(is_placeholder(
            &secret(&[], &[("api-key", "sk-ant-REPLACE-ME")]),
            "api-key"
        ));
        assert!(!is_placeholder(
            &secret(&[("api-key", "sk-ant-api03-real")], &[]),
            "api-key"
        ));
        assert!(!is_placeholder(
            &secret(&[("other", "sk-ant-REPLACE-ME")], &[]),
            "api-key"
        ));
    }

    #[test]
    fn a_refused_key_or_model_names_the_agent_the_answer_and_the_fix() {
        assert_eq!(model_refusal(&[]), None);
        let report = |reason, message: &str| ModelErrorReport {
            reason,
            message: message.into(),
            at_ms: 1,
        };
        let (why, message) = model_refusal(&[
            (
                "pool-a".into(),
                report(
                    FailReason::ModelAuthFailed,
                    "401 authentication_error: invalid x-api-key",
                ),
            ),
            ("pool-b".into(), report(FailReason::ModelAuthFailed, "401")),
        ])
        .expect("a refusal");
        assert_eq!(why, "ModelAuthFailed");
        assert!(
            message.contains("agent pool-a (and 1 more agent(s))"),
            "{message}"
        );
        assert!(message.contains("invalid x-api-key"), "{message}");
        assert!(message.contains("apiKeySecretRef"), "{message}");
        let (why, message) = model_refusal(&[(
            "pool-a".into(),
            report(
                FailReason::ModelNotFound,
                "404 not_found_error: model: gpt-4",
            ),
        )])
        .expect("a refusal");
        assert_eq!(why, "ModelNotFound");
        assert!(message.contains("spec.model"), "{message}");
    }
}
