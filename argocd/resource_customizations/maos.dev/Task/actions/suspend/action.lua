-- Suspends a MAOS Task: no new subtask is dispatched while spec.suspend is true; the subtasks
-- already running finish. An Application that manages the Task from Git sets it back on its next
-- sync unless the Task's spec.suspend is in its ignoreDifferences (see argocd/README.md).
obj.spec.suspend = true
return obj
