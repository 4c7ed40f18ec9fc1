"""dvc.yaml's `residuals` stage: the work is in ddpmlab.pipeline.stages.residuals (`python stages/residuals.py --help`)."""

from ddpmlab.pipeline.stages.residuals import main

if __name__ == "__main__":
    main()
