//! Tenant isolation by Redis ACL users against real Redis (standalone and cluster): a pool's
//! user can do all of an agent's work on its own pool and is refused (NOPERM, by Redis) on
//! another pool's keys.

#[macro_use]
mod coord_common;

use coord_common::{Backend, Fixture, task_uid};
use maos_core::coord::acl::{Acl, PoolCredentials};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::journal::EntryKind;
use maos_core::coord::mailbox::Cursor;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Admission, Bucket, RateLimits};
use maos_core::coord::{AgentName, CoordError, Pool, Redis};
use maos_core::dag::SubtaskName;

async fn connect_as(fx: &Fixture, creds: &PoolCredentials) -> Result<Redis, CoordError> {
    Redis::connect(
        fx.config()
            .with_user(creds.username.clone(), creds.password.clone()),
    )
    .await
}

/// A plain connection to the first node, authenticated as `creds`.
fn node_connection_as(fx: &Fixture, creds: &PoolCredentials) -> redis::Connection {
    let url = match &fx.backend {
        Backend::Standalone(s) => s.url(),
        Backend::Cluster(c) => c.urls()[0].clone(),
    };
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let _: String = redis::cmd("AUTH")
        .arg(&creds.username)
        .arg(creds.password.expose())
        .query(&mut con)
        .expect("AUTH as pool user");
    con
}

async fn pool_user(fx: &Fixture, pool: &Pool) -> PoolCredentials {
    Acl::new(fx.redis.clone())
        .create_pool_user(pool.keys(), &Acl::generate_password())
        .await
        .expect("create pool user")
}

async fn pool_user_can_do_all_of_an_agents_work_in_its_pool(fx: &Fixture) {
    // The operator prepares the pool and a task with its own (unrestricted) user.
    let pool = fx.pool();
    pool.queue().ensure_group().await.expect("group");
    let task_uid = task_uid();
    pool.task(&task_uid)
        .register(Some(10_000))
        .await
        .expect("register");
    let creds = pool_user(fx, &pool).await;

    let as_agent = Pool::new(
        connect_as(fx, &creds).await.expect("connect as pool user"),
        pool.keys().pool(),
    );
    let me = AgentName::new("agent-0").expect("name");
    let subtask = SubtaskName::new("s1").expect("subtask");
    let queue = as_agent.queue();
    queue.heartbeat(&me).await.expect("heartbeat");
    queue
        .enqueue(&WorkItem {
            task: task_uid.clone(),
            subtask: subtask.clone(),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: 0,
        })
        .await
        .expect("enqueue");
    let claimed = queue.claim(&me, 1, None).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let task = as_agent.task_of(&claimed[0].item);
    let limiter = as_agent.rate_limiter(RateLimits {
        requests: Bucket::per_minute(100),
        input_tokens: Bucket::per_minute(100_000),
        output_tokens: Bucket::per_minute(100_000),
    });
    assert_eq!(
        limiter.acquire(1, 100, 100).await.expect("rate limit"),
        Admission::Go
    );
    let maos_core::coord::budget::ReserveOutcome::Reserved(r) =
        task.budget().reserve(100).await.expect("reserve")
    else {
        panic!("budget fits");
    };
    task.budget().settle(r, 50).await.expect("settle");
    task.journal(&subtask)
        .append(1, &EntryKind::ModelResponse, "{}")
        .await
        .expect("journal");
    task.state().cas("k", 0, b"v").await.expect("cas");
    task.mailbox().send(&me, None, "hi").await.expect("send");
    task.mailbox()
        .read_since(&me, &Cursor::start(), 10)
        .await
        .expect("read");
    task.events()
        .publish(&Event::new(&me, "s1", 1, EventKind::SubtaskSucceeded))
        .await
        .expect("publish");
    task.results()
        .record(&subtask, 1, &me, "done")
        .await
        .expect("record");
    queue.ack(&[claimed[0].id.clone()]).await.expect("ack");
    queue
        .dead_agents(std::time::Duration::from_secs(3))
        .await
        .expect("dead agents");
}

async fn pool_user_is_refused_another_pools_task_keys_by_redis(fx: &Fixture) {
    let (pool_a, pool_b) = (fx.pool(), fx.pool());
    let victim = pool_b.task(&task_uid());
    victim
        .state()
        .put("secret", b"b's data")
        .await
        .expect("put");
    pool_b.queue().ensure_group().await.expect("group");
    let creds = pool_user(fx, &pool_a).await;
    let redis_a = connect_as(fx, &creds).await.expect("connect as pool A");

    // Even with pool B's task uid in hand, every path is refused by Redis.
    let intruder = Pool::new(redis_a.clone(), pool_b.keys().pool());
    let stolen = intruder
        .task(victim.keys().task())
        .state()
        .get("secret")
        .await;
    assert!(
        matches!(stolen, Err(CoordError::NoPermission { .. })),
        "{stolen:?}"
    );
    let claim = intruder
        .queue()
        .claim(&AgentName::new("a").expect("name"), 1, None)
        .await;
    assert!(
        matches!(claim, Err(CoordError::NoPermission { .. })),
        "{claim:?}"
    );
    // A raw command on the victim's key gets NOPERM straight from the server.
    let mut con = redis_a.connection();
    let raw: redis::RedisResult<Option<String>> = redis::cmd("HGET")
        .arg(victim.keys().kv())
        .arg("secret")
        .query_async(&mut con)
        .await;
    let err = raw.expect_err("NOPERM");
    assert_eq!(err.code(), Some("NOPERM"), "{err:?}");
    // A script runs with the caller's permissions: EVAL cannot reach the victim's key either.
    let via_script: redis::RedisResult<Option<String>> = redis::cmd("EVAL")
        .arg("return redis.call('HGET', KEYS[1], 'secret')")
        .arg(1)
        .arg(victim.keys().kv())
        .query_async(&mut con)
        .await;
    assert_eq!(via_script.expect_err("NOPERM").code(), Some("NOPERM"));
    // Commands that would reach every tenant are refused too (sent to one node directly, so
    // the answer is the server's own, not a cluster client's aggregate).
    let mut node = node_connection_as(fx, &creds);
    for cmd in [
        redis::cmd("FLUSHALL"),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("SCRIPT").arg("FLUSH").clone(),
        redis::cmd("FUNCTION").arg("FLUSH").clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
    ] {
        let refused: redis::RedisResult<redis::Value> = cmd.query(&mut node);
        let err = refused.expect_err("refused");
        assert_eq!(err.code(), Some("NOPERM"), "{err:?}");
    }
    // And the data is still there for its owner.
    assert_eq!(
        victim
            .state()
            .get("secret")
            .await
            .expect("get")
            .value
            .as_deref(),
        Some(b"b's data".as_slice())
    );
}

async fn rotated_password_replaces_the_old_and_deleted_user_cannot_connect(fx: &Fixture) {
    let pool = fx.pool();
    let acl = Acl::new(fx.redis.clone());
    let old = pool_user(fx, &pool).await;
    let new = acl
        .rotate_pool_password(pool.keys(), &Acl::generate_password())
        .await
        .expect("rotate");
    assert!(matches!(
        connect_as(fx, &old).await,
        Err(CoordError::AuthenticationFailed)
    ));
    connect_as(fx, &new).await.expect("new password works");
    acl.delete_pool_user(pool.keys()).await.expect("delete");
    assert!(matches!(
        connect_as(fx, &new).await,
        Err(CoordError::AuthenticationFailed)
    ));
}

async fn pool_user_exists_on_every_node(fx: &Fixture) {
    let pool = fx.pool();
    let creds = pool_user(fx, &pool).await;
    let urls = match &fx.backend {
        Backend::Standalone(s) => vec![s.url()],
        Backend::Cluster(c) => c.urls(),
    };
    // Replicas too, so the user still works after a failover promotes one.
    for url in urls {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut con = client.get_connection().expect("connect");
        let ok: redis::RedisResult<String> = redis::cmd("AUTH")
            .arg(&creds.username)
            .arg(creds.password.expose())
            .query(&mut con);
        assert_eq!(ok.expect("AUTH on every node"), "OK", "{url}");
    }
}

both_backends!(
    pool_user_can_do_all_of_an_agents_work_in_its_pool,
    pool_user_is_refused_another_pools_task_keys_by_redis,
    rotated_password_replaces_the_old_and_deleted_user_cannot_connect,
    pool_user_exists_on_every_node,
);
