"""dvc.yaml's `sweep` stage: the work is in ddpmlab.pipeline.stages.sweep (`python stages/sweep.py --help`)."""

from ddpmlab.pipeline.stages.sweep import main

if __name__ == "__main__":
    main()
