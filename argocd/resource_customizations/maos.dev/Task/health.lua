-- Argo CD health check of a MAOS Task (maos.dev/v1alpha1). It needs only Lua's base and table
-- libraries, which are all Argo CD gives a custom health check without useOpenLibs.
--
-- status.phase is the operator's one-word summary of the Task's conditions:
--   Pending, Planning, Running, Synthesizing  Progressing (Suspended while spec.suspend is true)
--   Suspended (spec.suspend holds dispatch)   Suspended
--   Succeeded                                 Healthy
--   Failed, Cancelled (stopped by spec.shutdown)  Degraded, with the Succeeded condition's reason
--   Blocked (its AgentPool cannot run agents) Degraded, with the Progressing condition's reason
-- A status older than the spec (status.observedGeneration < metadata.generation) is Progressing.

local function findCondition(conditionType)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == conditionType then
      return c
    end
  end
end

-- "Reason: message" of a condition; `fallback` when the Task does not have it.
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
if status == nil or status.phase == nil then
  return { status = "Progressing", message = "Waiting for the MAOS operator to report the Task's status" }
end

local generation, observed = obj.metadata.generation, status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  return {
    status = "Progressing",
    message = "Waiting for the MAOS operator to observe generation " .. generation
      .. " (the status is of generation " .. observed .. ")",
  }
end

local phase = status.phase
if phase == "Succeeded" then
  return { status = "Healthy", message = describe(findCondition("Succeeded"), phase) }
end
if phase == "Failed" or phase == "Cancelled" then
  return { status = "Degraded", message = describe(findCondition("Succeeded"), phase) }
end
if phase == "Blocked" then
  return { status = "Degraded", message = describe(findCondition("Progressing"), phase) }
end
if phase == "Suspended" then
  return { status = "Suspended", message = describe(findCondition("Suspended"), phase) }
end
if phase == "Pending" or phase == "Planning" or phase == "Running" or phase == "Synthesizing" then
  local message = phase
  if phase == "Pending" then
    message = "Pending: " .. describe(findCondition("Accepted"), "not yet accepted")
  elseif status.progress ~= nil then
    message = phase .. ": " .. status.progress .. " subtasks succeeded"
  end
  -- A Task that is not yet accepted stays Pending even while spec.suspend holds it.
  if obj.spec.suspend == true then
    return { status = "Suspended", message = "spec.suspend is true; " .. message }
  end
  -- spec.shutdown: Graceful dispatches nothing new while the running subtasks finish.
  local hold = findCondition("Suspended")
  if hold ~= nil and hold.status == "True" then
    message = message .. "; " .. describe(hold)
  end
  return { status = "Progressing", message = message }
end
return { status = "Unknown", message = "Unknown Task phase " .. phase }
