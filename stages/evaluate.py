"""dvc.yaml's `evaluate` stage: the work is in ddpmlab.pipeline.stages.evaluate (`python stages/evaluate.py --help`)."""

from ddpmlab.pipeline.stages.evaluate import main

if __name__ == "__main__":
    main()
