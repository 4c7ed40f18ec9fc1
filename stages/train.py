"""dvc.yaml's `train` stage: the work is in ddpmlab.pipeline.stages.train (`python stages/train.py --help`)."""

from ddpmlab.pipeline.stages.train import main

if __name__ == "__main__":
    main()
