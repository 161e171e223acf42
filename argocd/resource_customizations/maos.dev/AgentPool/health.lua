-- Argo CD health check of a MAOS AgentPool (maos.dev/v1alpha1). It needs only Lua's base and
-- table libraries, which are all Argo CD gives a custom health check without useOpenLibs.
--
-- The Ready condition decides: at least spec.replicas.min agents beat and the pool takes work.
--   Ready True                                Healthy
--   Ready False and Degraded True             Degraded, with the Degraded condition's reason:
--                                             no API key, a key or model the API refuses, agent
--                                             pods that cannot start (its Tasks are Blocked)
--   Ready False, reason AgentsStarting        Progressing: the agent pods are starting
--   Ready False, any other reason             Degraded, with the Ready condition's reason
--   no status yet, no Ready condition, Ready Unknown, or a status older than the spec
--   (status.observedGeneration < metadata.generation)  Progressing

local function findCondition(conditionType)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == conditionType then
      return c
    end
  end
end

-- "Reason: message" of a condition; `fallback` when the pool does not have it.
local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message == nil or c.message == "" then
    return c.reason
  end
  return c.reason .. ": " .. c.message
end

if obj.metadata.deletionTimestamp ~= nil then
  return {
    status = "Progressing",
    message = "Pending deletion; waiting for finalizers: " .. table.concat(obj.metadata.finalizers or {}, ", "),
  }
end

local status = obj.status
if status == nil then
  return { status = "Progressing", message = "Waiting for the MAOS operator to report the AgentPool's status" }
end

local generation, observed = obj.metadata.generation, status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  return {
    status = "Progressing",
    message = "Waiting for the MAOS operator to observe generation " .. generation
      .. " (the status is of generation " .. observed .. ")",
  }
end

local ready = findCondition("Ready")
if ready == nil or ready.status == "Unknown" then
  return { status = "Progressing", message = describe(ready, "Waiting for the Ready condition") }
end
if ready.status == "True" then
  return { status = "Healthy", message = describe(ready) }
end
-- Ready False: Degraded True is what makes the operator hold the pool's Tasks (phase Blocked).
local degraded = findCondition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  return { status = "Degraded", message = describe(degraded) }
end
if ready.reason == "AgentsStarting" then
  return { status = "Progressing", message = describe(ready) }
end
return { status = "Degraded", message = describe(ready) }
