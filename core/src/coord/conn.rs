//! Connecting to Redis, standalone or Cluster, behind one handle, and retrying transient failures.
//!
//! [`Conn`] is an enum over the two redis-rs connection types rather than a trait object: both
//! are cheap to clone and multiplexed, redis-rs's `Script`, `Cmd` and `Pipeline` take any
//! `aio::ConnectionLike`, so an enum implementing that trait gives every coordination call one
//! code path with static dispatch, and no generic parameter leaks into the public types.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::config::{RedisConfig, RetryPolicy, Topology, node_client};
use super::error::{CoordError, CoordResult, is_transient, is_transient_link};
use super::route::{ClusterConn, RouteStats, Router};

/// Reconnect attempts the standalone connection manager makes per failed request.
const CLIENT_RETRIES: usize = 1;
/// Retries the cluster client makes inside one request (redirections, slot-map refresh).
const CLUSTER_CLIENT_RETRIES: u32 = 3;

/// A multiplexed connection to a standalone Redis, or to a Redis Cluster (the cluster client's
/// connections plus, on a shared handle, one per master for single-slot requests: see
/// [`super::route`]).
#[derive(Clone)]
pub enum Conn {
    /// A standalone server, reconnecting on loss.
    Standalone(ConnectionManager),
    /// A Redis Cluster, following MOVED/ASK and topology changes.
    Cluster(ClusterConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A handle to Redis: one shared multiplexed connection plus the config to open more.
///
/// Cloning is cheap and shares the connection. On a cluster, the shared connection is the
/// cluster client's plus a direct one to each master (one more socket per master); a dedicated
/// handle has the cluster client's only. Blocking reads (a claim that waits for work)
/// would stall every other request on a multiplexed connection, so give them their own handle
/// from [`Redis::dedicated`].
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    config: Arc<RedisConfig>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects as `config` says; fails with a typed error if no node answers.
    pub async fn connect(config: RedisConfig) -> CoordResult<Self> {
        let config = Arc::new(config);
        let conn = open(&config, config.response_timeout, Routing::Direct).await?;
        Ok(Self { conn, config })
    }

    /// A handle with a connection of its own, for blocking reads of up to `max_block`.
    pub async fn dedicated(&self, max_block: Duration) -> CoordResult<Self> {
        // Blocking reads are few and long: they keep to the cluster client's own connections
        // rather than open one more per master for each dedicated handle.
        let conn = open(
            &self.config,
            self.config.response_timeout + max_block,
            Routing::ClusterClient,
        )
        .await?;
        Ok(Self {
            conn,
            config: Arc::clone(&self.config),
        })
    }

    /// Where and as whom this handle connects.
    pub(super) fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn topology(&self) -> Topology {
        self.config.topology
    }

    /// On a cluster, how many requests went straight to a slot's master and how many had to be
    /// sent again through the cluster client; `None` where the handle does not route itself
    /// (a standalone server, a [`Redis::dedicated`] handle).
    pub fn route_stats(&self) -> Option<RouteStats> {
        match &self.conn {
            Conn::Cluster(c) => c.stats(),
            Conn::Standalone(_) => None,
        }
    }

    /// The connection, for callers that need a raw command this layer does not wrap.
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs `attempt` on the connection, retrying transient failures with exponential backoff
    /// and jitter, and sorts the final error into a [`CoordError`].
    ///
    /// `attempt` may run more than once: a retried write whose first reply was lost may have
    /// been applied, so every caller's effect is either idempotent or at-least-once by design.
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> CoordResult<T>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = &self.conn;
        retry_transient(&self.config.retry, op, || attempt(conn.clone())).await
    }

    /// Sends `cmd` to every node: the server, or every master and replica of a cluster that is
    /// not marked failed (a cluster client only talks to masters, so routing alone would miss
    /// the replicas). Returns how many nodes ran it.
    pub(crate) async fn on_every_node(&self, op: &'static str, cmd: &Cmd) -> CoordResult<usize> {
        if self.config.topology == Topology::Standalone {
            self.run(
                op,
                |mut c| async move { cmd.query_async::<Value>(&mut c).await },
            )
            .await?;
            return Ok(1);
        }
        let urls = self.node_urls(op, false).await?;
        for url in &urls {
            // A fresh connection per try: a failed one is not reused.
            retry_transient(&self.config.retry, op, || async move {
                let mut con = self.node_connection(url).await?;
                cmd.query_async::<Value>(&mut con).await
            })
            .await?;
        }
        Ok(urls.len())
    }

    /// On every master (the server, on a standalone Redis), sends `probe`, hands its reply to
    /// `decide`, and sends `fix` where `decide` says so; returns, per master, what `decide`
    /// returned. Writes such as `FUNCTION LOAD` go to masters only: a replica refuses
    /// them and gets them by replication.
    pub(crate) async fn on_every_master<T>(
        &self,
        op: &'static str,
        probe: &Cmd,
        decide: impl Fn(&RedisResult<Value>) -> (T, bool),
        fix: &Cmd,
    ) -> CoordResult<Vec<T>> {
        // The probe's own error is an answer (`decide` reads it); only a transient one is
        // retried, and only one that outlasts the retries fails the whole call.
        async fn probe_and_fix<T>(
            policy: &RetryPolicy,
            op: &'static str,
            con: &(impl ConnectionLike + Clone),
            probe: &Cmd,
            decide: &impl Fn(&RedisResult<Value>) -> (T, bool),
            fix: &Cmd,
        ) -> CoordResult<T> {
            let found = retry_transient(policy, op, || {
                let mut con = con.clone();
                async move {
                    match probe.query_async::<Value>(&mut con).await {
                        Err(e) if is_transient_link(&e) => Err(e),
                        other => Ok(other),
                    }
                }
            })
            .await?;
            let (decided, needs_fix) = decide(&found);
            if needs_fix {
                retry_transient(policy, op, || {
                    let mut con = con.clone();
                    async move { fix.query_async::<Value>(&mut con).await }
                })
                .await?;
            }
            Ok(decided)
        }
        if self.config.topology == Topology::Standalone {
            let one =
                probe_and_fix(&self.config.retry, op, &self.conn, probe, &decide, fix).await?;
            return Ok(vec![one]);
        }
        let mut outcomes = Vec::new();
        for url in self.node_urls(op, true).await? {
            let con =
                retry_transient(&self.config.retry, op, || self.node_connection(&url)).await?;
            outcomes.push(probe_and_fix(&self.config.retry, op, &con, probe, &decide, fix).await?);
        }
        Ok(outcomes)
    }

    /// The URL of every cluster node not marked failed, or of the masters only.
    async fn node_urls(&self, op: &'static str, masters_only: bool) -> CoordResult<Vec<String>> {
        let nodes: String = self
            .run(op, |mut c| async move {
                redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await
            })
            .await?;
        let scheme = match self.config.nodes.first() {
            Some(url) if url.starts_with("rediss://") => "rediss",
            _ => "redis",
        };
        let mut urls = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            let flags: Vec<&str> = flags.split(',').collect();
            if flags
                .iter()
                .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
                || (masters_only && !flags.contains(&"master"))
            {
                continue;
            }
            // `host:port@bus-port[,hostname]`
            let Some(host_port) = addr.split(['@', ',']).next() else {
                continue;
            };
            urls.push(format!("{scheme}://{host_port}/"));
        }
        Ok(urls)
    }

    /// A connection of its own to the one node at `url`.
    async fn node_connection(&self, url: &str) -> RedisResult<redis::aio::MultiplexedConnection> {
        let client = node_client(&self.config, url)?;
        let connection_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connection_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await
    }
}

/// Runs `attempt`, retrying transient failures with exponential backoff and jitter, and sorts
/// the final error into a [`CoordError`].
async fn retry_transient<T, F, Fut>(
    policy: &RetryPolicy,
    op: &'static str,
    attempt: F,
) -> CoordResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    // The first try runs bare: nearly every call succeeds at once, and building the retry
    // machinery for each of them costs measurable CPU on the hot paths (publish, CAS).
    let mut attempt = attempt;
    match attempt().await {
        Ok(value) => return Ok(value),
        Err(e) if !is_transient(&e) || policy.max_retries == 0 => {
            return Err(CoordError::from_redis(op, e));
        }
        Err(_) => {}
    }
    // The retries: the first at once (a reconnect is often all it takes), then backing off.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries - 1)
        .with_jitter();
    attempt
        .retry(backoff)
        .when(is_transient)
        .await
        .map_err(|e| CoordError::from_redis(op, e))
}

/// The cluster client reports any failed initial connection as an I/O error, wrong credentials
/// included; ask one seed node directly so a credential problem surfaces as such.
async fn classify_cluster_connect_error(
    config: &RedisConfig,
    err: redis::RedisError,
) -> CoordError {
    const OP: &str = "connect";
    if let Some(url) = config.nodes.first()
        && let Ok(client) = standalone_client(config, url)
        && let Err(probe) = client.get_multiplexed_async_connection().await
        && matches!(
            CoordError::from_redis(OP, probe),
            CoordError::AuthenticationFailed
        )
    {
        return CoordError::AuthenticationFailed;
    }
    CoordError::from_redis(OP, err)
}

/// A client for the single node at `url`, authenticating as `config` says.
fn standalone_client(config: &RedisConfig, url: &str) -> CoordResult<redis::Client> {
    node_client(config, url).map_err(|e| CoordError::from_redis("connect", e))
}

/// Whether a cluster connection sends single-slot requests to the slot's master itself.
#[derive(Clone, Copy)]
enum Routing {
    /// Through a [`Router`] (module `route`), falling back to the cluster client.
    Direct,
    /// Everything through the cluster client.
    ClusterClient,
}

async fn open(
    config: &Arc<RedisConfig>,
    response_timeout: Duration,
    routing: Routing,
) -> CoordResult<Conn> {
    const OP: &str = "connect";
    config.check()?;
    match config.topology {
        Topology::Standalone => {
            let Some(url) = config.nodes.first() else {
                return Err(CoordError::InvalidName {
                    what: "Redis node list",
                    reason: "must name at least one node".to_owned(),
                });
            };
            let client = standalone_client(config, url)?;
            // The connection manager retries every failed connect, wrong credentials included;
            // one plain attempt first turns a permanent refusal into an error at once.
            let probe = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connection_timeout))
                .set_response_timeout(Some(response_timeout));
            if let Err(e) = client
                .get_multiplexed_async_connection_with_config(&probe)
                .await
                && !is_transient(&e)
            {
                return Err(CoordError::from_redis(OP, e));
            }
            let manager_config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(config.connection_timeout))
                // One reconnect attempt per request: `Redis::run` owns the retry policy, and
                // retries nested inside retries multiply (20 × 20 took minutes on a dead server).
                .set_number_of_retries(CLIENT_RETRIES)
                .set_max_delay(config.retry.max_delay);
            let manager = ConnectionManager::new_with_config(client, manager_config)
                .await
                .map_err(|e| CoordError::from_redis(OP, e))?;
            Ok(Conn::Standalone(manager))
        }
        Topology::Cluster => {
            let mut builder = ClusterClientBuilder::new(config.nodes.iter().map(String::as_str))
                .response_timeout(response_timeout)
                .connection_timeout(config.connection_timeout)
                // A few quick internal retries let the client follow MOVED/ASK and refresh its
                // slot map; longer outages are `Redis::run`'s to retry, so the two never multiply
                // into minutes.
                .retries(CLUSTER_CLIENT_RETRIES)
                .min_retry_wait(10)
                .max_retry_wait(200);
            if let Some(user) = &config.username {
                builder = builder.username(user);
            }
            if let Some(password) = &config.password {
                builder = builder.password(password.expose());
            }
            if let Some(tls) = &config.tls {
                builder = builder.certs(tls.certificates());
            }
            let client = builder.build().map_err(|e| CoordError::from_redis(OP, e))?;
            let mut conn = match client.get_async_connection().await {
                Ok(conn) => conn,
                Err(e) => return Err(classify_cluster_connect_error(config, e).await),
            };
            let router = match routing {
                Routing::Direct => {
                    let router = Arc::new(Router::new(Arc::clone(config), response_timeout));
                    router.reload(&mut conn).await;
                    Some(router)
                }
                Routing::ClusterClient => None,
            };
            Ok(Conn::Cluster(ClusterConn::new(conn, router)))
        }
    }
}
