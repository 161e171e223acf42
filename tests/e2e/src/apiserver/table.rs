//! Server-side printing: a `meta.k8s.io/v1` `Table` built from a resource's printer columns
//! (a CRD's `additionalPrinterColumns`), as `kubectl get` asks for it.

use serde_json::{Value, json};

use super::resource::{PrinterColumn, ResourceInfo};

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn columns(res: &ResourceInfo) -> Vec<PrinterColumn> {
    if res.printer_columns.is_empty() {
        vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
        }]
    } else {
        res.printer_columns.clone()
    }
}

/// The `columnDefinitions` of the resource's Table: Name first, then its columns.
pub fn column_definitions(res: &ResourceInfo) -> Vec<Value> {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    defs.extend(columns(res).iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    defs
}

/// Evaluates the simple JSONPath forms printer columns use: `.a.b`, `.a[0].b`, `.a['k']`.
pub fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            current = current.get(&after[..end])?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let index = after[..end].trim_matches(|c| c == '\'' || c == '"');
            current = match index.parse::<usize>() {
                Ok(i) => current.get(i)?,
                Err(_) => current.get(index)?,
            };
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(current)
}

/// kubectl's `HumanDuration` for an age in seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < 0 {
        return "<invalid>".to_string();
    }
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 192 {
        let h = hours % 24;
        if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else {
        let years = days / 365;
        let d = days % 365;
        if years < 8 && d != 0 {
            format!("{years}y{d}d")
        } else {
            format!("{years}y")
        }
    }
}

fn cell(column: &PrinterColumn, value: Option<&Value>, now: jiff::Timestamp) -> Value {
    match (column.type_.as_str(), value) {
        (_, None | Some(Value::Null)) => Value::Null,
        ("date", Some(Value::String(s))) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => json!(human_duration(now.as_second() - t.as_second())),
            Err(_) => json!(s),
        },
        ("string", Some(Value::String(s))) => json!(s),
        ("string", Some(other)) => json!(other.to_string()),
        (_, Some(other)) => other.clone(),
    }
}

/// Column path of a pod's ready containers out of all (`1/1`), computed as kubectl prints it.
pub const POD_READY: &str = "@pod.ready";
/// Column path of a pod's status: Terminating, a container's waiting/terminated reason, or
/// the phase.
pub const POD_STATUS: &str = "@pod.status";
/// Column path of the sum of a pod's container restarts.
pub const POD_RESTARTS: &str = "@pod.restarts";

/// Column path of a core/v1 Event's object as `kind/name`, as kubectl prints it.
pub const EVENT_OBJECT: &str = "@event.object";

/// The value of a computed column (see [`POD_READY`] and friends).
fn computed_value(object: &Value, path: &str) -> Option<Value> {
    if path == EVENT_OBJECT {
        let kind = object
            .pointer("/involvedObject/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = object
            .pointer("/involvedObject/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Some(json!(format!("{}/{name}", kind.to_lowercase())));
    }
    pod_value(object, path)
}

/// The value of a computed pod column.
fn pod_value(pod: &Value, path: &str) -> Option<Value> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match path {
        POD_READY => {
            let total = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            Some(json!(format!("{ready}/{total}")))
        }
        POD_RESTARTS => Some(json!(
            statuses
                .iter()
                .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
                .sum::<i64>()
        )),
        POD_STATUS => {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Some(json!("Terminating"));
            }
            let mut reason = pod
                .pointer("/status/reason")
                .or_else(|| pod.pointer("/status/phase"))
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .to_string();
            for status in &statuses {
                let waiting = status.pointer("/state/waiting/reason");
                let terminated = status.pointer("/state/terminated/reason");
                if let Some(r) = waiting.or(terminated).and_then(Value::as_str)
                    && !r.is_empty()
                {
                    reason = r.to_string();
                }
            }
            Some(json!(reason))
        }
        _ => None,
    }
}

/// One Table row for `object`, with its metadata as a `PartialObjectMetadata`.
pub fn row(res: &ResourceInfo, object: &Value, now: jiff::Timestamp) -> Value {
    let mut cells = vec![
        object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    cells.extend(
        columns(res)
            .iter()
            .map(|c| match computed_value(object, &c.json_path) {
                Some(computed) => computed,
                None => cell(c, json_path(object, &c.json_path), now),
            }),
    );
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
        },
    })
}

/// A Table of `objects`; `with_columns` is false for watch events after the first.
pub fn table(
    res: &ResourceInfo,
    objects: &[&Value],
    list_meta: Value,
    with_columns: bool,
    now: jiff::Timestamp,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(res) } else { Vec::new() },
        "rows": objects.iter().map(|o| row(res, o, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;

    #[test]
    fn json_path_reads_fields_indices_and_quoted_keys() {
        let obj = json!({"status": {"phase": "Running", "items": [{"n": 1}], "m": {"a.b": 2}}});
        assert_eq!(json_path(&obj, ".status.phase"), Some(&json!("Running")));
        assert_eq!(json_path(&obj, ".status.items[0].n"), Some(&json!(1)));
        assert_eq!(json_path(&obj, ".status.m['a.b']"), Some(&json!(2)));
        assert_eq!(json_path(&obj, ".status.missing"), None);
    }

    #[test]
    fn pod_rows_show_ready_count_container_reason_and_restarts() {
        let pods = builtin_resources()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap();
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "ImagePullBackOff"}}},
            ]},
        });
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let r = row(&pods, &pod, now);
        assert_eq!(
            r["cells"],
            json!(["p", "1/2", "ImagePullBackOff", 3, "30s", null, null])
        );
        let mut terminating = pod.clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:40Z");
        assert_eq!(row(&pods, &terminating, now)["cells"][2], "Terminating");
    }

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }

    #[test]
    fn table_has_name_then_printer_columns_with_rendered_cells() {
        let mut res = builtin_resources()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .unwrap();
        res.printer_columns = vec![
            PrinterColumn {
                name: "Phase".into(),
                type_: "string".into(),
                format: String::new(),
                description: String::new(),
                json_path: ".status.phase".into(),
                priority: 0,
            },
            PrinterColumn {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                json_path: ".metadata.creationTimestamp".into(),
                priority: 0,
            },
        ];
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        let t = table(&res, &[&obj], json!({}), true, now);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Phase", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["x", "Running", "60s"]));
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "x");
    }
}
