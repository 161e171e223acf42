-- Argo CD health check of a MAOS Checkpoint (maos.dev/v1alpha1). It needs only Lua's base and
-- table libraries, which are all Argo CD gives a custom health check without useOpenLibs.
--
-- status.phase sums up the Succeeded condition:
--   Saved (stored and verified)               Healthy
--   Failed (could not be taken or stored)     Degraded, with the Succeeded condition's reason
--   Pending, Saving, no status yet, or a status older than the spec
--   (status.observedGeneration < metadata.generation)  Progressing

local function findCondition(conditionType)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == conditionType then
      return c
    end
  end
end

-- "Reason: message" of a condition; `fallback` when the Checkpoint does not have it.
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
  return { status = "Progressing", message = "Waiting for the MAOS operator to take the snapshot" }
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
local succeeded = findCondition("Succeeded")
if phase == "Saved" then
  return { status = "Healthy", message = describe(succeeded, phase) }
end
if phase == "Failed" then
  return { status = "Degraded", message = describe(succeeded, phase) }
end
return { status = "Progressing", message = describe(succeeded, phase) }
