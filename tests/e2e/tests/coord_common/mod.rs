//! Shared arrangement for the coordination-layer tests: a real standalone Redis or a real 6-node
//! Redis Cluster per test, a connected handle, and fresh pool/task uids.
//!
//! `both_backends!` turns each `async fn name(fx: &Fixture)` test body into two tests,
//! `standalone::name` and `cluster::name`, so every behaviour is proven on both.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maos_core::coord::{Pool, PoolUid, Redis, RedisConfig, TaskUid, Topology};
use maos_e2e::launch::redis::{RedisCluster, RedisServer};

/// The Redis processes behind a fixture; dropping it kills them.
pub enum Backend {
    /// One server.
    Standalone(RedisServer),
    /// Six cluster nodes.
    Cluster(RedisCluster),
}

/// A running backend and a connected handle to it.
pub struct Fixture {
    pub backend: Backend,
    pub redis: Redis,
}

impl Fixture {
    /// A fresh standalone Redis.
    pub async fn standalone() -> Self {
        let server = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .expect("launcher thread")
            .expect("start redis-server");
        let config = RedisConfig::new(Topology::Standalone, [server.url()]);
        let redis = Redis::connect(config).await.expect("connect");
        Self {
            backend: Backend::Standalone(server),
            redis,
        }
    }

    /// A fresh 6-node Redis Cluster.
    pub async fn cluster() -> Self {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("launcher thread")
            .expect("start redis cluster");
        let config = RedisConfig::new(Topology::Cluster, cluster.urls());
        let redis = Redis::connect(config).await.expect("connect");
        Self {
            backend: Backend::Cluster(cluster),
            redis,
        }
    }

    /// The config the fixture's handle was made from (for extra handles, other users).
    pub fn config(&self) -> RedisConfig {
        match &self.backend {
            Backend::Standalone(s) => RedisConfig::new(Topology::Standalone, [s.url()]),
            Backend::Cluster(c) => RedisConfig::new(Topology::Cluster, c.urls()),
        }
    }

    /// A pool with a fresh uid.
    pub fn pool(&self) -> Pool {
        Pool::new(
            self.redis.clone(),
            &PoolUid::new(&unique("pool")).expect("uid"),
        )
    }

    /// Every key in the database (all nodes of a cluster), sorted.
    pub async fn all_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        match &self.backend {
            Backend::Standalone(s) => keys.extend(keys_of(&s.url())),
            Backend::Cluster(c) => {
                for url in c.urls() {
                    keys.extend(keys_of(&url));
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Fixture {
    /// How many clients are blocked (e.g. in XREADGROUP BLOCK) on the node serving `key`.
    pub fn blocked_clients_on_node_of(&self, key: &str) -> u64 {
        let url = match &self.backend {
            Backend::Standalone(s) => s.url(),
            Backend::Cluster(c) => c.urls()[c.master_of_key(key).expect("master of key")].clone(),
        };
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut con = client.get_connection().expect("connect");
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut con)
            .expect("INFO clients");
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("blocked_clients in INFO")
    }
}

fn keys_of(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("url");
    let Ok(mut con) = client.get_connection() else {
        return Vec::new();
    };
    redis::cmd("KEYS")
        .arg("*")
        .query(&mut con)
        .unwrap_or_default()
}

/// A uid no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh task uid.
pub fn task_uid() -> TaskUid {
    TaskUid::new(&unique("task")).expect("uid")
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        // A poll interval; the condition itself is re-checked each round.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generates `standalone::<name>` and `cluster::<name>` tests from `async fn <name>(&Fixture)`.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fx = super::coord_common::Fixture::standalone().await;
                    super::$name(&fx).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fx = super::coord_common::Fixture::cluster().await;
                    super::$name(&fx).await;
                }
            )*
        }
    };
}
