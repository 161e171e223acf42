//! Owner-reference garbage collection with background cascade: once an owner is gone, every
//! object whose owners are all gone is deleted (respecting its finalizers), transitively.

use super::store::{DeleteOptions, DeleteOutcome, Store, owner_uids};

/// An object the collector deleted or marked for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The resource's storage key.
    pub storage_key: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Deletes every dependent of a removed object whose owners are all gone, transitively.
///
/// Works from the uids the store recorded as removed, so its cost is the number of dependents,
/// not the number of objects.
pub fn collect_garbage(store: &mut Store, now: &str) -> Vec<Collected> {
    let mut collected = Vec::new();
    let mut gone = store.take_removed_uids();
    while let Some(uid) = gone.pop() {
        for (storage_key, key) in store.dependents_of(&uid) {
            let Some(object) = store.get_by_key(&storage_key, &key) else {
                continue;
            };
            let orphaned = owner_uids(&object)
                .iter()
                .all(|owner| !store.uid_exists(owner))
                && object.pointer("/metadata/deletionTimestamp").is_none();
            if !orphaned {
                continue;
            }
            let outcome = store.delete(
                &storage_key,
                &storage_key,
                &key.0,
                &key.1,
                &DeleteOptions::default(),
                now,
            );
            if matches!(
                outcome,
                Ok(DeleteOutcome::Deleted(_) | DeleteOutcome::Finalizing(_))
            ) {
                collected.push(Collected {
                    storage_key,
                    namespace: key.0,
                    name: key.1,
                });
            }
            gone.extend(store.take_removed_uids());
        }
    }
    collected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;
    use crate::apiserver::store::DeleteOptions;
    use serde_json::{Value, json};

    fn owned(name: &str, owner_uid: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": owner_uid}]}})
    }

    #[test]
    fn deleting_an_owner_deletes_its_dependents_transitively() {
        let resources = builtin_resources();
        let cm = resources.iter().find(|r| r.plural == "configmaps").unwrap();
        let pods = resources.iter().find(|r| r.plural == "pods").unwrap();
        let mut store = Store::new(100);
        store
            .create(
                cm,
                json!({"metadata": {"name": "owner", "namespace": "default"}}),
                "owner-uid",
                "t",
            )
            .unwrap();
        store
            .create(cm, owned("child", "owner-uid"), "child-uid", "t")
            .unwrap();
        store
            .create(pods, owned("grandchild", "child-uid"), "gc-uid", "t")
            .unwrap();
        store
            .create(
                cm,
                json!({"metadata": {"name": "bystander", "namespace": "default"}}),
                "b-uid",
                "t",
            )
            .unwrap();
        assert!(
            collect_garbage(&mut store, "t").is_empty(),
            "nothing is collected while owners live"
        );

        store
            .delete(
                &cm.storage_key(),
                "configmaps",
                "default",
                "owner",
                &DeleteOptions::default(),
                "t",
            )
            .unwrap();
        let collected = collect_garbage(&mut store, "t");
        let names: Vec<&str> = collected.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["child", "grandchild"]);
        assert!(store.get(cm, "default", "bystander").is_ok());
        assert_eq!(
            store.get(pods, "default", "grandchild").unwrap_err().code(),
            404
        );
    }

    #[test]
    fn a_dependent_with_a_living_second_owner_is_kept() {
        let cm = builtin_resources()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .unwrap();
        let mut store = Store::new(100);
        let mut child = owned("child", "gone-uid");
        child["metadata"]["ownerReferences"]
            .as_array_mut()
            .unwrap()
            .push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "alive", "uid": "alive-uid"}));
        store
            .create(
                &cm,
                json!({"metadata": {"name": "alive", "namespace": "default"}}),
                "alive-uid",
                "t",
            )
            .unwrap();
        store.create(&cm, child, "child-uid", "t").unwrap();
        assert!(collect_garbage(&mut store, "t").is_empty());
    }
}
