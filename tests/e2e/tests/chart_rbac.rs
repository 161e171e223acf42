//! The chart's RBAC is least privilege, proven on the testbed: every stack of the e2e suite runs
//! the operator under the chart's ServiceAccount and rules (`manifests/base`, rendered from the
//! chart) and records what the operator did with them ([`maos_e2e::stack::rbac_usage_dir`]).
//! After the whole suite, this check fails if the operator was refused anything, or if a rule
//! grants a (group, resource, verb) the operator never used, unless it is listed below with
//! the reason it is needed anyway.
//!
//! `make test` runs it after the suite (`--run-ignored only`); run alone it has no evidence.

use std::collections::BTreeSet;

use maos_e2e::cluster::repo_root;
use maos_e2e::stack::rbac_usage_dir;
use serde_json::Value;

/// Fewer recordings than this means the suite did not run first.
const MIN_STACKS: usize = 20;

/// Rights the chart grants that the suite does not reliably exercise (some runs do, by timing),
/// each with why the operator needs it: (API group, resource or resource/subresource, verb,
/// reason).
const JUSTIFIED: &[(&str, &str, &str, &str)] = &[
    (
        "",
        "secrets",
        "patch",
        "the pool controller rewrites its `<pool>-redis` Secret when it lost its password \
         (pool.rs `ensure_credentials`), which no test provokes",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "kube-runtime's Recorder patches an Event it already published when the same event \
         repeats within its cache (the series count); tests see each event once",
    ),
];

/// (API group, resource[/subresource], verb).
type Right = (String, String, String);

fn usage() -> (usize, BTreeSet<Right>, Vec<Value>) {
    let dir = rbac_usage_dir();
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    let mut stacks = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{} is unreadable ({e}): run the e2e suite first",
            dir.display()
        )
    }) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        stacks += 1;
        let text = std::fs::read_to_string(&path).expect("a usage file");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            let text = |key: &str| record[key].as_str().unwrap_or("").to_string();
            if !text("path").is_empty() {
                // Non-resource requests (discovery) are granted to every authenticated user.
                continue;
            }
            let resource = match text("subresource").as_str() {
                "" => text("resource"),
                sub => format!("{}/{sub}", text("resource")),
            };
            if record["allowed"] == true {
                used.insert((text("group"), resource, text("verb")));
            } else {
                refused.push(record);
            }
        }
    }
    (stacks, used, refused)
}

/// Every (group, resource, verb) the chart's ClusterRole and Roles grant.
fn granted() -> BTreeSet<Right> {
    let path = repo_root().join("manifests/base/maos.yaml");
    let text = std::fs::read_to_string(&path).expect("manifests/base/maos.yaml");
    let mut rights = BTreeSet::new();
    for document in serde_saphyr::from_multiple::<Value>(&text).expect("YAML documents") {
        if !matches!(document["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        for rule in document["rules"].as_array().into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        rights.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    rights
}

#[test]
#[ignore = "needs the whole e2e suite's recordings: `make test` runs it after the suite"]
fn the_chart_grants_the_operator_exactly_what_it_uses() {
    let (stacks, used, refused) = usage();
    assert!(
        stacks >= MIN_STACKS,
        "only {stacks} stack(s) recorded their API usage in {}: run the e2e suite first",
        rbac_usage_dir().display()
    );
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator: {refused:#?}"
    );
    let granted = granted();
    let justified: BTreeSet<Right> = JUSTIFIED
        .iter()
        .map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let unused: Vec<&Right> = granted
        .iter()
        .filter(|r| !used.contains(*r) && !justified.contains(*r))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants rights no test used (remove them, or justify them in JUSTIFIED): {unused:#?}\nused: {used:#?}"
    );
    let stale: Vec<&Right> = justified.iter().filter(|r| !granted.contains(*r)).collect();
    assert!(
        stale.is_empty(),
        "JUSTIFIED names rights the chart no longer grants: {stale:#?}"
    );
    eprintln!(
        "{stacks} stacks; the chart grants {} rights, {} used, {} justified",
        granted.len(),
        granted.intersection(&used).count(),
        justified.len()
    );
}
