-- Resumes a suspended MAOS Task: spec.suspend false lets dispatch go on.
obj.spec.suspend = false
return obj
