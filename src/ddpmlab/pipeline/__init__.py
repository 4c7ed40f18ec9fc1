"""ddpmlab.pipeline: the DVC pipeline around the core.

The params schema and its mappers to core configs, data acquisition, figures, and one module per
dvc.yaml stage (`ddpmlab.pipeline.stages.<name>`, each with `main(argv)`). It imports the core,
never `ddpmlab.tools`.
"""
