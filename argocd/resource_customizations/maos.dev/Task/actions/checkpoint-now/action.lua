-- Takes a Checkpoint of a MAOS Task now: the action returns Argo CD's list of impacted resources,
-- here one Checkpoint to create (Argo CD 2.8 or newer). The Task owns it (ownerReferences), so it
-- shows under the Task in the Application's tree, is neither pruned nor OutOfSync, and is
-- deleted with the Task. The API server names it <task>-now-<5 random characters>
-- (metadata.generateName), so two clicks never collide and the script needs no clock. Its
-- storage is the operator's default bucket and prefix. It needs only Lua's base library.
local checkpoint = {
  apiVersion = "maos.dev/v1alpha1",
  kind = "Checkpoint",
  metadata = {
    generateName = obj.metadata.name .. "-now-",
    namespace = obj.metadata.namespace,
    labels = { ["maos.dev/task"] = obj.metadata.name },
    ownerReferences = {
      { apiVersion = obj.apiVersion, kind = obj.kind, name = obj.metadata.name, uid = obj.metadata.uid },
    },
  },
  spec = { taskRef = { name = obj.metadata.name } },
}
return { { operation = "create", resource = checkpoint } }
