//! Coordination layer throughput and latency (`maos_core::coord`) against a baseline measured
//! in the same run on the same server: the real `redis-benchmark` doing the equivalent raw
//! commands (XADD for the bus, FCALL of the layer's own CAS function for shared state).
//!
//! Prints a Markdown section for BENCHMARKS.md (`make bench` collects it); diagnostics go to
//! stderr. Targets (DESIGN.md §8): ≥ 70 % of raw Redis at equal pipelining; bus p95 ≤ 5 ms at
//! 10 k msg/s; CAS p95 ≤ 2 ms; floors of 100 k msg/s (bus) and 50 k ops/s (shared state) where
//! raw Redis on this machine reaches them. Nothing here asserts a timing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maos_core::coord::events::{Event, EventKind, EventLog};
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::queue::{EntryId, WorkItem, WorkKind};
use maos_core::coord::state::CasOutcome;
use maos_core::coord::{AgentName, Pool, PoolUid, Redis, RedisConfig, TaskUid, Topology};
use maos_core::dag::SubtaskName;
use maos_e2e::launch::redis::{RedisCluster, RedisServer};

/// Concurrency of every throughput row: redis-benchmark connections (`-c`), and our tasks.
const CLIENTS: usize = 50;
/// The pipelined rows' depth: redis-benchmark `-P`, and our `publish_many` batch.
const PIPELINE: usize = 16;
/// Requests of the unpipelined rows.
const N_SINGLE: usize = 150_000;
/// Requests of the pipelined rows.
const N_PIPELINED: usize = 400_000;
/// Items through the work queue.
const N_QUEUE: usize = 150_000;
/// Work queue batch: items per `enqueue_many`, claim COUNT.
const QUEUE_BATCH: usize = 100;
/// Consumer read COUNT on the bus.
const CONSUME_COUNT: usize = 500;
/// The fixed-rate run: messages per 1 ms tick and ticks (10 per ms = 10 k msg/s for 3 s).
const FIXED_PER_TICK: usize = 10;
const FIXED_TICKS: usize = 3_000;
/// Longest any one of our rows may run before it stops and reports what it did.
const ROW_DEADLINE: Duration = Duration::from_secs(30);
/// Longest one redis-benchmark run may take before it is killed.
const RAW_TIMEOUT: Duration = Duration::from_secs(60);
/// The value written by every CAS (ours and raw).
const CAS_VALUE: &str = "value-0123456789abcdef0123456789ab";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// CPU time (user + system, all threads) this process has used so far, from /proc/self/stat
/// (clock ticks of 10 ms; USER_HZ is 100 on Linux); `None` where that cannot be read.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line; after the name, the line starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Runs `fut` to completion and returns its output with the CPU time the process used meanwhile.
fn with_cpu<T>(
    runtime: &tokio::runtime::Runtime,
    fut: impl Future<Output = T>,
) -> (T, Option<Duration>) {
    let before = process_cpu();
    let out = runtime.block_on(fut);
    let used = match (before, process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (out, used)
}

fn rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1} k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

// ---------------------------------------------------------------------------------------------
// redis-benchmark

/// One redis-benchmark result (latencies in ms, as it prints them).
#[derive(Clone, Copy, Debug)]
struct Raw {
    rps: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

/// Where the servers are: the standalone server, or the cluster (redis-benchmark then talks
/// straight to the master that owns the benchmarked key, as our layer does for one task).
struct Target<'a> {
    name: &'static str,
    port: u16,
    urls: Vec<String>,
    cluster: Option<&'a RedisCluster>,
}

impl Target<'_> {
    /// The port of the server that owns `key`.
    fn port_for(&self, key: &str) -> u16 {
        match self.cluster {
            None => self.port,
            Some(cluster) => {
                let index = cluster
                    .master_of_key(key)
                    .expect("find the master that owns the benchmarked key");
                cluster.ports()[index]
            }
        }
    }
}

/// Runs redis-benchmark with `command`, bounded by [`RAW_TIMEOUT`], and parses its `--csv`
/// line; `None` (with the reason on stderr) when it fails.
fn redis_benchmark(
    port: u16,
    scratch: &Path,
    pipeline: usize,
    requests: usize,
    extra: &[&str],
    command: &[String],
) -> Option<Raw> {
    let out_path = scratch.join("redis-benchmark.out");
    let err_path = scratch.join("redis-benchmark.err");
    let (out, err) = (
        std::fs::File::create(&out_path).expect("create redis-benchmark output file"),
        std::fs::File::create(&err_path).expect("create redis-benchmark error file"),
    );
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &requests.to_string(), "-c", &CLIENTS.to_string()])
        .args(["-P", &pipeline.to_string(), "--csv"]);
    cmd.args(extra)
        .args(command)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("redis-benchmark not runnable: {e}");
            return None;
        }
    };
    let deadline = Instant::now() + RAW_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                eprintln!("redis-benchmark ran past {RAW_TIMEOUT:?}; killing it");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("waiting for redis-benchmark: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        eprintln!(
            "redis-benchmark exited with {status}: {}{}",
            text,
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        return None;
    }
    // "test","rps","avg","min","p50","p95","p99","max": parse from the end, the test name may
    // hold commas.
    let line = text
        .lines()
        .rfind(|l| l.starts_with('"') && !l.starts_with("\"test\""))?;
    let fields: Vec<f64> = line
        .rsplit(',')
        .take(7)
        .map(|f| f.trim().trim_matches('"').parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if fields.len() < 7 {
        eprintln!("redis-benchmark printed an unexpected line: {line}");
        return None;
    }
    // Reversed: max, p99, p95, p50, min, avg, rps.
    let raw = Raw {
        rps: fields[6],
        p50: fields[3],
        p95: fields[2],
        p99: fields[1],
    };
    eprintln!(
        "redis-benchmark -P {pipeline} {}: {raw:?}",
        command.first().map(String::as_str).unwrap_or("")
    );
    Some(raw)
}

/// The raw equivalent of publish + consume: redis-benchmark XADD -P [`PIPELINE`] into `stream`
/// while a bare redis-rs consumer on a connection of its own reads COUNT [`CONSUME_COUNT`] with a
/// consumer group and acks each batch, decoding nothing but the ids. Rate = messages consumed
/// per second from the consumer's start; latencies are redis-benchmark's (the XADDs).
fn raw_publish_consume(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    scratch: &Path,
    stream: &str,
    payload: &str,
) -> Option<Raw> {
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).ok()?;
    let total = N_PIPELINED;
    let prepared: redis::RedisResult<()> = runtime.block_on(async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("DEL")
            .arg(stream)
            .query_async::<()>(&mut c)
            .await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg("raw")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
    });
    if let Err(e) = prepared {
        eprintln!("raw publish + consume: preparing the stream failed: {e}");
        return None;
    }
    let key = stream.to_owned();
    let consumer = runtime.spawn(async move {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let started = Instant::now();
        let deadline = started + ROW_DEADLINE;
        let mut got = 0;
        while got < total && Instant::now() < deadline {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("raw")
                .arg("bare")
                .arg("COUNT")
                .arg(CONSUME_COUNT)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query_async(&mut c)
                .await
                .ok()?;
            let ids = raw_ids(reply);
            if ids.is_empty() {
                continue;
            }
            got += ids.len();
            redis::cmd("XACK")
                .arg(&key)
                .arg("raw")
                .arg(&ids)
                .query_async::<()>(&mut c)
                .await
                .ok()?;
        }
        Some((got, started.elapsed()))
    });
    let xadd: Vec<String> = ["XADD", stream, "*", "event", payload]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let produced = redis_benchmark(port, scratch, PIPELINE, total, &[], &xadd);
    let (got, elapsed) = runtime.block_on(consumer).ok().flatten()?;
    let produced = produced?;
    let raw = Raw {
        rps: got as f64 / elapsed.as_secs_f64(),
        ..produced
    };
    eprintln!("raw publish + consume: {got} consumed in {elapsed:?}: {raw:?}");
    Some(raw)
}

/// The entry ids of an XREADGROUP reply, as bytes (nothing else is decoded).
fn raw_ids(reply: redis::Value) -> Vec<Vec<u8>> {
    let items = |v: redis::Value| match v {
        redis::Value::Array(items) => items,
        _ => Vec::new(),
    };
    items(reply)
        .into_iter()
        .filter_map(|stream| items(stream).into_iter().nth(1))
        .flat_map(items)
        .filter_map(|entry| match items(entry).into_iter().next() {
            Some(redis::Value::BulkString(id)) => Some(id),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Our layer

/// What one of our runs did.
struct Measured {
    ops: usize,
    elapsed: Duration,
    /// Sorted latencies of whatever the row measures.
    lat: Vec<Duration>,
    /// CPU time this process (client side only) used for the row, when known.
    cpu: Option<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op` from `workers` tasks until `total` units are done (each call does `per_call`
/// units) or [`ROW_DEADLINE`] passes; `op(first_unit)` gets a unique starting unit number.
async fn drive<F, Fut>(workers: usize, total: usize, per_call: usize, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + ROW_DEADLINE;
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / per_call / workers + 1);
            let mut done = 0;
            loop {
                let first = next.fetch_add(per_call, Ordering::Relaxed);
                if first >= total || Instant::now() > deadline {
                    break;
                }
                let t0 = Instant::now();
                op(first).await;
                lat.push(t0.elapsed());
                done += per_call;
            }
            (done, lat)
        }));
    }
    let mut ops = 0;
    let mut lat = Vec::new();
    for handle in handles {
        let (done, l) = handle.await.expect("bench worker panicked");
        ops += done;
        lat.extend(l);
    }
    let elapsed = started.elapsed();
    lat.sort();
    Measured {
        ops,
        elapsed,
        lat,
        cpu: None,
    }
}

fn event(agent: &AgentName, message: String) -> Event {
    Event::new(agent, "bench", 1, EventKind::Progress { message })
}

/// A fresh, registered task of `pool` (so its event groups exist).
async fn fresh_task(pool: &Pool, name: &str) -> maos_core::coord::Task {
    let task = pool.task(&TaskUid::new(name).expect("task uid"));
    task.delete_all().await.expect("clear task keys");
    task.register(None).await.expect("register task");
    task
}

/// Publishes `total` events from [`CLIENTS`] tasks, `batch` per call (`publish` when 1).
///
/// The events are built once, outside the timing: building them (a UUID each) is the caller's
/// work; encoding and sending them is the layer's.
async fn publish_rate(log: EventLog, agent: AgentName, total: usize, batch: usize) -> Measured {
    let events: Arc<Vec<Event>> = Arc::new(
        (0..batch)
            .map(|_| event(&agent, "progress".into()))
            .collect(),
    );
    drive(CLIENTS, total, batch, move |_| {
        let (log, events) = (log.clone(), Arc::clone(&events));
        async move {
            if let [one] = events.as_slice() {
                log.publish(one).await.expect("publish event");
            } else {
                log.publish_many(&events).await.expect("publish events");
            }
        }
    })
    .await
}

/// Consumes `total` events of `log` (group `operator`) on a connection of its own, reading
/// COUNT [`CONSUME_COUNT`] and acking each batch; with `epoch`, each event's message is the
/// nanoseconds since `epoch` at which it was published, and the end-to-end latencies are
/// returned.
fn spawn_consumer(
    log: EventLog,
    total: usize,
    epoch: Option<Instant>,
) -> tokio::task::JoinHandle<(usize, Vec<Duration>)> {
    tokio::spawn(async move {
        let mut consumer = log.consumer(GROUP_OPERATOR, "bench-consumer");
        let deadline = Instant::now() + ROW_DEADLINE;
        let mut got = 0;
        let mut lat = Vec::new();
        let mut handled: Vec<EntryId> = Vec::new();
        while got < total && Instant::now() < deadline {
            // The batch before is acked in the same round trip as this read.
            let batch = consumer
                .ack_then_next(&handled, CONSUME_COUNT, Some(Duration::from_millis(100)))
                .await
                .expect("consume events");
            handled.clear();
            if batch.is_empty() {
                continue;
            }
            if let Some(epoch) = epoch {
                let now = epoch.elapsed();
                for d in &batch {
                    if let EventKind::Progress { message } = &d.event.kind
                        && let Ok(due) = message.parse::<u64>()
                    {
                        lat.push(now.saturating_sub(Duration::from_nanos(due)));
                    }
                }
            }
            handled = batch.into_iter().map(|d| d.entry).collect();
            got += handled.len();
        }
        consumer.ack(&handled).await.expect("ack events");
        (got, lat)
    })
}

/// Publish (batched) and consume concurrently; throughput is events consumed per second.
async fn publish_consume(
    pool: &Pool,
    consumer_pool: &Pool,
    agent: &AgentName,
    total: usize,
) -> (Measured, Measured) {
    let task = fresh_task(pool, "bench-bus-pc").await;
    let consumer_log = consumer_pool.task(task.keys().task()).events();
    let started = Instant::now();
    let consumer = spawn_consumer(consumer_log, total, None);
    let published = publish_rate(task.events(), agent.clone(), total, PIPELINE).await;
    let publishing = started.elapsed();
    let (got, _) = consumer.await.expect("consumer panicked");
    eprintln!(
        "publish + consume: publishers done after {:.2} s ({}/s), consumer after {:.2} s",
        publishing.as_secs_f64(),
        rate(published.rate()),
        started.elapsed().as_secs_f64()
    );
    let consumed = Measured {
        ops: got,
        elapsed: started.elapsed(),
        lat: published.lat.clone(),
        cpu: None,
    };
    task.delete_all().await.expect("clean up");
    (consumed, published)
}

/// 10 k msg/s for 3 s, one `publish` per message (10 concurrent per 1 ms tick); latency is
/// from just before the `publish` call to when the consumer had the message (before its ack).
async fn fixed_rate(pool: &Pool, consumer_pool: &Pool, agent: &AgentName) -> Measured {
    let task = fresh_task(pool, "bench-bus-fixed").await;
    let total = FIXED_PER_TICK * FIXED_TICKS;
    let consumer_log = consumer_pool.task(task.keys().task()).events();
    let epoch = Instant::now();
    let consumer = spawn_consumer(consumer_log, total, Some(epoch));
    let log = task.events();
    let mut publishers = Vec::with_capacity(FIXED_TICKS);
    let mut lag = Duration::ZERO;
    for tick in 0..FIXED_TICKS {
        let due = epoch + Duration::from_millis(tick as u64 + 10);
        tokio::time::sleep_until(due.into()).await;
        lag = lag.max(Instant::now().saturating_duration_since(due));
        let (log, agent) = (log.clone(), agent.clone());
        publishers.push(tokio::spawn(async move {
            let events: Vec<Event> = (0..FIXED_PER_TICK)
                .map(|_| event(&agent, epoch.elapsed().as_nanos().to_string()))
                .collect();
            for r in futures::future::join_all(events.iter().map(|e| log.publish(e))).await {
                r.expect("publish event");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher panicked");
    }
    let (got, mut lat) = consumer.await.expect("consumer panicked");
    lat.sort();
    eprintln!(
        "fixed rate: {got} of {total} consumed in {:.2} s; ticks ran at most {lag:?} late",
        epoch.elapsed().as_secs_f64()
    );
    task.delete_all().await.expect("clean up");
    Measured {
        ops: got,
        elapsed: epoch.elapsed(),
        lat,
        cpu: None,
    }
}

/// `SharedState::cas` on a fresh field each time (the write path), from `workers` tasks.
async fn cas_rate(pool: &Pool, workers: usize, total: usize) -> (Measured, usize) {
    let task = fresh_task(pool, "bench-cas").await;
    let state = task.state();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let lost = Arc::clone(&conflicts);
    let measured = drive(workers, total, 1, move |n| {
        let (state, lost) = (state.clone(), Arc::clone(&lost));
        async move {
            match state
                .cas(&format!("ours:{n}"), 0, CAS_VALUE.as_bytes())
                .await
                .expect("cas")
            {
                CasOutcome::Written { .. } => {}
                CasOutcome::Conflict { .. } => {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    task.delete_all().await.expect("clean up");
    (measured, conflicts.load(Ordering::Relaxed))
}

/// `enqueue_many` from half of [`CLIENTS`] tasks while the other half claim (COUNT
/// [`QUEUE_BATCH`], not blocking) and ack each batch; items acked per second, and the latency of
/// one claim + ack cycle.
async fn queue_rate(pool: &Pool, total: usize) -> Measured {
    let queue = pool.queue();
    queue.ensure_group().await.expect("work group");
    let item = WorkItem {
        task: TaskUid::new("bench-queue").expect("task uid"),
        subtask: SubtaskName::new("work").expect("subtask name"),
        attempt: 1,
        kind: WorkKind::Work,
        deadline_ms: u64::MAX,
    };
    let acked = Arc::new(AtomicUsize::new(0));
    let cycle_lat = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + ROW_DEADLINE;
    let mut claimers = Vec::new();
    for i in 0..CLIENTS / 2 {
        let (queue, acked, cycle_lat) = (queue.clone(), Arc::clone(&acked), Arc::clone(&cycle_lat));
        let agent = AgentName::new(&format!("bench-claimer-{i}")).expect("agent name");
        claimers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while acked.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let t0 = Instant::now();
                let claimed = queue.claim(&agent, QUEUE_BATCH, None).await.expect("claim");
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let ids: Vec<EntryId> = claimed.into_iter().map(|c| c.id).collect();
                queue.ack(&ids).await.expect("ack");
                lat.push(t0.elapsed());
                acked.fetch_add(ids.len(), Ordering::Relaxed);
            }
            cycle_lat.lock().expect("latency lock").extend(lat);
        }));
    }
    let producer_queue = queue.clone();
    drive(CLIENTS / 2, total, QUEUE_BATCH, move |_| {
        let (queue, item) = (producer_queue.clone(), item.clone());
        async move {
            let items = vec![item; QUEUE_BATCH];
            queue.enqueue_many(&items).await.expect("enqueue");
        }
    })
    .await;
    for c in claimers {
        c.await.expect("claimer panicked");
    }
    let elapsed = started.elapsed();
    let mut lat = std::mem::take(&mut *cycle_lat.lock().expect("latency lock"));
    lat.sort();
    Measured {
        ops: acked.load(Ordering::Relaxed),
        elapsed,
        lat,
        cpu: None,
    }
}

// ---------------------------------------------------------------------------------------------
// One suite per topology

/// Indexes of the baselines.
const RAW_XADD_1: usize = 0;
const RAW_XADD_P: usize = 1;
const RAW_CAS_1: usize = 2;
const RAW_CAS_P: usize = 3;
const RAW_PUBLISH_CONSUME: usize = 4;
/// How many baselines there are.
const RAWS: usize = 5;

struct Row {
    what: String,
    setup: String,
    ours: Measured,
    /// Index into [`Suite::best`].
    raw: Option<usize>,
    target: &'static str,
}

struct Suite {
    rows: Vec<Row>,
    /// The better (higher ops/s) of the two baseline runs, indexed by `RAW_*`.
    best: [Option<Raw>; RAWS],
    /// What each baseline is, and its runs before and after ours.
    baseline: Vec<(String, Option<Raw>, Option<Raw>)>,
    notes: Vec<String>,
}

fn connect(runtime: &tokio::runtime::Runtime, target: &Target) -> Redis {
    let topology = if target.cluster.is_some() {
        Topology::Cluster
    } else {
        Topology::Standalone
    };
    runtime
        .block_on(Redis::connect(RedisConfig::new(
            topology,
            target.urls.clone(),
        )))
        .expect("connect to Redis")
}

fn suite(runtime: &tokio::runtime::Runtime, target: &Target, scratch: &Path) -> Suite {
    eprintln!("== {}", target.name);
    let redis = connect(runtime, target);
    let consumer_redis = runtime
        .block_on(redis.dedicated(Duration::from_millis(200)))
        .expect("dedicated consumer connection");
    let pool_uid = PoolUid::new("bench").expect("pool uid");
    let pool = Pool::new(redis.clone(), &pool_uid);
    let consumer_pool = Pool::new(consumer_redis, &pool_uid);
    let agent = AgentName::new("bench-agent").expect("agent name");

    // The raw XADD carries a value as long as our event's JSON, so both move the same bytes.
    let sample = serde_json::to_string(&event(&agent, "progress".into())).expect("encode event");
    let payload = "x".repeat(sample.len());
    let raw_stream = "maos:bench:{raw}:xadd".to_owned();
    let xadd: Vec<String> = ["XADD", &raw_stream, "*", "event", &payload]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();

    // CAS: the layer loads its function library on first use; the raw baseline calls the same
    // function.
    let cas_task = runtime.block_on(fresh_task(&pool, "bench-cas"));
    let _ = runtime
        .block_on(cas_task.state().cas("warm-up", 0, CAS_VALUE.as_bytes()))
        .expect("warm-up cas");
    let (kv, ver) = (cas_task.keys().kv(), cas_task.keys().kv_versions());
    let fcall: Vec<String> = [
        "FCALL",
        "maos_state_cas",
        "2",
        &kv,
        &ver,
        "raw:__rand_int__",
        "0",
        CAS_VALUE,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let rand = ["-r", "1000000000"];

    // Baselines first, then ours, on the same server.
    let del = |key: &str| {
        let mut conn = redis.connection();
        let _: redis::RedisResult<i64> =
            runtime.block_on(redis::cmd("DEL").arg(key).query_async(&mut conn));
    };
    let (xadd_port, cas_port) = (target.port_for(&raw_stream), target.port_for(&kv));
    // The machine is shared: run the baseline before and after ours, and compare against the
    // better of the two.
    let pc_stream = "maos:bench:{raw}:pc".to_owned();
    let pc_port = target.port_for(&pc_stream);
    let raw_runs = || -> [Option<Raw>; RAWS] {
        let xadd_1 = redis_benchmark(xadd_port, scratch, 1, N_SINGLE, &[], &xadd);
        del(&raw_stream);
        let xadd_p = redis_benchmark(xadd_port, scratch, PIPELINE, N_PIPELINED, &[], &xadd);
        del(&raw_stream);
        let cas_1 = redis_benchmark(cas_port, scratch, 1, N_SINGLE, &rand, &fcall);
        del(&kv);
        del(&ver);
        let cas_p = redis_benchmark(cas_port, scratch, PIPELINE, N_PIPELINED, &rand, &fcall);
        del(&kv);
        del(&ver);
        let pc = raw_publish_consume(runtime, pc_port, scratch, &pc_stream, &payload);
        del(&pc_stream);
        [xadd_1, xadd_p, cas_1, cas_p, pc]
    };
    let before = raw_runs();

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    eprintln!("ours: publish");
    let task = runtime.block_on(fresh_task(&pool, "bench-bus-1"));
    let (mut m, cpu) = with_cpu(
        runtime,
        publish_rate(task.events(), agent.clone(), N_SINGLE, 1),
    );
    m.cpu = cpu;
    runtime.block_on(task.delete_all()).expect("clean up");
    rows.push(Row {
        what: "bus: `EventLog::publish` (1 event per call)".into(),
        setup: format!("{CLIENTS} tasks, 1 shared conn ↔ raw XADD -c {CLIENTS} -P 1"),
        ours: m,
        raw: Some(RAW_XADD_1),
        target: "≥ 70 % of raw",
    });

    eprintln!("ours: publish_many");
    let task = runtime.block_on(fresh_task(&pool, "bench-bus-16"));
    let (mut m, cpu) = with_cpu(
        runtime,
        publish_rate(task.events(), agent.clone(), N_PIPELINED, PIPELINE),
    );
    m.cpu = cpu;
    runtime.block_on(task.delete_all()).expect("clean up");
    rows.push(Row {
        what: format!("bus: `EventLog::publish_many` ({PIPELINE} per call)"),
        setup: format!("{CLIENTS} tasks, 1 shared conn ↔ raw XADD -c {CLIENTS} -P {PIPELINE}"),
        ours: m,
        raw: Some(RAW_XADD_P),
        target: "≥ 70 % of raw; ≥ 100 k msg/s",
    });

    eprintln!("ours: publish + consume");
    let ((mut consumed, _published), cpu) = with_cpu(
        runtime,
        publish_consume(&pool, &consumer_pool, &agent, N_PIPELINED),
    );
    consumed.cpu = cpu;
    rows.push(Row {
        what: format!(
            "bus: publish_many ({PIPELINE}) + consume (COUNT {CONSUME_COUNT}) + XACK, msgs consumed/s"
        ),
        setup: format!(
            "{CLIENTS} publishing tasks on 1 shared conn + 1 consumer on its own conn ↔ raw XADD -c {CLIENTS} -P {PIPELINE} + a bare consumer (XREADGROUP COUNT {CONSUME_COUNT} + XACK, nothing decoded)"
        ),
        ours: consumed,
        raw: Some(RAW_PUBLISH_CONSUME),
        target: "≥ 70 % of raw; ≥ 100 k msg/s",
    });

    eprintln!("ours: fixed rate");
    let (mut m, cpu) = with_cpu(runtime, fixed_rate(&pool, &consumer_pool, &agent));
    m.cpu = cpu;
    rows.push(Row {
        what: "bus at a fixed 10 k msg/s, publish → consumed latency".into(),
        setup: format!(
            "{FIXED_PER_TICK} concurrent `publish` calls per 1 ms tick for {} s, 1 shared conn + 1 consumer conn (BLOCK, COUNT {CONSUME_COUNT})",
            FIXED_TICKS / 1000
        ),
        ours: m,
        raw: None,
        target: "p95 ≤ 5 ms",
    });

    eprintln!("ours: cas");
    let ((mut m, lost_1), cpu) = with_cpu(runtime, cas_rate(&pool, CLIENTS, N_SINGLE));
    m.cpu = cpu;
    rows.push(Row {
        what: "shared state: `SharedState::cas` (write path)".into(),
        setup: format!("{CLIENTS} tasks, 1 shared conn ↔ raw FCALL -c {CLIENTS} -P 1"),
        ours: m,
        raw: Some(RAW_CAS_1),
        target: "≥ 70 % of raw; p95 ≤ 2 ms; ≥ 50 k ops/s",
    });
    let deep = CLIENTS * PIPELINE;
    let ((mut m, lost_p), cpu) = with_cpu(runtime, cas_rate(&pool, deep, N_PIPELINED));
    m.cpu = cpu;
    rows.push(Row {
        what: "shared state: `SharedState::cas` (write path)".into(),
        setup: format!(
            "{deep} tasks, 1 shared conn (auto-pipelined) ↔ raw FCALL -c {CLIENTS} -P {PIPELINE}"
        ),
        ours: m,
        raw: Some(RAW_CAS_P),
        target: "≥ 70 % of raw",
    });
    if lost_1 + lost_p > 0 {
        notes.push(format!(
            "{} of our CAS calls reported a conflict (each writes a fresh field; expected none).",
            lost_1 + lost_p
        ));
    }

    eprintln!("ours: work queue");
    let (mut m, cpu) = with_cpu(runtime, queue_rate(&pool, N_QUEUE));
    m.cpu = cpu;
    rows.push(Row {
        what: format!(
            "work queue: `enqueue_many` ({QUEUE_BATCH}) + `claim` (COUNT {QUEUE_BATCH}) + `ack`, items/s; latency = one claim + ack cycle"
        ),
        setup: format!(
            "{} producer + {} claimer tasks, 1 shared conn",
            CLIENTS / 2,
            CLIENTS / 2
        ),
        ours: m,
        raw: None,
        target: "—",
    });
    runtime
        .block_on(
            pool.queue()
                .purge_task(&TaskUid::new("bench-queue").expect("uid")),
        )
        .expect("clean up queue");

    eprintln!("baseline again, after ours");
    let after = raw_runs();
    let best: [Option<Raw>; RAWS] = std::array::from_fn(|i| match (before[i], after[i]) {
        (Some(a), Some(b)) => Some(if a.rps >= b.rps { a } else { b }),
        (a, b) => a.or(b),
    });
    let [raw_xadd_1, raw_xadd_p, raw_cas_1, raw_cas_p, _] = best;
    let spread = (0..RAWS)
        .filter_map(|i| match (before[i], after[i]) {
            (Some(a), Some(b)) if a.rps > 0.0 && b.rps > 0.0 => {
                Some(a.rps.max(b.rps) / a.rps.min(b.rps))
            }
            _ => None,
        })
        .fold(1.0_f64, f64::max);

    if spread > 1.25 {
        notes.push(format!(
            "The same raw run differed by up to {spread:.1}× between before and after ours: other jobs share this machine's cores. Ratios use the better raw run, which is the harder comparison for our layer."
        ));
    }
    let floor = |raw: Option<Raw>, floor: f64, what: &str, setup: &str| match raw {
        Some(r) if r.rps < floor => Some(format!(
            "Raw Redis itself reaches only {} {what} ({setup}) here, below the {} floor, so the floor cannot apply to that row.",
            rate(r.rps),
            rate(floor)
        )),
        _ => None,
    };
    notes.extend(floor(
        raw_xadd_1,
        100_000.0,
        "XADD/s",
        &format!("-c {CLIENTS} -P 1"),
    ));
    notes.extend(floor(
        raw_xadd_p,
        100_000.0,
        "XADD/s",
        &format!("-c {CLIENTS} -P {PIPELINE}"),
    ));
    notes.extend(floor(
        raw_cas_1,
        50_000.0,
        "FCALL/s",
        &format!("-c {CLIENTS} -P 1"),
    ));
    notes.extend(floor(
        raw_cas_p,
        50_000.0,
        "FCALL/s",
        &format!("-c {CLIENTS} -P {PIPELINE}"),
    ));

    let names = [
        format!("XADD, -c {CLIENTS} -P 1"),
        format!("XADD, -c {CLIENTS} -P {PIPELINE}"),
        format!("FCALL of the CAS function (write path), -c {CLIENTS} -P 1"),
        format!("FCALL of the CAS function (write path), -c {CLIENTS} -P {PIPELINE}"),
        format!(
            "XADD -c {CLIENTS} -P {PIPELINE} while a bare consumer drains the stream, msgs consumed/s (latency: XADD's)"
        ),
    ];
    let baseline = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (name, before[i], after[i]))
        .collect();
    Suite {
        rows,
        best,
        baseline,
        notes,
    }
}

fn print_suite(title: &str, suite: &Suite) {
    println!("### {title}\n");
    println!(
        "| what | concurrency / pipelining (ours ↔ raw) | ours ops/s | raw Redis ops/s | ours / raw | p50 ms | p95 ms | p99 ms | target | our client CPU µs/op |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &suite.rows {
        let ours = row.ours.rate();
        let (raw, ratio) = match row.raw.and_then(|i| suite.best[i]) {
            Some(r) => (rate(r.rps), format!("{:.0} %", 100.0 * ours / r.rps)),
            None => ("—".to_owned(), "—".to_owned()),
        };
        let lat = &row.ours.lat;
        let cpu = match row.ours.cpu {
            Some(cpu) if row.ours.ops > 0 => {
                format!("{:.1}", cpu.as_secs_f64() * 1e6 / row.ours.ops as f64)
            }
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.what,
            row.setup,
            rate(ours),
            raw,
            ratio,
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.95)),
            ms(percentile(lat, 0.99)),
            row.target,
            cpu
        );
    }
    println!(
        "\nLatency columns are ours: per call (a `publish_many` call carries {PIPELINE} events), except where the row says otherwise. Client CPU is this whole bench process (every tokio thread: encoding, the redis client's connection driver, decoding) per op of the row, from /proc/self/stat (10 ms ticks); Redis's own CPU is not in it.\n"
    );
    println!(
        "Baseline, `redis-benchmark` on the same server in the same run, before and after ours; the ratios above use the better run, whose latencies are shown:\n"
    );
    println!("| raw command | ops/s before | ops/s after | p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let show = |r: Option<Raw>| r.map_or_else(|| "failed (see stderr)".to_owned(), |r| rate(r.rps));
    for (what, before, after) in &suite.baseline {
        let best = match (before, after) {
            (Some(a), Some(b)) => Some(if a.rps >= b.rps { *a } else { *b }),
            (a, b) => a.or(*b),
        };
        match best {
            Some(r) => println!(
                "| {what} | {} | {} | {:.2} | {:.2} | {:.2} |",
                show(*before),
                show(*after),
                r.p50,
                r.p95,
                r.p99
            ),
            None => println!("| {what} | failed (see stderr) | failed | | | |"),
        }
    }
    println!();
    for note in &suite.notes {
        println!("- {note}");
    }
    if !suite.notes.is_empty() {
        println!();
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maos-bench-coord-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

fn main() {
    // `cargo bench` passes --bench; nothing else is configurable.
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let scratch = scratch_dir();
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "redis-server (version unknown)".into());

    let standalone = {
        let server = RedisServer::start().expect("redis-server starts");
        let target = Target {
            name: "standalone",
            port: server.port(),
            urls: vec![server.url()],
            cluster: None,
        };
        suite(&runtime, &target, &scratch)
    };
    let cluster = match RedisCluster::start() {
        Ok(cluster) => {
            let target = Target {
                name: "cluster",
                port: cluster.ports()[0],
                urls: cluster.urls(),
                cluster: Some(&cluster),
            };
            Some(suite(&runtime, &target, &scratch))
        }
        Err(e) => {
            eprintln!("cluster did not start: {e}");
            None
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);

    println!("## Coordination layer (maos_core::coord)\n");
    println!(
        "One run, each table on one fresh server: the real `redis-benchmark` ({CLIENTS} connections, `--csv`) doing the raw equivalent, then our layer with the same concurrency ({CLIENTS} tokio tasks sharing the layer's ONE multiplexed connection, which pipelines whatever is in flight; consumers get one dedicated connection), then `redis-benchmark` again. Client, server and redis-benchmark share the machine's cores. {version}. Raw XADD values are as long as our event JSON; the raw CAS is FCALL of the layer's own function (`maos_state_cas`) on the same two keys, each call on a fresh field (`__rand_int__`), as ours — both take the write path. Bus consumers read with COUNT {CONSUME_COUNT} and ack each batch with one XACK. On the cluster, redis-benchmark talks straight to the master that owns the key (one task's keys live on one master, as ours do), not with `--cluster`, which would spread its load over all masters; our shared handle does the same (`maos_core::coord::route`: a request whose keys share a slot goes over a multiplexed connection to that slot's master, not through redis-rs's cluster task), so on the cluster \"1 shared conn\" means one per master.\n"
    );
    println!(
        "Equal concurrency means equal requests in flight. `redis-benchmark -P 1` keeps {CLIENTS} connections with one request each; ours keeps {CLIENTS} requests in flight on one multiplexed connection, which the client writes (and the server reads) in batches, so our unpipelined rows can beat raw `-P 1`: that is the multiplexer, not a shortcut. The `-P {PIPELINE}` comparisons have {} commands in flight on each side (ours: {CLIENTS} `publish_many` calls of {PIPELINE}, or that many concurrent `cas` calls).\n",
        CLIENTS * PIPELINE
    );
    print_suite("Standalone redis-server", &standalone);
    if let Some(cluster) = &cluster {
        print_suite(
            "Redis Cluster, 6 nodes (3 masters + 3 replicas); one task's keys live on one master",
            cluster,
        );
    } else {
        println!("Redis Cluster: not measured (the cluster did not start; see stderr).\n");
    }
    eprintln!("coord bench took {:.1} s", started.elapsed().as_secs_f64());
}
