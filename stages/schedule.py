"""dvc.yaml's `schedule` stage: the work is in ddpmlab.pipeline.stages.schedule (`python stages/schedule.py --help`)."""

from ddpmlab.pipeline.stages.schedule import main

if __name__ == "__main__":
    main()
