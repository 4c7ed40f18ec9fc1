"""dvc.yaml's `reference` stage: the work is in ddpmlab.pipeline.stages.reference (`python stages/reference.py --help`)."""

from ddpmlab.pipeline.stages.reference import main

if __name__ == "__main__":
    main()
