"""dvc.yaml's `prepare` stage: the work is in ddpmlab.pipeline.stages.prepare (`python stages/prepare.py --help`)."""

from ddpmlab.pipeline.stages.prepare import main

if __name__ == "__main__":
    main()
