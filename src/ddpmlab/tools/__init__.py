"""ddpmlab.tools: command-line utilities around the pipeline (compare, gate, bench, depgraph,
common-reference, the residuals CLI, preset). Only tests import them; the pipeline never does."""
