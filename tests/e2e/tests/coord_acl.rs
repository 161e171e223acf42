//! Tenant isolation by Redis ACL users against real Redis (standalone and cluster): a pool's
//! user can do all of an agent's work on its own pool, through the function library, and is
//! refused (NOPERM, by Redis) on another pool's keys, on scripts, administration and keyspace
//! listing, and on writing its own task's budget limits.

#[macro_use]
mod coord_common;

use coord_common::{Backend, Fixture, task_uid};
use maos_core::coord::acl::{Acl, PoolCredentials};
use maos_core::coord::budget::{BudgetUsage, Limits, ReserveOutcome};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::functions;
use maos_core::coord::journal::EntryKind;
use maos_core::coord::mailbox::Cursor;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Admission, Bucket, RateLimits};
use maos_core::coord::{AgentName, CoordError, Pool, Redis, RetryPolicy};
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

/// The pool's user, as the operator makes it, with the function library loaded as the
/// operator does at start.
async fn pool_user(fx: &Fixture, pool: &Pool) -> PoolCredentials {
    functions::ensure_loaded(&fx.redis, true)
        .await
        .expect("load function library");
    Acl::new(fx.redis.clone())
        .create_pool_user(pool.keys(), &Acl::generate_password())
        .await
        .expect("create pool user")
}

/// A plain connection to the node serving `key`, authenticated as `creds`.
fn node_of_key_as(fx: &Fixture, key: &str, creds: &PoolCredentials) -> redis::Connection {
    let url = match &fx.backend {
        Backend::Standalone(s) => s.url(),
        Backend::Cluster(c) => c.urls()[c.master_of_key(key).expect("master of key")].clone(),
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

fn assert_noperm(what: &str, result: redis::RedisResult<redis::Value>) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Some("NOPERM"), "{what}: {err:?}");
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
    queue.ensure_group().await.expect("group");
    queue.heartbeat(&me).await.expect("heartbeat");
    // Only the operator dispatches.
    pool.queue()
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
    assert!(
        queue
            .claim_own_pending(&me, 10)
            .await
            .expect("own pending")
            .len()
            == 1
    );
    let task = as_agent.task_of(&claimed[0].item);
    task.cancelled().await.expect("cancel flag");
    task.plan().goal().await.expect("goal");
    task.plan().feedback().await.expect("feedback");
    task.plan().subtasks().await.expect("plan");
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
    limiter.refund(10, 10).await.expect("rate limit refund");
    let journal = task.journal(&subtask);
    journal
        .append(1, &EntryKind::ModelResponse, "{}")
        .await
        .expect("journal");
    assert_eq!(journal.read_all().await.expect("replay").entries.len(), 1);
    let state = task.state();
    state.cas("k", 0, b"v").await.expect("cas");
    state.put("k2", b"w").await.expect("put");
    assert_eq!(
        state.get("k").await.expect("get").value.as_deref(),
        Some(b"v".as_slice())
    );
    state.delete("k2").await.expect("delete");
    assert_eq!(state.list("").await.expect("list"), ["k"]);
    task.mailbox().send(&me, None, "hi").await.expect("send");
    task.mailbox()
        .send_once("toolu_1", &me, None, "once")
        .await
        .expect("send once");
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
    task.results().get(&subtask).await.expect("get result");
    let errors = as_agent.model_errors();
    errors
        .report(
            &me,
            &maos_core::coord::model_errors::ModelErrorReport {
                reason: maos_core::coord::failure::FailReason::ModelAuthFailed,
                message: "refused".to_owned(),
                at_ms: 1,
            },
        )
        .await
        .expect("report model error");
    errors
        .clear(&[me.as_str()])
        .await
        .expect("clear model error");
    queue.ack(&[claimed[0].id.clone()]).await.expect("ack");
    // A second item, released by the agent itself on its way out.
    pool.queue()
        .enqueue(&WorkItem {
            task: task_uid.clone(),
            subtask: SubtaskName::new("s2").expect("subtask"),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: 0,
        })
        .await
        .expect("enqueue");
    assert_eq!(queue.claim(&me, 1, None).await.expect("claim").len(), 1);
    assert_eq!(queue.reclaim(&me).await.expect("release").len(), 1);
    queue.forget(&me).await.expect("forget");
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

async fn pool_user_is_refused_scripts_administration_and_keyspace_listing(fx: &Fixture) {
    let pool = fx.pool();
    let creds = pool_user(fx, &pool).await;
    let sha = redis::Script::new("return 1").get_hash().to_owned();
    // Sent to one node directly, so the answer is the server's own.
    let mut node = node_connection_as(fx, &creds);
    let refused: Vec<(&str, redis::Cmd)> = vec![
        (
            "EVAL",
            redis::cmd("EVAL").arg("while true do end").arg(0).clone(),
        ),
        (
            "EVAL_RO",
            redis::cmd("EVAL_RO").arg("return 1").arg(0).clone(),
        ),
        ("EVALSHA", redis::cmd("EVALSHA").arg(&sha).arg(0).clone()),
        (
            "SCRIPT LOAD",
            redis::cmd("SCRIPT").arg("LOAD").arg("return 1").clone(),
        ),
        (
            "FUNCTION LOAD",
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(functions::library_source())
                .clone(),
        ),
        (
            "FUNCTION DELETE",
            redis::cmd("FUNCTION").arg("DELETE").arg("maos").clone(),
        ),
        (
            "FUNCTION FLUSH",
            redis::cmd("FUNCTION").arg("FLUSH").clone(),
        ),
        ("SCAN", redis::cmd("SCAN").arg(0).clone()),
        ("KEYS", redis::cmd("KEYS").arg("*").clone()),
        ("RANDOMKEY", redis::cmd("RANDOMKEY")),
        (
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        (
            "CONFIG SET",
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg("1")
                .clone(),
        ),
        ("DEBUG", redis::cmd("DEBUG").arg("SLEEP").arg(0).clone()),
        ("FLUSHALL", redis::cmd("FLUSHALL")),
        ("FLUSHDB", redis::cmd("FLUSHDB")),
        ("MONITOR", redis::cmd("MONITOR")),
        (
            "CLIENT KILL",
            redis::cmd("CLIENT").arg("KILL").arg("ID").arg(1).clone(),
        ),
        ("CLIENT LIST", redis::cmd("CLIENT").arg("LIST").clone()),
        (
            "SUBSCRIBE",
            redis::cmd("SUBSCRIBE").arg("maos:wake").clone(),
        ),
        ("PSUBSCRIBE", redis::cmd("PSUBSCRIBE").arg("*").clone()),
    ];
    for (what, cmd) in refused {
        assert_noperm(what, cmd.query(&mut node));
    }
    // The library still serves the agent.
    let as_agent = Pool::new(
        connect_as(fx, &creds).await.expect("connect as pool user"),
        pool.keys().pool(),
    );
    as_agent
        .queue()
        .heartbeat(&AgentName::new("agent-0").expect("name"))
        .await
        .expect("heartbeat");
}

async fn pool_user_cannot_write_its_own_tasks_budget_limits(fx: &Fixture) {
    let pool = fx.pool();
    let task = pool.task(&task_uid());
    task.register(Some(1_000)).await.expect("register");
    let creds = pool_user(fx, &pool).await;
    let keys = task.keys();
    let (budget, meta, cancel, kv_ver) = (
        keys.budget(),
        keys.meta(),
        keys.cancel(),
        keys.kv_versions(),
    );
    let mut node = node_of_key_as(fx, &budget, &creds);
    let refused: Vec<(&str, redis::Cmd)> = vec![
        (
            "HSET",
            redis::cmd("HSET")
                .arg(&budget)
                .arg("limit")
                .arg(u64::MAX / 2)
                .clone(),
        ),
        (
            "HINCRBY",
            redis::cmd("HINCRBY")
                .arg(&budget)
                .arg("limit")
                .arg(1_000_000)
                .clone(),
        ),
        ("HDEL", redis::cmd("HDEL").arg(&budget).arg("limit").clone()),
        ("DEL", redis::cmd("DEL").arg(&budget).clone()),
        ("UNLINK", redis::cmd("UNLINK").arg(&budget).clone()),
        ("SET", redis::cmd("SET").arg(&budget).arg("x").clone()),
        (
            "RENAME",
            redis::cmd("RENAME").arg(&budget).arg(&kv_ver).clone(),
        ),
        (
            "HSET meta",
            redis::cmd("HSET").arg(&meta).arg("goal").arg("x").clone(),
        ),
        ("DEL cancel", redis::cmd("DEL").arg(&cancel).clone()),
        // A function aimed at the limits: a function's keys must be writable by its caller.
        (
            "FCALL state put",
            redis::cmd("FCALL")
                .arg("maos_state_put")
                .arg(2)
                .arg(&budget)
                .arg(&kv_ver)
                .arg("limit")
                .arg(u64::MAX / 2)
                .clone(),
        ),
    ];
    for (what, cmd) in refused {
        assert_noperm(what, cmd.query(&mut node));
    }
    let usage = task.budget().usage().await.expect("usage");
    assert_eq!(usage.limit, Some(1_000));
}

async fn pool_user_cannot_take_ack_or_delete_its_tasks_events(fx: &Fixture) {
    let pool = fx.pool();
    let task = pool.task(&task_uid());
    task.register(Some(1_000)).await.expect("register");
    let me = AgentName::new("agent-0").expect("name");
    let id = task
        .events()
        .publish(&Event::new(&me, "s1", 1, EventKind::SubtaskStarted))
        .await
        .expect("publish");
    let creds = pool_user(fx, &pool).await;
    let events = task.keys().events();
    let mut node = node_of_key_as(fx, &events, &creds);
    // What the operator's and the audit log's groups have not consumed stays theirs.
    let refused: Vec<(&str, redis::Cmd)> = vec![
        (
            "XREADGROUP",
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("audit")
                .arg("thief")
                .arg("STREAMS")
                .arg(&events)
                .arg(">")
                .clone(),
        ),
        (
            "XAUTOCLAIM",
            redis::cmd("XAUTOCLAIM")
                .arg(&events)
                .arg("operator")
                .arg("thief")
                .arg(0)
                .arg("0")
                .clone(),
        ),
        (
            "XACK",
            redis::cmd("XACK")
                .arg(&events)
                .arg("operator")
                .arg(id.as_str())
                .clone(),
        ),
        (
            "XDEL",
            redis::cmd("XDEL").arg(&events).arg(id.as_str()).clone(),
        ),
        (
            "XTRIM",
            redis::cmd("XTRIM")
                .arg(&events)
                .arg("MAXLEN")
                .arg(0)
                .clone(),
        ),
        (
            "XGROUP DESTROY",
            redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&events)
                .arg("audit")
                .clone(),
        ),
    ];
    for (what, cmd) in refused {
        assert_noperm(what, cmd.query(&mut node));
    }
}

/// The remaining token budget: the limit less what is reserved and spent.
fn remaining(usage: &BudgetUsage) -> u64 {
    usage.limit.unwrap_or(u64::MAX) - usage.reserved - usage.spent
}

async fn budget_functions_never_give_back_more_than_a_reservation_held(fx: &Fixture) {
    let pool = fx.pool();
    let task = pool.task(&task_uid());
    task.register(Some(1_000)).await.expect("register");
    let creds = pool_user(fx, &pool).await;
    let spend = task.keys().spend();
    let mut node = node_of_key_as(fx, &spend, &creds);
    let fcall = |function: &str, args: &[&str]| {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function).arg(1).arg(&spend).arg(args);
        cmd
    };
    // Lapsing far beyond the test (Unix ms).
    const LATER: &str = "9999999999999";
    let reserved: Vec<i64> = fcall("maos_budget_reserve", &["aa", "600", "0", LATER])
        .query(&mut node)
        .expect("reserve");
    assert_eq!(reserved, [1, 0, 0]);
    let _: Vec<i64> = fcall("maos_budget_settle", &["aa", "100", "0"])
        .query(&mut node)
        .expect("settle");
    let after_settle = task.budget().usage().await.expect("usage");
    assert_eq!(remaining(&after_settle), 900);

    // Settling again, settling what was never reserved, and amounts that are not plain
    // non-negative integers give nothing back.
    let _: Vec<i64> = fcall("maos_budget_settle", &["aa", "0", "0"])
        .query(&mut node)
        .expect("second settle");
    let _: Vec<i64> = fcall("maos_budget_settle", &["bb", "0", "0"])
        .query(&mut node)
        .expect("settle of nothing");
    let refusals: [(&str, &[&str]); 8] = [
        ("maos_budget_settle", &["aa", "-500", "0"]),
        ("maos_budget_reserve", &["cc", "-500", "0", LATER]),
        ("maos_budget_reserve", &["cc", "1e3", "0", LATER]),
        ("maos_budget_reserve", &["cc", "10", "-1", LATER]),
        // A lapse time that is not Unix ms, or none.
        ("maos_budget_reserve", &["cc", "10", "0", "-1"]),
        ("maos_budget_reserve", &["cc", "10", "0"]),
        // A reservation id that would name another field.
        ("maos_budget_reserve", &["limit", "10", "0", LATER]),
        ("maos_budget_settle", &["x:y", "0", "0"]),
    ];
    for (function, args) in refusals {
        let refused: redis::RedisResult<redis::Value> = fcall(function, args).query(&mut node);
        assert!(refused.is_err(), "{function} {args:?}");
    }
    // Another of the pool's keys passed as the spend hash: its "limits" would be the agent's own.
    let kv = task.keys().kv();
    let mut kv_node = node_of_key_as(fx, &kv, &creds);
    let wrong_key: redis::RedisResult<redis::Value> = redis::cmd("FCALL")
        .arg("maos_budget_reserve")
        .arg(1)
        .arg(&kv)
        .arg("dd")
        .arg(10)
        .arg(0)
        .arg(LATER)
        .query(&mut kv_node);
    assert!(wrong_key.is_err(), "{wrong_key:?}");
    assert_eq!(task.budget().usage().await.expect("usage"), after_settle);
    // And the limit still holds for the next call.
    let outcome = task.budget().reserve(901).await.expect("reserve");
    assert_eq!(
        outcome,
        ReserveOutcome::Exhausted {
            limit: maos_core::coord::budget::Limit::Tokens,
            remaining: 900
        }
    );
    // A cost limit too, set by the operator.
    task.budget()
        .set_limits(&Limits {
            tokens: None,
            cost_micro_usd: Some(5),
        })
        .await
        .expect("cost limit");
    assert_eq!(
        task.budget()
            .usage()
            .await
            .expect("usage")
            .cost_limit_micro_usd,
        Some(5)
    );
}

async fn agent_connection(fx: &Fixture, creds: &PoolCredentials) -> Redis {
    // Few, quick retries: the test waits for a refusal, not for the operator.
    let mut config = fx
        .config()
        .with_user(creds.username.clone(), creds.password.clone());
    config.retry = RetryPolicy {
        max_retries: 2,
        min_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(50),
    };
    Redis::connect(config).await.expect("connect as pool user")
}

async fn flush_functions(fx: &Fixture) {
    let mut con = fx.redis.connection();
    // To every master (redis-rs routes FUNCTION FLUSH to all of them on a cluster).
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .expect("FUNCTION FLUSH");
}

async fn a_lost_library_is_loaded_again_by_the_operator_while_agents_wait(fx: &Fixture) {
    let pool = fx.pool();
    let creds = pool_user(fx, &pool).await;
    let agent = Pool::new(agent_connection(fx, &creds).await, pool.keys().pool());
    let me = AgentName::new("agent-0").expect("name");
    agent.queue().heartbeat(&me).await.expect("heartbeat");

    // A Redis that restarted empty: the agent may not load the library, it gets a transient
    // error (its loops retry it) and nothing else.
    flush_functions(fx).await;
    let waiting = agent.queue().heartbeat(&me).await;
    assert!(
        matches!(waiting, Err(CoordError::FunctionsNotLoaded { .. })),
        "{waiting:?}"
    );
    // The operator's periodic check loads it on every master; the next check finds it.
    let loaded = functions::ensure_loaded(&fx.redis, false)
        .await
        .expect("load");
    assert!(loaded.loaded >= 1 && loaded.current == 0, "{loaded:?}");
    let checked = functions::ensure_loaded(&fx.redis, false)
        .await
        .expect("check");
    assert_eq!((checked.current, checked.loaded), (loaded.loaded, 0));
    agent.queue().heartbeat(&me).await.expect("heartbeat again");

    // A call of the operator's own that finds it missing loads it at once.
    flush_functions(fx).await;
    pool.queue().heartbeat(&me).await.expect("operator's call");
    agent
        .queue()
        .heartbeat(&me)
        .await
        .expect("agent after the operator's call");
}

async fn a_library_of_another_build_is_visible_and_replaced_at_start(fx: &Fixture) {
    let pool = fx.pool();
    let creds = pool_user(fx, &pool).await;
    let agent = Pool::new(agent_connection(fx, &creds).await, pool.keys().pool());
    let me = AgentName::new("agent-0").expect("name");
    let mut con = fx.redis.connection();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(
            "#!lua name=maos\nredis.register_function('maos_version', function() return 'old' end)",
        )
        .query_async(&mut con)
        .await
        .expect("load an older library");

    let periodic = functions::ensure_loaded(&fx.redis, false)
        .await
        .expect("check");
    assert!(!periodic.other_versions.is_empty(), "{periodic:?}");
    assert!(
        periodic.other_versions.iter().all(|v| v.contains("old")),
        "{periodic:?}"
    );
    assert_eq!(periodic.loaded + periodic.current, 0, "{periodic:?}");
    assert!(agent.queue().heartbeat(&me).await.is_err());

    let start = functions::ensure_loaded(&fx.redis, true)
        .await
        .expect("load");
    assert_eq!(start.other_versions.len(), periodic.other_versions.len());
    let version: String = redis::cmd("FCALL")
        .arg(functions::VERSION_FUNCTION)
        .arg(0)
        .query_async(&mut con)
        .await
        .expect("version");
    assert_eq!(version, functions::version());
    agent.queue().heartbeat(&me).await.expect("heartbeat");
}

both_backends!(
    pool_user_can_do_all_of_an_agents_work_in_its_pool,
    pool_user_is_refused_another_pools_task_keys_by_redis,
    rotated_password_replaces_the_old_and_deleted_user_cannot_connect,
    pool_user_exists_on_every_node,
    pool_user_is_refused_scripts_administration_and_keyspace_listing,
    pool_user_cannot_write_its_own_tasks_budget_limits,
    pool_user_cannot_take_ack_or_delete_its_tasks_events,
    budget_functions_never_give_back_more_than_a_reservation_held,
    a_lost_library_is_loaded_again_by_the_operator_while_agents_wait,
    a_library_of_another_build_is_visible_and_replaced_at_start,
);
