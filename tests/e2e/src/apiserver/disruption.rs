//! PodDisruptionBudgets and the eviction API: kube-controller-manager's disruption controller
//! (a budget's status: expected, healthy and desired pods, disruptions allowed) and
//! `pods/eviction`, which deletes a pod only when no budget would be broken, answering 429 as
//! kube-apiserver does when one would.

use std::sync::Arc;

use serde_json::{Value, json};

use super::api::{Cluster, DeleteRequest, ListOptions, WriteOptions, now_rfc3339};
use super::deployments::{pod_ready, terminating};
use super::resource::{ResourceInfo, str_at};
use super::selectors::LabelSelector;
use super::status::{ApiError, FieldCause};
use super::store::{DeleteOptions, UpdateTarget};

/// The budgets' API group.
pub const GROUP: &str = "policy";

/// The kinds whose changes can change a budget's status.
pub fn relevant(storage_key: &str) -> bool {
    matches!(storage_key, "policy/poddisruptionbudgets" | "/pods")
}

/// Refuses a budget kube-apiserver refuses: both or neither of minAvailable and
/// maxUnavailable are fine only as kube-apiserver allows (both is refused), and the selector
/// must be well formed.
pub fn validate(budget: &Value) -> Result<(), ApiError> {
    let name = str_at(budget, "/metadata/name");
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            "PodDisruptionBudget",
            name,
            vec![FieldCause {
                field: field.into(),
                reason: "FieldValueInvalid",
                message,
            }],
        )
        .in_group(GROUP)
    };
    let spec = budget.get("spec").cloned().unwrap_or_else(|| json!({}));
    if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() {
        return Err(invalid(
            "spec",
            format!("Invalid value: {spec}: minAvailable and maxUnavailable cannot be both set"),
        ));
    }
    for field in ["minAvailable", "maxUnavailable"] {
        if let Some(value) = spec.get(field)
            && let Err(message) = scaled(value, 100)
        {
            return Err(invalid(&format!("spec.{field}"), message));
        }
    }
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !matches!(policy, "IfHealthyBudget" | "AlwaysAllow")
    {
        return Err(ApiError::invalid(
            "PodDisruptionBudget",
            name,
            vec![FieldCause {
                field: "spec.unhealthyPodEvictionPolicy".into(),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: \"{policy}\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""
                ),
            }],
        )
        .in_group(GROUP));
    }
    LabelSelector::from_object(spec.get("selector").unwrap_or(&json!({})), "spec.selector")
        .map(|_| ())
        .map_err(|e| invalid("spec.selector", e.to_string()))
}

/// An IntOrString (`2`, `"50%"`) as a count of `total`; percentages round up, as the
/// disruption controller rounds them.
fn scaled(value: &Value, total: i64) -> Result<i64, String> {
    if let Some(n) = value.as_i64() {
        return if n < 0 {
            Err(format!(
                "Invalid value: {n}: must be greater than or equal to 0"
            ))
        } else {
            Ok(n)
        };
    }
    let text = value.as_str().unwrap_or("");
    let percent: i64 = text
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("Invalid value: \"{text}\": a valid percent string must be a numeric string followed by an ending '%'"))?;
    if !(0..=100).contains(&percent) {
        return Err(format!(
            "Invalid value: \"{text}\": must be no greater than 100%"
        ));
    }
    Ok((percent * total + 99) / 100)
}

/// What a budget's status says about `pods` (those its selector matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Health {
    expected: i64,
    current: i64,
    desired: i64,
}

impl Health {
    fn of(spec: &Value, pods: &[Arc<Value>]) -> Health {
        let live: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| !matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed"))
            .collect();
        let expected = live.len() as i64;
        let current = live
            .iter()
            .filter(|p| pod_ready(p) && !terminating(p))
            .count() as i64;
        let desired = if let Some(min) = spec.get("minAvailable") {
            scaled(min, expected).unwrap_or(0)
        } else if let Some(max) = spec.get("maxUnavailable") {
            (expected - scaled(max, expected).unwrap_or(0)).max(0)
        } else {
            0
        };
        Health {
            expected,
            current,
            desired,
        }
    }

    fn allowed(&self) -> i64 {
        (self.current - self.desired).max(0)
    }
}

fn selected(budget: &Value, pods: &[Arc<Value>]) -> Vec<Arc<Value>> {
    let Ok(selector) = LabelSelector::from_object(
        budget.pointer("/spec/selector").unwrap_or(&json!({})),
        "spec.selector",
    ) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| selector.matches(p))
        .cloned()
        .collect()
}

fn status_of(budget: &Value, health: Health, now: &str) -> Value {
    let allowed = health.allowed();
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let old = budget
        .pointer("/status/conditions/0")
        .cloned()
        .unwrap_or(Value::Null);
    let since = if old["status"] == status {
        old["lastTransitionTime"].clone()
    } else {
        json!(now)
    };
    json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": health.current,
        "desiredHealthy": health.desired,
        "expectedPods": health.expected,
        "conditions": [{
            "type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
            "lastTransitionTime": since, "observedGeneration": generation,
        }],
    })
}

/// Brings every budget's status up to date; a write racing another is retried on the next
/// change.
pub fn reconcile_all(cluster: &Cluster) {
    let (Ok(budgets_res), Ok(pods_res)) = (
        cluster.resource(GROUP, "v1", "poddisruptionbudgets"),
        cluster.resource("", "v1", "pods"),
    ) else {
        return;
    };
    let everything = ListOptions::default();
    let Ok((budgets, _)) = cluster.list(&budgets_res, None, &everything) else {
        return;
    };
    let now = now_rfc3339();
    for budget in budgets {
        let namespace = str_at(&budget, "/metadata/namespace");
        let Ok((pods, _)) = cluster.list(&pods_res, Some(namespace), &everything) else {
            continue;
        };
        let health = Health::of(
            budget.get("spec").unwrap_or(&Value::Null),
            &selected(&budget, &pods),
        );
        let status = status_of(&budget, health, &now);
        let unchanged = budget.get("status").is_some_and(|old| {
            let mut old = old.clone();
            old["conditions"][0]["lastTransitionTime"] =
                status["conditions"][0]["lastTransitionTime"].clone();
            old == status
        });
        if unchanged {
            continue;
        }
        let mut updated = (*budget).clone();
        updated["status"] = status;
        if let Err(error) = cluster.update(
            &budgets_res,
            namespace,
            str_at(&budget, "/metadata/name"),
            updated,
            UpdateTarget::Status,
            &WriteOptions::default(),
        ) {
            tracing::debug!(%error, "disruption budget status deferred");
        }
    }
}

/// kube-apiserver's 429 for an eviction a budget forbids, suggesting a wait in seconds (0:
/// none) as kube-apiserver does.
fn too_many(cause: String, retry_after_seconds: u32) -> ApiError {
    ApiError::TooManyRequests {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        cause_reason: "DisruptionBudget",
        cause,
        retry_after_seconds,
    }
}

/// `POST pods/<name>/eviction`: deletes the pod (with the Eviction's deleteOptions) unless a
/// budget that selects it allows no disruption; returns the `Status` to answer with.
pub fn evict(
    cluster: &Cluster,
    pods_res: &ResourceInfo,
    namespace: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let named = str_at(eviction, "/metadata/name");
    if !named.is_empty() && named != name {
        return Err(ApiError::BadRequest(format!(
            "name in URL does not match name in Eviction object: {name} vs. {named}"
        )));
    }
    let pod = Arc::new(cluster.get(pods_res, namespace, name)?);
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let delete = DeleteRequest {
        preconditions: DeleteOptions {
            uid: options
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            resource_version: options
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            graceful: None,
        },
        grace_period_seconds: options.get("gracePeriodSeconds").and_then(Value::as_i64),
        orphan: false,
        dry_run: dry_run
            || options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty()),
    };
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    let finished = matches!(str_at(&pod, "/status/phase"), "Succeeded" | "Failed");
    if finished || terminating(&pod) {
        cluster.delete(pods_res, namespace, name, &delete)?;
        return Ok(success);
    }
    let budgets_res = cluster.resource(GROUP, "v1", "poddisruptionbudgets")?;
    let (budgets, _) = cluster.list(&budgets_res, Some(namespace), &ListOptions::default())?;
    let matching: Vec<Arc<Value>> = budgets
        .into_iter()
        .filter(|b| !selected(b, std::slice::from_ref(&pod)).is_empty())
        .collect();
    let budget = match matching.as_slice() {
        [] => {
            cluster.delete(pods_res, namespace, name, &delete)?;
            return Ok(success);
        }
        [one] => one.clone(),
        _ => {
            return Err(ApiError::Internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            ));
        }
    };
    let budget_name = str_at(&budget, "/metadata/name").to_string();
    let observed = budget
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if observed < generation {
        return Err(too_many(
            format!("The disruption budget {budget_name} is still being processed by the server."),
            10,
        ));
    }
    let int = |pointer: &str| budget.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    let (current, desired) = (int("/status/currentHealthy"), int("/status/desiredHealthy"));
    if !pod_ready(&pod) {
        let policy = str_at(&budget, "/spec/unhealthyPodEvictionPolicy");
        // An unready pod does not count as healthy, so evicting it costs the budget nothing
        // when the budget is met (IfHealthyBudget) or always (AlwaysAllow).
        if policy == "AlwaysAllow" || (current >= desired && desired > 0) {
            cluster.delete(pods_res, namespace, name, &delete)?;
            return Ok(success);
        }
    }
    let allowed = int("/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::Forbidden {
            group: String::new(),
            kind: "pods".into(),
            name: name.to_string(),
            message: "pdb disruptions allowed is negative".into(),
        });
    }
    if allowed == 0 {
        return Err(too_many(
            format!(
                "The disruption budget {budget_name} needs {desired} healthy pods and has {current} currently"
            ),
            0,
        ));
    }
    if !delete.dry_run {
        // Spent before the delete, so a second eviction racing this one sees the budget
        // already used (the controller recounts once the pod is terminating).
        let mut spent = (*budget).clone();
        spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
        spent["status"]["disruptedPods"][name] = json!(now_rfc3339());
        cluster.update(
            &budgets_res,
            namespace,
            &budget_name,
            spent,
            UpdateTarget::Status,
            &WriteOptions::default(),
        )?;
    }
    cluster.delete(pods_res, namespace, name, &delete)?;
    Ok(success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
    }

    #[test]
    fn health_counts_ready_pods_against_min_available_or_max_unavailable() {
        let pods = vec![pod(true), pod(true), pod(false)];
        let min = Health::of(&json!({"minAvailable": 1}), &pods);
        assert_eq!(
            min,
            Health {
                expected: 3,
                current: 2,
                desired: 1
            }
        );
        assert_eq!(min.allowed(), 1);
        let percent = Health::of(&json!({"minAvailable": "50%"}), &pods);
        assert_eq!(percent.desired, 2, "50% of 3 rounds up");
        assert_eq!(percent.allowed(), 0);
        let max = Health::of(&json!({"maxUnavailable": 1}), &pods);
        assert_eq!(max.desired, 2);
    }

    #[test]
    fn bad_budgets_are_refused_naming_the_field() {
        for (spec, expected) in [
            (
                json!({"minAvailable": 1, "maxUnavailable": 1}),
                "minAvailable and maxUnavailable cannot be both set",
            ),
            (json!({"minAvailable": "150%"}), "spec.minAvailable"),
            (json!({"maxUnavailable": "half"}), "spec.maxUnavailable"),
            (
                json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                "spec.selector",
            ),
        ] {
            let budget = json!({"metadata": {"name": "b"}, "spec": spec});
            let refused = validate(&budget).unwrap_err();
            assert!(refused.to_string().contains(expected), "{refused}");
            assert!(
                refused
                    .to_string()
                    .starts_with("PodDisruptionBudget.policy \"b\" is invalid"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_budget_still_being_processed_suggests_a_wait_and_a_spent_one_does_not() {
        let processing = too_many("processing".into(), 10).to_status();
        assert_eq!(processing["code"], 429);
        assert_eq!(processing["details"]["retryAfterSeconds"], 10);
        let spent = too_many("spent".into(), 0).to_status();
        assert!(spent["details"].get("retryAfterSeconds").is_none());
        assert_eq!(spent["details"]["causes"][0]["reason"], "DisruptionBudget");
    }

    #[test]
    fn the_status_condition_keeps_its_transition_time_while_unchanged() {
        let budget = json!({"metadata": {"generation": 2}, "status": {"conditions": [
            {"type": "DisruptionAllowed", "status": "True", "lastTransitionTime": "then"}]}});
        let health = Health {
            expected: 2,
            current: 2,
            desired: 1,
        };
        let status = status_of(&budget, health, "now");
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "then");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["disruptionsAllowed"], 1);
    }
}
