//! Checkpoint save and restore with the operator's own code paths: `maos_core::coord::dump`
//! (one atomic MULTI/EXEC read of a task's keys; the restore under another task uid) against a real
//! redis-server, and `maos_operator::checkpoint::store::Store` (zstd JSON streamed to S3 with a
//! sha256; verified download) against a real S3 server (moto), for 1, 10 and 100 MiB of a
//! task's shared state.
//!
//! Each save and each restore runs in a fresh process (this binary again, with
//! [`CHILD_FLAG`]), so the peak RSS it reports (VmHWM) is that operation's and nothing else's,
//! as it would be in the operator. Targets (DESIGN.md §8, issue #7): 10 MiB saved in ≤ 1 s;
//! restore byte-identical; peak RSS ≤ 2 × the state size.
//!
//! Prints a Markdown section for BENCHMARKS.md (`make bench` collects it); diagnostics go to
//! stderr. Nothing here asserts a timing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use maos_core::api::v1alpha1::{TaskSpec, TaskStatus};
use maos_core::coord::dump::{self, KeyDump, TaskDump};
use maos_core::coord::keys::field;
use maos_core::coord::state::SharedState;
use maos_core::coord::{Pool, PoolUid, Redis, RedisConfig, TaskKeys, TaskUid, Topology};
use maos_e2e::launch::redis::RedisServer;
use maos_e2e::launch::s3::S3Server;
use maos_e2e::procfs;
use maos_operator::checkpoint::snapshot::{self, FORMAT, Snapshot, TaskIdentity};
use maos_operator::checkpoint::store::{ObjectRef, Store, StoreConfig, StoreError, hex_sha256};
use serde::{Deserialize, Serialize};

/// State sizes measured, in MiB.
const SIZES_MIB: [usize; 3] = [1, 10, 100];
/// Size of each shared-state value: model output of a realistic length, well under the 1 MiB
/// cap on one value.
const VALUE_BYTES: usize = 64 << 10;
/// Fresh-process runs of each save and restore per size.
const RUNS: usize = 3;
/// The bucket and key prefix objects go to.
const BUCKET: &str = "maos-bench";
const PREFIX: &str = "bench/";
/// The namespace in object keys and snapshots.
const NAMESPACE: &str = "bench";
/// Seed of the prose generator, so every run stores the same bytes.
const SEED: u64 = 0x6d61_6f73_2d63_6b70;
/// First argument that makes this binary measure one operation instead of running the bench;
/// the second is the [`Job`] as JSON.
const CHILD_FLAG: &str = "--checkpoint-child";
/// Longest one child may run before the bench gives up on it.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

const MIB: f64 = 1024.0 * 1024.0;

/// Words of the generated prose: a few hundred, drawn uniformly, so zstd finds about what it
/// finds in real model output (repeated words, no long repeated passages).
const VOCABULARY: &str = "
the of and to in a is that for it as with was on be by this are or from at an which
have not has but were can their more they its also been one all these other two may than
we our would when there some into only such will about between most time each both first
however because through while where after those under over should could must results data
model models system systems agent agents task tasks state memory cache latency throughput
request requests response responses query queries index indexes vector vectors embedding
embeddings search retrieval ranking recall precision accuracy benchmark benchmarks dataset
datasets training inference evaluation approach method methods algorithm algorithms cost
costs price pricing storage database databases cluster clusters node nodes replica replicas
shard shards partition partitions consistency availability durability failure failures
recovery backup snapshot snapshots checkpoint checkpoints write writes read reads update
updates scale scaling horizontal vertical performance efficient efficiency overhead tradeoff
tradeoffs design architecture component components service services interface api client
server network bandwidth disk memory compute cpu gpu hardware software open source license
community support documentation ecosystem integration plugin plugins library libraries
framework frameworks language languages python rust go java typescript production deployment
kubernetes container containers operator operators configuration security authentication
authorization encryption compliance audit logging monitoring metrics alerting dashboard
report summary analysis comparison evaluation findings recommendation recommendations option
options alternative alternatives candidate candidates vendor vendors managed hosted cloud
self small large larger smaller higher lower faster slower better worse strong weak simple
complex limited significant typical common popular mature stable new recent current future
several many few most less least very quite often usually generally particularly especially
notably clearly roughly approximately nearly almost fully partially directly indirectly
use uses used using provide provides provided providing support supports supported require
requires required offer offers offered include includes included including allow allows
allowed enable enables improve improves reduce reduces increase increases handle handles
measure measured compare compared choose chosen depend depends consider considered suggest
suggests show shows shown indicate indicates remain remains appear appears need needs
workload workloads team teams user users customer customers organization organizations
year years month months week day hour minute second percent million billion thousand
source sources evidence study studies paper papers survey experiment experiments test tests
limit limits risk risks issue issues problem problems question questions answer answers
example examples case cases scenario scenarios pattern patterns practice practices
";

// ---------------------------------------------------------------------------------------------
// What a child measures, and what it reports

/// One operation for a child process to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    redis_url: String,
    endpoint: String,
    pool: String,
    /// The task whose state is saved (and, for a restore, whose dump the object holds).
    task: String,
    /// The Task name and checkpoint name in the object key.
    task_name: String,
    checkpoint: String,
    phase: Phase,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Phase {
    /// dump::read of `task`, then Store::save.
    Save,
    /// Store::load of the object with `sha256`, then dump::restore under task `target`.
    Restore { target: String, sha256: String },
    /// The parts of a save and a restore timed one by one (not for RSS).
    Profile { sha256: String },
}

/// One save, as a child measured it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SaveRun {
    read_ms: f64,
    save_ms: f64,
    entries: u64,
    location: String,
    size: u64,
    sha256: String,
    memory: Memory,
}

/// One restore, as a child measured it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RestoreRun {
    load_ms: f64,
    write_ms: f64,
    written: u64,
    memory: Memory,
}

/// The RSS of a child around its two phases (read then save, or load then write), in KiB.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Memory {
    /// VmRSS just before the first phase.
    baseline_kib: u64,
    /// VmHWM when the first phase returns.
    first_peak_kib: u64,
    /// VmRSS when the first phase returns (what it keeps, and what the allocator kept).
    second_start_kib: u64,
    /// VmHWM when the second phase returns; since [`reset_peak`] at its start where the
    /// kernel allowed it (`phase_reset`), else since the process started.
    second_peak_kib: u64,
    phase_reset: bool,
}

impl Memory {
    /// Runs `first`, then `second` on its output; returns what `second` returned, the time of
    /// each, and the memory around them (the peak of each on its own where the kernel allows).
    async fn around<A, B>(
        first: impl Future<Output = A>,
        second: impl AsyncFnOnce(A) -> B,
    ) -> (B, Duration, Duration, Memory) {
        let baseline_kib = status_kib("VmRSS:");
        let started = Instant::now();
        let a = first.await;
        let first_time = started.elapsed();
        let first_peak_kib = status_kib("VmHWM:");
        let second_start_kib = status_kib("VmRSS:");
        let phase_reset = reset_peak();
        let started = Instant::now();
        let b = second(a).await;
        let second_time = started.elapsed();
        let memory = Memory {
            baseline_kib,
            first_peak_kib,
            second_start_kib,
            second_peak_kib: status_kib("VmHWM:"),
            phase_reset,
        };
        (b, first_time, second_time, memory)
    }

    /// The process's peak over both phases.
    fn peak_kib(&self) -> u64 {
        self.first_peak_kib.max(self.second_peak_kib)
    }
}

/// The parts of a save and a restore, timed one by one in one process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Profile {
    /// The read transaction's own time inside Redis (INFO commandstats).
    script_server_ms: Option<f64>,
    read_ms: f64,
    /// HGETALL of the `kv` hash alone on the same connection: the reply's transfer and parse
    /// without the script.
    hgetall_ms: f64,
    /// HGETALL's own time inside Redis.
    hgetall_server_ms: Option<f64>,
    json_ms: f64,
    json_bytes: u64,
    encode_ms: f64,
    encoded_bytes: u64,
    fetch_ms: f64,
    sha_ms: f64,
    decode_ms: f64,
    parse_ms: f64,
    /// `serde_json::from_reader` of the uncompressed JSON through a buffered reader, as
    /// `snapshot::decode` reads it (but without zstd).
    parse_reader_ms: f64,
    wrong_sha_refused: bool,
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 where it cannot be read.
fn status_kib(field: &str) -> u64 {
    procfs::status_kib(None, field).unwrap_or(0)
}

/// Resets VmHWM to the current RSS (`/proc/self/clear_refs` 5, Linux ≥ 4.0), so the next peak
/// read is the next phase's own; false where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn mib(bytes: f64) -> f64 {
    bytes / MIB
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Deterministic prose from [`VOCABULARY`]: sentences of 6 to 24 words with the odd comma or
/// figure, in paragraphs of 3 to 7 sentences.
struct Prose {
    words: Vec<&'static str>,
    state: u64,
}

impl Prose {
    fn new(seed: u64) -> Self {
        Self {
            words: VOCABULARY.split_whitespace().collect(),
            state: seed,
        }
    }

    /// splitmix64: small, fast, and good enough to pick words.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Exactly `bytes` bytes of ASCII prose.
    fn text(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 256);
        while out.len() < bytes {
            let sentences = 3 + self.below(5);
            for s in 0..sentences {
                let words = 6 + self.below(19);
                for w in 0..words {
                    if w > 0 {
                        out.push(' ');
                    }
                    if self.below(40) == 0 {
                        let _ = write!(out, "{}.{}", self.below(1000), self.below(10));
                        if self.below(2) == 0 {
                            out.push('%');
                        }
                    } else {
                        let pick = self.below(self.words.len());
                        let word = self.words[pick];
                        if w == 0 {
                            let mut chars = word.chars();
                            if let Some(first) = chars.next() {
                                out.push(first.to_ascii_uppercase());
                                out.push_str(chars.as_str());
                            }
                        } else {
                            out.push_str(word);
                        }
                    }
                    if w + 1 < words && self.below(12) == 0 {
                        out.push(',');
                    }
                }
                out.push('.');
                if s + 1 < sentences {
                    out.push(' ');
                }
            }
            out.push_str("\n\n");
        }
        out.truncate(bytes);
        out
    }
}

async fn connect(url: &str) -> Redis {
    Redis::connect(RedisConfig::new(Topology::Standalone, [url]))
        .await
        .expect("connect to redis-server")
}

fn task_keys(pool: &str, task: &str) -> TaskKeys {
    TaskKeys::new(
        &PoolUid::new(pool).expect("pool uid"),
        &TaskUid::new(task).expect("task uid"),
    )
}

/// The dump a restore under `target` must read back as: `original` with `meta` naming it.
fn expected_after_restore(original: &TaskDump, target: &TaskKeys) -> TaskDump {
    let mut expected = original.clone();
    if let Some(KeyDump::Hash { fields }) = expected.keys.get_mut("meta") {
        fields.insert(
            field::META_TASK.to_owned(),
            target.task().as_str().to_owned(),
        );
        fields.insert(
            field::META_POOL.to_owned(),
            target.pool().as_str().to_owned(),
        );
    }
    expected
}

/// The first key where two dumps differ, for the diagnostics of a failed comparison.
fn first_difference(a: &TaskDump, b: &TaskDump) -> String {
    for (name, value) in &a.keys {
        if b.keys.get(name) != Some(value) {
            return format!("key {name} differs or is missing");
        }
    }
    for name in b.keys.keys() {
        if !a.keys.contains_key(name) {
            return format!("key {name} is extra");
        }
    }
    "no difference".to_owned()
}

// ---------------------------------------------------------------------------------------------
// The child: one operation in a fresh process

/// A store configured as the operator's would be for this S3 server; credentials come from
/// the standard AWS environment the parent passed (`S3Server::operator_env`).
async fn store_for(job: &Job) -> Store {
    Store::new(StoreConfig {
        endpoint: Some(job.endpoint.clone()),
        region: S3Server::REGION.to_owned(),
        bucket: BUCKET.to_owned(),
        prefix: PREFIX.to_owned(),
        force_path_style: true,
    })
    .await
}

fn object_of(store: &Store, job: &Job) -> ObjectRef {
    store.object_for(None, None, NAMESPACE, &job.task_name, &job.checkpoint)
}

/// A snapshot as the Checkpoint controller builds it, around `state`.
fn snapshot_of(job: &Job, state: TaskDump) -> Snapshot {
    let spec: TaskSpec = serde_json::from_value(serde_json::json!({
        "prompt": "Compare open-source vector databases for a production RAG system",
        "poolRef": {"name": "default"}
    }))
    .expect("a valid TaskSpec");
    Snapshot {
        format: FORMAT,
        task: TaskIdentity {
            namespace: NAMESPACE.to_owned(),
            name: job.task_name.clone(),
            uid: job.task.clone(),
            pool_uid: job.pool.clone(),
        },
        spec,
        status: TaskStatus::default(),
        state,
    }
}

/// Connections made and used once (TCP, the S3 client's credentials, the first read done),
/// as in an operator that has been running: the measured operation pays none of that.
async fn warm_up(redis: &Redis, store: &Store, job: &Job, empty_task: &TaskKeys) {
    dump::read(redis, empty_task).await.expect("warm-up read");
    let absent = store.object_for(None, None, NAMESPACE, "warm-up", &job.checkpoint);
    store.delete(&absent).await.expect("warm-up request to S3");
}

async fn child_save(job: &Job) -> SaveRun {
    let redis = connect(&job.redis_url).await;
    let store = store_for(job).await;
    let keys = task_keys(&job.pool, &job.task);
    warm_up(&redis, &store, job, &task_keys(&job.pool, "warm-up")).await;
    let object = object_of(&store, job);
    // The snapshot wraps the dump as the Checkpoint controller's does: a move, no copy.
    let read = async {
        let state = dump::read(&redis, &keys).await.expect("dump::read");
        (state.entries(), snapshot_of(job, state))
    };
    let save = async |(entries, snapshot): (u64, Snapshot)| {
        let saved = store.save(&object, snapshot).await.expect("Store::save");
        (entries, saved)
    };
    let ((entries, saved), read_time, save_time, memory) = Memory::around(read, save).await;
    SaveRun {
        read_ms: ms(read_time),
        save_ms: ms(save_time),
        entries,
        location: object.to_string(),
        size: saved.size,
        sha256: saved.sha256,
        memory,
    }
}

async fn child_restore(job: &Job, target: &str, sha256: &str) -> RestoreRun {
    let redis = connect(&job.redis_url).await;
    let store = store_for(job).await;
    let target = task_keys(&job.pool, target);
    // The target is empty, as a resumed Task's is.
    warm_up(&redis, &store, job, &target).await;
    let object = object_of(&store, job);
    let load = async { store.load(&object, sha256).await.expect("Store::load") };
    let write = async |snapshot: Snapshot| {
        dump::restore(&redis, &target, &snapshot.state)
            .await
            .expect("dump::restore")
    };
    let (written, load_time, write_time, memory) = Memory::around(load, write).await;
    RestoreRun {
        load_ms: ms(load_time),
        write_ms: ms(write_time),
        written,
        memory,
    }
}

/// The time inside Redis of the commands named `commands` since the last `CONFIG RESETSTAT`,
/// from INFO commandstats.
async fn server_ms(redis: &Redis, commands: &[&str]) -> Option<f64> {
    let mut conn = redis.connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .ok()?;
    let usec: u64 = info
        .lines()
        .filter(|l| {
            l.strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
                .is_some_and(|(name, _)| commands.contains(&name))
        })
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    (usec > 0).then(|| usec as f64 / 1000.0)
}

async fn child_profile(job: &Job, sha256: &str) -> Profile {
    let redis = connect(&job.redis_url).await;
    let store = store_for(job).await;
    let keys = task_keys(&job.pool, &job.task);
    warm_up(&redis, &store, job, &task_keys(&job.pool, "warm-up")).await;
    let object = object_of(&store, job);
    let mut conn = redis.connection();

    let reset_stats = async || {
        let mut conn = redis.connection();
        let _: redis::Value = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
    };
    reset_stats().await;
    let started = Instant::now();
    let state = dump::read(&redis, &keys).await.expect("dump::read");
    let read_ms = ms(started.elapsed());
    let script_server_ms = server_ms(
        &redis,
        &[
            "hgetall",
            "xrange",
            "xinfo|stream",
            "xinfo|groups",
            "smembers",
            "get",
            "exec",
        ],
    )
    .await;

    reset_stats().await;
    let started = Instant::now();
    let raw: redis::Value = redis::cmd("HGETALL")
        .arg(keys.kv())
        .query_async(&mut conn)
        .await
        .expect("HGETALL kv");
    let hgetall_ms = ms(started.elapsed());
    let hgetall_server_ms = server_ms(&redis, &["hgetall"]).await;
    drop(raw);

    let snapshot = snapshot_of(job, state);
    let started = Instant::now();
    let json = serde_json::to_vec(&snapshot).expect("JSON");
    let json_ms = ms(started.elapsed());
    let json_bytes = json.len() as u64;
    drop(json);
    let started = Instant::now();
    let encoded = snapshot::encode(&snapshot, Vec::new()).expect("snapshot::encode");
    let encode_ms = ms(started.elapsed());
    drop(encoded);

    let started = Instant::now();
    let fetched = store.fetch(&object).await.expect("Store::fetch");
    let fetch_ms = ms(started.elapsed());
    let started = Instant::now();
    let actual = hex_sha256(&fetched);
    let sha_ms = ms(started.elapsed());
    assert_eq!(actual, sha256, "the stored object is the one saved");
    let started = Instant::now();
    let decoded = snapshot::decode(&fetched[..]).expect("snapshot::decode");
    let decode_ms = ms(started.elapsed());
    assert!(decoded == snapshot, "the decoded snapshot is the saved one");
    drop(decoded);
    let json = serde_json::to_vec(&snapshot).expect("JSON");
    let started = Instant::now();
    let parsed: Snapshot = serde_json::from_slice(&json).expect("JSON parse");
    let parse_ms = ms(started.elapsed());
    drop(parsed);
    let started = Instant::now();
    let reader = std::io::BufReader::with_capacity(256 << 10, json.as_slice());
    let parsed: Snapshot = serde_json::from_reader(reader).expect("JSON parse from a reader");
    let parse_reader_ms = ms(started.elapsed());
    drop(parsed);

    let wrong = "0".repeat(64);
    let wrong_sha_refused = matches!(
        store.load(&object, &wrong).await,
        Err(StoreError::Corrupt { .. })
    );
    Profile {
        script_server_ms,
        read_ms,
        hgetall_ms,
        hgetall_server_ms,
        json_ms,
        json_bytes,
        encode_ms,
        encoded_bytes: fetched.len() as u64,
        fetch_ms,
        sha_ms,
        decode_ms,
        parse_ms,
        parse_reader_ms,
        wrong_sha_refused,
    }
}

/// Runs the job in `json` and prints its result as one JSON line on stdout.
fn child_main(json: &str) {
    let job: Job = serde_json::from_str(json).expect("a job from the parent");
    // The operator's runtime: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let line = runtime.block_on(async {
        match &job.phase {
            Phase::Save => serde_json::to_string(&child_save(&job).await),
            Phase::Restore { target, sha256 } => {
                serde_json::to_string(&child_restore(&job, target, sha256).await)
            }
            Phase::Profile { sha256 } => serde_json::to_string(&child_profile(&job, sha256).await),
        }
    });
    println!("{}", line.expect("a result as JSON"));
}

// ---------------------------------------------------------------------------------------------
// The parent: servers, state, children, checks

/// Runs `job` in a fresh child process with the S3 server's environment and parses its result.
async fn in_child<T: serde::de::DeserializeOwned>(job: &Job, s3: &S3Server) -> T {
    let exe = std::env::current_exe().expect("this bench's own path");
    let child = tokio::process::Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(serde_json::to_string(job).expect("job as JSON"))
        .envs(s3.operator_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CHILD_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "child {:?} still running after {CHILD_TIMEOUT:?}",
                job.phase
            )
        })
        .expect("run the child");
    assert!(
        output.status.success(),
        "child {:?} failed: {}",
        job.phase,
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("child result {line:?}: {e}"))
}

/// Fills `state` with `mib` MiB of prose in [`VALUE_BYTES`] values; returns how many.
async fn fill(state: &SharedState, mib: usize, prose: &mut Prose) -> usize {
    let values = (mib << 20) / VALUE_BYTES;
    for i in 0..values {
        let value = prose.text(VALUE_BYTES);
        state
            .put(&format!("research/notes-{i:05}"), value.as_bytes())
            .await
            .expect("state put");
    }
    values
}

/// Everything measured for one state size.
struct SizeResult {
    mib: usize,
    values: usize,
    saves: Vec<SaveRun>,
    restores: Vec<RestoreRun>,
    /// Per run: the restored task read back equal to the original (but `meta`'s task).
    identical: Vec<bool>,
    /// Per run: the stored object's own sha256 and size, fetched by the bench's client, are
    /// those `Store::save` returned (`Store::load` checked the same sha256 in the child).
    sha_matches: Vec<bool>,
    profile: Profile,
}

async fn measure_size(
    mib: usize,
    redis: &Redis,
    redis_url: &str,
    s3: &S3Server,
    pool_uid: &PoolUid,
    prose: &mut Prose,
) -> SizeResult {
    let pool = Pool::new(redis.clone(), pool_uid);
    let source_uid = TaskUid::new(&uuid::Uuid::new_v4().to_string()).expect("uid");
    let source = pool.task(&source_uid);
    source.register(None).await.expect("register");
    let filled = Instant::now();
    let values = fill(&source.state(), mib, prose).await;
    eprintln!(
        "checkpoint bench: {mib} MiB in {values} values written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let original = dump::read(redis, source.keys()).await.expect("read");
    let task_name = format!("fill-{mib}mib");
    let job = |checkpoint: String, phase: Phase| Job {
        redis_url: redis_url.to_owned(),
        endpoint: s3.endpoint(),
        pool: pool_uid.as_str().to_owned(),
        task: source_uid.as_str().to_owned(),
        task_name: task_name.clone(),
        checkpoint,
        phase,
    };

    let mut saves = Vec::new();
    let mut restores = Vec::new();
    let mut identical = Vec::new();
    let mut sha_matches = Vec::new();
    for run in 0..RUNS {
        let checkpoint = format!("run-{run}");
        let save: SaveRun = in_child(&job(checkpoint.clone(), Phase::Save), s3).await;
        let object = ObjectRef::parse(&save.location).expect("an s3:// location");
        let stored = s3
            .client()
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
            .expect("get the saved object")
            .body
            .collect()
            .await
            .expect("read the saved object")
            .into_bytes();
        sha_matches.push(hex_sha256(&stored) == save.sha256 && stored.len() as u64 == save.size);

        let target_uid = TaskUid::new(&uuid::Uuid::new_v4().to_string()).expect("uid");
        let restore: RestoreRun = in_child(
            &job(
                checkpoint,
                Phase::Restore {
                    target: target_uid.as_str().to_owned(),
                    sha256: save.sha256.clone(),
                },
            ),
            s3,
        )
        .await;
        let target = pool.task(&target_uid);
        let copy = dump::read(redis, target.keys()).await.expect("read copy");
        let expected = expected_after_restore(&original, target.keys());
        let same = copy == expected;
        if !same {
            eprintln!(
                "checkpoint bench: {mib} MiB run {run}: the restored task differs: {}",
                first_difference(&expected, &copy)
            );
        }
        identical.push(same);
        pool.delete_task(&target_uid)
            .await
            .expect("delete the copy");
        eprintln!(
            "checkpoint bench: {mib} MiB run {run}: save {:.0} ms, restore {:.0} ms",
            save.read_ms + save.save_ms,
            restore.load_ms + restore.write_ms
        );
        saves.push(save);
        restores.push(restore);
    }
    let profile: Profile = in_child(
        &job(
            "run-0".to_owned(),
            Phase::Profile {
                sha256: saves[0].sha256.clone(),
            },
        ),
        s3,
    )
    .await;
    for save in &saves {
        if let Some(object) = ObjectRef::parse(&save.location) {
            let _ = s3
                .client()
                .delete_object()
                .bucket(&object.bucket)
                .key(&object.key)
                .send()
                .await;
        }
    }
    pool.delete_task(&source_uid)
        .await
        .expect("delete the source");
    SizeResult {
        mib,
        values,
        saves,
        restores,
        identical,
        sha_matches,
        profile,
    }
}

async fn run() -> (Vec<SizeResult>, String) {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("launcher thread")
        .expect("redis-server starts");
    let s3 = S3Server::start().await.expect("moto starts");
    s3.create_bucket(BUCKET).await.expect("create the bucket");
    let redis = connect(&server.url()).await;
    let version = redis_version(&redis).await;
    let pool_uid = PoolUid::new(&uuid::Uuid::new_v4().to_string()).expect("uid");
    let mut prose = Prose::new(SEED);
    let mut results = Vec::new();
    for mib in SIZES_MIB {
        results.push(measure_size(mib, &redis, &server.url(), &s3, &pool_uid, &mut prose).await);
    }
    (results, version)
}

async fn redis_version(redis: &Redis) -> String {
    let mut conn = redis.connection();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The report

/// Medians over the runs of one size; memory in MiB above the child's baseline unless named
/// otherwise.
struct Medians {
    read: f64,
    save: f64,
    save_total: f64,
    load: f64,
    write: f64,
    restore_total: f64,
    /// The whole process's peak RSS.
    save_peak_mib: f64,
    restore_peak_mib: f64,
    /// Peak over both phases.
    save_over: f64,
    restore_over: f64,
    /// Per phase: its peak, and what is resident when the first returns.
    read_peak: f64,
    read_kept: f64,
    save_phase_peak: f64,
    load_peak: f64,
    load_kept: f64,
    write_phase_peak: f64,
    baseline_mib: f64,
}

fn medians(r: &SizeResult) -> Medians {
    let of_saves = |f: &dyn Fn(&SaveRun) -> f64| median(&r.saves.iter().map(f).collect::<Vec<_>>());
    let of_restores =
        |f: &dyn Fn(&RestoreRun) -> f64| median(&r.restores.iter().map(f).collect::<Vec<_>>());
    let over = |m: &Memory, kib: u64| kib_to_mib(kib.saturating_sub(m.baseline_kib));
    Medians {
        read: of_saves(&|s| s.read_ms),
        save: of_saves(&|s| s.save_ms),
        save_total: of_saves(&|s| s.read_ms + s.save_ms),
        load: of_restores(&|s| s.load_ms),
        write: of_restores(&|s| s.write_ms),
        restore_total: of_restores(&|s| s.load_ms + s.write_ms),
        save_peak_mib: of_saves(&|s| kib_to_mib(s.memory.peak_kib())),
        restore_peak_mib: of_restores(&|s| kib_to_mib(s.memory.peak_kib())),
        save_over: of_saves(&|s| over(&s.memory, s.memory.peak_kib())),
        restore_over: of_restores(&|s| over(&s.memory, s.memory.peak_kib())),
        read_peak: of_saves(&|s| over(&s.memory, s.memory.first_peak_kib)),
        read_kept: of_saves(&|s| over(&s.memory, s.memory.second_start_kib)),
        save_phase_peak: of_saves(&|s| over(&s.memory, s.memory.second_peak_kib)),
        load_peak: of_restores(&|s| over(&s.memory, s.memory.first_peak_kib)),
        load_kept: of_restores(&|s| over(&s.memory, s.memory.second_start_kib)),
        write_phase_peak: of_restores(&|s| over(&s.memory, s.memory.second_peak_kib)),
        baseline_mib: median(
            &r.saves
                .iter()
                .map(|s| kib_to_mib(s.memory.baseline_kib))
                .chain(r.restores.iter().map(|s| kib_to_mib(s.memory.baseline_kib)))
                .collect::<Vec<_>>(),
        ),
    }
}

fn check(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn yes_no(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

fn report(
    results: &[SizeResult],
    redis_version: &str,
    wall: Duration,
    loads: (&str, &str),
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let all: BTreeMap<usize, Medians> = results.iter().map(|r| (r.mib, medians(r))).collect();
    let _ = writeln!(w, "## Checkpoints (save and restore)\n");
    let _ = writeln!(
        w,
        "The operator's own code paths: `maos_core::coord::dump::read` (one MULTI/EXEC transaction of plain reads returns every key of the task at one instant) and `Store::save` (the snapshot encoded as JSON, zstd level 3, on a blocking thread, cut into 8 MiB parts and uploaded as it is made, sha256 computed on the way; one PUT below one part, multipart above); then `Store::load` (download, sha256 checked, decoded) and `dump::restore` under a new task uid (pipelines of ≤ 1 MiB / 1,000 commands, `meta` last). A standalone redis-server {redis_version} and moto (S3, SigV4 enforced) on this machine. The shared state is {} KiB values (`SharedState::put`) of prose drawn from a {}-word vocabulary with a fixed seed, so it compresses about as model output does. Every save and every restore runs in a fresh process (this bench re-executed, its multi-threaded tokio runtime as the operator's), with its connections to Redis and S3 made and used once before the clock starts; its peak RSS is that process's VmHWM at the end, its baseline its VmRSS just before the operation. {RUNS} runs per size, medians shown. Whole bench: {:.0} s; load average {} before, {} after.\n",
        VALUE_BYTES >> 10,
        Prose::new(0).words.len(),
        wall.as_secs_f64(),
        loads.0,
        loads.1,
    );
    let _ = writeln!(
        w,
        "| state | entries | JSON | object (zstd) | save: `dump::read` ms | save: `Store::save` ms | **save total ms** | restore: `Store::load` ms | restore: `dump::restore` ms | **restore total ms** | peak RSS, save / restore | above baseline ÷ state, save / restore | byte-identical | sha256 |"
    );
    let _ = writeln!(
        w,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let m = &all[&r.mib];
        let state = r.mib as f64;
        let json = mib(r.profile.json_bytes as f64);
        let object = r.saves.first().map_or(0, |s| s.size) as f64;
        let _ = writeln!(
            w,
            "| {} MiB ({} values) | {} | {:.1} MiB | {:.2} MiB ({:.1}× smaller) | {:.0} | {:.0} | **{:.0}** | {:.0} | {:.0} | **{:.0}** | {:.0} / {:.0} MiB | {:.2} / {:.2} | {} | {} |",
            r.mib,
            r.values,
            r.saves.first().map_or(0, |s| s.entries),
            json,
            mib(object),
            r.profile.json_bytes as f64 / object.max(1.0),
            m.read,
            m.save,
            m.save_total,
            m.load,
            m.write,
            m.restore_total,
            m.save_peak_mib,
            m.restore_peak_mib,
            m.save_over / state,
            m.restore_over / state,
            r.identical
                .iter()
                .map(|&ok| check(ok))
                .collect::<Vec<_>>()
                .join(""),
            r.sha_matches
                .iter()
                .map(|&ok| check(ok))
                .collect::<Vec<_>>()
                .join(""),
        );
    }
    let _ = writeln!(
        w,
        "\nEntries: `TaskDump::entries` (the values in `kv`, their versions in `kv:ver`, and the fields of `meta`). Byte-identical: `dump::read` of the restored task equals the original's dump except `meta`'s task uid, which the restore sets to the new task (one mark per run). sha256: the object's own sha256 and size, fetched by the bench's S3 client, are those `Store::save` returned, and `Store::load` verified the same sha256 before decoding (one mark per run); a load with a wrong sha256 is refused as `CheckpointCorrupt`: {}.\n",
        results
            .iter()
            .map(|r| format!("{} MiB {}", r.mib, check(r.profile.wrong_sha_refused)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(
        w,
        "Every run (ms; save = read + `Store::save`, restore = load + write):\n"
    );
    let _ = writeln!(w, "| state | save totals | restore totals |");
    let _ = writeln!(w, "|---|---|---|");
    for r in results {
        let saves: Vec<String> = r
            .saves
            .iter()
            .map(|s| format!("{:.0}", s.read_ms + s.save_ms))
            .collect();
        let restores: Vec<String> = r
            .restores
            .iter()
            .map(|s| format!("{:.0}", s.load_ms + s.write_ms))
            .collect();
        let _ = writeln!(
            w,
            "| {} MiB | {} | {} |",
            r.mib,
            saves.join(", "),
            restores.join(", ")
        );
    }

    // Targets.
    let ten = results.iter().find(|r| r.mib == 10);
    let _ = writeln!(w, "\n### Targets\n");
    if let Some(ten) = ten {
        let m = &all[&10];
        let worst = ten
            .saves
            .iter()
            .map(|s| s.read_ms + s.save_ms)
            .fold(0.0, f64::max);
        let _ = writeln!(
            w,
            "- 10 MiB saved in ≤ 1 s: {} — median {:.0} ms, slowest of {RUNS} {:.0} ms.",
            yes_no(m.save_total <= 1000.0),
            m.save_total,
            worst
        );
    }
    let identical = results.iter().all(|r| r.identical.iter().all(|&ok| ok));
    let _ = writeln!(
        w,
        "- Restore byte-identical: {} — {} of {} restores read back identical, every object's sha256 {}.",
        yes_no(identical),
        results
            .iter()
            .map(|r| r.identical.iter().filter(|&&ok| ok).count())
            .sum::<usize>(),
        results.len() * RUNS,
        if results.iter().all(|r| r.sha_matches.iter().all(|&ok| ok)) {
            "matched"
        } else {
            "did NOT match"
        }
    );
    let rss: Vec<String> = results
        .iter()
        .map(|r| {
            let m = &all[&r.mib];
            let worst = m.save_over.max(m.restore_over) / r.mib as f64;
            format!(
                "{} MiB {} ({:.2}×; whole process {:.0} MiB)",
                r.mib,
                if worst <= 2.0 { "met" } else { "missed" },
                worst,
                m.save_peak_mib.max(m.restore_peak_mib)
            )
        })
        .collect();
    let _ = writeln!(
        w,
        "- Peak RSS ≤ 2 × the state size, counted as the operation's own memory (its peak − the process's RSS just before it, {:.0} MiB or so of runtime, clients and code; the whole process's peak in parentheses), the worse of save and restore: {}.\n",
        all.values().map(|m| m.baseline_mib).fold(0.0, f64::max),
        rss.join("; ")
    );

    // Where the time goes.
    let _ = writeln!(w, "### Where the time and the memory go\n");
    let _ = writeln!(
        w,
        "The parts timed one by one in one more fresh process per size (medians above are of whole operations; these are single measurements). The transaction's time inside Redis is the sum of its commands' (INFO commandstats: HGETALL, XRANGE, XINFO, SMEMBERS, GET and EXEC); HGETALL of `kv` is the same bytes fetched alone, on the same connection; JSON is `serde_json::to_vec` of the snapshot, encode is `snapshot::encode` (JSON + zstd) into memory, with no upload; fetch is `Store::fetch` (download only); decode is `snapshot::decode` (zstd + JSON), the JSON parses are `serde_json::from_slice` of the uncompressed JSON and `serde_json::from_reader` of it through a 256 KiB `BufReader`, as `snapshot::decode` reads (without zstd).\n"
    );
    let _ = writeln!(
        w,
        "| state | `dump::read` | of it, the transaction inside Redis | HGETALL of `kv` alone (inside Redis) | JSON encode | JSON + zstd encode | upload (≈ `Store::save` − encode) | `Store::fetch` | sha256 | zstd + JSON decode | JSON parse from a slice | JSON parse from a reader | `dump::restore` (median) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let p = &r.profile;
        let m = &all[&r.mib];
        let _ = writeln!(
            w,
            "| {} MiB | {:.0} ms | {} | {:.0} ms ({}) | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            r.mib,
            p.read_ms,
            p.script_server_ms
                .map_or("—".to_owned(), |v| format!("{v:.0} ms")),
            p.hgetall_ms,
            p.hgetall_server_ms
                .map_or("—".to_owned(), |v| format!("{v:.0} ms")),
            p.json_ms,
            p.encode_ms,
            (m.save - p.encode_ms).max(0.0),
            p.fetch_ms,
            p.sha_ms,
            p.decode_ms,
            p.parse_ms,
            p.parse_reader_ms,
            m.write,
        );
    }
    let reset = results.iter().all(|r| {
        r.saves.iter().all(|s| s.memory.phase_reset)
            && r.restores.iter().all(|s| s.memory.phase_reset)
    });
    let _ = writeln!(
        w,
        "\nMemory of each phase above the child's baseline RSS (medians; MiB and × the state): the peak while `dump::read` runs, what is still resident when it returns (the dump, and what the allocator kept), then the peak while `Store::save` runs; the same for `Store::load` and `dump::restore`. {}\n",
        if reset {
            "Each phase's peak is its own: VmHWM is reset to the current RSS between the two (`/proc/self/clear_refs` 5)."
        } else {
            "The kernel refused resetting VmHWM between the phases, so the second phase's peak is the process's since it started."
        }
    );
    let _ = writeln!(
        w,
        "| state | baseline RSS | peak in `dump::read` | resident after it | peak in `Store::save` | peak in `Store::load` | resident after it | peak in `dump::restore` |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let m = &all[&r.mib];
        let state = r.mib as f64;
        let cell = |v: f64| format!("{v:.1} MiB ({:.2}×)", v / state);
        let _ = writeln!(
            w,
            "| {} MiB | {:.0} MiB | {} | {} | {} | {} | {} | {} |",
            r.mib,
            m.baseline_mib,
            cell(m.read_peak),
            cell(m.read_kept),
            cell(m.save_phase_peak),
            cell(m.load_peak),
            cell(m.load_kept),
            cell(m.write_phase_peak),
        );
    }
    if let (Some(a), Some(b)) = (
        results.iter().find(|r| r.mib == 10),
        results.iter().find(|r| r.mib == 100),
    ) {
        let over: Vec<String> = results
            .iter()
            .filter(|r| {
                let m = &all[&r.mib];
                m.save_over.max(m.restore_over) > 2.0 * r.mib as f64
            })
            .map(|r| format!("{} MiB", r.mib))
            .collect();
        findings(w, (a, &all[&10]), (b, &all[&100]), &over);
    }
    out
}

/// Reads the 10 and 100 MiB rows out as sentences: where the time and the memory go.
fn findings(
    w: &mut String,
    (a, ma): (&SizeResult, &Medians),
    (b, mb): (&SizeResult, &Medians),
    over: &[String],
) {
    let server = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
    let zstd_rate = |r: &SizeResult| {
        let zstd_ms = (r.profile.encode_ms - r.profile.json_ms).max(1.0);
        mib(r.profile.json_bytes as f64) / (zstd_ms / 1000.0)
    };
    let (pa, pb) = (&a.profile, &b.profile);
    let _ = writeln!(w, "\nReading the tables (10 MiB / 100 MiB):\n");
    let _ = writeln!(
        w,
        "- **Save.** `dump::read` takes {:.0} / {:.0} ms, of which the transaction runs {} / {} ms inside Redis, which serves no other client meanwhile (a plain HGETALL of the same `kv` hash alone takes {} / {} ms inside Redis; the Lua script this read replaced took 41 / 647 ms, copying every value into a Lua string and back). Encoding takes {:.0} / {:.0} ms: {:.0} / {:.0} ms of JSON, the rest zstd level 3 (≈ {:.0} MiB/s of JSON here). The upload adds ≈ {:.0} / {:.0} ms beyond the encoding (one PUT after it at 10 MiB; at 100 MiB a multipart upload running beside it, with moto on the same cores).",
        ma.read,
        mb.read,
        server(pa.script_server_ms),
        server(pb.script_server_ms),
        server(pa.hgetall_server_ms),
        server(pb.hgetall_server_ms),
        pa.encode_ms,
        pb.encode_ms,
        pa.json_ms,
        pb.json_ms,
        zstd_rate(b),
        (ma.save - pa.encode_ms).max(0.0),
        (mb.save - pb.encode_ms).max(0.0),
    );
    let _ = writeln!(
        w,
        "- **Restore.** `Store::load` takes {:.0} / {:.0} ms: download {:.0} / {:.0} ms, sha256 {:.0} / {:.0} ms, decoding {:.0} / {:.0} ms, of which the JSON parse through a reader is ≈ {:.0} / {:.0} ms against {:.0} / {:.0} ms for the same JSON from a slice (`serde_json::from_reader` takes its input byte by byte). `dump::restore` writes in {:.0} / {:.0} ms.",
        ma.load,
        mb.load,
        pa.fetch_ms,
        pb.fetch_ms,
        pa.sha_ms,
        pb.sha_ms,
        pa.decode_ms,
        pb.decode_ms,
        pa.parse_reader_ms,
        pb.parse_reader_ms,
        pa.parse_ms,
        pb.parse_ms,
        ma.write,
        mb.write,
    );
    let _ = writeln!(
        w,
        "- **Memory.** Each operation holds the state once (the dump, or the decoded snapshot: the ≈ 1.0× columns) plus buffers that stop growing with it: in `Store::save` the zstd encoder and the compressed parts (+{:.1} / +{:.1} MiB over what the read left), in `Store::load` the compressed object and the zstd decoder beside the snapshot being decoded (peak {:.2}× / {:.2}×), in `dump::restore` the pipeline being sent (+{:.1} / +{:.1} MiB over what the load left: a chunk of up to 1 MiB of commands held three times, as the commands, as the packed pipeline and in the connection's write buffer). {}At 100 MiB the worst operation needs {:.2}×.\n",
        ma.save_phase_peak - ma.read_kept,
        mb.save_phase_peak - mb.read_kept,
        ma.load_peak / a.mib as f64,
        mb.load_peak / b.mib as f64,
        ma.write_phase_peak - ma.load_kept,
        mb.write_phase_peak - mb.load_kept,
        if over.is_empty() {
            String::new()
        } else {
            format!(
                "Those fixed amounts, not a second copy of the state, are what put {} over 2×. ",
                over.join(" and ")
            )
        },
        mb.save_over.max(mb.restore_over) / b.mib as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        child_main(args.get(2).map_or("", String::as_str));
        return;
    }
    // `cargo bench` passes --bench; nothing else is configurable.
    let load_before = procfs::load_average();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (results, version) = runtime.block_on(run());
    let wall = started.elapsed();
    print!(
        "{}",
        report(
            &results,
            &version,
            wall,
            (&load_before, &procfs::load_average())
        )
    );
}
