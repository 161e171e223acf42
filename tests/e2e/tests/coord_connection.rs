//! Connection loss against a real standalone Redis: a server that stays down surfaces as a typed
//! error once the retries are spent, and a server that comes back is reconnected to inside the
//! layer. (Cluster failover is covered in `coord_failover.rs`.)

mod coord_common;

use std::time::{Duration, Instant};

use coord_common::{task_uid, unique};
use maos_core::coord::{CoordError, Pool, PoolUid, Redis, RedisConfig, RetryPolicy, Topology};
use maos_e2e::launch::redis::RedisServer;

async fn start() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("launcher")
        .expect("start redis-server")
}

fn pool(redis: Redis) -> Pool {
    Pool::new(redis, &PoolUid::new(&unique("pool")).expect("uid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_that_stays_down_surfaces_as_connection_lost() {
    let mut server = start().await;
    let mut config = RedisConfig::new(Topology::Standalone, [server.url()]);
    config.retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let redis = Redis::connect(config).await.expect("connect");
    let state = pool(redis).task(&task_uid()).state();
    state.put("k", b"v").await.expect("put while up");
    server.kill();
    let started = Instant::now();
    let err = state.get("k").await.expect_err("server is down");
    assert!(
        matches!(
            err,
            CoordError::ConnectionLost {
                op: "state get",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.reason(), "ConnectionLost");
    // Bounded by the retry policy, not hanging.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_in_flight_while_the_server_restarts_succeeds_after_reconnect() {
    let mut server = start().await;
    let redis = Redis::connect(RedisConfig::new(Topology::Standalone, [server.url()]))
        .await
        .expect("connect");
    let state = pool(redis).task(&task_uid()).state();
    state.put("before", b"1").await.expect("put while up");
    server.kill();
    let writer = {
        let state = state.clone();
        tokio::spawn(async move { state.put("after", b"2").await })
    };
    let server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
        .await
        .expect("launcher")
        .expect("restart redis-server");
    let version = writer
        .await
        .expect("writer")
        .expect("the write is retried until the server is back");
    assert_eq!(version, 1);
    assert_eq!(
        state.get("after").await.expect("get").value.as_deref(),
        Some(b"2".as_slice())
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_typed_connect_error() {
    let server = start().await;
    let url = server.url();
    drop(server);
    let mut config = RedisConfig::new(Topology::Standalone, [url]);
    config.retry = RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    let err = Redis::connect(config).await.expect_err("nobody listens");
    assert!(
        matches!(err, CoordError::ConnectionLost { op: "connect", .. }),
        "{err:?}"
    );
}
