"""ddpmlab: the library behind the DVC pipeline (see dvc.yaml and stages/)."""

__version__ = "0.1.0"
