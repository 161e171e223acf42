//! Well-known metadata: the API group, label and annotation keys, finalizers and field managers.
//!
//! They live in one place so the operator, the agents and the tests can never disagree on a
//! protocol string.

/// The API group of every MAOS custom resource.
pub const GROUP: &str = "maos.dev";

/// The served and stored version of every MAOS custom resource.
pub const VERSION: &str = "v1alpha1";

/// The `kubectl get <category>` name that lists every MAOS resource.
pub const CATEGORY: &str = "maos";

/// Label on every child of a Task (result ConfigMap, periodic Checkpoints): the Task's name.
pub const LABEL_TASK: &str = "maos.dev/task";

/// Label on every child of an AgentPool (agent pods, its Redis credentials Secret): the pool's name.
pub const LABEL_POOL: &str = "maos.dev/pool";

/// Label naming the MAOS component that made an object (`agent`, `operator`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Label saying which controller manages an object, as Kubernetes recommends.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Value of [`LABEL_MANAGED_BY`] on everything the operator creates.
pub const MANAGED_BY: &str = "maos-operator";

/// Pod annotation holding a hash of the API-key Secret's data and the agent pod template, so a
/// key rotation or a change of model, image, resources or limits rolls the agents.
pub const ANNOTATION_TEMPLATE_HASH: &str = "maos.dev/template-hash";

/// Finalizer the operator puts on a Task so its Redis keys are removed before it goes.
pub const FINALIZER_TASK: &str = "maos.dev/task-cleanup";

/// Finalizer the operator puts on an AgentPool so its Redis ACL user is removed before it goes.
pub const FINALIZER_POOL: &str = "maos.dev/pool-cleanup";

/// Finalizer the operator puts on a Checkpoint so its stored object is deleted with it.
pub const FINALIZER_CHECKPOINT: &str = "maos.dev/checkpoint-cleanup";

/// Server-side-apply field manager of the operator (status and children).
pub const FIELD_MANAGER: &str = "maos-operator";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizers_are_qualified_with_the_group() {
        for finalizer in [FINALIZER_TASK, FINALIZER_POOL, FINALIZER_CHECKPOINT] {
            assert!(finalizer.starts_with("maos.dev/"), "{finalizer}");
        }
    }
}
