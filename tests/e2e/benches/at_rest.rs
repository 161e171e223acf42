//! The operator at rest: 10 idle AgentPools (one agent each, a 1 s heartbeat) on the whole
//! stack, and what the operator asks of the API server over a window longer than its 5-minute
//! Secret resync and heartbeat-status interval. Target (issue #17): at most 1 request a minute
//! per idle pool. Prints a Markdown section for BENCHMARKS.md; nothing is asserted.
//!
//! `MAOS_BENCH_AT_REST_SECONDS` shortens or lengthens the window (default 360).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kube::api::Api;
use maos_core::api::v1alpha1::AgentPool;
use maos_e2e::apiserver::auth::AccessRecord;
use maos_e2e::procfs;
use maos_e2e::stack::{Stack, StackConfig, pool_manifest};

const POOLS: usize = 10;
const PATIENCE: Duration = Duration::from_secs(180);

fn window() -> Duration {
    let seconds = std::env::var("MAOS_BENCH_AT_REST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(360);
    Duration::from_secs(seconds)
}

/// Requests between two snapshots of the testbed's counts, by kind of request.
fn asked_between(
    before: &[(AccessRecord, u64)],
    after: &[(AccessRecord, u64)],
) -> BTreeMap<String, u64> {
    let before: BTreeMap<&AccessRecord, u64> = before.iter().map(|(r, n)| (r, *n)).collect();
    let mut asked = BTreeMap::new();
    for (record, n) in after {
        let new = n - before.get(record).copied().unwrap_or(0);
        if new == 0 {
            continue;
        }
        let subresource = if record.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", record.subresource)
        };
        *asked
            .entry(format!("{} {}{subresource}", record.verb, record.resource))
            .or_insert(0) += new;
    }
    asked
}

async fn run() -> String {
    let mut stack = Stack::start(StackConfig::new("bench-at-rest"))
        .await
        .expect("the stack starts");
    for index in 0..POOLS {
        let manifest = format!(
            "{}  heartbeatSeconds: 1\n",
            pool_manifest(&format!("idle-{index}"), 1, 1)
        );
        stack.apply(&manifest).expect("kubectl apply the pool");
    }
    let pools: Api<AgentPool> = Api::namespaced(stack.client(), stack.namespace());
    stack
        .wait_until("every pool to have its agent ready", PATIENCE, || async {
            let list = pools.list(&Default::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().is_some_and(|s| s.ready_agents == 1))
                .count();
            (ready == POOLS).then_some(())
        })
        .await;
    let window = window();
    let before = stack.operator_requests();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let measured = started.elapsed();
    let asked = asked_between(&before, &stack.operator_requests());
    let minutes = measured.as_secs_f64() / 60.0;
    let per_pool: u64 = asked
        .iter()
        .filter(|(what, _)| !what.starts_with("watch ") && !what.ends_with(" leases"))
        .map(|(_, n)| n)
        .sum();
    let leases: u64 = asked
        .iter()
        .filter(|(what, _)| what.ends_with(" leases"))
        .map(|(_, n)| n)
        .sum();
    let watches: u64 = asked
        .iter()
        .filter(|(what, _)| what.starts_with("watch "))
        .map(|(_, n)| n)
        .sum();
    let rss = stack
        .operators()
        .first()
        .and_then(|o| procfs::status_kib(o.pid(), "VmRSS"));

    let mut out = String::new();
    let _ = writeln!(out, "## Operator at rest (idle pools)\n");
    let _ = writeln!(
        out,
        "{POOLS} AgentPools of one idle agent each, `heartbeatSeconds: 1`, on the whole stack \
         (testbed API server, process kubelet, 6-node Redis Cluster); the operator runs under \
         the chart's ServiceAccount and the testbed counts its requests over {:.1} minutes \
         (`scripts/bench.sh at_rest`). Target: at most 1 request a minute per idle pool.\n",
        minutes
    );
    let _ = writeln!(out, "| what | requests | per minute |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| pools' requests (everything but watches and the Lease), per pool | {:.1} | **{:.2}** |",
        per_pool as f64 / POOLS as f64,
        per_pool as f64 / POOLS as f64 / minutes
    );
    let _ = writeln!(
        out,
        "| leader Lease (get + update, whatever the pools) | {leases} | {:.1} |",
        leases as f64 / minutes
    );
    let _ = writeln!(
        out,
        "| watches opened (whatever the pools) | {watches} | {:.2} |",
        watches as f64 / minutes
    );
    let _ = writeln!(out, "\nBy request:\n");
    for (what, n) in &asked {
        let _ = writeln!(out, "- `{what}`: {n}");
    }
    if let Some(kib) = rss {
        let _ = writeln!(
            out,
            "\nOperator RSS at the end: {:.1} MiB.",
            kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nBefore (main at 24ddbb9, pods listed and both Secrets read on every beat): 997 \
         requests in 30 s from the same 10 pools, about 200 a minute per pool \
         (`cargo test -p maos-e2e --test operator_at_rest` on that commit).\n"
    );
    out
}

fn main() {
    procfs::print_section(run());
}
