-- Terminates a MAOS Task: spec.shutdown Terminate stops the agents working it at once and the
-- Task ends Cancelled. (spec.shutdown Graceful, which lets running subtasks finish first, is
-- left to kubectl.)
obj.spec.shutdown = "Terminate"
return obj
