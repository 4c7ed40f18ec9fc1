"""dvc.yaml's `memorization` stage: the work is in ddpmlab.pipeline.stages.memorization (`python stages/memorization.py --help`)."""

from ddpmlab.pipeline.stages.memorization import main

if __name__ == "__main__":
    main()
