//! Events are one resource served in two versions, as in kube-apiserver: stored in the
//! `events.k8s.io/v1` shape and shown to `core/v1` clients (`kubectl get events`,
//! `kubectl describe`) with the core field names, so an event a kube-runtime Recorder publishes
//! is visible to both.

use serde_json::{Map, Value, json};

use super::resource::ResourceInfo;

/// The shared storage key of both Event versions.
pub const STORAGE_KEY: &str = "events.k8s.io/events";

/// events.k8s.io/v1 field name ↔ core/v1 field name, where they differ.
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("reportingController", "reportingComponent"),
];

/// Whether `res` is the core/v1 view of Events (the one that needs converting).
pub fn is_core_view(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.plural == "events"
}

fn rename(object: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let renamed = RENAMES
            .iter()
            .find_map(|(events, core)| {
                if to_core {
                    (key == events).then_some(*core)
                } else {
                    (key == core).then_some(*events)
                }
            })
            .unwrap_or(key);
        out.insert(renamed.to_string(), value.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// A stored Event as core/v1 clients see it.
pub fn core_view(stored: &Value) -> Value {
    rename(stored, "v1", true)
}

/// The stored object as the client of `res` sees it.
pub fn to_view(res: &ResourceInfo, stored: &Value) -> Value {
    if is_core_view(res) {
        rename(stored, "v1", true)
    } else {
        stored.clone()
    }
}

/// The client's object in the stored shape.
pub fn to_storage(res: &ResourceInfo, object: Value) -> Value {
    if is_core_view(res) {
        rename(&object, "events.k8s.io/v1", false)
    } else {
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;

    fn core_events() -> ResourceInfo {
        builtin_resources()
            .into_iter()
            .find(|r| r.plural == "events" && r.group.is_empty())
            .unwrap()
    }

    #[test]
    fn a_recorder_event_reads_as_a_core_event_and_back() {
        let stored = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Task", "name": "t"}, "note": "started",
            "reason": "Started", "reportingController": "maos", "type": "Normal",
        });
        let core = to_view(&core_events(), &stored);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "t");
        assert_eq!(core["message"], "started");
        assert_eq!(core["reportingComponent"], "maos");
        assert_eq!(to_storage(&core_events(), core), stored);
    }

    #[test]
    fn both_versions_share_one_storage_key() {
        let events_v1 = builtin_resources()
            .into_iter()
            .find(|r| r.plural == "events" && r.group == "events.k8s.io")
            .unwrap();
        assert_eq!(core_events().storage_key(), STORAGE_KEY);
        assert_eq!(events_v1.storage_key(), STORAGE_KEY);
    }
}
