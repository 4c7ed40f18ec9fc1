"""dvc.yaml's `report` stage: the work is in ddpmlab.pipeline.stages.report (`python stages/report.py --help`)."""

from ddpmlab.pipeline.stages.report import main

if __name__ == "__main__":
    main()
