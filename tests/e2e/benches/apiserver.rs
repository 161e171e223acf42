//! The testbed API server under load: creates and status patches of a custom resource (Task)
//! from 20 concurrent clients, watch delivery latency to 100 watchers, and the server's memory
//! with 10,000 objects stored.
//!
//! The server runs as its own process (`maos-testbed up`, release build) so its memory is its
//! own; the clients and watchers run here, on the same 2 cores. Prints a Markdown section for
//! BENCHMARKS.md. Targets (issue 3): ≥ 2,000 writes/s, p95 watch delivery ≤ 20 ms, RSS ≤ 200 MiB
//! at 10,000 objects.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use maos_core::api::v1alpha1::{PoolRef, Task, TaskSpec};
use maos_e2e::procfs;
use serde_json::json;

const CLIENTS: usize = 20;
const OBJECTS: usize = 10_000;
const PATCHES: usize = 5_000;
const WATCHERS: usize = 100;
const WATCHED_CHANGES: usize = 200;

/// Requests retried after a transport error (reported with the results).
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The testbed process; killed when the bench ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn rss_mib(pid: u32) -> Option<f64> {
    Some(procfs::status_kib(Some(pid), "VmRSS:")? as f64 / 1024.0)
}

fn task(name: &str) -> Task {
    Task::new(
        name,
        TaskSpec {
            prompt: "Benchmark the API server.".into(),
            pool_ref: PoolRef {
                name: "default".into(),
            },
            subtasks: vec![],
            max_subtasks: 12,
            parallelism: 8,
            retry_strategy: Default::default(),
            subtask_timeout_seconds: 600,
            active_deadline_seconds: 3600,
            budget: None,
            synthesize: true,
            checkpoint: None,
            resume_from: None,
            suspend: false,
            shutdown: None,
            thinking: None,
            ttl_seconds_after_finished: None,
            tools: Vec::new(),
        },
    )
}

/// Runs one request, retrying a failed one twice (counted in [`RETRIED`]) so a reset
/// connection does not end the run; a third failure does.
async fn retrying<F, Fut>(what: &str, mut request: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    for attempt in 1..=3 {
        match request().await {
            Ok(()) => return,
            Err(err) if attempt < 3 => {
                RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("{what} failed, retrying: {err}");
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// Runs `count` operations over `CLIENTS` concurrent workers; returns each one's latency and
/// the wall time.
async fn concurrently<F, Fut>(count: usize, operation: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CLIENTS {
        let operation = operation.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..count).step_by(CLIENTS) {
                let t = Instant::now();
                operation(i).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    latencies.sort();
    (latencies, started.elapsed())
}

async fn run(kubeconfig: &str, server_pid: u32) {
    let client = maos_e2e::apiserver::client_from_kubeconfig(std::path::Path::new(kubeconfig))
        .await
        .expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in maos_core::api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tasks.list(&Default::default()).await.is_err() {
        assert!(Instant::now() < deadline, "the Task CRD was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let api = tasks.clone();
    let (create_latency, create_wall) = concurrently(OBJECTS, move |i| {
        let api = api.clone();
        async move {
            // A reset connection is retried (and counted) rather than ending the run.
            let name = format!("t-{i}");
            retrying(&format!("create {name}"), || async {
                match api.create(&PostParams::default(), &task(&name)).await {
                    // An earlier attempt did create it.
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .await;
        }
    })
    .await;
    let rss = rss_mib(server_pid);

    let api = tasks.clone();
    let (patch_latency, patch_wall) = concurrently(PATCHES, move |i| {
        let api = api.clone();
        async move {
            let patch = json!({"status": {"progress": format!("{i}/{PATCHES}")}});
            let name = format!("t-{}", i % OBJECTS);
            retrying(&format!("patch {name}"), || async {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            })
            .await;
        }
    })
    .await;

    // Watch fan-out: every watcher follows the Task namespace from now on; one writer changes
    // one object, stamping each change with its number, and each watcher notes when it arrives.
    let version = tasks
        .list(&Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let (api, version, sent) = (tasks.clone(), version.clone(), sent.clone());
        let stream = api
            .watch(&WatchParams::default().timeout(120), &version)
            .await
            .expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut stream = stream.boxed();
            let deadline = Instant::now() + Duration::from_secs(90);
            while latencies.len() < WATCHED_CHANGES && Instant::now() < deadline {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await;
                let event = match next {
                    Ok(Ok(Some(event))) => event,
                    // Ended, failed or silent for 10 s: report what arrived.
                    _ => break,
                };
                if let WatchEvent::Modified(task) = event {
                    let stamp = task.status.and_then(|s| s.progress).unwrap_or_default();
                    if let Some(at) = sent.lock().expect("lock").get(&stamp) {
                        latencies.push(at.elapsed());
                    }
                }
            }
            latencies
        }));
    }
    for i in 0..WATCHED_CHANGES {
        let stamp = format!("watch-{i}");
        sent.lock()
            .expect("lock")
            .insert(stamp.clone(), Instant::now());
        let patch = json!({"status": {"progress": stamp}});
        tasks
            .patch_status("t-0", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
        // A steady stream of changes (about 100 a second), not one burst.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delivery = Vec::new();
    for watcher in watchers {
        delivery.extend(watcher.await.expect("watcher"));
    }
    delivery.sort();

    println!("## Testbed API server (maos-testbed, release)\n");
    println!(
        "Server in its own process; {CLIENTS} concurrent clients (one kube-rs client, HTTP/1.1 over TLS) and {WATCHERS} watchers in the bench process, all on the same 2 cores.\n"
    );
    println!("| what | rate | p50 ms | p95 ms | p99 ms | samples | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| create Task | {:.0}/s | {} | {} | {} | {} | ≥ 2,000 writes/s |",
        OBJECTS as f64 / create_wall.as_secs_f64(),
        ms(percentile(&create_latency, 0.5)),
        ms(percentile(&create_latency, 0.95)),
        ms(percentile(&create_latency, 0.99)),
        create_latency.len()
    );
    println!(
        "| patch Task status (merge) | {:.0}/s | {} | {} | {} | {} | ≥ 2,000 writes/s |",
        PATCHES as f64 / patch_wall.as_secs_f64(),
        ms(percentile(&patch_latency, 0.5)),
        ms(percentile(&patch_latency, 0.95)),
        ms(percentile(&patch_latency, 0.99)),
        patch_latency.len()
    );
    println!(
        "| watch delivery, patch → each of {WATCHERS} watchers | {} deliveries | {} | {} | {} | {} | p95 ≤ 20 ms |",
        delivery.len(),
        ms(percentile(&delivery, 0.5)),
        ms(percentile(&delivery, 0.95)),
        ms(percentile(&delivery, 0.99)),
        delivery.len()
    );
    let retried = RETRIED.load(std::sync::atomic::Ordering::Relaxed);
    if retried > 0 {
        println!(
            "\n{retried} requests failed at the transport level (e.g. a reset connection) and were retried."
        );
    }
    match rss {
        Some(mib) => println!(
            "\nServer RSS with {OBJECTS} Tasks stored: **{mib:.0} MiB** (target ≤ 200 MiB).\n"
        ),
        None => println!("\nServer RSS: not measured.\n"),
    }
}

fn main() {
    let binary = maos_e2e::binaries::find("maos-testbed", "maos-e2e")
        .expect("maos-testbed is built (make bench builds it)");
    let dir = std::env::temp_dir().join(format!("maos-bench-apiserver-{}", std::process::id()));
    let mut child = Command::new(binary)
        .args(["up", "--dir", &dir.display().to_string()])
        .stdout(Stdio::piped())
        // Its log, for when a run fails.
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("maos-bench-apiserver.log"))
                .expect("log file"),
        )
        .spawn()
        .expect("maos-testbed starts");
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let kubeconfig = lines.next().expect("kubeconfig line").expect("readable");
    // Keep reading what else it prints: a closed pipe would kill it at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&kubeconfig, server.0.id()));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
