//! What an operator at rest asks of the API server: the pool controller looks at its pools on
//! every heartbeat, reading their pods from its watch cache and their Secrets only now and then,
//! so idle pools cost the API server almost nothing however short their heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::Api;
use maos_core::api::v1alpha1::AgentPool;
use maos_e2e::apiserver::auth::AccessRecord;
use maos_e2e::stack::{Stack, StackConfig, pool_manifest};

const POOLS: usize = 10;
/// How long the requests are counted: a measurement, not a wait for anything.
const WINDOW: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(120);

/// Requests per (verb, resource, subresource) between two snapshots of the counts, leaving
/// out what an operator does whatever its pools: watches (one long request each, reopened every
/// few minutes) and the leader Lease's renewals.
fn asked_between(
    before: &[(AccessRecord, u64)],
    after: &[(AccessRecord, u64)],
) -> BTreeMap<String, u64> {
    let before: BTreeMap<&AccessRecord, u64> = before.iter().map(|(r, n)| (r, *n)).collect();
    let mut asked = BTreeMap::new();
    for (record, n) in after {
        let new = n - before.get(record).copied().unwrap_or(0);
        if new == 0 || record.verb == "watch" || record.resource == "leases" {
            continue;
        }
        let what = format!(
            "{} {}{}{} {}",
            record.verb,
            record.resource,
            if record.subresource.is_empty() {
                ""
            } else {
                "/"
            },
            record.subresource,
            record.name
        );
        *asked.entry(what).or_insert(0) += new;
    }
    asked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_idle_pools_with_a_one_second_heartbeat_ask_at_most_once_a_minute_each() {
    let stack = Stack::start(StackConfig::new("e2e-at-rest"))
        .await
        .expect("stack starts");
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

    let before = stack.operator_requests();
    assert!(
        !before.is_empty(),
        "the operator runs under its ServiceAccount"
    );
    tokio::time::sleep(WINDOW).await;
    let asked = asked_between(&before, &stack.operator_requests());

    // Each pool looks at its agents 30 times in the window; at most one request a minute each
    // is allowed for all of that together.
    let total: u64 = asked.values().sum();
    eprintln!("{total} requests in {WINDOW:?} from {POOLS} idle pools: {asked:?}");
    let allowed = (POOLS as u64 * WINDOW.as_secs()).div_ceil(60);
    assert!(
        total <= allowed,
        "{total} requests in {WINDOW:?} from {POOLS} idle pools (at most {allowed}): {asked:#?}"
    );
}
