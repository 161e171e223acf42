-- Which Argo CD actions a MAOS Task offers: only those that make sense in its state, the others
-- shown disabled. A finished Task (Succeeded, Failed, Cancelled) or one being terminated offers
-- none. It needs only Lua's base library.
local actions = {}
actions["suspend"] = { disabled = true, iconClass = "fa fa-fw fa-pause", displayName = "Suspend dispatch" }
actions["resume"] = { disabled = true, iconClass = "fa fa-fw fa-play", displayName = "Resume dispatch" }
actions["terminate"] = { disabled = true, iconClass = "fa fa-fw fa-stop", displayName = "Terminate" }
actions["checkpoint-now"] = { disabled = true, iconClass = "fa fa-fw fa-save", displayName = "Checkpoint now" }

local status = obj.status or {}
local finished = status.phase == "Succeeded" or status.phase == "Failed" or status.phase == "Cancelled"
if finished or obj.spec.shutdown == "Terminate" then
  return actions
end
if obj.spec.suspend == true then
  actions["resume"].disabled = false
else
  actions["suspend"].disabled = false
end
actions["terminate"].disabled = false
-- A snapshot needs the Task's state, which exists once it is registered with its pool.
if status.poolUID ~= nil then
  actions["checkpoint-now"].disabled = false
end
return actions
