"""dvc.yaml's `inception` stage: the work is in ddpmlab.pipeline.stages.inception (`python stages/inception.py --help`)."""

from ddpmlab.pipeline.stages.inception import main

if __name__ == "__main__":
    main()
