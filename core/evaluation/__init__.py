"""The evaluation of the defences: a matrix of federations (datasets x attacks x defences x seeds)
and the report of its results (`core.evaluation.report`)."""
