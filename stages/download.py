"""dvc.yaml's `download` stage: the work is in ddpmlab.pipeline.stages.download (`python stages/download.py --help`)."""

from ddpmlab.pipeline.stages.download import main

if __name__ == "__main__":
    main()
