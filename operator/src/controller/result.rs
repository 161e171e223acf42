//! A succeeded Task's result: gathered from its subtasks' results (or the synthesis), written to
//! the `<task>-result` ConfigMap it owns, and summarised in `status.result`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use maos_core::api::v1alpha1::limits::MAX_RESULT_LEN;
use maos_core::api::v1alpha1::{ResultRef, Task, TaskStatus};
use maos_core::dag::SubtaskName;
use maos_core::meta::FIELD_MANAGER;

use super::owned::child_meta;
use super::{Context, Error};
use crate::lifecycle::{PLAN, SYNTHESIZE, finish_succeeded};

/// The key of the result in the `<task>-result` ConfigMap.
pub const RESULT_KEY: &str = "result";

/// The most of a result the ConfigMap holds (ConfigMaps hold at most 1 MiB in all).
const MAX_CONFIGMAP_RESULT: usize = 1_000_000;

/// Finishes the Task with its result: the synthesizer's, or every subtask's in plan order.
pub(crate) async fn complete(
    task: &Task,
    ctx: &Context,
    coord: &maos_core::coord::Task,
    status: &mut TaskStatus,
    now: Timestamp,
) -> Result<(), Error> {
    let results = coord.results();
    let text = if task.spec.synthesize {
        let synthesize = SubtaskName::new(SYNTHESIZE)?;
        results
            .get(&synthesize)
            .await?
            .map(|r| r.result)
            .unwrap_or_default()
    } else {
        let all: BTreeMap<String, String> = results
            .all()
            .await?
            .into_iter()
            .map(|(name, r)| (name, r.result))
            .collect();
        status
            .subtasks
            .iter()
            .filter(|s| s.name != PLAN && s.name != SYNTHESIZE)
            .filter_map(|s| all.get(&s.name).map(|r| format!("## {}\n\n{r}\n", s.name)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let config_map = result_config_map(task, &text)?;
    let name = config_map.metadata.name.clone().unwrap_or_default();
    let config_maps: Api<ConfigMap> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    config_maps
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&config_map),
        )
        .await?;
    status.result = Some(prefix(&text, MAX_RESULT_LEN as usize).to_owned());
    status.result_ref = Some(ResultRef {
        config_map: name,
        key: RESULT_KEY.to_owned(),
    });
    finish_succeeded(status, task.metadata.generation, now);
    Ok(())
}

/// The `<task>-result` ConfigMap, owned by the Task.
fn result_config_map(task: &Task, text: &str) -> Result<ConfigMap, Error> {
    let mut value = prefix(text, MAX_CONFIGMAP_RESULT).to_owned();
    if value.len() < text.len() {
        value.push_str("\n\n[truncated: the full result is in the Task's Redis results]\n");
    }
    Ok(ConfigMap {
        metadata: child_meta(task, &format!("{}-result", task.name_any()))?,
        data: Some([(RESULT_KEY.to_owned(), value)].into()),
        ..ConfigMap::default()
    })
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
