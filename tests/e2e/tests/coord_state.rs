//! Shared state against real Redis (standalone and cluster): compare-and-set under contention,
//! lost races, the value cap, deletes, listing, and model-chosen keys staying hash fields.

#[macro_use]
mod coord_common;

use std::sync::Arc;

use coord_common::{Fixture, task_uid};
use maos_core::coord::CoordError;
use maos_core::coord::state::{CasOutcome, DEFAULT_MAX_VALUE_BYTES, Versioned};

async fn fifty_concurrent_cas_writers_count_exactly_their_successes(fx: &Fixture) {
    let state = Arc::new(fx.pool().task(&task_uid()).state());
    let mut writers = Vec::new();
    for _ in 0..50 {
        let state = Arc::clone(&state);
        writers.push(tokio::spawn(async move {
            // One read-modify-CAS per writer: a lost race is not retried, so the final counter
            // must equal the number of CAS calls that reported success.
            let current = state.get("counter").await.expect("get");
            let n: u64 = current
                .value
                .map(|v| String::from_utf8(v).expect("utf8").parse().expect("number"))
                .unwrap_or(0);
            let next = (n + 1).to_string();
            matches!(
                state
                    .cas("counter", current.version, next.as_bytes())
                    .await
                    .expect("cas"),
                CasOutcome::Written { .. }
            )
        }));
    }
    let mut successes = 0u64;
    for w in writers {
        if w.await.expect("writer") {
            successes += 1;
        }
    }
    let final_value = state.get("counter").await.expect("get");
    let value: u64 = String::from_utf8(final_value.value.expect("written"))
        .expect("utf8")
        .parse()
        .expect("number");
    assert!(successes >= 1);
    assert_eq!(value, successes);
    assert_eq!(final_value.version, successes);
}

async fn cas_retry_loop_of_fifty_writers_loses_no_increment(fx: &Fixture) {
    let state = Arc::new(fx.pool().task(&task_uid()).state());
    let mut writers = Vec::new();
    for _ in 0..50 {
        let state = Arc::clone(&state);
        writers.push(tokio::spawn(async move {
            let mut current = state.get("n").await.expect("get");
            loop {
                let n: u64 = current
                    .value
                    .as_deref()
                    .map(|v| std::str::from_utf8(v).expect("utf8").parse().expect("num"))
                    .unwrap_or(0);
                match state
                    .cas("n", current.version, (n + 1).to_string().as_bytes())
                    .await
                    .expect("cas")
                {
                    CasOutcome::Written { .. } => return,
                    // The lost race hands back what is stored now: retry from it.
                    CasOutcome::Conflict { current: now } => current = now,
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let got = state.get("n").await.expect("get");
    assert_eq!(got.value.as_deref(), Some(b"50".as_slice()));
    assert_eq!(got.version, 50);
}

async fn lost_cas_race_returns_current_value_and_version(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    let v1 = state.put("plan", b"first").await.expect("put");
    assert_eq!(v1, 1);
    let v2 = state.cas("plan", v1, b"second").await.expect("cas");
    assert_eq!(v2, CasOutcome::Written { version: 2 });
    // A writer still holding version 1 loses and learns what won.
    let lost = state.cas("plan", v1, b"stale").await.expect("cas");
    assert_eq!(
        lost,
        CasOutcome::Conflict {
            current: Versioned {
                value: Some(b"second".to_vec()),
                version: 2
            }
        }
    );
    assert_eq!(
        state.get("plan").await.expect("get").value.as_deref(),
        Some(b"second".as_slice())
    );
}

async fn cas_on_a_missing_key_succeeds_only_from_version_zero(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    let wrong = state.cas("fresh", 3, b"x").await.expect("cas");
    assert_eq!(
        wrong,
        CasOutcome::Conflict {
            current: Versioned {
                value: None,
                version: 0
            }
        }
    );
    let right = state.cas("fresh", 0, b"x").await.expect("cas");
    assert_eq!(right, CasOutcome::Written { version: 1 });
}

async fn oversize_value_is_refused_naming_the_limit_and_nothing_is_written(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    let big = vec![b'x'; DEFAULT_MAX_VALUE_BYTES + 1];
    let before = fx.all_keys().await;
    for result in [
        state.put("big", &big).await.map(|_| ()),
        state.cas("big", 0, &big).await.map(|_| ()),
    ] {
        let err = result.expect_err("oversize value must be refused");
        assert!(
            matches!(
                &err,
                CoordError::ValueTooLarge { key, size, limit }
                    if key == "big" && *size == DEFAULT_MAX_VALUE_BYTES + 1
                        && *limit == DEFAULT_MAX_VALUE_BYTES
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("1048576"), "{err}");
    }
    assert_eq!(
        state.get("big").await.expect("get"),
        Versioned {
            value: None,
            version: 0
        }
    );
    assert_eq!(fx.all_keys().await, before);
    // Exactly at the cap is allowed.
    let at_cap = vec![b'y'; DEFAULT_MAX_VALUE_BYTES];
    assert_eq!(state.put("big", &at_cap).await.expect("put at cap"), 1);
}

async fn smaller_configured_cap_is_enforced(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state().with_max_value_bytes(10);
    assert!(state.put("k", b"0123456789").await.is_ok());
    let err = state.put("k", b"0123456789A").await.expect_err("over cap");
    assert!(matches!(err, CoordError::ValueTooLarge { limit: 10, .. }));
}

async fn model_chosen_keys_stay_fields_of_the_task_hash(fx: &Fixture) {
    let pool = fx.pool();
    let task = pool.task(&task_uid());
    let other = pool.task(&task_uid());
    other
        .state()
        .put("secret", b"other task")
        .await
        .expect("put");
    let state = task.state();
    let hostile = [
        "../x",
        "maos:*",
        "*",
        "{task:other}",
        "maos:pool:x:{task:y}:kv",
    ];
    for key in hostile {
        state.put(key, b"v").await.expect("put");
    }
    // Only the task's two state hashes (and the other task's) exist: no key was made from
    // model input.
    let mut expected = vec![
        task.keys().kv(),
        task.keys().kv_versions(),
        other.keys().kv(),
        other.keys().kv_versions(),
    ];
    expected.sort();
    assert_eq!(fx.all_keys().await, expected);
    let mut listed = state.list("").await.expect("list");
    listed.sort();
    let mut want: Vec<String> = hostile.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    // A glob in a prefix matches literally, and reading another task's key name finds nothing.
    assert_eq!(state.list("maos:*").await.expect("list"), vec!["maos:*"]);
    assert_eq!(state.get("secret").await.expect("get").value, None);
}

async fn delete_keeps_versions_growing_so_stale_cas_fails(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    let v1 = state.put("k", b"a").await.expect("put");
    assert!(state.delete("k").await.expect("delete"));
    assert!(!state.delete("k").await.expect("delete again"));
    let after = state.get("k").await.expect("get");
    assert_eq!(after.value, None);
    assert_eq!(after.version, v1 + 1);
    // Neither the pre-delete version nor "absent" (0) may overwrite.
    assert!(matches!(
        state.cas("k", v1, b"b").await.expect("cas"),
        CasOutcome::Conflict { .. }
    ));
    assert!(matches!(
        state.cas("k", 0, b"b").await.expect("cas"),
        CasOutcome::Conflict { .. }
    ));
    assert_eq!(
        state.cas("k", after.version, b"b").await.expect("cas"),
        CasOutcome::Written {
            version: after.version + 1
        }
    );
}

async fn list_returns_keys_with_the_prefix_sorted(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    for key in ["notes/b", "notes/a", "draft", "notes"] {
        state.put(key, b"1").await.expect("put");
    }
    state.delete("notes").await.expect("delete");
    assert_eq!(
        state.list("notes/").await.expect("list"),
        vec!["notes/a", "notes/b"]
    );
}

async fn empty_or_huge_state_key_is_refused(fx: &Fixture) {
    let state = fx.pool().task(&task_uid()).state();
    assert!(matches!(
        state.put("", b"v").await,
        Err(CoordError::InvalidStateKey { .. })
    ));
    assert!(matches!(
        state.get(&"k".repeat(2000)).await,
        Err(CoordError::InvalidStateKey { .. })
    ));
}

both_backends!(
    fifty_concurrent_cas_writers_count_exactly_their_successes,
    cas_retry_loop_of_fifty_writers_loses_no_increment,
    lost_cas_race_returns_current_value_and_version,
    cas_on_a_missing_key_succeeds_only_from_version_zero,
    oversize_value_is_refused_naming_the_limit_and_nothing_is_written,
    smaller_configured_cap_is_enforced,
    model_chosen_keys_stay_fields_of_the_task_hash,
    delete_keeps_versions_growing_so_stale_cas_fails,
    list_returns_keys_with_the_prefix_sorted,
    empty_or_huge_state_key_is_refused,
);
