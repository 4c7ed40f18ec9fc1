"""ddpmlab: the library behind the DVC pipeline (see dvc.yaml).

Three layers, imports pointing one way: `core` (the science) <- `pipeline` (params, stages, files)
<- `tools` (command-line utilities).
"""

__version__ = "0.1.0"
