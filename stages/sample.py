"""dvc.yaml's `sample` stage: the work is in ddpmlab.pipeline.stages.sample (`python stages/sample.py --help`)."""

from ddpmlab.pipeline.stages.sample import main

if __name__ == "__main__":
    main()
